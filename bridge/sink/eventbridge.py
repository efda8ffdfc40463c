"""The AWS sinks: PutEvents (optionally through a global endpoint) and PutPartnerEvents.

The only code that calls AWS EventBridge: one call in, one outcome per entry out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
)

from bridge.batching.size import entry_size
from bridge.codes import RETRYABLE_CALL_CODES
from bridge.errors import BridgeError, MappingError
from bridge.limits import SINK_LIMITS
from bridge.mapping.record import RecordLike
from bridge.sink.base import SinkLimits
from bridge.sink.calls import Calls, ThreadedCalls
from bridge.sink.credentials import aws_session, resolve_credentials
from bridge.sink.lean import LeanCalls, LeanEventsClient
from bridge.sink.outcome import (
    Outcome,
    classify_call_error,
    classify_response,
    credentials_error,
    transport_error,
)

if TYPE_CHECKING:
    from bridge.config import AwsConfig


_SINK_OPERATIONS = frozenset({"PutEvents", "PutPartnerEvents"})
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
PARTNER_SOURCE_PREFIX = "aws.partner/"
_PARTNER_FIELDS = ("Time", "Source", "Resources", "DetailType", "Detail")


def failed_call(
    exc: ClientError | BotoCoreError,
    sent: int,
    operations: frozenset[str],
    classify: Callable[[str, int | None, str], Outcome],
) -> list[Outcome]:
    """The outcomes of an AWS call that raised ``exc``, one for each of the ``sent`` entries.

    Args:
        exc: What botocore raised.
        sent: Entries in the call.
        operations: The sink's own operations: a ``ClientError`` of any other operation was
            raised by a credential refresh before the call (``sts:AssumeRole``, web identity),
            STS's answer and nothing to do with the entries.
        classify: The sink's judgement of an error of its own operations.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "ClientError")
        message = str(error.get("Message") or exc)
        if exc.operation_name not in operations:
            message = f"refreshing AWS credentials failed ({exc.operation_name}): {message}"
            return [credentials_error(code, message)] * sent
        return [classify(code, status, message)] * sent
    if isinstance(exc, _CREDENTIAL_ERRORS):  # no credentials, or they could not be refreshed
        return [credentials_error(type(exc).__name__, str(exc))] * sent
    return [transport_error(type(exc).__name__, str(exc))] * sent


class PutEventsClient(Protocol):
    """The one method of boto3's ``events`` client the bridge uses."""

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


class EventBridgeSink:
    """PutEvents or PutPartnerEvents through boto3; never raises for an AWS or network failure.

    Args:
        client: A boto3 ``events`` client (or anything with ``put_events``).
        operation: ``put_events`` or ``put_partner_events``.
        limits: What to pack to; default: the API's (:data:`bridge.limits.SINK_LIMITS`).
        endpoint_id: A global endpoint's id (PutEvents only; needs SigV4a, i.e. ``awscrt``).
    """

    def __init__(
        self,
        client: PutEventsClient | None,
        operation: str = "put_events",
        limits: SinkLimits | None = None,
        endpoint_id: str | None = None,
    ) -> None:
        if operation not in ("put_events", "put_partner_events"):
            raise ValueError(f"unknown operation {operation!r}")
        self._client: Any = client
        self.name = operation
        self._partner = operation == "put_partner_events"
        api = SINK_LIMITS[operation]
        default_bytes = api.default_request_bytes
        self.limits = limits or SinkLimits(api.max_entries, default_bytes, default_bytes)
        self._extra: dict[str, Any] = {"EndpointId": endpoint_id} if endpoint_id else {}

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]:
        """PutEvents takes the entry as mapped; PutPartnerEvents only its five fields.

        Raises:
            MappingError: ``SourceReserved`` (PutEvents: Source starts with ``aws.``) or
                ``NotPartnerSource`` (PutPartnerEvents: Source is not ``aws.partner/...``).
        """
        source = entry["Source"]
        if self._partner:
            if not source.startswith(PARTNER_SOURCE_PREFIX):
                raise MappingError(
                    "NotPartnerSource",
                    f"source: {source[:64]!r} is not a partner event source"
                    f" ({PARTNER_SOURCE_PREFIX}<partner>/<account>/<name>)",
                    stage="validate",
                )
            return {k: entry[k] for k in _PARTNER_FIELDS if k in entry}
        if source.startswith("aws."):
            raise MappingError(
                "SourceReserved", f"source: {source[:64]!r} starts with 'aws.'", stage="validate"
            )
        return entry

    def entry_size(self, wire: dict[str, Any]) -> int:
        """AWS's entry size formula (the same for PutEvents and PutPartnerEvents)."""
        return entry_size(wire)

    def send(self, entries: Sequence[dict[str, Any]]) -> list[Outcome]:
        """One call; the outcome of each entry, in order."""
        try:
            if self._partner:
                response = self._client.put_partner_events(Entries=entries)
            else:
                response = self._client.put_events(Entries=entries, **self._extra)
        except (ClientError, BotoCoreError) as exc:
            return self.failed(exc, len(entries))
        return classify_response(response, len(entries))

    def failed(self, exc: ClientError | BotoCoreError, sent: int) -> list[Outcome]:
        """The outcomes of a call that raised ``exc`` (one for each of the ``sent`` entries)."""
        return failed_call(exc, sent, _SINK_OPERATIONS, classify_call_error)

    def calls(self, max_in_flight: int) -> Calls:
        """How the pipeline runs this sink's calls: all from its own thread through libcurl's
        multi interface with the lean client, else ``send`` on a pool of threads."""
        if isinstance(self._client, LeanEventsClient) and not self._extra:
            return LeanCalls(self, self._client)
        return ThreadedCalls(self, max_in_flight)


def make_events_client(aws: AwsConfig, max_pool_connections: int) -> Any:
    """The client the AWS sinks send with, its credentials fetched once to fail early.

    botocore's own retries are off (one attempt per call): they retry whole calls only, never the
    failed entries inside a 200, so the bridge retries everything itself with one policy.
    Credentials come from the default chain (environment, profile, web identity, container,
    instance role), or from ``aws.assume_role_arn`` assumed with them (refreshed before expiry);
    see :mod:`bridge.sink.credentials`. With ``aws.client: lean`` (the default) calls go through
    :class:`LeanEventsClient`, which signs and serializes as boto3 does at a tenth of its CPU;
    global endpoints (SigV4a) always use boto3. Both sign with the same session's credentials.

    Raises:
        CredentialsError: No credentials in the default chain, or STS refused the role.
        BridgeError: STS could not be reached (an assumed role, web identity).
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
    credentials = resolve_credentials(session, aws)
    client = session.client("events", endpoint_url=aws.endpoint_url, config=config)
    if aws.client == "boto3" or aws.endpoint_id:
        return client
    return LeanEventsClient(
        client,
        credentials,
        max_pool_connections,
        aws.connect_timeout_s,
        aws.read_timeout_s,
    )


def require_sigv4a() -> None:
    """Global endpoints (``EndpointId``) are signed with SigV4a, which botocore does with awscrt.

    Raises:
        BridgeError: ``awscrt`` is not installed, saying how to get it.
    """
    try:
        import awscrt  # noqa: F401  (optional: the global-endpoints extra)
    except ImportError:
        raise BridgeError(
            "aws.endpoint_id (a global endpoint) needs SigV4a request signing, which botocore"
            " does with the 'awscrt' package:"
            " pip install 'kafka-eventbridge-bridge[global-endpoints]' (or pip install awscrt)"
        ) from None


def check_event_bus(client: Any, name: str) -> tuple[str, bool] | None:
    """Whether ``name`` exists: PutEvents to a missing bus answers 200 and drops the events.

    Returns:
        None when the bus exists, else ``(a sentence saying what is wrong, whether it is only
        for now)``: no answer, a 5xx or throttling say nothing of the bus (the records would be
        held until EventBridge answers), a missing bus or a refusal do.
    """
    try:
        client.describe_event_bus(Name=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            return (
                f"event bus {name!r} does not exist: events sent to it would be dropped by AWS",
                False,
            )
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        for_now = code in RETRYABLE_CALL_CODES or (status or 0) >= 500
        return f"cannot check event bus {name!r}: {code or exc}", for_now
    except BotoCoreError as exc:
        return f"cannot reach EventBridge to check event bus {name!r}: {exc}", True
    return None
