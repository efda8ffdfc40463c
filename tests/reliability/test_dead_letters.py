"""The dead-letter topic deleted for a while, then refusing writes for a while.

Builds on ``tests/integration/test_dead_letter_unwritable.py`` (a topic that refuses every write
from the start): here records keep flowing, one in twenty must be dead-lettered, the topic is
deleted mid-stream and created again, then made to refuse writes (``max.message.bytes`` below
any dead letter) and fixed. Meanwhile good records keep being delivered, but no committed offset
may pass a record whose dead letter is not written: the audit checks every sample.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from .accounting import Expect
from .harness import Run, produce_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1200)]


def set_max_message_bytes(admin: AdminClient, topic: str, value: int) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)


def test_dead_letter_topic_deleted_then_refusing_writes(
    scenario: Callable[..., Run], admin: AdminClient, long_mode: bool
) -> None:
    # Deleted for less than librdkafka's topic.metadata.propagation.max.ms (30 s): past it
    # produce() itself refuses the missing topic, see
    # test_dead_letter_topic_deleted_once_known_to_the_producer.
    seconds = 25.0 if long_mode else 5.0
    run = scenario(
        "dead-letter topic deleted, then refusing writes",
        dlq={"producer": {"message.timeout.ms": 3000}, "retry_backoff_ms": 300},
    )
    stream = run.stream(rate=300, bad_every=20)
    bridge = run.bridge().start()
    run.wait_delivering(300)

    def failed_writes() -> int:
        return sum(
            str(e.get("event", "")).startswith("DEAD-LETTER WRITE FAILED")
            for e in bridge.log_events()
        )

    # 1. Deleted. Everything before is finished and read, so the old topic's dead letters are
    # all in the account; then records flow again, every twentieth one with no topic to go to.
    stream.pause()
    run.wait_caught_up()
    run.audit.dlq_gone()
    admin.delete_topics([run.dlq], operation_timeout=30)[run.dlq].result(30)
    wait_until(lambda: run.dlq not in admin.list_topics(timeout=5).topics, 30, "topic deleted")
    deleted = run.fault(f"dead-letter topic deleted {seconds:.0f}s", bound=0)
    stream.resume()
    time.sleep(seconds)
    run.assert_alive()
    # librdkafka holds writes to a missing topic (or times them out: logged, written again);
    # either way nothing is committed past the first bad record: each partition falls behind
    # by far more than its usual lag (a few dozen records at 300/s, committing every 200 ms).
    held = {p: end - run.audit.positions()[p] for p, end in run.audit.end_offsets().items()}
    assert all(n >= 100 for n in held.values()), f"not held while the topic was gone: {held}"
    failed_before_refusing = failed_writes()
    with run.audit.dlq_lock:  # the audit reads the new topic from its start
        futures = admin.create_topics([NewTopic(run.dlq, 1, 1)], operation_timeout=30)
        futures[run.dlq].result(30)
        wait_until(lambda: run.dlq in admin.list_topics(timeout=5).topics, 30, "topic back")
        run.audit.dlq_back()
    run.clear(deleted)
    run.wait_recovered(deleted)

    # 2. Refusing writes: every dead letter is larger than 200 bytes with its headers.
    refusing = run.fault(f"dead-letter topic refusing writes {seconds:.0f}s", bound=0)
    set_max_message_bytes(admin, run.dlq, 200)
    time.sleep(seconds)
    run.assert_alive()
    failed_while_refusing = failed_writes() - failed_before_refusing
    set_max_message_bytes(admin, run.dlq, 1048576)
    run.clear(refusing)

    run.finish(notes=f"held while deleted: {held}")
    assert failed_while_refusing > 0, "no dead-letter write failed while the topic refused"


def test_dead_letter_topic_deleted_once_known_to_the_producer(
    scenario: Callable[..., Run], admin: AdminClient
) -> None:
    run = scenario(
        "dead-letter topic deleted, producer notices",
        # librdkafka marks a topic missing from metadata as non-existent after
        # topic.metadata.propagation.max.ms (30 s by default, which the long mode's 30 s
        # deletion reaches): 1 s here, so the scenario is short.
        dlq={
            "producer": {
                "message.timeout.ms": 2000,
                "topic.metadata.refresh.interval.ms": 1000,
                "topic.metadata.propagation.max.ms": 1000,
            },
            "retry_backoff_ms": 300,
        },
    )
    stream = run.stream(rate=300, bad_every=20)
    run.bridge().start()
    run.wait_delivering(300)
    stream.pause()
    run.wait_caught_up()
    run.audit.dlq_gone()
    admin.delete_topics([run.dlq], operation_timeout=30)[run.dlq].result(30)
    wait_until(lambda: run.dlq not in admin.list_topics(timeout=5).topics, 30, "topic deleted")
    fault = run.fault("dead-letter topic deleted 8s")
    stream.resume()
    time.sleep(8)
    run.assert_alive()
    with run.audit.dlq_lock:
        admin.create_topics([NewTopic(run.dlq, 1, 1)], operation_timeout=30)[run.dlq].result(30)
        wait_until(lambda: run.dlq in admin.list_topics(timeout=5).topics, 30, "topic created")
        run.audit.dlq_back()
    run.clear(fault)
    run.finish()


MB = 1024 * 1024


def test_dead_letter_over_the_topic_limit_is_held_then_written_whole(
    scenario: Callable[..., Run], admin: AdminClient
) -> None:
    """A 3 MB record that cannot be decoded, its source topic taking 16 MB, the dead-letter
    topic the broker's default 1 MB: the write is refused by the broker (not by the bridge's
    producer, whose limit is 64 MiB), logged with what to raise, the partition held; once the
    topic takes it, the record is dead-lettered byte for byte and the partition moves on."""
    big = str(16 * MB)
    run = scenario(
        "dead letter over the topic's max.message.bytes",
        partitions=1,
        topic_config={"max.message.bytes": big},
        dlq={"retry_backoff_ms": 300},
        mapping_overrides={"detail_type": "${value.type}"},
    )
    values = [b'{"type": "Before"}', b"[" + b"x" * (3 * MB), b'{"type": "After"}']
    produce_all(
        run.bootstrap,
        run.topic,
        [(b"k", value, 0, []) for value in values],
        **{"message.max.bytes": int(big)},
    )
    bridge = run.bridge().start()
    fault = run.fault("3 MB dead letter, topic takes 1 MB")

    def refusals() -> list[dict[str, Any]]:
        return [
            e
            for e in bridge.log_events()
            if str(e.get("event", "")).startswith("DEAD-LETTER WRITE FAILED")
        ]

    wait_until(lambda: refusals() or not bridge.alive(), 60, "a refused dead-letter write")
    run.assert_alive()
    hint = str(refusals()[0].get("hint"))
    assert "max.message.bytes" in hint and run.dlq in hint, refusals()[0]
    time.sleep(2)
    run.assert_alive()
    assert run.audit.positions()[0] <= 1, "committed past the record it could not dead-letter"

    set_max_message_bytes(admin, run.dlq, int(big))
    run.clear(fault)

    def expect(msg: Any) -> Expect:
        if msg.offset() == 1:
            return Expect.dead_letter("ValueNotJson", stages=["decode"])
        value = json.loads(msg.value())
        return Expect(True, detail_type=value["type"], value=value)

    run.finish(expect=expect, notes=f"{len(refusals())} refused writes, then written whole")
