"""Alibaba Cloud EventBridge: from the real broker to a real HTTP endpoint that checks the
signature and the limits, with per-entry failures; every record accounted for."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from kafkatest import Topics, bridge_config, dead_letter_codes, produce, read_all, run_to_end

from bridge.sink.alibaba_wire import event_size
from testbed.alibaba_endpoint import LocalAlibabaEventBridge
from testbed.endpoint import Faults

pytestmark = pytest.mark.integration

KEY_ID = "LTAI-test-key"
SECRET = "alibaba-test-secret-XYZ"


def test_cloudevents_near_the_limits_with_partial_failures(
    kafka_bootstrap: str, topics: Topics, run_bridge: Any
) -> None:
    topic = topics.create("ali", partitions=2)
    dlq = topics.create("ali-dlq")
    rng = random.Random(9)
    records = []
    for i in range(400):
        pad = "汉" * rng.choice([10, 2000, 10_000, 21_500])  # 3 bytes each: up to ~64 KB events
        records.append((str(i).encode(), json.dumps({"i": i, "pad": pad}).encode(), None))
    records.append((b"big", json.dumps({"i": "big", "pad": "x" * 70_000}).encode(), None))
    produce(kafka_bootstrap, topic, records)

    with LocalAlibabaEventBridge(
        access_key_id=KEY_ID,
        access_key_secret=SECRET,
        seed=4,
        faults=Faults(per_entry_failures={"InternalError": 0.15, "EventBusNotExist": 0.01}),
    ) as endpoint:
        config = bridge_config(
            kafka_bootstrap,
            endpoint.url,
            [
                {
                    "topic": topic,
                    "source": "acs.kafka.${topic}",
                    "detail_type": "kafka:Record",
                    "subject": "kafka/${topic}/${partition}/${offset}",
                    "event_bus_name": "orders-bus",
                }
            ],
            dlq,
            sink="alibaba",
            alibaba={
                "endpoint": endpoint.url,
                "access_key_id": KEY_ID,
                "access_key_secret": SECRET,
            },
        )
        bridge = run_to_end(run_bridge, config, topic)
        received = endpoint.received()
        calls = [c for c in endpoint.calls() if c.operation == "PutEvents"]
        violations = endpoint.violations
        auth_failures = endpoint.stats()["auth_failures"]

    assert violations == [] and auth_failures == 0
    assert calls and max(c.entries for c in calls) <= 16 and max(c.size for c in calls) <= 262_144
    assert any(c.entries == 16 for c in calls), "small events fill a call to 16"
    assert max(event_size(r.event) for r in received) > 60_000, "events near 64 KB went through"
    ids = Counter(r.event["id"] for r in received)
    assert max(ids.values()) == 1
    for r in received:
        e = r.event
        t, p, o = e["id"].rsplit("-", 2)
        assert (t, e["source"], e["type"]) == (topic, f"acs.kafka.{topic}", "kafka:Record")
        assert e["subject"] == f"kafka/{topic}/{p}/{o}"
        assert e["aliyuneventbusname"] == "orders-bus"
        assert e["specversion"] == "1.0" and e["datacontenttype"] == "application/json"
        assert isinstance(e["data"], dict) and "pad" in e["data"]
    dead = dead_letter_codes(read_all(kafka_bootstrap, dlq))
    delivered = {
        (int(r.event["id"].rsplit("-", 2)[1]), int(r.event["id"].rsplit("-", 2)[2]))
        for r in received
    }
    assert delivered.isdisjoint(dead)
    assert len(delivered) + len(dead) == 401, "nothing lost"
    assert Counter(dead.values())["EntryTooLarge"] == 1
    assert bridge.stats.retries > 0
