"""Work items for the pipeline's unit tests, built on real ``confluent_kafka.Message`` objects."""

from __future__ import annotations

from confluent_kafka import Message

from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work

TPS: list[TP] = [("orders", 0), ("orders", 1), ("payments", 0)]


def make_work(
    tp: TP = ("orders", 0),
    offset: int = 0,
    *,
    epoch: int = 1,
    attempts: int = 0,
    held: int = 0,
    value: bytes = b'{"n": 1}',
) -> Work:
    """A work item of a real consumed message, as the loop makes one."""
    msg = Message(topic=tp[0], partition=tp[1], offset=offset, value=value)
    work = Work(msg, tp, epoch)
    work.entry = {"Source": "test", "DetailType": "t", "Detail": value.decode()}
    work.size = len(value)
    work.attempts = attempts
    work.held = held
    return work


def snapshot(work: Work) -> tuple[object, ...]:
    """Every field of a work item, to check that something did not change it."""
    return (
        work.msg,
        work.tp,
        work.offset,
        work.epoch,
        dict(work.entry),
        work.size,
        work.attempts,
        work.held,
    )
