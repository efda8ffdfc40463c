"""Throttling lowers the adaptive rate whichever bus said it, from answer to rate (pure).

The review found that Alibaba's ``Throttling*`` / ``TooManyRequests`` answers never lowered the
rate: only AWS's ``ThrottlingException`` code was recognised. Now each sink sets
``Outcome.throttled``; these tests follow one answer through what the loop does with it
(classify -> judge -> ``Dispatcher.throttled``) without any I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest
from work_support import make_work

from bridge.pipeline.dispatch import Dispatcher
from bridge.pipeline.judge import Action, judge
from bridge.pipeline.work import Work
from bridge.sink import alibaba, outcome
from bridge.sink.outcome import Outcome
from bridge.sink.ratelimit import RateController
from bridge.sink.retry import Backoff

N = 20


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


def send_and_judge(answer: Callable[[int], list[Outcome]]) -> tuple[Dispatcher, bool]:
    """One call through the pure parts of the loop; returns the dispatcher and the verdict."""
    dispatch = Dispatcher(4, RateController(None, adaptive=True))
    dispatch.submit([make_work(("orders", 0), i) for i in range(N)])
    ((call_id, _),) = dispatch.startable(0.0, lambda _: True)
    done = dispatch.complete(call_id)
    assert done is not None
    batch: Sequence[Work] = done[0]
    judged = judge(
        batch,
        answer(len(batch)),
        owns=lambda _: True,
        revoking=frozenset(),
        backoff=Backoff(0.1, 5.0, 3),
        rng=random.Random(1),
        now=0.2,
    )
    if judged.throttled:  # what bridge/pipeline/send.py does with the judgement
        dispatch.throttled(0.2)
    assert judged.verdicts[-1].action is not Action.DEAD_LETTER  # throttled or not, retried
    return dispatch, judged.throttled


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
    # Starts from the rate sent (20 entries in the last second), cut by the decrease factor.
    assert dispatch.rate.limit < math.inf
    assert dispatch.rate.limit == max(dispatch.rate.floor, N * dispatch.rate.decrease_factor)


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
