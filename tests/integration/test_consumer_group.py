"""Two bridge processes in one consumer group: they share the partitions, and one hands over.

A and B run the same configuration. B joins while A is busy: the group splits the six
partitions between them. Half the records are produced before the start, half once both hold
partitions, so records are still flowing when A stops with SIGTERM: it drains, commits and
leaves, and B takes every partition over. Nothing is lost, and a clean handover sends
(almost) nothing twice.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from kafkatest import (
    DETAIL,
    BridgeProcess,
    Topics,
    bridge_config,
    committed,
    coordinates,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

from testbed.endpoint import Faults, LocalEventBridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

RECORDS = 4000
PARTITIONS = 6
MAX_BUFFERED = 300
SHUTDOWN_TIMEOUT_S = 20


def group_members(admin: AdminClient, group: str) -> list[set[int]]:
    """The partitions assigned to each member of ``group`` (as the coordinator sees it)."""
    description = admin.describe_consumer_groups([group])[group].result(10)
    return [
        {tp.partition for tp in member.assignment.topic_partitions}
        for member in description.members
    ]


def owned(bridge: BridgeProcess) -> set[int]:
    """The partitions ``bridge`` holds now, by its own log (assigned minus revoked/lost)."""
    held: set[int] = set()
    for event in bridge.log_events():
        names = event.get("partitions") or []
        parts = {int(n.rsplit("/", 1)[1]) for n in names}
        if event.get("event") == "partitions assigned":
            held |= parts
        elif event.get("event") in ("partitions revoked", "partitions lost"):
            held -= parts
    return held


def final_progress(bridge: BridgeProcess) -> dict[str, Any]:
    progress = [e for e in bridge.log_events() if e.get("event") == "progress"]
    assert progress, f"{bridge.name} logged no progress"
    return progress[-1]


def test_two_processes_share_partitions_and_hand_over_on_sigterm(
    kafka_bootstrap: str,
    admin: AdminClient,
    topics: Topics,
    endpoint: LocalEventBridge,
    tmp_path: Path,
) -> None:
    topic = topics.create("group", partitions=PARTITIONS)
    dlq = topics.create("group-dlq")
    records: list[tuple[bytes | None, bytes | None, int | None]] = [
        (f"k{i}".encode(), json.dumps({"id": i}).encode(), i % PARTITIONS) for i in range(RECORDS)
    ]
    # Half before the start, half once both processes share the partitions: records are
    # flowing to A when it stops, whatever the speed of the machine.
    produce(kafka_bootstrap, topic, records[: RECORDS // 2])

    endpoint.set_faults(Faults(latency_ms=15))
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.group", "detail_type": "Group", "detail": DETAIL}],
        dlq,
        pipeline={
            "max_buffered_records": MAX_BUFFERED,
            "commit_interval_ms": 200,
            "max_in_flight_calls": 2,
            "shutdown_timeout_s": SHUTDOWN_TIMEOUT_S,
        },
    )
    group = config["kafka"]["group_id"]
    a = BridgeProcess(config, tmp_path, name="bridge-a")
    b = BridgeProcess(config, tmp_path, name="bridge-b")
    started = time.monotonic()
    try:
        a.start()
        wait_until(lambda: len(endpoint.received()) >= 100 or not a.alive(), 60, "A delivering")
        assert a.alive(), f"A exited early:\n{a.log_path.read_text()[-3000:]}"
        b.start()

        def shared() -> list[set[int]] | None:
            members = group_members(admin, group)
            if len(members) != 2 or not all(members):
                return None
            first, second = members
            if first & second or first | second != set(range(PARTITIONS)):
                return None
            # the coordinator's view agrees with what each process says it holds
            if {frozenset(owned(a)), frozenset(owned(b))} != {frozenset(first), frozenset(second)}:
                return None
            return members

        members = wait_until(
            shared, 60, "two members with disjoint, non-empty assignments covering 6 partitions"
        )
        assert a.alive() and b.alive()
        received_at_share = len(endpoint.received())
        a_parts, b_parts = owned(a), owned(b)

        produce(kafka_bootstrap, topic, records[RECORDS // 2 :])
        first_half = Counter(p for _, _, p in records[: RECORDS // 2])
        per_partition = Counter(p for _, _, p in records)

        def a_delivering_second_half() -> bool:
            return any(
                p in a_parts and o >= first_half[p]
                for _, p, o in (
                    coordinates(r.entry) for r in endpoint.received()[received_at_share:]
                )
            )

        # SIGTERM as soon as A delivers the records produced now: it has more in hand.
        wait_until(a_delivering_second_half, 30, "A delivering the second half", interval=0.02)
        at_stop = [coordinates(r.entry) for r in endpoint.received()]
        a_pending = sum(per_partition[p] for p in a_parts) - len(
            {(p, o) for _, p, o in at_stop if p in a_parts}
        )
        b_while_shared = sum(1 for _, p, _ in at_stop[received_at_share:] if p in b_parts)
        assert a_pending > 0, "records of A's partitions should still be flowing when A stops"
        stop_started = time.monotonic()
        code_a = a.terminate(timeout=SHUTDOWN_TIMEOUT_S + 15)
        stop_a_s = time.monotonic() - stop_started
        assert code_a == 0, f"A exit code {code_a}:\n{a.log_path.read_text()[-3000:]}"
        assert stop_a_s <= SHUTDOWN_TIMEOUT_S + 10, f"A took {stop_a_s:.1f}s to stop"
        assert owned(a) == set(), "A should have given up all its partitions"

        wait_until(
            lambda: (
                group_members(admin, group) == [set(range(PARTITIONS))]
                and owned(b) == set(range(PARTITIONS))
            ),
            60,
            "B alone in the group, holding all 6 partitions",
        )
        ends = end_offsets(kafka_bootstrap, topic)
        assert ends == {(topic, p): n for p, n in per_partition.items()}
        wait_until(
            lambda: committed(kafka_bootstrap, group, topic) == ends or not b.alive(),
            90,
            "committed offsets to reach the end offsets",
            interval=0.5,
        )
        assert b.alive(), f"B exited early:\n{b.log_path.read_text()[-3000:]}"
        code_b = b.terminate(timeout=SHUTDOWN_TIMEOUT_S + 15)
        assert code_b == 0, f"B exit code {code_b}:\n{b.log_path.read_text()[-3000:]}"
    finally:
        for proc in (a, b):
            if proc.alive():
                proc.kill()
    elapsed = time.monotonic() - started

    produced = {
        (m.topic(), m.partition(), m.offset()): m.value() for m in read_all(kafka_bootstrap, topic)
    }
    assert len(produced) == RECORDS
    received = endpoint.received()
    by_record = Counter(coordinates(r.entry) for r in received)
    for r in received:
        assert json.loads(r.entry["Detail"])["order"] == json.loads(produced[coordinates(r.entry)])
    lost = set(produced) - set(by_record)
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert set(by_record) == set(produced)
    dead = read_all(kafka_bootstrap, dlq)
    assert dead == [], "no record should be dead-lettered: no failures were injected"
    duplicates = sum(n - 1 for n in by_record.values())
    assert duplicates <= MAX_BUFFERED, f"{duplicates} duplicates > max_buffered_records"
    delivered_a = final_progress(a)["delivered"]
    delivered_b = final_progress(b)["delivered"]
    assert delivered_a > 0 and delivered_b > 0, "both processes should have delivered"
    assert delivered_a + delivered_b == len(received), (
        f"the processes counted {delivered_a}+{delivered_b} deliveries,"
        f" the endpoint received {len(received)} entries"
    )
    assert endpoint.violations == []
    print(
        f"\nconsumer-group: records={RECORDS} received={len(received)} duplicates={duplicates}"
        f" max_buffered={MAX_BUFFERED} shared={sorted(sorted(m) for m in members)}"
        f" received_when_shared={received_at_share} received_when_A_stopped={len(at_stop)}"
        f" A_pending_at_sigterm={a_pending} B_delivered_while_shared={b_while_shared}"
        f" delivered_by_A={delivered_a} delivered_by_B={delivered_b}"
        f" A_stop={stop_a_s:.1f}s time={elapsed:.1f}s"
    )
