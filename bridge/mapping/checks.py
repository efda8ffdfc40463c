"""Load-time checks of the mappings: every problem, each with its key path.

Run by :mod:`bridge.config.load` after the settings validated (:func:`mapping_problems`), and
on the raw file when they did not (:func:`raw_mapping_problems`), so that ``check-config``
reports the template errors of a file together with its other errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from bridge.config import REGISTRY_FORMATS, BridgeConfig, MappingConfig
from bridge.mapping.mapper import compile_mapping


def _raw_problems(mapping: MappingConfig, config: BridgeConfig) -> list[str]:
    """What a ``publish: put_raw_events`` mapping needs from the rest of the configuration."""
    if mapping.publish != "put_raw_events":
        return []
    if config.sink != "event_bus_v2":
        return [f"publish: put_raw_events needs sink: event_bus_v2 (sink is {config.sink})"]
    problems = []
    if mapping.content_type in ("avro", "protobuf", "auto") and not config.aws.schema_registry_uri:
        problems.append(
            f"content_type: {mapping.content_type}: the bus decodes Avro and Protobuf against a"
            " schema registry named on each request: set aws.schema_registry_uri (a Glue"
            " registry ARN, or a Confluent registry https URL with"
            " aws.schema_registry_connection_arn)"
        )
    if mapping.content_type == "auto" and config.schema_registry.url is None:
        problems.append(
            "content_type: auto reads each record's schema type from the Schema Registry of its"
            " framing: set schema_registry.url (or name the content_type)"
        )
    return problems


def mapping_problems(config: BridgeConfig) -> list[str]:
    """Every problem of ``config.mappings`` and the sections they use."""
    problems: list[str] = []
    defaults: list[int] = []
    for index, mapping in enumerate(config.mappings):
        at = f"mappings[{index}]"
        problems.extend(f"{at}.{p}" for p in _own_problems(mapping))
        source = mapping.source or ""
        problems.extend(f"{at}.{p}" for p in _raw_problems(mapping, config))
        literal_source = "${" not in source and mapping.source is not None
        if literal_source and config.sink == "put_events" and source.startswith("aws."):
            problems.append(f"{at}.source: must not start with 'aws.' (reserved for AWS services)")
        if (
            literal_source
            and config.sink == "put_partner_events"
            and not source.startswith("aws.partner/")
        ):
            problems.append(
                f"{at}.source: partner events need a partner event source"
                " (aws.partner/<partner>/<account>/<name>)"
            )
        for name in ("key", "value"):
            fmt = getattr(mapping.decode, name)
            if fmt in REGISTRY_FORMATS and config.schema_registry.url is None:
                problems.append(
                    f"{at}.decode.{name}: {fmt} needs a Schema Registry: set schema_registry.url"
                )
        if mapping.oversize == "offload" and config.offload.bucket is None:
            problems.append(f"{at}.oversize: offload needs an S3 bucket: set offload.bucket")
        if mapping.default:
            defaults.append(index)
    if len(defaults) > 1:
        problems.append(
            f"mappings[{defaults[1]}].default: only one mapping can be the default"
            f" (mappings[{defaults[0]}] is)"
        )
    if defaults and not config.kafka.topics:
        problems.append(
            f"mappings[{defaults[0]}].default: a default mapping serves subscribed topics that no"
            " other mapping selects; subscribe to them with kafka.topics (e.g. ['^.*'])"
        )
    return problems


def _own_problems(mapping: MappingConfig) -> list[str]:
    """Problems of one mapping on its own: templates, filter, policies that contradict."""
    problems = list(compile_mapping(mapping).problems)
    if mapping.tombstones == "send" and mapping.detail.strip() == "${value}":
        problems.append(
            "tombstones: send maps null values, but detail is '${value}', which a tombstone"
            " does not have; give a detail that does not need the value, e.g."
            " '${ {key: key, deleted: `true`} }'"
        )
    return problems


def raw_mapping_problems(raw: dict[str, Any]) -> list[str]:
    """Template problems of the mappings that validate on their own, from the raw file."""
    mappings = raw.get("mappings")
    if not isinstance(mappings, list):
        return []
    problems: list[str] = []
    for index, item in enumerate(mappings):
        try:
            mapping = MappingConfig.model_validate(item)
        except ValidationError:
            continue  # pydantic's own errors name these already
        problems.extend(f"mappings[{index}].{p}" for p in _own_problems(mapping))
    return problems
