"""``bridge redrive``: send dead letters again through the pipeline ``bridge run`` uses.

The redrive is a :class:`~bridge.pipeline.Pipeline` like any other (same mapper, sink, limits,
retries and dead-letter writes) whose consumer reads the dead-letter topic in its own group:

1. The end offsets of the dead-letter topic are read first: the redrive reads up to them and
   stops by itself (dead letters written since, its own among them, are for the next one).
2. Each dead letter goes through :class:`~bridge.redrive.view.Adapter`: selected ones are
   mapped as the record they carry, the others finished at once and counted by skip reason.
3. What fails again is dead-lettered anew with ``__bridge.errors.redrive_count`` one higher.
4. At the end the pipeline drains and commits, as at any stop: the group's committed offsets
   are the redrive's progress, so one interrupted (SIGTERM, SIGKILL, a crash) continues where it
   stopped; only what was in flight when it died is sent again.

The group is ``<kafka.group_id>-redrive-<8 hex naming the selection>`` unless ``--group`` names
one: the same command resumes, and a redrive of another code reads the topic from its start
rather than from where a redrive of the first code stopped.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from bridge.errors import BridgeError, ConfigError, FilteredOut, MappingError
from bridge.redrive.select import STAGES, Selection, close_code, parse_time
from bridge.redrive.view import TP, Adapter, BoundedConsumer, Bounds, advance_to_position

if TYPE_CHECKING:
    from bridge.config import BridgeConfig
    from bridge.observability.metrics import Metrics

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_DEAD_LETTER = 4


@dataclass(frozen=True)
class RedriveOptions:
    """What the command line asks for.

    Attributes:
        selection: Which dead letters are sent again.
        group: The consumer group (None: named after the selection, see the module docstring).
        dry_run: Read and map, send and commit nothing.
        max_rate: Entries per second at most (``pipeline.max_entries_per_second``).
        show: Entries printed per reason code in a dry run.
    """

    selection: Selection = field(default_factory=Selection)
    group: str | None = None
    dry_run: bool = False
    max_rate: float | None = None
    show: int = 2


def options_from_args(args: Any) -> RedriveOptions:
    """The options of ``bridge redrive``'s parsed command line.

    Raises:
        ConfigError: A time that is not one, a rate or count out of range.
    """
    problems = []
    times: dict[str, int | None] = {"since": None, "until": None}
    for name in times:
        text = getattr(args, name)
        if text is not None:
            try:
                times[name] = parse_time(text, f"--{name}")
            except ValueError as exc:
                problems.append(str(exc))
    if args.max_rate is not None and not 0 < args.max_rate <= 1_000_000:
        problems.append(f"--max-rate {args.max_rate} must be > 0 and <= 1000000 entries/s")
    if args.show < 0:
        problems.append("--show must be >= 0")
    since, until = times["since"], times["until"]
    if since is not None and until is not None and since >= until:
        problems.append("--since must be before --until")

    def values(items: list[str]) -> frozenset[str]:
        return frozenset(v.strip() for item in items for v in item.split(",") if v.strip())

    problems += [
        f"--stage {stage!r} is not a stage: one of {', '.join(STAGES)}"
        for stage in sorted(values(args.stage) - set(STAGES))
    ]
    if problems:
        raise ConfigError("bridge redrive", problems)

    selection = Selection(
        codes=values(args.code),
        stages=values(args.stage),
        source_topics=values(args.source_topic),
        since_ms=since,
        until_ms=until,
    )
    return RedriveOptions(selection, args.group, args.dry_run, args.max_rate, args.show)


def group_for(config: BridgeConfig, options: RedriveOptions) -> str:
    """The redrive's consumer group."""
    return options.group or f"{config.kafka.group_id}-redrive-{options.selection.digest()}"


def redrive_config(config: BridgeConfig, options: RedriveOptions) -> BridgeConfig:
    """``config`` with the redrive's group and, with ``--max-rate``, its send rate ceiling."""
    kafka = config.kafka.model_copy(update={"group_id": group_for(config, options)})
    update: dict[str, Any] = {"kafka": kafka}
    if options.max_rate is not None:
        update["pipeline"] = config.pipeline.model_copy(
            update={"max_entries_per_second": options.max_rate}
        )
    return config.model_copy(update=update)


def check_codes(codes: frozenset[str], known: frozenset[str]) -> list[str]:
    """Warnings for codes the bridge does not know (AWS may add some).

    Raises:
        ConfigError: A code that looks like a typo of a known one.
    """
    warnings = []
    for code in sorted(codes - known):
        near = close_code(code, known)
        if near is not None:
            raise ConfigError("--code", [f"unknown reason code {code!r}: did you mean {near!r}?"])
        warnings.append(
            f"--code {code!r} is not a reason code the bridge knows; selecting it anyway"
        )
    return warnings


# ---------------------------------------------------------------------------------- the summary
@dataclass
class Summary:
    """What a redrive did (this process only), printed as a table at the end."""

    group: str
    selection: Selection
    total: int = 0
    read: int = 0
    selected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    codes_seen: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    dead_lettered_again: Counter[str] = field(default_factory=Counter)
    filtered_by_mapping: int = 0
    finished: bool = False
    dry_run: bool = False

    @property
    def failed_again(self) -> int:
        return sum(self.dead_lettered_again.values())

    def table(self) -> str:
        """The summary as aligned text rows."""
        verb = "would be" if self.dry_run else ""
        rows: list[tuple[str, str]] = [
            ("group", self.group),
            ("selection", self.selection.describe()),
            ("dead letters read", f"{self.read} of {self.total}"),
            ("selected", str(sum(self.selected.values()))),
        ]
        rows += [(f"  code {code}", str(n)) for code, n in sorted(self.selected.items())]
        rows.append((f"delivered{' (would be sent)' if verb else ''}", str(self.delivered)))
        rows.append((f"{'would fail' if verb else 'dead-lettered'} again", str(self.failed_again)))
        rows += [(f"  now {code}", str(n)) for code, n in sorted(self.dead_lettered_again.items())]
        if self.filtered_by_mapping:
            rows.append(("filtered out by the mapping", str(self.filtered_by_mapping)))
        rows.append(("skipped", str(sum(self.skipped.values()))))
        rows += [(f"  {reason}", str(n)) for reason, n in sorted(self.skipped.items())]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        seen = ", ".join(f"{c} ({n})" for c, n in self.codes_seen.most_common(5)) or "none"
        lines += [
            f"note: no dead letter read has code {code} (codes read: {seen})"
            for code in sorted(self.selection.codes - set(self.codes_seen))
        ]
        if not self.finished:
            lines.append("stopped before the end: run the same command again to continue")
        return "\n".join(lines)

    def exit_code(self) -> int:
        """0: finished with nothing failing again; 4: some failed again; 1: stopped early."""
        if not self.finished:
            return EXIT_RUNTIME
        return EXIT_DEAD_LETTER if self.failed_again else EXIT_OK


def dead_lettered_by_code(metrics: Metrics) -> Counter[str]:
    """Acknowledged dead-letter writes of this process, by (bounded) reason code."""
    out: Counter[str] = Counter()
    for metric in metrics.dead_lettered.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                out[sample.labels["reason"]] += int(sample.value)
    return out


class ProgressBar:
    """One line on a terminal, redrawn at most 5 times a second; nothing when not a terminal."""

    def __init__(self, stream: TextIO, total: int, clock: Any = time.monotonic) -> None:
        self._stream = stream
        self._total = max(total, 1)
        self._clock = clock
        self._last = -1.0
        self.enabled = stream.isatty()

    def update(self, read: int, note: str, force: bool = False) -> None:
        now = self._clock()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        done = min(read, self._total)
        filled = 30 * done // self._total
        bar = "#" * filled + "-" * (30 - filled)
        self._stream.write(f"\r[{bar}] {done}/{self._total} {note}\x1b[K")
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar (before other output on the terminal); the next update redraws it."""
        if self.enabled and self._last >= 0:
            self._stream.write("\r\x1b[K")
            self._last = -1.0

    def close(self) -> None:
        if self.enabled and self._last >= 0:
            self._stream.write("\n")
            self._stream.flush()


# ---------------------------------------------------------------------------------- Kafka side
def read_bounds(consumer: Any, topic: str, timeout: float = 10.0) -> Bounds:
    """Where the group stands on ``topic`` and where the topic ends, now.

    Raises:
        BridgeError: The topic does not exist or its metadata cannot be read.
    """
    from confluent_kafka import TopicPartition

    try:
        # All topics, not list_topics(topic): asking for one may auto-create it on the broker.
        found = consumer.list_topics(timeout=timeout).topics.get(topic)
    except Exception as exc:
        raise BridgeError(f"cannot read the metadata of {topic!r} (dlq.topic): {exc}") from None
    if found is None or found.error is not None:
        raise BridgeError(f"the dead-letter topic {topic!r} does not exist (dlq.topic)")
    tps = [TopicPartition(topic, p) for p in sorted(found.partitions)]
    ends: dict[TP, int] = {}
    lows: dict[TP, int] = {}
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        ends[(topic, tp.partition)], lows[(topic, tp.partition)] = high, low
    starts = dict(lows)
    for tp in consumer.committed(tps, timeout=timeout):
        if tp.offset >= 0:
            starts[(tp.topic, tp.partition)] = max(tp.offset, lows[(tp.topic, tp.partition)])
    return Bounds(starts, ends)


def _consumer_conf(config: BridgeConfig) -> dict[str, Any]:
    from bridge.source.consumer import consumer_config

    conf = consumer_config(config)
    conf["auto.offset.reset"] = "earliest"  # a group without progress reads every dead letter
    return conf


def run_redrive(
    config: BridgeConfig,
    options: RedriveOptions,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    install_signals: bool = True,
) -> Summary:
    """Redrive (or with ``options.dry_run`` only map) the dead letters ``options`` selects.

    Raises:
        BridgeError: The dead-letter topic does not exist; the event bus does not.
        ConfigError: A ``--code`` that is a typo; settings librdkafka refuses.
    """
    from confluent_kafka import Consumer

    from bridge.observability.logging import configure_logging, get_logger
    from bridge.observability.metrics import KNOWN_CODES

    configure_logging(config.logging.format, config.logging.level)
    log = get_logger("redrive")
    for warning in check_codes(options.selection.codes, KNOWN_CODES):
        print(f"warning: {warning}", file=err)
    config = redrive_config(config, options)
    group = config.kafka.group_id
    consumer = Consumer(_consumer_conf(config))
    try:
        bounds = read_bounds(consumer, config.dlq.topic)
    except BaseException:
        consumer.close()
        raise
    summary = Summary(group, options.selection, total=bounds.total, dry_run=options.dry_run)
    what = "dry run" if options.dry_run else "redrive"
    print(
        f"{what} of {config.dlq.topic} in group {group}: {bounds.total} dead letters to read"
        f" ({options.selection.describe()})",
        file=err,
    )
    if bounds.done:
        consumer.close()
        summary.finished = True
        print(summary.table(), file=out)
        return summary
    if options.dry_run:
        _dry_run(config, consumer, bounds, options, summary, out, err)
    else:
        _redrive(config, consumer, bounds, options, summary, err, install_signals, log)
    print(summary.table(), file=out)
    return summary


def _redrive(
    config: BridgeConfig,
    consumer: Any,
    bounds: Bounds,
    options: RedriveOptions,
    summary: Summary,
    err: TextIO,
    install_signals: bool,
    log: Any,
) -> None:
    from confluent_kafka import Producer

    from bridge.cli import _literal_buses, dlq_producer_config
    from bridge.pipeline import Pipeline
    from bridge.sink.eventbridge import check_event_bus
    from bridge.sink.factory import make_client, make_sink
    from bridge.source.consumer import subscribe

    try:
        client = make_client(config)
        if config.sink == "put_events" and config.aws.check_event_bus:
            for bus in sorted(_literal_buses(config)):
                problem = check_event_bus(client, bus)
                if problem is not None and not problem[1]:
                    raise BridgeError(f"{problem[0]} (aws.check_event_bus: false skips this check)")
        producer = Producer(dlq_producer_config(config))
    except BaseException:
        consumer.close()
        raise
    adapter = Adapter(options.selection)
    bar = ProgressBar(err, bounds.total)
    pipelines: list[Any] = []

    def stop() -> None:
        for p in pipelines:
            p.stop()

    def on_read() -> None:
        s = pipelines[0].stats if pipelines else None
        note = f"delivered {s.delivered}, dead-lettered again {s.dead_lettered}" if s else ""
        bar.update(bounds.read, note)

    bounded = BoundedConsumer(consumer, bounds, stop, on_read=on_read)
    pipeline = Pipeline(config, bounded, producer, make_sink(config, client), adapt=adapter)
    pipelines.append(pipeline)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop())
    subscribe(
        consumer, [config.dlq.topic], pipeline.on_assign, pipeline.on_revoke, pipeline.on_lost
    )
    log.info("redrive started", group_id=config.kafka.group_id, dlq_topic=config.dlq.topic)
    try:
        stats = pipeline.run()
    finally:
        bar.update(bounds.read, "", force=True)
        bar.close()
    remaining = producer.flush(10)
    if remaining:
        log.error("dead-letter writes not acknowledged at exit", count=remaining)
    summary.read = bounds.read
    summary.selected, summary.skipped = adapter.selected, adapter.skipped
    summary.codes_seen = adapter.codes_seen
    summary.delivered = stats.delivered
    summary.dead_lettered_again = dead_lettered_by_code(pipeline.metrics)
    summary.filtered_by_mapping = stats.filtered - sum(adapter.skipped.values())
    summary.finished = bounds.committed_to_end(stats.committed) and not remaining


def _dry_run(
    config: BridgeConfig,
    consumer: Any,
    bounds: Bounds,
    options: RedriveOptions,
    summary: Summary,
    out: TextIO,
    err: TextIO,
) -> None:
    """Read to the end from the group's position and map; nothing is sent or committed."""
    from confluent_kafka import TopicPartition

    from bridge.mapping.mapper import Mapper
    from bridge.mapping.offload import DryRunStore
    from bridge.mapping.render import Rendered

    mapper = Mapper(config, store=DryRunStore())
    adapter = Adapter(options.selection)
    bar = ProgressBar(err, bounds.total)
    shown: Counter[str] = Counter()
    starts = bounds.starts()
    consumer.assign([TopicPartition(t, p, starts[(t, p)]) for (t, p) in starts])
    try:
        while not bounds.done:
            messages = consumer.consume(500, 1.0)
            if not messages:
                advance_to_position(consumer, bounds)
            for msg in messages:
                if msg.error() is not None:
                    continue
                if not bounds.admit((msg.topic(), msg.partition()), msg.offset()):
                    continue
                try:
                    view = adapter(msg)
                except FilteredOut:
                    continue
                code = view.info.code
                try:
                    mapped = mapper.map(view)
                except FilteredOut:
                    summary.filtered_by_mapping += 1
                    continue
                except MappingError as exc:
                    summary.dead_lettered_again[exc.code] += 1
                    continue
                summary.delivered += 1
                if shown[code] < options.show:
                    shown[code] += 1
                    entry = Rendered("send", entry=mapped.entry).entry_json()
                    bar.clear()
                    print(
                        f"# {code}: {view.info.topic}/{view.info.partition}@"
                        f"{view.info.offset} would be sent as\n{entry}",
                        file=out,
                    )
            bar.update(bounds.read, "")
    finally:
        bar.close()
        consumer.close()
    summary.read = bounds.read
    summary.selected, summary.skipped = adapter.selected, adapter.skipped
    summary.codes_seen = adapter.codes_seen
    summary.finished = True
