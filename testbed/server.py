"""The HTTP/1.1 server under the local endpoints, lean enough to stay out of a benchmark's way.

:class:`EndpointServer` and :class:`EndpointHandler` are ``http.server``'s threaded server and
request handler with the costly parts of a call done another way, for the same answers:

- Header fields are read by :func:`read_headers` into :class:`Headers`, not by
  ``http.client.parse_headers``, whose ``email`` parser took a third of the endpoint's time. The
  request line, the limits (431 for a line over 64 KiB or for 100 fields or more) and the
  ``Connection`` and ``Expect`` fields are handled as ``http.server`` does; a line that is
  neither a field nor a continuation is answered 400 (the ``email`` parser took it and every line
  after it for the start of the body, and the request that followed for a new one).
- An answer is sent in one write (status line, ``Server``, ``Date``, the handler's fields and
  the body), not one for the head and one for the body; ``Date`` is formatted once a second and
  the request logged only when the endpoint is verbose.
- Requests are read through a 64 KiB buffer: a PutEvents call of ten 1 KiB entries in one
  ``recv``, where the default 8 KiB buffer took two.
- :func:`load_json` and :func:`dump_json` decode and encode at orjson's speed, with
  ``json``'s results; :func:`random_uuid` makes ids without a system call.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any, BinaryIO, Protocol, TypeVar, overload

import orjson

MAX_LINE = 65536
"""Longest header line, as ``http.client`` reads them."""
MAX_HEADERS = 100
"""Header lines counted with the empty one that ends them, as ``http.client`` counts them."""

_TOO_LARGE = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE

_NAME = re.compile(r"[!-9;-~]+")
"""A field name: printable ASCII but space and ``:`` (what the ``email`` parser took for one)."""

_T = TypeVar("_T")


class HeaderError(Exception):
    """A request's header block cannot be read; ``status`` and ``message`` say how to answer."""

    def __init__(self, status: HTTPStatus, message: str, explain: str) -> None:
        super().__init__(explain)
        self.status, self.message, self.explain = status, message, explain


class Headers:
    """A request's header fields, read-only, looked up by name in any case.

    What the handlers use of the ``email.message.Message`` that ``http.server`` builds, with its
    results: :meth:`get` and ``headers[name]`` give the first field of a name (None when there
    is none), ``in`` says whether there is one, :meth:`items` gives every field in the order
    sent (repeated names too), :meth:`get_all` every value of a name (an empty list where
    ``Message`` gives None).
    """

    __slots__ = ("_fields", "_first")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields = list(fields)
        self._first: dict[str, str] = {}
        for name, value in self._fields:
            self._first.setdefault(name.lower(), value)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first field called ``name`` (any case), else ``default``."""
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def get_all(self, name: str) -> list[str]:
        """Every value of the fields called ``name`` (any case), in order."""
        key = name.lower()
        return [value for field, value in self._fields if field.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        """Every field as ``(name, value)``, in the order sent; names as sent."""
        return list(self._fields)

    def keys(self) -> list[str]:
        return [name for name, _ in self._fields]

    def values(self) -> list[str]:
        return [value for _, value in self._fields]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def read_headers(rfile: BinaryIO | BufferedIOBase) -> Headers:
    """Read a header block up to and including its empty line (or the end of the stream).

    Fields as the ``email`` parser's ``compat32`` policy gives them to ``http.server``: the
    value without the spaces and tabs after the colon nor the line end, others kept; a line
    starting with a space or tab continues the field before it (line end included), and is
    ignored first.

    Raises:
        HeaderError: A line too long, too many lines, or a line that is not a field.
    """
    fields: list[list[str]] = []
    count = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            explain = f"got more than {MAX_LINE} bytes when reading header line"
            raise HeaderError(_TOO_LARGE, "Line too long", explain)
        count += 1
        if count > MAX_HEADERS:
            explain = f"got more than {MAX_HEADERS} headers"
            raise HeaderError(_TOO_LARGE, "Too many headers", explain)
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            if fields:
                fields[-1][1] += text
            continue
        name, colon, value = text.partition(":")
        if not colon or _NAME.fullmatch(name) is None:
            raise HeaderError(HTTPStatus.BAD_REQUEST, "Bad header line", repr(text))
        fields.append([name, value.lstrip(" \t")])
    return Headers((name, value.rstrip("\r\n")) for name, value in fields)


def load_json(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value or the same error, mostly at orjson's speed.

    orjson reads it first. ``json`` reads again what orjson refuses (``json`` takes NaN, other
    encodings than UTF-8 and lone surrogates, and words its errors its own way) and what orjson
    may read otherwise: a float beyond the 64-bit integers (orjson reads an integer beyond them
    as a float) and more than :data:`MAX_ORJSON_DEPTH` levels (``json`` raises RecursionError
    near the interpreter's recursion limit, orjson reads 1024 levels).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
    level, depth = [value], 0
    while level:  # level by level: dicts and lists to the depth orjson read
        depth += 1
        if depth > MAX_ORJSON_DEPTH:
            return json.loads(data)
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                below.extend(item.values())
            elif kind is list:
                below.extend(item)
            elif kind is float and not _INT64_MIN < item < _UINT64_END:
                return json.loads(data)
        level = below
    return value


MAX_ORJSON_DEPTH = 500
"""Deepest value :func:`load_json` takes from orjson: well below where ``json`` gives up."""
_INT64_MIN, _UINT64_END = float(-(2**63)), float(2**64)


def dump_json(payload: Any) -> bytes:
    """An API answer's JSON text: ``json.dumps``'s, compact and in UTF-8 (orjson's).

    For values of text, integers, lists and objects (what API answers hold) it reads back as
    ``json.dumps``'s does; what orjson cannot write (lone surrogates, integers beyond 64 bits)
    is written by ``json``. Not for floats: orjson writes NaN as null.
    """
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload).encode("utf-8")


_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def random_uuid() -> str:
    """A random (version 4) UUID as ``str(uuid.uuid4())`` writes one, for event and request ids.

    Its 122 random bits come from a generator of its own (seeded by the system, again in a
    forked child), not from ``os.urandom``: ``uuid4`` makes a system call each time, without the
    GIL, and among 48 busy handler threads each of the eleven ids of a PutEvents call handed the
    GIL over to another thread (two context switches or more each).
    """
    bits = _ids.getrandbits(128) & ~(0xC000 << 48 | 0xF000 << 64) | 0x8000 << 48 | 0x4000 << 64
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` field's value now (``http.server``'s ``date_time_string``), cached a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


class Served(Protocol):
    """What the server needs of the endpoint it serves: whether to log requests.

    A protocol rather than :class:`testbed.base.LocalEndpoint`, which imports this module: the
    server does not import it back.
    """

    verbose: bool


class EndpointServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop()`` can close them."""

    daemon_threads = True
    # A client opening its 48 connections at once overflowed the default backlog of 5: the
    # SYNs dropped were sent again a second later.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        bridge: Served,
        handler: type[EndpointHandler],
    ) -> None:
        self.bridge = bridge
        self._connections: dict[Any, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Shut down open (keep-alive) connections and join their handler threads."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class EndpointHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; a subclass answers in ``_handle(method)``.

    It answers with :meth:`answer_head` and one write of the head and the body.
    """

    protocol_version = "HTTP/1.1"
    # Answers go out in one write, but send_error's (400, 431, 501...) in two: without
    # TCP_NODELAY the second would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    rbufsize = 65536
    server: EndpointServer
    raw_requestline: bytes  # read by handle_one_request
    headers: Headers  # type: ignore[assignment]  # not the email.message.Message it replaces

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` (CPython 3.11), headers by
        :func:`read_headers`: sets ``command``, ``path``, ``request_version``, ``headers`` and
        ``close_connection``; False when it has answered an error."""
        self.command = None  # type: ignore[assignment]  # as http.server has it
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) == 0:
            return False
        if len(words) >= 3:  # enough to determine the protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                numbers = base_version_number.split(".")
                if len(numbers) != 2 or any(not n.isdigit() or len(n) > 10 for n in numbers):
                    raise ValueError
                version_number = int(numbers[0]), int(numbers[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if version_number >= (2, 0):
                message = f"Invalid HTTP version ({base_version_number})"
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, message)
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: no open redirect through "//host/..."
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = read_headers(self.rfile)
        except HeaderError as err:
            self.send_error(err.status, err.message, err.explain)
            return False
        conntype = self.headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if (
            expect == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return self.handle_expect_100()
        return True

    def answer_head(self, status: int, fields: Iterable[tuple[str, str]]) -> bytes:
        """The head of an answer: what ``send_response``, ``send_header`` for each of
        ``fields`` and ``end_headers`` would send (nothing to an HTTP/0.9 request); logs the
        request when the endpoint is verbose."""
        if self.server.bridge.verbose:
            self.log_request(status)
        if self.request_version == "HTTP/0.9":
            return b""
        reason = self.responses[status][0] if status in self.responses else ""
        lines = [
            f"{self.protocol_version} {status} {reason}",
            f"Server: {self.version_string()}",
            f"Date: {http_date()}",
            *(f"{name}: {value}" for name, value in fields),
            "\r\n",
        ]
        return "\r\n".join(lines).encode("latin-1", "strict")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.bridge.verbose:
            super().log_message(format, *args)
