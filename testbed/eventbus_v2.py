"""A local Custom Event Bus (API ``eventsv2``) speaking ``smithy-rpc-v2-cbor``, for tests.

boto3's own ``eventbridgev2`` client talks to it through ``endpoint_url``: ``POST
/service/AWSEventsV2/operation/<Op>`` with ``Content-Type: application/cbor`` and
``smithy-protocol: rpc-v2-cbor``, a CBOR body, a CBOR answer. It serves ``PutEvents``,
``PutRawEvents`` and ``DescribeEventBus`` and, like the bus:

- checks the request: the ARN against the model's pattern (``InvalidInputException``), the bus
  (``ResourceNotFoundException``; not ACTIVE: ``InvalidStateException``), 1-100 entries and the
  1 MiB of entries per request (``InvalidInputException``, nothing published), each entry
  (Source, DetailType, a Detail that is a JSON object; Data and ContentType for raw events;
  a schema registry for Avro and Protobuf);
- keeps a deduplication window: a ``DeduplicationId`` (or, with ``CONTENT_BASED``, a content
  hash) published within ``dedup_window_s`` is answered ``DEDUPLICATED`` with its first EventId;
- assigns ``SequenceNumber``s per event group, and records the publish order of every group
  (:meth:`LocalEventBusV2.group_order`, ``GET /_admin/groups``) so that tests compare it with
  Kafka offsets.

Faults are the classic endpoint's (:class:`~testbed.base.Faults`): per-entry failures,
whole-call errors (with the model's HTTP status for the code), latency, outages. Signatures are
not checked. Run standalone with ``python -m testbed.eventbus_v2 --port 4011``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from testbed.base import (
    ADMIN_PREFIX,
    CallRecord,
    EndpointHandler,
    EndpointServer,
    Faults,
    LocalEndpoint,
    add_common_arguments,
    faults_from_arguments,
    serve_until_signalled,
)
from testbed.server import load_json, random_uuid

__all__ = [
    "BUS_ARN",
    "CBOR_CONTENT_TYPE",
    "LocalEventBusV2",
    "ReceivedV2",
    "main",
    "v2_request_size",
]

CBOR_CONTENT_TYPE = "application/cbor"
OPERATION_PREFIX = "/service/AWSEventsV2/operation/"
BUS_ARN = "arn:aws:events:us-east-1:000000000000:event-busv2/local/abcdefghijklmnopqrstuvwxy"
"""The bus every local endpoint knows (ACTIVE)."""

_ARN = re.compile(
    r"^arn:aws(-[a-z0-9]+)*:events:[a-z][a-z0-9]*(-[a-z0-9]+)*:([0-9]{12}):event-busv2/"
    r"[A-Za-z0-9][.\-_A-Za-z0-9]{0,255}/[a-z0-9]{25}$"
)
_CONTENT_TYPES = frozenset(
    {"application/json", "application/avro", "application/protobuf", "application/octet-stream"}
)
_ERROR_STATUS = {
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ThrottlingException": 429,
    "InvalidInputException": 400,
    "InternalException": 500,
    "InvalidStateException": 409,
    "SchemaRegistryUnavailableException": 400,
}
"""HTTP status of each error shape of the eventbridgev2 model."""

Reply = tuple[int, dict[str, Any]]


def v2_request_size(operation: str, entries: Sequence[Mapping[str, Any]]) -> int:
    """The request's size as the bridge counts it (:func:`bridge.sink.busv2.v2_entry_size`):
    PutEvents: Time 14 bytes + UTF-8 bytes of Source, DetailType, Detail, each Resources item;
    PutRawEvents: the Data bytes + the UTF-8 bytes of Metadata keys and values; both: the
    UTF-8 bytes of the SystemMetadata values."""
    size = 0
    for entry in entries:
        if operation == "PutEvents":
            size += 14 if entry.get("Time") is not None else 0
            for key in ("Source", "DetailType", "Detail"):
                value = entry.get(key)
                size += len(value.encode()) if isinstance(value, str) else 0
            size += sum(len(str(r).encode()) for r in entry.get("Resources") or ())
        else:
            data = entry.get("Data")
            size += len(data) if isinstance(data, bytes | bytearray) else 0
            for key, value in (entry.get("Metadata") or {}).items():
                size += len(str(key).encode()) + len(str(value).encode())
        for value in (entry.get("SystemMetadata") or {}).values():
            size += len(str(value).encode())
    return size


@dataclass(frozen=True)
class ReceivedV2:
    """An entry answered ``PUBLISHED``."""

    event_id: str
    call: int
    operation: str
    group: str | None
    sequence_number: str | None
    deduplication_id: str | None
    entry: dict[str, Any]
    schema_registry: dict[str, Any] | None = None
    """The request's SchemaRegistryConfiguration (PutRawEvents)."""


def _error(code: str, message: str, status: int | None = None) -> Reply:
    return status or _ERROR_STATUS.get(code, 400), {"__type": code, "message": message}


class LocalEventBusV2(LocalEndpoint[ReceivedV2]):
    """In-process Custom Event Bus endpoint (see the module docstring).

    Args:
        host, port: Where to listen (port 0: a free one).
        buses: Bus ARN -> state (``ACTIVE``, ``CREATING``...); :data:`BUS_ARN` is ACTIVE unless
            given another state.
        max_entries, max_request_bytes: The request limits (100, 1 MiB).
        dedup_window_s: How long a published DeduplicationId is remembered.
        clock: Seconds, for the deduplication window (tests pass their own).
        seed, faults, verbose: As the classic endpoint's.
    """

    thread_name = "local-eventbus-v2"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        buses: Mapping[str, str] | None = None,
        max_entries: int = 100,
        max_request_bytes: int = 1024 * 1024,
        dedup_window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        faults: Faults | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(host, port, seed=seed, faults=faults, verbose=verbose)
        self.buses = {BUS_ARN: "ACTIVE", **(buses or {})}
        self.max_entries = max_entries
        self.max_request_bytes = max_request_bytes
        self.dedup_window_s = dedup_window_s
        self._clock = clock
        self._dedup: dict[tuple[str, str], tuple[float, str, str | None]] = {}
        """(bus, deduplication key) -> (published at, EventId, SequenceNumber)."""
        self._sequences: Counter[tuple[str, str]] = Counter()
        self._groups: dict[str, list[str]] = {}
        self._deduplicated = 0

    def _make_server(self, address: tuple[str, int]) -> EndpointServer:
        return EndpointServer(address, self, _Handler)

    def reset(self) -> None:
        """Clear recordings, the deduplication window, the sequences and the group orders."""
        super().reset()
        with self._lock:
            self._dedup.clear()
            self._sequences.clear()
            self._groups.clear()
            self._deduplicated = 0

    def stats(self) -> dict[str, Any]:
        """Counts of calls, entries published, deduplicated and failed (by code), violations."""
        with self._lock:
            return {
                "calls": len(self._calls),
                "entries_received": len(self._received),
                "entries_deduplicated": self._deduplicated,
                "entries_failed": dict(self._failed),
                "violations": len(self._violations),
                "status_counts": dict(Counter(str(c.status) for c in self._calls)),
            }

    def group_order(self) -> dict[str, list[str]]:
        """Per event group, the DeduplicationIds (else EventIds) in the order published."""
        with self._lock:
            return {group: list(ids) for group, ids in self._groups.items()}

    # -- request handling -------------------------------------------------------------

    def serve(self, operation: str, body: bytes, headers: Mapping[str, str]) -> Reply | None:
        """Answer one call; None means drop the connection without answering (outage)."""
        with self._lock:
            self._call_count += 1
            call = self._call_count
            faults = self._faults
            jitter = self._rng.uniform(0, faults.latency_jitter_ms)
        request: Any = {}
        problem = None
        if headers.get("smithy-protocol") != "rpc-v2-cbor":
            problem = "missing header smithy-protocol: rpc-v2-cbor"
        elif (headers.get("content-type") or "") != CBOR_CONTENT_TYPE and body:
            problem = f"Content-Type must be {CBOR_CONTENT_TYPE}"
        else:
            try:
                request = cbor2.loads(body) if body else {}
            except Exception as exc:  # cbor2 raises several types for bad input
                problem = f"invalid CBOR: {exc}"
        if not isinstance(request, dict):
            request, problem = {}, "request body must be a CBOR map"
        entries = request.get("Entries")
        entries = entries if isinstance(entries, list) else []
        entries = [e for e in entries if isinstance(e, dict)]
        size = v2_request_size(operation, entries)
        if faults.latency_ms or jitter:
            time.sleep((faults.latency_ms + jitter) / 1000.0)
        fault = None
        failed = 0
        reply: Reply | None
        if faults.outage:
            fault = "outage"
            reply = _error("InternalException", "Injected outage", 503)
            reply = reply if faults.outage_mode == "503" else None
        elif problem is not None:
            reply = _error("InvalidInputException", problem)
            self._violation(f"call {call}: {problem}")
        elif operation in ("PutEvents", "PutRawEvents"):
            reply, failed, fault = self._put(call, operation, request, entries, size, faults)
        elif operation == "DescribeEventBus":
            reply = self._describe(request)
        else:
            reply = _error("UnknownOperationException", f"unknown operation {operation!r}")
        status, payload = reply if reply is not None else (0, {})
        record = CallRecord(
            call=call,
            operation=operation,
            entries=len(entries),
            size=size,
            status=status,
            time=time.time(),
            error_code=payload.get("__type"),
            failed_entries=failed,
            signature=(headers.get("authorization") or "").split(" ", 1)[0],
            fault=fault,
        )
        with self._lock:
            self._calls.append(record)
        return reply

    def _violation(self, text: str) -> None:
        with self._lock:
            self._violations.append(text)

    def _bus_problem(self, arn: Any) -> Reply | None:
        if not isinstance(arn, str) or not _ARN.match(arn):
            return _error("InvalidInputException", f"EventBusArn {arn!r} is not a valid ARN")
        state = self.buses.get(arn)
        if state is None:
            return _error("ResourceNotFoundException", f"Event bus {arn} does not exist.")
        if state not in ("ACTIVE", "UPDATING", "UPDATE_FAILED"):
            return _error("InvalidStateException", f"Event bus {arn} is {state}.")
        return None

    def _describe(self, request: Mapping[str, Any]) -> Reply:
        arn = request.get("EventBusArn")
        if not isinstance(arn, str) or not _ARN.match(arn):
            return _error("InvalidInputException", f"EventBusArn {arn!r} is not a valid ARN")
        state = self.buses.get(arn)
        if state is None:
            return _error("ResourceNotFoundException", f"Event bus {arn} does not exist.")
        name = arn.rsplit("/", 2)[1]
        return 200, {"EventBusArn": arn, "Name": name, "State": state}

    def _put(
        self,
        call: int,
        operation: str,
        request: Mapping[str, Any],
        entries: list[dict[str, Any]],
        size: int,
        faults: Faults,
    ) -> tuple[Reply, int, str | None]:
        arn = request.get("EventBusArn")
        refused = self._bus_problem(arn)
        if refused is not None:
            return refused, 0, None
        count = len(request.get("Entries") or ())
        violation = None
        if not 1 <= count <= self.max_entries:
            violation = f"{count} entries (allowed 1..{self.max_entries})"
        elif size > self.max_request_bytes:
            violation = f"request size {size} > {self.max_request_bytes} bytes"
        if violation is not None:
            self._violation(f"call {call}: {violation}")
            return _error("InvalidInputException", violation), 0, None
        content_based = (request.get("DeduplicationConfiguration") or {}).get(
            "DeduplicationType"
        ) == "CONTENT_BASED"
        registry = request.get("SchemaRegistryConfiguration")
        with self._lock:
            call_error = self._injected_call_error(faults)
            if call_error is not None:
                status, code = call_error
                return _error(code, "Injected call failure", status), 0, "call_error"
            results = [
                self._one(call, operation, str(arn), e, content_based, registry, faults)
                for e in entries
            ]
        failed = sum("ErrorCode" in r for r in results)
        return (200, {"FailedEntryCount": failed, "Entries": results}), failed, None

    def _one(
        self,
        call: int,
        operation: str,
        bus: str,
        entry: dict[str, Any],
        content_based: bool,
        registry: Any,
        faults: Faults,
    ) -> dict[str, Any]:
        """One entry's result; the lock is held."""
        system = entry.get("SystemMetadata") or {}
        error = self._entry_error(operation, entry, system, registry)
        if error is None:
            text = entry.get("Detail") if operation == "PutEvents" else entry.get("Data")
            shown = text if isinstance(text, str) else repr(text)
            error = self._injected_entry_error(shown, faults, "Detail")
        if error is not None:
            self._failed[error[0]] += 1
            return {"ErrorCode": error[0], "ErrorMessage": error[1]}
        now = self._clock()
        dedup_id = system.get("DeduplicationId")
        key = _content_key(entry) if content_based else dedup_id
        if key is not None:
            seen = self._dedup.get((bus, key))
            if seen is not None and now - seen[0] < self.dedup_window_s:
                self._deduplicated += 1
                answer = {"EventId": seen[1], "SuccessCode": "DEDUPLICATED"}
                if seen[2] is not None:
                    answer["SequenceNumber"] = seen[2]
                return answer
        event_id = random_uuid()
        group = system.get("EventGroupId")
        sequence = None
        if group is not None:
            self._sequences[(bus, group)] += 1
            sequence = str(self._sequences[(bus, group)])
            self._groups.setdefault(group, []).append(dedup_id or event_id)
        if key is not None:
            self._dedup[(bus, key)] = (now, event_id, sequence)
        registry_config = registry if isinstance(registry, dict) else None
        self._received.append(
            ReceivedV2(event_id, call, operation, group, sequence, dedup_id, entry, registry_config)
        )
        answer = {"EventId": event_id, "SuccessCode": "PUBLISHED"}
        if sequence is not None:
            answer["SequenceNumber"] = sequence
        return answer

    @staticmethod
    def _entry_error(
        operation: str, entry: Mapping[str, Any], system: Mapping[str, Any], registry: Any
    ) -> tuple[str, str] | None:
        for key in ("EventGroupId", "DeduplicationId"):
            value = system.get(key)
            if value is not None and not (isinstance(value, str) and 1 <= len(value) <= 128):
                return "InvalidInputException", f"{key} must be 1 to 128 characters"
        if operation == "PutRawEvents":
            if not isinstance(entry.get("Data"), bytes | bytearray):
                return "InvalidInputException", "Data is missing"
            content_type = system.get("ContentType")
            if content_type not in _CONTENT_TYPES:
                return "InvalidInputException", f"ContentType {content_type!r} is not supported"
            if content_type in ("application/avro", "application/protobuf") and not registry:
                return "InvalidInputException", "SchemaRegistryConfiguration is required"
            metadata = entry.get("Metadata") or {}
            if len(metadata) > 100 or any("/" in str(k) for k in metadata):
                return "InvalidInputException", "Metadata: at most 100 keys, none with '/'"
            return None
        for key in ("Source", "DetailType"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                return "InvalidInputException", f"{key} is missing"
        if entry["Source"].startswith("aws."):
            return "InvalidInputException", "Source must not start with 'aws.'"
        detail = entry.get("Detail")
        if detail is not None:
            try:
                if not isinstance(load_json(detail), dict):
                    return "MalformedDetail", "Detail is not a JSON object"
            except ValueError:
                return "MalformedDetail", "Detail is not valid JSON"
        return None

    def _default_status(self, code: str) -> int:
        return _ERROR_STATUS.get(code, 500)

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        route = path.split("?", 1)[0].removeprefix(ADMIN_PREFIX).strip("/")
        if method == "GET" and route == "groups":
            return 200, self.group_order()
        if method == "GET" and route == "received":
            return 200, [
                {
                    "event_id": r.event_id,
                    "call": r.call,
                    "group": r.group,
                    "sequence_number": r.sequence_number,
                    "deduplication_id": r.deduplication_id,
                }
                for r in self.received()
            ]
        return super()._admin(method, path, body)


def _content_key(entry: Mapping[str, Any]) -> str:
    """A hash of what an entry publishes (its SystemMetadata's DeduplicationId aside)."""
    digest = hashlib.sha256()
    for key in ("Source", "DetailType", "Detail", "Data"):
        value = entry.get(key)
        digest.update(value if isinstance(value, bytes) else str(value).encode())
        digest.update(b"\0")
    digest.update(repr(sorted((entry.get("Metadata") or {}).items())).encode())
    return digest.hexdigest()


class _Handler(EndpointHandler):
    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            self.close_connection = True
            return
        bridge: LocalEventBusV2 = self.server.bridge  # type: ignore[assignment]
        if self.path.startswith(ADMIN_PREFIX):
            status, payload = bridge._admin(method, self.path, body)
            self._send(status, json.dumps(payload).encode(), "application/json")
            return
        if method != "POST" or not self.path.startswith(OPERATION_PREFIX):
            self._send(404, json.dumps({"error": "not found"}).encode(), "application/json")
            return
        operation = self.path.removeprefix(OPERATION_PREFIX).split("?", 1)[0]
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = bridge.serve(operation, body, headers)
        except Exception as exc:  # a bug here must not look like an outage
            reply = _error("InternalException", f"endpoint error: {exc!r}")
        if reply is None:
            self.close_connection = True
            return
        self._send(reply[0], cbor2.dumps(reply[1]), CBOR_CONTENT_TYPE)

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        fields = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", random_uuid()),
        ]
        if content_type == CBOR_CONTENT_TYPE:
            fields.append(("smithy-protocol", "rpc-v2-cbor"))
        self.wfile.write(self.answer_head(status, fields) + data)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the endpoint in the foreground until SIGTERM/SIGINT; prints its URL when ready."""
    parser = argparse.ArgumentParser(prog="python -m testbed.eventbus_v2")
    add_common_arguments(parser, port=4011, call_error_code="InternalException")
    parser.add_argument("--dedup-window-s", type=float, default=300.0)
    parser.add_argument("--internal-rate", type=float, default=0.0)
    parser.add_argument("--bus-arn", action="append", default=[], help="another ACTIVE bus")
    args = parser.parse_args(argv)
    faults = faults_from_arguments(args, {"InternalException": args.internal_rate})
    endpoint = LocalEventBusV2(
        args.host,
        args.port,
        buses={arn: "ACTIVE" for arn in args.bus_arn},
        dedup_window_s=args.dedup_window_s,
        seed=args.seed,
        faults=faults,
        verbose=args.verbose,
    )
    return serve_until_signalled(endpoint)


if __name__ == "__main__":
    sys.exit(main())
