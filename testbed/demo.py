"""The demo: a local broker and endpoint, sample records, the bridge, the events shown.

The README's first command (``./scripts/demo.sh``) runs ``python -m testbed.demo`` from a
checkout: it needs Java and the Kafka jars (``scripts/setup.sh``) and ``config/local.yaml``,
none of which the product's wheel or image carries.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.config.load import load_config
from testbed.endpoint import Faults, LocalEventBridge
from testbed.kafka import LocalKafka

CONFIG = Path(__file__).resolve().parents[1] / "config" / "local.yaml"
TOPIC = "demo-orders"
DLQ = "demo-dlq"


def run_demo(records: int = 20, config_path: Path = CONFIG) -> int:
    """Run the whole demo; returns the exit code (0 when every record is accounted for)."""
    print("==> starting a local Kafka broker (Apache Kafka from Maven Central jars)", flush=True)
    with LocalKafka(auto_create_topics=False) as kafka, LocalEventBridge(seed=1) as endpoint:
        print(f"    broker at {kafka.bootstrap_servers}")
        print(
            f"==> local EventBridge-compatible endpoint at {endpoint.url}"
            " (10% of entries throttled, to show retries)"
        )
        endpoint.set_faults(Faults(per_entry_failures={"ThrottlingException": 0.10}))
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
        for name, parts in ((TOPIC, 3), (DLQ, 1)):
            admin.create_topics([NewTopic(name, parts, 1)])[name].result(30)
        _produce_samples(kafka.bootstrap_servers, records)
        print(f"==> produced {records} sample orders and 1 record that is not JSON to '{TOPIC}'")

        os.environ["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        os.environ["BRIDGE_AWS__ENDPOINT_URL"] = endpoint.url
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        config = load_config(config_path)
        print(f"==> running the bridge with {config_path}")

        from bridge.app import build_bridge

        bridge = build_bridge(config)
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        total = records + 1
        deadline = time.monotonic() + 120
        stats = bridge.pipeline.stats
        while stats.delivered + stats.dead_lettered < total and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # one more commit interval
        bridge.stop()
        thread.join(60)
        del bridge  # close the bridge's Kafka clients before the broker stops
        gc.collect()

        _show_events(endpoint)
        _show_dead_letters(kafka.bootstrap_servers)
        committed = _committed(kafka.bootstrap_servers, config.kafka.group_id)
        print(f"\n==> committed offsets: {committed}")
        print(
            f"==> {stats.delivered} delivered, {stats.dead_lettered} dead-lettered,"
            f" {stats.retries} retries after throttling, {stats.calls} PutEvents calls"
        )
        ok = stats.delivered == records and stats.dead_lettered == 1
        print("==> every record accounted for" if ok else "==> SOMETHING IS MISSING")
        return 0 if ok else 1


def _produce_samples(bootstrap: str, count: int) -> None:
    rng = random.Random(42)
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for i in range(count):
        order = {
            "id": f"o-{i:04d}",
            "customer": f"c-{rng.randint(1, 5)}",
            "status": rng.choice(["created", "paid", "shipped"]),
            "total": round(rng.uniform(5, 500), 2),
        }
        producer.produce(TOPIC, key=f"o-{i:04d}".encode(), value=json.dumps(order).encode())
    producer.produce(TOPIC, key=b"broken", value=b"this is not JSON")
    producer.flush(30)


def _show_events(endpoint: LocalEventBridge) -> None:
    received = sorted(
        endpoint.received(), key=lambda r: json.loads(r.entry["Detail"])["order"]["id"]
    )
    print(f"\n==> {len(received)} events received by the EventBridge endpoint:")
    for r in received:
        e = r.entry
        detail = json.loads(e["Detail"])
        print(
            f"  {e['Source']:18} {e['DetailType']:15} {json.dumps(detail['order'])}"
            f"  <- {detail['kafka']['topic']}/{detail['kafka']['partition']}"
            f"@{detail['kafka']['offset']}"
        )


def _show_dead_letters(bootstrap: str) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "demo-dlq-reader", "log_level": 0}
    )
    consumer.assign([TopicPartition(DLQ, 0, 0)])
    messages: list[Any] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not messages:
        messages = [m for m in consumer.consume(10, 0.5) if not m.error()]
    consumer.close()
    print(f"\n==> {len(messages)} record(s) in the dead-letter topic '{DLQ}':")
    for m in messages:
        headers = {
            k.removeprefix("__bridge.errors."): v.decode()
            for k, v in m.headers() or []
            if k.startswith("__bridge.")
        }
        print(
            f"  value={m.value()!r} code={headers.get('code')}"
            f" stage={headers.get('stage')}"
            f" from={headers.get('topic')}/{headers.get('partition')}"
            f"@{headers.get('offset')}"
        )
        print(f"    reason: {headers.get('message')}")


def _committed(bootstrap: str, group: str) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    tps = [TopicPartition(TOPIC, p) for p in range(3)]
    out = {f"{tp.topic}/{tp.partition}": tp.offset for tp in consumer.committed(tps, timeout=10)}
    consumer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.demo [--records N]``; the exit code of :func:`run_demo`."""
    parser = argparse.ArgumentParser(
        prog="python -m testbed.demo",
        description="A local broker and endpoint, sample records, the bridge, the events shown.",
    )
    parser.add_argument("--records", type=int, default=20, help="sample records to produce")
    args = parser.parse_args(argv)
    return run_demo(records=args.records)


if __name__ == "__main__":
    sys.exit(main())
