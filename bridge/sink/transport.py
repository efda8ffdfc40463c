"""HTTP/1.1 POSTs over kept-alive connections to one endpoint: the lean client's transport.

urllib3 (through ``http.client``, whose answers are parsed by the ``email`` package) spends about
250 µs of CPU on a PutEvents call on the 2-core test machine, 25 µs per event: more than signing
and serializing together. The lean client needs one thing from HTTP: a POST with a body and a
``Content-Length`` answer, on connections kept alive. This does that in about a sixth of the CPU:

- request line, headers and body leave in one write (``TCP_NODELAY``, as urllib3 sets it);
- the answer is read by ``Content-Length``, chunks, or until the server closes;
- idle connections wait last-in first-out (at most ``max_connections`` kept); one is used again
  only after a complete answer that did not ask to close, and only if the server has not closed
  it meanwhile (checked with a zero-timeout poll, as urllib3 does);
- TLS with the default context: certificate and host name checked, TLS 1.2 or later.

Failures raise botocore's transport exceptions, as boto3 would: ``EndpointConnectionError``
(cannot connect), ``ConnectTimeoutError``, ``SSLError`` (handshake or certificate),
``ReadTimeoutError`` (no answer within the read timeout) and ``ConnectionClosedError`` (the
connection broke before a complete answer).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from bridge import __version__

USER_AGENT = f"kafka-eventbridge-bridge/{__version__}"
_MAX_LINE = 65_536
_MAX_HEADERS = 100


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, headers (names in lower case, as botocore gives them), body."""

    status: int
    headers: dict[str, str]
    data: bytes


class _BrokenConnection(Exception):
    """The connection broke or the answer was not HTTP (becomes ``ConnectionClosedError``)."""


class _Connection:
    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def dropped(self) -> bool:
        """Whether the server closed (or wrote to) the idle connection: readable means unusable."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class HttpPool:
    """POSTs to the host of ``url``, on up to ``max_connections`` kept-alive connections.

    Thread-safe: each call has a connection to itself; idle ones wait in a deque.

    Args:
        url: The endpoint (``http://`` or ``https://``, host, optional port).
        host_header: The ``Host`` header to send (the one that was signed).
        max_connections: Idle connections kept; more are opened when needed, then closed.
        connect_timeout_s: Connect (and TLS handshake) timeout.
        read_timeout_s: Timeout of each write and read once connected.
        ssl_context: For ``https`` (default: ``ssl.create_default_context()``).
    """

    def __init__(
        self,
        url: str,
        host_header: str,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._tls = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._tls else 80))
        self._server_hostname = parts.hostname
        self._host_header = host_header
        self._max_idle = max_connections
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        self._context = ssl_context or (ssl.create_default_context() if self._tls else None)
        self._idle: deque[_Connection] = deque()

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one POST and read its answer.

        Raises:
            botocore.exceptions.EndpointConnectionError, ConnectTimeoutError, SSLError,
            ReadTimeoutError, ConnectionClosedError: as described in the module docstring.
        """
        head = [f"POST {path} HTTP/1.1", f"Host: {self._host_header}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += [f"User-Agent: {USER_AGENT}", f"Content-Length: {len(body)}", "", ""]
        request = "\r\n".join(head).encode("latin-1") + body
        conn = self._take()
        try:
            conn.sock.sendall(request)
            response, keep = _read_response(conn.reader)
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeoutError(endpoint_url=self.url, error=exc) from exc
        except (OSError, _BrokenConnection, ValueError) as exc:
            conn.close()
            raise ConnectionClosedError(endpoint_url=self.url, error=exc) from exc
        except BaseException:
            conn.close()
            raise
        if keep and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        """Close the idle connections (calls under way keep theirs)."""
        while self._idle:
            self._idle.pop().close()

    def _take(self) -> _Connection:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._connect()
            if not conn.dropped():
                return conn
            conn.close()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)
        except ssl.SSLError as exc:
            sock.close()
            raise SSLError(endpoint_url=self.url, error=exc) from exc
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:
            sock.close()
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        sock.settimeout(self._read_timeout)
        return _Connection(sock)


def _read_response(reader: BinaryIO) -> tuple[Response, bool]:
    """One answer from ``reader``; and whether the connection may carry another request."""
    while True:
        line = reader.readline(_MAX_LINE)
        if not line:
            raise _BrokenConnection("connection closed before an answer")
        version, status, headers = _status_and_headers(line, reader)
        if not 100 <= status < 200:
            break  # 1xx answers (100 Continue) are followed by the real one
    connection = headers.get("connection", "").lower()
    keep = version == "HTTP/1.1" and "close" not in connection
    if version == "HTTP/1.0" and "keep-alive" in connection:
        keep = True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        data = _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        data = reader.read(length) if length else b""
        if len(data) < length:
            raise _BrokenConnection(f"answer ended after {len(data)} of {length} bytes")
    elif status in (204, 304):
        data = b""
    else:  # the body runs to the end of the connection
        data = reader.read()
        keep = False
    return Response(status, headers, data), keep


def _status_and_headers(line: bytes, reader: BinaryIO) -> tuple[str, int, dict[str, str]]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise _BrokenConnection(f"not an HTTP status line: {line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        raw = reader.readline(_MAX_LINE)
        if raw in (b"\r\n", b"\n"):
            return parts[0].decode("latin-1"), int(parts[1]), headers
        if not raw:
            raise _BrokenConnection("connection closed in the answer's headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _BrokenConnection(f"not an HTTP header: {raw[:80]!r}")
        key, text = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    raise _BrokenConnection(f"more than {_MAX_HEADERS} headers")


def _read_chunked(reader: BinaryIO) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = reader.readline(_MAX_LINE)
        if not size_line:
            raise _BrokenConnection("connection closed in a chunked answer")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        chunk = reader.read(size)
        if len(chunk) < size or reader.read(2) != b"\r\n":
            raise _BrokenConnection("connection closed in a chunk")
        chunks.append(chunk)
    while reader.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
        pass  # trailers
    return b"".join(chunks)
