"""AWS's PutEvents entry size formula (user guide, seed 004).

Time present = 14 bytes; plus the UTF-8 bytes of Source, DetailType, Detail and each Resources
item. EventBusName and TraceHeader are not counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.batching.size import entry_size, utf8_len
from testbed import endpoint

EXAMPLES = settings(max_examples=200, deadline=None)


def reference_size(entry: dict[str, Any]) -> int:
    """The Java getSize() of the AWS user guide, transcribed."""
    size = 0
    if entry.get("Time") is not None:
        size += 14
    size += len((entry.get("Source") or "").encode("utf-8"))
    size += len((entry.get("DetailType") or "").encode("utf-8"))
    if entry.get("Detail") is not None:
        size += len(entry["Detail"].encode("utf-8"))
    for resource in entry.get("Resources") or ():
        if resource is not None:
            size += len(resource.encode("utf-8"))
    return size


def test_ascii_entry_without_time() -> None:
    entry = {"Source": "com.example", "DetailType": "Order", "Detail": '{"a":1}'}
    assert entry_size(entry) == 11 + 5 + 7


def test_time_counts_fourteen_bytes_whatever_its_form() -> None:
    base = {"Source": "s", "DetailType": "d", "Detail": "{}"}
    assert entry_size(base) == 4
    assert entry_size({**base, "Time": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}) == 4 + 14
    assert entry_size({**base, "Time": "2016-01-14T01:02:03Z"}) == 4 + 14
    assert entry_size({**base, "Time": 1_700_000_000}) == 4 + 14


def test_multibyte_utf8_is_counted_in_bytes() -> None:
    # é is 2 bytes, the emoji 4, the CJK character 3.
    assert utf8_len("é") == 2
    assert utf8_len("🎉") == 4
    entry = {"Source": "café", "DetailType": "🎉", "Detail": '{"k":"日"}'}
    assert entry_size(entry) == (3 + 2) + 4 + (8 + 3)


def test_event_bus_name_and_trace_header_are_not_counted() -> None:
    base = {"Source": "src", "DetailType": "dt", "Detail": "{}"}
    with_extras = {
        **base,
        "EventBusName": "arn:aws:events:us-east-1:123456789012:event-bus/" + "b" * 200,
        "TraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    }
    assert entry_size(with_extras) == entry_size(base) == 7


def test_resources_are_summed() -> None:
    base = {"Source": "s", "DetailType": "d", "Detail": "{}"}
    entry = {**base, "Resources": ["resource1", "resource2", "arn:é"]}
    assert entry_size(entry) == 4 + 9 + 9 + 6


def test_seed_example_entry() -> None:
    # The CLI example of the user guide page.
    entry = {
        "Time": "2016-01-14T01:02:03Z",
        "Source": "com.mycompany.myapp",
        "Resources": ["resource1", "resource2"],
        "DetailType": "myDetailType",
        "Detail": '{ "key1": "value1", "key2": "value2" }',
    }
    assert entry_size(entry) == 14 + 19 + 9 + 9 + 12 + 38


def test_absent_detail_and_resources_count_nothing() -> None:
    assert entry_size({"Source": "ab", "DetailType": "cd"}) == 4
    assert entry_size({"Source": "ab", "DetailType": "cd", "Resources": []}) == 4
    assert entry_size({"Source": "ab", "DetailType": "cd", "Time": None}) == 4


text = st.text(max_size=40)
entries = st.fixed_dictionaries(
    {"Source": text, "DetailType": text},
    optional={
        "Detail": text,
        "Time": st.sampled_from(["2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)]),
        "Resources": st.lists(text, max_size=10),
        "EventBusName": text,
        "TraceHeader": text,
    },
)


@EXAMPLES
@given(entries)
def test_entry_size_matches_independent_implementations(entry: dict[str, Any]) -> None:
    expected = reference_size(entry)
    assert entry_size(entry) == expected
    assert endpoint.entry_size(entry) == expected


@EXAMPLES
@given(text)
def test_utf8_len_is_encoded_length(value: str) -> None:
    assert utf8_len(value) == len(value.encode("utf-8"))
