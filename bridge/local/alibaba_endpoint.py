"""Alibaba Cloud EventBridge-compatible local HTTP endpoint for tests and the local demo.

A real HTTP/1.1 server for ``POST /openapi/putEvents`` (shared seed 003). It checks what the
service checks and records what it accepted: the request signature (by the official SDK's
algorithm, :func:`bridge.sink.alibaba.string_to_sign`; ``acs:`` and ``acs `` prefixes both
accepted), ``Content-Type``, ``x-eventbridge-version``, ``Content-MD5`` when sent, the request
limits (a violation is recorded and answered 400) and each event's required CloudEvents
attributes (a per-entry ``InvalidArgument`` otherwise). It injects faults like
:mod:`bridge.local.endpoint` (it reuses its :class:`~bridge.local.endpoint.Faults`): per-entry
failures by code and probability, whole-call errors, latency and outages, changeable at runtime
from Python or over the admin HTTP API under ``/_admin/``. Only the standard library is used.

Codes taken from Alibaba's documentation: ``SignatureDoesNotMatch`` and ``InvalidAccessKeyId``
(403), ``TooManyRequests`` (429), ``InternalError`` (500), ``ServiceUnavailable`` (503),
``NoSuchVersion`` (400). The rest (``MissingAuthorization``, ``UnsupportedMediaType``,
``InvalidDigest``, ``MalformedJSON``, ``TooManyEvents``, ``EventTooLarge``, ``RequestTooLarge``,
``InvalidArgument``) are this endpoint's own. Error bodies are ``{"requestId", "code",
"message"}``, the shape the SDK reads.

Run standalone with ``python -m bridge.local.alibaba_endpoint --port 4011``; it prints its URL
on one line once it is ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from bridge.local.endpoint import CallRecord, Faults
from bridge.sink.alibaba import (
    API_VERSION,
    PUT_EVENTS_PATH,
    SPEC_VERSION,
    content_md5,
    encode_event,
    event_size,
    signature,
    string_to_sign,
)

ADMIN_PREFIX = "/_admin/"
MEDIA_TYPE = "application/cloudevents-batch+json"
SDK_API_VERSION = "2015-06-06"
"""What ``alibabacloud-eventbridge`` 1.3.8 sends as ``x-eventbridge-version``."""
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "aliyuneventbusname")
"""Attributes the putEvents API page marks required."""

_AUTH = re.compile(r"^acs[ :](?P<id>[^\s:]+):(?P<signature>\S+)$")
_Reply = tuple[int, dict[str, Any]]


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


def _error(status: int, code: str, message: str) -> _Reply:
    return status, {"requestId": str(uuid.uuid4()), "code": code, "message": message}


def _valid_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


class LocalAlibabaEventBridge:
    """In-process Alibaba EventBridge-compatible endpoint (see the module docstring)."""

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
            max_event_bytes: Largest event, by :func:`bridge.sink.alibaba.event_size`.
            max_request_bytes: Largest sum of event sizes in one call.
            api_versions: Accepted ``x-eventbridge-version`` values.
            seed: Seed of the random generator used for fault injection.
            faults: Initial faults (none by default).
            verbose: Log each HTTP request to stderr.
        """
        self._address = (host, port)
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.max_request_bytes = max_request_bytes
        self.api_versions = frozenset(api_versions)
        self.verbose = verbose
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._received: list[ReceivedEvent] = []
        self._calls: list[CallRecord] = []
        self._violations: list[str] = []
        self._failed: Counter[str] = Counter()
        self._call_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(address={self._address!r}, access_key_id={self.access_key_id!r})"

    def start(self) -> LocalAlibabaEventBridge:
        """Start serving in a daemon thread; returns self."""
        if self._server is None:
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"local-alibaba-eventbridge-{self._server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and join the server's threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections(timeout=5.0)
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None

    def __enter__(self) -> LocalAlibabaEventBridge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("LocalAlibabaEventBridge is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[ReceivedEvent]:
        """Events answered with an EventId, in order."""
        with self._lock:
            return list(self._received)

    def calls(self) -> list[CallRecord]:
        """Log of calls (``size`` = sum of event sizes; status 0 = connection dropped)."""
        with self._lock:
            return list(self._calls)

    @property
    def violations(self) -> list[str]:
        """Every request-limit violation seen, with its reason."""
        with self._lock:
            return list(self._violations)

    @property
    def faults(self) -> Faults:
        """The faults currently injected."""
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults | None = None, **kwargs: Any) -> None:
        """Replace the injected faults with ``faults``, or with ``Faults(**kwargs)``."""
        new = faults if faults is not None else Faults(**kwargs)
        with self._lock:
            self._faults = new

    def reset(self) -> None:
        """Clear recordings, violations and counters, and reseed the generator."""
        with self._lock:
            self._received.clear()
            self._calls.clear()
            self._violations.clear()
            self._failed.clear()
            self._call_count = 0
            self._rng = random.Random(self._seed)

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
    ) -> _Reply | None:
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
        reply: _Reply | None
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
    ) -> tuple[_Reply | None, list[dict[str, Any]]]:
        """Signature, content type, version, digest and body shape: (error or None, events)."""
        reply, events = self._check_headers(path, headers, body), []
        if reply is None:
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                return _error(400, "MalformedJSON", f"invalid JSON: {exc}"), []
            if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
                return _error(400, "MalformedJSON", "body must be a JSON array of objects"), []
            events = parsed
        return reply, events

    def _check_headers(self, path: str, headers: Mapping[str, str], body: bytes) -> _Reply | None:
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

    def _check_limits(self, call: int, events: list[dict[str, Any]], size: int) -> _Reply | None:
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
    ) -> tuple[_Reply, int]:
        with self._lock:
            if faults.call_error_rate and self._rng.random() < faults.call_error_rate:
                code = faults.call_error_code
                status = faults.call_error_status or default_status(code)
                return _error(status, code, "Injected call failure"), 0
            results: list[dict[str, str]] = []
            for event in events:
                error = self._event_error(event, faults)
                if error is None:
                    event_id, trace_id = str(uuid.uuid4()), uuid.uuid4().hex
                    self._received.append(ReceivedEvent(event_id, trace_id, call, event))
                    results.append({"EventId": event_id, "TraceId": trace_id})
                else:
                    self._failed[error[0]] += 1
                    results.append({"ErrorCode": error[0], "ErrorMessage": error[1]})
        failed = sum("ErrorCode" in r for r in results)
        request_id = str(uuid.uuid4())
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
        for substring, code in faults.fail_if_detail_contains.items():
            if substring in data:
                return code, f"Injected failure (data contains {substring!r})"
        if faults.per_entry_failures:
            draw, cumulative = self._rng.random(), 0.0
            for code, probability in faults.per_entry_failures.items():
                cumulative += probability
                if draw < cumulative:
                    return code, "Injected failure"
        return None

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        route = path.split("?", 1)[0].removeprefix(ADMIN_PREFIX).strip("/")
        if method == "GET" and route in ("received", "calls"):
            items = self.received() if route == "received" else self.calls()
            return 200, [asdict(item) for item in items]
        if method == "GET" and route == "stats":
            return 200, self.stats()
        if method == "GET" and route == "violations":
            return 200, self.violations
        if method == "GET" and route == "faults":
            return 200, asdict(self.faults)
        if method == "GET" and route == "health":
            return 200, {"ok": True}
        if method == "POST" and route == "faults":
            try:
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("faults must be a JSON object")
                self.set_faults(Faults.from_dict(data))
            except ValueError as exc:
                return 400, {"error": str(exc)}
            return 200, asdict(self.faults)
        if method == "POST" and route == "reset":
            self.reset()
            return 200, {"ok": True}
        return 404, {"error": f"no admin route {method} {path}"}


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop()`` can close them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], bridge: LocalAlibabaEventBridge) -> None:
        self.bridge = bridge
        self._connections: dict[Any, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Shut down open (keep-alive) connections and join their handler threads."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        bridge = self.server.bridge
        if self.path.startswith(ADMIN_PREFIX):
            status, payload = bridge._admin(method, self.path, body)
            self._send(status, payload)
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

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        request_id = payload.get("RequestId") or payload.get("requestId") or str(uuid.uuid4())
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-eventbridge-request-id", str(request_id))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.bridge.verbose:
            super().log_message(format, *args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; prints its URL when ready.

    The AccessKey pair comes from ``--access-key-id`` / ``ALIBABA_CLOUD_ACCESS_KEY_ID`` and
    ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (defaults ``local`` / ``local-secret``).
    """
    parser = argparse.ArgumentParser(prog="python -m bridge.local.alibaba_endpoint")
    for flag, kind, default in [
        ("--host", str, "127.0.0.1"),
        ("--port", int, 4011),
        ("--access-key-id", str, os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "local")),
        ("--max-events", int, 16),
        ("--max-event-bytes", int, 65536),
        ("--max-request-bytes", int, 262144),
        ("--seed", int, 0),
        ("--latency-ms", float, 0.0),
        ("--latency-jitter-ms", float, 0.0),
        ("--throttle-rate", float, 0.0),  # per-event TooManyRequests probability
        ("--internal-error-rate", float, 0.0),  # per-event InternalError probability
        ("--call-error-rate", float, 0.0),
        ("--call-error-code", str, "InternalError"),
        ("--call-error-status", int, None),
        ("--faults-json", str, None),  # a whole Faults object as JSON (overrides the above)
    ]:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    rates = {"TooManyRequests": args.throttle_rate, "InternalError": args.internal_error_rate}
    faults = Faults(
        per_entry_failures={code: rate for code, rate in rates.items() if rate > 0},
        call_error_rate=args.call_error_rate,
        call_error_code=args.call_error_code,
        call_error_status=args.call_error_status,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
    )
    if args.faults_json:
        faults = Faults.from_dict(json.loads(args.faults_json))
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
    with endpoint:
        print(endpoint.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
