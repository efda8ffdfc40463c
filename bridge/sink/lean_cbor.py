"""A lean client for the new bus (``eventbridgev2``, smithy-rpc-v2-cbor): boto3's request
without boto3's per-call cost.

boto3's ``eventbridgev2`` client spends about 53 µs of CPU per event on ``put_events``
(validation, a CBOR serializer and parser in Python byte by byte, event hooks, endpoint rules
per call). As :mod:`bridge.sink.lean` does for the classic bus, this client takes from boto3:

- the endpoint, resolved once by the boto3 client's own rules for the bus ARN (the new bus
  routes by the ARN's account: ``https://<account>.eventsv2.<region>.amazonaws.com``), and the
  signing name and region (``events``);
- the path of botocore's ``RpcV2CBORSerializer``: ``/service/AWSEventsV2/operation/<Op>``;
- the body: encoded by ``cbor2`` (in C) to the bytes botocore's serializer writes (tested);
- the headers and SigV4 signature (:class:`bridge.sink.sigv4.CborPostSigner`, tested);
- the answer, parsed as ``RpcV2CBORParser`` parses it (errors: a ``ClientError`` coded by
  ``__type``);
- the HTTP exchange, credentials and certificate checks of the lean JSON client.

``DescribeEventBus`` (at start-up) goes through boto3. :class:`LeanV2Calls` runs the pipeline's
calls through libcurl's multi interface from the pipeline's own thread.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cbor2
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
)
from botocore.utils import parse_to_aware_datetime

from bridge.errors import ConfigError
from bridge.sink.calls import Finished
from bridge.sink.lean import MultiClient
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.sigv4 import CborPostSigner
from bridge.sink.transport import Response

OPERATIONS = ("PutEvents", "PutRawEvents")


def serialize(params: Mapping[str, Any]) -> bytes:
    """The CBOR body botocore's ``RpcV2CBORSerializer`` sends for a PutEvents / PutRawEvents
    request (same bytes).

    cbor2 writes what botocore writes (definite lengths, the shortest length and integer forms,
    doubles, text keys in the order given, tag 1 epoch seconds for a datetime: an integer, or
    the double ``(seconds * 10**6 + microseconds) / 10**6`` as botocore rounds it; a naive time
    is UTC). What cbor2 would write otherwise is rewritten first, in the rare requests holding
    it: ``None`` members (botocore leaves them out), text ``Data`` (a blob: UTF-8 bytes), a
    ``Time`` that is not a datetime (epoch seconds or ISO text, read as botocore reads them).
    """
    entries = params.get("Entries")
    plain = type(entries) is list and all(_plain(e) for e in entries)
    if plain and all(_no_none(v) for k, v in params.items() if k != "Entries"):
        return cbor2.dumps(params, datetime_as_timestamp=True, timezone=UTC)
    return cbor2.dumps(_structure(params), datetime_as_timestamp=True, timezone=UTC)


def _plain(entry: Any) -> bool:
    """Whether cbor2 writes ``entry`` as botocore does as it is (the mapper's entries are): no
    ``None`` member (nor in ``SystemMetadata``, the entries' one structure), ``Time`` a datetime,
    ``Data`` bytes. A few dictionary lookups: a per-key loop cost a third of the encoding."""
    if type(entry) is not dict or None in entry.values():
        return False
    time = entry.get("Time", _ABSENT)
    if time is not _ABSENT and type(time) is not datetime:
        return False
    data = entry.get("Data", b"")
    if type(data) is not bytes:
        return False
    system = entry.get("SystemMetadata")
    return system is None or (type(system) is dict and None not in system.values())


_ABSENT = object()


def _no_none(value: Any) -> bool:
    """Whether a request-level member holds no ``None`` (its structures nested included)."""
    if type(value) is dict:
        return all(_no_none(v) for v in value.values())
    return value is not None


def _structure(value: Mapping[str, Any]) -> dict[str, Any]:
    """A structure as botocore serializes it: ``None`` members left out, members converted."""
    return {key: _member(key, item) for key, item in value.items() if item is not None}


def _member(key: str, value: Any) -> Any:
    if key == "Time":
        return value if type(value) is datetime else parse_to_aware_datetime(value)
    if key == "Data":  # a blob: botocore encodes text, reads a file-like object
        if isinstance(value, str):
            return value.encode("utf-8")
        return value if isinstance(value, bytes | bytearray) else value.read()
    if key == "Metadata":  # a map: its members are kept as they are
        return value
    if isinstance(value, Mapping):
        return _structure(value)
    if isinstance(value, list | tuple):
        return [_structure(v) if isinstance(v, Mapping) else v for v in value]
    return value


def parse(operation: str, response: Response, url: str = "") -> dict[str, Any]:
    """The answer of a call, as botocore's ``RpcV2CBORParser`` gives it.

    Raises:
        ClientError: An error status (above 300, as botocore): the code is the body's
            ``__type`` cut at ``:`` and after ``#`` (``...#ThrottlingException``), else the
            status; the message is the body's ``message`` (or ``Message``).
        ConnectionClosedError: A success whose body is not a CBOR map (as the lean JSON
            client: botocore's ``ResponseParserError`` is no ``BotoCoreError``, and the sink
            would take it for a bug of its own; the entries are sent again either way).
    """
    meta: dict[str, Any] = {"HTTPStatusCode": response.status, "HTTPHeaders": response.headers}
    if "x-amzn-requestid" in response.headers:
        meta["RequestId"] = response.headers["x-amzn-requestid"]
    if response.status < 301:
        try:
            body = cbor2.loads(response.data) if response.data else {}
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise ConnectionClosedError(endpoint_url=url, error=f"not CBOR: {exc}") from exc
        if not isinstance(body, dict):
            raise ConnectionClosedError(endpoint_url=url, error="the answer is not a CBOR map")
        body["ResponseMetadata"] = meta
        return body
    raise _client_error(operation, response, meta)


def _client_error(operation: str, response: Response, meta: dict[str, Any]) -> ClientError:
    try:
        body = cbor2.loads(response.data) if response.data else None
    except (cbor2.CBORDecodeError, ValueError, TypeError):
        body = None
    if isinstance(body, dict):
        message = str(body.get("message", body.get("Message", "")))
        code = body.get("__type")
        code = str(response.status) if code is None else str(code)
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    else:  # not the service's answer (a proxy's page): botocore's generic error
        code = str(response.status)
        message = http.client.responses.get(response.status, "")
    error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": meta}
    return ClientError(error, operation)  # type: ignore[arg-type]


def operation_url(endpoint_url: str, prefix: str, operation: str) -> str:
    """The URL botocore sends an RPCv2 operation to (``awsrequest._urljoin``)."""
    parts = urlsplit(endpoint_url)
    path = f"/service/{prefix}/operation/{operation}"
    path = parts.path[:-1] + path if parts.path.endswith("/") else parts.path + path
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def resolve(boto_client: Any, event_bus_arn: str, operation: str) -> tuple[str, str, str]:
    """``(URL, signing region, signing name)`` of ``operation`` on ``event_bus_arn``, by the boto3
    client's endpoint rules (an ``endpoint_url`` given to the client wins, as for boto3).

    Raises:
        ConfigError: The rules ask for what this client does not do (extra headers, another
            signature than SigV4): ``aws.client: boto3`` does.
    """
    model = boto_client.meta.service_model
    context: dict[str, Any] = {}
    url, headers, _ = boto_client._resolve_endpoint_ruleset(
        model.operation_model(operation), {"EventBusArn": event_bus_arn, "Entries": []}, context
    )
    signing = context.get("signing") or {}
    if headers or context.get("auth_type") not in (None, "v4"):
        raise ConfigError(
            "the AWS settings",
            [
                f"the endpoint of {operation} needs {context.get('auth_type') or 'headers'}: use"
                " aws.client: boto3"
            ],
        )
    region = signing.get("region") or boto_client.meta.region_name
    name = signing.get("signing_name") or model.signing_name
    return operation_url(url, model.metadata["targetPrefix"], operation), region, name


class LeanEventsV2Client(MultiClient):
    """``put_events`` / ``put_raw_events`` of the new bus with the interface and errors of
    boto3's ``eventbridgev2`` client.

    Args:
        boto_client: A boto3 ``eventbridgev2`` client: its endpoint rules, region, certificate
            checks and proxy are used.
        credentials: botocore credentials (``session.get_credentials()``).
        event_bus_arn: The bus the requests name (the endpoint depends on it).
        max_connections: Connections kept to the endpoint (one per call in flight).
        connect_timeout_s: Connect timeout per call.
        read_timeout_s: Read timeout per call.
    """

    def __init__(
        self,
        boto_client: Any,
        credentials: Any,
        event_bus_arn: str,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        if credentials is None:
            raise NoCredentialsError()
        self.event_bus_arn = event_bus_arn
        self._credentials = credentials
        self._ops: dict[str, tuple[str, CborPostSigner]] = {}
        url = ""
        for operation in OPERATIONS:
            url, region, name = resolve(boto_client, event_bus_arn, operation)
            signer = CborPostSigner(url, region, name)
            parts = urlsplit(url)
            self._ops[operation] = (parts.path + (f"?{parts.query}" * bool(parts.query)), signer)
        self._url = url
        limits = (max_connections, connect_timeout_s, read_timeout_s)
        self._connect(boto_client, url, signer.host, limits)

    def put_events(self, **params: Any) -> dict[str, Any]:
        """Like boto3's ``put_events``."""
        return self._call("PutEvents", params)

    def put_raw_events(self, **params: Any) -> dict[str, Any]:
        """Like boto3's ``put_raw_events``."""
        return self._call("PutRawEvents", params)

    def signed_headers(
        self, operation: str, body: bytes, now: datetime | None = None
    ) -> dict[str, str]:
        """The headers of a signed request (SigV4, as botocore's ``SigV4Auth`` signs it)."""
        frozen = self._credentials.get_frozen_credentials()
        return self._ops[operation][1].headers(frozen, body, now)

    def path(self, operation: str) -> str:
        """The path (and query) ``operation`` is sent to."""
        return self._ops[operation][0]

    def start(self, token: Any, operation: str, params: Mapping[str, Any]) -> None:
        """Start a call and return at once; its result comes from :meth:`finished`. As
        :meth:`bridge.sink.lean.LeanEventsClient.start`: from one thread only.

        Raises:
            botocore.exceptions.NoCredentialsError, CredentialRetrievalError, ClientError (STS):
                no credentials to sign with.
        """
        self._check(params)
        body = serialize(params)
        path, signer = self._ops[operation]
        self._post((token, operation), path, lambda creds: signer.headers(creds, body, None), body)

    def _parse(self, operation: str, response: Response) -> dict[str, Any]:
        return parse(operation, response, self._url)

    def _call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._check(params)
        body = serialize(params)
        path = self._ops[operation][0]
        response = self._pool.post(path, self.signed_headers(operation, body), body)
        return parse(operation, response, self._url)

    def _check(self, params: Mapping[str, Any]) -> None:
        arn = params.get("EventBusArn")
        if arn != self.event_bus_arn:  # its endpoint may be another (the ARN's account)
            raise ValueError(f"this client sends to {self.event_bus_arn}, not {arn}")


Request = tuple[str, list[int], dict[str, Any]]
"""One request of a batch: the operation, the batch's indexes it carries, its parameters."""


def unencodable(entry: Mapping[str, Any]) -> Outcome:
    """The outcome of ``entry`` in a request that could not be encoded: a text field holding
    what UTF-8 cannot carry (a lone surrogate, which a JSON record's ``"\\ud800"`` decodes to;
    botocore's serializer fails on it as well) is dead-lettered; an entry that encodes alone is
    sent again, without the one that could not."""
    try:
        serialize({"Entries": [entry]})
    except UnicodeEncodeError as exc:
        return Outcome(
            Kind.PERMANENT,
            "NotEncodable",
            f"a text field cannot be encoded as UTF-8 ({exc.reason}:"
            f" {exc.object[exc.start : exc.end]!r})",
        )
    return Outcome(Kind.RETRY, "NotSent", "another entry of its request could not be encoded")


class SendsV2(Protocol):
    """What :class:`LeanV2Calls` needs of its sink (:class:`bridge.sink.busv2.EventBusV2Sink`):
    a batch's requests, and its judgement of an answer and of a call that raised."""

    def requests(self, entries: Sequence[dict[str, Any]]) -> list[Request]: ...

    def judge(self, response: Mapping[str, Any], sent: int) -> list[Outcome]: ...

    def failed(self, exc: ClientError | BotoCoreError, sent: int) -> list[Outcome]: ...


class LeanV2Calls:
    """The new bus's calls through the lean client's multi interface, from the pipeline's thread.

    A batch holding both publish forms is two requests (``EventBusV2Sink.requests``); its
    outcomes are handed back, in the batch's order, once both have ended.
    """

    def __init__(self, sink: SendsV2, client: LeanEventsV2Client) -> None:
        self._sink = sink
        self._client = client
        self._parts: dict[int, tuple[list[Outcome | None], int]] = {}
        """call id -> (the outcomes so far, requests under way)."""
        self._indexes: dict[tuple[int, int], list[int]] = {}
        self._early: Finished = []  # calls that failed before going out (no credentials)

    def start(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        requests = self._sink.requests(entries)
        outcomes: list[Outcome | None] = [None] * len(entries)
        under_way = 0
        for part, (operation, indexes, params) in enumerate(requests):
            try:
                self._client.start((call_id, part), operation, params)
            except (ClientError, BotoCoreError) as exc:
                for i, outcome in zip(indexes, self._sink.failed(exc, len(indexes)), strict=True):
                    outcomes[i] = outcome
                continue
            except UnicodeEncodeError:
                for i, entry in zip(indexes, params["Entries"], strict=True):
                    outcomes[i] = unencodable(entry)
                continue
            self._indexes[(call_id, part)] = indexes
            under_way += 1
        if under_way:
            self._parts[call_id] = (outcomes, under_way)
        else:
            self._early.append((call_id, [o for o in outcomes if o is not None]))

    def finished(self) -> Finished:
        done, self._early = self._early, []
        for (call_id, part), result in self._client.finished():
            indexes = self._indexes.pop((call_id, part))
            if isinstance(result, dict):
                judged = self._sink.judge(result, len(indexes))
            else:
                judged = self._sink.failed(result, len(indexes))
            outcomes, under_way = self._parts[call_id]
            for i, outcome in zip(indexes, judged, strict=True):
                outcomes[i] = outcome
            if under_way > 1:
                self._parts[call_id] = (outcomes, under_way - 1)
            else:
                del self._parts[call_id]
                done.append((call_id, [o for o in outcomes if o is not None]))
        return done

    def flush(self) -> None:
        self._client.flush()

    def wait(self, timeout: float) -> None:
        if not self._early:
            self._client.wait(timeout)

    def close(self) -> None:
        self._parts.clear()
        self._indexes.clear()
        self._client.close()
