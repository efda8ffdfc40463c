"""Calls run on a pool of threads for sinks that block (boto3's client, Alibaba Cloud)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from bridge.sink.calls import ThreadedCalls, make_calls
from bridge.sink.outcome import Kind, Outcome


class BlockingSink:
    """A sink whose ``send`` blocks until released, or raises for entries marked ``boom``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sending = 0

    def send(self, entries: Sequence[dict[str, Any]]) -> list[Outcome]:
        if any(e.get("boom") for e in entries):
            raise KeyError("Detail")
        self.sending += 1
        self.release.wait(5)
        return [Outcome(Kind.DELIVERED, event_id=str(e["n"])) for e in entries]


def collect(calls: ThreadedCalls, count: int) -> dict[int, list[Outcome]]:
    done: dict[int, list[Outcome]] = {}
    deadline = time.monotonic() + 5
    while len(done) < count and time.monotonic() < deadline:
        calls.wait(0.5)
        done.update(calls.finished())
    return done


def test_calls_run_at_once_and_come_back_under_their_ids() -> None:
    sink = BlockingSink()
    calls = make_calls(sink, 3)  # type: ignore[arg-type]
    assert isinstance(calls, ThreadedCalls)
    for call in range(3):
        calls.start(call, [{"n": call * 10 + i} for i in range(call + 1)])
    deadline = time.monotonic() + 5
    while sink.sending < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.sending == 3 and calls.finished() == []  # all three blocked at once
    sink.release.set()
    done = collect(calls, 3)
    assert {call: [o.event_id for o in outcomes] for call, outcomes in done.items()} == {
        0: ["0"],
        1: ["10", "11"],
        2: ["20", "21", "22"],
    }
    calls.close()


def test_a_send_that_raises_is_retried_for_every_entry_not_lost() -> None:
    calls = ThreadedCalls(BlockingSink(), 1)  # type: ignore[arg-type]
    calls.start(7, [{"n": 1}, {"n": 2, "boom": True}])
    [(call, outcomes)] = collect(calls, 1).items()
    assert call == 7 and len(outcomes) == 2
    assert {(o.kind, o.code, o.hold) for o in outcomes} == {(Kind.RETRY, "KeyError", False)}
    assert "the bridge failed to send: KeyError" in outcomes[0].message
    calls.close()
