"""The pure parts of ``bridge redrive``: a dead letter's headers read back, the selection, the
view of the original record, the bound of a run, and the command's options and summary."""

from __future__ import annotations

import argparse
import io
from collections import Counter

import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from bridge.codes import KNOWN_CODES
from bridge.config.load import config_from_dict
from bridge.dlq.writer import HEADER_PREFIX, Reason, reason_headers
from bridge.errors import ConfigError, FilteredOut
from bridge.redrive.command import (
    RedriveOptions,
    check_codes,
    group_for,
    options_from_args,
    redrive_config,
)
from bridge.redrive.report import ProgressBar, Summary
from bridge.redrive.select import (
    AFTER_UNTIL,
    BEFORE_SINCE,
    NO_BRIDGE_HEADERS,
    NO_DEAD_LETTER_TIME,
    OTHER_CODE,
    OTHER_STAGE,
    OTHER_TOPIC,
    DeadLetterInfo,
    Selection,
    close_code,
    parse_dead_letter,
    parse_time,
)
from bridge.redrive.view import Adapter, BoundedConsumer, Bounds, DeadLetterView

names = st.text(min_size=1, max_size=20).filter(lambda n: not n.startswith("__bridge"))
header_lists = st.lists(st.tuples(names, st.one_of(st.none(), st.binary(max_size=20))), max_size=5)
reasons = st.builds(
    Reason,
    stage=st.sampled_from(["decode", "map", "validate", "send", "offload"]),
    code=st.text(min_size=1, max_size=30),
    message=st.text(max_size=50),
    attempts=st.integers(0, 20),
)


def record(headers: list[tuple[str, bytes | None]] | None = None, **kw: object) -> Message:
    args: dict[str, object] = {
        "topic": "orders",
        "partition": 3,
        "offset": 1234,
        "key": b"k",
        "value": b'{"a": 1}',
        "headers": headers,
        "timestamp": (1, 1_700_000_000_000),
    }
    args.update(kw)
    return Message(**args)


def dead_letter(original: Message, reason: Reason, offset: int = 0) -> Message:
    """A dead letter as the writer produces it."""
    return Message(
        topic="orders-dlq",
        partition=0,
        offset=offset,
        key=original.key(),
        value=original.value(),
        headers=reason_headers(original, reason),
        timestamp=original.timestamp(),
    )


# ------------------------------------------------------------------------------ header parsing
@given(header_lists, reasons, st.integers(0, 10**6), st.integers(0, 10**12))
def test_what_the_writer_writes_reads_back(
    headers: list[tuple[str, bytes | None]], reason: Reason, partition: int, offset: int
) -> None:
    original = record(headers or None, partition=partition, offset=offset)
    info = parse_dead_letter(reason_headers(original, reason))
    assert info is not None
    assert (info.topic, info.partition, info.offset) == ("orders", partition, offset)
    assert (info.stage, info.code, info.attempts) == (reason.stage, reason.code, reason.attempts)
    assert info.message == reason.message[:4000]
    assert info.original_headers == tuple(headers)
    assert info.redrive_count == 0
    assert info.dead_lettered_ms is not None and info.dead_lettered_ms > 1_700_000_000_000


@given(header_lists, reasons, st.integers(1, 50))
def test_a_view_dead_lettered_again_counts_one_more_redrive(
    headers: list[tuple[str, bytes | None]], reason: Reason, before: int
) -> None:
    original = record(headers or None)
    dead = dead_letter(original, reason)
    info = parse_dead_letter(dead.headers())
    assert info is not None
    info = DeadLetterInfo(**{**_fields(info), "redrive_count": before})
    view = DeadLetterView(dead, info)
    again = parse_dead_letter(reason_headers(view, Reason("send", "InvalidArgument", "no")))
    assert again is not None
    assert again.redrive_count == before + 1
    assert again.original_headers == tuple(headers)  # the old bridge headers are not carried
    assert (again.topic, again.partition, again.offset) == ("orders", 3, 1234)
    assert again.code == "InvalidArgument"


def _fields(info: DeadLetterInfo) -> dict[str, object]:
    return {name: getattr(info, name) for name in info.__slots__}


def test_a_plain_record_has_no_redrive_count_header() -> None:
    written = reason_headers(record(), Reason("map", "MissingField", "m"))
    assert not any(name == HEADER_PREFIX + "redrive_count" for name, _ in written)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("content-type", b"json")],
        [(HEADER_PREFIX + "topic", b"t"), (HEADER_PREFIX + "code", b"C")],  # no partition...
        [
            (HEADER_PREFIX + k, v)
            for k, v in {
                "topic": b"t",
                "partition": b"x",
                "offset": b"1",
                "stage": b"map",
                "code": b"C",
            }.items()
        ],
        [
            (HEADER_PREFIX + k, v)
            for k, v in {
                "topic": b"t",
                "partition": b"-1",
                "offset": b"1",
                "stage": b"map",
                "code": b"C",
            }.items()
        ],
        [(HEADER_PREFIX + "topic", b"\xff")],
    ],
)
def test_dead_letters_without_readable_bridge_headers_are_none(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    assert parse_dead_letter(headers) is None


def test_a_repeated_bridge_header_counts_by_its_last_value() -> None:
    dead = reason_headers(record(), Reason("map", "MissingField", "m"))
    dead.append((HEADER_PREFIX + "code", b"InvalidArgument"))
    info = parse_dead_letter(dead)
    assert info is not None and info.code == "InvalidArgument"


# ------------------------------------------------------------------------------ selection
def info_of(**kw: object) -> DeadLetterInfo:
    base: dict[str, object] = {
        "topic": "orders",
        "partition": 0,
        "offset": 1,
        "stage": "map",
        "code": "MissingField",
        "dead_lettered_ms": 1000,
    }
    base.update(kw)
    return DeadLetterInfo(**base)  # type: ignore[arg-type]


codes = st.sampled_from(["MissingField", "InvalidArgument", "WrongType"])
stages = st.sampled_from(["map", "send", "validate"])
topics = st.sampled_from(["a", "b", "c"])


@given(
    codes,
    stages,
    topics,
    st.integers(0, 100),
    st.frozensets(codes),
    st.frozensets(stages),
    st.frozensets(topics),
    st.none() | st.integers(0, 100),
    st.none() | st.integers(0, 100),
)
def test_selected_exactly_when_every_given_filter_matches(
    code: str,
    stage: str,
    topic: str,
    when: int,
    want_codes: frozenset[str],
    want_stages: frozenset[str],
    want_topics: frozenset[str],
    since: int | None,
    until: int | None,
) -> None:
    selection = Selection(want_codes, want_stages, want_topics, since, until)
    info = info_of(code=code, stage=stage, topic=topic, dead_lettered_ms=when)
    matches = (
        (not want_codes or code in want_codes)
        and (not want_stages or stage in want_stages)
        and (not want_topics or topic in want_topics)
        and (since is None or when >= since)
        and (until is None or when < until)
    )
    reason = selection.skip_reason(info)
    assert (reason is None) == matches
    assert selection.skip_reason(None) == NO_BRIDGE_HEADERS


def test_the_first_filter_that_fails_is_the_reason() -> None:
    s = Selection(frozenset({"X"}), frozenset({"send"}), frozenset({"t"}), 10, 20)
    assert s.skip_reason(info_of()) == OTHER_CODE
    assert s.skip_reason(info_of(code="X")) == OTHER_STAGE
    assert s.skip_reason(info_of(code="X", stage="send")) == OTHER_TOPIC
    ok = {"code": "X", "stage": "send", "topic": "t"}
    assert s.skip_reason(info_of(**ok, dead_lettered_ms=9)) == BEFORE_SINCE
    assert s.skip_reason(info_of(**ok, dead_lettered_ms=20)) == AFTER_UNTIL
    assert s.skip_reason(info_of(**ok, dead_lettered_ms=None)) == NO_DEAD_LETTER_TIME
    assert s.skip_reason(info_of(**ok, dead_lettered_ms=10)) is None
    assert Selection().skip_reason(info_of(dead_lettered_ms=None)) is None


@given(st.lists(codes, max_size=3), st.lists(stages, max_size=3))
def test_the_digest_names_the_selection_not_the_order_of_its_flags(
    c: list[str], s: list[str]
) -> None:
    a = Selection(frozenset(c), frozenset(s))
    b = Selection(frozenset(reversed(c)), frozenset(reversed(s)))
    assert a.digest() == b.digest()
    assert len(a.digest()) == 8
    assert a.digest() != Selection(frozenset(c), frozenset(s), since_ms=1).digest()


def test_times_and_typos() -> None:
    assert parse_time("1700000000000", "--since") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z", "--since") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00", "--since") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20", "--since") == 1_700_000_000_000  # UTC
    with pytest.raises(ValueError, match="--until 'yesterday' is not a time"):
        parse_time("yesterday", "--until")
    assert close_code("missingfield", KNOWN_CODES) == "MissingField"
    assert close_code("MisingField", KNOWN_CODES) == "MissingField"
    assert close_code("SomethingNew", KNOWN_CODES) is None


def test_a_typo_of_a_code_is_an_error_an_unknown_code_a_warning() -> None:
    with pytest.raises(ConfigError, match="did you mean 'MissingField'"):
        check_codes(frozenset({"MisingField"}), KNOWN_CODES)
    assert check_codes(frozenset({"MissingField"}), KNOWN_CODES) == []
    (warning,) = check_codes(frozenset({"BrandNewAwsCode"}), KNOWN_CODES)
    assert "not a reason code the bridge knows" in warning


# ------------------------------------------------------------------------------ view, adapter
def test_the_view_is_the_original_record() -> None:
    original = record([("trace", b"t1"), ("n", None)])
    dead = dead_letter(original, Reason("map", "MissingField", "m"), offset=77)
    info = parse_dead_letter(dead.headers())
    assert info is not None
    view = DeadLetterView(dead, info)
    assert (view.topic(), view.partition(), view.offset()) == ("orders", 3, 1234)
    assert (view.key(), view.value()) == (original.key(), original.value())
    assert view.headers() == [("trace", b"t1"), ("n", None)]
    assert view.timestamp() == original.timestamp()
    assert view.error() is None
    assert DeadLetterView(dead_letter(record(), Reason("m", "C", "")), info_of()).headers() is None


def test_the_adapter_counts_selected_by_code_and_skipped_by_reason() -> None:
    adapter = Adapter(Selection(codes=frozenset({"MissingField"})))
    dead = [dead_letter(record(offset=i), Reason("map", code, "")) for i, code in enumerate("ABA")]
    dead += [dead_letter(record(offset=9), Reason("map", "MissingField", ""))]
    dead += [Message(topic="orders-dlq", value=b"not a dead letter")]
    views = []
    for msg in dead:
        try:
            views.append(adapter(msg))
        except FilteredOut as out:
            assert out.reason in (OTHER_CODE, NO_BRIDGE_HEADERS)
    assert [v.offset() for v in views] == [9]
    assert adapter.selected == Counter({"MissingField": 1})
    assert adapter.skipped == Counter({OTHER_CODE: 3, NO_BRIDGE_HEADERS: 1})
    assert adapter.codes_seen == Counter({"A": 2, "B": 1, "MissingField": 1})


# ------------------------------------------------------------------------------ bounds
@given(
    st.dictionaries(
        st.integers(0, 3), st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1
    )
)
def test_bounds_admit_below_the_end_and_are_done_when_all_read(
    parts: dict[int, tuple[int, int]],
) -> None:
    starts = {("d", p): min(a, b) for p, (a, b) in parts.items()}
    ends = {("d", p): max(a, b) for p, (a, b) in parts.items()}
    bounds = Bounds(starts, ends)
    assert bounds.total == sum(ends[tp] - starts[tp] for tp in ends)
    for tp, end in ends.items():
        assert not bounds.admit(tp, end)
        for offset in range(starts[tp], end):
            assert not bounds.done
            assert bounds.admit(tp, offset)
    assert bounds.done
    assert bounds.read == bounds.total
    assert bounds.committed_to_end(dict(ends))
    if bounds.total:
        assert not bounds.committed_to_end(dict(starts))
    assert not bounds.admit(("other", 0), 0)


def test_the_position_moves_a_partition_past_offsets_without_records() -> None:
    bounds = Bounds({("d", 0): 0}, {("d", 0): 10})
    bounds.admit(("d", 0), 7)  # 8 and 9: transaction markers, say
    assert not bounds.done
    bounds.advance(("d", 0), 12)
    assert bounds.done and bounds.read == 10


class _Consumer:
    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = batches
        self.other = "passed through"

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        return self.batches.pop(0) if self.batches else []

    def assignment(self) -> list[object]:
        return []


def test_the_bounded_consumer_hides_what_lies_past_the_end_and_says_when_done() -> None:
    msgs = [Message(topic="d", partition=0, offset=o, value=b"v") for o in range(5)]
    told: list[int] = []
    bounded = BoundedConsumer(
        _Consumer([msgs[:2], msgs[2:]]), Bounds({}, {("d", 0): 3}), lambda: told.append(1)
    )
    assert [m.offset() for m in bounded.consume(10, 0)] == [0, 1]
    assert told == []
    assert [m.offset() for m in bounded.consume(10, 0)] == [2]
    assert told == [1]
    bounded.consume(10, 0)
    assert told == [1], "told once"
    assert bounded.other == "passed through"


# ------------------------------------------------------------------------------ command parts
def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "code": [],
        "stage": [],
        "source_topic": [],
        "since": None,
        "until": None,
        "group": None,
        "dry_run": False,
        "max_rate": None,
        "show": 2,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_options_group_and_rate() -> None:
    options = options_from_args(args(code=["MissingField,WrongType"], max_rate=50.0))
    assert options.selection.codes == {"MissingField", "WrongType"}
    config = config_from_dict(
        {
            "kafka": {"group_id": "g"},
            "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
        }
    )
    redrive = redrive_config(config, options)
    assert redrive.kafka.group_id == f"g-redrive-{options.selection.digest()}"
    assert redrive.pipeline.max_entries_per_second == 50.0
    assert group_for(config, RedriveOptions(group="mine")) == "mine"
    with pytest.raises(ConfigError) as raised:
        options_from_args(
            args(since="2024-01-02", until="2024-01-01", max_rate=0.0, stage=["map,mapping"])
        )
    text = str(raised.value)
    assert "\n" not in text, "one line"
    assert "--since must be before --until" in text and "--max-rate" in text
    assert "--stage 'mapping' is not a stage: one of decode, map, validate, offload, send" in text


def test_the_summary_table_and_exit_codes() -> None:
    s = Summary("g-redrive-1", Selection(codes=frozenset({"MissingField", "Typo"})), total=10)
    s.read, s.finished, s.delivered = 10, True, 5
    s.selected = Counter({"MissingField": 6})
    s.codes_seen = Counter({"MissingField": 6, "InvalidArgument": 4})
    s.skipped = Counter({OTHER_CODE: 4})
    s.dead_lettered_again = Counter({"InvalidArgument": 1})
    table = s.table()
    split = (line.rsplit("  ", 1) for line in table.splitlines() if "  " in line)
    rows = {name.rstrip(): value for name, value in split}
    assert (
        rows.items()
        >= {
            "dead letters read": "10 of 10",
            "selected": "6",
            "  code MissingField": "6",
            "delivered": "5",
            "dead-lettered again": "1",
            "  now InvalidArgument": "1",
            "skipped": "4",
            "  other_code": "4",
        }.items()
    )
    assert "note: no dead letter read has code Typo (codes read: MissingField (6)," in table
    assert s.exit_code() == 4
    s.dead_lettered_again = Counter()
    assert s.exit_code() == 0
    s.finished = False
    assert s.exit_code() == 1 and "run the same command again" in s.table()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only_and_not_too_often() -> None:
    now = [0.0]
    tty = _Tty()
    bar = ProgressBar(tty, 100, clock=lambda: now[0])
    bar.update(50, "delivered 10")
    bar.update(60, "delivered 12")  # within 0.2 s: not drawn
    now[0] = 1.0
    bar.update(100, "delivered 20")
    bar.close()
    assert tty.getvalue() == (
        f"\r[{'#' * 15}{'-' * 15}] 50/100 delivered 10\x1b[K"
        f"\r[{'#' * 30}] 100/100 delivered 20\x1b[K\n"
    )
    pipe = io.StringIO()
    quiet = ProgressBar(pipe, 100)
    quiet.update(5, "", force=True)
    quiet.close()
    assert pipe.getvalue() == ""


def test_a_redriven_record_keeps_its_deduplication_id_on_the_new_bus() -> None:
    """On the new bus a redrive sends the original record's DeduplicationId (its topic,
    partition and offset, not the dead letter's): a record the bus already published within its
    window is answered DEDUPLICATED, not published twice."""
    import boto3
    from botocore.config import Config

    from bridge.mapping.mapper import Mapper
    from bridge.sink.busv2 import EventBusV2Sink
    from bridge.sink.factory import make_sink
    from bridge.sink.outcome import Kind
    from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2

    config = config_from_dict(
        {
            "sink": "event_bus_v2",
            "aws": {"event_bus_arn": BUS_ARN},
            "mappings": [
                {
                    "topic": "orders",
                    "source": "com.example",
                    "detail_type": "Order",
                    "event_group_id": "${key}",
                }
            ],
        }
    )
    original = record()
    view = Adapter(Selection())(dead_letter(original, Reason("map", "MissingField", "m"), 5))
    mapper = Mapper(config, make_sink(config, None))
    first = mapper.map(original).entry
    again = mapper.map(view).entry
    assert again["SystemMetadata"]["DeduplicationId"] == "orders-3-1234"
    assert again["SystemMetadata"] == first["SystemMetadata"]
    with LocalEventBusV2() as endpoint:
        client = boto3.client(
            "eventbridgev2",
            endpoint_url=endpoint.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDTEST",
            aws_secret_access_key="secret",
            config=Config(retries={"total_max_attempts": 1}),
        )
        sink = EventBusV2Sink(client, BUS_ARN)
        (published,) = sink.send([first])
        (redriven,) = sink.send([again])
    assert published.kind is Kind.DELIVERED and not published.deduplicated
    assert redriven.kind is Kind.DELIVERED and redriven.deduplicated
