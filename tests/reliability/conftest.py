"""Fixtures of the reliability suite; ``--reliability-long`` for the long mode; the table.

The short mode runs in the default test command. The long mode (``pytest tests/reliability
--reliability-long``) runs the same scenarios at full size: 20 SIGKILLs, the endpoint down for
60 s, 30 s throttling storms, ... Either way the figures of every scenario are collected and
printed as one table at the end of the session (``--reliability-report FILE`` also writes it).

The broker is this suite's own (session-scoped) when Java and Maven are there: it can be stopped
and restarted mid-stream, it has a SASL_SSL listener for the security tests, and it lets groups
use a 3 s session timeout so that a killed bridge's partitions move on quickly. With
``KAFKA_BOOTSTRAP_SERVERS`` set the suite runs on that broker and skips what needs its own.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from testbed.endpoint import LocalEventBridge
from testbed.kafka import LocalKafka

from .harness import RESULTS, Run, Topics, table

SASL_USER = "bridge-user"
SASL_PASSWORD = "Sasl-Secret-7f3Q9x"  # what the security tests grep the output for


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--reliability-long",
        action="store_true",
        default=False,
        help="run the reliability scenarios at full size (about 30 minutes on 2 cores)",
    )
    group.addoption(
        "--reliability-report",
        default=None,
        metavar="FILE",
        help="also write the reliability table (Markdown) to FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: a fault-injection scenario ending in the exact accounting check"
    )


def _long(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("--reliability-long"))
    except ValueError:  # the option is unknown when this conftest is not an initial one
        return False


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not RESULTS:
        return
    mode = "long" if _long(config) else "short"
    text = table(RESULTS)
    terminalreporter.section(f"reliability figures ({mode} mode)")
    terminalreporter.write_line(text)
    try:
        path = config.getoption("--reliability-report")
    except ValueError:
        path = None
    if path:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        Path(path).write_text(f"<!-- {mode} mode, {stamp}, {machine} -->\n{text}\n")


@dataclass
class Cluster:
    """The broker the suite runs on."""

    bootstrap: str
    kafka: LocalKafka | None  # None: not ours (cannot be restarted, no SASL/TLS listener)
    session_timeout_ms: int


@pytest.fixture(scope="session")
def long_mode(request: pytest.FixtureRequest) -> bool:
    return _long(request.config)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield Cluster(given, None, 6000)
        return
    if not (shutil.which("java") and shutil.which("mvn")):
        from testbed.kafka import start_broker_for_tests

        bootstrap, stop = start_broker_for_tests()
        yield Cluster(bootstrap, None, 6000)
        stop()
        return
    broker = LocalKafka(
        auto_create_topics=False,
        sasl_users={SASL_USER: SASL_PASSWORD},
        tls=True,
        extra_properties={"group.min.session.timeout.ms": "1000"},
    ).start()
    try:
        yield Cluster(broker.bootstrap_servers, broker, 3000)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def admin(cluster: Cluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


@pytest.fixture
def topics(admin: AdminClient) -> Topics:
    return Topics(admin)


@pytest.fixture
def endpoint() -> Iterator[LocalEventBridge]:
    with LocalEventBridge(seed=11) as server:
        yield server


@pytest.fixture
def scenario(
    cluster: Cluster, topics: Topics, endpoint: LocalEventBridge, tmp_path: Path
) -> Iterator[Callable[..., Run]]:
    """Makes the test's :class:`Run` (one per test); kills what is left after a failure."""
    runs: list[Run] = []

    def make(name: str, **kwargs: Any) -> Run:
        run = Run(
            name,
            bootstrap=cluster.bootstrap,
            topics=topics,
            endpoint=endpoint,
            workdir=tmp_path,
            session_timeout_ms=cluster.session_timeout_ms,
            **kwargs,
        )
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()
