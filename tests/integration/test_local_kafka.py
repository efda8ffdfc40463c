"""A real single-node Kafka broker from Maven Central jars: produce, consume, commit, restart.

Run: PYTHONPATH=. python3 -m pytest tests/integration/test_local_kafka.py -q -p no:cacheprovider
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from testbed.kafka import LocalKafka

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (shutil.which("java") and shutil.which("mvn")), reason="needs java and mvn on PATH"
    ),
]

N = 100


@pytest.fixture(scope="module")
def kafka() -> Iterator[LocalKafka]:
    broker = LocalKafka(auto_create_topics=False)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
    assert not broker.running
    assert not broker.data_dir.exists()  # the temporary data dir is removed on stop


def _consume_all(
    bootstrap: str, topic: str, group: str, expected: int
) -> list[tuple[int, int, bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[tuple[int, int, bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            part, offset, key, value = msg.partition(), msg.offset(), msg.key(), msg.value()
            assert part is not None and offset is not None and key is not None and value is not None
            got.append((part, offset, key, value))
        assert len(got) == expected
        consumer.commit(asynchronous=False)
        parts = [TopicPartition(topic, p) for p in range(3)]
        committed = consumer.committed(parts, timeout=10)
    finally:
        consumer.close()
    # committed offset of each partition = next offset to read = count of its records
    per_partition = {p: sum(1 for g in got if g[0] == p) for p in range(3)}
    assert {tp.partition: tp.offset for tp in committed} == per_partition
    return got


def test_produce_consume_commit_restart(kafka: LocalKafka) -> None:
    assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    deadline = time.monotonic() + 30  # metadata may lag the creation on a loaded machine
    while len(admin.list_topics(topic, timeout=10).topics[topic].partitions) != 3:
        assert time.monotonic() < deadline, "topic metadata did not show 3 partitions"
        time.sleep(0.2)

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    sent = {f"key-{i}".encode(): f"value-{i}-\u00e9".encode() for i in range(N)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    got = _consume_all(kafka.bootstrap_servers, topic, "g1", N)
    assert {k: v for _, _, k, v in got} == sent
    assert len({p for p, _, _, _ in got}) > 1  # keys were spread over the partitions

    port, data_dir = kafka.port, kafka.data_dir
    kafka.restart()
    assert kafka.running
    assert (kafka.port, kafka.data_dir) == (port, data_dir)

    # The committed offsets survived the restart, and a fresh group re-reads all 100 records.
    g1 = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "g1"})
    try:
        committed = g1.committed([TopicPartition(topic, p) for p in range(3)], timeout=20)
    finally:
        g1.close()
    assert sum(tp.offset for tp in committed) == N
    again = _consume_all(kafka.bootstrap_servers, topic, "g2", N)
    assert sorted(again) == sorted(got)


def test_kill_then_restart_keeps_acked_records(kafka: LocalKafka) -> None:
    topic = f"k-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    for i in range(10):
        producer.produce(topic, key=str(i).encode(), value=b"v")
    assert producer.flush(30) == 0

    kafka.kill()  # no clean shutdown
    assert not kafka.running
    kafka.restart()
    assert kafka.running
    assert len(_consume_all(kafka.bootstrap_servers, topic, "g3", 10)) == 10
