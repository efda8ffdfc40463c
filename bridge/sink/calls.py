"""How the pipeline's calls run while its thread goes on: started, then collected when done.

The pipeline starts up to ``pipeline.max_in_flight_calls`` calls and collects their outcomes
between turns of its loop. Two ways to run them:

- :class:`bridge.sink.lean.LeanCalls` (the AWS sinks with ``aws.client: lean``): every call is
  driven from the pipeline's own thread through libcurl's multi interface. No thread per call,
  no hand-off: with 48 calls in flight, the thread pool's hand-offs and the switching of 49
  threads for the interpreter lock took about 14% of the bridge's CPU.
- :class:`ThreadedCalls` (boto3's client, Alibaba Cloud): the sink's blocking ``send`` on a
  pool of threads, outcomes handed back through a queue.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from bridge.observability.logging import get_logger
from bridge.sink.base import Sink
from bridge.sink.outcome import Kind, Outcome

log = get_logger("calls")

Finished = list[tuple[int, list[Outcome]]]


class Calls(Protocol):
    """Calls under way, all started and collected by one thread."""

    def start(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        """Start one call; its outcomes come from :meth:`finished` under ``call_id``."""
        ...

    def flush(self) -> None:
        """Send the calls started since the last flush (a turn starts them, then flushes)."""
        ...

    def finished(self) -> Finished:
        """The calls that ended since the last look, with an outcome per entry."""
        ...

    def wait(self, timeout: float) -> None:
        """Sleep until a call may have ended, at most ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Abandon the calls under way (their outcomes are never collected)."""
        ...


def make_calls(sink: Sink, max_in_flight: int) -> Calls:
    """The sink's own way to run calls if it has one, else threads around its ``send``."""
    own = getattr(sink, "calls", None)
    if own is not None:
        calls: Calls = own(max_in_flight)
        return calls
    return ThreadedCalls(sink, max_in_flight)


class ThreadedCalls:
    """``sink.send`` on a pool of ``max_in_flight`` threads.

    A ``send`` that raises (a bug: sinks judge every AWS and network failure themselves) is
    logged with its traceback and judged retryable for every entry, so the records are sent
    again and, if it keeps raising, dead-lettered with the error: never stuck, never lost.
    """

    def __init__(self, sink: Sink, max_in_flight: int) -> None:
        self._sink = sink
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="put-events")
        self._done: queue.SimpleQueue[tuple[int, list[Outcome]]] = queue.SimpleQueue()
        self._early: Finished = []  # taken from the queue by wait()

    def start(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        self._pool.submit(self._run, call_id, entries)

    def flush(self) -> None:
        """Nothing to do: each call went to its thread at :meth:`start`."""

    def finished(self) -> Finished:
        done, self._early = self._early, []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def wait(self, timeout: float) -> None:
        if self._early:
            return
        try:
            self._early.append(self._done.get(timeout=timeout))
        except queue.Empty:
            return

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        try:
            outcomes = self._sink.send(entries)
        except Exception as exc:
            log.exception("sending failed inside the bridge", entries=len(entries))
            message = f"the bridge failed to send: {type(exc).__name__}: {exc}"
            failed = Outcome(Kind.RETRY, type(exc).__name__, message, whole_call=True)
            outcomes = [failed] * len(entries)
        self._done.put((call_id, outcomes))
