"""The new bus under SIGKILLs: ``bridge run`` killed 20 times at random moments and restarted,
inside the bus's deduplication window. Every record is PUBLISHED exactly once (what a killed
bridge had sent and not committed is sent again and answered DEDUPLICATED), each group keeps
Kafka's order, and the committed offsets reach the end offsets."""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafkatest import (
    BridgeProcess,
    Topics,
    bridge_config,
    committed,
    dead_letter_codes,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

from testbed.base import Faults
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RECORDS = int(os.environ.get("BUSV2_CRASH_RECORDS", "20000"))
KEYS = 1000
KILLS = int(os.environ.get("BUSV2_KILLS", "20"))


def test_sigkilled_20_times_every_record_published_once_in_order(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    topic = topics.create("v2-crash", partitions=6)
    dlq = topics.create("v2-crash-dlq")
    rng = random.Random(9)
    records: list[tuple[bytes | None, bytes | None, int | None]] = []
    for i in range(RECORDS):
        value: dict[str, Any] = {"n": i}
        if i % 100 == 37:
            value["bad"] = True  # refused by the bus whenever sent: dead-lettered, 1%
        records.append((b"key-%d" % rng.randrange(KEYS), json.dumps(value).encode(), None))
    produce(kafka_bootstrap, topic, records)
    ends = end_offsets(kafka_bootstrap, topic)
    faults = Faults(
        per_entry_failures={"InternalException": 0.2},
        fail_if_detail_contains={'"bad":true': "ValidationError"},
        latency_ms=15,
        latency_jitter_ms=15,
    )
    with LocalEventBusV2(seed=3, faults=faults) as bus:
        mapping = {
            "topic": topic,
            "source": "com.example.orders",
            "detail_type": "Order",
            "event_group_id": "${key}",
        }
        config = bridge_config(
            kafka_bootstrap,
            bus.url,
            [mapping],
            dlq,
            sink="event_bus_v2",
            aws={"event_bus_arn": BUS_ARN},
            # A ceiling on the rate, so that the records outlast the 20 kills and restarts.
            pipeline={
                "max_in_flight_calls": 48,
                "max_buffered_records": 3000,
                "max_entries_per_second": 600,
            },
        )
        group = config["kafka"]["group_id"]
        bridge = BridgeProcess(config, tmp_path)
        kills = 0
        began = time.monotonic()
        bridge.start()
        while kills < KILLS:
            # Killed while sending: a few calls answered since the start, then a random moment.
            target = len(bus.calls()) + 3
            wait_until(lambda t=target: len(bus.calls()) >= t, 120, "the bridge sending")
            time.sleep(rng.uniform(0.0, 1.0))
            if committed(kafka_bootstrap, group, topic) == ends:
                break  # done before all the kills: the test says how many it made
            bridge.kill()
            kills += 1
            bridge.start()
        wait_until(
            lambda: committed(kafka_bootstrap, group, topic) == ends,
            600,
            "committed offsets to reach the end offsets",
            interval=1,
        )
        assert bridge.terminate() == 0
        took = time.monotonic() - began
        received = bus.received()
        stats = bus.stats()

    assert kills >= KILLS // 2, f"only {kills} kills before the end"
    dead = dead_letter_codes(read_all(kafka_bootstrap, dlq))
    bad = {
        (m.partition(), m.offset())
        for m in read_all(kafka_bootstrap, topic)
        if b'"bad"' in m.value()
    }
    assert set(dead) == bad and set(dead.values()) == {"ValidationError"}
    ids = [r.deduplication_id for r in received]
    assert len(ids) == len(set(ids)), "a record was published twice"
    assert len(ids) + len(bad) == RECORDS, "a record was lost"
    expected: dict[tuple[str, int], list[int]] = defaultdict(list)
    for msg in sorted(read_all(kafka_bootstrap, topic), key=lambda m: (m.partition(), m.offset())):
        if (msg.partition(), msg.offset()) not in bad:
            expected[(msg.key().decode(), msg.partition())].append(msg.offset())
    published: dict[tuple[str, int], list[int]] = defaultdict(list)
    for group_id, record_ids in bus.group_order().items():
        for record_id in record_ids:
            _, partition, offset = record_id.rsplit("-", 2)
            published[(group_id, int(partition))].append(int(offset))
    assert dict(published) == dict(expected)
    print(  # pytest -s
        f"\n{RECORDS} records, {KEYS} keys, {kills} SIGKILLs in {took:.0f} s:"
        f" {len(ids)} published once, {stats['entries_deduplicated']} re-sends answered"
        f" DEDUPLICATED, {len(bad)} dead-lettered"
    )
    assert stats["entries_deduplicated"] > 0, "no re-send happened: the kills hit nothing"
