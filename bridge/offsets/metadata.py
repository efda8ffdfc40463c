"""Finished offsets above the committed one, in a Kafka commit's metadata string. Pure.

The committed offset of a partition stops at its oldest unfinished record; records after it may
be finished already (delivered, filtered, dead-lettered). This codec writes which ones into the
metadata string Kafka stores with the committed offset, so that after a restart or a rebalance
they are not sent again. The idea is Confluent's Parallel Consumer's (``OffsetMapCodecManager``:
a magic byte, run-length and bitset encodings, compressed variants, the smallest chosen per
commit); the format is the bridge's own.

Format, version 1 (ASCII, so its length in characters is its size in bytes)::

    keb1:<tag><base64 of: crc32 (4 bytes, big-endian) + data>

``tag`` says how ``data`` is written: ``r`` run lengths, ``b`` a bitset, ``R``/``B`` the same
zlib-compressed. Uncompressed, ``data`` is ``varint(span)`` then the body, where ``span`` =
highest finished offset - committed offset (so a reader knows where the record ends) and:

- ``b``: bit ``i`` (little-endian within each byte) set when offset ``committed + 1 + i`` is
  finished, for ``i`` in ``[0, span)``; exactly ``ceil(span / 8)`` bytes, unused bits zero.
- ``r``: varints alternating a run of not-finished offsets (the first may be 0) and a run of
  finished ones (each >= 1), starting at ``committed + 1`` and summing to ``span``.

The crc32 covers the header (``keb1:`` and the tag), the committed offset (8 bytes, signed
big-endian) and ``data`` as stored: a mutated or truncated string, or one read back next to
another committed offset (a reset by another tool), fails it. Varints are unsigned LEB128.

Decoding never raises and never guesses: anything it cannot read entirely (another tool's
metadata, a newer version, corrupt, truncated, a committed offset it was not written for) is
"nothing known", with the reason.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = 1
PREFIX = f"keb{VERSION}:"
_FAMILY = "keb"
BROKER_DEFAULT_MAX_BYTES = 4096
"""The broker's ``offset.metadata.max.bytes`` default."""

DEFAULT_MAX_BYTES = BROKER_DEFAULT_MAX_BYTES - 1
"""The longest metadata a broker with the default setting accepts: measured on Kafka 4.1, it
refuses 4,096 characters (``OFFSET_METADATA_TOO_LARGE``, the whole commit fails) and takes
4,095."""

MAX_DATA_BYTES = 1 << 21
"""Largest uncompressed ``data`` written or read (2 MiB: a bitset of 16.7 million offsets)."""

MAX_SPAN = 8 * MAX_DATA_BYTES
"""Largest distance from the committed offset to the highest finished offset recorded."""

_CRC_BYTES = 4


@dataclass(frozen=True)
class Decoded:
    """What a metadata string says about one partition.

    Attributes:
        offsets: Offsets above the committed one known finished; empty when nothing is known.
        problem: Why nothing could be read (None when the string was read, or was empty).
    """

    offsets: frozenset[int]
    problem: str | None = None


NOTHING = Decoded(frozenset())


def encode(
    committed: int, finished: Iterable[int], max_bytes: int = DEFAULT_MAX_BYTES
) -> str | None:
    """The metadata recording ``finished`` above ``committed``: the shortest encoding.

    Args:
        committed: The offset committed with it (the next to read; itself not finished).
        finished: Finished offsets, each greater than ``committed``.
        max_bytes: The broker's ``offset.metadata.max.bytes``.

    Returns:
        ``""`` when ``finished`` is empty, None when no encoding fits in ``max_bytes`` (commit
        the plain offset then), else the metadata string.

    Raises:
        ValueError: An offset is not above ``committed`` (a caller's bug).
    """
    offsets = sorted(set(finished))
    if not offsets:
        return ""
    if offsets[0] <= committed:
        raise ValueError(f"finished offset {offsets[0]} is not above committed {committed}")
    span = offsets[-1] - committed
    if span > MAX_SPAN:
        return None
    head = _varint(span)
    candidates: list[tuple[str, bytes]] = []
    runs = head + _run_lengths(committed, offsets)
    candidates.append(("r", runs))
    if (span + 7) // 8 + len(head) <= MAX_DATA_BYTES:
        candidates.append(("b", head + _bitset(committed, offsets, span)))
    for tag, data in list(candidates):
        candidates.append((tag.upper(), zlib.compress(data, 9)))
    best: str | None = None
    for tag, data in candidates:
        text = _pack(committed, tag, data)
        if len(text) <= max_bytes and (best is None or len(text) < len(best)):
            best = text
    return best


def decode(committed: int, metadata: str | None) -> Decoded:
    """The finished offsets ``metadata`` records above ``committed``, or why none are known.

    Never raises: whatever cannot be read entirely gives an empty set and a reason.
    """
    if not metadata:
        return NOTHING
    if not metadata.startswith(_FAMILY):
        return _nothing("not written by the bridge (another tool's metadata)")
    version, sep, rest = metadata[len(_FAMILY) :].partition(":")
    if not sep or not version.isdigit():
        return _nothing("not written by the bridge (another tool's metadata)")
    if version != str(VERSION):
        return _nothing(f"format version {version}; this bridge reads version {VERSION}")
    if not rest:
        return _nothing("truncated: no encoding tag")
    tag, text = rest[0], rest[1:]
    if tag not in "rbRB":
        return _nothing(f"unknown encoding {tag!r}")
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return _nothing("truncated or corrupt: not base64")
    if len(blob) <= _CRC_BYTES:
        return _nothing("truncated: no data")
    crc, data = int.from_bytes(blob[:_CRC_BYTES], "big"), blob[_CRC_BYTES:]
    if crc != _crc(committed, tag, data):
        return _nothing(
            f"checksum mismatch: corrupt, or not written for committed offset {committed}"
        )
    if tag.isupper():
        inflated = _inflate(data)
        if inflated is None:
            return _nothing("corrupt: compressed data does not inflate")
        data = inflated
    try:
        offsets = _read(committed, tag.lower(), data)
    except _FormatError as exc:
        return _nothing(f"corrupt: {exc}")
    return Decoded(frozenset(offsets))


def _nothing(problem: str) -> Decoded:
    return Decoded(frozenset(), problem)


class _FormatError(ValueError):
    """Data that passed the checksum and still does not follow the format."""


def _pack(committed: int, tag: str, data: bytes) -> str:
    blob = _crc(committed, tag, data).to_bytes(_CRC_BYTES, "big") + data
    return PREFIX + tag + base64.b64encode(blob).decode("ascii")


def _crc(committed: int, tag: str, data: bytes) -> int:
    head = (PREFIX + tag).encode("ascii") + committed.to_bytes(8, "big", signed=True)
    return zlib.crc32(data, zlib.crc32(head))


def _inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_DATA_BYTES + 1)
    except zlib.error:
        return None
    if len(out) > MAX_DATA_BYTES or not inflater.eof or inflater.unused_data:
        return None
    return out


def _run_lengths(committed: int, offsets: list[int]) -> bytes:
    out = bytearray()
    expected = committed + 1  # next offset not yet covered
    run_start = offsets[0]
    previous = offsets[0]
    for offset in offsets[1:]:
        if offset != previous + 1:
            out += _varint(run_start - expected) + _varint(previous + 1 - run_start)
            expected = previous + 1
            run_start = offset
        previous = offset
    out += _varint(run_start - expected) + _varint(previous + 1 - run_start)
    return bytes(out)


def _bitset(committed: int, offsets: list[int], span: int) -> bytes:
    bits = bytearray((span + 7) // 8)
    for offset in offsets:
        i = offset - committed - 1
        bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def _read(committed: int, kind: str, data: bytes) -> list[int]:
    span, pos = _read_varint(data, 0)
    if not 1 <= span <= MAX_SPAN:
        raise _FormatError(f"span {span} out of range")
    base = committed + 1
    offsets: list[int] = []
    if kind == "b":
        body = data[pos:]
        if len(body) != (span + 7) // 8:
            raise _FormatError(f"bitset of {len(body)} bytes for a span of {span}")
        for byte_index, byte in enumerate(body):
            while byte:
                low = byte & -byte
                i = (byte_index << 3) + low.bit_length() - 1
                if i >= span:
                    raise _FormatError("bits set past the span")
                offsets.append(base + i)
                byte ^= low
    else:
        covered = 0
        first = True
        while pos < len(data):
            gap, pos = _read_varint(data, pos)
            if pos >= len(data):
                raise _FormatError("a gap without its run")
            run, pos = _read_varint(data, pos)
            if (gap == 0 and not first) or run == 0:
                raise _FormatError("an empty run")
            first = False
            start = base + covered + gap
            covered += gap + run
            if covered > span:
                raise _FormatError("runs longer than the span")
            offsets.extend(range(start, start + run))
        if covered != span:
            raise _FormatError(f"runs cover {covered} offsets, the span is {span}")
    if not offsets or offsets[-1] != committed + span:
        raise _FormatError("the highest offset is not finished")
    return offsets


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise _FormatError("a number cut short")
        byte = data[pos]
        pos += 1
        if byte == 0 and shift:
            raise _FormatError("a number written with a needless byte")
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _FormatError("a number too large")
