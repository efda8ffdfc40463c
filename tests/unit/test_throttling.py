"""Throttling lowers the adaptive rate whichever bus said it, from answer to rate (pure).

The review found that Alibaba's ``Throttling*`` / ``TooManyRequests`` answers never lowered the
rate: only AWS's ``ThrottlingException`` code was recognised. Now each sink sets
``Outcome.throttled``; these tests follow one answer through what the loop does with it
(classify -> judge -> ``Dispatcher.throttled``) without any I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from work_support import make_work

from bridge.pipeline.dispatch import Dispatcher
from bridge.pipeline.judge import Action, judge
from bridge.sink import alibaba, outcome
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.ratelimit import RateController
from bridge.sink.retry import Backoff

N = 20

ANSWERED = [Outcome(Kind.DELIVERED, event_id="e")]
"""An answered call, as the controllers are told of it."""


def alibaba_entry(code: str) -> Callable[[int], list[Outcome]]:
    def answer(n: int) -> list[Outcome]:
        entries = [{"EventId": f"e{i}", "ErrorCode": "Success"} for i in range(n - 1)]
        entries.append({"ErrorCode": code, "ErrorMessage": "m"})
        return alibaba.classify_response({"EntryList": entries}, n)

    return answer


def alibaba_call(status: int, code: str) -> Callable[[int], list[Outcome]]:
    def answer(n: int) -> list[Outcome]:
        return [alibaba.classify_call_error(alibaba.AlibabaServiceError(status, code, "m"))] * n

    return answer


def aws_entry(code: str) -> Callable[[int], list[Outcome]]:
    def answer(n: int) -> list[Outcome]:
        entries = [{"EventId": f"e{i}"} for i in range(n - 1)]
        entries.append({"ErrorCode": code, "ErrorMessage": "m"})
        return outcome.classify_response({"Entries": entries}, n)

    return answer


def aws_call(status: int, code: str) -> Callable[[int], list[Outcome]]:
    def answer(n: int) -> list[Outcome]:
        return [outcome.classify_call_error(code, status, "m")] * n

    return answer


DELIVERED = Outcome(Kind.DELIVERED, event_id="e")


def send_and_judge(answer: Callable[[int], list[Outcome]]) -> tuple[Dispatcher, bool]:
    """Two seconds of calls through the pure parts of the loop, as bridge/pipeline/send.py
    drives them: each answer judged and fed back to the dispatcher's controllers. The bus
    answers ``answer`` for the first 0.6 s and delivers everything after, as a quota does once
    the sender slows down (throttling that does not go away when it slows down is background,
    and rightly leaves the rate alone: see bridge/sink/ratelimit.py)."""
    dispatch = Dispatcher(4, RateController(None, adaptive=True))
    throttled = False
    offsets = iter(range(10**6))
    for k in range(40):
        now = k * 0.05
        dispatch.submit([make_work(("orders", 0), next(offsets)) for _ in range(N)])
        for call_id, batch in dispatch.startable(now, lambda _: True):
            outcomes = answer(len(batch)) if now < 0.6 else [DELIVERED] * len(batch)
            judged = judge(
                batch,
                outcomes,
                owns=lambda _: True,
                revoking=frozenset(),
                backoff=Backoff(0.1, 5.0, 3),
                rng=random.Random(1),
                now=now + 0.01,
            )
            throttled |= judged.throttled
            assert dispatch.complete(call_id, outcomes, now + 0.01) is not None
            assert judged.verdicts[-1].action is not Action.DEAD_LETTER  # retried or held
    return dispatch, throttled


@pytest.mark.parametrize(
    "answer",
    [
        alibaba_entry("Throttling.User"),
        alibaba_entry("TooManyRequests"),
        alibaba_call(429, "TooManyRequests"),
        alibaba_call(400, "Throttling"),
        alibaba_call(429, "HTTP429"),
        aws_entry("ThrottlingException"),
        aws_call(400, "ThrottlingException"),
        aws_call(429, "SlowDown"),
    ],
    ids=[
        "alibaba-entry-Throttling.User",
        "alibaba-entry-TooManyRequests",
        "alibaba-call-429-TooManyRequests",
        "alibaba-call-400-Throttling",
        "alibaba-call-429",
        "aws-entry-ThrottlingException",
        "aws-call-ThrottlingException",
        "aws-call-429",
    ],
)
def test_a_throttled_answer_lowers_the_adaptive_rate(
    answer: Callable[[int], list[Outcome]],
) -> None:
    dispatch, throttled = send_and_judge(answer)
    assert throttled
    assert dispatch.rate.limit < math.inf, "the adaptive rate did not engage"


@pytest.mark.parametrize(
    "answer",
    [
        alibaba_entry("InternalError"),
        alibaba_entry("ServiceUnavailable"),
        alibaba_call(500, "InternalError"),
        alibaba_call(503, "ServiceUnavailable"),
        aws_entry("InternalFailure"),
        aws_call(500, "InternalFailure"),
        aws_call(503, "ServiceUnavailable"),
    ],
    ids=[
        "alibaba-entry-InternalError",
        "alibaba-entry-ServiceUnavailable",
        "alibaba-call-500",
        "alibaba-call-503",
        "aws-entry-InternalFailure",
        "aws-call-500",
        "aws-call-503",
    ],
)
def test_a_server_error_leaves_the_rate_alone(answer: Callable[[int], list[Outcome]]) -> None:
    dispatch, throttled = send_and_judge(answer)
    assert not throttled
    assert dispatch.rate.limit == math.inf
