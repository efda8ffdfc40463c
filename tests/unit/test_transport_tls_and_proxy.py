"""The lean client reaches the endpoint as the boto3 client it is built from: the certificate
checks botocore resolved (``verify=``, ``AWS_CA_BUNDLE``, the profile's ``ca_bundle``) and its
proxy (``Config(proxies=...)``, else ``HTTP_PROXY`` / ``HTTPS_PROXY`` unless ``NO_PROXY``).
Each case runs boto3 and the lean client side by side against the same servers, the lean
client both ways: blocking calls, and calls started and collected as the pipeline makes them.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ProxyConnectionError, SSLError
from http_support import Server, answer, proxying, serving
from lean_support import Started

from bridge.errors import ConfigError
from bridge.sink.lean import LeanEventsClient
from bridge.sink.transport import HttpPool, HttpSettings
from testbed.tls import write_test_pki

ENVIRONMENT = [
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    *(f"{scheme}_proxy" for scheme in ("http", "https", "all", "no")),
    *(f"{scheme}_PROXY" for scheme in ("HTTP", "HTTPS", "ALL", "NO")),
]
ENTRY = {"Source": "s", "DetailType": "d", "Detail": "{}"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """None of the machine's CA bundles, proxies or AWS profile."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pki(tmp_path_factory.mktemp("pki")).parent


def tls(pki: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "broker.pem")
    return context


def events(sock: socket.socket, server: Server) -> None:
    """Answers every PutEvents call: all entries accepted."""
    while server.read_request(sock) is not None:
        sock.sendall(answer(body=b'{"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}'))


def clients(url: str, config: Config | None = None, **kwargs: Any) -> dict[str, Any]:
    """boto3's client for ``url`` (``kwargs`` to ``session.client``) and the lean one on it,
    called blocking and started."""
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1"
    )
    base = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2)
    boto = session.client(
        "events", endpoint_url=url, config=base.merge(config) if config else base, **kwargs
    )
    lean = LeanEventsClient(boto, session.get_credentials(), 2, 2.0, 2.0)
    started = Started(LeanEventsClient(boto, session.get_credentials(), 2, 2.0, 2.0))
    return {"boto3": boto, "lean": lean, "lean, started": started}


def put(client: Any) -> int:
    return len(client.put_events(Entries=[ENTRY])["Entries"])


# ---- certificates ----


def test_the_pool_checks_certificates_against_the_bundle_it_is_given(
    pki: Path, tmp_path: Path
) -> None:
    with serving(events, tls(pki)) as server:
        host = f"127.0.0.1:{server.port}"
        trusting = HttpPool(server.url, host, 2, 2.0, 2.0, HttpSettings(verify=str(pki / "ca.pem")))
        for _ in range(3):
            assert trusting.post("/", {}, b"{}").status == 200
        assert server.connections == 1
        with pytest.raises(SSLError):  # botocore's default bundle does not hold the test CA
            HttpPool(server.url, host, 2, 2.0, 2.0).post("/", {}, b"{}")
        unchecked = HttpPool(server.url, host, 2, 2.0, 2.0, HttpSettings(verify=False))
        assert unchecked.post("/", {}, b"{}").status == 200
    other = write_test_pki(tmp_path / "other", hosts=("example.com",)).parent
    with serving(events, tls(other)) as server:  # a certificate for another host name
        settings = HttpSettings(verify=str(other / "ca.pem"))
        with pytest.raises(SSLError):
            HttpPool(server.url, "example.com", 2, 2.0, 2.0, settings).post("/", {}, b"{}")


@pytest.mark.parametrize("where", ["AWS_CA_BUNDLE", "profile ca_bundle", "verify argument"])
def test_both_trust_the_ca_bundle_botocore_resolved(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    ca = str(pki / "ca.pem")
    kwargs: dict[str, Any] = {}
    if where == "AWS_CA_BUNDLE":
        monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    elif where == "profile ca_bundle":
        (tmp_path / "config").write_text(f"[default]\nca_bundle = {ca}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    else:
        kwargs["verify"] = ca
    with serving(events, tls(pki)) as server:
        for name, client in clients(server.url, **kwargs).items():
            assert put(client) == 1, name


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_both_refuse_a_certificate_of_an_unknown_ca_and_both_skip_the_check_on_request(
    pki: Path,
) -> None:
    with serving(events, tls(pki)) as server:
        for client in clients(server.url).values():
            with pytest.raises(SSLError):
                put(client)
        for name, client in clients(server.url, verify=False).items():
            assert put(client) == 1, name


# ---- proxies ----


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_both_go_through_the_proxy_of_the_environment(
    pki: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki / "ca.pem"))
    with serving(events, tls(pki) if scheme == "https" else None) as server, proxying() as proxy:
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", proxy.url)
        for name, client in clients(server.url).items():
            assert put(client) == 1, name
        # http: the request itself, with the absolute URL; https: a tunnel (http.client asks
        # for it in HTTP/1.0, libcurl in HTTP/1.1)
        asked = f"POST {server.url} " if scheme == "http" else f"CONNECT 127.0.0.1:{server.port} "
        assert len(proxy.asked) == 3 and all(line.startswith(asked) for line in proxy.asked)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_bypasses_the_proxy_of_the_environment_for_both(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    with serving(events) as server, proxying() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        for name, client in clients(server.url).items():
            assert put(client) == 1, name
        assert proxy.asked == []
        assert server.connections == 3


def test_config_proxies_are_used_by_both_even_for_a_host_in_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # botocore applies it to the environment's only
    with serving(events) as server, proxying() as proxy:
        for name, client in clients(server.url, Config(proxies={"http": proxy.url})).items():
            assert put(client) == 1, name
        assert len(proxy.asked) == 3


def test_an_unreachable_proxy_is_a_proxy_connection_error_for_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed.getsockname()[1]}")
        with serving(events) as server:
            for name, client in clients(server.url).items():
                with pytest.raises(ProxyConnectionError):
                    put(client)
                assert server.connections == 0, name


def test_settings_it_cannot_honour_are_refused_at_start() -> None:
    config = Config(proxies_config={"proxy_use_forwarding_for_https": True})
    with pytest.raises(ConfigError, match="proxy_use_forwarding_for_https"):
        clients("https://127.0.0.1:9/", config)
