"""CPU per PutEvents call of the lean client's transport against a bare urllib3 pool.

    .venv/bin/python benchmarks/transport.py [--calls 3000] [--rounds 7]

One POST of a 10-entry, 10 KB PutEvents body over a kept-alive loopback connection, answered by a
server in a forked process of its own (so it takes no GIL from the client), over HTTP and over
TLS (a test CA). Prints the calling thread's CPU per call (``time.thread_time``; libcurl does its
work in that thread) and the wall time, median of ``--rounds`` runs that alternate between the
clients so that changes of the machine's load hit both alike.

Then many calls in flight at once (``--in-flight``, 48 by default), as the pipeline makes them:
blocking ``HttpPool.post`` on as many threads, against one thread driving ``HttpMulti``; the
process's CPU per call (every thread's), median of the rounds. Figures only.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.sink.transport import HttpMulti, HttpPool, HttpSettings
from testbed.tls import write_test_pki

ANSWER = (
    b'{"FailedEntryCount": 0, "Entries": ['
    + b", ".join([b'{"EventId": "11710aed-b79e-4468-a20b-bb3c0c3b4860"}'] * 10)
    + b"]}"
)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
HEAD += b"x-amzn-RequestId: abc\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)
BODY = (
    b'{"Entries": ['
    + b", ".join([b'{"Source": "s", "DetailType": "d", "Detail": "' + b"x" * 1000 + b'"}'] * 10)
    + b"]}"
)
HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AWSEvents.PutEvents",
    "X-Amz-Date": "20260101T000000Z",
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/events/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "a" * 64,
}


def _answer_each(conn: socket.socket) -> None:
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(data) < length:
            data += conn.recv(65536)
        data = data[length:]
        conn.sendall(HEAD + ANSWER)


def serve(tls: ssl.SSLContext | None) -> int:
    """A server in a child process (ended when this one exits); returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                threading.Thread(target=_answer_each, args=(conn,), daemon=True).start()
        finally:
            os._exit(0)
    atexit.register(os.kill, pid, signal.SIGTERM)
    listener.close()
    return port


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """CPU and wall microseconds per call, after a warm-up."""
    for _ in range(200):
        call()
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        call()
    return (time.thread_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


def clients(scheme: str, port: int, ca: Path) -> dict[str, Callable[[], object]]:
    """One call of each client to the server on ``port``."""
    url, host = f"{scheme}://127.0.0.1:{port}/", f"127.0.0.1:{port}"
    if scheme == "https":
        bare: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            "127.0.0.1", port, maxsize=4, retries=False, ca_certs=str(ca)
        )
        curl = HttpPool(url, host, 4, 5.0, 10.0, HttpSettings(verify=str(ca)))
    else:
        bare = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4, retries=False)
        curl = HttpPool(url, host, 4, 5.0, 10.0)
    return {
        "urllib3": lambda: bare.urlopen("POST", "/", body=BODY, headers=HEADERS).data,
        "transport": lambda: curl.post("/", HEADERS, BODY).data,
    }


def in_threads(pool: HttpPool, in_flight: int, calls: int) -> float:
    """Process CPU µs per call: ``calls`` blocking posts shared by ``in_flight`` threads."""
    left = [calls]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            pool.post("/", HEADERS, BODY)

    threads = [threading.Thread(target=work) for _ in range(in_flight)]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.process_time() - cpu) / calls * 1e6


def in_multi(pool: HttpPool, in_flight: int, calls: int) -> float:
    """Process CPU µs per call: ``calls`` posts, ``in_flight`` at once, from one thread."""
    multi = HttpMulti(pool)
    cpu = time.process_time()
    started = done = 0
    while done < calls:
        while started < calls and len(multi) < in_flight:
            multi.start(started, "/", HEADERS, BODY)
            started += 1
        finished = multi.perform()
        done += len(finished)
        if not finished:
            multi.wait(0.01)
    used = (time.process_time() - cpu) / calls * 1e6
    multi.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--in-flight", type=int, default=48)
    args = parser.parse_args()
    ca = write_test_pki(Path(tempfile.mkdtemp()))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(ca.parent / "broker.pem")
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"{'':6}{'client':12}{'CPU µs/call':>14}{'(min-max)':>16}{'wall µs/call':>14}")
    for scheme in ("http", "https"):
        port = serve(tls if scheme == "https" else None)
        runs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, call in clients(scheme, port, ca).items():
                runs.setdefault(name, []).append(measure(call, args.calls))
        for name, results in runs.items():
            cpu = [r[0] for r in results]
            wall = statistics.median(r[1] for r in results)
            spread = f"({min(cpu):.0f}-{max(cpu):.0f})"
            print(f"{scheme:6}{name:12}{statistics.median(cpu):14.1f}{spread:>16}{wall:14.1f}")
    port = serve(None)
    url, host = f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}"
    print(f"\n{args.in_flight} calls in flight (http), process CPU µs/call:")
    ways = {"threads": in_threads, "multi": in_multi}
    spent: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            pool = HttpPool(url, host, args.in_flight, 5.0, 10.0)
            way(pool, args.in_flight, 200)  # warm-up: connections opened
            spent[name].append(way(pool, args.in_flight, args.calls))
            pool.close()
    for name, values in spent.items():
        spread = f"({min(values):.0f}-{max(values):.0f})"
        print(f"  {name:10}{statistics.median(values):10.1f}{spread:>16}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
