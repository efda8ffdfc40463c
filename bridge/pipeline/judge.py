"""Judging a call's answer: each entry's fate, decided from the outcomes alone.

Pure: no metrics, no I/O, no clock of its own (``now`` and the random source are passed in).
The loop applies the verdicts (the tracker, the retry schedule, the dead-letter topic) and
counts them.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from bridge.dlq.writer import Reason
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.retry import Backoff


class Action(enum.Enum):
    """What becomes of one entry after an answer."""

    DELIVERED = "delivered"
    RETRY = "retry"
    """Sent again at ``Verdict.due``."""
    HELD = "held"
    """The call failed as a whole for the service's sake (an outage, throttling, credentials):
    the batch goes back first in line, paced by the circuit breaker, its attempts untouched."""
    ALONE = "alone"
    """The request was refused as a whole: sent again in a call of its own to find the culprit."""
    DEAD_LETTER = "dead_letter"
    DROP = "drop"
    """Its partition is no longer ours (revoked, lost, restarted): the new owner sends it."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One entry's fate, with the outcome it was judged on."""

    work: Work
    action: Action
    outcome: Outcome
    due: float = 0.0
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdicts of one call, in request order, and what the call says of the bus.

    Attributes:
        call_failure: The outcome of a call that failed as a whole (None when it answered).
        throttled: Whether the bus throttled the call or any of its entries.
    """

    verdicts: list[Verdict]
    call_failure: Outcome | None
    throttled: bool


def judge(
    batch: Sequence[Work],
    outcomes: Sequence[Outcome],
    *,
    owns: Callable[[Work], bool],
    revoking: Container[TP],
    backoff: Backoff,
    rng: random.Random,
    now: float,
) -> Judgement:
    """Each index on its own: delivered, retried later, sent alone, dead-lettered, or dropped.

    A call that failed as a whole for the service's sake (``whole_call`` and ``hold``) is
    HELD: sent again as it was, paced by the circuit breaker rather than by each entry's
    backoff, so that it goes again as soon as the service answers.

    Args:
        batch: The entries of the call, in request order.
        outcomes: One outcome per entry, same order (a whole-call failure repeats one outcome).
        owns: Whether a work item's partition is still ours, in the epoch it was consumed in.
        revoking: Partitions being revoked: their retries are the next owner's.
        backoff: The retry policy (delays and ``retry.max_attempts``).
        rng: Jitter for the retry delays.
        now: The time the answer is judged at.

    A retry's delay grows with every send of the entry, counted or not (``attempts + held``).
    ``Outcome.hold`` (an outage, the quota, credentials) is retried whatever the attempts; the
    loop then moves that send from ``attempts`` to ``held``. An entry out of attempts is
    dead-lettered with AWS's code and how many sends counted.
    """
    whole = outcomes[0] if outcomes and outcomes[0].whole_call else None
    verdicts: list[Verdict] = []
    for work, outcome in zip(batch, outcomes, strict=True):
        verdicts.append(_one(work, outcome, len(batch), owns, revoking, backoff, rng, now))
    return Judgement(verdicts, whole, any(o.throttled for o in outcomes))


def _one(
    work: Work,
    outcome: Outcome,
    size: int,
    owns: Callable[[Work], bool],
    revoking: Container[TP],
    backoff: Backoff,
    rng: random.Random,
    now: float,
) -> Verdict:
    if not owns(work):
        return Verdict(work, Action.DROP, outcome)
    if outcome.kind is Kind.DELIVERED:
        return Verdict(work, Action.DELIVERED, outcome)
    if outcome.kind is Kind.PERMANENT and outcome.whole_call and size > 1:
        return Verdict(work, Action.ALONE, outcome)
    if outcome.kind is Kind.RETRY and (outcome.hold or not backoff.exhausted(work.attempts)):
        if work.tp in revoking:
            return Verdict(work, Action.DROP, outcome)
        if outcome.whole_call and outcome.hold:
            return Verdict(work, Action.HELD, outcome)
        sends = work.attempts + work.held
        wait = (
            backoff.throttled_delay(sends, rng) if outcome.throttled else backoff.delay(sends, rng)
        )
        due = now + wait
        return Verdict(work, Action.RETRY, outcome, due=due)
    suffix = f" (after {work.attempts} attempts)" if outcome.kind is Kind.RETRY else ""
    message = (outcome.message or outcome.code) + suffix
    reason = Reason("send", outcome.code, message, work.attempts)
    return Verdict(work, Action.DEAD_LETTER, outcome, reason=reason)
