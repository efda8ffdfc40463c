"""The JSON Schema of the configuration file for editors: config/bridge-config.schema.json.

Generated from ``bridge.config.BridgeConfig``; tests/unit/test_editor_schema.py fails when it is
out of date. Editors with the YAML language server pick it up from the first line of a config:

    # yaml-language-server: $schema=./bridge-config.schema.json

Regenerate after changing the configuration model with:

    .venv/bin/python tests/editor_schema.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "config" / "bridge-config.schema.json"


def editor_schema() -> dict[str, Any]:
    """The schema of a whole configuration file."""
    sys.path.insert(0, str(ROOT))
    from bridge.config import BridgeConfig

    schema = BridgeConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "Kafka to EventBridge bridge configuration",
        "description": "The YAML file given to `bridge run --config`. Any key can be overridden"
        " by an environment variable BRIDGE_<SECTION>__<KEY>. Generated from"
        " bridge.config.BridgeConfig by tests/editor_schema.py.",
    }


def render() -> str:
    return json.dumps(editor_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_FILE.write_text(render(), encoding="utf-8")
    print(f"updated {SCHEMA_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
