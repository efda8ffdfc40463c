"""W3C traceparent -> X-Ray trace header, and what ``trace_header: auto`` takes from a record.

Vectors: OpenTelemetry's AWS X-Ray propagator tests (opentelemetry-python-contrib,
``propagator/opentelemetry-propagator-aws-xray/tests/test_aws_xray_propagator.py``): the span
context ``TRACE_ID_BASE16 = 8a3c60f7d188f8fa79d48a391a778fa6``, ``SPAN_ID_BASE16 =
53995c3f42cd8ad8`` is injected as
``Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=0`` (``=1`` when the
sampled flag is set). What a valid traceparent is follows opentelemetry-python's
``TraceContextTextMapPropagator.extract`` (its pattern, all-zero ids, version ``ff``, version
``00`` with more after the flags) and the W3C Trace Context examples.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge import limits
from bridge.mapping.trace import NO_TRACE, TraceContext, auto_trace, xray_from_traceparent

# The OpenTelemetry X-Ray propagator's test vectors.
OTEL_TRACE_ID = "8a3c60f7d188f8fa79d48a391a778fa6"
OTEL_SPAN_ID = "53995c3f42cd8ad8"
OTEL_NOT_SAMPLED = "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=0"
OTEL_SAMPLED = "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1"

XRAY = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])")


def test_the_propagators_own_vectors() -> None:
    assert xray_from_traceparent(f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-00") == OTEL_NOT_SAMPLED
    assert xray_from_traceparent(f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01") == OTEL_SAMPLED


def test_w3c_examples() -> None:
    # The W3C Trace Context spec's examples of traceparent.
    assert xray_from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
    )
    assert xray_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00") == (
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=0"
    )


def test_sampled_is_the_lowest_flag_bit_and_other_bits_are_ignored() -> None:
    base = f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-"
    assert xray_from_traceparent(base + "03") == OTEL_SAMPLED
    assert xray_from_traceparent(base + "02") == OTEL_NOT_SAMPLED
    assert xray_from_traceparent(base + "ff") == OTEL_SAMPLED


def test_later_versions_may_carry_more_and_spaces_around_are_allowed() -> None:
    assert xray_from_traceparent(f"01-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01-what-comes") == (
        OTEL_SAMPLED
    )
    assert xray_from_traceparent(f" \t00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-00\t ") == (
        OTEL_NOT_SAMPLED
    )


INVALID = [
    "",
    "00",
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}",  # no flags
    f"00-{'0' * 32}-{OTEL_SPAN_ID}-01",  # all-zero trace id
    f"00-{OTEL_TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01",  # version 255 is forbidden
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01-extra",  # version 00 has nothing after the flags
    f"00-{OTEL_TRACE_ID.upper()}-{OTEL_SPAN_ID}-01",  # lowercase hex only
    f"00-{OTEL_TRACE_ID}00-{OTEL_SPAN_ID}-01",  # trace id too long
    f"00-{OTEL_TRACE_ID[:-1]}-{OTEL_SPAN_ID}-01",  # trace id too short
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}00-01",  # parent id too long
    f"00-{OTEL_TRACE_ID}-abcdefghijklmnop-01",  # parent id not hex
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-1",  # flags too short
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-011",  # flags too long
    f"0-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01",  # version too short
    f"00_{OTEL_TRACE_ID}_{OTEL_SPAN_ID}_01",  # wrong separator
    f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01\n",  # a newline is not a space
    OTEL_SAMPLED,  # an X-Ray header is not a traceparent
]


def test_invalid_traceparents_are_refused() -> None:
    for text in INVALID:
        assert xray_from_traceparent(text) is None, text


HEX = "0123456789abcdef"
hex_text = lambda n: st.text(HEX, min_size=n, max_size=n)  # noqa: E731


@st.composite
def traceparents(draw: st.DrawFn, version: str | None = None) -> tuple[str, str, str, str, str]:
    """A valid traceparent and its parts (version, trace id, parent id, flags)."""
    chosen = version or draw(hex_text(2).filter(lambda v: v != "ff"))
    trace_id = draw(hex_text(32).filter(lambda t: t != "0" * 32))
    parent_id = draw(hex_text(16).filter(lambda p: p != "0" * 16))
    flags = draw(hex_text(2))
    text = f"{chosen}-{trace_id}-{parent_id}-{flags}"
    if chosen != "00" and draw(st.booleans()):
        text += "-" + draw(st.text(st.characters(codec="ascii", exclude_characters="\n")))
    return text, chosen, trace_id, parent_id, flags


@given(traceparents())
def test_any_valid_traceparent_converts_to_an_xray_header_with_its_hex(
    case: tuple[str, str, str, str, str],
) -> None:
    text, _, trace_id, parent_id, flags = case
    converted = xray_from_traceparent(text)
    assert converted is not None
    match = XRAY.fullmatch(converted)
    assert match is not None, converted
    epoch, unique, parent, sampled = match.groups()
    assert epoch + unique == trace_id  # the first 8 hex digits are the X-Ray epoch part
    assert parent == parent_id
    assert sampled == str(int(flags, 16) & 1)
    assert len(converted) <= limits.TRACE_HEADER_MAX_CHARS


# Characters that never belong in a traceparent's fields (hex, '-'), except as the version-00
# header's separators at fixed places.
NOT_HEX = st.sampled_from("ABCDEFxyzg-_ .:;=\t\u00e9\x00")


@given(traceparents(version="00"), st.data())
def test_any_mutated_traceparent_is_refused(
    case: tuple[str, str, str, str, str], data: st.DataObject
) -> None:
    text = case[0]
    assert len(text) == 55
    kind = data.draw(st.sampled_from(["replace", "delete", "insert", "zero", "ff"]))
    if kind == "replace":
        at = data.draw(st.integers(0, 54))
        old = text[at]
        new = data.draw(NOT_HEX.filter(lambda c: c != old and not (c == "-" and old == "-")))
        mutated = text[:at] + new + text[at + 1 :]
    elif kind == "delete":
        at = data.draw(st.integers(0, 54))
        mutated = text[:at] + text[at + 1 :]
    elif kind == "insert":
        at = data.draw(st.integers(0, 55))
        mutated = text[:at] + data.draw(st.sampled_from(HEX + "-")) + text[at:]
    elif kind == "zero":
        field = data.draw(st.sampled_from([(3, 35), (36, 52)]))
        mutated = text[: field[0]] + "0" * (field[1] - field[0]) + text[field[1] :]
    else:
        mutated = "ff" + text[2:]
    assert xray_from_traceparent(mutated) is None, mutated


# --- trace_header: auto ----------------------------------------------------------------------

W3C = f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01"
LINEAGE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1|68fd508a:5"  # noqa: E501


def test_an_xray_header_is_taken_as_it_is_lineage_included() -> None:
    assert auto_trace([("X-Amzn-Trace-Id", LINEAGE.encode())]) == TraceContext(LINEAGE)
    # over the traceparent; names compared without case
    headers = [("traceparent", W3C.encode()), ("x-amzn-trace-id", b"Root=1-abc;Foo=Bar")]
    assert auto_trace(headers) == TraceContext("Root=1-abc;Foo=Bar")


def test_a_traceparent_alone_is_converted() -> None:
    assert auto_trace([("traceparent", W3C.encode())]) == TraceContext(OTEL_SAMPLED)
    assert auto_trace([("Traceparent", W3C.encode()), ("tracestate", b"k=v")]) == TraceContext(
        OTEL_SAMPLED
    )


def test_an_invalid_traceparent_is_left_out_and_flagged() -> None:
    for bad in (b"00-zz", b"", b"\xff\xfe", f"ff-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-01".encode()):
        assert auto_trace([("traceparent", bad)]) == TraceContext(None, invalid_traceparent=True)
    assert auto_trace([("traceparent", None)]) == TraceContext(None, invalid_traceparent=True)


def test_no_trace_headers_means_no_trace() -> None:
    assert auto_trace(None) == NO_TRACE
    assert auto_trace([]) == NO_TRACE
    assert auto_trace([("X-Other", b"1"), ("tracestate", b"k=v")]) == NO_TRACE


def test_an_unusable_xray_header_gives_way_to_the_traceparent() -> None:
    for xray in (b"", b"  ", None, b"\xff", b"R" * (limits.TRACE_HEADER_MAX_CHARS + 1)):
        headers = [("X-Amzn-Trace-Id", xray), ("traceparent", W3C.encode())]
        assert auto_trace(headers) == TraceContext(OTEL_SAMPLED), xray
    longest = "R" * limits.TRACE_HEADER_MAX_CHARS
    assert auto_trace([("X-Amzn-Trace-Id", longest.encode())]) == TraceContext(longest)


def test_the_last_of_a_repeated_header_wins() -> None:
    other = f"00-{OTEL_TRACE_ID}-{OTEL_SPAN_ID}-00"
    headers = [("traceparent", W3C.encode()), ("traceparent", other.encode())]
    assert auto_trace(headers) == TraceContext(OTEL_NOT_SAMPLED)
