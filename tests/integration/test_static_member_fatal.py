"""KIP-848: a static member restarted right after a crash gets the fatal UNRELEASED_INSTANCE_ID.

librdkafka reports it (as a consumed error ``_FATAL``), logs it, and never consumes again. The
bridge must end the process with a clear error and a non-zero exit, so that its supervisor
(Kubernetes) starts it again; alive and never ready, it would sit there until someone looked.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafkatest import DETAIL, BridgeProcess, Topics, bridge_config, produce, wait_until

from testbed.endpoint import LocalEventBridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_static_member_restarted_after_a_crash_exits_1_with_the_fatal_error(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, tmp_path: Path
) -> None:
    topic = topics.create("kip848", partitions=2)
    dlq = topics.create("kip848-dlq")
    produce(kafka_bootstrap, topic, [(b"k", b'{"id": 1}', 0), (b"k", b'{"id": 2}', 1)])
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.kip848", "detail_type": "T", "detail": DETAIL}],
        dlq,
    )
    # The consumer protocol refuses the classic session settings; the broker sets the session
    # (group.consumer.session.timeout.ms, 45 s by default).
    config["kafka"]["properties"] = {"group.protocol": "consumer"}
    config["kafka"]["group_instance_id"] = "bridge-0"
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    wait_until(lambda: len(endpoint.received()) >= 2 or not bridge.alive(), 60, "2 delivered")
    assert bridge.alive(), bridge.log_path.read_text()[-3000:]
    bridge.kill()  # no leave: the broker keeps the member, and its instance id, for the session

    restarted = time.monotonic()
    bridge.start()
    assert bridge.proc is not None
    code = bridge.proc.wait(60)
    took = time.monotonic() - restarted
    output = bridge.log_path.read_text(errors="replace")
    assert code == 1, output[-3000:]
    assert "error: the Kafka consumer hit a fatal error" in output, output[-3000:]
    assert "group.instance.id" in output and "session" in output
    assert "Traceback" not in output, output[-3000:]
    assert took < 30, f"exited {took:.1f} s after the restart"
    print(f"\n    restarted static member exited {code} after {took:.1f} s")
