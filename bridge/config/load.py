"""Loading the configuration: YAML, environment overrides, every problem reported at once.

Above both the settings model (:mod:`bridge.config.model`) and the mapping
(:mod:`bridge.mapping`): a file is valid when its sections validate and its templates compile
(:mod:`bridge.mapping.checks`). Not re-exported by :mod:`bridge.config`, which the mapping
imports: that would make a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bridge.config.model import BridgeConfig, format_validation_error, raw_problems
from bridge.config.sections import DlqConfig, KafkaConfig
from bridge.errors import ConfigError
from bridge.mapping.checks import mapping_problems, raw_mapping_problems
from bridge.mapping.registry import registry_client

_S = TypeVar("_S", bound=BaseSettings)


def _reading(base: type[_S], path: Path) -> type[_S]:
    """``base`` with its values taken from the environment, then from the YAML file ``path``."""

    class _FromFile(base):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                YamlConfigSettingsSource(settings_cls, yaml_file=path),
            )

    return _FromFile


class _KafkaSections(BaseSettings):
    """The ``kafka`` and ``dlq`` sections alone (:func:`load_kafka_sections`)."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="ignore"
    )
    kafka: KafkaConfig = KafkaConfig()
    dlq: DlqConfig = DlqConfig()


def load_config(path: str | Path) -> BridgeConfig:
    """Load, override from the environment, validate (templates included) and freeze.

    Raises:
        ConfigError: Naming every problem: key path, bad value, allowed range.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"file not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # Only the position and the problem: PyYAML's own text quotes the line, maybe a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(str(path), [f"not valid YAML{where}: {problem}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            str(path), ["the file must hold a YAML mapping (key: value) at top level"]
        )

    try:
        config = _reading(BridgeConfig, path)()
    except ValidationError as exc:
        raise ConfigError(str(path), _merge(format_validation_error(exc), raw)) from None
    _check_templates(config, str(path))
    return config


def load_kafka_sections(path: str | Path) -> BridgeConfig | None:
    """Only the ``kafka`` and ``dlq`` sections of a file (env overrides applied), if valid.

    For ``check-config``: what librdkafka refuses in them can be said alongside the problems of
    the other sections. The result is not a configuration to run: every other section is left
    unset. None when the file cannot be read or these sections are invalid themselves
    (:func:`load_config` says why).
    """
    path = Path(path)

    if not path.is_file():
        return None
    try:
        sections = _reading(_KafkaSections, path)()
    except Exception:  # not YAML, not a mapping, invalid: load_config reports it
        return None
    return BridgeConfig.model_construct(kafka=sections.kafka, dlq=sections.dlq)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> BridgeConfig:
    """Validate a configuration given as a dict (tests, embedded use); no env overrides."""
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _merge(format_validation_error(exc), data)) from None
    _check_templates(config, source)
    return config


def _merge(problems: list[str], raw: dict[str, Any]) -> list[str]:
    keys = {p.split(":", 1)[0] for p in problems}
    extra = raw_problems(raw) + raw_mapping_problems(raw)
    return problems + [p for p in extra if p.split(":", 1)[0] not in keys]


def _check_templates(config: BridgeConfig, source: str) -> None:
    problems = mapping_problems(config) + _registry_problems(config)
    if problems:
        raise ConfigError(source, problems)


def _registry_problems(config: BridgeConfig) -> list[str]:
    """What confluent-kafka's ``SchemaRegistryClient`` refuses in ``schema_registry``."""
    if config.schema_registry.url is None:
        return []
    try:
        registry_client(config.schema_registry)
    except ValueError as exc:
        return [f"schema_registry.properties: {exc}"]
    return []
