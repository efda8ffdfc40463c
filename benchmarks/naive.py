"""The naive baseline: one put_events call at a time, with the retry loop of AWS's guide.

    python benchmarks/naive.py BOOTSTRAP ENDPOINT_URL TOPIC

Reads 10 records, builds their entries, calls put_events, re-sends the failed entries until none
fail (the loop in the user guide, seed 004), commits, and repeats until SIGTERM. This is how the
AWS Kafka Connect sink sends (one batch at a time per task); it exists only to be measured.
"""

from __future__ import annotations

import json
import signal
import sys
import uuid
from datetime import UTC, datetime

import boto3
from confluent_kafka import Consumer


def main() -> int:
    bootstrap, endpoint_url, topic = sys.argv[1:4]
    events = boto3.client("events", endpoint_url=endpoint_url, region_name="us-east-1")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"naive-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        messages = [m for m in consumer.consume(10, 0.5) if not m.error()]
        if not messages:
            continue
        entries = []
        for m in messages:
            detail = {"v": json.loads(m.value()), "p": m.partition(), "o": m.offset(),
                      "ts": m.timestamp()[1]}
            entries.append({"Source": "com.example.bench", "DetailType": "Order",
                            "Detail": json.dumps(detail),
                            "Time": datetime.fromtimestamp(m.timestamp()[1] / 1000, tz=UTC)})
        result = events.put_events(Entries=entries)
        while result["FailedEntryCount"] > 0:
            entries = [e for e, r in zip(entries, result["Entries"], strict=True)
                       if r.get("ErrorCode")]
            result = events.put_events(Entries=entries)
        consumer.commit(asynchronous=False)
    consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
