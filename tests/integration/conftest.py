"""Integration tier fixtures: a real Kafka broker, the local EventBridge endpoint, the bridge.

The broker is session-scoped: ``KAFKA_BOOTSTRAP_SERVERS`` points at your own, otherwise one is
started from Maven Central jars (or testcontainers where a Docker engine runs). Each test gets
fresh topics and a fresh consumer group.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from kafkatest import RunningBridge, Topics
from moto.server import ThreadedMotoServer

from bridge.config.load import config_from_dict
from testbed.endpoint import LocalEventBridge


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if shutil.which("java") and shutil.which("mvn"):
        from testbed.kafka import LocalKafka

        broker = LocalKafka(auto_create_topics=False).start()
        yield broker.bootstrap_servers
        broker.stop()
        return
    from testbed.kafka import start_broker_for_tests

    bootstrap, stop = start_broker_for_tests()
    yield bootstrap
    stop()


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topics(admin: AdminClient) -> Topics:
    return Topics(admin)


@pytest.fixture
def endpoint() -> Iterator[LocalEventBridge]:
    with LocalEventBridge(seed=7) as server:
        yield server


@pytest.fixture
def moto_url() -> Iterator[str]:
    """A moto server (AWS APIs in memory) on a free port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def run_bridge() -> Iterator[Callable[[dict[str, Any]], RunningBridge]]:
    started: list[RunningBridge] = []

    def start(config: dict[str, Any]) -> RunningBridge:
        running = RunningBridge(config_from_dict(config))
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()
