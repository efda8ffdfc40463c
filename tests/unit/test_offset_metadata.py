"""The finished-offsets codec: round-trips, fits the limit, and reads nothing it did not write."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bridge.offsets import metadata
from bridge.offsets.metadata import DEFAULT_MAX_BYTES, PREFIX, decode, encode

EXAMPLES = settings(max_examples=300, deadline=None)

committed_offsets = st.integers(0, 2**62)


@st.composite
def finished_sets(draw: st.DrawFn) -> tuple[int, frozenset[int]]:
    """A committed offset and finished offsets above it: runs, scattered ones, or both."""
    committed = draw(committed_offsets)
    shape = draw(st.sampled_from(["scattered", "runs", "dense"]))
    if shape == "scattered":
        rel = draw(st.lists(st.integers(1, 50_000), max_size=300))
    elif shape == "runs":
        rel = []
        at = 1
        for gap, run in draw(st.lists(st.tuples(st.integers(0, 5_000), st.integers(1, 2_000)))):
            at += gap
            rel.extend(range(at, at + run))
            at += run + 1
    else:
        size = draw(st.integers(1, 20_000))
        holes = set(draw(st.lists(st.integers(1, size), max_size=200)))
        rel = [i for i in range(1, size + 1) if i not in holes]
    return committed, frozenset(committed + r for r in rel)


@EXAMPLES
@given(finished_sets(), st.sampled_from([64, 200, 1024, DEFAULT_MAX_BYTES]))
def test_round_trip_when_it_fits(case: tuple[int, frozenset[int]], max_bytes: int) -> None:
    committed, finished = case
    text = encode(committed, finished, max_bytes)
    if text is None:
        return  # does not fit: the caller commits the plain offset
    assert isinstance(text, str)
    assert len(text.encode("utf-8")) <= max_bytes
    assert text.isascii()
    assert decode(committed, text) == metadata.Decoded(finished)


def test_typical_cases_fit_the_default_limit() -> None:
    # 10,000 buffered records (the default max_buffered_records), one head stuck, every
    # other record finished; and a scattered 10% still in retries.
    assert encode(99, range(101, 10_100)) is not None
    scattered = [o for o in range(1, 10_001) if o % 10 != 3]
    text = encode(0, scattered)
    assert text is not None
    assert decode(0, text).offsets == frozenset(scattered)


def test_empty_set_is_the_empty_string() -> None:
    assert encode(5, []) == ""
    assert decode(5, "") == metadata.NOTHING
    assert decode(5, None) == metadata.NOTHING


def test_too_large_returns_none() -> None:
    # random-looking finished offsets over a long span defeat every encoding
    offsets = random.Random(1).sample(range(1, 1_000_000), 5_000)
    assert encode(0, offsets, DEFAULT_MAX_BYTES) is None
    assert encode(0, [1, metadata.MAX_SPAN + 1]) is None


def test_offsets_not_above_committed_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not above committed 10"):
        encode(10, [10, 11])


def test_the_smallest_encoding_wins() -> None:
    run = encode(0, range(1, 5_001))  # one long run: run lengths beat a 625-byte bitset
    assert run is not None and run.startswith(PREFIX + "r")
    alternate = encode(0, range(1, 4_001, 2))  # every other offset: a bitset, compressed
    assert alternate is not None and alternate.startswith(PREFIX + "B")
    rnd = random.Random(2)
    dense = encode(0, [o for o in range(1, 400) if rnd.random() < 0.7])
    assert dense is not None and dense[len(PREFIX)] in "bB"


@EXAMPLES
@given(finished_sets())
def test_the_choice_is_the_shortest_of_the_four(case: tuple[int, frozenset[int]]) -> None:
    committed, finished = case
    text = encode(committed, finished, 10**9)
    assume(text)
    assert text is not None
    offsets = sorted(finished)
    head = metadata._varint(offsets[-1] - committed)
    raw = {
        "r": head + metadata._run_lengths(committed, offsets),
        "b": head + metadata._bitset(committed, offsets, offsets[-1] - committed),
    }
    for tag in "rb":
        raw[tag.upper()] = zlib.compress(raw[tag], 9)
    lengths = {tag: len(metadata._pack(committed, tag, data)) for tag, data in raw.items()}
    assert len(text) == min(lengths.values())
    assert lengths[text[len(PREFIX)]] == len(text)


@EXAMPLES
@given(finished_sets(), st.data())
@example(case=(0, frozenset({1})), data=None)
def test_truncation_never_reads_a_different_set(
    case: tuple[int, frozenset[int]], data: st.DataObject | None
) -> None:
    committed, finished = case
    text = encode(committed, finished)
    assume(text)
    assert text is not None
    cuts = range(len(text)) if data is None else [data.draw(st.integers(0, len(text) - 1))]
    for cut in cuts:
        got = decode(committed, text[:cut])
        assert got.offsets in (frozenset(), finished)
        if not got.offsets:
            assert got.problem or cut == 0


@EXAMPLES
@given(finished_sets(), st.data())
def test_a_mutated_character_never_reads_a_different_set(
    case: tuple[int, frozenset[int]], data: st.DataObject
) -> None:
    committed, finished = case
    text = encode(committed, finished)
    assume(text)
    assert text is not None
    at = data.draw(st.integers(0, len(text) - 1), label="position")
    char = data.draw(st.characters(codec="ascii"), label="replacement")
    mutated = text[:at] + char + text[at + 1 :]
    got = decode(committed, mutated)
    assert got.offsets in (frozenset(), finished)
    # crc32 catches any change of one character's 6 bits: never a different set, and the
    # same set only when the decoded bytes are the same
    if got.offsets and mutated != text:
        # only a change of base64's unused padding bits leaves the bytes as they were
        assert base64.b64decode(mutated[len(PREFIX) + 1 :]) == base64.b64decode(
            text[len(PREFIX) + 1 :]
        )


@EXAMPLES
@given(finished_sets(), st.data())
def test_mutated_bytes_never_read_a_different_set(
    case: tuple[int, frozenset[int]], data: st.DataObject
) -> None:
    committed, finished = case
    text = encode(committed, finished)
    assume(text)
    assert text is not None
    blob = bytearray(base64.b64decode(text[len(PREFIX) + 1 :]))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    mutated = text[: len(PREFIX) + 1] + base64.b64encode(bytes(blob)).decode()
    assert decode(committed, mutated).offsets in (frozenset(), finished)


@EXAMPLES
@given(finished_sets(), st.integers(-(2**40), 2**40).filter(lambda d: d != 0))
def test_read_next_to_another_committed_offset_is_nothing_known(
    case: tuple[int, frozenset[int]], shift: int
) -> None:
    committed, finished = case
    text = encode(committed, finished)
    assume(text)
    got = decode(committed + shift, text)
    assert got.offsets == frozenset()
    assert got.problem is not None and "checksum" in got.problem


@EXAMPLES
@given(st.integers(0, 2**62), st.text(max_size=300))
def test_any_string_decodes_to_nothing_or_raises_nothing(committed: int, text: str) -> None:
    got = decode(committed, text)
    # random text cannot carry a matching crc32 (in any run hypothesis could make)
    assert got.offsets == frozenset()
    assert (got.problem is None) == (text == "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "another tool"),  # Kafka Streams-like binary
        ('{"app": "other"}', "another tool"),
        ("keb", "another tool"),
        ("kebab:rAAAA", "another tool"),
        ("keb2:rAAAAAAAA", "version 2"),
        ("keb1:", "no encoding tag"),
        ("keb1:x", "unknown encoding"),
        ("keb1:r", "no data"),
        ("keb1:r!!!!", "not base64"),
        ("keb1:rAAAAAAE=", "checksum"),
    ],
)
def test_foreign_and_broken_strings_give_a_reason(text: str, reason: str) -> None:
    got = decode(0, text)
    assert got.offsets == frozenset()
    assert got.problem is not None and reason in got.problem


def _forge(committed: int, tag: str, data: bytes) -> str:
    """A string with a valid checksum around ``data``: checks behind the checksum."""
    return metadata._pack(committed, tag, data)


@pytest.mark.parametrize(
    ("tag", "data", "reason"),
    [
        ("r", b"\x00", "span 0"),
        ("r", b"\x05\x00\x02", "cover 2"),
        ("r", b"\x05\x00\x02\x01", "gap without its run"),
        ("r", b"\x05\x00\x02\x00\x03", "empty run"),
        ("r", b"\x03\x00\x05", "longer than the span"),
        ("r", b"\x80", "cut short"),
        ("r", b"\x80\x00", "needless byte"),
        ("b", b"\x03\x01", "highest offset is not finished"),
        ("b", b"\x03\x0f", "past the span"),
        ("b", b"\x03\x07\x00", "bitset of 2 bytes"),
        ("R", b"not zlib", "does not inflate"),
        ("R", zlib.compress(b"\x01\x00\x01") + b"x", "does not inflate"),
    ],
)
def test_data_behind_a_good_checksum_is_still_checked(tag: str, data: bytes, reason: str) -> None:
    got = decode(7, _forge(7, tag, data))
    assert got.offsets == frozenset()
    assert got.problem is not None and reason in got.problem


def test_a_decompression_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * (metadata.MAX_DATA_BYTES + 10))
    got = decode(0, _forge(0, "B", bomb))
    assert got.offsets == frozenset() and got.problem


def test_forged_good_data_is_read() -> None:
    # span 5, gap 1, run 2, gap 1, run 1: offsets 2, 3 and 5 above committed 0
    assert decode(0, _forge(0, "r", b"\x05\x01\x02\x01\x01")).offsets == {2, 3, 5}
    assert decode(0, _forge(0, "b", b"\x05\x16")).offsets == {2, 3, 5}
