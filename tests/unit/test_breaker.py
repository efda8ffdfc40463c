"""The circuit breaker: opens on outages, probes one call at a time, closes on an answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sink.breaker import (
    FAILURE_THRESHOLD,
    MAX_BACKOFF_S,
    CircuitBreaker,
    Permit,
    State,
    verdict,
)
from bridge.sink.outcome import (
    Kind,
    Outcome,
    classify_call_error,
    classify_entry,
    transport_error,
)

EXAMPLES = settings(max_examples=200, deadline=None)


def opened(at: float = 0.0, rng: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(random_fraction=lambda: rng)
    for _ in range(FAILURE_THRESHOLD):
        assert breaker.allow(at) is Permit.CALL
        breaker.on_result(False, at)
    assert breaker.state is State.OPEN
    return breaker


# ---------------------------------------------------------------------------- verdict


def test_verdict_of_outcomes() -> None:
    ok = classify_entry({"EventId": "1"})
    failed = classify_entry({"ErrorCode": "InternalFailure"})
    throttled = classify_entry({"ErrorCode": "ThrottlingException"})
    assert verdict([ok, failed]) is True
    assert verdict([failed, throttled]) is None  # answered: the entries' own failures
    assert verdict([transport_error("EndpointConnectionError", "refused")] * 3) is False
    assert verdict([classify_call_error("ServiceUnavailable", 503, "down")]) is False
    assert verdict([classify_call_error("ThrottlingException", 400, "slow down")]) is False
    assert verdict([classify_call_error("ExpiredTokenException", 400, "expired")]) is False
    assert verdict([classify_call_error("AccessDeniedException", 400, "no")]) is False
    assert verdict([classify_call_error("ResourceNotFoundException", 400, "no bus")]) is False
    assert verdict([classify_call_error("ValidationException", 400, "bad")]) is None
    assert verdict([]) is None
    assert verdict([Outcome(Kind.DELIVERED, event_id="x")]) is True


# ---------------------------------------------------------------------------- the machine


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker()
    for _ in range(FAILURE_THRESHOLD - 1):
        breaker.on_result(False, 1.0)
    breaker.on_result(None, 1.0)  # an answer in between resets the count
    for _ in range(FAILURE_THRESHOLD - 1):
        breaker.on_result(False, 2.0)
    assert breaker.state is State.CLOSED
    breaker.on_result(False, 3.0)
    assert breaker.state is State.OPEN
    assert breaker.opened_at == 3.0
    [transition] = breaker.take_transitions()
    assert (transition.before, transition.after, transition.at) == (State.CLOSED, State.OPEN, 3.0)
    assert transition.starts_outage and not transition.ends_outage


def test_one_probe_after_the_wait_then_closed_on_success() -> None:
    breaker = opened(10.0)
    assert breaker.next_probe_at(10.0) == 11.0
    assert not breaker.allow(10.5)
    assert breaker.allow(11.0) is Permit.PROBE
    assert breaker.state is State.HALF_OPEN and breaker.probe_in_flight
    assert breaker.next_probe_at(11.0) is None
    assert not breaker.allow(11.1)  # one probe at a time
    breaker.on_result(True, 11.2, Permit.PROBE)
    assert breaker.state is State.CLOSED and breaker.opened_at is None
    assert breaker.allow(11.2) is Permit.CALL
    ends = [t for t in breaker.take_transitions() if t.ends_outage]
    assert len(ends) == 1 and ends[0].outage_s == pytest.approx(1.2) and ends[0].probes == 1


def test_failed_probes_double_the_wait_up_to_the_cap() -> None:
    breaker = opened(0.0)
    now, waits = 0.0, []
    for _ in range(6):
        due = breaker.next_probe_at(now)
        assert due is not None
        waits.append(due - now)
        now = due
        assert breaker.allow(now) is Permit.PROBE
        breaker.on_result(False, now, Permit.PROBE)
        assert breaker.state is State.OPEN
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert breaker.opened_at == 0.0  # the outage began at the first opening


def test_jitter_only_shortens_the_wait() -> None:
    breaker = opened(0.0, rng=0.999)
    due = breaker.next_probe_at(0.0)
    assert due is not None and 0.75 < due < 1.0


def test_an_entries_failure_on_the_probe_closes_it() -> None:
    breaker = opened(0.0)
    assert breaker.allow(1.0) is Permit.PROBE
    breaker.on_result(None, 1.5, Permit.PROBE)  # the service answered
    assert breaker.state is State.CLOSED


def test_calls_started_before_the_opening() -> None:
    breaker = opened(0.0)
    breaker.on_result(False, 0.1, Permit.CALL)  # a late failure: nothing new
    assert breaker.state is State.OPEN and breaker.next_probe_at(0.1) == 1.0
    breaker.on_result(True, 0.2, Permit.CALL)  # a late success: the service is back
    assert breaker.state is State.CLOSED


def test_an_abandoned_probe_frees_its_place() -> None:
    breaker = opened(0.0)
    assert breaker.allow(1.0) is Permit.PROBE
    breaker.abandon(Permit.PROBE, 1.5)
    assert breaker.state is State.OPEN and not breaker.probe_in_flight
    assert breaker.allow(1.5) is Permit.PROBE


def test_permit_is_falsy_only_when_denied() -> None:
    assert not Permit.DENIED
    assert Permit.CALL and Permit.PROBE


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0)
    with pytest.raises(ValueError, match="jitter"):
        CircuitBreaker(jitter=1.0)


# ---------------------------------------------------------------------------- properties

# One step of a random history: time passes, then the loop tries to start a call, or a call in
# flight ends with an answer (True/None) or a failure (False), or is abandoned.
steps = st.lists(
    st.tuples(
        st.floats(0, 3, allow_nan=False),
        st.sampled_from(["start", "end", "abandon"]),
        st.sampled_from([True, None, False]),
        st.integers(0, 100),
    ),
    max_size=200,
)


@EXAMPLES
@given(history=steps, rng=st.floats(0, 0.999))
def test_never_more_than_one_probe_in_flight(
    history: list[tuple[float, str, bool | None, int]], rng: float
) -> None:
    breaker = CircuitBreaker(random_fraction=lambda: rng)
    now = 0.0
    in_flight: list[Permit] = []
    for dt, action, ok, pick in history:
        now += dt
        if action == "start":
            closed = breaker.state is State.CLOSED
            permit = breaker.allow(now)
            # not closed: nothing starts but the probe
            assert permit in ((Permit.CALL,) if closed else (Permit.DENIED, Permit.PROBE))
            if permit:
                in_flight.append(permit)
        elif in_flight:
            permit = in_flight.pop(pick % len(in_flight))
            if action == "end":
                breaker.on_result(ok, now, permit)
            else:
                breaker.abandon(permit, now)
        probes = sum(p is Permit.PROBE for p in in_flight)
        assert probes <= 1
        assert breaker.probe_in_flight == (probes == 1)
        assert (breaker.state is State.HALF_OPEN) <= (probes == 1)


@EXAMPLES
@given(
    outage_s=st.floats(5, 300),
    probe_s=st.floats(0.001, 2.0),
    rng=st.floats(0, 0.999),
    attempts_per_s=st.integers(1, 200),
)
def test_calls_during_an_outage_are_bounded(
    outage_s: float, probe_s: float, rng: float, attempts_per_s: int
) -> None:
    """The loop asks as often as it likes; while the service is down, calls start no faster
    than one per (0.75 s + the probe's own time), about one per second on average."""
    breaker = opened(0.0, rng=rng)
    now, calls, step = 0.0, 0, 1.0 / attempts_per_s
    probe_ends: float | None = None
    while now < outage_s:
        if probe_ends is not None and now >= probe_ends:
            breaker.on_result(False, now, Permit.PROBE)
            probe_ends = None
        if breaker.allow(now):
            calls += 1
            probe_ends = now + probe_s
        now += step
    assert breaker.state is not State.CLOSED
    assert calls <= 1 + outage_s / (0.75 + probe_s)
    # and the probes keep coming: none more than the cap apart (4 s) after the first 7 s
    assert calls >= (outage_s - 7) / (MAX_BACKOFF_S + probe_s + step) - 1


@EXAMPLES
@given(
    down_s=st.floats(0, 300),
    probe_s=st.floats(0.001, 1.0),
    rng=st.floats(0, 0.999),
)
def test_closes_on_the_first_probe_after_the_return(
    down_s: float, probe_s: float, rng: float
) -> None:
    """The service comes back at ``down_s``: the first probe after that closes the breaker,
    and it starts within the cap (4 s) of the return, or of the end of a probe in flight."""
    breaker = opened(0.0, rng=rng)
    now, step = 0.0, 0.01
    probe: tuple[float, float] | None = None  # (started, ends)
    closed_at = None
    while closed_at is None:
        if probe is not None and now >= probe[1]:
            back = probe[0] >= down_s
            breaker.on_result(back, now, Permit.PROBE)
            if back:
                closed_at = now
                probe_started = probe[0]
            probe = None
        if closed_at is None and breaker.allow(now):
            probe = (now, now + probe_s)
        now += step
    assert breaker.state is State.CLOSED
    assert probe_started - down_s <= MAX_BACKOFF_S + probe_s + 2 * step
    assert breaker.allow(now) is Permit.CALL
