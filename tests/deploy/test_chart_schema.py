"""Bad values fail at install: values.schema.json, enforced by `helm template` and `helm lint`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .support import Helm

# (id, values file content or --set, what Helm's message must contain)
BAD_VALUES = [
    pytest.param(
        {"config": {"aws": {"event_bus_name": None, "region": "us-east-1"}}},
        ["/config/aws", "event_bus_name"],
        id="missing-bus",
    ),
    pytest.param(
        {"config": {"aws": {"event_bus_name": ""}}},
        ["/config/aws/event_bus_name", "minLength"],
        id="empty-bus",
    ),
    pytest.param(
        {"replicaCount": "3"},
        ["/replicaCount", "got string, want integer"],
        id="replicaCount-string",
    ),
    pytest.param({"replicaCount": 0}, ["/replicaCount", "minimum"], id="replicaCount-zero"),
    pytest.param(
        {"replicas": 3},
        ["additional properties 'replicas' not allowed"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"keda": {"lagTreshold": 5}},
        ["/keda", "additional properties 'lagTreshold' not allowed"],
        id="unknown-keda-key",
    ),
    pytest.param(
        {"config": {"batch": {"lnger_ms": 5}}},
        ["/config/batch", "additional properties 'lnger_ms' not allowed"],
        id="unknown-config-key",
    ),
    pytest.param(
        {"config": {"batch": {"linger_ms": 60001}}},
        ["/config/batch/linger_ms", "maximum"],
        id="config-out-of-range",
    ),
    pytest.param(
        {"config": {"observability": {"port": 0}}},
        ["/config/observability/port", "minimum"],
        id="port-zero",
    ),
    pytest.param({"config": {"mappings": []}}, ["/config/mappings", "minItems"], id="no-mapping"),
]


@pytest.mark.parametrize(("values", "expected"), BAD_VALUES)
def test_bad_values_fail_template_and_lint(
    helm: Helm, tmp_path: Path, values: dict[str, object], expected: list[str]
) -> None:
    path = tmp_path / "bad-values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")

    stderr = helm.template_fails([path])
    assert "values don't meet the specifications of the schema" in stderr, stderr
    for fragment in expected:
        assert fragment in stderr, f"{fragment!r} not in Helm's message:\n{stderr}"

    lint = helm.lint([path])
    assert lint.returncode != 0, lint.stdout
    output = lint.stdout + lint.stderr
    assert "[ERROR]" in output, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in helm lint's output:\n{output}"


def test_missing_bus_with_set_null(helm: Helm) -> None:
    stderr = helm.template_fails(sets=["config.aws.event_bus_name=null"])
    assert "at '/config/aws': missing property 'event_bus_name'" in stderr


def test_string_replica_count_with_set_string(helm: Helm) -> None:
    result = helm.run(*helm.template_args(), "--set-string", "replicaCount=3")
    assert result.returncode != 0
    assert "at '/replicaCount': got string, want integer" in result.stderr


def test_the_schema_is_draft_07_and_closed() -> None:
    import json

    from .support import CHART

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["replicaCount"] == {
        "type": "integer",
        "description": props["replicaCount"]["description"],
        "minimum": 1,
    }
    for name, prop in props.items():
        if prop.get("type") == "object" and "properties" in prop:
            assert prop["additionalProperties"] is False, name
    assert props["config"]["properties"]["aws"]["required"] == ["event_bus_name"]
    bus = props["config"]["properties"]["aws"]["properties"]["event_bus_name"]
    assert bus["type"] == "string" and bus["minLength"] == 1
    # Every value of values.yaml is described by the schema (no key the schema would refuse).
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(values) <= set(props)
