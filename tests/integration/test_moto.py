"""The bridge against moto in server mode: what an EventBridge rule routes to an SQS target."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kafkatest import Topics, bridge_config, produce, run_to_end

from bridge.cli import main

pytestmark = pytest.mark.integration


def test_events_routed_by_a_rule_to_sqs(
    kafka_bootstrap: str, topics: Topics, moto_url: str, run_bridge: Any
) -> None:
    events = boto3.client("events", endpoint_url=moto_url, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
    events.create_event_bus(Name="orders")
    queue_url = sqs.create_queue(QueueName="routed")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="paid-orders",
        EventBusName="orders",
        EventPattern=json.dumps({"source": ["com.example.moto"], "detail-type": ["Order paid"]}),
    )
    events.put_targets(
        Rule="paid-orders", EventBusName="orders", Targets=[{"Id": "q", "Arn": queue_arn}]
    )

    topic = topics.create("moto-orders", partitions=2)
    dlq = topics.create("moto-dlq")
    statuses = ["paid", "created"] * 15
    records = [
        (f"o{i}".encode(), json.dumps({"id": i, "status": s, "sku": "ß-1"}).encode(), i % 2)
        for i, s in enumerate(statuses)
    ]
    produce(kafka_bootstrap, topic, records)
    config = bridge_config(
        kafka_bootstrap,
        moto_url,
        [
            {
                "topic": topic,
                "source": "com.example.moto",
                "detail_type": "Order ${value.status}",
                "detail": "${value}",
                "resources": ["arn:aws:example:us-east-1:123456789012:order/${value.id}"],
                "event_bus_name": "orders",
            }
        ],
        dlq,
    )
    bridge = run_to_end(run_bridge, config, topic, timeout=90)
    assert bridge.stats.delivered == 30
    assert bridge.stats.dead_lettered == 0

    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(bodies) < 15 and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies += [json.loads(m["Body"]) for m in got.get("Messages", [])]
    assert len(bodies) == 15, "the rule routes exactly the 15 paid orders"
    assert sorted(b["detail"]["id"] for b in bodies) == list(range(0, 30, 2))
    for body in bodies:
        assert body["source"] == "com.example.moto"
        assert body["detail-type"] == "Order paid"
        assert body["detail"] == {"id": body["detail"]["id"], "status": "paid", "sku": "ß-1"}
        assert body["resources"] == [
            f"arn:aws:example:us-east-1:123456789012:order/{body['detail']['id']}"
        ]


def test_missing_event_bus_refuses_to_start(
    kafka_bootstrap: str, topics: Topics, moto_url: str, tmp_path: Path, capsys: Any
) -> None:
    topic = topics.create("nobus")
    config = bridge_config(
        kafka_bootstrap,
        moto_url,
        [{"topic": topic, "source": "s", "detail_type": "d"}],
        "unused-dlq",
        aws={"event_bus_name": "does-not-exist"},
    )
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "event bus 'does-not-exist' does not exist" in err
    assert "Traceback" not in err
