"""The ``bridge`` command: parses arguments and prints; :mod:`bridge.app` builds the bridge.

bridge run --config FILE           run until SIGTERM/SIGINT
bridge check-config --config FILE  validate without connecting (librdkafka included)
bridge render --config FILE --topic T [--key K] [--header k=v] < record
                                   the entry a record would become (a dry run)
bridge redrive --config FILE [--code C] [--dry-run] ...
                                   send dead letters again once their cause is fixed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from bridge import __version__
from bridge.app import (
    EXIT_CONFIG,
    EXIT_DEAD_LETTER,
    EXIT_FILTERED,
    EXIT_OK,
    EXIT_RUNTIME,
    render_record,
    run_bridge,
)
from bridge.config import BridgeConfig
from bridge.config.load import load_config, load_kafka_sections
from bridge.errors import BridgeError, ConfigError, CredentialsError
from bridge.redrive.command import options_from_args, run_redrive
from bridge.source.checks import check_kafka_settings


def main(
    argv: list[str] | None = None, stop_requested_early: Callable[[], bool] = lambda: False
) -> int:
    """The ``bridge`` command (entered through :func:`bridge.entry.main`).

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
        stop_requested_early: Whether a signal came before ``bridge run`` could install its
            handlers (:func:`bridge.entry.stop_requested_early`).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    args.stop_requested_early = stop_requested_early
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

    redrive = sub.add_parser(
        "redrive",
        help="send dead letters again, mapped with the current configuration",
        description="Reads the dead-letter topic (dlq.topic) up to its end offsets at start, in"
        " its own consumer group, and sends the selected dead letters as `bridge run` would."
        " What fails again is dead-lettered with a redrive count. Progress is committed: run"
        " the same command again to continue an interrupted redrive. Exit 0: done; 4: some"
        " failed again; 1: stopped before the end; 2: bad configuration or option.",
    )
    redrive.add_argument("--config", "-c", required=True, help="YAML configuration file")
    for flag, what in (
        ("--code", "reason code, e.g. MissingField"),
        ("--stage", "stage: decode, map, validate, offload or send"),
        ("--source-topic", "topic the record was read from"),
    ):
        redrive.add_argument(flag, action="append", default=[], help=f"{what} (repeatable)")
    redrive.add_argument("--since", help="dead-lettered at or after (ISO 8601 or epoch ms)")
    redrive.add_argument("--until", help="dead-lettered before (ISO 8601 or epoch ms)")
    redrive.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; send and commit nothing"
    )
    redrive.add_argument("--max-rate", type=float, help="entries per second at most")
    redrive.add_argument(
        "--group", help="consumer group (default: <kafka.group_id>-redrive-<selection digest>)"
    )
    redrive.add_argument(
        "--show", type=int, default=2, help="dry run: entries printed per code (default 2)"
    )
    redrive.set_defaults(func=cmd_redrive)

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
        }
        | (
            {"event_bus_arn": config.aws.event_bus_arn, "sink": config.sink}
            if config.sink == "event_bus_v2"
            else {}
        ),
        "dlq_topic": config.dlq.topic,
        "mappings": [_describe_mapping(m, config) for m in config.mappings],
    }
    print(f"{args.config}: OK")
    print(json.dumps(summary, indent=2))
    return EXIT_OK


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
        # Which templates selecting nothing cost the record and which only leave a field out.
        "required_fields": mapping.required_fields(),
        "optional_fields": mapping.optional_fields(),
    }
    if mapping.trace_header is not None:
        out["trace_header"] = (
            "auto: X-Amzn-Trace-Id as it is, else traceparent converted to X-Ray"
            if mapping.trace_header == "auto"
            else mapping.trace_header
        )
    if mapping.trace_detail_key is not None:
        out["trace_detail_key"] = (
            f"the trace header is also sent in Detail.{mapping.trace_detail_key}"
        )
    if config.sink == "event_bus_v2":
        out.update(_describe_v2(mapping))
    if mapping.filter is not None:
        out["filter"] = f"sends only records for which {mapping.filter} is true"
    if mapping.oversize == "offload":
        out["offload_to"] = f"s3://{config.offload.bucket}/{config.offload.prefix}"
    return out


def _describe_v2(mapping: Any) -> dict[str, Any]:
    """The new bus's part of a mapping (README, "The new bus")."""
    out: dict[str, Any] = {
        "publish": mapping.publish,
        "event_group_id": mapping.event_group_id or "none: sent unordered",
        "deduplication_id": mapping.deduplication_id
        or "the record id (<topic>-<partition>-<offset>)",
    }
    if mapping.publish == "put_raw_events":
        for key in ("source", "detail_type", "detail", "required_fields", "optional_fields"):
            out[key] = None
        out["data"] = mapping.data or "the record's value bytes as they are"
        out["content_type"] = mapping.content_type
        out["metadata"] = dict(mapping.metadata)
    return out


def cmd_render(args: argparse.Namespace) -> int:
    """Map one record as the bridge would and print the entry, or why it is not sent."""
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
    result = render_record(config, record)
    if result.entry is not None:
        print(result.entry_json())
    print(result.summary(), file=sys.stderr)
    return {"send": EXIT_OK, "filtered": EXIT_FILTERED}.get(result.outcome, EXIT_DEAD_LETTER)


def cmd_redrive(args: argparse.Namespace) -> int:
    """Send dead letters again (see :mod:`bridge.redrive.command`)."""
    options = options_from_args(args)
    return run_redrive(load_config(args.config), options).exit_code()


def cmd_run(args: argparse.Namespace) -> int:
    """Load the config, build the parts, run until a signal."""
    config = load_config(args.config)
    return run_bridge(config, stop_requested_early=args.stop_requested_early)


if __name__ == "__main__":
    sys.exit(main())
