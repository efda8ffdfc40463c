"""The lean client's HTTP transport against scripted servers: answers, keep-alive, failures.

Every exchange is tried both ways the bridge makes it: a blocking ``HttpPool.post`` (from any
thread) and an ``HttpMulti`` driven from one thread, as the pipeline drives it.

Certificate checks and proxies are in ``test_transport_tls_and_proxy.py``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from http_support import Script, Server, answer, keep_alive, serving

from bridge.sink.transport import USER_AGENT, HttpMulti, HttpPool, Response


def pool(server: Server, read_timeout: float = 2.0) -> HttpPool:
    return HttpPool(server.url, f"127.0.0.1:{server.port}", 4, 2.0, read_timeout)


class Driven:
    """One POST at a time through an ``HttpMulti``, driven as the pipeline drives it."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.multi = HttpMulti(pool)

    @property
    def _idle(self) -> Any:
        return self.pool._idle

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        self.multi.start("token", path, headers, body)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.multi.perform()
            if done:
                [(token, answer)] = done
                assert token == "token" and not len(self.multi)
                if isinstance(answer, Exception):
                    raise answer
                return answer
            self.multi.wait(0.5)
        raise AssertionError("no answer in 30 s")


Drive = Callable[[HttpPool], Any]


@pytest.fixture(params=["blocking", "multi"])
def drive(request: pytest.FixtureRequest) -> Drive:
    """How a test's requests are made: ``HttpPool.post``, or ``HttpMulti`` on this thread."""
    if request.param == "blocking":
        return lambda pool: pool
    return Driven


def test_post_sends_one_request_and_keeps_the_connection(drive: Drive) -> None:
    with serving(keep_alive) as server:
        client = drive(pool(server))
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
        names = [line.split(":")[0].lower() for line in head[1:]]
        assert len(names) == len(set(names)) and not {"expect", "content-type"} & set(names)


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


def test_an_idle_connection_the_server_closed_is_not_used_again(drive: Drive) -> None:
    def one_answer(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        sock.sendall(answer())  # keep-alive promised, then closed while idle

    with serving(one_answer) as server:
        client = drive(pool(server))
        assert client.post("/", {}, b"{}").status == 200
        time.sleep(0.1)
        assert client.post("/", {}, b"{}").status == 200
        assert server.connections == 2


def test_a_kept_connection_closed_unanswered_is_tried_once_more_on_a_new_one(drive: Drive) -> None:
    """libcurl's own behaviour (documented in the transport): the request is sent twice."""

    def script(sock: socket.socket, server: Server) -> None:
        first = server.connections == 1
        server.read_request(sock)
        sock.sendall(answer())
        if first:
            server.read_request(sock)  # the second request: read, then closed unanswered

    with serving(script) as server:
        client = drive(pool(server))
        assert client.post("/", {}, b"1").status == 200
        assert client.post("/", {}, b"2").status == 200
        assert [r.rsplit(b"\r\n", 1)[-1] for r in server.requests] == [b"1", b"2", b"2"]
        assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n'
        b"5\r\n: 1}\n\r\n0\r\nTrailer: x\r\n\r\n",
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"a": 1}',
    ],
)
def test_chunked_and_interim_answers(reply: bytes, drive: Drive) -> None:
    def script(sock: socket.socket, server: Server) -> None:
        while server.read_request(sock) is not None:
            sock.sendall(reply)

    with serving(script) as server:
        client = drive(pool(server))
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
def test_answers_that_end_the_connection(reply: bytes, drive: Drive) -> None:
    def script(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)

    with serving(script) as server:
        client = drive(pool(server))
        for _ in range(2):
            assert client.post("/", {}, b"{}").data == b"{}"
        assert server.connections == 2


def test_repeated_headers_are_joined_and_errors_keep_their_status(drive: Drive) -> None:
    def script(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        extra = "x-amzn-ErrorType: ThrottlingException:http://x\r\nVia: a\r\nVia: b\r\n"
        sock.sendall(answer("400 Bad Request", b"{}", extra))

    with serving(script) as server:
        response = drive(pool(server)).post("/", {}, b"{}")
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
def test_a_broken_answer_is_connection_closed_and_the_connection_is_dropped(
    name: str, drive: Drive
) -> None:
    with serving(BROKEN[name]) as server:
        client = drive(pool(server))
        with pytest.raises(ConnectionClosedError):
            client.post("/", {}, b"{}")
        assert not client._idle


def test_no_answer_within_the_read_timeout(drive: Drive) -> None:
    with serving(lambda s, srv: (srv.read_request(s), time.sleep(2))) as server:
        client = drive(pool(server, read_timeout=0.3))
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.post("/", {}, b"{}")
        assert time.monotonic() - started < 1.5 and not client._idle


def test_an_answer_that_keeps_coming_is_not_a_read_timeout(drive: Drive) -> None:
    """The read timeout bounds a wait for the next byte, not the whole answer (as botocore)."""

    def trickle(sock: socket.socket, server: Server) -> None:
        server.read_request(sock)
        reply = answer(body=b'{"a": 1}')
        for piece in (reply[:20], reply[20:-4], reply[-4:-2], reply[-2:]):
            time.sleep(0.6)
            sock.sendall(piece)

    with serving(trickle) as server:
        started = time.monotonic()
        assert drive(pool(server, read_timeout=1.0)).post("/", {}, b"{}").data == b'{"a": 1}'
        assert time.monotonic() - started > 2.0


def test_nothing_listening_is_an_endpoint_connection_error(drive: Drive) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        client = drive(HttpPool(f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}", 2, 1.0, 1.0))
        with pytest.raises(EndpointConnectionError):
            client.post("/", {}, b"{}")


def test_connect_timeout_when_the_server_does_not_accept(drive: Drive) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        waiting = []  # fill the accept queue: the kernel drops further connection attempts
        for _ in range(3):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            waiting.append(sock)
        time.sleep(0.1)
        client = drive(HttpPool(f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}", 2, 0.3, 5.0))
        started = time.monotonic()
        with pytest.raises(ConnectTimeoutError):
            client.post("/", {}, b"{}")
        assert time.monotonic() - started < 1.5
        for sock in waiting:
            sock.close()


def test_a_tls_handshake_without_an_answer_is_a_connect_timeout(drive: Drive) -> None:
    with serving(lambda s, srv: time.sleep(3)) as server:  # accepts, never speaks TLS
        url = f"https://127.0.0.1:{server.port}/"
        client = drive(HttpPool(url, f"127.0.0.1:{server.port}", 2, 0.3, 5.0))
        started = time.monotonic()
        with pytest.raises(ConnectTimeoutError):
            client.post("/", {}, b"{}")
        assert time.monotonic() - started < 1.5


def test_the_multi_runs_calls_at_once_from_one_thread_and_keeps_at_most_the_maximum() -> None:
    def slow(sock: socket.socket, server: Server) -> None:
        while server.read_request(sock) is not None:
            time.sleep(0.3)
            sock.sendall(answer())

    with serving(slow) as server:
        multi = HttpMulti(pool(server))  # keeps 4 connections
        for round_ in (1, 2):
            started = time.monotonic()
            for n in range(6):
                multi.start(n, "/", {}, b"{}")
            done: list[tuple[Any, Any]] = []
            while len(done) < 6 and time.monotonic() - started < 10:
                multi.wait(0.5)
                done += multi.perform()
            took = time.monotonic() - started
            assert sorted(token for token, _ in done) == list(range(6))
            assert all(isinstance(a, Response) and a.status == 200 for _, a in done), done
            assert took < 1.2, f"6 calls of 0.3 s each took {took:.2f} s: not at once"
            # 6 connections for the first round; 4 were kept, so the second opens 2 more
            assert server.connections == (6 if round_ == 1 else 8)
        multi.close()


def test_closing_the_multi_abandons_calls_under_way() -> None:
    with serving(lambda s, srv: (srv.read_request(s), time.sleep(2))) as server:
        client = pool(server)
        multi = HttpMulti(client)
        multi.start("abandoned", "/", {}, b"{}")
        wait_until_connected = time.monotonic() + 5
        while server.connections == 0 and time.monotonic() < wait_until_connected:
            multi.wait(0.05)
            assert multi.perform() == []
        assert len(multi) == 1
        multi.close()
        assert len(multi) == 0
