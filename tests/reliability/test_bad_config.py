"""Bad configuration: the bridge refuses to start and says which key is wrong and why.

The cases are generated from the settings model itself, so a field added later is covered the
day it is added: for every setting, a value of the wrong type; for every bound, a value just
outside it (and a choice that does not exist, a pattern not matched); for every section, an
unknown key. Each goes through ``bridge check-config`` (in-process) and must exit 2 naming the
key (and showing the bad value, unless it is a secret or not a scalar), with no traceback. A
sample goes through ``bridge run`` as a child process; missing files and settings librdkafka
refuses are checked there. ``tests/unit/test_config.py`` holds the hand-written cases (messages
word for word, secrets never printed); this is the exhaustive sweep.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException
from pydantic import BaseModel, SecretStr

from bridge.cli import main
from bridge.config import BridgeConfig
from bridge.config.load import load_config
from bridge.errors import ConfigError
from bridge.source.checks import refusal_text

from .harness import run_refused

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:1"},
    "aws": {"check_event_bus": False},
    "observability": {"enabled": False},
    "mappings": [{"topic": "orders", "source": "com.example.orders", "detail_type": "Placed"}],
}
WRONG_TYPES: list[Any] = [["a", "list"], {"a": "mapping"}, "not-a-number", 12345, 1.5]
Path_ = tuple[str | int, ...]


def display(path: Path_) -> str:
    """``mappings[0].decode.value`` style, as the bridge names keys."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model inside ``annotation``, whether it is a sequence of them)."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found, seq = _model(arg)
            if found is not None:
                return found, seq
    return None, False


def sections(model: type[BaseModel] = BridgeConfig, path: Path_ = ()) -> Iterator[Path_]:
    """Every (nested) settings model, by path (a sequence of models: its first item)."""
    yield path
    for name, info in model.model_fields.items():
        sub, seq = _model(info.annotation)
        if sub is not None:
            yield from sections(sub, (*path, name, 0) if seq else (*path, name))


def leaves(model: type[BaseModel] = BridgeConfig, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every setting that holds a value (not a section), with its pydantic FieldInfo."""
    for name, info in model.model_fields.items():
        sub, seq = _model(info.annotation)
        if sub is not None:
            yield from leaves(sub, (*path, name, 0) if seq else (*path, name))
        else:
            yield (*path, name), info


def with_value(path: Path_, value: Any) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    node: Any = config
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return config


def out_of_range(info: Any) -> list[tuple[str, Any]]:
    """Values just outside the field's bounds, choices and pattern."""
    cases: list[tuple[str, Any]] = []
    is_float = info.annotation is float or float in typing.get_args(info.annotation)
    step = 0.5 if is_float else 1
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            cases.append((f"below the minimum {meta.ge}", meta.ge - step))
        elif isinstance(meta, annotated_types.Gt):
            cases.append((f"not above {meta.gt}", meta.gt))
        elif isinstance(meta, annotated_types.Le):
            cases.append((f"above the maximum {meta.le}", meta.le + step))
        elif isinstance(meta, annotated_types.Lt):
            cases.append((f"not below {meta.lt}", meta.lt))
        elif isinstance(meta, annotated_types.MinLen) and meta.min_length > 0:
            cases.append(("too short", "" if _is_text(info) else []))
        elif isinstance(meta, annotated_types.MaxLen):
            cases.append(("too long", "x" * (meta.max_length + 1)))
        elif getattr(meta, "pattern", None):
            cases.append(("not matching its pattern", "!! no match !!"))
    choices = _literal(info.annotation)
    if choices:
        cases.append((f"not one of {choices}", "no-such-choice"))
    return cases


def _is_text(info: Any) -> bool:
    return info.annotation is str or str in typing.get_args(info.annotation)


def _literal(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return ()


def _secret(info: Any, path: Path_) -> bool:
    annotation = info.annotation
    words = ("password", "secret")
    return (
        annotation is SecretStr
        or SecretStr in typing.get_args(annotation)
        or any(w in display(path) for w in words)
    )


def refusal(tmp_path: Path, config: dict[str, Any]) -> ConfigError | None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        load_config(path)
    except ConfigError as exc:
        return exc
    return None


def check_config_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any]
) -> str:
    """``bridge check-config`` on ``config``: exit 2 and its stderr."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {config}:\n{out}{err}"
    assert err.startswith(f"error: invalid configuration in {path}"), err
    assert "Traceback" not in out + err
    return err


def test_the_sweep_covers_every_setting() -> None:
    names = [display(p) for p, _ in leaves()]
    assert len(names) >= 60, names  # a broken walk would find few
    for expected in ("kafka.bootstrap_servers", "batch.max_entries", "mappings[0].detail_type"):
        assert expected in names


def test_every_setting_refuses_a_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accepted_anything: list[str] = []
    checked = 0
    for path, info in leaves():
        key = display(path)
        for wrong in WRONG_TYPES:
            error = refusal(tmp_path, with_value(path, wrong))
            if error is not None and any(p.startswith(f"{key}:") for p in error.problems):
                break
        else:
            accepted_anything.append(key)
            continue
        err = check_config_says(tmp_path, capsys, with_value(path, wrong))
        line = next(ln for ln in err.splitlines() if ln.strip().startswith(f"- {key}:"))
        scalar = isinstance(wrong, str | int | float)
        if scalar and not _secret(info, path):
            assert f"(got {wrong!r})" in line, line
        checked += 1
    assert not accepted_anything, f"settings taking any type: {accepted_anything}"
    print(f"\n{checked} settings refuse a value of the wrong type, each named")


def test_every_bound_and_choice_is_enforced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missed: list[str] = []
    checked = 0
    for path, info in leaves():
        key = display(path)
        for why, value in out_of_range(info):
            error = refusal(tmp_path, with_value(path, value))
            if error is None or not any(p.startswith(f"{key}:") for p in error.problems):
                missed.append(f"{key} {why} ({value!r}): {error.problems if error else 'accepted'}")
                continue
            err = check_config_says(tmp_path, capsys, with_value(path, value))
            assert f"- {key}:" in err
            checked += 1
    assert not missed, "\n".join(missed)
    assert checked >= 40, checked
    print(f"\n{checked} out-of-range values refused, each named")


def test_unknown_keys_are_named_in_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = 0
    for section in sections():
        path = (*section, "no_such_setting")
        err = check_config_says(tmp_path, capsys, with_value(path, 1))
        assert f"- {display(path)}: unknown key" in err, err
        found += 1
    assert found >= 10
    print(f"\n{found} sections refuse an unknown key")


def test_env_overrides_are_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_BATCH__MAX_ENTRIES", "lots")
    monkeypatch.setenv("BRIDGE_PIPELINE__MAX_BUFFERED_RECORDS", "5")
    err = check_config_says(tmp_path, capsys, BASE)
    assert "- batch.max_entries:" in err and "'lots'" in err
    assert "- pipeline.max_buffered_records:" in err


def run_bridge(tmp_path: Path, config: dict[str, Any] | None, name: str = "bad.yaml") -> str:
    """``bridge run`` as a child process: it must exit 2 at once; returns its output."""
    path = tmp_path / name
    if config is not None:
        path.write_text(yaml.safe_dump(config))
    return run_refused(path)


def test_run_refuses_to_start(tmp_path: Path) -> None:
    missing = run_bridge(tmp_path, None, "nowhere.yaml")
    assert "file not found" in missing and "nowhere.yaml" in missing
    wrong_type = run_bridge(tmp_path, with_value(("pipeline", "max_in_flight_calls"), "four"))
    assert "- pipeline.max_in_flight_calls:" in wrong_type
    unknown = run_bridge(tmp_path, with_value(("retry", "max_attempt"), 3))
    assert "- retry.max_attempt: unknown key" in unknown
    not_yaml = tmp_path / "not-yaml.yaml"
    not_yaml.write_text("kafka: [unclosed\n")
    assert "not valid YAML" in run_bridge(tmp_path, None, "not-yaml.yaml")


LIBRDKAFKA_REFUSES = {
    "missing CA file": (
        {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
        "ssl.ca.location",
    ),
    "missing client key file": (
        {
            "security.protocol": "SSL",
            "ssl.certificate.location": "/nonexistent/client.pem",
            "ssl.key.location": "/nonexistent/client.key",
        },
        "ssl.",
    ),
    "unknown librdkafka setting": ({"no.such.setting": "1"}, "no.such.setting"),
    "bad value of a librdkafka setting": ({"security.protocol": "carrier-pigeon"}, "security"),
}


@pytest.mark.parametrize("case", sorted(LIBRDKAFKA_REFUSES))
def test_run_refuses_missing_files_and_settings_librdkafka_refuses(
    tmp_path: Path, case: str
) -> None:
    properties, named = LIBRDKAFKA_REFUSES[case]
    output = run_bridge(tmp_path, with_value(("kafka", "properties"), properties))
    assert named in output, output


@pytest.mark.parametrize("case", ["missing CA file", "unknown librdkafka setting"])
def test_check_config_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    properties, named = LIBRDKAFKA_REFUSES[case]
    err = check_config_says(tmp_path, capsys, with_value(("kafka", "properties"), properties))
    line = next(ln for ln in err.splitlines() if named in ln)
    assert line.strip().startswith("- kafka.properties: librdkafka refused"), err
    assert err.count(named) == 1, "said once, not once per client"


def test_check_config_says_what_librdkafka_refuses_with_the_other_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = with_value(("batch", "max_entries"), 11)
    config["dlq"] = {"producer": {"security.protocol": "SSL", "ssl.ca.location": "/no/ca.pem"}}
    err = check_config_says(tmp_path, capsys, config)
    assert "- batch.max_entries:" in err, err
    line = next(ln for ln in err.splitlines() if "ssl.ca.location" in ln)
    assert line.strip().startswith("- dlq.producer / kafka.properties: librdkafka refused"), err
    assert line.endswith("(no such file: /no/ca.pem)"), line


def test_check_config_masks_secrets_in_what_librdkafka_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "Not-To-Be-Printed-42"
    properties = {"ssl.key.password": secret, "ssl.key.location": "/no/client.key"}
    properties |= {"security.protocol": "SSL", "ssl.certificate.location": "/no/client.pem"}
    config = with_value(("kafka", "properties"), properties)
    config["kafka"]["sasl_password"] = secret
    err = check_config_says(tmp_path, capsys, config)
    assert "librdkafka refused" in err, err
    assert secret not in err
    # librdkafka does not quote these values today; if a message ever does, it is masked.
    quoted = KafkaException(KafkaError(KafkaError._INVALID_ARG, f'bad value "{secret}"'))
    text = refusal_text(quoted, {}, [secret])
    assert secret not in text and "**********" in text, text


def test_check_config_warns_of_credentials_left_to_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SASL credentials come from the environment where the bridge runs (never the file):
    their absence here is a warning, and the check goes on without them."""
    properties = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    config = with_value(("kafka", "properties"), properties)
    config["kafka"]["sasl_username"] = "bridge"
    path = tmp_path / "sasl.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: OK" in out
    assert (
        "warning: kafka.sasl_password not set here" in err and "BRIDGE_KAFKA__SASL_PASSWORD" in err
    )
    config["kafka"]["properties"]["ssl.ca.location"] = "/no/ca.pem"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "warning: kafka.sasl_password not set here" in err
    assert "(no such file: /no/ca.pem)" in err, "checked on without the credentials"


def test_check_config_can_skip_the_files_for_another_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    properties = {"security.protocol": "SSL", "ssl.ca.location": "/mounted/in/the/pod/ca.pem"}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(with_value(("kafka", "properties"), properties)))
    assert main(["check-config", "-c", str(path)]) == 2
    assert main(["check-config", "-c", str(path), "--skip-files"]) == 0, capsys.readouterr()
    properties |= {"no.such.setting": "1"}
    path.write_text(yaml.safe_dump(with_value(("kafka", "properties"), properties)))
    assert main(["check-config", "-c", str(path), "--skip-files"]) == 2
    assert "no.such.setting" in capsys.readouterr().err
