"""The editors' JSON Schema of the config file is current, and every example validates with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("editor_schema", ROOT / "tests/editor_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_file_is_up_to_date() -> None:
    module = generator()
    assert module.SCHEMA_FILE.read_text(encoding="utf-8") == module.render(), (
        "config/bridge-config.schema.json is out of date: run .venv/bin/python"
        " tests/editor_schema.py"
    )


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path: Path) -> None:
    schema = json.loads((ROOT / "config" / "bridge-config.schema.json").read_text())
    errors = list(Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_schema_catches_a_typo_and_a_bad_decoder() -> None:
    schema = json.loads((ROOT / "config" / "bridge-config.schema.json").read_text())
    bad = {
        "mappings": [
            {"topic": "t", "source": "s", "detail_type": "d", "decode": {"value": "xml"}},
        ],
        "batch": {"max_entires": 3},
    }
    messages = sorted(e.message for e in Draft202012Validator(schema).iter_errors(bad))
    assert any("'xml' is not one of" in m for m in messages), messages
    assert any("'max_entires' was unexpected" in m for m in messages), messages
