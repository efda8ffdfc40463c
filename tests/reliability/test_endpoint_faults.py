"""The EventBridge endpoint misbehaving: down, throttling everything, answering too late,
resetting connections mid-answer, and failing a share of the entries of every call.

The local endpoint is a real HTTP server; the bridge reaches it through boto3 as it would AWS.
None of these faults is an entry's: the bridge holds the records (sends them again without
using up attempts), so with ``retry.max_attempts`` only 3 (backoff up to 2 s, to recover fast)
nothing is dead-lettered but the 1% of records that are not JSON. Answers lost after the
endpoint accepted the entries (too late, or reset) are the only way to a duplicate here: the
bound is the entries of those calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bridge.config.sections import PipelineConfig
from testbed.endpoint import Faults, LocalEventBridge

from .harness import Run

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1200)]

HOLD = {"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 2000}
IN_FLIGHT_CALLS = PipelineConfig.model_fields["max_in_flight_calls"].default  # the ceiling
ENTRIES_PER_CALL = 10


def lost_answers(endpoint: LocalEventBridge, kind: str) -> Callable[[], int]:
    """Entries the endpoint accepted in calls whose answer it then lost (``kind``)."""
    return lambda: sum(c.entries for c in endpoint.calls() if c.fault == kind)


def test_endpoint_down_then_back(scenario: Callable[..., Run], long_mode: bool) -> None:
    outages = [("refusing connections", 60.0), ("dropping connections", 20.0)]
    if not long_mode:
        outages = [("refusing connections", 6.0), ("dropping connections", 4.0)]
    total = sum(s for _, s in outages)
    run = scenario(f"endpoint down {total:.0f}s", retry=HOLD)
    run.stream(rate=300, bad_every=100)
    run.bridge().start()
    run.wait_delivering(300)
    fault = None
    for how, seconds in outages:
        if fault is not None:
            run.wait_resumed(fault)
        time.sleep(1)
        # Calls under way when it goes down may have been processed: at most every call slot.
        fault = run.fault(f"{how} {seconds:.0f}s", bound=IN_FLIGHT_CALLS * ENTRIES_PER_CALL)
        if how == "refusing connections":
            run.endpoint.stop()
            time.sleep(seconds)
            run.endpoint.start()
        else:
            run.endpoint.set_faults(Faults(outage=True, outage_mode="close"))
            time.sleep(seconds)
            run.endpoint.set_faults(Faults())
        run.clear(fault)
    run.finish(max_attempts=HOLD["max_attempts"])


def test_started_while_the_endpoint_is_down(scenario: Callable[..., Run], long_mode: bool) -> None:
    """``aws.check_event_bus`` cannot be answered: the bridge starts anyway (a warning), holds
    the records, and delivers them once the endpoint is back; a restart during an AWS outage is
    not a crash loop."""
    seconds = 30.0 if long_mode else 5.0
    run = scenario(f"started while the endpoint is down {seconds:.0f}s", retry=HOLD)
    run.config["aws"]["check_event_bus"] = True
    run.endpoint.set_faults(Faults(outage=True, outage_mode="close"))
    run.stream(rate=300, bad_every=100)
    fault = run.fault(f"endpoint down at start {seconds:.0f}s", bound=0)
    bridge = run.bridge().start()
    bridge.wait_started()
    time.sleep(seconds)
    run.assert_alive()
    assert run.delivered() == 0
    warned = [e for e in bridge.log_events() if "cannot check the event bus now" in str(e)]
    assert warned, bridge.tail()
    run.endpoint.set_faults(Faults())
    run.clear(fault)
    # The backlog (300/s for the whole outage) drains through pipeline.max_buffered_records 300:
    # each pause of fetching drops librdkafka's prefetched records, so catching up runs at
    # ~300-500 records/s (docs/reliability.md, observations).
    run.wait_recovered(fault, timeout=300 if long_mode else 90)
    run.finish(max_attempts=HOLD["max_attempts"])


def test_throttling_storms(scenario: Callable[..., Run], long_mode: bool) -> None:
    seconds = 30.0 if long_mode else 4.0
    storms = [
        ("every entry throttled", Faults(per_entry_failures={"ThrottlingException": 1.0})),
        (
            "every call throttled",
            Faults(call_error_rate=1.0, call_error_code="ThrottlingException"),
        ),
    ]
    run = scenario(f"throttling storms 2x{seconds:.0f}s", retry=HOLD)
    run.stream(rate=300, bad_every=100)
    run.bridge().start()
    run.wait_delivering(300)
    fault = None
    for kind, faults in storms:
        if fault is not None:
            run.wait_resumed(fault)
        time.sleep(1)
        fault = run.fault(f"{kind} {seconds:.0f}s", bound=0)  # a throttled entry is not accepted
        run.endpoint.set_faults(faults)
        time.sleep(seconds)
        run.endpoint.set_faults(Faults())
        run.clear(fault)
    run.finish(max_attempts=HOLD["max_attempts"])


@pytest.mark.parametrize(
    ("kind", "faults", "label"),
    [
        ("slow", Faults(slow_rate=0.25, slow_ms=1500), "answers 1.5s late (client timeout 1s)"),
        ("reset", Faults(reset_rate=0.25), "connections reset mid-answer"),
    ],
    ids=["slow", "reset"],
)
def test_answers_lost_after_the_endpoint_accepted_the_entries(
    scenario: Callable[..., Run], long_mode: bool, kind: str, faults: Faults, label: str
) -> None:
    seconds = 30.0 if long_mode else 6.0
    run = scenario(f"{label}, 25% of calls", retry=HOLD, aws={"read_timeout_s": 1.0})
    run.stream(rate=300, bad_every=100)
    run.bridge().start()
    run.wait_delivering(300)
    fault = run.fault(f"{label} {seconds:.0f}s", bound=lost_answers(run.endpoint, kind))
    run.endpoint.set_faults(faults)
    time.sleep(seconds)
    run.endpoint.set_faults(Faults())
    run.clear(fault)
    row = run.finish(max_attempts=HOLD["max_attempts"])
    assert sum(c.fault == kind for c in run.endpoint.calls()) > 0, "no call was hit"
    assert row.duplicated > 0, "a lost answer of an accepted call must make a duplicate"


FAILURE_MIX = {  # share of the failures, per code: 75% retryable, 25% permanent
    "ThrottlingException": 0.40,
    "InternalFailure": 0.35,
    "InvalidArgument": 0.15,
    "MalformedDetail": 0.10,
}


def test_partial_failures_from_1_to_90_percent_of_entries(
    scenario: Callable[..., Run], long_mode: bool
) -> None:
    rates = [0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9] if long_mode else [0.01, 0.3, 0.9]
    records = 3000 if long_mode else 500
    for rate in rates:
        run = scenario(f"partial failures {rate:.0%} of entries")
        run.endpoint.reset()
        run.endpoint.set_faults(
            Faults(per_entry_failures={code: rate * share for code, share in FAILURE_MIX.items()})
        )
        run.stream(rate=5000, total=records, bad_every=100)
        run.bridge().start()
        # Failed entries are never accepted: no duplicates. InternalFailure is retried up to
        # retry.max_attempts (12 here), then dead-lettered like the permanent ones; a throttled
        # entry is held (sent again without using up attempts), never dead-lettered.
        run.fault(f"{rate:.0%} of entries fail", bound=0)
        row = run.finish(send_codes=FAILURE_MIX, max_attempts=run.config["retry"]["max_attempts"])
        assert row.duplicated == 0
        run.endpoint.set_faults(Faults())
