"""The lean client's HTTP transport against scripted servers: answers, keep-alive, failures, TLS.

Each server is a thread on a real loopback socket that answers every connection with a script,
so the transport meets real TCP behaviour: FINs, resets, half answers, silence.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from bridge.sink.transport import USER_AGENT, HttpPool

Script = Callable[[socket.socket, "Server"], None]


class Server:
    """Accepts connections on 127.0.0.1 and runs ``script`` on each, in its own thread."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            self.script(sock, self)
        with contextlib.suppress(OSError):
            sock.close()

    def read_request(self, sock: socket.socket) -> bytes | None:
        """One whole request (headers and Content-Length body), or None at end of stream."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return body

    def stop(self) -> None:
        self._stop = True
        self.listener.close()


@contextlib.contextmanager
def serving(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = Server(script, tls)
    try:
        yield server
    finally:
        server.stop()


def answer(status: str = "200 OK", body: bytes = b'{"ok": true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def keep_alive(sock: socket.socket, server: Server) -> None:
    while (body := server.read_request(sock)) is not None:
        sock.sendall(answer(body=b'{"echo": ' + str(len(body)).encode() + b"}"))


def pool(server: Server, read_timeout: float = 2.0, **kwargs: object) -> HttpPool:
    host = f"127.0.0.1:{server.port}"
    return HttpPool(server.url, host, 4, 2.0, read_timeout, **kwargs)  # type: ignore[arg-type]


def test_post_sends_one_request_and_keeps_the_connection() -> None:
    with serving(keep_alive) as server:
        client = pool(server)
        for size in (0, 10, 100_000):
            response = client.post("/", {"X-Amz-Target": "AWSEvents.PutEvents"}, b"x" * size)
            assert (response.status, response.data) == (200, b'{"echo": %d}' % size)
            assert response.headers["content-type"] == "application/x-amz-json-1.1"
        assert server.connections == 1
        head = server.requests[0].split(b"\r\n\r\n")[0].decode().split("\r\n")
        assert head[0] == "POST / HTTP/1.1"
        assert head[1] == f"Host: 127.0.0.1:{server.port}"
        assert "X-Amz-Target: AWSEvents.PutEvents" in head
        assert f"User-Agent: {USER_AGENT}" in head and "Content-Length: 0" in head


def test_concurrent_calls_use_their_own_connections_and_keep_at_most_the_maximum() -> None:
    gate = threading.Barrier(6)

    def slow(sock: socket.socket, server: Server) -> None:
        while server.read_request(sock) is not None:
            time.sleep(0.2)
            sock.sendall(answer())

    with serving(slow) as server:
        client = pool(server)  # keeps 4

        def call() -> None:
            gate.wait()
            assert client.post("/", {}, b"{}").status == 200

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.connections == 6
        assert len(client._idle) == 4


def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    def one_answer(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        sock.sendall(answer())  # keep-alive promised, then closed while idle

    with serving(one_answer) as server:
        client = pool(server)
        assert client.post("/", {}, b"{}").status == 200
        time.sleep(0.1)
        assert client.post("/", {}, b"{}").status == 200
        assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n'
        b"5\r\n: 1}\n\r\n0\r\nTrailer: x\r\n\r\n",
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"a": 1}',
    ],
)
def test_chunked_and_interim_answers(reply: bytes) -> None:
    def script(sock: socket.socket, server: Server) -> None:
        while server.read_request(sock) is not None:
            sock.sendall(reply)

    with serving(script) as server:
        client = pool(server)
        for _ in range(2):
            response = client.post("/", {}, b"{}")
            assert response.status == 200 and response.data.replace(b"\n", b"") == b'{"a": 1}'
        assert server.connections == 1  # still kept alive


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n\r\n{}",  # no length: the body runs to the close
    ],
)
def test_answers_that_end_the_connection(reply: bytes) -> None:
    def script(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)

    with serving(script) as server:
        client = pool(server)
        for _ in range(2):
            assert client.post("/", {}, b"{}").data == b"{}"
        assert server.connections == 2 and not client._idle


def test_repeated_headers_are_joined_and_errors_keep_their_status() -> None:
    def script(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        extra = "x-amzn-ErrorType: ThrottlingException:http://x\r\nVia: a\r\nVia: b\r\n"
        sock.sendall(answer("400 Bad Request", b"{}", extra))

    with serving(script) as server:
        response = pool(server).post("/", {}, b"{}")
        assert response.status == 400
        assert response.headers["via"] == "a, b"
        assert response.headers["x-amzn-errortype"] == "ThrottlingException:http://x"


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


BROKEN: dict[str, Script] = {
    "closed without an answer": lambda s, srv: (srv.read_request(s), s.close()),
    "reset without an answer": lambda s, srv: (srv.read_request(s), reset(s)),
    "half a body, then closed": lambda s, srv: (
        srv.read_request(s),
        s.sendall(answer(body=b'{"Entries": []}')[:-5]),
        s.close(),
    ),
    "half a body, then reset": lambda s, srv: (
        srv.read_request(s),
        s.sendall(answer(body=b'{"Entries": []}')[:-5]),
        time.sleep(0.05),
        reset(s),
    ),
    "not HTTP": lambda s, srv: (srv.read_request(s), s.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")),
    "bad header": lambda s, srv: (
        srv.read_request(s),
        s.sendall(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
    ),
    "bad length": lambda s, srv: (
        srv.read_request(s),
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}"),
    ),
    "headers cut": lambda s, srv: (
        srv.read_request(s),
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Le"),
        s.close(),
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_answer_is_connection_closed_and_the_connection_is_dropped(name: str) -> None:
    with serving(BROKEN[name]) as server:
        client = pool(server)
        with pytest.raises(ConnectionClosedError):
            client.post("/", {}, b"{}")
        assert not client._idle


def test_no_answer_within_the_read_timeout() -> None:
    with serving(lambda s, srv: (srv.read_request(s), time.sleep(2))) as server:
        client = pool(server, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.post("/", {}, b"{}")
        assert time.monotonic() - started < 1.5 and not client._idle


def test_nothing_listening_is_an_endpoint_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        client = HttpPool(f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}", 2, 1.0, 1.0)
        with pytest.raises(EndpointConnectionError):
            client.post("/", {}, b"{}")


def test_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> socket.socket:
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", never)
    client = HttpPool("http://192.0.2.1/", "192.0.2.1", 2, 0.1, 1.0)
    with pytest.raises(ConnectTimeoutError):
        client.post("/", {}, b"{}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bridge.local.tls import write_test_pki

    return write_test_pki(tmp_path_factory.mktemp("pki")).parent


def test_tls_with_the_certificate_checked(pki: Path) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki / "broker.pem")
    with serving(keep_alive, server_context) as server:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        client = pool(server, ssl_context=trusted)
        for _ in range(3):
            assert client.post("/", {}, b"abc").data == b'{"echo": 3}'
        assert server.connections == 1
        with pytest.raises(SSLError):  # the default context does not know the test CA
            pool(server).post("/", {}, b"abc")
