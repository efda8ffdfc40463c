"""The composition root: the one place that builds the bridge from a configuration.

:func:`build_bridge` creates every client (the Kafka consumer, the dead-letter producer, the
sink's client, the Schema Registry client, the S3 store) and hands them to the parts that use
them; :func:`run_bridge` runs it until a signal. :func:`build_redrive` builds the same parts
over the dead-letter topic (``bridge redrive``). :func:`build_mapper` and
:func:`render_record` build the mapping alone (``bridge render``, tests). The ``bridge`` command
(:mod:`bridge.cli`) parses arguments and prints; it builds nothing itself.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from bridge.config import BridgeConfig
from bridge.dlq.producer import dlq_producer_config
from bridge.errors import BridgeError, ConfigError
from bridge.mapping.mapper import Mapper, Shaper
from bridge.mapping.offload import ObjectStore, make_s3_store
from bridge.mapping.record import RecordLike
from bridge.mapping.registry import registry_client
from bridge.mapping.render import Rendered, render
from bridge.observability.http import Health, ObservabilityServer
from bridge.observability.logging import configure_logging, get_logger
from bridge.observability.metrics import Metrics
from bridge.offsets.committer import CommitAnswers
from bridge.pipeline import Pipeline
from bridge.pipeline.work import Adapt
from bridge.sink.busv2 import check_event_bus_v2
from bridge.sink.eventbridge import check_event_bus
from bridge.sink.factory import make_client, make_sink
from bridge.source.budget import memory_budget
from bridge.source.checks import kafka_secrets, refusal_text
from bridge.source.consumer import consumer_config, subscribe

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_RUNTIME = 1
EXIT_FILTERED = 3
EXIT_DEAD_LETTER = 4


def run_bridge(
    config: BridgeConfig,
    install_signals: bool = True,
    stop_requested_early: Callable[[], bool] = lambda: False,
) -> int:
    """Build the bridge from ``config`` and run it until SIGTERM/SIGINT.

    A signal that came before (while Python imported the bridge and loaded the config, see
    :mod:`bridge.entry`) or comes during the start-up is a clean stop, too: exit 0.

    Args:
        config: The loaded configuration.
        install_signals: Stop on SIGTERM and SIGINT (off for a bridge run on a test's thread).
        stop_requested_early: Whether a signal came before the handlers were installed
            (:func:`bridge.entry.stop_requested_early`, handed in by the command).
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
        self.unacknowledged = 0
        """Dead-letter writes still unanswered when :meth:`run` returned."""

    def run(self) -> Any:
        """Run until :meth:`stop`; returns the pipeline's counters."""
        try:
            stats = self.pipeline.run()
            remaining = self.unacknowledged = self._producer.flush(10)
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
    configure_logging(config.logging.format, config.logging.level)
    log = get_logger("cli")
    client = events_client or make_client(config)
    _check_buses(config, client, log)
    producer = _dlq_producer(config)
    health = Health(config.observability.stuck_after_s)
    metrics = Metrics()
    sink = make_sink(config, client)
    budget = memory_budget(config, sink.limits.max_request_bytes)
    log.info(
        "memory budget",
        records_bytes=budget.records,
        prefetch_bytes=budget.prefetch,
        in_flight_bytes=budget.in_flight,
        container_limit_bytes=budget.limit,
        source=budget.source,
    )
    answers = CommitAnswers()  # the pipeline's committer, made after the consumer, listens
    consumer_conf = consumer_config(config, health.on_kafka_error, budget, on_commit=answers)
    try:
        consumer = Consumer(consumer_conf)
    except KafkaException as exc:
        raise ConfigError(
            "kafka.properties", [refusal_text(exc, consumer_conf, kafka_secrets(config))]
        ) from None
    _check_dlq_topic(producer, config.dlq.topic, log)
    pipeline = Pipeline(
        config,
        consumer,
        producer,
        sink,
        metrics=metrics,
        health=health,
        mapper=build_mapper(config, sink, metrics=metrics),
        budget=budget,
        commit_answers=answers,
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


def make_redrive_consumer(config: BridgeConfig) -> Consumer:
    """The consumer of ``bridge redrive`` (group already set by the caller): not subscribed;
    a group without progress reads the dead-letter topic from its start.

    Raises:
        ConfigError: librdkafka refuses the settings.
    """
    conf = consumer_config(config)
    conf["auto.offset.reset"] = "earliest"
    try:
        return Consumer(conf)
    except KafkaException as exc:
        raise ConfigError(
            "kafka.properties", [refusal_text(exc, conf, kafka_secrets(config))]
        ) from None


def build_redrive(config: BridgeConfig, consumer: Any, adapt: Adapt) -> Bridge:
    """A bridge reading the dead-letter topic (``bridge redrive``, :mod:`bridge.redrive`).

    The same sink, mapper, dead-letter producer and pipeline as :func:`build_bridge`; each
    message goes through ``adapt`` before it is mapped. ``consumer`` (from
    :func:`make_redrive_consumer`, possibly wrapped) is subscribed to ``dlq.topic`` here. No
    health and metrics server: a redrive is a command that ends.

    Raises:
        BridgeError: The event bus does not exist (when ``aws.check_event_bus``).
        CredentialsError: No AWS credentials, or STS refused ``aws.assume_role_arn``.
    """
    log = get_logger("redrive")
    client = make_client(config)
    _check_buses(config, client, log)
    producer = _dlq_producer(config)
    sink = make_sink(config, client)
    metrics = Metrics()
    mapper = build_mapper(config, sink, metrics=metrics)
    pipeline = Pipeline(
        config, consumer, producer, sink, mapper=mapper, metrics=metrics, adapt=adapt
    )
    subscribe(
        consumer, [config.dlq.topic], pipeline.on_assign, pipeline.on_revoke, pipeline.on_lost
    )
    log.info("redrive started", group_id=config.kafka.group_id, dlq_topic=config.dlq.topic)
    return Bridge(pipeline, producer, log)


def _check_buses(config: BridgeConfig, client: Any, log: Any) -> None:
    if config.sink not in ("put_events", "event_bus_v2") or not config.aws.check_event_bus:
        return
    for bus in sorted(_buses_to_check(config)):
        problem = _check_bus(config, client, bus)
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


def _dlq_producer(config: BridgeConfig) -> Producer:
    conf = dlq_producer_config(config)
    try:
        return Producer(conf)
    except KafkaException as exc:
        raise ConfigError(
            "dlq.producer / kafka.properties", [refusal_text(exc, conf, kafka_secrets(config))]
        ) from None


def _buses_to_check(config: BridgeConfig) -> set[str]:
    if config.sink == "event_bus_v2" and config.aws.event_bus_arn is not None:
        return {config.aws.event_bus_arn}
    return _literal_buses(config)


def _check_bus(config: BridgeConfig, client: Any, bus: str) -> tuple[str, bool] | None:
    """DescribeEventBus of the classic bus ``bus``, or of the new bus's ARN."""
    if config.sink == "event_bus_v2":
        return check_event_bus_v2(client, bus)
    return check_event_bus(client, bus)


def _literal_buses(config: BridgeConfig) -> set[str]:
    buses = {config.aws.event_bus_name}
    for m in config.mappings:
        if m.event_bus_name and "${" not in m.event_bus_name:
            buses.add(m.event_bus_name)
    return buses


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


def build_mapper(
    config: BridgeConfig,
    sink: Shaper,
    store: ObjectStore | None = None,
    metrics: Metrics | None = None,
) -> Mapper:
    """The mapper of ``config`` for ``sink``, with the clients its mappings need.

    Args:
        config: The configuration.
        sink: The sink the entries are shaped for.
        store: Where ``oversize: offload`` puts payloads; default: S3 from ``offload``, made
            only when a mapping offloads.
        metrics: Where invalid ``traceparent`` headers are counted.
    """
    registry = None
    if config.schema_registry.url is not None:
        registry = registry_client(config.schema_registry)
    if store is None and any(m.oversize == "offload" for m in config.mappings):
        store = make_s3_store(config.offload, config.aws)
    counted = metrics.count_invalid_traceparent if metrics is not None else None
    return Mapper(config, sink, registry=registry, store=store, on_invalid_traceparent=counted)


def render_record(config: BridgeConfig, record: RecordLike) -> Rendered:
    """What ``record`` would become (``bridge render``): the configured sink without a client,
    the Schema Registry asked as ``bridge run`` would, nothing written to S3."""
    registry = None
    if config.schema_registry.url is not None:
        registry = registry_client(config.schema_registry)
    return render(config, record, make_sink(config, None), registry)
