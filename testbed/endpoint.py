"""EventBridge-compatible local HTTP endpoint for tests and the local demo.

A real HTTP/1.1 server speaking the AWS JSON 1.1 protocol that the boto3 ``events``
client can use through ``endpoint_url``. It implements ``PutEvents`` and ``PutPartnerEvents``
(with AWS's request limits and per-entry validation) and ``DescribeEventBus``, records what it
accepted (and the signature scheme of each call: SigV4 or SigV4a), and
injects faults (per-entry failures, whole-call errors, latency, outages) that can be changed
at runtime from Python or over the admin HTTP API under ``/_admin/``. Signatures are not
checked (the access key id of each call is recorded). Only the standard library and orjson are
used.

An account quota (``quota_entries_per_second``, the admin route ``/_admin/quota``, the flag
``--quota-entries-per-second``) is a token bucket of entries per second shared by every
connection and every client of the endpoint: entries above it are answered with a per-entry
``ThrottlingException`` inside an HTTP 200, as AWS does when an account's PutEvents quota is
exceeded. It is checked after the injected per-entry faults, so throttling "X% of entries at
random whatever the rate" (``per_entry_failures={"ThrottlingException": X}``, ``--throttle-rate``)
and a quota can be combined; entries throttled at random do not use the quota.

Faults that lose the answer of a call the endpoint has processed (the events are accepted, the
client cannot know it): ``slow_rate``/``slow_ms`` answer later than a client's read timeout, and
``reset_rate`` resets the connection after part of the answer's body. They are what makes an
at-least-once client send an event twice; :meth:`LocalEventBridge.calls` names them (``fault``).

Run standalone with ``python -m testbed.endpoint --port 4010``; it prints its URL on
one line once it is ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

__all__ = [
    "ACCOUNT_ID",
    "ADMIN_PREFIX",
    "JSON_CONTENT_TYPE",
    "REGION",
    "TARGET_PREFIX",
    "AccountQuota",
    "CallRecord",
    "Faults",
    "LocalEventBridge",
    "ReceivedEntry",
    "default_status",
    "entry_size",
    "main",
]

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "AWSEvents."
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
TIME_SIZE = 14


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


def default_status(code: str) -> int:
    """HTTP status of an injected call error when ``Faults.call_error_status`` is None."""
    if code == "ServiceUnavailable":
        return 503
    return 400 if "Throttl" in code or "LimitExceeded" in code else 500


@dataclass(frozen=True)
class ReceivedEntry:
    """An entry that was answered with an EventId."""

    event_id: str
    call: int
    entry: dict[str, Any]


class AccountQuota:
    """An account's PutEvents quota: a token bucket of entries. Pure: the clock is passed in.

    Args:
        entries_per_second: The refill rate.
        burst: The most entries the bucket holds (default: a tenth of a second's worth, and at
            least one call of 10 entries). It starts full.

    Raises:
        ValueError: A rate or burst that is not positive.
    """

    def __init__(self, entries_per_second: float, burst: float | None = None) -> None:
        if not entries_per_second > 0:
            raise ValueError(f"quota must be > 0 entries/s, got {entries_per_second}")
        burst = max(10.0, entries_per_second / 10) if burst is None else burst
        if not burst >= 1:
            raise ValueError(f"quota burst must be >= 1 entry, got {burst}")
        self.entries_per_second = float(entries_per_second)
        self.burst = float(burst)
        self._tokens = self.burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Whether one entry at ``now`` (seconds, monotonic) is within the quota."""
        if self._at is not None:
            elapsed = max(0.0, now - self._at)
            self._tokens = min(self.burst, self._tokens + elapsed * self.entries_per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def as_dict(self) -> dict[str, float]:
        """The settings, as the admin API shows them."""
        return {"entries_per_second": self.entries_per_second, "burst": self.burst}


PUT_OPERATIONS = frozenset({"PutEvents", "PutPartnerEvents"})
PARTNER_FIELDS = frozenset({"Time", "Source", "Resources", "DetailType", "Detail"})


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"__type": code, "message": message}


def _access_key_id(authorization: str) -> str:
    """``AKID`` of ``... Credential=AKID/20240101/us-east-1/events/aws4_request, ...``."""
    _, found, rest = authorization.partition("Credential=")
    return rest.split("/", 1)[0] if found else ""


class LocalEventBridge(LocalEndpoint[ReceivedEntry]):
    """In-process EventBridge-compatible endpoint (see the module docstring)."""

    thread_name = "local-eventbridge"

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
        quota_entries_per_second: float | None = None,
        quota_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
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
            quota_entries_per_second: An account quota shared by every client (None: none).
            quota_burst: Its bucket size (see :class:`AccountQuota`).
            clock: The quota's clock (tests pass a fake one).
        """
        super().__init__(host, port, seed=seed, faults=faults, verbose=verbose)
        self._clock = clock
        self._quota: AccountQuota | None = None
        self._quota_throttled = 0
        if quota_entries_per_second is not None:
            self.set_quota(quota_entries_per_second, quota_burst)
        self.max_entries = max_entries
        self.max_partner_entries = max_partner_entries
        self.max_request_bytes = max_request_bytes
        self.buses = frozenset(buses) | {"default"}

    def _make_server(self, address: tuple[str, int]) -> _Server:
        return _Server(address, self)

    @property
    def quota(self) -> AccountQuota | None:
        """The account quota in force (None: none)."""
        with self._lock:
            return self._quota

    def set_quota(self, entries_per_second: float | None, burst: float | None = None) -> None:
        """Emulate an account quota of ``entries_per_second`` (None: remove it); starts full.

        Raises:
            ValueError: A rate or burst that is not positive.
        """
        quota = None if entries_per_second is None else AccountQuota(entries_per_second, burst)
        with self._lock:
            self._quota = quota

    def reset(self) -> None:
        """Clear recordings and counters (:meth:`LocalEndpoint.reset`); refill the quota."""
        super().reset()
        with self._lock:
            self._quota_throttled = 0
            if self._quota is not None:
                self._quota = AccountQuota(self._quota.entries_per_second, self._quota.burst)

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """The common admin routes, plus ``GET``/``POST /_admin/quota``.

        ``POST {"entries_per_second": 2400, "burst": 240}`` sets a quota,
        ``{"entries_per_second": null}`` removes it; both answer the quota in force.
        """
        route = path.split("?", 1)[0].removeprefix(ADMIN_PREFIX).strip("/")
        if route != "quota" or method not in ("GET", "POST"):
            return super()._admin(method, path, body)
        if method == "POST":
            try:
                data = json.loads(body or b"{}")
                if not isinstance(data, dict) or set(data) - {"entries_per_second", "burst"}:
                    raise ValueError("quota takes an object with entries_per_second and burst")
                rate, burst = data.get("entries_per_second"), data.get("burst")
                for value in (rate, burst):
                    if value is not None and (
                        isinstance(value, bool) or not isinstance(value, int | float)
                    ):
                        raise ValueError(f"quota values must be numbers, got {value!r}")
                self.set_quota(rate, burst)
            except ValueError as exc:
                return 400, {"error": str(exc)}
        quota = self.quota
        return 200, {"entries_per_second": None} if quota is None else quota.as_dict()

    def stats(self) -> dict[str, Any]:
        """Counts of calls, entries received/failed (by code) and violations."""
        with self._lock:
            return {
                "calls": len(self._calls),
                "put_events_calls": sum(c.operation == "PutEvents" for c in self._calls),
                "entries_received": len(self._received),
                "entries_failed": dict(self._failed),
                "violations": len(self._violations),
                "quota_throttled": self._quota_throttled,
                "status_counts": dict(Counter(str(c.status) for c in self._calls)),
            }

    # -- request handling -------------------------------------------------------------

    def _dispatch(self, target: str, body: bytes, authorization: str = "") -> Reply | None:
        """Answer one AWS call; None means drop the connection without answering."""
        return self._serve(target, body, authorization)[0]

    def _serve(
        self, target: str, body: bytes, authorization: str = ""
    ) -> tuple[Reply | None, str | None, float]:
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
            request = load_json(body or b"{}")
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

        reply: Reply | None
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
    ) -> tuple[Reply, int, bool]:
        """The answer, how many entries failed, and whether an injected call failure hit."""
        if violation is not None:
            return _error(400, "ValidationException", violation), 0, False
        with self._lock:
            call_error = self._injected_call_error(faults)
            if call_error is not None:
                return _error(*call_error, "Injected call failure"), 0, True
            results: list[dict[str, str]] = []
            quota, now = self._quota, self._clock()
            for entry in entries:
                error = self._entry_error(entry, faults)
                if error is None and quota is not None and not quota.take(now):
                    self._quota_throttled += 1
                    error = ("ThrottlingException", "Rate exceeded")
                source = str(entry.get("Source") or "")
                partner = operation == "PutPartnerEvents"
                if error is None and partner and not source.startswith("aws.partner/"):
                    error = ("InvalidArgument", f"{source!r} is not a partner event source")
                if error is None:
                    event_id = random_uuid()
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
            if not isinstance(load_json(detail), dict):
                return "MalformedDetail", "Detail is malformed: not a JSON object."
        except ValueError:
            return "MalformedDetail", "Detail is malformed."
        return self._injected_entry_error(detail, faults, "Detail")

    def _default_status(self, code: str) -> int:
        return default_status(code)


class _Server(EndpointServer):
    """An :class:`EndpointServer` that can also close a connection with a TCP reset."""

    bridge: LocalEventBridge

    def __init__(self, address: tuple[str, int], bridge: LocalEventBridge) -> None:
        self.to_reset: set[Any] = set()  # connections to close with a TCP RST, not a FIN
        super().__init__(address, bridge, _Handler)

    def shutdown_request(self, request: Any) -> None:
        if request in self.to_reset:
            self.to_reset.discard(request)
            # SO_LINGER 0 and no shutdown(): close() sends RST, the peer sees a reset mid-body.
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
            return
        super().shutdown_request(request)


class _Handler(EndpointHandler):
    server: _Server

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:  # the connection broke mid-request (stop()): nothing to answer
            self.close_connection = True
            return
        bridge = self.server.bridge
        if self.path.startswith(ADMIN_PREFIX):
            status, payload = bridge._admin(method, self.path, body)
            self._send(status, json.dumps(payload).encode("utf-8"), "application/json")
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
                self._send_part_then_reset(reply[0], dump_json(reply[1]))
                return
            self._send(reply[0], dump_json(reply[1]), JSON_CONTENT_TYPE)
        else:
            self._send(404, json.dumps({"error": "not found"}).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str, *, cut: bool = False) -> None:
        """Send an answer of JSON text ``data``, in one write; ``cut``: half of the body only."""
        head = self.answer_head(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(data))),
                ("x-amzn-RequestId", random_uuid()),
            ],
        )
        self.wfile.write(head + (data[: len(data) // 2] if cut else data))

    def _send_part_then_reset(self, status: int, data: bytes) -> None:
        """Headers and half of the body, then a TCP reset: the answer is lost mid-response."""
        self._send(status, data, JSON_CONTENT_TYPE, cut=True)
        self.wfile.flush()
        # Let the client read the headers and start on the body: a reset arriving first would
        # make its kernel drop the unread answer (a connection error, not one mid-response).
        time.sleep(0.05)
        self.close_connection = True
        self.server.to_reset.add(self.request)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; prints its URL when ready."""
    parser = argparse.ArgumentParser(prog="python -m testbed.endpoint")
    add_common_arguments(parser, port=4010, call_error_code="InternalException")
    for flag, kind, default in [
        ("--max-entries", int, 10),
        ("--max-request-bytes", int, 262144),
        ("--throttle-rate", float, 0.0),  # per-entry ThrottlingException probability
        ("--internal-failure-rate", float, 0.0),  # per-entry InternalFailure probability
        ("--quota-entries-per-second", float, None),  # an account quota shared by all clients
        ("--quota-burst", float, None),  # its bucket size (default: 0.1 s worth, >= 10)
    ]:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--bus", action="append", default=[], help="extra known event bus")
    args = parser.parse_args(argv)
    rates = {"ThrottlingException": args.throttle_rate}
    rates["InternalFailure"] = args.internal_failure_rate
    faults = faults_from_arguments(args, rates)
    endpoint = LocalEventBridge(
        args.host,
        args.port,
        max_entries=args.max_entries,
        max_request_bytes=args.max_request_bytes,
        buses=args.bus,
        seed=args.seed,
        faults=faults,
        verbose=args.verbose,
        quota_entries_per_second=args.quota_entries_per_second,
        quota_burst=args.quota_burst,
    )
    return serve_until_signalled(endpoint)


if __name__ == "__main__":
    sys.exit(main())
