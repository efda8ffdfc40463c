"""How long a SIGKILLed consumer, restarted at once, waits for its partitions.

A bare confluent-kafka consumer (the bridge's group settings, no pipeline) joins a group on a
fresh 3-partition topic, is SIGKILLed, and is started again at once; the figure is the time from
the restart to its first assignment. Run for both group protocols, with and without static
membership (``group.instance.id``):

    .venv/bin/python benchmarks/restart_gap.py --bootstrap 127.0.0.1:19092

Each dynamic case waits for the session timeout (45 s by default): about a minute per case.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from typing import Any


def member(bootstrap: str, topic: str, group: str, protocol: str, instance: str) -> None:
    """The consumer process: prints a JSON line on start, on assignment and on errors."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    def say(**fields: Any) -> None:
        print(json.dumps({"t": time.time(), **fields}), flush=True)

    def on_error(err: KafkaError) -> None:
        say(error=err.str(), fatal=err.fatal())

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "error_cb": on_error,
    }
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"partition.assignment.strategy": "cooperative-sticky"})
        conf.update({"session.timeout.ms": 45000})
    if instance:
        conf["group.instance.id"] = instance
    consumer = Consumer(conf)

    def on_assign(_: Any, partitions: list[TopicPartition]) -> None:
        say(assigned=[p.partition for p in partitions])

    consumer.subscribe([topic], on_assign=on_assign)
    say(started=True)
    while True:
        try:
            consumer.poll(0.2)
        except KafkaException as exc:  # a fatal error (UNRELEASED_INSTANCE_ID) ends the member
            say(error=str(exc.args[0]), fatal=True)
            return


def gap(bootstrap: str, protocol: str, static: bool, timeout: float) -> dict[str, Any]:
    """One case: the seconds from restart to assignment (None: none within ``timeout``)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"restart-gap-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    group = f"restart-gap-{uuid.uuid4().hex[:8]}"
    args = [bootstrap, topic, group, protocol, "bridge-0" if static else ""]

    def start() -> tuple[subprocess.Popen[str], queue.Queue[dict[str, Any]]]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--member", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[dict[str, Any]] = queue.Queue()
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout, proc.stderr
        threading.Thread(
            target=lambda: [lines.put(json.loads(x)) for x in out], daemon=True
        ).start()
        # librdkafka logs a fatal error to stderr; with the consumer protocol (confluent-kafka
        # 2.16) neither error_cb nor poll() reported UNRELEASED_INSTANCE_ID.
        threading.Thread(
            target=lambda: [lines.put({"error": x.strip()}) for x in err if "FATAL" in x],
            daemon=True,
        ).start()
        return proc, lines

    def assigned(
        lines: queue.Queue[dict[str, Any]], within: float
    ) -> tuple[float | None, list[str]]:
        deadline = time.time() + within
        errors: list[str] = []
        while time.time() < deadline:
            try:
                event = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if "error" in event:
                errors.append(event["error"])
            if event.get("assigned"):
                return event["t"], errors
        return None, errors

    first, first_lines = start()
    assert assigned(first_lines, 60)[0], "the first member got no partitions"
    time.sleep(3)
    first.kill()
    first.wait()
    restarted_at = time.time()
    second, second_lines = start()
    at, errors = assigned(second_lines, timeout)
    second.kill()
    second.wait()
    admin.delete_topics([topic])
    return {
        "group.protocol": protocol,
        "static": static,
        "restart_to_assignment_s": None if at is None else round(at - restarted_at, 1),
        "errors": [e[:160] for e in errors[:2]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--member", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.member:
        bootstrap, topic, group, protocol, instance = args.member
        member(bootstrap, topic, group, protocol, instance)
        return
    cases = [(p, s) for p in ("classic", "consumer") for s in (False, True)]
    results: list[dict[str, Any]] = [{} for _ in cases]

    def run(i: int, protocol: str, static: bool) -> None:
        results[i] = gap(args.bootstrap, protocol, static, args.timeout)

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(cases)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
