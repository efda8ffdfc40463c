"""The memory budget: read from the cgroup, split between records and librdkafka, bounded."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config.load import config_from_dict
from bridge.mapping.mapper import Mapper
from bridge.sink.factory import make_sink
from bridge.source import budget as b
from bridge.source.budget import (
    MIN_RECORDS_BYTES,
    MemoryBudget,
    MiB,
    admit,
    derive_budget,
    fetch_count,
    message_cost,
    parse_limit,
    prefetch_settings,
    read_memory_limit,
    record_cost,
)
from bridge.source.consumer import consumer_config

EXAMPLES = settings(max_examples=300, deadline=None)
V1_NONE = "9223372036854771712"  # what cgroup v1 writes for "no limit"
MAPPING = {"topic": "t", "source": "com.example", "detail_type": "Order"}


def fake_cgroups(
    tmp_path: Path,
    proc: str,
    files: dict[str, str],
) -> tuple[Path, Path]:
    """A /proc/self/cgroup and a cgroup tree with ``files`` (relative path -> content)."""
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    return proc_file, root


# ---------------------------------------------------------------------------- the reader


def test_v2_limit_of_the_process_cgroup(tmp_path: Path) -> None:
    proc, root = fake_cgroups(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {"kubepods/pod1/ctr/memory.max": "536870912", "kubepods/memory.max": "max"},
    )
    assert read_memory_limit(proc, root) == 512 * MiB


def test_v2_the_smallest_of_the_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    # A pod-level limit below the container's is the one the kernel enforces.
    proc, root = fake_cgroups(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {"kubepods/pod1/ctr/memory.max": "max", "kubepods/pod1/memory.max": "268435456"},
    )
    assert read_memory_limit(proc, root) == 256 * MiB


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_cgroups(tmp_path, "0::/\n", {"memory.max": "max"})
    assert read_memory_limit(proc, root) is None


def test_v2_without_a_cgroup_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path; /sys/fs/cgroup is the container's own cgroup.
    proc, root = fake_cgroups(
        tmp_path, "0::/system.slice/docker-abc.scope\n", {"memory.max": "1073741824"}
    )
    assert read_memory_limit(proc, root) == 1024 * MiB


def test_v1_fallback(tmp_path: Path) -> None:
    proc, root = fake_cgroups(
        tmp_path,
        "12:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n",
        {"memory/process_api/abc/memory.limit_in_bytes": "402653184"},
    )
    assert read_memory_limit(proc, root) == 384 * MiB


def test_v1_huge_value_is_no_limit(tmp_path: Path) -> None:
    proc, root = fake_cgroups(
        tmp_path, "4:memory:/a\n", {"memory/a/memory.limit_in_bytes": V1_NONE}
    )
    assert read_memory_limit(proc, root) is None


def test_v2_wins_over_v1_when_it_has_a_file(tmp_path: Path) -> None:
    proc, root = fake_cgroups(
        tmp_path,
        "4:memory:/a\n0::/a\n",
        {"a/memory.max": "300000000", "memory/a/memory.limit_in_bytes": "200000000"},
    )
    assert read_memory_limit(proc, root) == 300_000_000


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    assert read_memory_limit(tmp_path / "missing", tmp_path) is None
    proc, root = fake_cgroups(tmp_path, "0::/a\n", {})
    assert read_memory_limit(proc, root) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max", None), ("536870912", 512 * MiB), (V1_NONE, None), ("0", None), ("junk", None)],
)
def test_parse_limit(text: str, expected: int | None) -> None:
    assert parse_limit(text) == expected


def test_the_real_machine_cgroup() -> None:
    """This machine's own limit, read as a container would (a figure, or None without one)."""
    if not Path("/proc/self/cgroup").exists():
        pytest.skip("no /proc/self/cgroup here")
    limit = read_memory_limit()
    assert limit is None or 0 < limit < b.UNLIMITED
    expected = _independent_read()
    assert limit == expected


def _independent_read() -> int | None:
    """The same limit read another way: the first limit file found for this process, v2 then
    v1, walking up from its own cgroup (no ancestors' minimum: a flat machine has none)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for hier, ctrl, name, base in [("0", "", "memory.max", ""), (None, "memory", "", "memory")]:
        for line in lines:
            h, c, path = line.split(":", 2)
            if (hier is not None and h == hier and c == ctrl) or (
                hier is None and "memory" in c.split(",")
            ):
                fname = name or "memory.limit_in_bytes"
                values = []
                parts = [p for p in path.split("/") if p]
                for n in range(len(parts), -1, -1):
                    f = Path("/sys/fs/cgroup", base, *parts[:n], fname)
                    if f.exists():
                        values.append(parse_limit(f.read_text()))
                if values:
                    real = [v for v in values if v is not None]
                    return min(real) if real else None
    return None


# ---------------------------------------------------------------------------- the split


def test_a_512_mib_container() -> None:
    got = derive_budget(512 * MiB, in_flight_bytes=b.in_flight_bytes(4, 262_144))
    assert got.source == "limit"
    assert 165 * MiB < got.records < 175 * MiB  # 45% of 512 - 128 - 3 MiB
    assert 70 * MiB < got.prefetch < 80 * MiB
    assert got.records + got.prefetch + b.RUNTIME_BYTES < 512 * MiB


def test_no_limit_and_an_override() -> None:
    assert derive_budget(None) == MemoryBudget(
        b.DEFAULT_RECORDS_BYTES, b.DEFAULT_PREFETCH_BYTES, None, "default"
    )
    got = derive_budget(512 * MiB, override=64 * MiB)
    assert (got.records, got.source) == (64 * MiB, "setting")
    assert got.prefetch == derive_budget(512 * MiB).prefetch


@EXAMPLES
@given(
    limit=st.integers(1, 1 << 45),
    in_flight=st.integers(0, 256 * 3 * 1_048_576),
)
def test_budget_within_the_limit_above_the_floor(limit: int, in_flight: int) -> None:
    got = derive_budget(limit, in_flight_bytes=in_flight)
    # The calls in flight get every slot's worth or what the records can fill, the lesser.
    assert got.in_flight == min(in_flight, b.BODY_COPIES * got.records)
    usable = limit - b.RUNTIME_BYTES - got.in_flight
    assert got.records >= MIN_RECORDS_BYTES
    assert b.MIN_PREFETCH_BYTES <= got.prefetch <= b.MAX_PREFETCH_BYTES
    if usable * b.RECORDS_SHARE >= MIN_RECORDS_BYTES + 1:
        # Whenever the floors allow it at all, records and prefetch fit under the headroom.
        assert got.records + got.prefetch <= usable
    else:
        assert got.records <= MIN_RECORDS_BYTES + 1
    # Never less than reserving every call slot at the largest request would leave.
    every_slot = int((limit - b.RUNTIME_BYTES - in_flight) * b.RECORDS_SHARE)
    assert got.records >= every_slot or got.records == MIN_RECORDS_BYTES


@EXAMPLES
@given(
    limit=st.integers(1, 1 << 40),
    in_flight=st.integers(0, 1 << 32),
    more=st.integers(0, 1 << 32),
)
def test_a_larger_in_flight_ceiling_never_gives_more_records(
    limit: int, in_flight: int, more: int
) -> None:
    less = derive_budget(limit, in_flight_bytes=in_flight + more)
    assert less.records <= derive_budget(limit, in_flight_bytes=in_flight).records


def test_1_mib_requests_in_a_512_mib_container_leave_more_than_the_floors() -> None:
    """128 call slots x 1 MiB x 3 copies (384 MiB) used to be reserved whole: a 512 Mi
    container with ``batch.max_bytes`` 1 MiB (900 KB records) got the floors, 16 MiB of
    records (9 records of 900 KB) and 4 MiB of prefetch. The calls can only carry records
    held, so they get twice the records' share, and the records the rest's fixed point."""
    ceiling = b.in_flight_bytes(128, MiB)
    got = derive_budget(512 * MiB, in_flight_bytes=ceiling)
    assert 90 * MiB < got.records < 92 * MiB  # 45% x 384 MiB / (1 + 45% x 2)
    assert got.in_flight == b.BODY_COPIES * got.records < ceiling
    assert 40 * MiB < got.prefetch < 41 * MiB  # 20% of what the calls leave
    assert got.records + got.prefetch + got.in_flight + b.RUNTIME_BYTES < 512 * MiB
    # 256 KiB requests: every slot's worth (96 MiB) is the lesser, as before.
    default = derive_budget(512 * MiB, in_flight_bytes=b.in_flight_bytes(128, 256 * 1024))
    assert default.in_flight == 96 * MiB
    assert default.records == int(288 * MiB * b.RECORDS_SHARE)


@EXAMPLES
@given(small=st.integers(1, 1 << 40), extra=st.integers(0, 1 << 40))
def test_a_larger_limit_never_gives_a_smaller_budget(small: int, extra: int) -> None:
    assert derive_budget(small).records <= derive_budget(small + extra).records


# ---------------------------------------------------------------------------- admission


@EXAMPLES
@given(record=st.integers(0, 1 << 40), budget=st.integers(1, 1 << 40))
def test_a_record_larger_than_the_budget_passes_alone(record: int, budget: int) -> None:
    assert admit(0, record, budget)


@EXAMPLES
@given(
    buffered=st.integers(1, 1 << 40),
    record=st.integers(0, 1 << 40),
    budget=st.integers(1, 1 << 40),
)
def test_admit_never_exceeds_the_budget_with_others_held(
    buffered: int, record: int, budget: int
) -> None:
    assert admit(buffered, record, budget) == (buffered + record <= budget)


@EXAMPLES
@given(
    costs=st.lists(st.integers(b.RECORD_OVERHEAD, 2_000_000), min_size=1, max_size=300),
    budget=st.integers(1, 300 * MiB),
)
def test_admitting_in_turn_stays_within_budget_or_holds_one(costs: list[int], budget: int) -> None:
    held: list[int] = []
    for cost in costs:
        if admit(sum(held), cost, budget):
            held.append(cost)
        assert sum(held) <= budget or len(held) == 1


@EXAMPLES
@given(
    buffered=st.integers(0, 1 << 32),
    budget=st.integers(1, 1 << 32),
    mean=st.floats(1, 10_000_000),
    most=st.integers(1, 1000),
)
def test_fetch_count(buffered: int, budget: int, mean: float, most: int) -> None:
    n = fetch_count(buffered, budget, mean, most)
    assert 0 <= n <= most
    if buffered == 0:
        assert n >= 1  # never stuck with nothing held
    if buffered >= budget and buffered > 0:
        assert n == 0
    if n > 1:
        assert buffered + n * mean <= budget  # at the mean cost, a fetch fits


# ---------------------------------------------------------------------------- record cost


def test_record_cost_counts_every_part() -> None:
    assert record_cost(1000, 10, 20, 2, 1100) == 2130 + b.RECORD_OVERHEAD + 2 * b.HEADER_OVERHEAD
    msg = Message(
        topic="t",
        partition=0,
        offset=1,
        key=b"k1",
        value=b"v" * 100,
        headers=[("h", b"xy"), ("n", None)],
    )
    assert message_cost(msg, 50) == record_cost(100, 2, 1 + 2 + 1, 2, 50)
    tombstone = Message(topic="t", partition=0, offset=1)
    assert message_cost(tombstone) == b.RECORD_OVERHEAD


@pytest.mark.parametrize(("size", "count"), [(1024, 2000), (100 * 1024, 100), (900 * 1024, 20)])
def test_record_cost_matches_tracemalloc(size: int, count: int) -> None:
    """record_cost is within 1.3x above (never below 0.98x) of what tracemalloc sees a held
    record cost: a real Message, the mapped entry and the pipeline's work item."""
    from bridge.pipeline import Work

    config = config_from_dict({"batch": {"max_bytes": 1_048_576}, "mappings": [MAPPING]})
    mapper = Mapper(config, make_sink(config, None))
    pad = "x" * (size - 40)
    held = []
    estimated = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            value = json.dumps({"id": i, "pad": pad}).encode()
            msg = Message(
                topic="t",
                partition=0,
                offset=i,
                key=str(i).encode(),
                value=value,
                headers=[("trace", b"abc123")],
                timestamp=(1, 1_700_000_000_000),
            )
            work = Work(msg, ("t", 0), 0)
            mapped = mapper.map(msg)
            work.entry, work.size = mapped.entry, mapped.size
            held.append(work)
            estimated += message_cost(msg, mapped.size)
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.98 * traced <= estimated <= 1.3 * traced, (traced / count, estimated / count)


# ---------------------------------------------------------------------------- librdkafka


def test_prefetch_settings_split_and_bounds() -> None:
    got = prefetch_settings(64 * MiB)
    assert got == {
        "queued.max.messages.kbytes": 32 * 1024,
        "fetch.max.bytes": 8 * MiB,
        "max.partition.fetch.bytes": 1_048_576,
    }
    small = prefetch_settings(b.MIN_PREFETCH_BYTES)
    assert small["fetch.max.bytes"] == b.LIBRDKAFKA_MESSAGE_MAX_BYTES  # librdkafka's floor
    assert small["max.partition.fetch.bytes"] == b.LIBRDKAFKA_MESSAGE_MAX_BYTES


def test_prefetch_settings_leave_the_users_keys() -> None:
    user = {"fetch.message.max.bytes": 5_000_000, "queued.max.messages.kbytes": 1000}
    assert prefetch_settings(64 * MiB, user) == {"fetch.max.bytes": 8 * MiB}
    # fetch.max.bytes may be neither below message.max.bytes nor above receive - 512.
    assert prefetch_settings(4 * MiB, {"message.max.bytes": 3_000_000})["fetch.max.bytes"] == (
        3_000_000
    )
    capped = prefetch_settings(96 * MiB, {"receive.message.max.bytes": 2_000_512})
    assert capped["fetch.max.bytes"] == 2_000_000


@EXAMPLES
@given(
    prefetch=st.integers(b.MIN_PREFETCH_BYTES, b.MAX_PREFETCH_BYTES),
    message_max=st.one_of(st.none(), st.integers(1000, 50_000_000)),
)
def test_prefetch_settings_within_the_prefetch(prefetch: int, message_max: int | None) -> None:
    user = {} if message_max is None else {"message.max.bytes": message_max}
    got = prefetch_settings(prefetch, user)
    floor = message_max or b.LIBRDKAFKA_MESSAGE_MAX_BYTES
    assert got["fetch.max.bytes"] >= floor
    assert got["max.partition.fetch.bytes"] <= got["fetch.max.bytes"]
    if floor <= prefetch // 8:
        # queue + one response per broker (four) within the prefetch share
        assert got["queued.max.messages.kbytes"] * 1024 + 4 * got["fetch.max.bytes"] <= prefetch


@pytest.mark.parametrize("prefetch", [b.MIN_PREFETCH_BYTES, 64 * MiB, b.MAX_PREFETCH_BYTES])
def test_librdkafka_accepts_the_derived_settings(prefetch: int) -> None:
    consumer = Consumer(
        {"group.id": "g", "bootstrap.servers": "127.0.0.1:1", **prefetch_settings(prefetch)}
    )
    consumer.close()


def test_consumer_config_applies_the_budget_unless_the_user_set_it() -> None:
    budget = derive_budget(512 * MiB)
    config = config_from_dict({"mappings": [MAPPING]})
    conf = consumer_config(config, budget=budget)
    for key, value in prefetch_settings(budget.prefetch).items():
        assert conf[key] == value
    config = config_from_dict(
        {"kafka": {"properties": {"fetch.max.bytes": 52_428_800}}, "mappings": [MAPPING]}
    )
    conf = consumer_config(config, budget=budget)
    assert conf["fetch.max.bytes"] == 52_428_800
    assert conf["queued.max.messages.kbytes"] == budget.prefetch // 2 // 1024


def test_consumer_config_reads_this_container_by_default() -> None:
    config = config_from_dict({"mappings": [MAPPING]})
    expected = b.memory_budget(config, config.packing()[1])
    conf = consumer_config(config)
    assert conf["queued.max.messages.kbytes"] == expected.prefetch // 2 // 1024


def test_max_buffered_bytes_setting() -> None:
    config = config_from_dict(
        {"pipeline": {"max_buffered_bytes": 100 * MiB}, "mappings": [MAPPING]}
    )
    assert config.pipeline.max_buffered_bytes == 100 * MiB
    got = b.memory_budget(config, 262_144)
    assert (got.records, got.source) == (100 * MiB, "setting")
    assert config_from_dict({"mappings": [MAPPING]}).pipeline.max_buffered_bytes is None


def test_memory_budget_from_a_fake_cgroup(tmp_path: Path) -> None:
    proc, root = fake_cgroups(tmp_path, "0::/\n", {"memory.max": str(512 * MiB)})
    config = config_from_dict({"mappings": [MAPPING]})
    got = b.memory_budget(config, 262_144, proc, root)
    assert got == derive_budget(
        512 * MiB, in_flight_bytes=b.in_flight_bytes(config.pipeline.max_in_flight_calls, 262_144)
    )
