"""Helpers of the integration tier: a Kafka broker, the local EventBridge endpoint, the bridge.

The broker is session-scoped: ``KAFKA_BOOTSTRAP_SERVERS`` points at your own, otherwise one is
started from Maven Central jars (or testcontainers where a Docker engine runs). Each test gets
fresh topics and a fresh consumer group.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bridge.app import Bridge, build_bridge
from bridge.config import BridgeConfig
from bridge.offsets.metadata import decode

ROOT = Path(__file__).resolve().parents[2]

DETAIL = "${ {order: value, kafka: {topic: topic, partition: partition, offset: offset}} }"
"""A ``detail`` template that carries each record's Kafka coordinates (see :func:`coordinates`)."""
DLQ_HEADER_PREFIX = "__bridge.errors."


class Topics:
    """Creates uniquely named topics for one test."""

    def __init__(self, admin: AdminClient) -> None:
        self.admin = admin

    def create(self, prefix: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        futures = self.admin.create_topics(
            [NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30
        )
        futures[name].result(30)
        wait_until(
            lambda: name in self.admin.list_topics(timeout=5).topics, 30, f"topic {name} visible"
        )
        return name


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until truthy; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(interval)


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, int | None]]
) -> None:
    """Produce ``(key, value, partition)`` records (partition None: by key) and wait for acks."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    errors: list[Any] = []
    for key, value, partition in records:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        kwargs["on_delivery"] = lambda err, _m: errors.append(err) if err else None
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert not errors, errors


def end_offsets(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-" + uuid.uuid4().hex})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        out = {}
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[(topic, p)] = high
        return out
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[tuple[str, int], int]:
    """Committed offsets of ``group`` on every partition of ``topic`` (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def committed_finished(
    bootstrap: str, group: str, topic: str
) -> dict[tuple[str, int], tuple[int, frozenset[int]]]:
    """Per partition of ``topic``: the committed offset of ``group`` (-1001: none) and the
    offsets above it its commit metadata records finished (:mod:`bridge.offsets.metadata`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        out = {}
        for tp in consumer.committed(tps, timeout=10):
            finished = (
                frozenset(decode(tp.offset, tp.metadata).offsets) if tp.offset >= 0 else frozenset()
            )
            out[(tp.topic, tp.partition)] = (tp.offset, finished)
        return out
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every message of ``topic`` from the beginning to its current end."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for (t, p) in ends])
    out: list[Any] = []
    remaining = {tp for tp, end in ends.items() if end > 0}
    deadline = time.monotonic() + 60
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error():
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
                remaining.discard((msg.topic(), msg.partition()))
    consumer.close()
    assert not remaining, f"could not read {topic} to its end: {remaining}"
    return out


def wait_committed(
    config: dict[str, Any], topic: str, timeout: float = 120
) -> dict[tuple[str, int], int]:
    """Wait until the group of ``config`` has committed ``topic`` up to its end offsets.

    The end offsets are taken now (produce first); they are returned.
    """
    bootstrap = config["kafka"]["bootstrap_servers"]
    ends = end_offsets(bootstrap, topic)
    group = config["kafka"]["group_id"]
    wait_until(lambda: committed(bootstrap, group, topic) == ends, timeout, "all committed")
    return ends


def run_to_end(
    run_bridge: Callable[[dict[str, Any]], RunningBridge],
    config: dict[str, Any],
    topic: str,
    timeout: float = 120,
) -> RunningBridge:
    """Run a bridge with ``config`` until ``topic`` is committed to its end, then stop it."""
    bridge = run_bridge(config)
    wait_committed(config, topic, timeout)
    bridge.stop()
    return bridge


def coordinates(entry: dict[str, Any]) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of an entry whose Detail was rendered by :data:`DETAIL`."""
    kafka = json.loads(entry["Detail"])["kafka"]
    return kafka["topic"], kafka["partition"], kafka["offset"]


def dlq_headers(msg: Any) -> dict[str, str]:
    """The ``__bridge.errors.*`` headers of a dead letter, prefix removed, values decoded."""
    return {
        k.removeprefix(DLQ_HEADER_PREFIX): v.decode()
        for k, v in msg.headers() or []
        if k.startswith(DLQ_HEADER_PREFIX)
    }


def dead_letter_codes(messages: list[Any]) -> dict[tuple[int, int], str]:
    """``(partition, offset)`` of the record of each dead letter -> its error code."""
    return {(int(h["partition"]), int(h["offset"])): h["code"] for h in map(dlq_headers, messages)}


def bridge_config(
    bootstrap: str,
    endpoint_url: str,
    mappings: list[dict[str, Any]],
    dlq_topic: str,
    group: str | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config dict for tests: fast retries, short commit interval, JSON logs."""
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group or "bridge-" + uuid.uuid4().hex[:8],
            "properties": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        },
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url},
        "batch": {"linger_ms": 5},
        "retry": {"max_attempts": 12, "initial_backoff_ms": 5, "max_backoff_ms": 100},
        "dlq": {"topic": dlq_topic, "retry_backoff_ms": 200},
        "pipeline": {"commit_interval_ms": 200, "shutdown_timeout_s": 20},
        "logging": {"format": "json", "level": "info"},
        "observability": {"port": 0, "host": "127.0.0.1"},
        "mappings": mappings,
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:  # a top-level scalar such as sink
            config[section] = values
    return config


class RunningBridge:
    """A bridge running in a thread of the test process."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.bridge: Bridge = build_bridge(config)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bridge", daemon=True)

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    @property
    def stats(self) -> Any:
        return self.bridge.pipeline.stats

    def stop(self, timeout: float = 60) -> None:
        self.bridge.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "bridge did not stop"
        if self.error is not None:
            raise self.error


class BridgeProcess:
    """``python -m bridge run`` in a child process, as a user runs it."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "bridge") -> None:
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> BridgeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.starts += 1
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
        return events

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
