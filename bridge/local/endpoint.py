"""EventBridge-compatible local HTTP endpoint for tests and the local demo.

A real HTTP/1.1 server speaking the AWS JSON 1.1 protocol that the boto3 ``events``
client can use through ``endpoint_url``. It implements ``PutEvents`` and ``PutPartnerEvents``
(with AWS's request limits and per-entry validation) and ``DescribeEventBus``, records what it
accepted (and the signature scheme of each call: SigV4 or SigV4a), and
injects faults (per-entry failures, whole-call errors, latency, outages) that can be changed
at runtime from Python or over the admin HTTP API under ``/_admin/``. Signatures are not
checked (the access key id of each call is recorded). Only the standard library is used.

Faults that lose the answer of a call the endpoint has processed (the events are accepted, the
client cannot know it): ``slow_rate``/``slow_ms`` answer later than a client's read timeout, and
``reset_rate`` resets the connection after part of the answer's body. They are what makes an
at-least-once client send an event twice; :meth:`LocalEventBridge.calls` names them (``fault``).

Run standalone with ``python -m bridge.local.endpoint --port 4010``; it prints its URL on
one line once it is ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "AWSEvents."
ADMIN_PREFIX = "/_admin/"
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
TIME_SIZE = 14

_Reply = tuple[int, dict[str, Any]]


def entry_size(entry: Mapping[str, Any]) -> int:
    """Size of one PutEvents entry by AWS's documented formula.

    Args:
        entry: A request entry (``Source``, ``DetailType``, ``Detail``, ``Time``, ...).

    Returns:
        14 if ``Time`` is present, plus the UTF-8 byte lengths of ``Source``,
        ``DetailType``, ``Detail`` and each ``Resources`` item. ``EventBusName`` and
        ``TraceHeader`` are not counted.
    """
    size = TIME_SIZE if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        value = entry.get(key)
        if isinstance(value, str):
            size += len(value.encode("utf-8"))
    for resource in entry.get("Resources") or ():
        if isinstance(resource, str):
            size += len(resource.encode("utf-8"))
    return size


def _default_status(code: str) -> int:
    if code == "ServiceUnavailable":
        return 503
    return 400 if "Throttl" in code or "LimitExceeded" in code else 500


@dataclass
class Faults:
    """Faults to inject; the defaults inject nothing.

    Attributes:
        per_entry_failures: Error code -> probability that an entry fails with it (each entry
            drawn independently; probabilities must sum to at most 1).
        fail_if_detail_contains: Substring -> error code; an entry whose Detail contains the
            substring always fails with that code.
        call_error_rate: Probability that a whole PutEvents call fails.
        call_error_code: Error code of a failed call.
        call_error_status: HTTP status of a failed call; None picks 400 for throttling codes,
            503 for ServiceUnavailable, else 500.
        latency_ms: Delay before answering any AWS call.
        latency_jitter_ms: Extra uniformly random delay in [0, latency_jitter_ms].
        outage: Whether the endpoint is "down".
        outage_mode: "close" drops the connection without answering; "503" answers
            503 ServiceUnavailable.
        slow_rate: Probability that a PutEvents/PutPartnerEvents call is processed (its entries
            accepted) and then answered only after ``slow_ms`` (past a client's read timeout,
            the client gives up on an answer that says the events were delivered).
        slow_ms: How late a slow call is answered.
        reset_rate: Probability that a PutEvents/PutPartnerEvents call is processed and the
            connection then reset (TCP RST) after the headers and part of the body were sent.
    """

    per_entry_failures: dict[str, float] = field(default_factory=dict)
    fail_if_detail_contains: dict[str, str] = field(default_factory=dict)
    call_error_rate: float = 0.0
    call_error_code: str = "InternalException"
    call_error_status: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    outage: bool = False
    outage_mode: str = "close"
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    reset_rate: float = 0.0

    def __post_init__(self) -> None:
        self.per_entry_failures = {str(k): float(v) for k, v in self.per_entry_failures.items()}
        self.fail_if_detail_contains = {
            str(k): str(v) for k, v in self.fail_if_detail_contains.items()
        }
        rates = [*self.per_entry_failures.values(), self.call_error_rate]
        rates += [self.slow_rate, self.reset_rate]
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(self.per_entry_failures.values()) > 1:
            raise ValueError("failure probabilities must be in [0, 1] and sum to at most 1")
        if self.slow_rate + self.reset_rate > 1:
            raise ValueError("slow_rate + reset_rate must be at most 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.slow_ms < 0:
            raise ValueError("latency must not be negative")
        if self.outage_mode not in ("close", "503"):
            raise ValueError("outage_mode must be 'close' or '503'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build from a JSON-style mapping, rejecting unknown keys.

        Raises:
            ValueError: On unknown keys or invalid values.
        """
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"invalid faults: {exc}") from exc


@dataclass(frozen=True)
class ReceivedEntry:
    """An entry that was answered with an EventId."""

    event_id: str
    call: int
    entry: dict[str, Any]


@dataclass(frozen=True)
class CallRecord:
    """One AWS API call; ``status`` 0 means the connection was dropped (outage)."""

    call: int
    operation: str
    entries: int
    size: int
    status: int
    time: float
    error_code: str | None = None
    failed_entries: int = 0
    signature: str = ""
    """The Authorization scheme: AWS4-HMAC-SHA256 (SigV4) or AWS4-ECDSA-P256-SHA256 (SigV4a)."""
    endpoint_id: str | None = None
    fault: str | None = None
    """The injected fault that shaped this call: ``outage``, ``call_error``, ``slow`` (answered
    after ``slow_ms``) or ``reset`` (connection reset mid-answer); None: answered normally."""
    access_key_id: str = ""
    """The access key id the request was signed with (from its Authorization header)."""


PUT_OPERATIONS = frozenset({"PutEvents", "PutPartnerEvents"})
PARTNER_FIELDS = frozenset({"Time", "Source", "Resources", "DetailType", "Detail"})


def _error(status: int, code: str, message: str) -> _Reply:
    return status, {"__type": code, "message": message}


def _access_key_id(authorization: str) -> str:
    """``AKID`` of ``... Credential=AKID/20240101/us-east-1/events/aws4_request, ...``."""
    _, found, rest = authorization.partition("Credential=")
    return rest.split("/", 1)[0] if found else ""


class LocalEventBridge:
    """In-process EventBridge-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_entries: int = 10,
        max_partner_entries: int = 20,
        max_request_bytes: int = 262144,
        buses: Iterable[str] = ("default",),
        seed: int = 0,
        faults: Faults | None = None,
        verbose: bool = False,
    ) -> None:
        """Configure the endpoint; call ``start()`` (or use ``with``) to serve.

        Args:
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            max_entries: Most entries allowed per PutEvents call.
            max_partner_entries: Most entries allowed per PutPartnerEvents call.
            max_request_bytes: Largest request size (by ``entry_size``) allowed.
            buses: Known event bus names, in addition to "default".
            seed: Seed of the random generator used for fault injection.
            faults: Initial faults (none by default).
            verbose: Log each HTTP request to stderr.
        """
        self._address = (host, port)
        self.max_entries = max_entries
        self.max_partner_entries = max_partner_entries
        self.max_request_bytes = max_request_bytes
        self.buses = frozenset(buses) | {"default"}
        self.verbose = verbose
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._received: list[ReceivedEntry] = []
        self._calls: list[CallRecord] = []
        self._violations: list[str] = []
        self._failed: Counter[str] = Counter()
        self._call_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalEventBridge:
        """Start serving in a daemon thread; returns self."""
        if self._server is None:
            self._server = _Server(self._address, self)
            # A stop() then start() serves on the same port again (an endpoint "down" for a
            # while: connections refused, then back where the clients expect it).
            host, port = self._server.server_address[:2]
            self._address = (str(host), int(port))
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"local-eventbridge-{self._server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and join the server's threads.

        Recordings are kept, and a later :meth:`start` serves on the same port.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections(timeout=5.0)
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None

    def __enter__(self) -> LocalEventBridge:
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
            raise RuntimeError("LocalEventBridge is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[ReceivedEntry]:
        """Entries answered with an EventId, in order."""
        with self._lock:
            return list(self._received)

    def calls(self) -> list[CallRecord]:
        """Log of AWS API calls, in order."""
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
        """Counts of calls, entries received/failed (by code) and violations."""
        with self._lock:
            return {
                "calls": len(self._calls),
                "put_events_calls": sum(c.operation == "PutEvents" for c in self._calls),
                "entries_received": len(self._received),
                "entries_failed": dict(self._failed),
                "violations": len(self._violations),
                "status_counts": dict(Counter(str(c.status) for c in self._calls)),
            }

    # -- request handling -------------------------------------------------------------

    def _dispatch(self, target: str, body: bytes, authorization: str = "") -> _Reply | None:
        """Answer one AWS call; None means drop the connection without answering."""
        return self._serve(target, body, authorization)[0]

    def _serve(
        self, target: str, body: bytes, authorization: str = ""
    ) -> tuple[_Reply | None, str | None, float]:
        """Answer one AWS call: ``(reply or None to drop, fault, seconds to wait first)``.

        The fault is None, or ``slow`` (answer after the returned delay) or ``reset`` (reset
        the connection mid-answer), both for calls whose entries were processed.
        """
        operation = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else ""
        with self._lock:
            self._call_count += 1
            call = self._call_count
            faults = self._faults
            jitter = self._rng.uniform(0, faults.latency_jitter_ms)
            lose_answer = faults.slow_rate + faults.reset_rate
            draw = self._rng.random() if lose_answer else 1.0
        try:
            request = json.loads(body or b"{}")
            parse_error = None if isinstance(request, dict) else "request body must be an object"
        except ValueError as exc:
            request, parse_error = {}, f"invalid JSON: {exc}"
        entries = request.get("Entries") if isinstance(request, dict) else None
        entries = entries if isinstance(entries, list) else []
        valid = all(isinstance(e, dict) for e in entries)
        size = sum(entry_size(e) for e in entries) if valid else 0
        violation = None
        if operation in PUT_OPERATIONS and parse_error is None:
            most = self.max_entries if operation == "PutEvents" else self.max_partner_entries
            extra = (
                sorted({k for e in entries if isinstance(e, dict) for k in e} - PARTNER_FIELDS)
                if operation == "PutPartnerEvents"
                else []
            )
            if not 1 <= len(entries) <= most:
                violation = f"call {call}: {len(entries)} entries (allowed 1..{most})"
            elif extra:
                violation = f"call {call}: PutPartnerEvents entries have no field {extra}"
            elif size > self.max_request_bytes:
                violation = f"call {call}: request size {size} > {self.max_request_bytes} bytes"
            if violation:
                with self._lock:
                    self._violations.append(violation)
        if faults.latency_ms or jitter:
            time.sleep((faults.latency_ms + jitter) / 1000.0)

        reply: _Reply | None
        failed = 0
        fault: str | None = None
        delay = 0.0
        if faults.outage:
            reply = _error(503, "ServiceUnavailable", "Injected outage")
            reply = reply if faults.outage_mode == "503" else None
            fault = "outage"
        elif parse_error is not None or not valid:
            reply = _error(400, "SerializationException", parse_error or "entries must be objects")
        elif operation in PUT_OPERATIONS:
            reply, failed, call_failed = self._put_events(
                call, entries, violation, faults, operation
            )
            if call_failed:
                fault = "call_error"
            elif reply[0] == 200 and draw < faults.slow_rate:
                fault, delay = "slow", faults.slow_ms / 1000.0
            elif reply[0] == 200 and draw < faults.slow_rate + faults.reset_rate:
                fault = "reset"
        elif operation == "DescribeEventBus":
            name = str(request.get("Name") or "default")
            if name in self.buses:
                arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}"
                reply = 200, {"Name": name, "Arn": arn}
            else:
                reply = _error(400, "ResourceNotFoundException", f"No event bus {name}.")
        else:
            reply = _error(400, "UnknownOperationException", f"Unknown operation {target!r}")
        status, payload = reply if reply is not None else (0, {})
        record = CallRecord(
            call=call,
            operation=operation or target,
            entries=len(entries),
            size=size,
            status=status,
            time=time.time(),
            error_code=payload.get("__type"),
            failed_entries=failed,
            signature=authorization.split(" ", 1)[0],
            endpoint_id=request.get("EndpointId") if isinstance(request, dict) else None,
            fault=fault,
            access_key_id=_access_key_id(authorization),
        )
        with self._lock:
            self._calls.append(record)
        return reply, fault, delay

    def _put_events(
        self,
        call: int,
        entries: list[dict[str, Any]],
        violation: str | None,
        faults: Faults,
        operation: str = "PutEvents",
    ) -> tuple[_Reply, int, bool]:
        """The answer, how many entries failed, and whether an injected call failure hit."""
        if violation is not None:
            return _error(400, "ValidationException", violation), 0, False
        with self._lock:
            if faults.call_error_rate and self._rng.random() < faults.call_error_rate:
                code = faults.call_error_code
                status = faults.call_error_status or _default_status(code)
                return _error(status, code, "Injected call failure"), 0, True
            results: list[dict[str, str]] = []
            for entry in entries:
                error = self._entry_error(entry, faults)
                source = str(entry.get("Source") or "")
                partner = operation == "PutPartnerEvents"
                if error is None and partner and not source.startswith("aws.partner/"):
                    error = ("InvalidArgument", f"{source!r} is not a partner event source")
                if error is None:
                    event_id = str(uuid.uuid4())
                    self._received.append(ReceivedEntry(event_id, call, entry))
                    results.append({"EventId": event_id})
                else:
                    self._failed[error[0]] += 1
                    results.append({"ErrorCode": error[0], "ErrorMessage": error[1]})
        failed = sum("ErrorCode" in r for r in results)
        return (200, {"FailedEntryCount": failed, "Entries": results}), failed, False

    def _entry_error(self, entry: Mapping[str, Any], faults: Faults) -> tuple[str, str] | None:
        """Per-entry error (code, message) or None; call with the lock held."""
        for key in ("Source", "DetailType", "Detail"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                return "InvalidArgument", f"Parameter {key} is not valid. Reason: {key} is missing."
        detail: str = entry["Detail"]
        try:
            if not isinstance(json.loads(detail), dict):
                return "MalformedDetail", "Detail is malformed: not a JSON object."
        except ValueError:
            return "MalformedDetail", "Detail is malformed."
        for substring, code in faults.fail_if_detail_contains.items():
            if substring in detail:
                return code, f"Injected failure (Detail contains {substring!r})"
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

    def __init__(self, address: tuple[str, int], bridge: LocalEventBridge) -> None:
        self.bridge = bridge
        self._connections: dict[Any, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self.to_reset: set[Any] = set()  # connections to close with a TCP RST, not a FIN
        super().__init__(address, _Handler)

    def shutdown_request(self, request: Any) -> None:
        if request in self.to_reset:
            self.to_reset.discard(request)
            # SO_LINGER 0 and no shutdown(): close() sends RST, the peer sees a reset mid-body.
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
            return
        super().shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
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
    # Headers and body go out in two writes: without TCP_NODELAY each answer waits ~40 ms for
    # the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:  # the connection broke mid-request (stop()): nothing to answer
            self.close_connection = True
            return
        bridge = self.server.bridge
        if self.path.startswith(ADMIN_PREFIX):
            status, payload = bridge._admin(method, self.path, body)
            self._send(status, payload, "application/json")
        elif method == "POST":
            fault: str | None = None
            delay = 0.0
            try:
                reply, fault, delay = bridge._serve(
                    self.headers.get("X-Amz-Target", ""),
                    body,
                    self.headers.get("Authorization", ""),
                )
            except Exception as exc:  # a bug here must not look like an outage
                reply = _error(500, "InternalFailure", f"endpoint error: {exc!r}")
            if reply is None:
                self.close_connection = True  # outage: drop the connection unanswered
                return
            if delay:
                time.sleep(delay)  # processed already: a client that gave up lost the answer
            if fault == "reset":
                self._send_part_then_reset(reply[0], reply[1])
                return
            self._send(reply[0], reply[1], JSON_CONTENT_TYPE)
        else:
            self._send(404, {"error": "not found"}, "application/json")

    def _send(self, status: int, payload: Any, content_type: str) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _send_part_then_reset(self, status: int, payload: Any) -> None:
        """Headers and half of the body, then a TCP reset: the answer is lost mid-response."""
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        # Let the client read the headers and start on the body: a reset arriving first would
        # make its kernel drop the unread answer (a connection error, not one mid-response).
        time.sleep(0.05)
        self.close_connection = True
        self.server.to_reset.add(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.bridge.verbose:
            super().log_message(format, *args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; prints its URL when ready."""
    parser = argparse.ArgumentParser(prog="python -m bridge.local.endpoint")
    for flag, kind, default in [
        ("--host", str, "127.0.0.1"),
        ("--port", int, 4010),
        ("--max-entries", int, 10),
        ("--max-request-bytes", int, 262144),
        ("--seed", int, 0),
        ("--latency-ms", float, 0.0),
        ("--latency-jitter-ms", float, 0.0),
        ("--throttle-rate", float, 0.0),  # per-entry ThrottlingException probability
        ("--internal-failure-rate", float, 0.0),  # per-entry InternalFailure probability
        ("--call-error-rate", float, 0.0),
        ("--call-error-code", str, "InternalException"),
        ("--call-error-status", int, None),
        ("--faults-json", str, None),  # a whole Faults object as JSON (overrides the above)
    ]:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--bus", action="append", default=[], help="extra known event bus")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    rates = {"ThrottlingException": args.throttle_rate}
    rates["InternalFailure"] = args.internal_failure_rate
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
    endpoint = LocalEventBridge(
        args.host,
        args.port,
        max_entries=args.max_entries,
        max_request_bytes=args.max_request_bytes,
        buses=args.bus,
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
