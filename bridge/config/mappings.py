"""The per-topic mappings: what selects a record, how it is decoded, the templates, the
Schema Registry and the claim-check offload settings."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge import limits
from bridge.config.sections import Frozen, compile_regex, reveal

DecoderFormat = Literal["json", "text", "bytes", "avro", "protobuf", "json_schema"]
"""How key or value bytes become a template input (README, 'Decoders')."""


REGISTRY_FORMATS = frozenset({"avro", "protobuf", "json_schema"})
"""Decoders that read the writer's schema from a Confluent-compatible Schema Registry."""


class DecodeConfig(Frozen):
    """How a record's key and value bytes become the template inputs ``key`` and ``value``.

    ``json``: JSON text (UTF-8). ``text``: UTF-8 text. ``bytes``: any bytes, as base64 text.
    ``avro``, ``protobuf``, ``json_schema``: Confluent Schema Registry framing, decoded with the
    writer's schema from ``schema_registry``.
    """

    key: DecoderFormat = Field("text", description="Decoder of the record key.")
    value: DecoderFormat = Field("json", description="Decoder of the record value.")


class SchemaRegistryConfig(Frozen):
    """A Confluent-compatible Schema Registry, for the ``avro``, ``protobuf``, ``json_schema``
    decoders. Schemas are fetched by id on first use and cached."""

    url: str | None = Field(
        None,
        description="http(s)://host:8081, several comma-separated; mock://<scope> in tests.",
    )
    username: str | None = Field(None, description="Basic auth user (API key).")
    password: SecretStr | None = Field(
        None, description="Basic auth password (API secret); set it with an env variable."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Other settings of confluent-kafka's SchemaRegistryClient, passed through"
        " (ssl.ca.location, max.retries, timeout, ...).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for url in value.split(","):
            if not url.strip().startswith(("http://", "https://", "mock://")):
                raise ValueError(f"{url.strip()!r} must start with http://, https:// or mock://")
        return value

    @field_validator("properties")
    @classmethod
    def _hide_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("url", "basic.auth.user.info"):
            if key in value:
                raise ValueError(f"'{key}' is set with schema_registry.url/username/password")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(item, str | int | float | bool | SecretStr):
                raise ValueError(f"'{key}' must be a string, number or boolean")
            secret = "password" in key or "secret" in key
            out[key] = SecretStr(str(item)) if secret else item
        return out

    def client_config(self) -> dict[str, Any]:
        """Settings of confluent-kafka's ``SchemaRegistryClient`` (secrets revealed)."""
        assert self.url is not None
        conf: dict[str, Any] = {"url": self.url, **reveal(self.properties)}
        if self.username is not None:
            password = self.password.get_secret_value() if self.password else ""
            conf["basic.auth.user.info"] = f"{self.username}:{password}"
        return conf


class OffloadConfig(Frozen):
    """Where entries too large for the bus put their payload (``oversize: offload``): S3."""

    bucket: str | None = Field(None, min_length=3, max_length=63, description="The S3 bucket.")
    prefix: str = Field(
        "eventbridge-bridge/",
        max_length=512,
        description="Object keys are <prefix><topic>/<partition>/<offset>.json.",
    )
    region: str | None = Field(None, description="Default: aws.region.")
    endpoint_url: str | None = Field(None, description="For S3-compatible or local endpoints.")
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    read_timeout_s: float = Field(30.0, gt=0, le=300)
    max_attempts: int = Field(5, ge=1, le=20, description="PutObject attempts (standard retries).")


OptionalField = Literal["resources", "time", "trace_header", "subject"]
"""Entry fields the API does not require: left out when their template selects nothing."""

OPTIONAL_FIELDS: tuple[str, ...] = ("resources", "time", "trace_header", "subject")

_OFFLOAD_PATH = re.compile(r"^[A-Za-z0-9_\-$@]+(\.[A-Za-z0-9_\-$@]+)*$")


_RAW_ONLY = ("data", "metadata", "content_type")
_PUT_EVENTS_ONLY = (
    "source",
    "detail_type",
    "detail",
    "resources",
    "time",
    "event_bus_name",
    "trace_header",
    "trace_detail_key",
    "required",
    "subject",
    "oversize",
    "offload_path",
)


class MappingConfig(Frozen):
    """How the records of a topic become PutEvents entries.

    Templates: text with ``${expr}`` placeholders, ``expr`` being JMESPath over
    ``{value, key, headers, topic, partition, offset, timestamp, id}``. A template that is a
    single placeholder keeps the type of what it selects (objects stay objects).
    """

    topic: str | None = Field(None, description="Exact topic name.")
    topic_pattern: str | None = Field(None, description="Python regex, matched in full.")
    default: bool = Field(
        False,
        description="Serves the subscribed topics that no other mapping selects (at most one).",
    )
    decode: DecodeConfig = DecodeConfig()
    filter: str | None = Field(
        None,
        description="One ${expr}: records for which it is false, null or empty are dropped"
        " (counted, offsets committed).",
    )
    tombstones: Literal["dead_letter", "skip", "send"] = Field(
        "dead_letter", description="Records with a null value."
    )
    null_keys: Literal["send", "skip", "dead_letter"] = Field(
        "send", description="Records with a null key."
    )
    source: str | None = Field(
        None, min_length=1, description="Required, except with publish: put_raw_events."
    )
    detail_type: str | None = Field(
        None, min_length=1, description="Required, except with publish: put_raw_events."
    )
    detail: str = "${value}"
    resources: tuple[str, ...] = ()
    time: str | None = Field(
        None,
        description="Not set: the Kafka record timestamp. A template that selects nothing"
        " leaves Time out (e.g. ${value.at || timestamp} falls back to the record's).",
    )
    event_bus_name: str | None = Field(None, description="Default: aws.event_bus_name.")
    trace_header: str | None = Field(
        None,
        description="A template (e.g. ${headers.\"X-Amzn-Trace-Id\"}), or 'auto': the"
        " record's X-Amzn-Trace-Id header as it is, else its W3C traceparent header converted"
        " to the X-Ray form; none of them: no TraceHeader.",
    )
    trace_detail_key: str | None = Field(
        None,
        min_length=1,
        description="Also put the trace header in Detail under this key (EventBridge does not"
        " pass TraceHeader on to targets); needs trace_header.",
    )
    required: tuple[OptionalField, ...] = Field(
        (),
        description="Optional fields (resources, time, trace_header, subject) are left out"
        " when their template selects nothing; those named here dead-letter the record"
        " (MissingField) instead.",
    )
    subject: str | None = Field(None, description="CloudEvents subject (sink: alibaba).")
    event_group_id: str | None = Field(
        None,
        description="sink: event_bus_v2: the event group (e.g. ${key}); a group's entries are"
        " published in offset order (per partition). Must select 1-128 characters.",
    )
    publish: Literal["put_events", "put_raw_events"] = Field(
        "put_events",
        description="sink: event_bus_v2: put_events (Source, DetailType, Detail...) or"
        " put_raw_events (the record's value bytes as they are, with content_type and"
        " metadata).",
    )
    content_type: Literal["auto", "json", "avro", "protobuf", "octet-stream"] = Field(
        "auto",
        description="publish: put_raw_events: the ContentType (application/...); auto: avro or"
        " protobuf from the record's Schema Registry framing and its schema's type.",
    )
    data: str | None = Field(
        None,
        description="publish: put_raw_events: a template for Data; default: the record's value"
        " bytes as they are.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="publish: put_raw_events: Metadata, name -> template (at most 100; names"
        " 1-128 characters without '/'); a template that selects nothing leaves its key out.",
    )
    deduplication_id: str | None = Field(
        None,
        description="sink: event_bus_v2: the DeduplicationId; default: the record id"
        " (<topic>-<partition>-<offset>), so a record sent again is published once.",
    )
    oversize: Literal["dead_letter", "offload"] = Field(
        "dead_letter",
        description="Entries over the size limit: dead-lettered (EntryTooLarge), or their"
        " payload put in S3 (offload:) and a reference sent in its place.",
    )
    offload_path: str | None = Field(
        None,
        description="Dotted keys of the Detail member to offload (e.g. order.attachment);"
        " default: all of Detail.",
    )

    @field_validator("topic_pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @field_validator("offload_path")
    @classmethod
    def _check_offload_path(cls, value: str | None) -> str | None:
        if value is not None and not _OFFLOAD_PATH.match(value):
            raise ValueError(
                f"{value!r} is not a dotted path of keys (letters, digits, _ - $ @), e.g."
                " 'order.attachment'"
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > limits.BUS_V2_MAX_METADATA_KEYS:
            raise ValueError(f"{len(value)} keys; at most {limits.BUS_V2_MAX_METADATA_KEYS}")
        for key in value:
            if not 1 <= len(key) <= limits.BUS_V2_ID_MAX_CHARS or "/" in key:
                raise ValueError(f"key {key[:40]!r}: 1 to 128 characters, no '/'")
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> MappingConfig:
        chosen = [n for n in ("topic", "topic_pattern") if getattr(self, n) is not None]
        if self.default:
            chosen.append("default")
        if self.publish == "put_events":
            for name in ("source", "detail_type"):
                if getattr(self, name) is None:
                    raise ValueError(f"@{name}: required (publish: put_events)")
            for name in _RAW_ONLY:
                if name in self.model_fields_set:
                    raise ValueError(f"@{name}: only used with publish: put_raw_events")
        else:
            for name in _PUT_EVENTS_ONLY:
                if name in self.model_fields_set:
                    raise ValueError(f"@{name}: not used with publish: put_raw_events")
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of 'topic', 'topic_pattern' or 'default: true'"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        if len(self.resources) > limits.MAX_RESOURCES:
            raise ValueError(
                f"@resources: {len(self.resources)} templates; at most {limits.MAX_RESOURCES}"
            )
        if self.offload_path is not None and self.oversize != "offload":
            raise ValueError("@offload_path: only used with 'oversize: offload'")
        if self.trace_detail_key is not None and self.trace_header is None:
            raise ValueError("@trace_detail_key: only used with 'trace_header'")
        unset = [name for name in self.required if not self.sets(name)]
        if unset:
            raise ValueError(
                f"@required: {', '.join(unset)} not set in this mapping; only fields it sets"
                " can be required"
            )
        return self

    def sets(self, name: str) -> bool:
        """Whether the mapping gives field ``name`` a template (resources: at least one)."""
        value = getattr(self, name)
        return bool(value) if name == "resources" else value is not None

    def optional_fields(self) -> list[str]:
        """The fields this mapping sets that are left out when they select nothing."""
        return [n for n in OPTIONAL_FIELDS if self.sets(n) and n not in self.required]

    def required_fields(self) -> list[str]:
        """The fields whose template selecting nothing dead-letters the record
        (``MissingField``)."""
        always = ["source", "detail_type", "detail"]
        if self.event_bus_name is not None:
            always.append("event_bus_name")
        return always + [n for n in OPTIONAL_FIELDS if n in self.required]

    def matches(self, topic: str) -> bool:
        """Whether this mapping selects ``topic`` by name or pattern (a default selects none)."""
        if self.topic is not None:
            return topic == self.topic
        if self.topic_pattern is None:
            return False
        return re.fullmatch(self.topic_pattern, topic) is not None

    def describe(self) -> str:
        """How the mapping selects topics, as a README would say it."""
        if self.topic is not None:
            return f"topic {self.topic!r}"
        if self.topic_pattern is not None:
            return f"topics matching {self.topic_pattern!r}"
        return "every other subscribed topic (default)"
