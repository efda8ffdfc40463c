"""The `config` part of the chart's values.schema.json, derived from the bridge's own model.

The chart checks the bridge's configuration (`config:` in the values) at `helm install` with the
same sections, keys, types and ranges as ``bridge.config.BridgeConfig``; tests/deploy checks that
the two agree. After changing the configuration model, update the chart's schema with:

    .venv/bin/python tests/deploy/config_schema.py
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "helm" / "kafka-eventbridge-bridge" / "values.schema.json"

# Where the chart is stricter than the bridge: Kubernetes needs a fixed port (0 = "any free
# port" is for the local demo), and the probes need the HTTP server.
_OVERRIDES: dict[tuple[str, ...], dict[str, Any]] = {
    ("observability", "port"): {
        "minimum": 1,
        "description": "The port of /healthz, /readyz and /metrics; the container port, the"
        " probes and the Service follow it.",
    },
}
_REQUIRED: dict[tuple[str, ...], list[str]] = {
    (): ["aws", "mappings"],
    ("aws",): ["event_bus_name"],
}


def _convert(node: Any, defs: dict[str, Any], path: tuple[str, ...]) -> Any:
    """pydantic's JSON schema -> draft-07 for Helm: $refs inlined, anyOf-null as type lists."""
    if isinstance(node, list):
        return [_convert(item, defs, path) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _convert(defs[node["$ref"].rsplit("/", 1)[-1]], defs, path)
    node = {k: v for k, v in node.items() if k not in ("title", "default", "format", "writeOnly")}
    any_of = node.get("anyOf")
    if any_of and len(any_of) == 2 and {"type": "null"} in any_of:
        other = next(a for a in any_of if a != {"type": "null"})
        other = {k: v for k, v in other.items() if k not in ("format", "writeOnly")}
        if set(other) == {"type"}:
            node.pop("anyOf")
            node["type"] = [other["type"], "null"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _convert(sub, defs, (*path, name)) for name, sub in value.items()}
        elif key in ("items", "anyOf", "allOf", "oneOf"):
            out[key] = _convert(value, defs, path)
        else:
            out[key] = copy.deepcopy(value)
    out.update(_OVERRIDES.get(path, {}))
    if path in _REQUIRED:
        out["required"] = sorted(set(out.get("required", [])) | set(_REQUIRED[path]))
    return out


def config_schema() -> dict[str, Any]:
    """The schema of the chart's `config:` value, from ``BridgeConfig``."""
    sys.path.insert(0, str(ROOT))
    from bridge.config import BridgeConfig

    raw = BridgeConfig.model_json_schema()
    defs = raw.pop("$defs", {})
    schema = _convert(raw, defs, ())
    schema["description"] = (
        "The bridge's configuration file (README.md, 'Configuration'), rendered into a ConfigMap"
        " and mounted at /etc/bridge/config.yaml. Generated from bridge.config.BridgeConfig by"
        " tests/deploy/config_schema.py."
    )
    schema["additionalProperties"] = False
    return schema


def main() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    schema["properties"]["config"] = config_schema()
    SCHEMA_FILE.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    print(f"updated {SCHEMA_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
