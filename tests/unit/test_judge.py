"""Judging a call's answer: each entry's fate decided from the outcomes alone (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from work_support import TPS, make_work, snapshot

from bridge.dlq.writer import Reason
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.judge import Action, Judgement, judge
from bridge.pipeline.work import Work
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.retry import Backoff

EXAMPLES = settings(max_examples=100, deadline=None)
BACKOFF = Backoff(initial_s=0.1, max_s=5.0, max_attempts=3)
NOW = 1000.0

OK = Outcome(Kind.DELIVERED, event_id="e-1")
INTERNAL = Outcome(Kind.RETRY, "InternalFailure", "try later")
THROTTLED_ENTRY = Outcome(Kind.RETRY, "ThrottlingException", "slow", hold=True, throttled=True)
INVALID = Outcome(Kind.PERMANENT, "InvalidArgument", "Detail is not JSON")
OUTAGE = Outcome(Kind.RETRY, "ServiceUnavailable", "down", whole_call=True, hold=True)
CALL_THROTTLED = Outcome(
    Kind.RETRY, "ThrottlingException", "rate", whole_call=True, hold=True, throttled=True
)
CALL_REFUSED = Outcome(Kind.PERMANENT, "ValidationException", "bad request", whole_call=True)


def always(_: Work) -> bool:
    return True


def run(
    batch: Sequence[Work],
    outcomes: Sequence[Outcome],
    *,
    owns: Callable[[Work], bool] = always,
    revoking: Container[TP] = frozenset(),
    backoff: Backoff = BACKOFF,
    seed: int = 7,
    now: float = NOW,
) -> Judgement:
    return judge(
        batch,
        outcomes,
        owns=owns,
        revoking=revoking,
        backoff=backoff,
        rng=random.Random(seed),
        now=now,
    )


# -- each action ---------------------------------------------------------------------------------


def test_delivered() -> None:
    work = make_work(attempts=1)
    (verdict,) = run([work], [OK]).verdicts
    assert verdict.action is Action.DELIVERED
    assert verdict.work is work and verdict.outcome is OK
    assert verdict.reason is None


@pytest.mark.parametrize(("attempts", "held"), [(1, 0), (2, 0), (1, 3), (2, 5)])
def test_retry_is_due_after_the_backoff_of_every_send_counted_or_not(
    attempts: int, held: int
) -> None:
    work = make_work(attempts=attempts, held=held)
    (verdict,) = run([work], [INTERNAL], seed=11).verdicts
    assert verdict.action is Action.RETRY
    expected = NOW + BACKOFF.delay(attempts + held, random.Random(11))
    assert verdict.due == pytest.approx(expected)
    # The delay grows with held sends too: not just the counted attempts.
    if held:
        assert verdict.due > NOW + BACKOFF.delay(attempts, random.Random(11))


def test_retries_in_one_call_draw_their_jitter_in_request_order() -> None:
    batch = [make_work(offset=i, attempts=2) for i in range(3)]
    verdicts = run(batch, [INTERNAL] * 3, seed=5).verdicts
    rng = random.Random(5)
    assert [v.due for v in verdicts] == [NOW + BACKOFF.delay(2, rng) for _ in range(3)]


def test_retryable_entry_out_of_attempts_is_dead_lettered_with_how_many() -> None:
    work = make_work(attempts=BACKOFF.max_attempts)
    (verdict,) = run([work], [INTERNAL]).verdicts
    assert verdict.action is Action.DEAD_LETTER
    assert verdict.reason == Reason(
        "send", "InternalFailure", "try later (after 3 attempts)", BACKOFF.max_attempts
    )


def test_dead_letter_message_falls_back_to_the_code() -> None:
    work = make_work(attempts=4)
    (verdict,) = run([work], [Outcome(Kind.RETRY, "NoEventId")]).verdicts
    assert verdict.reason is not None
    assert verdict.reason.message == "NoEventId (after 4 attempts)"


def test_permanent_entry_is_dead_lettered_at_once_without_the_attempts_suffix() -> None:
    work = make_work(attempts=1)
    (verdict,) = run([work], [INVALID]).verdicts
    assert verdict.action is Action.DEAD_LETTER
    assert verdict.reason == Reason("send", "InvalidArgument", "Detail is not JSON", 1)


def test_permanent_whole_call_failure_of_a_batch_sends_each_entry_alone() -> None:
    batch = [make_work(offset=i, attempts=1) for i in range(3)]
    judged = run(batch, [CALL_REFUSED] * 3)
    assert [v.action for v in judged.verdicts] == [Action.ALONE] * 3
    assert judged.call_failure is CALL_REFUSED


def test_permanent_whole_call_failure_of_one_entry_dead_letters_it() -> None:
    # Alone, the entry is the culprit: no smaller call can tell more.
    work = make_work(attempts=1)
    (verdict,) = run([work], [CALL_REFUSED]).verdicts
    assert verdict.action is Action.DEAD_LETTER
    assert verdict.reason == Reason("send", "ValidationException", "bad request", 1)


def test_not_owned_is_dropped_whatever_the_outcome() -> None:
    outcomes = [OK, INTERNAL, INVALID, THROTTLED_ENTRY]
    batch = [make_work(offset=i, attempts=9) for i in range(len(outcomes))]
    verdicts = run(batch, outcomes, owns=lambda _: False).verdicts
    assert [v.action for v in verdicts] == [Action.DROP] * len(outcomes)
    assert all(v.reason is None for v in verdicts)


def test_a_retry_of_a_revoking_partition_is_dropped_the_rest_is_not() -> None:
    leaving, staying = TPS[0], TPS[1]
    batch = [
        make_work(leaving, 0, attempts=1),  # retry -> the next owner's
        make_work(leaving, 1, attempts=1),  # delivered -> still delivered
        make_work(leaving, 2, attempts=1),  # permanent -> still dead-lettered
        make_work(staying, 0, attempts=1),  # retry of a partition that stays -> retried
    ]
    verdicts = run(batch, [INTERNAL, OK, INVALID, INTERNAL], revoking={leaving}).verdicts
    assert [v.action for v in verdicts] == [
        Action.DROP,
        Action.DELIVERED,
        Action.DEAD_LETTER,
        Action.RETRY,
    ]


def test_owns_is_asked_per_entry() -> None:
    batch = [make_work(offset=0, epoch=1), make_work(offset=1, epoch=2)]
    verdicts = run(batch, [OK, OK], owns=lambda w: w.epoch == 2).verdicts
    assert [v.action for v in verdicts] == [Action.DROP, Action.DELIVERED]


def test_a_held_entry_is_retried_whatever_the_attempts() -> None:
    work = make_work(attempts=BACKOFF.max_attempts + 50, held=100)
    (verdict,) = run([work], [THROTTLED_ENTRY]).verdicts
    assert verdict.action is Action.RETRY
    # The delay is capped by max_s even after 150 sends.
    assert NOW < verdict.due <= NOW + BACKOFF.max_s


@pytest.mark.parametrize("outcome", [OUTAGE, CALL_THROTTLED])
def test_a_call_held_as_a_whole_goes_back_as_it_was_whatever_the_attempts(
    outcome: Outcome,
) -> None:
    batch = [make_work(offset=i, attempts=BACKOFF.max_attempts + 50) for i in range(3)]
    verdicts = run(batch, [outcome] * 3).verdicts
    assert [v.action for v in verdicts] == [Action.HELD] * 3
    assert all(v.due == 0.0 and v.reason is None for v in verdicts)


def test_call_failure_is_the_whole_call_outcome_and_none_for_an_answer() -> None:
    batch = [make_work(offset=i, attempts=1) for i in range(2)]
    assert run(batch, [OUTAGE, OUTAGE]).call_failure is OUTAGE
    assert run(batch, [OK, INTERNAL]).call_failure is None


@pytest.mark.parametrize(
    ("outcomes", "throttled"),
    [
        ([OK, OK], False),
        ([OK, INTERNAL], False),
        ([OUTAGE, OUTAGE], False),
        ([OK, THROTTLED_ENTRY], True),
        ([THROTTLED_ENTRY, INVALID], True),
        ([CALL_THROTTLED, CALL_THROTTLED], True),
    ],
)
def test_throttled_when_the_call_or_any_entry_was(outcomes: list[Outcome], throttled: bool) -> None:
    batch = [make_work(offset=i, attempts=1) for i in range(len(outcomes))]
    assert run(batch, outcomes).throttled is throttled


def test_throttled_even_when_the_throttled_entry_is_dropped() -> None:
    # The bus said "too much" whoever owns the entry now: the rate must still come down.
    judged = run([make_work(attempts=1)], [THROTTLED_ENTRY], owns=lambda _: False)
    assert judged.verdicts[0].action is Action.DROP
    assert judged.throttled


def test_empty_call_judges_nothing() -> None:
    judged = run([], [])
    assert judged.verdicts == [] and judged.call_failure is None and not judged.throttled


def test_outcomes_and_batch_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        run([make_work(), make_work(offset=1)], [OK])


# -- properties ----------------------------------------------------------------------------------

ENTRY_OUTCOMES = st.sampled_from(
    [
        OK,
        INTERNAL,
        THROTTLED_ENTRY,
        INVALID,
        Outcome(Kind.PERMANENT, "MalformedDetail", ""),
        Outcome(Kind.RETRY, "NoEventId", "entry has neither EventId nor ErrorCode"),
    ]
)
CALL_OUTCOMES = st.sampled_from(
    [
        OUTAGE,
        CALL_THROTTLED,
        CALL_REFUSED,
        Outcome(Kind.RETRY, "ResponseMismatch", "2 entries for 3 sent", whole_call=True),
        Outcome(Kind.RETRY, "ExpiredTokenException", "", whole_call=True, hold=True),
    ]
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[list[Work], list[Outcome], dict[TP, int], set[TP]]:
    """A batch across partitions and epochs, its outcomes, the owned epochs and the revoking."""
    n = draw(st.integers(0, 12))
    batch = [
        make_work(
            draw(st.sampled_from(TPS)),
            i,
            epoch=draw(st.integers(1, 3)),
            attempts=draw(st.integers(0, 6)),
            held=draw(st.integers(0, 4)),
        )
        for i in range(n)
    ]
    if draw(st.booleans()):
        outcomes = [draw(CALL_OUTCOMES)] * n
    else:
        outcomes = [draw(ENTRY_OUTCOMES) for _ in range(n)]
    epochs = {tp: draw(st.integers(1, 3)) for tp in TPS}
    revoking = set(draw(st.lists(st.sampled_from(TPS), unique=True)))
    return batch, outcomes, epochs, revoking


BACKOFFS = st.builds(
    Backoff,
    initial_s=st.floats(0.001, 2.0),
    max_s=st.floats(2.0, 60.0),
    max_attempts=st.integers(1, 6),
)


def judge_call(
    call: tuple[list[Work], list[Outcome], dict[TP, int], set[TP]],
    backoff: Backoff,
    seed: int,
    now: float,
) -> Judgement:
    batch, outcomes, epochs, revoking = call
    return run(
        batch,
        outcomes,
        owns=lambda w: epochs[w.tp] == w.epoch,
        revoking=revoking,
        backoff=backoff,
        seed=seed,
        now=now,
    )


@EXAMPLES
@given(calls(), BACKOFFS, st.integers(0, 2**32), st.floats(0, 1e9))
def test_properties_of_every_judgement(
    call: tuple[list[Work], list[Outcome], dict[TP, int], set[TP]],
    backoff: Backoff,
    seed: int,
    now: float,
) -> None:
    batch, outcomes, epochs, revoking = call
    before = [snapshot(w) for w in batch]
    judged = judge_call(call, backoff, seed, now)

    # One verdict per entry, in request order, each with the outcome it was judged on.
    assert len(judged.verdicts) == len(batch)
    for verdict, work, outcome in zip(judged.verdicts, batch, outcomes, strict=True):
        assert verdict.work is work
        assert verdict.outcome is outcome
        owned = epochs[work.tp] == work.epoch
        # A delivered outcome is never dead-lettered (nor retried).
        if outcome.kind is Kind.DELIVERED:
            assert verdict.action in (Action.DELIVERED, Action.DROP)
        # Nothing owned is dropped unless its partition is revoking and it would be retried.
        if owned and verdict.action is Action.DROP:
            assert work.tp in revoking
            assert outcome.kind is Kind.RETRY
            assert outcome.hold or not backoff.exhausted(work.attempts)
        if not owned:
            assert verdict.action is Action.DROP
        # A held outcome (outage, quota, credentials) is never dead-lettered; a whole call held
        # goes back as it was (the breaker paces it), a held entry waits for its backoff.
        if outcome.hold:
            held = Action.HELD if outcome.whole_call else Action.RETRY
            assert verdict.action in (held, Action.DROP)
        # Retries are due in the future; only retries carry a due time, only dead letters a reason.
        if verdict.action is Action.RETRY:
            assert verdict.due >= now
            assert verdict.due <= now + backoff.max_s
        else:
            assert verdict.due == 0.0
        assert (verdict.reason is not None) == (verdict.action is Action.DEAD_LETTER)
        if verdict.reason is not None:
            assert verdict.reason.attempts == work.attempts
            assert verdict.reason.code == outcome.code
            assert verdict.reason.stage == "send"
    assert judged.throttled == any(o.throttled for o in outcomes)
    assert (judged.call_failure is not None) == bool(outcomes and outcomes[0].whole_call)

    # judge decides; the loop applies. No work item was touched.
    assert [snapshot(w) for w in batch] == before


@settings(max_examples=40, deadline=None)
@given(calls(), BACKOFFS, st.integers(0, 2**32), st.floats(0, 1e9))
def test_judging_is_deterministic_for_a_seed(
    call: tuple[list[Work], list[Outcome], dict[TP, int], set[TP]],
    backoff: Backoff,
    seed: int,
    now: float,
) -> None:
    first = judge_call(call, backoff, seed, now)
    second = judge_call(call, backoff, seed, now)
    assert first == second


def test_a_throttled_entry_waits_the_first_delay_when_the_rate_limit_paces_sends() -> None:
    """With the adaptive rate limit on, the limit (not each entry's growing wait) answers a
    quota; an entry throttled for the fifth time waits what the first retry waits, not 0.8-1.6 s
    holding its partition's commit. Other retryable failures keep growing."""
    paced = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10, paced=True)
    unpaced = Backoff(initial_s=0.1, max_s=5.0, max_attempts=10)
    throttled = Outcome(Kind.RETRY, "ThrottlingException", "Rate exceeded", throttled=True)
    internal = Outcome(Kind.RETRY, "InternalException", "oops")
    rng = random.Random(1)

    def wait(backoff: Backoff, outcome: Outcome) -> float:
        work = make_work(attempts=5)
        [verdict] = judge(
            [work], [outcome], owns=lambda _: True, revoking=(), backoff=backoff, rng=rng, now=0.0
        ).verdicts
        assert verdict.action is Action.RETRY and verdict.due is not None
        return verdict.due

    assert all(0.05 <= wait(paced, throttled) <= 0.1 for _ in range(50))
    assert all(0.8 <= wait(unpaced, throttled) <= 1.6 for _ in range(50))
    assert all(0.8 <= wait(paced, internal) <= 1.6 for _ in range(50))
