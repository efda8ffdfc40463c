"""The memory budget: how many bytes of records the bridge may hold, and what librdkafka may.

A container is OOM-killed at its memory limit, and during an outage everything consumed stays
in memory until it is delivered. So the records the pipeline holds are bounded in bytes, and so
is what librdkafka prefetches. By default the budget follows the container's memory limit
(cgroup v2 ``memory.max`` of the process's own cgroup, cgroup v1 ``memory.limit_in_bytes`` as a
fallback); without a limit it is :data:`DEFAULT_RECORDS_BYTES`. ``pipeline.max_buffered_bytes``
overrides the records' share.

What a limit is split into (all figures measured on the 2-core test machine):

1. :data:`RUNTIME_BYTES` for the interpreter and its libraries: ``bridge run`` idles at
   84 MB RSS (boto3, botocore's models, confluent-kafka, pycurl, prometheus-client, structlog
   loaded, connected, in its group), plus room for what each turn allocates and drops.
2. The calls in flight: each holds its request body a few times over (the entries' JSON text,
   the body bytes, libcurl's buffer). Their entries are records held, already counted in the
   records' share; only the other copies are reserved, and for no more calls than the records'
   share can fill (:data:`BODY_COPIES`): reserving every call slot at the largest request
   (128 x 1 MiB x 3 with ``batch.max_bytes`` 1 MiB) left a 512 Mi container nothing but the
   floors.
3. Of the rest, :data:`RECORDS_SHARE` for buffered records (counted with :func:`record_cost`),
   :data:`PREFETCH_SHARE` for librdkafka's fetch queue (:func:`prefetch_settings`), and the
   remainder as slack: RSS runs above the bytes actually live (transient copies, fragmented
   heap), most of all while a backlog of large records drains.

The reader (:func:`read_memory_limit`) is the only I/O here; it takes its paths as parameters.
:func:`memory_budget` reads the cgroup filesystems under ``/sys/fs/cgroup``, or under the
directory named by the environment variable :data:`CGROUP_ROOT_ENV` (``BRIDGE_CGROUP_ROOT``):
tests and ``benchmarks/outage.py`` point it at a fake tree holding a ``memory.max`` to run a
real bridge process as a container with that limit would.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.config import BridgeConfig

MiB = 1024 * 1024

CGROUP_ROOT_ENV = "BRIDGE_CGROUP_ROOT"
"""Environment variable naming where :func:`memory_budget` reads the cgroup filesystems
(default ``/sys/fs/cgroup``). Not a setting: for tests and benchmarks that give a bridge
process a fake limit, and for a host that mounts cgroups elsewhere."""

RUNTIME_BYTES = 128 * MiB
"""Interpreter and libraries: ``bridge run`` measured 84 MB RSS idle, 100-110 MB delivering."""

DEFAULT_RECORDS_BYTES = 256 * MiB
"""Buffered records when the container has no memory limit (and nothing is configured)."""

MIN_RECORDS_BYTES = 16 * MiB
"""The floor of the records' budget, however small the limit: below it nothing flows well."""

RECORDS_SHARE = 0.45
PREFETCH_SHARE = 0.2
"""Shares of what is left after the runtime and the calls in flight. The rest (35%) is slack:
``benchmarks/outage.py`` measured 900 KB records catching up after an outage at 125-190 MB of
RSS above what the same records held during it (transient copies while mapping and sending,
the allocator's fragmentation, librdkafka refilling its queue after a resume)."""

MIN_PREFETCH_BYTES = 4 * MiB
MAX_PREFETCH_BYTES = 96 * MiB
"""librdkafka's own defaults allow 64 MiB of queue plus a 50 MiB fetch per broker; more than
this gains no throughput for records bound for a 10-entry API."""

DEFAULT_PREFETCH_BYTES = 64 * MiB
"""librdkafka's share when the container has no memory limit."""

UNLIMITED = 1 << 60
"""Limits at or above this are "no limit": cgroup v1 writes 9223372036854771712 for none."""

RECORD_OVERHEAD = 768
"""Python objects around one buffered record besides its bytes: the Message, the work item, the
entry dict and its strings' headers. tracemalloc measured 639-673 bytes per record (one header)
for 1 KB, 100 KB and 900 KB JSON values; rounded up."""

HEADER_OVERHEAD = 128
"""Per Kafka header: its tuple, name str and value bytes objects."""

CALL_COPIES = 3
"""A call in flight holds its entries' text, the request body and libcurl's copy of it."""

BODY_COPIES = CALL_COPIES - 1
"""The copies a call adds to the records it carries (the entries' text is counted in
:func:`record_cost`): calls in flight carry only records held, so what they add is at most
this many times the records' share."""

LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: ``fetch.max.bytes`` may not be set below it."""

PREFETCH_KEYS = ("queued.max.messages.kbytes", "fetch.max.bytes", "max.partition.fetch.bytes")
"""The librdkafka consumer settings the budget sets unless ``kafka.properties`` does."""

_PARTITION_FETCH_DEFAULT = 1_048_576  # librdkafka's max.partition.fetch.bytes default
_FETCH_RESPONSES = 4  # fetch responses that may overshoot the queue at once (one per broker)


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """What the bridge may hold, in bytes.

    Attributes:
        records: Buffered records (consumed, not yet finished), summed with :func:`record_cost`.
        prefetch: librdkafka's fetch queue and responses (see :func:`prefetch_settings`).
        limit: The container's memory limit, None without one.
        source: Where the records' figure came from: ``setting`` (pipeline.max_buffered_bytes),
            ``limit`` (the container's limit) or ``default`` (no limit).
        in_flight: What is reserved for calls in flight beyond the records they carry (0
            without a limit).
    """

    records: int
    prefetch: int
    limit: int | None
    source: str
    in_flight: int = 0


def derive_budget(
    limit: int | None,
    *,
    override: int | None = None,
    in_flight_bytes: int = 0,
    runtime_bytes: int = RUNTIME_BYTES,
) -> MemoryBudget:
    """The budget for a container of ``limit`` bytes (None: no limit). Pure.

    The calls in flight get ``min(in_flight_bytes, BODY_COPIES x records)``: every call slot
    at the largest request, or what the records held can fill, whichever is less. The records'
    share is the one fixed point of ``records = RECORDS_SHARE x (limit - runtime - reserved)``
    (the larger of the two cases' solutions). With a limit, records + prefetch + the
    reservation never exceed ``limit - runtime_bytes`` unless that is below the floors
    (:data:`MIN_RECORDS_BYTES`, :data:`MIN_PREFETCH_BYTES`): a limit that small cannot be
    honoured, and the floors keep the bridge working.

    Args:
        limit: The container's memory limit in bytes, None without one.
        override: ``pipeline.max_buffered_bytes``: the records' budget as configured (the
            prefetch and the reservation still follow the limit).
        in_flight_bytes: What every call slot may hold at the largest request
            (:func:`in_flight_bytes`): the reservation's ceiling.
        runtime_bytes: The interpreter and its libraries.
    """
    reserved = 0
    if limit is None:
        records = DEFAULT_RECORDS_BYTES
        prefetch = DEFAULT_PREFETCH_BYTES
        source = "default"
    else:
        headroom = max(0, limit - runtime_bytes)
        every_slot = (headroom - in_flight_bytes) * RECORDS_SHARE
        filled = headroom * RECORDS_SHARE / (1 + RECORDS_SHARE * BODY_COPIES)
        records = max(MIN_RECORDS_BYTES, int(max(every_slot, filled)))
        reserved = min(in_flight_bytes, BODY_COPIES * records)
        prefetch = int(max(0, headroom - reserved) * PREFETCH_SHARE)
        prefetch = max(MIN_PREFETCH_BYTES, min(MAX_PREFETCH_BYTES, prefetch))
        source = "limit"
    if override is not None:
        records = override
        source = "setting"
    return MemoryBudget(records, prefetch, limit, source, in_flight=reserved)


def in_flight_bytes(max_in_flight_calls: int, max_request_bytes: int) -> int:
    """What the calls in flight may hold at once: each request's body, a few copies of it."""
    return max_in_flight_calls * max_request_bytes * CALL_COPIES


def record_cost(
    value_len: int, key_len: int, headers_len: int, header_count: int, entry_size: int
) -> int:
    """Bytes one buffered record costs: its value, key and headers as consumed, the entry
    mapped from it (mostly the Detail, a second copy of the value), and the objects around
    them. Pure.

    Args:
        value_len: ``len(msg.value())`` (0 for a tombstone).
        key_len: ``len(msg.key())`` (0 without a key).
        headers_len: The bytes of the headers' names and values.
        header_count: How many headers.
        entry_size: The mapped entry's size by the sink's formula (0 before or without one).
    """
    return (
        value_len
        + key_len
        + headers_len
        + entry_size
        + RECORD_OVERHEAD
        + HEADER_OVERHEAD * header_count
    )


def message_cost(msg: Any, entry_size: int = 0) -> int:
    """:func:`record_cost` of a ``confluent_kafka.Message`` (or anything with its methods)."""
    value = msg.value()
    key = msg.key()
    headers: Iterable[tuple[str, bytes | None]] = msg.headers() or ()
    headers_len = 0
    count = 0
    for name, item in headers:
        headers_len += len(name) + (len(item) if item is not None else 0)
        count += 1
    return record_cost(
        len(value) if value is not None else 0,
        len(key) if key is not None else 0,
        headers_len,
        count,
        entry_size,
    )


def estimated_cost(msg: Any) -> int:
    """:func:`message_cost` before mapping, with an entry the size of the value (its Detail)."""
    value = msg.value()
    return message_cost(msg, len(value) if value is not None else 0)


def admit(buffered_bytes: int, record_bytes: int, budget: int) -> bool:
    """Whether a record of ``record_bytes`` may join ``buffered_bytes`` under ``budget``. Pure.

    A record larger than the whole budget is still admitted when nothing else is buffered, so
    it passes alone instead of blocking its partition forever. Costs are positive
    (:func:`record_cost` is at least :data:`RECORD_OVERHEAD`), so "nothing buffered" is 0.
    """
    return buffered_bytes == 0 or buffered_bytes + record_bytes <= budget


def fetch_count(buffered_bytes: int, budget: int, mean_cost: float, most: int = 500) -> int:
    """How many records to take in the next fetch: 0 when the budget is spent. Pure.

    The loop cannot look at a record's size before it has consumed it, so it asks for as many
    as fit at the mean cost of recent records; a fetch overshoots the budget by at most the
    variance of one fetch. With nothing buffered it always takes at least one (see
    :func:`admit`).

    Args:
        buffered_bytes: The cost of the records held now.
        budget: :attr:`MemoryBudget.records`.
        mean_cost: The mean :func:`record_cost` of recent records (any positive guess at first).
        most: The most records one fetch may take.
    """
    room = budget - buffered_bytes
    if buffered_bytes == 0:
        room = max(room, 1)
    if room <= 0:
        return 0
    return max(1, min(most, math.floor(room / max(mean_cost, 1.0))))


def prefetch_settings(prefetch_bytes: int, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka consumer settings that keep its prefetch within ``prefetch_bytes``. Pure.

    With a consumer group, ``queued.max.messages.kbytes`` bounds the one consumer queue
    (librdkafka#4137), but each broker's fetcher may overshoot it by one response of up to
    ``fetch.max.bytes`` (librdkafka#5140): so the queue gets half the prefetch and a fetch an
    eighth, leaving room for four brokers' responses. ``fetch.max.bytes`` may not be below
    ``message.max.bytes`` (librdkafka refuses to start) nor above ``receive.message.max.bytes``
    - 512. Keys the user set in ``kafka.properties`` are left out (theirs win).

    Args:
        prefetch_bytes: :attr:`MemoryBudget.prefetch`.
        user: The user's ``kafka.properties``.
    """
    user = user or {}
    queue_kb = max(1, min(2_097_151, prefetch_bytes // 2 // 1024))
    fetch = prefetch_bytes // (2 * _FETCH_RESPONSES)
    floor = _as_int(user.get("message.max.bytes"), LIBRDKAFKA_MESSAGE_MAX_BYTES)
    fetch = max(fetch, floor)
    receive = user.get("receive.message.max.bytes")
    if receive is not None:
        fetch = min(fetch, _as_int(receive, fetch + 512) - 512)
    derived: dict[str, Any] = {
        "queued.max.messages.kbytes": queue_kb,
        "fetch.max.bytes": fetch,
        "max.partition.fetch.bytes": min(_PARTITION_FETCH_DEFAULT, fetch),
    }
    aliases = {"max.partition.fetch.bytes": "fetch.message.max.bytes"}
    return {
        key: item
        for key, item in derived.items()
        if key not in user and aliases.get(key) not in user
    }


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default  # librdkafka itself reports a bad value at start


# ---------------------------------------------------------------------------- reading a limit


def read_memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> int | None:
    """The memory limit of this process's cgroup in bytes, None without one (or no cgroups).

    cgroup v2 first: ``memory.max`` of the process's own cgroup (from ``proc_cgroup``'s
    ``0::<path>`` line) and of its ancestors, the smallest counting; when the path does not
    exist under ``cgroup_root`` (a container without a cgroup namespace sees the host's path),
    ``cgroup_root/memory.max``, which is then the container's own. Then cgroup v1 the same way
    with ``memory.limit_in_bytes`` under ``cgroup_root/memory``. ``max`` and values of
    :data:`UNLIMITED` and above mean no limit.

    Args:
        proc_cgroup: ``/proc/self/cgroup`` (tests point it at a fake).
        cgroup_root: Where the cgroup filesystems are mounted.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    v2_path: str | None = None
    v1_path: str | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    if v2_path is not None:
        found, limit = _smallest_limit(cgroup_root, v2_path, "memory.max")
        if found:
            return limit
    if v1_path is not None:
        found, limit = _smallest_limit(cgroup_root / "memory", v1_path, "memory.limit_in_bytes")
        if found:
            return limit
    return None


def _smallest_limit(root: Path, path: str, name: str) -> tuple[bool, int | None]:
    """(whether any file was read, the smallest limit among the cgroup and its ancestors)."""
    parts = [p for p in path.strip("/").split("/") if p]
    candidates = [root.joinpath(*parts[:n], name) for n in range(len(parts), -1, -1)]
    found = False
    smallest: int | None = None
    for file in candidates:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        found = True
        limit = parse_limit(text)
        if limit is not None and (smallest is None or limit < smallest):
            smallest = limit
    return found, smallest


def parse_limit(text: str) -> int | None:
    """A cgroup memory limit file's content: bytes, or None for no limit (``max``, huge, bad)."""
    text = text.strip()
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value <= 0 or value >= UNLIMITED:
        return None
    return value


def memory_budget(
    config: BridgeConfig,
    max_request_bytes: int,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path | None = None,
) -> MemoryBudget:
    """The budget for ``config`` (a :class:`~bridge.config.BridgeConfig`) in this container.

    Args:
        config: The bridge configuration (``pipeline.max_buffered_bytes``,
            ``pipeline.max_in_flight_calls``).
        max_request_bytes: The sink's largest request.
        proc_cgroup: See :func:`read_memory_limit`.
        cgroup_root: See :func:`read_memory_limit`; None: ``$BRIDGE_CGROUP_ROOT`` when set,
            else ``/sys/fs/cgroup``.
    """
    if cgroup_root is None:
        cgroup_root = Path(os.environ.get(CGROUP_ROOT_ENV) or "/sys/fs/cgroup")
    pipeline = config.pipeline
    return derive_budget(
        read_memory_limit(proc_cgroup, cgroup_root),
        override=pipeline.max_buffered_bytes,
        in_flight_bytes=in_flight_bytes(pipeline.max_in_flight_calls, max_request_bytes),
    )
