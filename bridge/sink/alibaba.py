"""Alibaba Cloud EventBridge ``putEvents``: an HTTP client and the ``alibaba`` sink.

The API answers ``{"RequestId", "FailedEntryCount", "EntryList": [{"EventId", "TraceId"} or
{"ErrorCode", "ErrorMessage"}]}``; each entry is judged on its own. The request (signing,
CloudEvents) is built by :mod:`bridge.sink.alibaba_wire`. Limits (API page: 64 KB per event, 16
events and 256 KB per call; Alibaba's limits page: 256 KB, 16 and 1 MB) are settings, checked
against :data:`bridge.limits.SINK_LIMITS`; its error codes are in :mod:`bridge.codes`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from types import TracebackType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import urllib3

from bridge.codes import (
    ALIBABA_HOLD_CODES,
    ALIBABA_SUCCESS_CODE,
    alibaba_retryable,
    alibaba_throttling,
)
from bridge.errors import MappingError
from bridge.limits import SINK_LIMITS
from bridge.mapping.record import RecordLike
from bridge.sink.alibaba_wire import (
    API_VERSION,
    CONTENT_TYPE,
    PUT_EVENTS_PATH,
    SIGNATURE_METHOD,
    SIGNATURE_VERSION,
    authorization,
    cloud_event,
    encode_batch,
    event_size,
)
from bridge.sink.base import SinkLimits, record_id
from bridge.sink.outcome import Kind, Outcome

_API: Final = SINK_LIMITS["alibaba"]
DEFAULT_LIMITS: Final = SinkLimits(_API.max_entries, _API.default_request_bytes, _API.entry_bytes)
"""The putEvents API page's limits (:data:`bridge.limits.SINK_LIMITS`)."""
USER_AGENT: Final = "kafka-eventbridge-bridge"

# -- client -------------------------------------------------------------------------------------


class AlibabaEventBridgeError(Exception):
    """A putEvents call that failed as a whole. Never carries the AccessKey secret.

    Attributes:
        status: HTTP status, or None when no HTTP answer came (transport error).
        code: Error code from the answer (or the transport exception's class name).
        message: Error message from the answer.
        request_id: The service's request ID, when it gave one.
    """

    def __init__(self, status: int | None, code: str, message: str, request_id: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        where = f"HTTP {status}" if status is not None else "no HTTP answer"
        suffix = f" (request {request_id})" if request_id else ""
        super().__init__(f"{where}: {code}: {message}{suffix}")


class AlibabaServiceError(AlibabaEventBridgeError):
    """The service answered with a non-2xx status, or a 2xx whose body is not a JSON object."""


class AlibabaTransportError(AlibabaEventBridgeError):
    """No HTTP answer: connection refused or reset, timeout, TLS failure."""


class _Secret:
    """Holds the AccessKey secret so that no repr, log or traceback shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"


def _first(mapping: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = mapping.get(key)
        if value:
            return str(value)
    return ""


class AlibabaEventBridgeClient:
    """Signed ``putEvents`` calls over HTTP(S) with a keep-alive urllib3 pool; one attempt each.

    Args:
        endpoint: Base URL, e.g. ``https://<account>.eventbridge.cn-hangzhou.aliyuncs.com``; a
            bare host gets ``https://``.
        access_key_id: AccessKey ID.
        access_key_secret: AccessKey secret; used only to sign, never shown.
        timeout_s: Connect and read timeout of one call, and the longest wait for a free
            pooled connection.
        max_connections: Connections kept per host; callers beyond it wait (backpressure).
        security_token: STS token for temporary credentials (sent as ``x-acs-security-token``).
        api_version: ``x-eventbridge-version`` to send.
        ca_certs: CA bundle file for HTTPS; None uses the system's.
    """

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        timeout_s: float,
        max_connections: int,
        *,
        security_token: str | None = None,
        api_version: str = API_VERSION,
        ca_certs: str | None = None,
    ) -> None:
        base = endpoint if "://" in endpoint else f"https://{endpoint}"
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL or a host, got {endpoint!r}")
        if not access_key_id or not access_key_secret:
            raise ValueError("access_key_id and access_key_secret must not be empty")
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeout_s must be positive and max_connections at least 1")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self.access_key_id = access_key_id
        self._secret = _Secret(access_key_secret)
        self._token = _Secret(security_token) if security_token else None
        self.api_version = api_version
        self.timeout_s = timeout_s
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            ca_certs=ca_certs,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, "
            f"access_key_id={self.access_key_id!r})"
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

    def __enter__(self) -> AlibabaEventBridgeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def signed_headers(self, body: bytes, *, date: str | None = None) -> dict[str, str]:
        """Headers of a putEvents request for ``body``, ``Authorization`` included."""
        headers = {
            "date": date or formatdate(usegmt=True),
            "content-type": CONTENT_TYPE,
            "accept": "application/json",
            "user-agent": USER_AGENT,
            "x-eventbridge-version": self.api_version,
            "x-acs-signature-method": SIGNATURE_METHOD,
            "x-acs-signature-version": SIGNATURE_VERSION,
            "x-acs-signature-nonce": uuid.uuid4().hex,
        }
        if self._token is not None:
            headers["x-acs-accesskey-id"] = self.access_key_id
            headers["x-acs-security-token"] = self._token.reveal()
        headers["authorization"] = authorization(
            self.access_key_id, self._secret.reveal(), "POST", PUT_EVENTS_PATH, headers
        )
        return headers

    def put_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """One signed ``putEvents`` call.

        Args:
            events: CloudEvent dicts (see :func:`cloud_event`).

        Returns:
            The decoded 2xx answer (``RequestId``, ``FailedEntryCount``, ``EntryList``).

        Raises:
            AlibabaServiceError: A non-2xx answer, or a 2xx whose body is not a JSON object.
            AlibabaTransportError: No HTTP answer.
        """
        body = encode_batch(events)
        headers = self.signed_headers(body)
        try:
            response = self._pool.request(
                "POST",
                self.endpoint + PUT_EVENTS_PATH,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                pool_timeout=self.timeout_s,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise AlibabaTransportError(None, type(exc).__name__, self._redact(str(exc))) from exc
        status = response.status
        request_id = _first(response.headers, "x-eventbridge-request-id", "x-acs-request-id")
        text = response.data.decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(text) if text.strip() else None
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            request_id = _first(payload, "RequestId", "requestId") or request_id
        if 200 <= status < 300:
            if isinstance(payload, dict):
                return payload
            raise AlibabaServiceError(
                status, "InvalidResponse", "answer is not a JSON object", request_id
            )
        if isinstance(payload, dict):
            code = _first(payload, "Code", "code", "ErrorCode", "errorCode") or f"HTTP{status}"
            message = _first(payload, "Message", "message", "ErrorMessage", "errorMessage")
        else:
            code, message = f"HTTP{status}", text[:200]
        raise AlibabaServiceError(status, code, self._redact(message), request_id)

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._token):
            if secret is not None and secret.reveal() in text:
                text = text.replace(secret.reveal(), "***")
        return text


# -- sink ---------------------------------------------------------------------------------------


class PutEventsCaller(Protocol):
    """What :class:`AlibabaSink` needs: :meth:`AlibabaEventBridgeClient.put_events`."""

    def put_events(self, events: list[dict[str, Any]]) -> dict[str, Any]: ...


def classify_entry(result: Mapping[str, Any]) -> Outcome:
    """One element of ``EntryList``: delivered, retryable or permanent."""
    code = str(result.get("ErrorCode") or "")
    if not code or code == ALIBABA_SUCCESS_CODE:
        event_id = result.get("EventId")
        if event_id:
            return Outcome(Kind.DELIVERED, event_id=str(event_id))
        return Outcome(Kind.RETRY, "NoEventId", "entry has neither EventId nor ErrorCode")
    message = str(result.get("ErrorMessage") or "")
    if alibaba_throttling(code):
        # The quota, not the entry: held (sent again without using up attempts).
        return Outcome(Kind.RETRY, code, message, hold=True, throttled=True)
    return Outcome(Kind.RETRY if alibaba_retryable(code) else Kind.PERMANENT, code, message)


def classify_response(response: Mapping[str, Any], sent: int) -> list[Outcome]:
    """Outcomes of a 2xx answer, index for index with the ``sent`` events.

    An ``EntryList`` whose length differs from the request's is a retryable failure of the whole
    call: no index of it can be trusted.
    """
    entries = response.get("EntryList")
    if not isinstance(entries, list) or len(entries) != sent:
        count = len(entries) if isinstance(entries, list) else 0
        message = f"answer has {count} entries for {sent} sent"
        return [Outcome(Kind.RETRY, "ResponseMismatch", message, whole_call=True)] * sent
    return [
        classify_entry(e) if isinstance(e, Mapping) else Outcome(Kind.RETRY, "BadEntry")
        for e in entries
    ]


def classify_call_error(error: AlibabaEventBridgeError) -> Outcome:
    """A call that failed as a whole.

    Held (retried without using up ``retry.max_attempts``, like the AWS sink's): no HTTP answer,
    HTTP 5xx or 429, a retryable code (throttling is HTTP 400 on some Alibaba services), and
    credential and permission errors (SignatureDoesNotMatch, InvalidAccessKeyId, HTTP 401/403):
    none is the entries' fault, and dead-lettering every record meanwhile would be worse than
    waiting. Retried: a 2xx with an unreadable body. Permanent: any other 4xx.
    """
    status = error.status
    transport = isinstance(error, AlibabaTransportError) or status is None
    unreadable = status is not None and 200 <= status < 300
    status_held = status is not None and (status >= 500 or status in (401, 403, 429))
    code_held = error.code in ALIBABA_HOLD_CODES or alibaba_retryable(error.code)
    hold = not unreadable and (transport or status_held or code_held)
    kind = Kind.RETRY if hold or unreadable else Kind.PERMANENT
    throttled = alibaba_throttling(error.code) or status == 429
    return Outcome(kind, error.code, str(error), whole_call=True, hold=hold, throttled=throttled)


class AlibabaSink:
    """The ``alibaba`` sink: CloudEvents sent with ``putEvents``; never raises for service/network
    failures. Implements :class:`bridge.sink.base.Sink`.

    Args:
        client: An :class:`AlibabaEventBridgeClient` (or anything with ``put_events``); None for
            mapping only (``prepare``/``entry_size``).
        limits: What to pack to; default :data:`DEFAULT_LIMITS` (16 events, 256 KiB, 64 KiB).
    """

    name = "alibaba"

    def __init__(self, client: PutEventsCaller | None, limits: SinkLimits | None = None) -> None:
        self._client = client
        self.limits = limits or DEFAULT_LIMITS

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]:
        """The CloudEvent of ``entry``; its id is the record's (stable across redeliveries).

        Raises:
            MappingError: ``InvalidCloudEvent`` when the entry cannot become a CloudEvent.
        """
        try:
            return cloud_event(entry, id=record_id(record))
        except (ValueError, KeyError) as exc:
            raise MappingError("InvalidCloudEvent", str(exc), stage="validate") from None

    def entry_size(self, wire: dict[str, Any]) -> int:
        """:func:`event_size`: compact UTF-8 JSON bytes."""
        return event_size(wire)

    def send(self, entries: Sequence[dict[str, Any]]) -> list[Outcome]:
        """One putEvents call for ``entries`` (CloudEvent dicts); the outcome of each, in order.

        Raises:
            RuntimeError: The sink was built without a client (mapping only).
        """
        if not entries:
            return []
        if self._client is None:
            raise RuntimeError("AlibabaSink was built without a client")
        try:
            response = self._client.put_events(list(entries))
        except AlibabaEventBridgeError as exc:
            return [classify_call_error(exc)] * len(entries)
        return classify_response(response, len(entries))
