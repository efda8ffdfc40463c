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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import TopicPartition

from bridge.app import build_mapper, build_redrive, make_redrive_consumer
from bridge.codes import KNOWN_CODES
from bridge.config import BridgeConfig
from bridge.errors import BridgeError, FilteredOut, MappingError, OptionError
from bridge.mapping.offload import DryRunStore
from bridge.mapping.render import Rendered
from bridge.observability.logging import configure_logging
from bridge.redrive.report import ProgressBar, Summary, dead_lettered_by_code
from bridge.redrive.select import STAGES, Selection, close_code, parse_time
from bridge.redrive.view import TP, Adapter, BoundedConsumer, Bounds, advance_to_position
from bridge.sink.factory import make_sink


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
        OptionError: A time that is not one, a rate or count out of range.
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
        raise OptionError(problems)

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
        OptionError: A code that looks like a typo of a known one.
    """
    warnings = []
    for code in sorted(codes - known):
        near = close_code(code, known)
        if near is not None:
            raise OptionError([f"--code {code!r} is not a reason code: did you mean {near!r}?"])
        warnings.append(
            f"--code {code!r} is not a reason code the bridge knows; selecting it anyway"
        )
    return warnings


# ---------------------------------------------------------------------------------- Kafka side
def read_bounds(consumer: Any, topic: str, timeout: float = 10.0) -> Bounds:
    """Where the group stands on ``topic`` and where the topic ends, now.

    Raises:
        BridgeError: The topic does not exist or its metadata cannot be read.
    """
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
        OptionError: A ``--code`` that is a typo. ConfigError: settings librdkafka refuses.
    """
    configure_logging(config.logging.format, config.logging.level)
    for warning in check_codes(options.selection.codes, KNOWN_CODES):
        print(f"warning: {warning}", file=err)
    config = redrive_config(config, options)
    group = config.kafka.group_id
    consumer = make_redrive_consumer(config)
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
    elif options.dry_run:
        _dry_run(config, consumer, bounds, options, summary, out, err)
    else:
        _redrive(config, consumer, bounds, options, summary, err, install_signals)
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
) -> None:
    adapter = Adapter(options.selection)
    bar = ProgressBar(err, bounds.total)
    built: list[Any] = []

    def stop() -> None:
        for bridge in built:
            bridge.stop()

    def on_read() -> None:
        s = built[0].pipeline.stats if built else None
        note = f"delivered {s.delivered}, dead-lettered again {s.dead_lettered}" if s else ""
        bar.update(bounds.read, note)

    try:
        bridge = build_redrive(config, BoundedConsumer(consumer, bounds, stop, on_read), adapter)
    except BaseException:
        consumer.close()
        raise
    built.append(bridge)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop())
    try:
        stats = bridge.run()
    finally:
        bar.update(bounds.read, "", force=True)
        bar.close()
    summary.read = bounds.read
    summary.selected, summary.skipped = adapter.selected, adapter.skipped
    summary.codes_seen = adapter.codes_seen
    summary.delivered = stats.delivered
    summary.dead_lettered_again = dead_lettered_by_code(bridge.pipeline.metrics)
    summary.filtered_by_mapping = stats.filtered - sum(adapter.skipped.values())
    summary.finished = bounds.committed_to_end(stats.committed) and bridge.unacknowledged == 0


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
    mapper = build_mapper(config, make_sink(config, None), store=DryRunStore())
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
