"""A lean PutEvents / PutPartnerEvents client: boto3's request, without boto3's per-call cost.

botocore spends about 2 ms of CPU per ``put_events`` call (model-driven validation and
serialization, event hooks, endpoint rules, response parsing): 200 µs per event in batches of
ten, more than everything else the bridge does per record. This client keeps what matters and
takes it from boto3 itself:

- the endpoint URL and region, as the boto3 client resolved them (``client.meta``);
- the credentials, from the boto3 session's default chain (refreshed when they expire);
- the signature: SigV4 as botocore's ``SigV4Auth`` makes it (same headers, tested), at a fifth
  of its cost (:mod:`bridge.sink.sigv4`);
- the body, serialized exactly as botocore's JSON serializer does (same bytes, tested);
- the HTTP exchange, by libcurl (:mod:`bridge.sink.transport`), with the boto3 client's
  certificate checks (``verify``, ``AWS_CA_BUNDLE``, ``ca_bundle``) and proxy;
- errors, raised as botocore's ``ClientError`` and transport exceptions, so callers cannot tell.

Global endpoints (``EndpointId``, SigV4a) are not handled here: the bridge uses boto3 for them.

:class:`LeanCalls` runs the pipeline's calls through this client's multi interface, from the
pipeline's own thread (see :mod:`bridge.sink.calls`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
)

from bridge.sink.calls import Finished
from bridge.sink.outcome import Outcome, classify_response
from bridge.sink.sigv4 import JsonPostSigner
from bridge.sink.transport import HttpMulti, HttpPool, HttpSettings, Response

CONTENT_TYPE = "application/x-amz-json-1.1"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> int | float:
    """botocore's ``unixtimestamp`` of a datetime (serialize.py, ``_timestamp_unixtimestamp``).

    As botocore's ``parse_to_aware_datetime``: a naive time is UTC, an aware one is converted to
    UTC. Microseconds are added as integers before dividing, so the float is rounded once.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if delta.microseconds:
        return (seconds * 10**6 + delta.microseconds) / 10**6
    return seconds


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _timestamp(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _string(text: str) -> bytes:
    """``json.dumps(text)`` as bytes: orjson escapes ASCII text exactly as json does but for
    DEL (which json writes as ``\\u007f``); anything else takes json's own escaper."""
    if text.isascii() and "\x7f" not in text:
        return orjson.dumps(text)
    return encode_basestring_ascii(text).encode("ascii")


_KEYS: dict[str, bytes] = {}  # '"Source": ' and the like, built once per key


def serialize(entries: Sequence[dict[str, Any]]) -> bytes:
    """The request body botocore would send for these entries (same bytes).

    botocore writes ``json.dumps({"Entries": [...]})``: ``", "`` and ``": "`` separators,
    non-ASCII escaped, members in the order given, times as epoch seconds. Text, lists of text
    and datetimes (what the mapper builds) are written here piece by piece; an entry holding
    anything else is written by ``json.dumps`` itself.
    """
    out: list[bytes] = []
    for entry in entries:
        members: list[bytes] = []
        for key, value in entry.items():
            name = _KEYS.get(key)
            if name is None:
                name = _KEYS[key] = encode_basestring_ascii(key).encode("ascii") + b": "
            kind = type(value)
            if kind is str:
                members.append(name + _string(value))
            elif kind is datetime:
                members.append(name + repr(_timestamp(value)).encode("ascii"))
            elif kind is list and all(type(item) is str for item in value):
                members.append(name + b"[" + b", ".join(map(_string, value)) + b"]")
            else:
                members.append(name + json.dumps(value, default=_json_default).encode("utf-8"))
        out.append(b"{" + b", ".join(members) + b"}")
    return b'{"Entries": [' + b", ".join(out) + b"]}"


class MultiClient:
    """What the lean clients share to run calls without waiting: libcurl's multi interface
    over their connection pool, and credentials refreshed by a thread of their own (an STS call
    never holds up the pipeline's thread), both made at the first call. Calls started this way
    belong to the thread that starts them: ``start``, :meth:`finished`, :meth:`flush`,
    :meth:`wait` and :meth:`close` from it only."""

    _pool: HttpPool
    _credentials: Any
    _multi: HttpMulti | None = None
    _fresh: FreshCredentials | None = None

    def _connect(
        self, boto_client: Any, url: str, host: str, limits: tuple[int, float, float]
    ) -> None:
        """Keep ``boto_client`` (its ``meta``, rare calls) and open a pool to ``url``;
        ``limits``: the connections kept, the connect and the read timeouts."""
        connections, connect_s, read_s = limits
        settings = HttpSettings.of(boto_client)
        self._pool = HttpPool(url, host, connections, connect_s, read_s, settings)
        self.meta = boto_client.meta
        self._boto = boto_client

    def describe_event_bus(self, **kwargs: Any) -> dict[str, Any]:
        """Rare calls go through boto3 as they are."""
        result: dict[str, Any] = self._boto.describe_event_bus(**kwargs)
        return result

    def _post(self, token: Any, path: str, sign: Any, body: bytes) -> None:
        """Queue one POST of ``body`` to ``path``, signed by ``sign(credentials)``."""
        if self._multi is None:
            self._multi = HttpMulti(self._pool)
            self._fresh = FreshCredentials(self._credentials)
        assert self._fresh is not None
        self._multi.start(token, path, sign(self._fresh.get()), body)

    def _parse(self, operation: str, response: Response) -> dict[str, Any]:
        raise NotImplementedError

    def finished(self) -> list[tuple[Any, dict[str, Any] | ClientError | BotoCoreError]]:
        """The calls that ended since the last look: ``(token, the parsed answer, or the
        exception boto3 would have raised)``."""
        if self._multi is None:
            return []
        done: list[tuple[Any, dict[str, Any] | ClientError | BotoCoreError]] = []
        for (token, operation), answer in self._multi.perform():
            if isinstance(answer, Response):
                try:
                    done.append((token, self._parse(operation, answer)))
                except (ClientError, BotoCoreError) as exc:
                    done.append((token, exc))
            else:
                done.append((token, answer))
        return done

    def flush(self) -> None:
        """Send the calls started since the last flush (else they go at the next look or wait)."""
        if self._multi is not None:
            self._multi.flush()

    def wait(self, timeout: float) -> None:
        """Sleep until a call started may have ended, at most ``timeout`` seconds."""
        if self._multi is not None:
            self._multi.wait(timeout)

    def close(self) -> None:
        """Abandon the calls under way; stop refreshing credentials; close connections."""
        if self._multi is not None:
            self._multi.close()
            self._multi = None
        if self._fresh is not None:
            self._fresh.close()
            self._fresh = None
        self._pool.close()


class LeanEventsClient(MultiClient):
    """``put_events`` / ``put_partner_events`` with the interface and errors of boto3's client.

    Args:
        boto_client: A boto3 ``events`` client: its resolved endpoint, region, certificate
            checks and proxy are used.
        credentials: botocore credentials (``session.get_credentials()``).
        max_connections: Connections kept to the endpoint (one per call in flight).
        connect_timeout_s: Connect timeout per call.
        read_timeout_s: Read timeout per call.
    """

    def __init__(
        self,
        boto_client: Any,
        credentials: Any,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        if credentials is None:
            raise NoCredentialsError()
        self._url = boto_client.meta.endpoint_url.rstrip("/") + "/"
        self._region = boto_client.meta.region_name
        self._credentials = credentials
        self._signer = JsonPostSigner(self._url, self._region, "events", CONTENT_TYPE)
        parts = urlsplit(self._url)
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        limits = (max_connections, connect_timeout_s, read_timeout_s)
        self._connect(boto_client, self._url, self._signer.host, limits)

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Like boto3's ``put_events``."""
        return self._call("PutEvents", serialize(Entries))

    def put_partner_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Like boto3's ``put_partner_events``."""
        return self._call("PutPartnerEvents", serialize(Entries))

    def signed_headers(
        self, operation: str, body: bytes, now: datetime | None = None
    ) -> dict[str, str]:
        """The headers of a signed request (SigV4, as botocore's ``SigV4Auth`` signs it)."""
        frozen = self._credentials.get_frozen_credentials()
        return self._signer.headers(frozen, f"AWSEvents.{operation}", body, now)

    # ------------------------------------------------------------ calls without waiting
    def start(self, token: Any, operation: str, entries: Sequence[dict[str, Any]]) -> None:
        """Start a call (``PutEvents`` or ``PutPartnerEvents``) and return at once; its result
        comes from :meth:`finished`. Calls started this way belong to the thread that starts
        them: :meth:`start`, :meth:`finished`, :meth:`wait` and :meth:`close` from it only.

        Credentials are taken from :class:`FreshCredentials`, refreshed by a thread of its own:
        an STS call never holds up this one.

        Raises:
            botocore.exceptions.NoCredentialsError, CredentialRetrievalError, ClientError (STS):
                no credentials to sign with (as boto3's ``put_events`` would raise them).
        """
        body = serialize(entries)
        target = f"AWSEvents.{operation}"
        signer = self._signer
        self._post(
            (token, operation), self._path, lambda c: signer.headers(c, target, body, None), body
        )

    def _parse(self, operation: str, response: Response) -> dict[str, Any]:
        return self._result(operation, response)

    # ------------------------------------------------------------ shared
    def _call(self, operation: str, body: bytes) -> dict[str, Any]:
        response = self._pool.post(self._path, self.signed_headers(operation, body), body)
        return self._result(operation, response)

    def _result(self, operation: str, response: Response) -> dict[str, Any]:
        """The parsed answer of a call, or the ``ClientError`` boto3 would raise."""
        data = response.data
        if response.status == 200:
            try:
                parsed: dict[str, Any] = orjson.loads(data)
            except orjson.JSONDecodeError:
                try:
                    parsed = json.loads(data)
                except ValueError as exc:
                    raise ConnectionClosedError(endpoint_url=self._url, error=exc) from exc
            return parsed
        raise _client_error(operation, response.status, data, response.headers)


class FreshCredentials:
    """Frozen credentials for signing, kept fresh by a thread of their own.

    botocore refreshes expiring credentials (an assumed role, web identity, a container's) when
    they are read, with a call to STS or a metadata endpoint: up to its timeouts, on the thread
    that reads them. Here a daemon thread reads them every ``every_s`` seconds and the signer
    takes the last reading, so the thread that starts calls never waits for a refresh. When the
    last reading failed (no credentials any more, STS refused), :meth:`get` raises that error,
    as reading them would. Credentials that never expire are read directly.

    Args:
        credentials: botocore credentials (``session.get_credentials()``).
        every_s: Seconds between readings.
    """

    def __init__(self, credentials: Any, every_s: float = 1.0) -> None:
        self._credentials = credentials
        self._every_s = every_s
        self._refreshing = hasattr(credentials, "refresh_needed")
        self._last: tuple[Any, BaseException | None] = (None, None)
        self._stop = threading.Event()
        if self._refreshing:
            self._read()
            thread = threading.Thread(target=self._loop, name="credentials", daemon=True)
            thread.start()

    def get(self) -> Any:
        """The frozen credentials to sign with.

        Raises:
            Exception: The error of the last reading (botocore's or STS's).
        """
        if not self._refreshing:
            return self._credentials.get_frozen_credentials()
        frozen, error = self._last
        if error is not None:
            raise error.with_traceback(None)
        return frozen

    def close(self) -> None:
        self._stop.set()

    def _read(self) -> None:
        try:
            self._last = (self._credentials.get_frozen_credentials(), None)
        except Exception as exc:
            self._last = (None, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self._read()


def _client_error(operation: str, status: int, data: bytes, headers: dict[str, str]) -> ClientError:
    """A ``ClientError`` shaped like botocore's for an AWS JSON 1.1 error answer."""
    code, message = "", ""
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {}
    if isinstance(body, dict):
        code = str(body.get("__type") or body.get("code") or "")
        message = str(body.get("message") or body.get("Message") or "")
    code = code.rsplit("#", 1)[-1] or headers.get("x-amzn-errortype", "").split(":")[0]
    if not code:
        code = str(status)
    error = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)},
    }
    return ClientError(error, operation)  # type: ignore[arg-type]


class JudgesFailures(Protocol):
    """What :class:`LeanCalls` needs of its sink (:class:`bridge.sink.eventbridge.EventBridgeSink`):
    its name and its judgement of a call that raised."""

    name: str

    def failed(self, exc: ClientError | BotoCoreError, sent: int) -> list[Outcome]: ...


class LeanCalls:
    """PutEvents / PutPartnerEvents through the lean client's multi interface, from the
    pipeline's thread (:meth:`LeanEventsClient.start`)."""

    def __init__(self, sink: JudgesFailures, client: LeanEventsClient) -> None:
        self._sink = sink
        self._client = client
        self._operation = "PutPartnerEvents" if sink.name == "put_partner_events" else "PutEvents"
        self._sizes: dict[int, int] = {}
        self._early: Finished = []  # calls that failed before going out (no credentials)

    def start(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        try:
            self._client.start(call_id, self._operation, entries)
        except (ClientError, BotoCoreError) as exc:
            self._early.append((call_id, self._sink.failed(exc, len(entries))))
            return
        self._sizes[call_id] = len(entries)

    def flush(self) -> None:
        self._client.flush()

    def finished(self) -> Finished:
        done, self._early = self._early, []
        for call_id, result in self._client.finished():
            sent = self._sizes.pop(call_id)
            if isinstance(result, dict):
                done.append((call_id, classify_response(result, sent)))
            else:
                done.append((call_id, self._sink.failed(result, sent)))
        return done

    def wait(self, timeout: float) -> None:
        if not self._early:
            self._client.wait(timeout)

    def close(self) -> None:
        self._sizes.clear()
        self._client.close()
