"""An EventBridge outage with default settings: records held within the budget, the endpoint
probed (not hammered), delivery back within seconds of its return, one log line each way.

The endpoint answers ``503 ServiceUnavailable`` to every call for 30 s (``--reliability-long``:
120 s) while records keep flowing at 200/s. Unlike the other endpoint scenarios, the bridge runs
with the settings a new user gets (no fast retries, no short linger or commit interval, the
default ``max_buffered_records``): what is checked is what users get. A 503 is the service's,
not the entries': nothing may be dead-lettered, nothing lost, and no entry was accepted during
the outage, so no duplicate may come of it (bound 0).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from bridge.config.sections import PipelineConfig
from testbed.endpoint import Faults

from .harness import Run

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(900)]

RATE = 200  # records/s produced throughout
FIRST_DELIVERY_S = 5.0  # the bound: the first delivery within 5 s of the return
CALLS_PER_S = 1.0  # the bound: at most ~1 call per second on average during the outage
OUTAGE_START = "EVENTBRIDGE OUTAGE"
OUTAGE_END = "EventBridge outage over"


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_eventbridge_outage_with_default_settings(
    scenario: Callable[..., Run], long_mode: bool
) -> None:
    seconds = 120.0 if long_mode else 30.0
    default_buffer = PipelineConfig.model_fields["max_buffered_records"].default
    run = scenario(f"EventBridge outage (503) {seconds:.0f}s", max_buffered=default_buffer)
    # The harness's fast retries, short linger and commit interval go: the defaults are tested.
    for section in ("retry", "batch"):
        run.config.pop(section, None)
    run.config["pipeline"] = {}
    run.stream(rate=RATE)
    bridge = run.bridge().start()
    bridge.wait_started()
    run.wait_delivering(RATE)
    time.sleep(1)

    fault = run.fault(f"503 to every call {seconds:.0f}s", bound=0)
    began = time.time()
    run.endpoint.set_faults(Faults(outage=True, outage_mode="503"))
    time.sleep(seconds / 2)
    port = bridge.port()
    assert port is not None
    status, why = readyz(port)
    assert status == 503, f"/readyz during the outage: {status} {why}"
    time.sleep(seconds / 2)
    run.endpoint.set_faults(Faults())
    ended = time.time()
    run.clear(fault)
    run.wait_resumed(fault, timeout=30)
    row = run.finish()

    puts = [c for c in run.endpoint.calls() if c.operation == "PutEvents"]
    during = [c for c in puts if began <= c.time < ended and c.fault == "outage"]
    # A call answered as the fault was switched on may be stamped just after it: half a second.
    through = [c for c in puts if began + 0.5 <= c.time < ended and c.fault != "outage"]
    answered = [c for c in puts if c.time >= ended and c.status == 200 and c.fault is None]
    first_s = min(c.time for c in answered) - ended
    outage_s = ended - began
    starts = [e for e in bridge.log_events() if str(e.get("event")).startswith(OUTAGE_START)]
    ends = [e for e in bridge.log_events() if str(e.get("event")).startswith(OUTAGE_END)]
    print(
        f"    outage {outage_s:.1f}s: {len(during)} PutEvents calls"
        f" ({len(during) / outage_s:.2f}/s), first delivery {first_s:.2f}s after the return,"
        f" outage lines {len(starts)} start / {len(ends)} end: {ends[:1]}"
    )
    assert row.lost == 0 and row.dead_lettered == 0 and row.duplicated == 0
    assert not through, f"calls got through during the outage: {through[:3]}"
    assert len(during) <= CALLS_PER_S * outage_s, f"{len(during)} calls in {outage_s:.0f}s"
    assert first_s <= FIRST_DELIVERY_S, f"first delivery {first_s:.2f}s after the return"
    assert len(starts) == 1, starts
    assert len(ends) == 1, ends
    assert ends[0]["outage_s"] >= seconds * 0.9, ends[0]
    assert ends[0]["held_records"] > 0, ends[0]
