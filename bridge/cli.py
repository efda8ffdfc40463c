"""The ``bridge`` command: the one place that wires the parts together.

bridge run --config FILE           run until SIGTERM/SIGINT
bridge check-config --config FILE  validate without connecting (librdkafka included)
bridge render --config FILE --topic T [--key K] [--header k=v] < record
                                   the entry a record would become (a dry run)
bridge demo                        a local broker + endpoint, sample records, events printed
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bridge import __version__
from bridge.config import BridgeConfig, load_config, load_kafka_sections, reveal
from bridge.entry import stop_requested_early
from bridge.errors import BridgeError, ConfigError, CredentialsError

if TYPE_CHECKING:
    from bridge.kafka_check import KafkaCheck

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_RUNTIME = 1
EXIT_FILTERED = 3
EXIT_DEAD_LETTER = 4


def main(argv: list[str] | None = None) -> int:
    """The ``bridge`` command (entered through :func:`bridge.entry.main`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, CredentialsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Deliver Kafka records to Amazon EventBridge."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the bridge until SIGTERM or SIGINT")
    run.add_argument("--config", "-c", required=True, help="YAML configuration file")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file without connecting")
    check.add_argument("--config", "-c", required=True, help="YAML configuration file")
    check.add_argument(
        "--skip-files",
        action="store_true",
        help="do not load the files the Kafka settings name (ssl.ca.location, ...): for a file"
        " checked where the bridge does not run (CI, a chart's rendered config)",
    )
    check.set_defaults(func=cmd_check_config)

    render = sub.add_parser(
        "render",
        help="print the entry a record would become, or why it would be dropped or"
        " dead-lettered (nothing is sent)",
        description="Reads the record value from standard input (raw bytes: JSON, text, or"
        " Schema Registry framed) and maps it as `bridge run` would. Prints the entry as JSON"
        " on stdout and its size on stderr. Exit 0: it would be sent; 3: filtered out;"
        " 4: dead-lettered (the reason on stderr); 2: the configuration is invalid.",
    )
    render.add_argument("--config", "-c", required=True, help="YAML configuration file")
    render.add_argument("--topic", "-t", required=True, help="the topic the record is read from")
    render.add_argument("--key", "-k", help="the record key as text (default: a null key)")
    render.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a record header (repeatable)",
    )
    render.add_argument("--partition", type=int, default=0)
    render.add_argument("--offset", type=int, default=0)
    render.add_argument(
        "--timestamp", type=int, help="record timestamp, epoch milliseconds (default: now)"
    )
    render.add_argument(
        "--tombstone", action="store_true", help="a null value (standard input is not read)"
    )
    render.add_argument("--value-file", help="read the value from this file, not standard input")
    render.set_defaults(func=cmd_render)

    demo = sub.add_parser(
        "demo",
        help="start a local Kafka broker and EventBridge endpoint, send samples, show events",
    )
    demo.add_argument("--records", type=int, default=20, help="sample records to produce")
    demo.set_defaults(func=cmd_demo)
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate (librdkafka's view of the Kafka settings included) and print a summary.

    Raises:
        ConfigError: Every problem at once, secrets masked.
    """
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # The Kafka sections may be fine when another is not: what librdkafka refuses, too.
        sections = load_kafka_sections(args.config)
        if sections is None:
            raise
        more = check_kafka_settings(sections, args.skip_files).problems
        if not more:
            raise
        raise ConfigError(exc.source, [*exc.problems, *more]) from None
    kafka = check_kafka_settings(config, args.skip_files)
    for note in kafka.notes:
        print(f"warning: {note}", file=sys.stderr)
    if kafka.problems:
        raise ConfigError(str(args.config), kafka.problems)
    summary = {
        "kafka": {
            "bootstrap_servers": config.kafka.bootstrap_servers,
            "group_id": config.kafka.group_id,
            "subscription": config.subscription(),
            "membership": _describe_membership(config),
        },
        "offsets": _describe_offsets(config),
        "aws": {
            "region": config.aws.region,
            "event_bus_name": config.aws.event_bus_name,
            "assume_role_arn": config.aws.assume_role_arn,
        },
        "dlq_topic": config.dlq.topic,
        "mappings": [_describe_mapping(m, config) for m in config.mappings],
    }
    print(f"{args.config}: OK")
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def check_kafka_settings(config: BridgeConfig, skip_files: bool = False) -> KafkaCheck:
    """Create (and close, unconnected) the consumer and the dead-letter producer as ``run``
    would: what librdkafka refuses, secrets masked (see :mod:`bridge.kafka_check`)."""
    from confluent_kafka import Consumer, Producer

    from bridge.kafka_check import check_clients
    from bridge.source.consumer import consumer_config

    clients = [
        ("kafka.properties", Consumer, consumer_config(config)),
        ("dlq.producer / kafka.properties", Producer, dlq_producer_config(config)),
    ]
    return check_clients(clients, _secrets(config), skip_files)


def _describe_membership(config: BridgeConfig) -> dict[str, Any]:
    """Static or dynamic group membership, in the words of the README."""
    instance = config.kafka.instance_id()
    kip848 = str(config.kafka.properties.get("group.protocol", "classic")).lower() == "consumer"
    if kip848:
        timeout = "the broker's group.consumer.session.timeout.ms (45000 ms by default)"
    else:
        timeout = (
            f"session.timeout.ms ({config.kafka.properties.get('session.timeout.ms', 45000)} ms)"
        )
    if instance is None:
        return {
            "group.instance.id": None,
            "explanation": "dynamic membership: a restarted bridge joins as a new member; the"
            f" partitions of one that was killed wait for {timeout} before the group hands"
            " them out again. Set kafka.group_instance_id (unique per instance, stable across"
            " its restarts) for static membership.",
        }
    if kip848:
        how = (
            "static membership (group.protocol consumer): after a clean stop, restarted with"
            f" this id within {timeout}, the bridge gets its partitions back without a"
            " reassignment; after a crash the broker refuses the id (UNRELEASED_INSTANCE_ID)"
            " until that timeout expires the old member."
        )
    else:
        how = (
            f"static membership: restarted with this id within {timeout}, even after a crash,"
            " the bridge replaces its old self and gets its partitions back without a rebalance."
        )
    return {
        "group.instance.id": instance,
        "explanation": how + " The id must be unique in the group, and an instance gone for"
        " good holds its partitions until the timeout.",
    }


def _describe_offsets(config: BridgeConfig) -> dict[str, Any]:
    """What a commit records, in the words of the README."""
    if not config.pipeline.finished_offsets_in_commit:
        return {
            "finished_offsets_in_commit": False,
            "explanation": "plain offsets: after a crash everything from the oldest"
            " unfinished record on is sent again",
        }
    return {
        "finished_offsets_in_commit": True,
        "explanation": "each commit records the finished offsets above the committed one in"
        " its metadata (up to kafka.offset_metadata_max_bytes ="
        f" {config.kafka.offset_metadata_max_bytes}); after a restart or a rebalance they are"
        " not sent again",
    }


def _describe_mapping(mapping: Any, config: BridgeConfig) -> dict[str, Any]:
    """What a mapping does, in the words of the README."""
    out: dict[str, Any] = {
        "selects": mapping.describe(),
        "decode": {"key": mapping.decode.key, "value": mapping.decode.value},
        "event_bus_name": mapping.event_bus_name or config.aws.event_bus_name,
        "source": mapping.source,
        "detail_type": mapping.detail_type,
        "detail": mapping.detail,
        "tombstones": mapping.tombstones,
        "null_keys": mapping.null_keys,
        "oversize": mapping.oversize,
    }
    if mapping.filter is not None:
        out["filter"] = f"sends only records for which {mapping.filter} is true"
    if mapping.oversize == "offload":
        out["offload_to"] = f"s3://{config.offload.bucket}/{config.offload.prefix}"
    return out


def cmd_render(args: argparse.Namespace) -> int:
    """Map one record as the bridge would and print the entry, or why it is not sent."""
    import time

    from confluent_kafka import Message

    from bridge.mapping.render import render

    config = load_config(args.config)
    headers: list[tuple[str, str | bytes | None]] = []
    for item in args.header:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError("--header", [f"{item!r} is not NAME=VALUE"])
        headers.append((name, text.encode("utf-8")))
    value: bytes | None = None
    if not args.tombstone:
        if args.value_file:
            try:
                with open(args.value_file, "rb") as file:
                    value = file.read()
            except OSError as exc:
                raise ConfigError(
                    "--value-file", [f"cannot read {args.value_file}: {exc}"]
                ) from None
        else:
            if sys.stdin.isatty():
                print(
                    "reading the record value from standard input (end with Ctrl-D)",
                    file=sys.stderr,
                )
            value = sys.stdin.buffer.read()
    timestamp = args.timestamp if args.timestamp is not None else int(time.time() * 1000)
    record: Any = Message(
        topic=args.topic,
        partition=args.partition,
        offset=args.offset,
        key=args.key.encode("utf-8") if args.key is not None else None,
        value=value,
        headers=headers or None,
        timestamp=(1, timestamp),  # CREATE_TIME, as a producer sets it
    )
    result = render(config, record)
    if result.entry is not None:
        print(result.entry_json())
    print(result.summary(), file=sys.stderr)
    return {"send": EXIT_OK, "filtered": EXIT_FILTERED}.get(result.outcome, EXIT_DEAD_LETTER)


def cmd_run(args: argparse.Namespace) -> int:
    """Load the config, build the parts, run until a signal."""
    config = load_config(args.config)
    return run_bridge(config)


def run_bridge(config: BridgeConfig, install_signals: bool = True) -> int:
    """Build the bridge from ``config`` and run it until SIGTERM/SIGINT.

    A signal that came before (while Python imported the bridge and loaded the config, see
    :mod:`bridge.entry`) or comes during the start-up is a clean stop, too: exit 0.
    """
    stop_requested = threading.Event()
    built: list[Bridge] = []

    def on_signal(*_: Any) -> None:
        stop_requested.set()
        for bridge in built:
            bridge.stop()

    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        # After our handlers are in: a signal recorded by the early ones is seen here, a later
        # one by on_signal.
        if stop_requested_early():
            stop_requested.set()
    if stop_requested.is_set():
        from bridge.observability.logging import configure_logging, get_logger

        configure_logging(config.logging.format, config.logging.level)
        get_logger("cli").info("stop requested during start-up: exiting before consuming")
        return EXIT_OK
    bridge = build_bridge(config)
    built.append(bridge)
    if stop_requested.is_set():
        bridge.stop()  # run() then drains nothing and closes cleanly
    keep_gc_off_the_hot_path()
    bridge.run()
    return EXIT_OK


def keep_gc_off_the_hot_path() -> None:
    """Tune the cyclic garbage collector for a process that allocates per record.

    Records make short-lived dicts and lists without cycles, freed by reference counting, yet
    with the defaults every 700 container allocations start a collection, and the occasional
    full one walks every object alive, boto3's service models and all imported modules included.
    The objects alive after start-up are frozen out of collections and the youngest generation
    is collected every 10,000 allocations. Measured in ``bridge run`` on the throughput
    benchmark's backlog (60,000 events, 2-core test machine): 0.24-0.28 s of collections and
    pauses up to 67 ms with the defaults, 0.17 s and 39 ms so. Reference cycles are still
    collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


class Bridge:
    """A wired bridge: the pipeline plus the clients it owns."""

    def __init__(self, pipeline: Any, producer: Any, log: Any, server: Any = None) -> None:
        self.pipeline = pipeline
        self.server = server
        self._producer = producer
        self._log = log

    def run(self) -> Any:
        """Run until :meth:`stop`; returns the pipeline's counters."""
        try:
            stats = self.pipeline.run()
            remaining = self._producer.flush(10)
            if remaining:
                self._log.error("dead-letter writes not acknowledged at exit", count=remaining)
        finally:
            if self.server is not None:
                self.server.stop()
        return stats

    def stop(self) -> None:
        """Stop fetching and drain (callable from any thread or a signal handler)."""
        self.pipeline.stop()


def build_bridge(config: BridgeConfig, events_client: Any = None) -> Bridge:
    """Connect the consumer, the dead-letter producer and the EventBridge client.

    Raises:
        BridgeError: The event bus does not exist (when ``aws.check_event_bus``).
        CredentialsError: No AWS credentials, or STS refused ``aws.assume_role_arn``.
    """
    from confluent_kafka import Consumer, KafkaException, Producer

    from bridge.kafka_check import refusal_text
    from bridge.observability.http import Health, ObservabilityServer
    from bridge.observability.logging import configure_logging, get_logger
    from bridge.observability.metrics import Metrics
    from bridge.pipeline import Pipeline
    from bridge.sink.eventbridge import check_event_bus
    from bridge.sink.factory import make_client, make_sink
    from bridge.source.consumer import consumer_config, subscribe

    configure_logging(config.logging.format, config.logging.level)
    log = get_logger("cli")
    client = events_client or make_client(config)
    if config.sink == "put_events" and config.aws.check_event_bus:
        for bus in sorted(_literal_buses(config)):
            problem = check_event_bus(client, bus)
            if problem is None:
                continue
            message, for_now = problem
            if not for_now:
                raise BridgeError(f"{message} (aws.check_event_bus: false skips this check)")
            log.warning(
                "cannot check the event bus now; starting anyway: records are held until"
                " EventBridge answers",
                event_bus=bus,
                error=message,
            )

    producer_conf = dlq_producer_config(config)
    try:
        producer = Producer(producer_conf)
    except KafkaException as exc:
        raise ConfigError(
            "dlq.producer / kafka.properties",
            [refusal_text(exc, producer_conf, _secrets(config))],
        ) from None
    health = Health(config.observability.stuck_after_s)
    metrics = Metrics()
    consumer_conf = consumer_config(config, health.on_kafka_error)
    try:
        consumer = Consumer(consumer_conf)
    except KafkaException as exc:
        raise ConfigError(
            "kafka.properties", [refusal_text(exc, consumer_conf, _secrets(config))]
        ) from None
    _check_dlq_topic(producer, config.dlq.topic, log)
    pipeline = Pipeline(
        config, consumer, producer, make_sink(config, client), metrics=metrics, health=health
    )
    server = None
    if config.observability.enabled:
        obs = config.observability
        try:
            server = ObservabilityServer(obs.host, obs.port, health, metrics).start()
        except OSError as exc:
            raise BridgeError(
                f"cannot serve health and metrics on {obs.host}:{obs.port}"
                f" (observability.port): {exc}"
            ) from None
    subscribe(
        consumer, config.subscription(), pipeline.on_assign, pipeline.on_revoke, pipeline.on_lost
    )
    log.info(
        "bridge started",
        group_id=config.kafka.group_id,
        subscription=config.subscription(),
        dlq_topic=config.dlq.topic,
        sink=config.sink,
        event_bus=config.aws.event_bus_name,
        observability_port=server.port if server else None,
    )
    return Bridge(pipeline, producer, log, server)


def _secrets(config: BridgeConfig) -> list[str]:
    """Every secret among the Kafka settings (masked in librdkafka's refusals)."""
    found = [config.kafka.sasl_password] if config.kafka.sasl_password is not None else []
    for props in (config.kafka.properties, config.dlq.producer):
        found += [v for v in props.values() if isinstance(v, SecretStr)]
    return [s.get_secret_value() for s in found if s.get_secret_value()]


def _literal_buses(config: BridgeConfig) -> set[str]:
    buses = {config.aws.event_bus_name}
    for m in config.mappings:
        if m.event_bus_name and "${" not in m.event_bus_name:
            buses.add(m.event_bus_name)
    return buses


# librdkafka's consumer-only ("C") settings, global and topic-level (CONFIGURATION.md, 2.x).
CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "group.protocol.type",
        "group.protocol",
        "group.remote.assignor",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "offset.store.method",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "auto.commit.enable",
        "auto.offset.reset",
        "offset.store.path",
        "offset.store.sync.interval.ms",
        "offset.method",
        "consume.callback.max.messages",
    }
)
DLQ_MESSAGE_MAX_BYTES = 64 * 1024 * 1024


def dlq_producer_config(config: BridgeConfig) -> dict[str, Any]:
    """Producer settings for dead-letter writes: acknowledged by all in-sync replicas.

    ``kafka.properties`` is shared with the consumer: its consumer-only settings are left out
    (librdkafka would warn that it ignores them). ``message.max.bytes`` defaults to 64 MiB, not
    librdkafka's 1 MB, so that any record the consumer could read can be dead-lettered whole
    if the dead-letter topic's ``max.message.bytes`` allows it; the broker is the judge.
    """
    from bridge.observability.logging import kafka_logger

    conf = {k: v for k, v in config.kafka.client_config().items() if k not in CONSUMER_ONLY}
    conf.setdefault("message.max.bytes", DLQ_MESSAGE_MAX_BYTES)
    conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    conf["logger"] = kafka_logger("dlq-producer")
    conf.update(reveal(config.dlq.producer))
    return conf


def _check_dlq_topic(producer: Any, topic: str, log: Any) -> None:
    try:
        # All topics, not list_topics(topic): asking for one may auto-create it on the broker.
        metadata = producer.list_topics(timeout=10)
    except Exception as exc:  # the broker may be down at start; librdkafka keeps trying
        log.warning("cannot check the dead-letter topic", dlq_topic=topic, error=str(exc))
        return
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        log.error(
            "dead-letter topic is missing: records that fail will hold back their partition's"
            " offsets until it exists",
            dlq_topic=topic,
            error=str(found.error) if found is not None else None,
        )


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's first command."""
    from bridge.local.demo import run_demo

    return run_demo(records=args.records)


if __name__ == "__main__":
    sys.exit(main())
