"""HTTP/1.1 POSTs to one endpoint through libcurl (pycurl): the lean client's transport.

urllib3 (through ``http.client``, whose answers are parsed by the ``email`` package) spends about
170 µs of CPU on a PutEvents call on the 2-core test machine (205 over TLS), more than signing
and serializing together; through libcurl, which does the exchange in C and lets go of the GIL
while it waits, the call costs about 80 µs (95) (``benchmarks/transport.py``).

The endpoint is reached as the boto3 client the lean client is built from reaches it
(:class:`HttpSettings`): certificates checked against the CA bundle botocore resolved, or not at
all with ``verify=False``; through the proxy botocore chose for the endpoint. Requests are
HTTP/1.1 (no HTTP/2 by ALPN), without ``Expect: 100-continue``, with ``TCP_NODELAY``.

Two ways to make a call: :meth:`HttpPool.post` blocks its thread until the answer (any thread);
:class:`HttpMulti` runs many calls at once from the one thread that drives it (libcurl's multi
interface), which is how the pipeline sends.

Connections: each call in flight has a ``pycurl.Curl`` handle to itself. A blocking call keeps
its connection alive in its handle between calls; :class:`HttpMulti` keeps up to
``max_connections`` in its multi handle for all of its calls (libcurl checks that the server has
not closed one before using it again). Idle handles wait last-in first-out, at most
``max_connections`` of them. When
a kept connection turns out closed after the request went out and before any byte of an answer,
libcurl sends the request once more on a new connection (no option turns that off); boto3
without retries would raise ``ConnectionClosedError`` and the bridge would send the entries
again itself, so it makes no duplicate that would not have been made anyway.

Timeouts mean what they mean to botocore: ``connect_timeout_s`` bounds connecting (name lookup,
TCP, proxy tunnel, TLS handshake: libcurl's ``CONNECTTIMEOUT_MS``), ``read_timeout_s`` bounds
the time without a byte moving either way once connected. libcurl's ``LOW_SPEED_TIME`` cannot
say that: it averages the speed over several seconds, so with a 1 s limit it fired 3 to 7 s after
the last byte. For a blocking call a progress callback checks instead; libcurl calls it at least
once a second while it waits, so the timeout fires between ``read_timeout_s`` and a second later
(on time for whole seconds). :class:`HttpMulti` checks the bytes moved every 50 ms between its
turns, so its timeout fires at most a turn of the pipeline's loop after ``read_timeout_s``.

Failures raise botocore's exceptions, as boto3 would: ``EndpointConnectionError`` (cannot
resolve or connect), ``ProxyConnectionError`` (cannot connect through the proxy),
``ConnectTimeoutError``, ``SSLError`` (handshake or certificate), ``ReadTimeoutError`` and
``ConnectionClosedError`` (the connection broke, or the answer was not HTTP).

Over 400 lines: one job, the libcurl exchange. :class:`HttpMulti` drives :class:`HttpPool`'s
handles through the pool's own private steps (take, answer, release, map a libcurl error), which
a split would have to make public for one caller; and an eighth of the file is this docstring.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pycurl
from botocore.exceptions import (
    BotoCoreError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path, mask_proxy_url

from bridge import __version__
from bridge.errors import ConfigError

USER_AGENT = f"kafka-eventbridge-bridge/{__version__}"
_PREREQ_OK: int = pycurl.PREREQFUNC_OK

_TLS = frozenset(
    {
        pycurl.E_SSL_CONNECT_ERROR,
        pycurl.E_PEER_FAILED_VERIFICATION,
        pycurl.E_SSL_CACERT,
        pycurl.E_SSL_CACERT_BADFILE,
        pycurl.E_SSL_CERTPROBLEM,
        pycurl.E_SSL_CIPHER,
        pycurl.E_SSL_CRL_BADFILE,
        pycurl.E_SSL_ISSUER_ERROR,
        pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
        pycurl.E_SSL_INVALIDCERTSTATUS,
        pycurl.E_SSL_SHUTDOWN_FAILED,
        pycurl.E_USE_SSL_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, headers (names in lower case, as botocore gives them), body."""

    status: int
    headers: dict[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How the endpoint is reached: certificate checks and proxy.

    Attributes:
        verify: ``True``: certificates checked against botocore's default CA bundle (certifi's,
            as botocore's ``get_cert_path``); a path: against that bundle; ``False``: no check.
        proxy: The proxy's URL, or None to connect directly.
        proxy_ca_bundle: The CA bundle for an ``https://`` proxy's certificate (default: checked
            as ``verify`` says).
    """

    verify: bool | str = True
    proxy: str | None = None
    proxy_ca_bundle: str | None = None

    @classmethod
    def of(cls, boto_client: Any) -> HttpSettings:
        """The settings a boto3 client's own requests use.

        botocore resolves them once, when the client is made, into the client's HTTP session:
        ``verify`` from the client's ``verify=`` argument, else ``AWS_CA_BUNDLE`` or the
        profile's ``ca_bundle``, else ``REQUESTS_CA_BUNDLE``; the proxy from
        ``Config(proxies=...)``, else from ``HTTPS_PROXY`` / ``HTTP_PROXY`` unless ``NO_PROXY``
        names the endpoint's host. They are read from that session (no public attribute holds
        them), so they are botocore's answers, not a second reading of the same sources.

        Raises:
            ConfigError: A setting this transport does not honour (a client certificate,
                ``proxy_client_cert``, ``proxy_use_forwarding_for_https``): ``aws.client:
                boto3`` does.
        """
        session = boto_client._endpoint.http_session
        proxies = session._proxy_config
        extra = proxies.settings or {}
        unsupported = [
            name
            for name, value in (
                ("client_cert", session._cert_file),
                ("proxies_config.proxy_client_cert", extra.get("proxy_client_cert")),
                (
                    "proxies_config.proxy_use_forwarding_for_https",
                    extra.get("proxy_use_forwarding_for_https"),
                ),
            )
            if value
        ]
        if unsupported:
            raise ConfigError(
                "the AWS settings (botocore Config or profile)",
                [
                    f"{name} is not supported by aws.client: lean; use aws.client: boto3"
                    for name in unsupported
                ],
            )
        return cls(
            verify=session._verify,
            proxy=proxies.proxy_url_for(boto_client.meta.endpoint_url),
            proxy_ca_bundle=extra.get("proxy_ca_bundle"),
        )


class _Handle:
    """A ``pycurl.Curl`` handle (and the connection libcurl keeps in it), with what one call
    collects: the answer's header lines and body, and the state of its read timeout."""

    __slots__ = (
        "chunks",
        "connected",
        "curl",
        "last",
        "lines",
        "moved",
        "progress",
        "read_timeout",
        "token",
    )

    def __init__(self, read_timeout_s: float) -> None:
        self.curl = pycurl.Curl()
        self.chunks: list[bytes] = []
        self.lines: list[bytes] = []
        self.read_timeout = read_timeout_s
        self.connected = False
        self.moved = -1
        self.last = 0.0
        self.progress = True
        self.token: Any = None
        self.curl.setopt(pycurl.WRITEFUNCTION, self.chunks.append)
        self.curl.setopt(pycurl.HEADERFUNCTION, self.lines.append)
        self.curl.setopt(pycurl.NOPROGRESS, 0)
        self.curl.setopt(pycurl.XFERINFOFUNCTION, self._progress)
        self.curl.setopt(pycurl.PREREQFUNCTION, self._connected)

    def start(self) -> None:
        self.chunks.clear()
        self.lines.clear()
        self.connected = False
        self.moved = -1

    def timed_out(self) -> bool:
        return self.connected and time.monotonic() - self.last >= self.read_timeout

    def stalled(self, now: float) -> bool:
        """Whether no byte moved either way for the read timeout (for :class:`HttpMulti`, which
        checks between its turns instead of in a progress callback)."""
        if not self.connected:
            return False
        curl = self.curl
        moved = (
            curl.getinfo(pycurl.SIZE_UPLOAD_T)
            + curl.getinfo(pycurl.SIZE_DOWNLOAD_T)
            + len(self.lines)
        )
        if moved != self.moved:
            self.moved = moved
            self.last = now
            return False
        return now - self.last >= self.read_timeout

    def _connected(self, _ip: str, _local_ip: str, _port: int, _local_port: int) -> int:
        """Called by libcurl once connected (or a kept connection taken), before the request."""
        self.connected = True
        self.moved = 0
        self.last = time.monotonic()
        return _PREREQ_OK

    def _progress(self, _dltotal: int, dlnow: int, _ultotal: int, ulnow: int) -> int:
        """Called by libcurl as the call goes on, at least once a second: 1 aborts the call."""
        if not self.connected:
            return 0
        moved = dlnow + ulnow + len(self.lines)
        now = time.monotonic()
        if moved != self.moved:
            self.moved = moved
            self.last = now
            return 0
        return 1 if now - self.last >= self.read_timeout else 0


class HttpPool:
    """POSTs to the host of ``url``, on up to ``max_connections`` kept-alive connections.

    Thread-safe: each call has a handle (and its connection) to itself; idle ones wait in a deque.

    Args:
        url: The endpoint (``http://`` or ``https://``, host, optional port).
        host_header: The ``Host`` header to send (the one that was signed).
        max_connections: Idle connections kept; more are opened when needed, then closed.
        connect_timeout_s: Connect timeout (name lookup, TCP, proxy tunnel and TLS handshake).
        read_timeout_s: Longest time without a byte sent or received, once connected.
        settings: Certificate checks and proxy (default: certificates checked against
            botocore's default CA bundle, no proxy).
    """

    def __init__(
        self,
        url: str,
        host_header: str,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        settings: HttpSettings | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._settings = settings or HttpSettings()
        self._max_idle = max_connections
        self._connect_timeout_ms = max(1, round(connect_timeout_s * 1000))
        self._read_timeout = read_timeout_s
        # Host as signed; no "Expect: 100-continue" (one round trip, as botocore for small
        # bodies); no "Accept: */*" of libcurl's own.
        self._fixed = [f"Host: {host_header}", "Expect:", "Accept:"]
        self._idle: deque[_Handle] = deque()

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one POST and read its answer.

        Raises:
            botocore.exceptions.EndpointConnectionError, ProxyConnectionError,
            ConnectTimeoutError, SSLError, ReadTimeoutError, ConnectionClosedError: as
            described in the module docstring.
        """
        handle = self._take(path, headers, body, progress=True)
        curl = handle.curl
        try:
            curl.perform()
        except pycurl.error as exc:
            curl.close()
            raise self._error(handle, exc) from exc
        except BaseException:
            curl.close()
            raise
        return self._answer(handle)

    def _take(self, path: str, headers: dict[str, str], body: bytes, progress: bool) -> _Handle:
        """An idle handle (or a new one) set up for this request.

        ``progress``: whether libcurl calls the read-timeout check itself (a blocking
        ``perform``); :class:`HttpMulti` checks between its own turns instead.
        """
        sent = self._fixed + [f"{name}: {value}" for name, value in headers.items()]
        if not any(name.lower() == "content-type" for name in headers):
            sent.append("Content-Type:")  # not libcurl's form encoding
        try:
            handle = self._idle.pop()
        except IndexError:
            handle = self._handle()
        handle.start()
        curl = handle.curl
        if handle.progress is not progress:
            handle.progress = progress
            curl.setopt(pycurl.NOPROGRESS, 0 if progress else 1)
        curl.setopt(pycurl.URL, self._origin + path)
        curl.setopt(pycurl.HTTPHEADER, sent)
        curl.setopt(pycurl.POSTFIELDS, body)
        return handle

    def _answer(self, handle: _Handle) -> Response:
        """The answer a handle received (then the handle waits for the next call, or closes).

        Raises:
            ConnectionClosedError: The answer's head was cut short.
        """
        curl = handle.curl
        status = curl.getinfo(pycurl.RESPONSE_CODE)
        received = _head(handle.lines)
        if received is None:  # libcurl takes a head cut by the server closing as a whole one
            curl.close()
            raise ConnectionClosedError(endpoint_url=self.url, error="the answer's head was cut")
        response = Response(status, received, b"".join(handle.chunks))
        handle.chunks.clear()
        self._release(handle)
        return response

    def _release(self, handle: _Handle) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(handle)
        else:
            handle.curl.close()

    def close(self) -> None:
        """Close the idle connections (calls under way keep theirs)."""
        while self._idle:
            self._idle.pop().curl.close()

    def _handle(self) -> _Handle:
        handle = _Handle(self._read_timeout)
        curl = handle.curl
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_timeout_ms)
        curl.setopt(pycurl.MAXCONNECTS, 1)
        settings = self._settings
        # An explicit proxy, or "" for none; NO_PROXY was applied by botocore (and never to
        # Config(proxies=...)): libcurl must not read the environment again.
        curl.setopt(pycurl.PROXY, settings.proxy or "")
        curl.setopt(pycurl.NOPROXY, "")
        # As botocore: True is its default bundle (certifi's). The wheel's libcurl would look
        # for /etc/pki/tls/certs/ca-bundle.crt, which Debian does not have.
        cafile = get_cert_path(True) if settings.verify is True else settings.verify
        curl.unsetopt(pycurl.CAPATH)
        if cafile is False:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        else:
            curl.setopt(pycurl.CAINFO, cafile)
        if settings.proxy_ca_bundle:
            curl.setopt(pycurl.PROXY_CAINFO, settings.proxy_ca_bundle)
        elif cafile is False:
            curl.setopt(pycurl.PROXY_SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.PROXY_SSL_VERIFYHOST, 0)
        else:
            curl.setopt(pycurl.PROXY_CAINFO, cafile)
        return handle

    def _error(self, handle: _Handle, exc: pycurl.error) -> BotoCoreError:
        """The botocore exception boto3 would raise for libcurl's error."""
        code = exc.args[0]
        if code == pycurl.E_ABORTED_BY_CALLBACK and handle.timed_out():
            return ReadTimeoutError(endpoint_url=self.url, error=exc)
        if code in _TLS:
            return SSLError(endpoint_url=self.url, error=exc)
        if handle.connected:
            if code == pycurl.E_OPERATION_TIMEDOUT:
                return ReadTimeoutError(endpoint_url=self.url, error=exc)
            return ConnectionClosedError(endpoint_url=self.url, error=exc)
        if self._settings.proxy:  # as urllib3: a failure before the tunnel is the proxy's
            return ProxyConnectionError(proxy_url=mask_proxy_url(self._settings.proxy), error=exc)
        if code == pycurl.E_OPERATION_TIMEDOUT:
            return ConnectTimeoutError(endpoint_url=self.url, error=exc)
        return EndpointConnectionError(endpoint_url=self.url, error=exc)


class HttpMulti:
    """Many POSTs under way at once, driven by the one thread that owns it (libcurl's multi
    interface): no thread per call, no hand-off between threads.

    :meth:`start` sends a request (as far as the socket takes it) and returns at once;
    :meth:`perform` moves every request on and returns the ones finished; :meth:`wait` sleeps
    until a socket is ready or libcurl has a timer due. Answers and failures are those of
    :meth:`HttpPool.post` (the same handles, settings and errors); connections are kept alive
    in the multi handle, up to the pool's ``max_connections``.

    The read timeout is checked by :meth:`perform` at most every 50 ms (a progress callback per
    transfer per turn would cost more than the call), so it fires between ``read_timeout_s``
    and a turn after it.

    Args:
        pool: Where the endpoint, settings, timeouts and idle handles come from.
    """

    CHECK_EVERY_S = 0.05

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_MAXCONNECTS, pool._max_idle)
        self._active: dict[Any, _Handle] = {}  # pycurl.Curl -> its handle
        self._next_check = 0.0
        self._queued = False  # handles added since libcurl last ran

    def __len__(self) -> int:
        return len(self._active)

    def start(self, token: Any, path: str, headers: dict[str, str], body: bytes) -> None:
        """Start one POST; its answer comes back from :meth:`perform` with ``token``.

        It goes out at the next :meth:`flush`, :meth:`perform` or :meth:`wait`: one run of
        libcurl for all the calls a turn starts. Run once per call, libcurl walked every
        transfer in flight each time: 17% of the bridge's CPU with 100 and more in flight.
        """
        handle = self._pool._take(path, headers, body, progress=False)
        handle.token = token
        self._active[handle.curl] = handle
        self._multi.add_handle(handle.curl)
        self._queued = True

    def flush(self) -> None:
        """Send the requests started since libcurl last ran."""
        if self._queued:
            self._run()

    def perform(self) -> list[tuple[Any, Response | BotoCoreError]]:
        """Move every request on; the finished ones as ``(token, answer or error)``."""
        self._run()
        done: list[tuple[Any, Response | BotoCoreError]] = []
        multi = self._multi
        while True:
            queued, ok, failed = multi.info_read()
            for curl in ok:
                handle = self._active.pop(curl)
                multi.remove_handle(curl)
                try:
                    done.append((handle.token, self._pool._answer(handle)))
                except ConnectionClosedError as exc:
                    done.append((handle.token, exc))
            for curl, code, message in failed:
                handle = self._active.pop(curl)
                multi.remove_handle(curl)
                curl.close()
                done.append((handle.token, self._pool._error(handle, pycurl.error(code, message))))
            if not queued:
                break
        now = time.monotonic()
        if self._active and now >= self._next_check:
            self._next_check = now + self.CHECK_EVERY_S
            for curl, handle in list(self._active.items()):
                if handle.stalled(now):
                    del self._active[curl]
                    multi.remove_handle(curl)
                    curl.close()
                    error = ReadTimeoutError(
                        endpoint_url=self._pool.url,
                        error=f"no byte moved for {handle.read_timeout} s",
                    )
                    done.append((handle.token, error))
        return done

    def wait(self, timeout: float) -> None:
        """Sleep until a request may have moved on, at most ``timeout`` seconds."""
        self.flush()  # a request not yet handed to libcurl has no socket to wait on
        due = self._multi.timeout()  # ms until libcurl's next timer, -1 for none
        if due >= 0:
            timeout = min(timeout, due / 1000)
        if self._active:
            timeout = min(timeout, max(0.0, self._next_check - time.monotonic()))
        if timeout > 0:
            self._multi.select(timeout)

    def close(self) -> None:
        """Abandon the requests under way and close every connection."""
        for curl in self._active:
            self._multi.remove_handle(curl)
            curl.close()
        self._active.clear()
        self._multi.close()

    def _run(self) -> None:
        self._queued = False
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass


def _head(lines: list[bytes]) -> dict[str, str] | None:
    """The header fields of the last answer in ``lines`` (interim answers and a proxy's come
    first; trailers, after), or None if its head did not end with an empty line."""
    headers: dict[str, str] = {}
    ended = False
    for raw in lines:
        if raw.startswith(b"HTTP/"):
            headers, ended = {}, False
        elif raw in (b"\r\n", b"\n"):
            ended = True
        elif not ended:
            name, _, value = raw.decode("latin-1").partition(":")
            key, text = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers if ended else None
