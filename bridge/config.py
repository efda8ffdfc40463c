"""The configuration tree: one frozen pydantic-settings model loaded from YAML, env overrides.

Precedence, highest first: environment variables (``BRIDGE_`` prefix, ``__`` between levels, e.g.
``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``), then the YAML file. Every limit of the PutEvents API is
checked here, at load, so a bad file fails before anything connects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bridge import limits
from bridge.errors import ConfigError

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaConfig(_Frozen):
    """Connection to the source cluster and the consumer group."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    group_id: str = Field("eventbridge-bridge", min_length=1)
    topics: tuple[str, ...] = Field(
        (),
        description="Names, or regexes starting with '^'. Empty: the topics of the mappings.",
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

    @field_validator("topics")
    @classmethod
    def _check_regex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for topic in value:
            if topic.startswith("^"):
                _compile_regex(topic)
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


IAM_ROLE_ARN = (
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/(?:[A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}$"
)
"""An IAM role's ARN (any partition), its path included: ``arn:aws:iam::123456789012:role/x``."""


class AwsConfig(_Frozen):
    """Where events go."""

    region: str = Field("us-east-1", min_length=1)
    endpoint_url: str | None = Field(None, description="For local endpoints and VPC endpoints.")
    event_bus_name: str = Field("default", min_length=1, max_length=1600)
    check_event_bus: bool = Field(
        True,
        description="DescribeEventBus at start: PutEvents to a missing bus answers 200 and drops"
        " the events silently.",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    client: Literal["lean", "boto3"] = Field(
        "lean",
        description="lean: boto3's signing, credentials and endpoint with a lighter call path;"
        " boto3: every call through boto3.",
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
    def _role_settings_need_a_role(self) -> AwsConfig:
        if self.assume_role_arn is None:
            for key in ("external_id", "role_session_name", "role_duration_s"):
                if key in self.model_fields_set and getattr(self, key) is not None:
                    raise ValueError(
                        f"@{key}: used only with aws.assume_role_arn, which is not set"
                    )
        return self


class AlibabaConfig(_Frozen):
    """Alibaba Cloud EventBridge (``sink: alibaba``). Its own pages disagree on the limits
    (API page: 64 KB per event, 16 per call, 256 KB per call; limits page: 256 KB per event,
    1 MB per call), so they are settings with the API page's values as defaults."""

    endpoint: str | None = Field(
        None, description="e.g. https://<account-id>.eventbridge.cn-hangzhou.aliyuncs.com"
    )
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    max_events: int = Field(16, ge=1, le=16)
    max_event_bytes: int = Field(65_536, ge=1024, le=262_144)
    max_request_bytes: int = Field(262_144, ge=1024, le=1_048_576)
    timeout_s: float = Field(10.0, gt=0, le=300)


class BatchConfig(_Frozen):
    """How entries are packed into PutEvents calls."""

    max_entries: int | None = Field(
        None, ge=1, le=20, description="Default: the sink's limit (10, 20 for partner events, 16)."
    )
    max_bytes: int | None = Field(
        None,
        ge=1024,
        le=limits.PUT_EVENTS_MAX_BYTES_CEILING,
        description="Default: 256 KiB for AWS sinks (up to 1 MiB); alibaba.max_request_bytes.",
    )
    linger_ms: int = Field(20, ge=0, le=60_000)


class RetryConfig(_Frozen):
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


class DlqConfig(_Frozen):
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


class PipelineConfig(_Frozen):
    """The loop: what is in flight, how often offsets are committed, how long a stop may take."""

    max_in_flight_calls: int = Field(4, ge=1, le=256)
    max_buffered_records: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        description="Records consumed and not yet committed; above it partitions are paused."
        " Bounds memory and what a crash can send twice.",
    )
    commit_interval_ms: int = Field(1000, ge=10, le=600_000)
    shutdown_timeout_s: float = Field(30.0, ge=0, le=3600)
    poll_timeout_ms: int = Field(50, ge=1, le=10_000)
    max_entries_per_second: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Ceiling on entries sent per second (a share of the account's quota).",
    )
    adaptive_rate: bool = Field(
        True, description="Throttling lowers the send rate, which then grows back (AIMD)."
    )
    rate_increase_per_second: float = Field(100.0, gt=0, le=1_000_000)
    rate_decrease_factor: float = Field(0.5, gt=0, lt=1)
    min_entries_per_second: float = Field(10.0, gt=0, le=1_000_000)


class ObservabilityConfig(_Frozen):
    """The HTTP port serving ``/healthz``, ``/readyz`` and ``/metrics``."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port.")
    stuck_after_s: float = Field(
        120.0, ge=5, le=3600, description="Liveness fails when the loop has not turned this long."
    )


class LoggingConfig(_Frozen):
    """Log output."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


DecoderFormat = Literal["json", "text", "bytes", "avro", "protobuf", "json_schema"]
"""How key or value bytes become a template input (README, 'Decoders')."""

REGISTRY_FORMATS = frozenset({"avro", "protobuf", "json_schema"})
"""Decoders that read the writer's schema from a Confluent-compatible Schema Registry."""


class DecodeConfig(_Frozen):
    """How a record's key and value bytes become the template inputs ``key`` and ``value``.

    ``json``: JSON text (UTF-8). ``text``: UTF-8 text. ``bytes``: any bytes, as base64 text.
    ``avro``, ``protobuf``, ``json_schema``: Confluent Schema Registry framing, decoded with the
    writer's schema from ``schema_registry``.
    """

    key: DecoderFormat = Field("text", description="Decoder of the record key.")
    value: DecoderFormat = Field("json", description="Decoder of the record value.")


class SchemaRegistryConfig(_Frozen):
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


class OffloadConfig(_Frozen):
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


_OFFLOAD_PATH = re.compile(r"^[A-Za-z0-9_\-$@]+(\.[A-Za-z0-9_\-$@]+)*$")


class MappingConfig(_Frozen):
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
    source: str = Field(..., min_length=1)
    detail_type: str = Field(..., min_length=1)
    detail: str = "${value}"
    resources: tuple[str, ...] = ()
    time: str | None = Field(None, description="Default: the Kafka record timestamp.")
    event_bus_name: str | None = Field(None, description="Default: aws.event_bus_name.")
    trace_header: str | None = None
    subject: str | None = Field(None, description="CloudEvents subject (sink: alibaba).")
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
            _compile_regex(value)
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

    @model_validator(mode="after")
    def _one_selector(self) -> MappingConfig:
        chosen = [n for n in ("topic", "topic_pattern") if getattr(self, n) is not None]
        if self.default:
            chosen.append("default")
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
        return self

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


SINK_MAX_ENTRIES = {"put_events": 10, "put_partner_events": 20, "alibaba": 16}
"""Entries per call of each sink's API (PutEvents, PutPartnerEvents, Alibaba putEvents)."""


def _entries_over_sink(sink: Any, max_entries: Any) -> str | None:
    """``max_entries: ...`` when ``batch.max_entries`` exceeds what the sink's API takes."""
    hard = SINK_MAX_ENTRIES.get(sink if isinstance(sink, str) else "put_events")
    if hard is None or not isinstance(max_entries, int) or isinstance(max_entries, bool):
        return None
    if max_entries <= hard:
        return None
    note = "" if sink in (None, "put_events") else f" for sink {sink}"
    return f"max_entries: Input should be less than or equal to {hard}{note} (got {max_entries})"


def _raw_problems(raw: dict[str, Any]) -> list[str]:
    """Checks that need two sections, run on the raw data when pydantic already failed."""
    batch = raw.get("batch")
    if not isinstance(batch, dict):
        return []
    problem = _entries_over_sink(raw.get("sink"), batch.get("max_entries"))
    return [f"batch.{problem}"] if problem else []


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


class BridgeConfig(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    sink: Literal["put_events", "put_partner_events", "alibaba"] = "put_events"
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
        if self.aws.endpoint_id is not None and self.sink != "put_events":
            raise ValueError(
                "@aws.endpoint_id: global endpoints apply to sink put_events only"
                f" (sink is {self.sink})"
            )
        return self

    def packing(self) -> tuple[int, int, int]:
        """``(entries per call, bytes per call, bytes per entry)`` for the configured sink."""
        hard_entries = SINK_MAX_ENTRIES[self.sink]
        entries = min(self.batch.max_entries or hard_entries, hard_entries)
        if self.sink == "alibaba":
            request = self.batch.max_bytes or self.alibaba.max_request_bytes
            return entries, request, min(self.alibaba.max_event_bytes, request)
        request = self.batch.max_bytes or limits.PUT_EVENTS_DEFAULT_MAX_BYTES
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

    class _FromFile(BridgeConfig):
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

    try:
        config = _FromFile()
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

    class _KafkaSections(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="BRIDGE_", env_nested_delimiter="__", extra="ignore"
        )
        kafka: KafkaConfig = KafkaConfig()
        dlq: DlqConfig = DlqConfig()

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path))

    if not path.is_file():
        return None
    try:
        sections = _KafkaSections()
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
    from bridge.mapping.checks import raw_mapping_problems

    keys = {p.split(":", 1)[0] for p in problems}
    extra = _raw_problems(raw) + raw_mapping_problems(raw)
    return problems + [p for p in extra if p.split(":", 1)[0] not in keys]


def _check_templates(config: BridgeConfig, source: str) -> None:
    from bridge.mapping.checks import mapping_problems  # mapping depends on config, not back

    problems = mapping_problems(config)
    if problems:
        raise ConfigError(source, problems)


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
