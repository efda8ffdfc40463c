"""What the local endpoints share, whatever API they speak.

:mod:`testbed.endpoint` (AWS) and :mod:`testbed.alibaba_endpoint` (Alibaba Cloud)
are each a :class:`LocalEndpoint`: a threaded HTTP/1.1 server (:mod:`testbed.server`)
started and stopped from Python (a stopped endpoint serves on the same port when started again),
the record of what it accepted and of each call, the :class:`Faults` to inject (changeable at
runtime), the admin HTTP API under ``/_admin/`` and the foreground ``main`` loop. Each endpoint
adds only the API it speaks: how a request is checked, answered and recorded. Only the standard
library and orjson are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from testbed.server import EndpointHandler, EndpointServer

__all__ = [
    "ADMIN_PREFIX",
    "CallRecord",
    "EndpointHandler",
    "EndpointServer",
    "Faults",
    "LocalEndpoint",
    "Reply",
    "add_common_arguments",
    "faults_from_arguments",
    "serve_until_signalled",
]

ADMIN_PREFIX = "/_admin/"

Reply = tuple[int, dict[str, Any]]
"""An API answer: HTTP status and JSON body."""

ReceivedT = TypeVar("ReceivedT")


@dataclass
class Faults:
    """Faults to inject; the defaults inject nothing.

    Attributes:
        per_entry_failures: Error code -> probability that an entry fails with it (each entry
            drawn independently; probabilities must sum to at most 1).
        first_attempt_failures: Error code -> probability that an entry fails with it the first
            time the endpoint sees it (its Detail, or Alibaba's data; drawn once per entry, after
            the other injected failures): a retry or a re-send of it is not failed by this.
        repeated_failures: Error code -> probability that an entry fails with it on each of its
            first ``repeated_attempts`` attempts (drawn once per entry, in the same draw as
            ``first_attempt_failures``: the two tables sum to at most 1): an entry whose head
            of partition waits for its retries, then gets through.
        repeated_attempts: How many attempts of such an entry fail.
        fail_if_detail_contains: Substring -> error code; an entry whose Detail contains the
            substring always fails with that code.
        call_error_rate: Probability that a whole PutEvents call fails.
        call_error_code: Error code of a failed call.
        call_error_status: HTTP status of a failed call; None picks the endpoint's default for
            the code (AWS: 400 for throttling codes, 503 for ServiceUnavailable, else 500).
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
    first_attempt_failures: dict[str, float] = field(default_factory=dict)
    repeated_failures: dict[str, float] = field(default_factory=dict)
    repeated_attempts: int = 4
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
        self.first_attempt_failures = {
            str(k): float(v) for k, v in self.first_attempt_failures.items()
        }
        self.repeated_failures = {str(k): float(v) for k, v in self.repeated_failures.items()}
        self.fail_if_detail_contains = {
            str(k): str(v) for k, v in self.fail_if_detail_contains.items()
        }
        rates = [*self.per_entry_failures.values(), self.call_error_rate]
        rates += [*self.first_attempt_failures.values(), self.slow_rate, self.reset_rate]
        rates += self.repeated_failures.values()
        tables = (
            self.per_entry_failures,
            {
                **self.first_attempt_failures,
                **{f"r{k}": v for k, v in self.repeated_failures.items()},
            },
        )
        if any(not 0.0 <= r <= 1.0 for r in rates) or any(sum(t.values()) > 1 for t in tables):
            raise ValueError("failure probabilities must be in [0, 1] and sum to at most 1")
        if self.repeated_attempts < 1:
            raise ValueError("repeated_attempts must be at least 1")
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
class CallRecord:
    """One API call; ``status`` 0 means the connection was dropped (outage)."""

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


class LocalEndpoint(Generic[ReceivedT]):
    """A local endpoint's server, recordings, faults and admin API; subclasses speak an API.

    A subclass builds its server (:meth:`_make_server`), answers requests (its handler calls
    it), appends to ``_received``, ``_calls``, ``_violations`` and ``_failed`` with ``_lock``
    held, and says what :meth:`stats` counts.
    """

    thread_name: ClassVar[str] = "local-endpoint"
    """The serving thread's name, before ``-<port>``."""

    def __init__(
        self, host: str, port: int, *, seed: int, faults: Faults | None, verbose: bool
    ) -> None:
        self._address = (host, port)
        self.verbose = verbose
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._received: list[ReceivedT] = []
        self._calls: list[CallRecord] = []
        self._violations: list[str] = []
        self._failed: Counter[str] = Counter()
        self._call_count = 0
        # Digests of entries seen -> the code they fail with and how many more times
        # (first_attempt_failures, repeated_failures).
        self._seen: dict[bytes, tuple[str, int]] = {}
        self._server: EndpointServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self, address: tuple[str, int]) -> EndpointServer:
        """A server bound to ``address`` whose handler answers this endpoint's API."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start serving in a daemon thread; returns self."""
        if self._server is None:
            self._server = self._make_server(self._address)
            # A stop() then start() serves on the same port again (an endpoint "down" for a
            # while: connections refused, then back where the clients expect it).
            host, port = self._server.server_address[:2]
            self._address = (str(host), int(port))
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{self.thread_name}-{port}",
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

    def __enter__(self) -> Self:
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
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[ReceivedT]:
        """Entries (events) answered with an EventId, in order."""
        with self._lock:
            return list(self._received)

    def calls(self) -> list[CallRecord]:
        """Log of API calls, in order."""
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
            self._seen.clear()
            self._rng = random.Random(self._seed)

    def stats(self) -> dict[str, Any]:
        """Counts of calls, entries received/failed (by code) and violations."""
        raise NotImplementedError

    # -- fault injection (call with the lock held) ------------------------------------

    def _default_status(self, code: str) -> int:
        """HTTP status of an injected call error when ``Faults.call_error_status`` is None."""
        raise NotImplementedError

    def _injected_call_error(self, faults: Faults) -> tuple[int, str] | None:
        """``(status, code)`` of an injected whole-call failure, or None; lock held."""
        if faults.call_error_rate and self._rng.random() < faults.call_error_rate:
            code = faults.call_error_code
            return faults.call_error_status or self._default_status(code), code
        return None

    def _injected_entry_error(
        self, text: str, faults: Faults, what: str = "Detail"
    ) -> tuple[str, str] | None:
        """``(code, message)`` of an injected failure of an entry whose ``what`` is ``text``.

        The ``fail_if_detail_contains`` substrings first, then a draw against
        ``per_entry_failures``, then, the first time ``text`` is seen, one against
        ``first_attempt_failures`` and ``repeated_failures`` (an entry drawn for the latter
        fails again until its attempts are spent); None when none fails it. Call with the lock
        held.
        """
        for substring, code in faults.fail_if_detail_contains.items():
            if substring in text:
                return code, f"Injected failure ({what} contains {substring!r})"
        if faults.per_entry_failures:
            draw, cumulative = self._rng.random(), 0.0
            for code, probability in faults.per_entry_failures.items():
                cumulative += probability
                if draw < cumulative:
                    return code, "Injected failure"
        if faults.first_attempt_failures or faults.repeated_failures:
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            seen = self._seen.get(digest)
            if seen is not None:
                code, left = seen
                if left <= 0:
                    return None
                self._seen[digest] = (code, left - 1)
                return code, "Injected failure (repeated)"
            self._seen[digest] = ("", 0)
            draw, cumulative = self._rng.random(), 0.0
            for code, probability in faults.first_attempt_failures.items():
                cumulative += probability
                if draw < cumulative:
                    return code, "Injected failure (first attempt)"
            for code, probability in faults.repeated_failures.items():
                cumulative += probability
                if draw < cumulative:
                    self._seen[digest] = (code, faults.repeated_attempts - 1)
                    return code, "Injected failure (repeated)"
        return None

    # -- admin API ---------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        route = path.split("?", 1)[0].removeprefix(ADMIN_PREFIX).strip("/")
        if method == "GET" and route in ("received", "calls"):
            items: list[Any] = self.received() if route == "received" else self.calls()
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


# -- running standalone -----------------------------------------------------------------


def add_common_arguments(
    parser: argparse.ArgumentParser, *, port: int, call_error_code: str
) -> None:
    """The flags every endpoint's ``main`` takes: where to listen, faults, ``--verbose``."""
    for flag, kind, default in [
        ("--host", str, "127.0.0.1"),
        ("--port", int, port),
        ("--seed", int, 0),
        ("--latency-ms", float, 0.0),
        ("--latency-jitter-ms", float, 0.0),
        ("--call-error-rate", float, 0.0),
        ("--call-error-code", str, call_error_code),
        ("--call-error-status", int, None),
        ("--faults-json", str, None),  # a whole Faults object as JSON (overrides the others)
    ]:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")


def faults_from_arguments(args: argparse.Namespace, rates: Mapping[str, float]) -> Faults:
    """The faults the flags of :func:`add_common_arguments` ask for.

    Args:
        args: The parsed flags.
        rates: Error code -> probability that an entry fails with it (0: never).

    Raises:
        ValueError: Invalid rates or ``--faults-json``.
    """
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
    return faults


def serve_until_signalled(endpoint: LocalEndpoint[Any]) -> int:
    """Serve in the foreground until SIGTERM/SIGINT; prints the URL once ready; returns 0."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with endpoint:
        print(endpoint.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0
