"""Every limit of every sink's API, stated once, in one table (:data:`SINK_LIMITS`).

The configuration is checked against it at load (:mod:`bridge.config`), the sinks pack to it
(:mod:`bridge.sink.eventbridge`, :mod:`bridge.sink.alibaba`) and the mapping holds the neutral,
PutEvents-shaped entry to PutEvents' field limits whatever the sink (:data:`NEUTRAL_FIELDS`).

Sources: the PutEvents API reference and the user guide page on entry size (shared seeds 000,
002 and 004); PutPartnerEvents (seed 001); Alibaba Cloud EventBridge putEvents (seed 003). A new
sink (e.g. the ``eventsv2`` bus: 100 entries, 1 MiB per request) is one more row.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FieldLimits:
    """Limits on the fields of an entry (PutEvents' names).

    Attributes:
        detail_type_max_chars: Characters of DetailType.
        max_resources: Items of Resources.
        detail_max_nesting: Levels of nested JSON in Detail.
        trace_header_max_chars: Characters of TraceHeader (botocore's ``events`` model: 1 to
            500; past it the whole call fails).
    """

    detail_type_max_chars: int
    max_resources: int
    detail_max_nesting: int
    trace_header_max_chars: int = 500


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The limits of one sink's API.

    Attributes:
        max_entries: Entries per call (also the most ``batch.max_entries`` may say).
        default_request_bytes: Bytes per call unless the configuration says otherwise.
        max_request_bytes: The most the configuration may raise the bytes per call to.
        default_entry_bytes: Bytes per entry unless configured; None: one entry may fill a call.
        max_entry_bytes: The most the configuration may raise the bytes per entry to (None: as
            for the call).
        fields: Limits on the entry's fields (None: the API states none).
    """

    max_entries: int
    default_request_bytes: int
    max_request_bytes: int
    default_entry_bytes: int | None = None
    max_entry_bytes: int | None = None
    fields: FieldLimits | None = None

    @property
    def entry_bytes(self) -> int:
        """Bytes per entry unless configured."""
        return self.default_entry_bytes or self.default_request_bytes

    @property
    def entry_bytes_ceiling(self) -> int:
        """The most the configuration may raise the bytes per entry to."""
        return self.max_entry_bytes or self.max_request_bytes


NEUTRAL_FIELDS: Final = FieldLimits(
    detail_type_max_chars=128, max_resources=10, detail_max_nesting=1000
)
"""PutEvents' field limits, which the mapped (PutEvents-shaped) entry is held to whatever the
sink."""

_PUT_EVENTS = ApiLimits(
    max_entries=10,  # API reference: 1 to 10 array members
    # The long-standing request size limit, by AWS's entry-size formula; AWS raised it to 1 MB in
    # January 2026 (newest API reference), older regions/pages say 256 KB: a setting.
    default_request_bytes=256 * KIB,
    max_request_bytes=MIB,
    fields=NEUTRAL_FIELDS,
)

SINK_LIMITS: Final = MappingProxyType(
    {
        "put_events": _PUT_EVENTS,
        # 1 to 20 entries per call, otherwise as PutEvents (same entry-size formula).
        "put_partner_events": ApiLimits(
            max_entries=20,
            default_request_bytes=_PUT_EVENTS.default_request_bytes,
            max_request_bytes=_PUT_EVENTS.max_request_bytes,
            fields=_PUT_EVENTS.fields,
        ),
        # Alibaba's pages disagree: the API page says 64 KB per event, 16 per call, 256 KB per
        # call; its limits page 256 KB per event and 1 MB per call. The API page's values are
        # the defaults, the limits page's the most a setting may say.
        "alibaba": ApiLimits(
            max_entries=16,
            default_request_bytes=256 * KIB,
            max_request_bytes=MIB,
            default_entry_bytes=64 * KIB,
            max_entry_bytes=256 * KIB,
        ),
        # The new bus (eventsv2, boto3 eventbridgev2): 1 to 100 entries; all entries of a
        # request together at most 1,048,576 bytes, else InvalidInputException and nothing is
        # published (botocore's eventbridgev2 model, 2025-05-15). Source is 1 to 256
        # characters, DetailType 1 to 128, Resources at most 100 (the neutral entry's 10 hold).
        "event_bus_v2": ApiLimits(
            max_entries=100,
            default_request_bytes=MIB,
            max_request_bytes=MIB,
            fields=NEUTRAL_FIELDS,
        ),
    }
)
"""The limits of each sink's API, by the sink's name in the configuration (``sink:``)."""

DETAIL_TYPE_MAX_CHARS: Final = NEUTRAL_FIELDS.detail_type_max_chars
MAX_RESOURCES: Final = NEUTRAL_FIELDS.max_resources
DETAIL_MAX_NESTING: Final = NEUTRAL_FIELDS.detail_max_nesting
TRACE_HEADER_MAX_CHARS: Final = NEUTRAL_FIELDS.trace_header_max_chars

MAX_ENTRIES_OF_ANY_SINK: Final = max(limits.max_entries for limits in SINK_LIMITS.values())
"""The most ``batch.max_entries`` may say for any sink (each sink's own is checked at load)."""

MAX_REQUEST_BYTES_OF_ANY_SINK: Final = max(
    limits.max_request_bytes for limits in SINK_LIMITS.values()
)
"""The most ``batch.max_bytes`` may say for any sink."""

TIME_FIELD_BYTES: Final = 14
"""AWS counts a present Time field as 14 bytes (user guide, 'Calculating entry size')."""


# -- The new bus: EventBridge Custom Event Bus (API eventsv2, boto3 client eventbridgev2) --------
# Sources: botocore's eventbridgev2 model (2025-05-15) shipped with boto3 1.44.18: the shapes
# EventGroupId / EventDeduplicationId (1..128), Source (1..256), EventMetadataMap (<= 100 keys,
# no "/"), EventBusArn (its pattern). Its request limits are the "event_bus_v2" row above.

BUS_V2_ID_MAX_CHARS: Final = 128
"""EventGroupId and DeduplicationId: 1 to 128 characters."""

BUS_V2_SOURCE_MAX_CHARS: Final = 256

BUS_V2_MAX_METADATA_KEYS: Final = 100
"""PutRawEvents Metadata: at most 100 keys, each 1 to 128 characters without "/"."""

BUS_V2_EVENT_BUS_ARN: Final = (
    r"^arn:aws(-[a-z0-9]+)*:events:[a-z][a-z0-9]*(-[a-z0-9]+)*:([0-9]{12}):event-busv2/"
    r"[A-Za-z0-9][.\-_A-Za-z0-9]{0,255}/[a-z0-9]{25}$"
)
"""The model's EventBusArn pattern, anchored: ``...:event-busv2/<name>/<25-char id>``."""

BUS_V2_REGISTRY_URI: Final = (
    r"^(arn:[a-z0-9-]+:glue:[a-z0-9-]+:[0-9]{12}:registry/[-_$#A-Za-z0-9]{1,255}"
    r"|https://((([A-Za-z0-9]+-)*[A-Za-z0-9]+)\.)*([A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?)"
    r"(:[0-9]{1,5})?)$"
)
"""The model's SchemaRegistryUri: a Glue registry ARN or a Confluent registry https URL."""

BUS_V2_CONNECTION_ARN: Final = r"^arn:aws(-[a-z0-9]+)*:events:[a-z0-9-]+:\d{12}:connection/.+$"
"""The model's ConnectionArn (an EventBridge Connection)."""
