"""PutPartnerEvents and PutEvents through a global endpoint (SigV4a), from the real broker."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from kafkatest import Topics, bridge_config, dead_letter_codes, produce, read_all, run_to_end

from testbed.endpoint import Faults, LocalEventBridge

pytestmark = pytest.mark.integration

PARTNER_SOURCE = "aws.partner/example.com/123456789012/tickets"


def test_partner_events_20_per_call_with_partial_failures(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    topic = topics.create("partner", partitions=2)
    dlq = topics.create("partner-dlq")
    # mostly small tickets (20 fit a call), every 25th ~100 KB (calls cut by bytes instead)
    records = [
        (
            str(i).encode(),
            json.dumps({"ticket": i, "pad": "ü" * (50_000 if i % 25 == 0 else i % 700)}).encode(),
            None,
        )
        for i in range(1000)
    ]
    records.append((b"x", json.dumps({"ticket": "bad-source"}).encode(), None))
    produce(kafka_bootstrap, topic, records)
    endpoint.set_faults(
        Faults(per_entry_failures={"ThrottlingException": 0.15, "InvalidArgument": 0.01})
    )
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [
            {
                "topic": topic,
                # one record renders a source that is not a partner source: dead-lettered
                "source": "${value.ticket == 'bad-source' && 'acme.tickets' || '"
                + PARTNER_SOURCE
                + "'}",
                "detail_type": "Ticket",
                "detail": "${ {t: value, o: offset, p: partition} }",
            }
        ],
        dlq,
        sink="put_partner_events",
    )
    bridge = run_to_end(run_bridge, config, topic)

    calls = [c for c in endpoint.calls() if c.operation == "PutPartnerEvents"]
    assert calls and all(c.entries <= 20 for c in calls)
    assert max(c.entries for c in calls) == 20, "partner calls carry up to 20 entries"
    assert max(c.size for c in calls) <= 262_144
    assert max(c.size for c in calls) > 200_000, "calls filled towards the byte limit"
    assert endpoint.violations == []
    received = endpoint.received()
    assert all(
        set(r.entry) <= {"Time", "Source", "Resources", "DetailType", "Detail"} for r in received
    )
    assert all(r.entry["Source"] == PARTNER_SOURCE for r in received)
    delivered = Counter(
        (json.loads(r.entry["Detail"])["p"], json.loads(r.entry["Detail"])["o"]) for r in received
    )
    dead_at = dead_letter_codes(read_all(kafka_bootstrap, dlq))
    assert max(delivered.values()) == 1
    assert set(delivered).isdisjoint(dead_at)
    assert len(delivered) + len(dead_at) == 1001, "every record delivered or dead-lettered"
    assert list(dead_at.values()).count("NotPartnerSource") == 1
    assert bridge.stats.retries > 0


def test_global_endpoint_signs_with_sigv4a_and_sends_the_endpoint_id(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    topic = topics.create("global")
    dlq = topics.create("global-dlq")
    produce(kafka_bootstrap, topic, [(b"k", b'{"n": 1}', None) for _ in range(25)])
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.global", "detail_type": "G"}],
        dlq,
        aws={"endpoint_id": "abcde.veo", "check_event_bus": False},
    )
    run_to_end(run_bridge, config, topic)
    calls = [c for c in endpoint.calls() if c.operation == "PutEvents"]
    assert len(endpoint.received()) == 25
    assert {c.endpoint_id for c in calls} == {"abcde.veo"}
    assert {c.signature for c in calls} == {"AWS4-ECDSA-P256-SHA256"}, "SigV4a, not SigV4"
