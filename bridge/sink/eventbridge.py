"""The only code that calls EventBridge: one PutEvents call in, one outcome per entry out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bridge.sink.outcome import Outcome, classify_call_error, classify_response, transport_error

if TYPE_CHECKING:
    from bridge.config import AwsConfig


class PutEventsClient(Protocol):
    """The one method of boto3's ``events`` client the bridge uses."""

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


class EventBridgeSink:
    """Sends batches with ``put_events``; never raises for an AWS or network failure.

    Args:
        client: A boto3 ``events`` client (or anything with ``put_events``).
    """

    def __init__(self, client: PutEventsClient) -> None:
        self._client = client

    def send(self, entries: Sequence[dict[str, Any]]) -> list[Outcome]:
        """One PutEvents call; the outcome of each entry, in order."""
        try:
            response = self._client.put_events(Entries=entries)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            outcome = classify_call_error(
                str(error.get("Code") or "ClientError"), status, str(error.get("Message") or exc)
            )
            return [outcome] * len(entries)
        except BotoCoreError as exc:
            return [transport_error(type(exc).__name__, str(exc))] * len(entries)
        return classify_response(response, len(entries))


def make_events_client(aws: AwsConfig, max_pool_connections: int) -> Any:
    """A boto3 ``events`` client for the bridge.

    botocore's own retries are off (one attempt per call): they retry whole calls only, never the
    failed entries inside a 200, so the bridge retries everything itself with one policy.
    Credentials come from the default chain (environment, profile, web identity, instance role).
    """
    import boto3

    config = Config(
        region_name=aws.region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.read_timeout_s,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )
    return boto3.session.Session().client("events", endpoint_url=aws.endpoint_url, config=config)


def check_event_bus(client: Any, name: str) -> str | None:
    """Whether ``name`` exists: PutEvents to a missing bus answers 200 and drops the events.

    Returns:
        None when the bus exists, else a sentence saying what is wrong.
    """
    try:
        client.describe_event_bus(Name=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            return f"event bus {name!r} does not exist: events sent to it would be dropped by AWS"
        return f"cannot check event bus {name!r}: {code or exc}"
    except BotoCoreError as exc:
        return f"cannot reach EventBridge to check event bus {name!r}: {exc}"
    return None
