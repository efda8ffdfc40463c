"""The real loop on its own thread, with the wall clock: ``Pipeline.run()`` over the in-memory
fakes, stopped with ``Pipeline.stop()`` from the test's thread.

The functional tier drives the same pipeline one step at a time on simulated time; these few
tests keep the real thing honest: ``run()``'s waits, calls on the sink's thread pool, a revoke
served from inside ``consume`` on the pipeline's thread while another thread answers the call.
No broker is needed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functional"))  # the shared fakes

from fakes import (
    FakeConsumer,
    FakeEventsClient,
    FakeProducer,
    wait_until,
)
from scenario import (
    P0,
    P1,
    TOPIC,
    check_commit_history,
    committed_to,
    consumer_with,
    make_config,
)

from bridge.config import BridgeConfig
from bridge.pipeline import Pipeline, Stats
from bridge.sink.eventbridge import EventBridgeSink

WAIT = 5.0


Callback = Callable[[Any, list[Any]], None]


class Running:
    """A pipeline running in a thread over the fakes."""

    def __init__(
        self,
        config: BridgeConfig,
        consumer: FakeConsumer,
        producer: FakeProducer,
        client: FakeEventsClient,
        wrap_revoke: Callable[[Pipeline, Callback], Callback] | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.client = client
        self.pipeline = Pipeline(config, consumer, producer, EventBridgeSink(client))
        on_revoke: Callback = self.pipeline.on_revoke
        if wrap_revoke is not None:
            on_revoke = wrap_revoke(self.pipeline, on_revoke)
        consumer.subscribe(
            [TOPIC],
            on_assign=self.pipeline.on_assign,
            on_revoke=on_revoke,
            on_lost=self.pipeline.on_lost,
        )
        self.error: BaseException | None = None
        self.result: Stats | None = None
        self.thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.pipeline.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

    def stop(self, timeout: float = 10.0) -> float:
        """Stop, join, assert it ended cleanly; returns the seconds the stop took."""
        started = time.monotonic()
        self.pipeline.stop()
        self.thread.join(timeout)
        took = time.monotonic() - started
        assert not self.thread.is_alive(), f"run() did not return within {timeout}s of stop()"
        if self.error is not None:
            raise self.error
        assert self.result is self.pipeline.stats
        return took


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def _start(
        config: BridgeConfig,
        consumer: FakeConsumer,
        client: FakeEventsClient | None = None,
        producer: FakeProducer | None = None,
        **kwargs: Any,
    ) -> Running:
        running = Running(
            config,
            consumer,
            producer if producer is not None else FakeProducer(),
            client if client is not None else FakeEventsClient(),
            **kwargs,
        )
        started.append(running)
        return running

    yield _start
    for running in started:  # a failed test must not leave threads blocked behind a gate
        if running.client.gate is not None:
            running.client.gate.set()
        running.producer.hold = False
        running.producer.broken = False
        running.pipeline.stop()
        running.thread.join(10)


def revoke_recorder(
    client: FakeEventsClient,
    consumer: FakeConsumer,
    gate: threading.Event,
    seen: dict[str, Any],
) -> Callable[[Pipeline, Callback], Callback]:
    """A ``wrap_revoke`` that opens ``gate`` 0.1 s into the revoke, from another thread.

    It notes in ``seen``: ``call_index`` (calls made) and ``commits_before`` when the revoke
    starts, ``thread`` (the thread it runs in), ``took`` (seconds) and ``commits_after``.
    """

    def wrap(pipeline: Pipeline, on_revoke: Callback) -> Callback:
        def revoke(c: Any, partitions: list[Any]) -> None:
            seen["call_index"] = len(client.calls)
            seen["commits_before"] = len(consumer.commit_attempts)
            seen["thread"] = threading.current_thread().name
            threading.Timer(0.1, gate.set).start()  # another thread answers the call later
            began = time.monotonic()
            on_revoke(c, partitions)
            seen["took"] = time.monotonic() - began
            seen["commits_after"] = len(consumer.commit_attempts)

        return revoke

    return wrap


# ---------------------------------------------------------------------------------------- tests
def test_happy_path_batches_delivers_each_record_once_and_commits_the_end(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(48, 47)
    run = start(make_config(), consumer)

    wait_until(committed_to(consumer, {P0: 48, P1: 47}), WAIT, "commits of 48 and 47")
    run.stop()

    calls = run.client.ids()
    assert len(calls) == 10, [len(c) for c in calls]
    assert all(1 <= len(c) <= 10 for c in calls)
    sent = Counter(i for call in calls for i in call)
    expected = {(0, o) for o in range(48)} | {(1, o) for o in range(47)}
    assert set(sent) == expected
    assert max(sent.values()) == 1, "a record was sent twice"
    assert consumer.committed_offsets == {P0: 48, P1: 47}
    assert run.stats.delivered == 95
    assert run.stats.consumed == 95
    assert run.stats.dead_lettered == 0
    assert run.producer.produced == 0
    assert run.stats.committed == {P0: 48, P1: 47}
    assert consumer.closed
    check_commit_history(consumer)


def test_revoke_waits_for_the_call_in_flight_commits_it_and_sends_no_more(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(10, 20)
    gate = threading.Event()
    client = FakeEventsClient(gate=gate)
    seen: dict[str, Any] = {}
    wrap = revoke_recorder(client, consumer, gate, seen)
    run = start(
        make_config(pipeline={"adaptive_concurrency": False}), consumer, client, wrap_revoke=wrap
    )
    # 30 records, round-robin: two batches carry partition 0, a third only partition 1.
    wait_until(lambda: client.waiting == 3, WAIT, "three calls blocked in flight")
    in_flight = client.ids()
    assert {o for call in in_flight for (p, o) in call if p == 0} == set(range(10))
    consumer.schedule_revoke([0])
    wait_until(lambda: "commits_after" in seen, WAIT, "the revoke to finish")
    assert seen["thread"] == "pipeline", "rebalance callbacks run inside consume"
    assert seen["took"] >= 0.08, "the revoke must wait for the call in flight"

    consumer.add_many(1, 20)  # partition 1 keeps flowing
    wait_until(committed_to(consumer, {P1: 40}), WAIT, "partition 1 committed to its end")
    run.stop()

    calls = client.ids()
    assert seen["call_index"] == 3
    after = [i for call in calls[seen["call_index"] :] for i in call]
    assert all(p == 1 for p, _ in after), "an entry of the revoked partition was sent after"
    during = consumer.commit_attempts[seen["commits_before"] : seen["commits_after"]]
    assert any(a.ok and a.offsets.get(P0) == 10 for a in during), during
    later = consumer.commit_attempts[seen["commits_after"] :]
    assert all(P0 not in a.offsets for a in later), "commit of a partition no longer owned"
    assert consumer.committed_offsets == {P0: 10, P1: 40}
    sent_p1 = Counter(o for call in calls for (p, o) in call if p == 1)
    assert sorted(sent_p1) == list(range(40))
    assert max(sent_p1.values()) == 1
    assert consumer.revocations == [[P0]]
    assert client.gate_timeouts == 0
    check_commit_history(consumer)


def test_stop_sends_the_open_batch(start: Callable[..., Running]) -> None:
    consumer = consumer_with(15)
    config = make_config(batch={"linger_ms": 10_000}, pipeline={"shutdown_timeout_s": 3})
    run = start(config, consumer)

    # Records 0-9 fill a batch and go at once; 10-14 wait in the open batch for 10 s of linger.
    wait_until(committed_to(consumer, {P0: 10}), WAIT, "the full batch delivered")
    assert len(run.client.calls) == 1
    took = run.stop()

    assert took < 3.0
    assert consumer.closed
    assert run.client.ids()[1:] == [[(0, o) for o in range(10, 15)]]
    assert run.stats.delivered == 15
    assert consumer.committed_offsets == {P0: 15}
    check_commit_history(consumer)
