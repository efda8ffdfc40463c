"""The suite's own tools, fast: the endpoint's answer-losing faults, its restart on the same
port, the broker's secure listener settings and test certificates, the accounting itself."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from confluent_kafka import Message

from testbed.endpoint import Faults, LocalEventBridge
from testbed.kafka import LocalKafka
from testbed.tls import write_test_pki

from .accounting import DETAIL_TYPE, SOURCE, Expect, account
from .harness import Bridge

pytestmark = pytest.mark.reliability
ENTRY = {"Source": "s", "DetailType": "d", "Detail": json.dumps({"a": 1})}


def client(url: str, read_timeout: float = 5) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="AKIATOOLS", aws_secret_access_key="x", region_name="us-east-1"
    )
    config = Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout)
    return session.client("events", endpoint_url=url, config=config)


def test_slow_and_reset_answers_are_processed_then_lost() -> None:
    with LocalEventBridge() as endpoint:
        events = client(endpoint.url, read_timeout=0.5)
        endpoint.set_faults(Faults(slow_rate=1.0, slow_ms=1000))
        with pytest.raises(ReadTimeoutError):
            events.put_events(Entries=[ENTRY, ENTRY])
        endpoint.set_faults(Faults(reset_rate=1.0))
        with pytest.raises(ConnectionClosedError):
            events.put_events(Entries=[ENTRY])
        endpoint.set_faults(Faults())
        assert events.put_events(Entries=[ENTRY])["FailedEntryCount"] == 0
        calls = endpoint.calls()
        assert [(c.fault, c.entries) for c in calls] == [("slow", 2), ("reset", 1), (None, 1)]
        assert {c.access_key_id for c in calls} == {"AKIATOOLS"}
        assert len(endpoint.received()) == 4, "the lost answers' entries were accepted"


def test_fault_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        Faults(slow_rate=0.7, reset_rate=0.5)
    with pytest.raises(ValueError):
        Faults(slow_ms=-1)
    assert Faults.from_dict({"reset_rate": 0.2}).reset_rate == 0.2


def test_a_stopped_endpoint_refuses_then_serves_on_the_same_port() -> None:
    with LocalEventBridge() as endpoint:
        url = endpoint.url
        events = client(url)
        events.put_events(Entries=[ENTRY])
        endpoint.stop()
        with pytest.raises(EndpointConnectionError):
            events.put_events(Entries=[ENTRY])
        endpoint.start()
        assert endpoint.url == url
        events.put_events(Entries=[ENTRY])
        assert len(endpoint.received()) == 2


def test_secure_listener_settings(tmp_path: Path) -> None:
    kafka = LocalKafka(data_dir=tmp_path, sasl_users={"alice": "pw-1"}, tls=True)
    assert kafka.secure_protocol == "SASL_SSL"
    props = dict(line.split("=", 1) for line in kafka._write_properties().read_text().splitlines())
    assert f"SECURE://127.0.0.1:{kafka.secure_port}" in props["listeners"]
    assert "SECURE:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert 'user_alice="pw-1"' in props["listener.name.secure.plain.sasl.jaas.config"]
    assert props["listener.name.secure.ssl.keystore.type"] == "PEM"
    assert "--add-scram" in kafka._scram_arguments()
    conf = kafka.secure_client_config(mechanism="SCRAM-SHA-512")
    assert conf["sasl.username"] == "alice" and conf["ssl.ca.location"] == str(kafka.ca_path)
    assert LocalKafka(data_dir=tmp_path / "plain").secure_port is None
    assert LocalKafka(data_dir=tmp_path / "tls", tls=True).secure_protocol == "SSL"
    with pytest.raises(ValueError):
        LocalKafka(sasl_users={"bob": 'a"b'})


def test_test_certificates_verify_for_127_0_0_1(tmp_path: Path) -> None:
    from cryptography import x509

    ca_path = write_test_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    chain = x509.load_pem_x509_certificates((tmp_path / "broker.pem").read_bytes())
    broker = chain[0]
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert b"PRIVATE KEY" in (tmp_path / "broker.pem").read_bytes()
    assert socket.inet_aton("127.0.0.1")


def message(offset: int, value: bytes | None, key: bytes | None = b"k") -> Message:
    return Message(topic="t", partition=0, offset=offset, key=key, value=value)


def entry(offset: int, value: Any, source: str = SOURCE) -> dict[str, Any]:
    detail = {"value": value, "kafka": {"topic": "t", "partition": 0, "offset": offset}}
    return {
        "Source": source,
        "DetailType": DETAIL_TYPE.replace("${topic}", "t"),
        "Detail": json.dumps(detail),
    }


def dead_letter(msg: Message, code: str, stage: str = "decode", attempts: int = 0) -> Message:
    headers = [
        (f"__bridge.errors.{k}", str(v).encode())
        for k, v in {
            "topic": "t",
            "partition": 0,
            "offset": msg.offset(),
            "stage": stage,
            "code": code,
            "message": "why",
            "attempts": attempts,
            "timestamp": 1,
        }.items()
    ]
    return Message(
        topic="dlq", partition=0, offset=0, key=msg.key(), value=msg.value(), headers=headers
    )


def test_the_accounting_finds_losses_duplicates_and_wrong_outcomes() -> None:
    good, bad, other = message(0, b'{"a": 1}'), message(1, b"not json {1"), message(2, b"{}")
    produced = {("t", 0, 0): good, ("t", 0, 1): bad, ("t", 0, 2): other}
    ok = account(produced, [entry(0, {"a": 1}), entry(2, {})], [dead_letter(bad, "ValueNotJson")])
    assert (ok.lost, ok.duplicates, ok.problems) == ([], 0, [])

    lost = account(produced, [entry(0, {"a": 1})], [dead_letter(bad, "ValueNotJson")])
    assert lost.lost == [("t", 0, 2)]
    twice = account(
        produced,
        [entry(0, {"a": 1}), entry(0, {"a": 1}), entry(2, {})],
        [dead_letter(bad, "ValueNotJson"), dead_letter(other, "InvalidArgument", "send", 1)],
        send_codes=["InvalidArgument"],
        max_attempts=3,
    )
    assert twice.duplicates == 2 and not twice.problems  # a repeat, and one received + dead
    wrong = account(
        produced,
        [entry(0, {"a": 2}), entry(1, "x"), entry(2, {}, source="other")],
        [dead_letter(good, "Throttled", "send", 1)],
        expect=lambda m: (
            Expect(True, value=json.loads(m.value()))
            if m.offset() != 1
            else Expect.dead_letter("ValueNotJson")
        ),
    )
    text = "\n".join(wrong.problems)
    assert "is not the record's" in text and "should have been dead-lettered" in text
    assert "Source 'other'" in text and "should have been delivered" in text


class StandInProcess:
    """Takes the place of ``python -m bridge run``: alive until killed, logs nothing itself."""

    def __init__(self, *_: Any, **__: Any) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


def test_a_restarted_bridge_is_started_by_its_own_log_line_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "Popen", StandInProcess)

    def logs_its_start(bridge: Bridge, port: int) -> None:
        with bridge.log_path.open("a") as log:  # as the child does, in the same file
            log.write(json.dumps({"event": "bridge started", "observability_port": port}) + "\n")

    bridge = Bridge({"kafka": {}}, tmp_path, "bridge", None).start()
    logs_its_start(bridge, 1111)
    bridge.wait_started(timeout=1)
    assert bridge.port() == 1111
    bridge.kill()
    bridge.start()
    assert bridge.port() is None, "the previous run's start line counted for this one"
    with pytest.raises(AssertionError, match="bridge to start"):
        bridge.wait_started(timeout=0.3)
    logs_its_start(bridge, 2222)
    bridge.wait_started(timeout=1)
    assert bridge.port() == 2222
    assert len([e for e in bridge.log_events() if e["event"] == "bridge started"]) == 2
