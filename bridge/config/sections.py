"""The sections of the configuration other than the mappings: Kafka, AWS, Alibaba, batching,
retries, the dead-letter topic, the loop, observability, logging.

Over 400 lines: one small model per section, each field with the description users read in the
editor schema and the chart's; the models are flat declarations that read best side by side.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge import limits

SECRET_KAFKA_KEYS = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
    }
)
"""librdkafka keys whose values are secrets: kept as SecretStr, never printed."""

_FORCED_CONSUMER_KEYS = {"enable.auto.commit": False, "enable.auto.offset.store": False}


def librdkafka_properties(value: dict[str, Any]) -> dict[str, Any]:
    """Check pass-through librdkafka settings; wrap secret ones in SecretStr."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool | SecretStr):
            raise ValueError(f"'{key}' must be a string, number or boolean")
        out[key] = SecretStr(str(item)) if key in SECRET_KAFKA_KEYS else item
    return out


def reveal(value: dict[str, Any]) -> dict[str, Any]:
    """Pass-through settings with secrets revealed, for librdkafka only."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in value.items()}


class Frozen(BaseModel):
    """A section: immutable once loaded, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaConfig(Frozen):
    """Connection to the source cluster and the consumer group."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    group_id: str = Field("eventbridge-bridge", min_length=1)
    topics: tuple[str, ...] = Field(
        (),
        description="Names, or regexes starting with '^'. Empty: the topics of the mappings.",
    )
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="Static membership (librdkafka group.instance.id): a name unique in the"
        " group and stable across restarts of one instance, e.g. a StatefulSet pod's name"
        " (BRIDGE_KAFKA__GROUP_INSTANCE_ID). A restarted instance gets its partitions back"
        " without a rebalance if it returns within session.timeout.ms.",
    )
    offset_metadata_max_bytes: int = Field(
        4096,
        ge=64,
        le=100 * 1024 * 1024,
        description="The brokers' offset.metadata.max.bytes: finished offsets recorded in a"
        " commit must fit in it, else the plain offset is committed.",
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Any librdkafka setting, passed through (security.protocol, ssl.*, ...).",
    )

    @field_validator("properties")
    @classmethod
    def _hide_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _FORCED_CONSUMER_KEYS:
                raise ValueError(
                    f"'{key}' is managed by the bridge (offsets are stored only after delivery)"
                    " and cannot be set"
                )
        return librdkafka_properties(value)

    @model_validator(mode="after")
    def _one_instance_id(self) -> KafkaConfig:
        if self.group_instance_id is not None and "group.instance.id" in self.properties:
            raise ValueError(
                "group_instance_id and properties['group.instance.id'] are both set: keep one"
            )
        return self

    @field_validator("topics")
    @classmethod
    def _check_regex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for topic in value:
            if topic.startswith("^"):
                compile_regex(topic)
        return value

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by the consumer and the dead-letter producer (secrets in)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(reveal(self.properties))
        return conf

    def instance_id(self) -> str | None:
        """The static membership id in force (``group_instance_id`` or the passed-through
        ``group.instance.id``), or None: dynamic membership."""
        value = self.group_instance_id or self.properties.get("group.instance.id")
        return str(value) if value not in (None, "") else None


IAM_ROLE_ARN = (
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/(?:[A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}$"
)
"""An IAM role's ARN (any partition), its path included: ``arn:aws:iam::123456789012:role/x``."""


class AwsConfig(Frozen):
    """Where events go."""

    region: str = Field("us-east-1", min_length=1)
    endpoint_url: str | None = Field(None, description="For local endpoints and VPC endpoints.")
    event_bus_name: str = Field("default", min_length=1, max_length=1600)
    check_event_bus: bool = Field(
        True,
        description="DescribeEventBus at start: PutEvents to a missing bus answers 200 and drops"
        " the events silently.",
    )
    event_bus_arn: str | None = Field(
        None,
        max_length=1011,
        json_schema_extra={"pattern": limits.BUS_V2_EVENT_BUS_ARN},
        description="sink: event_bus_v2: the Custom Event Bus, e.g."
        " arn:aws:events:us-east-1:123456789012:event-busv2/orders/<25-character id>.",
    )
    schema_registry_uri: str | None = Field(
        None,
        max_length=2048,
        json_schema_extra={"pattern": limits.BUS_V2_REGISTRY_URI},
        description="sink: event_bus_v2, publish: put_raw_events: the registry the bus decodes"
        " Avro and Protobuf against, sent on every PutRawEvents request: a Glue registry ARN"
        " (arn:aws:glue:<region>:<account>:registry/<name>) or a Confluent registry https URL.",
    )
    schema_registry_connection_arn: str | None = Field(
        None,
        max_length=1600,
        json_schema_extra={"pattern": limits.BUS_V2_CONNECTION_ARN},
        description="With a Confluent registry URL: the EventBridge Connection ARN holding its"
        " API key or OAuth credentials.",
    )
    content_based_deduplication: bool = Field(
        False,
        description="sink: event_bus_v2: the bus deduplicates by a hash of each event's content"
        " (CONTENT_BASED, billed extra by AWS) instead of by DeduplicationId (the record id by"
        " default).",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    client: Literal["lean", "boto3"] = Field(
        "lean",
        description="lean: boto3's credentials, endpoint, TLS and proxy settings, signed as"
        " botocore signs (tested equal) and sent with libcurl; boto3: every call through boto3.",
    )
    endpoint_id: str | None = Field(
        None,
        min_length=1,
        max_length=50,
        pattern=r"^[A-Za-z0-9\-]+[\.][A-Za-z0-9\-]+$",
        description="Global endpoint id (e.g. abcde.veo); needs SigV4a signing (awscrt).",
    )
    assume_role_arn: str | None = Field(
        None,
        max_length=2048,
        pattern=IAM_ROLE_ARN,
        description="An IAM role to assume (sts:AssumeRole) with the default chain's credentials,"
        " e.g. a role of the account that owns the event bus. Refreshed before it expires.",
    )
    external_id: str | None = Field(
        None,
        min_length=2,
        max_length=1224,
        pattern=r"^[A-Za-z0-9_+=,.@:/-]+$",
        repr=False,
        description="The ExternalId the role's trust policy requires (with assume_role_arn).",
    )
    role_session_name: str = Field(
        "kafka-eventbridge-bridge",
        min_length=2,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+=,.@-]+$",
        description="The RoleSessionName of the assumed role (CloudTrail shows it).",
    )
    role_duration_s: int = Field(
        3600,
        ge=900,
        le=43200,
        description="DurationSeconds of the assumed role's credentials: at most the role's"
        " maximum session duration, and at most 3600 when the default chain's credentials are"
        " themselves a role's (role chaining).",
    )

    @model_validator(mode="after")
    def _registry(self) -> AwsConfig:
        uri, connection = self.schema_registry_uri, self.schema_registry_connection_arn
        if uri is not None and not re.match(limits.BUS_V2_REGISTRY_URI, uri):
            raise ValueError(
                "@schema_registry_uri: a Glue registry ARN"
                " (arn:aws:glue:<region>:<account>:registry/<name>) or an https:// URL"
            )
        if connection is not None and not re.match(limits.BUS_V2_CONNECTION_ARN, connection):
            raise ValueError(
                "@schema_registry_connection_arn: an EventBridge Connection ARN"
                " (arn:aws:events:<region>:<account>:connection/<name>/<id>)"
            )
        https = uri is not None and uri.startswith("https://")
        if https and connection is None:
            raise ValueError(
                "@schema_registry_connection_arn: required with a Confluent registry URL (the"
                " bus reads the registry with the Connection's credentials)"
            )
        if connection is not None and not https:
            raise ValueError("@schema_registry_connection_arn: only with an https:// registry")
        return self

    @field_validator("event_bus_arn")
    @classmethod
    def _custom_event_bus_arn(cls, value: str | None) -> str | None:
        if value is not None and not re.match(limits.BUS_V2_EVENT_BUS_ARN, value):
            classic = ":event-bus/" in value
            raise ValueError(
                "not the ARN of a Custom Event Bus: expected"
                " arn:aws:events:<region>:<12-digit account>:event-busv2/<name>/<25-character id>"
                + (" (this is a classic bus's ARN: use sink put_events)" if classic else "")
            )
        return value

    @model_validator(mode="after")
    def _role_settings_need_a_role(self) -> AwsConfig:
        if self.assume_role_arn is None:
            for key in ("external_id", "role_session_name", "role_duration_s"):
                if key in self.model_fields_set and getattr(self, key) is not None:
                    raise ValueError(
                        f"@{key}: used only with aws.assume_role_arn, which is not set"
                    )
        return self


_ALIBABA = limits.SINK_LIMITS["alibaba"]


class AlibabaConfig(Frozen):
    """Alibaba Cloud EventBridge (``sink: alibaba``). Its own pages disagree on the limits
    (API page: 64 KB per event, 16 per call, 256 KB per call; limits page: 256 KB per event,
    1 MB per call), so they are settings with the API page's values as defaults."""

    endpoint: str | None = Field(
        None, description="e.g. https://<account-id>.eventbridge.cn-hangzhou.aliyuncs.com"
    )
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    max_events: int = Field(_ALIBABA.max_entries, ge=1, le=_ALIBABA.max_entries)
    max_event_bytes: int = Field(_ALIBABA.entry_bytes, ge=1024, le=_ALIBABA.entry_bytes_ceiling)
    max_request_bytes: int = Field(
        _ALIBABA.default_request_bytes, ge=1024, le=_ALIBABA.max_request_bytes
    )
    timeout_s: float = Field(10.0, gt=0, le=300)


class BatchConfig(Frozen):
    """How entries are packed into PutEvents calls."""

    max_entries: int | None = Field(
        None,
        ge=1,
        le=limits.MAX_ENTRIES_OF_ANY_SINK,
        description="Default: the sink's limit (10; 20 for partner events; 16 for alibaba; 100"
        " for event_bus_v2).",
    )
    max_bytes: int | None = Field(
        None,
        ge=1024,
        le=limits.MAX_REQUEST_BYTES_OF_ANY_SINK,
        description="Default: 256 KiB for the classic AWS sinks (up to 1 MiB); 1 MiB for"
        " event_bus_v2; alibaba.max_request_bytes.",
    )
    linger_ms: int = Field(20, ge=0, le=60_000)


class RetryConfig(Frozen):
    """Retries of retryable entries and failed calls: exponential backoff with equal jitter."""

    max_attempts: int = Field(10, ge=1, le=1000, description="Sends per entry, the first included.")
    initial_backoff_ms: int = Field(100, ge=1, le=600_000)
    max_backoff_ms: int = Field(20_000, ge=1, le=3_600_000)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise ValueError(
                f"max_backoff_ms ({self.max_backoff_ms}) must be >= initial_backoff_ms"
                f" ({self.initial_backoff_ms})"
            )
        return self


class DlqConfig(Frozen):
    """The dead-letter topic: records that cannot be mapped or keep failing."""

    topic: str = Field("eventbridge-bridge-dlq", min_length=1, max_length=249)
    producer: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka producer settings for the dead-letter writes."
    )
    retry_backoff_ms: int = Field(
        1000, ge=1, le=600_000, description="Wait before writing again after a failed write."
    )

    @field_validator("producer")
    @classmethod
    def _hide_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        return librdkafka_properties(value)


class PipelineConfig(Frozen):
    """The loop: what is in flight, how often offsets are committed, how long a stop may take."""

    max_in_flight_calls: int = Field(
        256,
        ge=1,
        le=1024,
        description="The most PutEvents calls in flight: the ceiling of the adaptive"
        " concurrency, or the number in flight when adaptive_concurrency is false.",
    )
    adaptive_concurrency: bool = Field(
        True,
        description="The number of calls in flight grows while latency stays flat and shrinks"
        " when it rises or calls fail, between 1 and max_in_flight_calls.",
    )
    concurrency_rtt_tolerance: float = Field(
        1.0,
        gt=0,
        le=10,
        description="How far latency may rise above its no-load value (1.0: to twice it) before the"
        " number of calls in flight shrinks.",
    )
    max_buffered_records: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        description="Records consumed and not covered by the last commit (below its offset or"
        " recorded finished in its metadata; records behind a stuck one count a quarter each at"
        " least); above it fetching holds, then pauses. Bounds memory and what a crash can send"
        " twice.",
    )
    max_buffered_bytes: int | None = Field(
        None,
        ge=1_048_576,
        le=1 << 40,
        description="Bytes of records consumed and not yet finished (value, key, headers,"
        " the mapped entry and under 1 KB of objects each). Default: derived from the"
        " container's memory limit (cgroup), 256 MiB without one.",
    )
    commit_interval_ms: int = Field(
        1000,
        ge=10,
        le=600_000,
        description="The longest time between two commits (and lag updates).",
    )
    commit_min_gap_ms: int = Field(
        50,
        ge=10,
        le=600_000,
        description="Finished offsets are committed as soon as this long has passed since the"
        " last commit (never later than commit_interval_ms): at most 1000/commit_min_gap_ms"
        " commits per second, each a round trip to the group coordinator. Shorter: fewer"
        " records sent again after a crash.",
    )
    finished_offsets_in_commit: bool = Field(
        True,
        description="Record in each commit's metadata which offsets above the committed one"
        " are finished; after a restart or a rebalance they are not sent again.",
    )
    shutdown_timeout_s: float = Field(30.0, ge=0, le=3600)
    poll_timeout_ms: int = Field(50, ge=1, le=10_000)
    max_entries_per_second: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Ceiling on entries sent per second (a share of the account's quota).",
    )
    adaptive_rate: bool = Field(
        True,
        description="Throttling that sending less removes (a quota) holds the send rate just"
        " under it; throttling that does not (random, other senders' load) is tolerated.",
    )
    rate_increase_per_second: float = Field(
        10.0,
        gt=0,
        le=1_000_000,
        description="The least growth of the adaptive rate limit, entries/s per second.",
    )
    rate_decrease_factor: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="On throttling caused by the bridge's rate, the limit becomes this share of"
        " the rate that got through.",
    )
    min_entries_per_second: float = Field(
        10.0, gt=0, le=1_000_000, description="The adaptive rate limit never goes below this."
    )
    group_on_dead_letter: Literal["continue", "hold"] = Field(
        "continue",
        description="Entries with an event group id (sink: event_bus_v2) are sent in offset"
        " order per group and partition. When one of them is dead-lettered, continue: the"
        " group's later entries are sent; hold: they are dead-lettered too (GroupHeld), so the"
        " bus never publishes the group past a gap.",
    )


class ObservabilityConfig(Frozen):
    """The HTTP port serving ``/healthz``, ``/readyz`` and ``/metrics``."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port.")
    stuck_after_s: float = Field(
        120.0, ge=5, le=3600, description="Liveness fails when the loop has not turned this long."
    )


class LoggingConfig(Frozen):
    """Log output."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


def compile_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a ValueError naming it (pydantic reports it with its key)."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
