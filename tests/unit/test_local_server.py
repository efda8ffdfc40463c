"""The local endpoints' HTTP server reads and answers as ``http.server`` and ``json`` would.

Header blocks are read as ``http.client.parse_headers`` (the ``email`` package) reads them, on
random blocks; requests sent over a socket get the answers and the keep-alive behaviour
``http.server`` gives them; :func:`load_json` gives ``json.loads``'s value or error.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from testbed.endpoint import LocalEventBridge
from testbed.server import HeaderError, dump_json, load_json, random_uuid, read_headers

NAMES = ["Content-Length", "content-length", "X-Amz-Target", "x-amz-target", "Connection"]


def header_block() -> st.SearchStrategy[bytes]:
    name = st.sampled_from([*NAMES, "X-A", "x-a", "Host"]) | st.from_regex(
        r"[!-9;-~]{1,12}", fullmatch=True
    )
    value = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)
    fold = st.sampled_from(["", "\r\n folded", "\r\n\tand more"])
    field = st.tuples(name, st.sampled_from(["", " ", "\t "]), value, fold)
    return st.lists(field, max_size=8).map(
        lambda fields: (
            "".join(f"{n}:{ws}{v}{f}\r\n" for n, ws, v, f in fields).encode("latin-1") + b"\r\n"
        )
    )


@settings(max_examples=300, deadline=None)
@given(header_block())
@example(b"X-A: 1\r\nx-a: 2\r\nX-A:3 \r\n\r\n")
@example(b" leading continuation\r\nX-A: 1\r\n\r\n")
@example(b"X-A: 1\n\n")
@example(b"X-A: 1\r\n")  # the stream ends before the empty line
def test_headers_read_as_http_client_reads_them(block: bytes) -> None:
    ours = read_headers(io.BytesIO(block))
    theirs = http.client.parse_headers(io.BytesIO(block))
    assert ours.items() == theirs.items()
    for name in {*NAMES, "X-A", "missing", *(n.swapcase() for n, _ in theirs.items())}:
        assert ours.get(name) == theirs.get(name)
        assert ours.get(name, "default") == theirs.get(name, "default")
        assert ours[name] == theirs[name]
        assert (name in ours) == (name in theirs)
        assert ours.get_all(name) == (theirs.get_all(name) or [])


@pytest.mark.parametrize(
    ("block", "status"),
    [
        (b"X-A: " + b"a" * 65536 + b"\r\n\r\n", 431),
        (b"X-A: 1\r\n" * 100 + b"\r\n", 431),  # 100 fields and the empty line: 101 lines
        (b"Bad Name: 1\r\n\r\n", 400),
        (b"X-A: 1\r\nno colon\r\n\r\n", 400),
        (b": no name\r\n\r\n", 400),
        (b"X\xe9: 1\r\n\r\n", 400),
    ],
)
def test_header_blocks_refused(block: bytes, status: int) -> None:
    with pytest.raises(HeaderError) as info:
        read_headers(io.BytesIO(block))
    assert info.value.status == status
    assert len(read_headers(io.BytesIO(b"X-A: 1\r\n" * 99 + b"\r\n"))) == 99


# -- over a socket ------------------------------------------------------------------------

ENTRY = {"Source": "s", "DetailType": "d", "Detail": "{}"}
BODY = json.dumps({"Entries": [ENTRY]}).encode()


@pytest.fixture
def endpoint() -> Iterator[LocalEventBridge]:
    with LocalEventBridge() as ep:
        yield ep


def request(head: str, body: bytes = BODY) -> bytes:
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body


def exchange(
    ep: LocalEventBridge, data: bytes
) -> tuple[list[tuple[int, dict[str, str], Any]], bool]:
    """Send ``data`` on one connection: the answers read and whether the server closed it."""
    host, port = ep.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(0.5)
        received, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines)
        length = int(fields.get("Content-Length", 0))
        body, received = rest[:length], rest[length:]
        status = int(status_line.split()[1])
        answers.append((status, fields, json.loads(body) if body and status < 400 else body))
    return answers, closed


def test_answer_fields_in_http_servers_order(endpoint: LocalEventBridge) -> None:
    [(status, fields, body)], closed = exchange(
        endpoint, request("POST / HTTP/1.1\r\nX-Amz-Target: AWSEvents.PutEvents")
    )
    assert (status, closed) == (200, False)
    assert list(fields) == ["Server", "Date", "Content-Type", "Content-Length", "x-amzn-RequestId"]
    assert fields["Server"].startswith("BaseHTTP/")
    assert fields["Content-Type"] == "application/x-amz-json-1.1"
    assert uuid.UUID(fields["x-amzn-RequestId"]).version == 4
    assert body["FailedEntryCount"] == 0


def test_header_names_in_any_case_and_first_of_repeated(endpoint: LocalEventBridge) -> None:
    head = "POST / HTTP/1.1\r\nx-amz-target: AWSEvents.PutEvents\r\nX-AMZ-TARGET: Other"
    head += "\r\nAUTHORIZATION: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/events"
    [(status, _, _)], _ = exchange(endpoint, request(head))
    assert status == 200
    [call] = endpoint.calls()
    assert (call.operation, call.access_key_id) == ("PutEvents", "AKID")


@pytest.mark.parametrize(
    ("version", "connection", "closed"),
    [
        ("HTTP/1.1", None, False),
        ("HTTP/1.1", "close", True),
        ("HTTP/1.1", "Close", True),
        ("HTTP/1.0", None, True),
        ("HTTP/1.0", "keep-alive", False),
    ],
)
def test_keep_alive(
    endpoint: LocalEventBridge, version: str, connection: str | None, closed: bool
) -> None:
    head = f"POST / {version}\r\nX-Amz-Target: AWSEvents.PutEvents"
    head += f"\r\nConnection: {connection}" if connection else ""
    answers, was_closed = exchange(endpoint, request(head) * 2)
    assert [status for status, _, _ in answers] == ([200] if closed else [200, 200])
    assert was_closed == closed


def test_bad_header_line_answered_400_and_closed(endpoint: LocalEventBridge) -> None:
    head = "POST / HTTP/1.1\r\nX-Amz-Target: AWSEvents.PutEvents\r\nnot a field"
    [(status, fields, _)], closed = exchange(endpoint, request(head))
    assert (status, fields["Connection"], closed) == (400, "close", True)
    assert endpoint.calls() == []


def test_expect_100_continue(endpoint: LocalEventBridge) -> None:
    head = "POST / HTTP/1.1\r\nX-Amz-Target: AWSEvents.PutEvents\r\nExpect: 100-continue"
    answers, _ = exchange(endpoint, request(head))
    assert [status for status, _, _ in answers] == [100, 200]


# -- JSON and ids ---------------------------------------------------------------------------


def json_values(*, floats: bool = True) -> st.SearchStrategy[Any]:
    """JSON values, with integers about the 64-bit limits and (if ``floats``) NaN and infinities."""
    limits = st.integers(2**63 - 3, 2**64 + 3) | st.integers(-(2**63) - 3, -(2**63) + 3)
    scalars = st.none() | st.booleans() | st.integers() | limits | st.text()
    return st.recursive(
        scalars | st.floats() if floats else scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )


def loaded(data: bytes | str, loads: Any) -> str:
    """repr of the value (types and NaN told apart) or of the error."""
    try:
        return repr(loads(data))
    except (ValueError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=300, deadline=None)
@given(json_values(), st.sampled_from(["utf-8", "utf-16"]))
@example(float("nan"), "utf-8")
@example("\ud800", "utf-8")
def test_load_json_is_json_loads(value: Any, encoding: str) -> None:
    text = json.dumps(value)
    assert loaded(text, load_json) == loaded(text, json.loads)
    data = text.encode(encoding, "surrogatepass")
    assert loaded(data, load_json) == loaded(data, json.loads)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{nope",
        b'{"a": 1, "a": 2}',
        b"\xef\xbb\xbf{}",
        b"[" * 600 + b"]" * 600,
        b'{"a":' * 1010 + b"1" + b"}" * 1010,
        b"-9223372036854775809",
        b"18446744073709551616",
        b"1e400",
        b"\xff",
    ],
)
def test_load_json_edge_cases(data: bytes) -> None:
    assert loaded(data, load_json) == loaded(data, json.loads)
    text = data.decode("latin-1")
    assert loaded(text, load_json) == loaded(text, json.loads)


@given(json_values(floats=False))
def test_dump_json_reads_back_as_json_dumps(value: Any) -> None:
    assert loaded(dump_json(value), json.loads) == loaded(json.dumps(value), json.loads)


def test_random_uuid_is_a_version_4_uuid() -> None:
    ids = {random_uuid() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        assert str(uuid.UUID(text)) == text
        assert uuid.UUID(text).version == 4
        assert uuid.UUID(text).variant == uuid.RFC_4122
