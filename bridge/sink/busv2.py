"""The new bus: EventBridge Custom Event Bus (API ``eventsv2``, boto3 client ``eventbridgev2``).

The bus is named by ARN on the request, not per entry. An entry carries ``SystemMetadata``:
``EventGroupId`` (its FIFO group) and ``DeduplicationId`` (a repeat within the bus's window is
answered ``DEDUPLICATED`` and published once). Up to 100 entries and 1 MiB per request; above it
the request fails as a whole with ``InvalidInputException`` and nothing is published.

Two publish forms: ``PutEvents`` (Source, DetailType, Detail...) and ``PutRawEvents`` (``Data``
bytes with a ContentType and Metadata; the request names the schema registry the bus decodes
Avro and Protobuf with). A batch holding both goes out as two requests.

Every entry of a 200 is judged on its own: ``SuccessCode`` ``PUBLISHED`` or ``DEDUPLICATED``
(both success, the second counted apart), else its ``ErrorCode`` retryable or permanent. With
``aws.client: lean`` (the default) the calls go through :class:`~bridge.sink.lean_cbor.
LeanEventsV2Client` from the pipeline's thread (libcurl's multi interface); with ``aws.client:
boto3``, through boto3's own ``eventbridgev2`` client (smithy-rpc-v2-cbor), on threads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import botocore
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
)

from bridge import codes, limits
from bridge.batching.size import entry_size as classic_entry_size
from bridge.batching.size import utf8_len
from bridge.errors import BridgeError, MappingError
from bridge.mapping.record import RecordLike
from bridge.sink.base import SinkLimits, record_id
from bridge.sink.calls import Calls, ThreadedCalls
from bridge.sink.credentials import aws_session, resolve_credentials
from bridge.sink.eventbridge import failed_call
from bridge.sink.lean_cbor import LeanEventsV2Client, LeanV2Calls, Request
from bridge.sink.outcome import (
    Kind,
    Outcome,
    classify_call_error,
)

if TYPE_CHECKING:
    from bridge.config import AwsConfig

SUCCESS_CODES = codes.BUS_V2_SUCCESS_CODES

_OPERATIONS = frozenset({"PutEvents", "PutRawEvents", "DescribeEventBus"})

_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)

_USABLE_STATES = frozenset({"ACTIVE", "UPDATING", "UPDATE_FAILED"})
"""Bus states that accept events (UPDATE_FAILED keeps the previous configuration working)."""

_API = limits.SINK_LIMITS["event_bus_v2"]

GROUP_KEY = "EventGroupId"
DEDUP_KEY = "DeduplicationId"
"""The neutral entry's keys for the two ids, as the mapper renders them (then in SystemMetadata)."""

_PUT_EVENTS_FIELDS = ("Source", "DetailType", "Detail", "Resources", "Time")

_WHITESPACE_ONLY = re.compile(
    "^[\u0009-\u000d\u001c-\u0020\u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000]*$"
)
"""What the model's EventDeduplicationId pattern refuses: nothing but whitespace."""


class EventsV2Client(Protocol):
    """The methods of boto3's ``eventbridgev2`` client the bridge uses."""

    def put_events(self, **kwargs: Any) -> dict[str, Any]: ...

    def put_raw_events(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_event_bus(self, *, EventBusArn: str) -> dict[str, Any]: ...


def classify_v2_response(response: Mapping[str, Any], sent: int) -> list[Outcome]:
    """Outcomes of a PutEvents/PutRawEvents answer of the new bus, index for index.

    A response whose ``Entries`` do not match the request in length is a failure of the whole
    call (retryable, not held): no index of it can be trusted.
    """
    entries: Sequence[Mapping[str, Any]] = response.get("Entries") or ()
    if len(entries) != sent:
        message = f"response has {len(entries)} entries for {sent} sent"
        return [Outcome(Kind.RETRY, "ResponseMismatch", message, whole_call=True)] * sent
    return [classify_v2_entry(e) for e in entries]


def classify_v2_entry(result: Mapping[str, Any]) -> Outcome:
    """One element of the answer's ``Entries``."""
    code = result.get("ErrorCode")
    if not code:
        success = result.get("SuccessCode")
        event_id = str(result.get("EventId") or "")
        if success in SUCCESS_CODES:
            return Outcome(
                Kind.DELIVERED, event_id=event_id, deduplicated=success == "DEDUPLICATED"
            )
        if success is None and event_id:
            return Outcome(Kind.DELIVERED, event_id=event_id)
        return Outcome(Kind.RETRY, "NoSuccessCode", f"entry has SuccessCode {success!r}")
    message = str(result.get("ErrorMessage") or "")
    if code == "ThrottlingException":
        return Outcome(Kind.RETRY, code, message, hold=True, throttled=True)
    kind = Kind.RETRY if code in codes.BUS_V2_RETRYABLE_ENTRY_CODES else Kind.PERMANENT
    return Outcome(kind, str(code), message)


def classify_v2_call_error(code: str, status: int | None, message: str) -> Outcome:
    """A request of the new bus that failed as a whole.

    ``ThrottlingException`` (429: held, throttled), ``InternalException`` (500: held),
    ``AccessDeniedException`` and ``ResourceNotFoundException`` (held: an IAM or configuration
    mistake is the same for every record), ``InvalidStateException`` (409: the bus is being
    created; held) and ``SchemaRegistryUnavailableException`` (the model says retry: held).
    ``InvalidInputException`` refuses the request as a whole: permanent, so that a request of
    several entries is split to find the culprit (:class:`~bridge.pipeline.judge.Action` ALONE).
    """
    if code in codes.BUS_V2_HOLD_CALL_CODES:
        return Outcome(Kind.RETRY, code, message, whole_call=True, hold=True)
    return classify_call_error(code, status, message)


def v2_entry_size(wire: Mapping[str, Any]) -> int:
    """An entry of the new bus, in bytes.

    PutEvents: the classic formula (Time 14 bytes, UTF-8 bytes of Source, DetailType, Detail and
    each Resources item). PutRawEvents: the Data bytes plus the UTF-8 bytes of Metadata's keys and
    values (the model: "including the Data payload and the keys and values of Metadata"). Both:
    plus the UTF-8 bytes of the ``SystemMetadata`` values; the bus documents only "the total size
    of all entries", so the ids are counted too, to stay on the safe side of 1 MiB."""
    data = wire.get("Data")
    if data is not None:  # PutRawEvents: Data, and Metadata's keys and values (the model's doc)
        size = len(data)
        for key, value in (wire.get("Metadata") or {}).items():
            size += utf8_len(key) + utf8_len(value)
    else:
        size = classic_entry_size(wire)
    for value in (wire.get("SystemMetadata") or {}).values():
        size += utf8_len(value)
    return size


def check_id(value: str, name: str) -> str:
    """``value`` as an EventGroupId / DeduplicationId, or a :class:`MappingError` saying why."""
    if not value:
        raise MappingError("MissingField", f"{name}: renders empty text", stage="validate")
    if len(value) > limits.BUS_V2_ID_MAX_CHARS:
        raise MappingError(
            "IdTooLong",
            f"{name}: {len(value)} characters; at most {limits.BUS_V2_ID_MAX_CHARS}",
            stage="validate",
        )
    if name == "deduplication_id" and _WHITESPACE_ONLY.match(value):
        raise MappingError("BlankId", f"{name}: only whitespace", stage="validate")
    return value


class EventBusV2Sink:
    """PutEvents to a Custom Event Bus through boto3's ``eventbridgev2`` client.

    Never raises for an AWS or network failure.

    Args:
        client: A boto3 ``eventbridgev2`` client (None for mapping only).
        event_bus_arn: The bus (``aws.event_bus_arn``).
        limits: What to pack to; default: the API's (100 entries, 1 MiB).
        content_based: Request-level ``CONTENT_BASED`` deduplication instead of the entries'
            ``DeduplicationId`` (billed extra by AWS).
        schema_registry: The ``SchemaRegistryConfiguration`` of PutRawEvents requests
            (:func:`registry_configuration`).
    """

    def __init__(
        self,
        client: EventsV2Client | None,
        event_bus_arn: str,
        limits_: SinkLimits | None = None,
        content_based: bool = False,
        schema_registry: dict[str, Any] | None = None,
    ) -> None:
        self._client: Any = client
        self.name = "event_bus_v2"
        self.event_bus_arn = event_bus_arn
        self.limits = limits_ or SinkLimits(
            _API.max_entries, _API.max_request_bytes, _API.max_request_bytes
        )
        self._content_based = content_based
        self._request: dict[str, Any] = {"EventBusArn": event_bus_arn}
        if content_based:
            self._request["DeduplicationConfiguration"] = {"DeduplicationType": "CONTENT_BASED"}
        self._raw_request = dict(self._request)
        if schema_registry:  # on every PutRawEvents request: the bus decodes with it
            self._raw_request["SchemaRegistryConfiguration"] = schema_registry

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]:
        """The wire entry: Source, DetailType, Detail, Resources, Time and SystemMetadata.

        ``DeduplicationId`` is the mapping's template, else the record id
        (``<topic>-<partition>-<offset>``): a record sent again after a crash or a lost answer
        is answered ``DEDUPLICATED``. With content-based deduplication it is left out.

        Raises:
            MappingError: ``SourceReserved`` (Source starts with ``aws.``), ``SourceTooLong``,
                ``IdTooLong`` / ``MissingField`` / ``BlankId`` (the ids).
        """
        if "Data" in entry:
            raw = {"Data": entry["Data"]}
            if "Metadata" in entry:
                raw["Metadata"] = entry["Metadata"]
            raw["SystemMetadata"] = {
                "ContentType": entry["ContentType"],
                **self._ids(entry, record),
            }
            return raw
        source = entry["Source"]
        if source.startswith("aws."):
            raise MappingError(
                "SourceReserved", f"source: {source[:64]!r} starts with 'aws.'", stage="validate"
            )
        if len(source) > limits.BUS_V2_SOURCE_MAX_CHARS:
            raise MappingError(
                "SourceTooLong",
                f"source: {len(source)} characters; at most {limits.BUS_V2_SOURCE_MAX_CHARS}",
                stage="validate",
            )
        wire = {k: entry[k] for k in _PUT_EVENTS_FIELDS if k in entry}
        system = self._ids(entry, record)
        if system:
            wire["SystemMetadata"] = system
        return wire

    def _ids(self, entry: dict[str, Any], record: RecordLike) -> dict[str, str]:
        system: dict[str, str] = {}
        group = entry.get(GROUP_KEY)
        if group is not None:
            system[GROUP_KEY] = check_id(group, "event_group_id")
        if not self._content_based:
            dedup = entry.get(DEDUP_KEY)
            system[DEDUP_KEY] = check_id(
                dedup if dedup is not None else record_id(record), "deduplication_id"
            )
        return system

    def entry_size(self, wire: dict[str, Any]) -> int:
        """See :func:`v2_entry_size`."""
        return v2_entry_size(wire)

    def requests(self, entries: Sequence[dict[str, Any]]) -> list[Request]:
        """The requests of a batch: one per publish form in it (PutEvents, PutRawEvents: a batch
        of two mappings may hold both), each with the batch's indexes it carries and its
        parameters (``Entries`` first, as boto3's call is written)."""
        raw = [i for i, e in enumerate(entries) if "Data" in e]
        if not raw:
            return [("PutEvents", list(range(len(entries))), self._params(False, entries))]
        if len(raw) == len(entries):
            return [("PutRawEvents", raw, self._params(True, entries))]
        plain = [i for i, e in enumerate(entries) if "Data" not in e]
        return [
            ("PutEvents", plain, self._params(False, [entries[i] for i in plain])),
            ("PutRawEvents", raw, self._params(True, [entries[i] for i in raw])),
        ]

    def _params(self, raw: bool, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"Entries": list(entries), **(self._raw_request if raw else self._request)}

    def send(self, entries: Sequence[dict[str, Any]]) -> list[Outcome]:
        """One request per publish form in the batch; the outcome of each entry, in the batch's
        order."""
        outcomes: list[Outcome | None] = [None] * len(entries)
        for operation, indexes, params in self.requests(entries):
            method = "put_raw_events" if operation == "PutRawEvents" else "put_events"
            try:
                response = getattr(self._client, method)(**params)
            except (ClientError, BotoCoreError) as exc:
                part = self.failed(exc, len(indexes))
            else:
                part = self.judge(response, len(indexes))
            for i, outcome in zip(indexes, part, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def judge(self, response: Mapping[str, Any], sent: int) -> list[Outcome]:
        """See :func:`classify_v2_response`."""
        return classify_v2_response(response, sent)

    def failed(self, exc: ClientError | BotoCoreError, sent: int) -> list[Outcome]:
        """The outcomes of a request that raised ``exc`` (one for each of the ``sent``)."""
        return failed_call(exc, sent, _OPERATIONS, classify_v2_call_error)

    def calls(self, max_in_flight: int) -> Calls:
        """How the pipeline runs this sink's calls: all from its own thread through libcurl's
        multi interface with the lean client, else boto3's client on a pool of threads."""
        if isinstance(self._client, LeanEventsV2Client):
            return LeanV2Calls(self, self._client)
        return ThreadedCalls(self, max_in_flight)


def registry_configuration(uri: str | None, connection_arn: str | None) -> dict[str, Any] | None:
    """The ``SchemaRegistryConfiguration`` of ``aws.schema_registry_uri`` (and its Connection)."""
    if uri is None:
        return None
    config: dict[str, Any] = {"RegistryUri": uri}
    if connection_arn is not None:
        config["ConfluentPublicRegistryConfiguration"] = {"ConnectionArn": connection_arn}
    return config


def make_eventsv2_client(aws: AwsConfig, max_pool_connections: int) -> Any:
    """The new bus's client, with the credentials, role, endpoint, proxies and TLS of the other
    AWS sinks (:func:`bridge.sink.eventbridge.make_events_client`); botocore's own retries off,
    the bridge retries entries itself. With ``aws.client: lean`` (the default) calls go through
    :class:`~bridge.sink.lean_cbor.LeanEventsV2Client` (boto3's request, serialized and signed
    as botocore does, tested equal, at a fraction of its CPU); with ``aws.client: boto3`` through
    boto3's ``eventbridgev2`` client. Both sign with the same session's credentials.

    Raises:
        CredentialsError: No credentials in the default chain, or STS refused the role.
        BridgeError: STS could not be reached.
    """
    config = Config(
        region_name=aws.region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.read_timeout_s,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )
    session = aws_session(aws)
    if "eventbridgev2" not in session.get_available_services():
        raise BridgeError(
            f"sink: event_bus_v2 needs boto3/botocore 1.44.18 or later (the eventbridgev2 API);"
            f" botocore {botocore.__version__} is installed: pip install -U boto3"
        )
    credentials = resolve_credentials(session, aws)
    client = session.client("eventbridgev2", endpoint_url=aws.endpoint_url, config=config)
    if aws.client == "boto3" or aws.event_bus_arn is None:
        return client
    return LeanEventsV2Client(
        client,
        credentials,
        aws.event_bus_arn,
        max_pool_connections,
        aws.connect_timeout_s,
        aws.read_timeout_s,
    )


def check_event_bus_v2(client: Any, arn: str) -> tuple[str, bool] | None:
    """Whether the bus ``arn`` exists and takes events (``DescribeEventBus``).

    Returns:
        None when it is usable, else ``(a sentence saying what is wrong, whether it is only for
        now)``: no answer, a 5xx, throttling or a bus still being created say nothing final; a
        missing bus, a refusal or a bus failed or being deleted do.
    """
    try:
        answer = client.describe_event_bus(EventBusArn=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "ResourceNotFoundException":
            return f"event bus {arn} does not exist", False
        if code == "AccessDeniedException":
            return (
                f"DescribeEventBus of {arn} refused (AccessDeniedException): the bridge's role"
                " needs events:DescribeEventBus on it (and events:PutEvents to publish)",
                False,
            )
        for_now = code in codes.RETRYABLE_CALL_CODES or (status or 0) >= 500 or status == 429
        return f"cannot check event bus {arn}: {code or exc}", for_now
    except BotoCoreError as exc:
        return f"cannot reach EventBridge to check event bus {arn}: {exc}", True
    state = str(answer.get("State") or "")
    if state in _USABLE_STATES or not state:
        return None
    reason = answer.get("StateReason")
    why = f" ({reason})" if reason else ""
    return f"event bus {arn} is {state}, not ACTIVE{why}", state == "CREATING"
