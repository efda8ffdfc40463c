"""The whole configuration (:class:`BridgeConfig`): its sections and the checks that need more
than one of them. Loading a file is :mod:`bridge.config.load`'s."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge import limits
from bridge.config.mappings import MappingConfig, OffloadConfig, SchemaRegistryConfig
from bridge.config.sections import (
    AlibabaConfig,
    AwsConfig,
    BatchConfig,
    DlqConfig,
    KafkaConfig,
    LoggingConfig,
    ObservabilityConfig,
    PipelineConfig,
    RetryConfig,
)

BUS_V2_MAPPING_KEYS = ("event_group_id", "deduplication_id")
"""Mapping keys that only the new bus (sink: event_bus_v2) takes."""


def _entries_over_sink(sink: Any, max_entries: Any) -> str | None:
    """``max_entries: ...`` when ``batch.max_entries`` exceeds what the sink's API takes."""
    found = limits.SINK_LIMITS.get(sink if isinstance(sink, str) else "put_events")
    if found is None:
        return None
    hard = found.max_entries
    if not isinstance(max_entries, int) or isinstance(max_entries, bool):
        return None
    if max_entries <= hard:
        return None
    note = "" if sink in (None, "put_events") else f" for sink {sink}"
    return f"max_entries: Input should be less than or equal to {hard}{note} (got {max_entries})"


def raw_problems(raw: dict[str, Any]) -> list[str]:
    """Checks that need two sections, run on the raw data when pydantic already failed."""
    batch = raw.get("batch")
    if not isinstance(batch, dict):
        return []
    problem = _entries_over_sink(raw.get("sink"), batch.get("max_entries"))
    return [f"batch.{problem}"] if problem else []


class BridgeConfig(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    sink: Literal["put_events", "put_partner_events", "alibaba", "event_bus_v2"] = "put_events"
    kafka: KafkaConfig = KafkaConfig()
    aws: AwsConfig = AwsConfig()
    alibaba: AlibabaConfig = AlibabaConfig()
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    dlq: DlqConfig = DlqConfig()
    pipeline: PipelineConfig = PipelineConfig()
    logging: LoggingConfig = LoggingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    schema_registry: SchemaRegistryConfig = SchemaRegistryConfig()
    offload: OffloadConfig = OffloadConfig()
    mappings: tuple[MappingConfig, ...] = Field(..., min_length=1)

    @field_validator("batch")
    @classmethod
    def _batch_within_sink(cls, batch: BatchConfig, info: ValidationInfo) -> BatchConfig:
        problem = _entries_over_sink(info.data.get("sink"), batch.max_entries)
        if problem:
            raise ValueError("@" + problem)
        return batch

    @model_validator(mode="after")
    def _within_sink_limits(self) -> BridgeConfig:
        if self.sink == "alibaba":
            ali = self.alibaba
            missing = [
                k
                for k in ("endpoint", "access_key_id", "access_key_secret")
                if getattr(ali, k) is None
            ]
            if missing:
                others = ", ".join(f"alibaba.{k}" for k in missing[1:])
                raise ValueError(
                    f"@alibaba.{missing[0]}: required when sink is alibaba (env:"
                    f" BRIDGE_ALIBABA__{missing[0].upper()})"
                    + (f"; missing too: {others}" if others else "")
                )
            if self.batch.max_bytes is not None and self.batch.max_bytes > ali.max_request_bytes:
                raise ValueError(
                    f"@batch.max_bytes: {self.batch.max_bytes} is over alibaba.max_request_bytes"
                    f" ({ali.max_request_bytes})"
                )
        if self.sink == "event_bus_v2" and self.aws.event_bus_arn is None:
            raise ValueError(
                "@aws.event_bus_arn: required when sink is event_bus_v2 (env:"
                " BRIDGE_AWS__EVENT_BUS_ARN), e.g."
                " arn:aws:events:us-east-1:123456789012:event-busv2/<name>/<25-character id>"
            )
        if self.sink != "event_bus_v2":
            for index, mapping in enumerate(self.mappings):
                for key in BUS_V2_MAPPING_KEYS:
                    if getattr(mapping, key) is not None:
                        raise ValueError(
                            f"@mappings[{index}].{key}: only used with sink: event_bus_v2"
                            f" (sink is {self.sink})"
                        )
        if self.sink != "alibaba":
            for index, mapping in enumerate(self.mappings):
                if mapping.subject is not None:
                    raise ValueError(
                        f"@mappings[{index}].subject: the CloudEvents subject is only sent by"
                        f" sink: alibaba (sink is {self.sink}; PutEvents has no such field)"
                    )
        if self.aws.endpoint_id is not None and self.sink != "put_events":
            raise ValueError(
                "@aws.endpoint_id: global endpoints apply to sink put_events only"
                f" (sink is {self.sink})"
            )
        return self

    def packing(self) -> tuple[int, int, int]:
        """``(entries per call, bytes per call, bytes per entry)`` for the configured sink."""
        api = limits.SINK_LIMITS[self.sink]
        entries = min(self.batch.max_entries or api.max_entries, api.max_entries)
        if self.sink == "alibaba":
            entries = min(self.batch.max_entries or self.alibaba.max_events, api.max_entries)
            request = self.batch.max_bytes or self.alibaba.max_request_bytes
            return entries, request, min(self.alibaba.max_event_bytes, request)
        request = self.batch.max_bytes or api.default_request_bytes
        return entries, request, request

    @model_validator(mode="after")
    def _topics_have_mappings(self) -> BridgeConfig:
        for topic in self.kafka.topics:
            if not topic.startswith("^") and self.mapping_for(topic) is None:
                raise ValueError(f"kafka.topics: topic {topic!r} has no mapping in 'mappings'")
            if topic == self.dlq.topic:
                raise ValueError(f"kafka.topics: {topic!r} is also the dead-letter topic")
        return self

    def subscription(self) -> list[str]:
        """Topic names and ``^regex`` patterns to subscribe to."""
        if self.kafka.topics:
            return list(self.kafka.topics)
        subs: list[str] = []
        for m in self.mappings:
            if m.default:
                continue  # serves kafka.topics only (checked at load)
            entry = m.topic if m.topic is not None else "^" + m.topic_pattern.lstrip("^")  # type: ignore[union-attr]
            if entry not in subs:
                subs.append(entry)
        return subs

    def mapping_for(self, topic: str) -> MappingConfig | None:
        """The first mapping selecting ``topic`` by name or pattern, else the default one."""
        found = next((m for m in self.mappings if m.matches(topic)), None)
        return found or next((m for m in self.mappings if m.default), None)


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error: key path, message, and the bad value unless it is secret."""
    lines = []
    errors = exc.errors()
    failed_items = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
    for err in errors:
        if (
            err["type"] == "too_short"
            and err["loc"][:1] == err["loc"]
            and err["loc"][0] in failed_items
        ):
            continue  # "at least 1 item" only because that item was invalid: said already
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
        loc = loc.replace(".[", "[") or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith("@"):  # a validator of a section naming the key inside it
            key, msg = msg[1:].split(": ", 1)
            loc = f"{loc}.{key}" if loc != "<top level>" else key
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a setting of this bridge; check the spelling)"
        # external_id is not a secret to AWS, but it is not shown or logged either.
        secret = any(s in loc.lower() for s in ("password", "secret", "key.pem", "external_id"))
        value = err.get("input")
        scalar = isinstance(value, str | int | float | bool)
        hidden = secret or not scalar or err["type"] in ("missing", "extra_forbidden")
        shown = "" if hidden else f" (got {value!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return lines
