"""Alibaba Cloud EventBridge-compatible local HTTP endpoint for tests and the local demo.

A real HTTP/1.1 server for ``POST /openapi/putEvents`` (shared seed 003). It checks what the
service checks and records what it accepted: the request signature (by the official SDK's
algorithm, :func:`bridge.sink.alibaba_wire.string_to_sign`; ``acs:`` and ``acs `` prefixes both
accepted), ``Content-Type``, ``x-eventbridge-version``, ``Content-MD5`` when sent, the request
limits (a violation is recorded and answered 400) and each event's required CloudEvents
attributes (a per-entry ``InvalidArgument`` otherwise). It injects faults like
:mod:`testbed.endpoint` (both are a :class:`~testbed.base.LocalEndpoint`): per-entry
failures by code and probability, whole-call errors, latency and outages, changeable at runtime
from Python or over the admin HTTP API under ``/_admin/``. Only the standard library, orjson and
:mod:`bridge.sink.alibaba_wire` are used.

Codes taken from Alibaba's documentation: ``SignatureDoesNotMatch`` and ``InvalidAccessKeyId``
(403), ``TooManyRequests`` (429), ``InternalError`` (500), ``ServiceUnavailable`` (503),
``NoSuchVersion`` (400). The rest (``MissingAuthorization``, ``UnsupportedMediaType``,
``InvalidDigest``, ``MalformedJSON``, ``TooManyEvents``, ``EventTooLarge``, ``RequestTooLarge``,
``InvalidArgument``) are this endpoint's own. Error bodies are ``{"requestId", "code",
"message"}``, the shape the SDK reads.

Run standalone with ``python -m testbed.alibaba_endpoint --port 4011``; it prints its URL
on one line once it is ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.sink.alibaba_wire import (
    API_VERSION,
    PUT_EVENTS_PATH,
    SPEC_VERSION,
    content_md5,
    encode_event,
    event_size,
    signature,
    string_to_sign,
)
from testbed.base import (
    ADMIN_PREFIX,
    CallRecord,
    EndpointHandler,
    EndpointServer,
    Faults,
    LocalEndpoint,
    Reply,
    add_common_arguments,
    faults_from_arguments,
    serve_until_signalled,
)
from testbed.server import dump_json, load_json, random_uuid

MEDIA_TYPE = "application/cloudevents-batch+json"
SDK_API_VERSION = "2015-06-06"
"""What ``alibabacloud-eventbridge`` 1.3.8 sends as ``x-eventbridge-version``."""
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "aliyuneventbusname")
"""Attributes the putEvents API page marks required."""

_AUTH = re.compile(r"^acs[ :](?P<id>[^\s:]+):(?P<signature>\S+)$")


def default_status(code: str) -> int:
    """HTTP status of an injected call error when ``Faults.call_error_status`` is None."""
    if code == "TooManyRequests":
        return 429
    if code == "ServiceUnavailable":
        return 503
    return 400 if code.startswith("Throttling") else 500


@dataclass(frozen=True)
class ReceivedEvent:
    """An event answered with an EventId."""

    event_id: str
    trace_id: str
    call: int
    event: dict[str, Any]


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"requestId": random_uuid(), "code": code, "message": message}


def _valid_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


class LocalAlibabaEventBridge(LocalEndpoint[ReceivedEvent]):
    """In-process Alibaba EventBridge-compatible endpoint (see the module docstring)."""

    thread_name = "local-alibaba-eventbridge"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_key_id: str,
        access_key_secret: str,
        max_events: int = 16,
        max_event_bytes: int = 65536,
        max_request_bytes: int = 262144,
        api_versions: Sequence[str] = (API_VERSION, SDK_API_VERSION),
        seed: int = 0,
        faults: Faults | None = None,
        verbose: bool = False,
    ) -> None:
        """Configure the endpoint; call ``start()`` (or use ``with``) to serve.

        Args:
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            access_key_id: The only AccessKey ID accepted.
            access_key_secret: Its secret, to verify signatures.
            max_events: Most events per call.
            max_event_bytes: Largest event, by :func:`bridge.sink.alibaba_wire.event_size`.
            max_request_bytes: Largest sum of event sizes in one call.
            api_versions: Accepted ``x-eventbridge-version`` values.
            seed: Seed of the random generator used for fault injection.
            faults: Initial faults (none by default).
            verbose: Log each HTTP request to stderr.
        """
        super().__init__(host, port, seed=seed, faults=faults, verbose=verbose)
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.max_request_bytes = max_request_bytes
        self.api_versions = frozenset(api_versions)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(address={self._address!r}, access_key_id={self.access_key_id!r})"

    def _make_server(self, address: tuple[str, int]) -> _Server:
        return _Server(address, self)

    def stats(self) -> dict[str, Any]:
        """Counts of calls, events received/failed (by code), rejections and violations."""
        with self._lock:
            return {
                "calls": len(self._calls),
                "events_received": len(self._received),
                "events_failed": dict(self._failed),
                "auth_failures": sum(
                    c.status in (401, 403) for c in self._calls if c.operation == "PutEvents"
                ),
                "violations": len(self._violations),
                "status_counts": dict(Counter(str(c.status) for c in self._calls)),
            }

    # -- request handling -------------------------------------------------------------

    def _dispatch(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        """Answer one API request; None means drop the connection without answering."""
        with self._lock:
            self._call_count += 1
            call = self._call_count
            faults = self._faults
            jitter = self._rng.uniform(0, faults.latency_jitter_ms)
        if faults.latency_ms or jitter:
            time.sleep((faults.latency_ms + jitter) / 1000.0)
        events: list[dict[str, Any]] = []
        size, failed = 0, 0
        reply: Reply | None
        if faults.outage:
            reply = _error(503, "ServiceUnavailable", "Injected outage")
            reply = reply if faults.outage_mode == "503" else None
        elif method != "POST" or path.split("?", 1)[0] != PUT_EVENTS_PATH:
            reply = _error(404, "NotFound", f"no API {method} {path}")
        else:
            reply, events = self._check_request(path, headers, body)
            if reply is None:
                size = sum(event_size(e) for e in events)
                reply = self._check_limits(call, events, size)
            if reply is None:
                reply, failed = self._put_events(call, events, faults)
        status, payload = reply if reply is not None else (0, {})
        record = CallRecord(
            call=call,
            operation="PutEvents" if path.split("?", 1)[0] == PUT_EVENTS_PATH else path,
            entries=len(events),
            size=size,
            status=status,
            time=time.time(),
            error_code=payload.get("code"),
            failed_entries=failed,
        )
        with self._lock:
            self._calls.append(record)
        return reply

    def _check_request(
        self, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Reply | None, list[dict[str, Any]]]:
        """Signature, content type, version, digest and body shape: (error or None, events)."""
        reply, events = self._check_headers(path, headers, body), []
        if reply is None:
            try:
                parsed = load_json(body)
            except ValueError as exc:
                return _error(400, "MalformedJSON", f"invalid JSON: {exc}"), []
            if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
                return _error(400, "MalformedJSON", "body must be a JSON array of objects"), []
            events = parsed
        return reply, events

    def _check_headers(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        match = _AUTH.match(headers.get("authorization", "").strip())
        if match is None:
            return _error(401, "MissingAuthorization", "Authorization: acs <id>:<signature>")
        if match["id"] != self.access_key_id:
            return _error(403, "InvalidAccessKeyId", "The access Id you provided is not exist.")
        unsigned = {k: v for k, v in headers.items() if k != "authorization"}
        expected = signature(self._secret, string_to_sign("POST", path, unsigned))
        if not hmac.compare_digest(expected.encode(), match["signature"].encode()):
            return _error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.",
            )
        media_type, _, params = headers.get("content-type", "").partition(";")
        charset = params.strip().lower().removeprefix("charset=") if params.strip() else "utf-8"
        if media_type.strip().lower() != MEDIA_TYPE or charset not in ("utf-8", "utf8"):
            content_type = headers.get("content-type", "")
            return _error(415, "UnsupportedMediaType", f"Content-Type {content_type!r}")
        version = headers.get("x-eventbridge-version", "")
        if version not in self.api_versions:
            return _error(400, "NoSuchVersion", f"x-eventbridge-version {version!r}")
        digest = headers.get("content-md5")
        if digest is not None and digest != content_md5(body):
            return _error(400, "InvalidDigest", "Content-MD5 does not match the body")
        return None

    def _check_limits(self, call: int, events: list[dict[str, Any]], size: int) -> Reply | None:
        violation: tuple[str, str] | None = None
        largest = max((event_size(e) for e in events), default=0)
        if not 1 <= len(events) <= self.max_events:
            reason = f"{len(events)} events (allowed 1..{self.max_events})"
            violation = ("TooManyEvents", reason)
        elif largest > self.max_event_bytes:
            violation = ("EventTooLarge", f"event of {largest} bytes > {self.max_event_bytes}")
        elif size > self.max_request_bytes:
            violation = ("RequestTooLarge", f"request of {size} bytes > {self.max_request_bytes}")
        if violation is None:
            return None
        with self._lock:
            self._violations.append(f"call {call}: {violation[1]}")
        return _error(400, violation[0], violation[1])

    def _put_events(
        self, call: int, events: list[dict[str, Any]], faults: Faults
    ) -> tuple[Reply, int]:
        with self._lock:
            call_error = self._injected_call_error(faults)
            if call_error is not None:
                return _error(*call_error, "Injected call failure"), 0
            results: list[dict[str, str]] = []
            for event in events:
                error = self._event_error(event, faults)
                if error is None:
                    event_id, trace_id = random_uuid(), random_uuid().replace("-", "")
                    self._received.append(ReceivedEvent(event_id, trace_id, call, event))
                    results.append({"EventId": event_id, "TraceId": trace_id})
                else:
                    self._failed[error[0]] += 1
                    results.append({"ErrorCode": error[0], "ErrorMessage": error[1]})
        failed = sum("ErrorCode" in r for r in results)
        request_id = random_uuid()
        payload = {"RequestId": request_id, "FailedEntryCount": failed, "EntryList": results}
        return (200, payload), failed

    def _event_error(self, event: Mapping[str, Any], faults: Faults) -> tuple[str, str] | None:
        """Per-event error (code, message) or None; call with the lock held."""
        for name in REQUIRED_ATTRIBUTES:
            value = event.get(name)
            if not isinstance(value, str) or not value:
                return "InvalidArgument", f"The CloudEvents attribute {name} is missing."
        if event["specversion"] != SPEC_VERSION:
            return "InvalidArgument", f"specversion {event['specversion']!r} is not supported."
        if not _valid_time(event["time"]):
            return "InvalidArgument", f"time {event['time']!r} is not RFC 3339."
        data = encode_event({"data": event.get("data")}).decode("utf-8")
        return self._injected_entry_error(data, faults, "data")

    def _default_status(self, code: str) -> int:
        return default_status(code)


class _Server(EndpointServer):
    bridge: LocalAlibabaEventBridge

    def __init__(self, address: tuple[str, int], bridge: LocalAlibabaEventBridge) -> None:
        super().__init__(address, bridge, _Handler)


class _Handler(EndpointHandler):
    server: _Server

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        bridge = self.server.bridge
        if self.path.startswith(ADMIN_PREFIX):
            status, payload = bridge._admin(method, self.path, body)
            self._send(status, payload, admin=True)
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = bridge._dispatch(method, self.path, headers, body)
        except Exception as exc:  # a bug here must not look like an outage
            reply = _error(500, "InternalError", f"endpoint error: {exc!r}")
        if reply is None:
            self.close_connection = True  # outage: drop the connection unanswered
            return
        self._send(reply[0], reply[1])

    def _send(self, status: int, payload: Any, *, admin: bool = False) -> None:
        """Send a JSON answer in one write (an admin answer as ``json.dumps`` writes it)."""
        data = json.dumps(payload).encode("utf-8") if admin else dump_json(payload)
        request_id = payload.get("RequestId") or payload.get("requestId") or random_uuid()
        head = self.answer_head(
            status,
            [
                ("Content-Type", "application/json;charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("x-eventbridge-request-id", str(request_id)),
            ],
        )
        self.wfile.write(head + data)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; prints its URL when ready.

    The AccessKey pair comes from ``--access-key-id`` / ``ALIBABA_CLOUD_ACCESS_KEY_ID`` and
    ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (defaults ``local`` / ``local-secret``).
    """
    parser = argparse.ArgumentParser(prog="python -m testbed.alibaba_endpoint")
    add_common_arguments(parser, port=4011, call_error_code="InternalError")
    for flag, kind, default in [
        ("--access-key-id", str, os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "local")),
        ("--max-events", int, 16),
        ("--max-event-bytes", int, 65536),
        ("--max-request-bytes", int, 262144),
        ("--throttle-rate", float, 0.0),  # per-event TooManyRequests probability
        ("--internal-error-rate", float, 0.0),  # per-event InternalError probability
    ]:
        parser.add_argument(flag, type=kind, default=default)
    args = parser.parse_args(argv)
    rates = {"TooManyRequests": args.throttle_rate, "InternalError": args.internal_error_rate}
    faults = faults_from_arguments(args, rates)
    endpoint = LocalAlibabaEventBridge(
        args.host,
        args.port,
        access_key_id=args.access_key_id,
        access_key_secret=os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "local-secret"),
        max_events=args.max_events,
        max_event_bytes=args.max_event_bytes,
        max_request_bytes=args.max_request_bytes,
        seed=args.seed,
        faults=faults,
        verbose=args.verbose,
    )
    return serve_until_signalled(endpoint)


if __name__ == "__main__":
    sys.exit(main())
