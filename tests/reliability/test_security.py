"""Security: SASL (SCRAM, PLAIN) over TLS to the real broker; secrets never shown; AWS
credentials from the default chain, or none (said clearly at start); assume-role with an external
id (and STS refusing it).

The broker is the suite's own, with a SASL_SSL listener next to its PLAINTEXT one
(``LocalKafka(sasl_users=..., tls=True)``: a test CA, a broker certificate for 127.0.0.1, SCRAM
users created by ``StorageTool format --add-scram``). The bridge talks SASL_SSL only; the test's
own producer and audit use PLAINTEXT. The image running as non-root (UID 10001) is checked by
``tests/deploy/test_image.py::test_dockerfile_shape``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto.server import ThreadedMotoServer

from bridge.cli import main
from bridge.config import AwsConfig
from bridge.config.load import config_from_dict
from bridge.sink.calls import make_calls
from bridge.sink.factory import make_client, make_sink
from testbed.endpoint import LocalEventBridge

from .conftest import SASL_PASSWORD, SASL_USER, Cluster
from .harness import Run, run_refused, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

AWS_KEY_ID = "AKIARELIABILITY0001"
AWS_SECRET = "aws-Secret-Key-9Kq2LmZ7wX"
AWS_TOKEN = "aws-Session-Token-Pq83Nv5Z"
WRONG_PASSWORD = "Wrong-Secret-44vBn2"
EXTERNAL_ID = "ext-Not-Shown-5150"
ROOT = Path(__file__).resolve().parents[2]
ENTRY = {"Source": "com.example.sec", "DetailType": "Sec", "Detail": "{}"}


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, str(exc.read().decode())


def assert_no_secret(where: str, text: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}...) appears in {where}"


@pytest.mark.integration
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_sasl_over_tls_delivers_and_never_shows_a_secret(
    scenario: Callable[..., Run],
    cluster: Cluster,
    mechanism: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka = cluster.kafka
    if kafka is None or kafka.secure_port is None:
        pytest.skip("needs the suite's own broker with its SASL_SSL listener")
    run = scenario(f"SASL {mechanism} over TLS", partitions=2, logging={"level": "debug"})
    secure = kafka.secure_client_config(SASL_USER, SASL_PASSWORD, mechanism)
    run.config["kafka"]["bootstrap_servers"] = secure.pop("bootstrap.servers")
    run.config["kafka"]["sasl_username"] = secure.pop("sasl.username")
    secure.pop("sasl.password")  # from the environment, as the README advises
    run.config["kafka"]["properties"] |= secure | {"debug": "security,broker"}
    env = {
        "BRIDGE_KAFKA__SASL_PASSWORD": SASL_PASSWORD,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_TOKEN,
    }
    secrets = (SASL_PASSWORD, AWS_SECRET, AWS_TOKEN)
    run.stream(rate=1000, total=600, bad_every=50)
    bridge = run.bridge(env=env).start()
    run.wait_delivering(100)
    port = wait_until(bridge.port, 30, "the health port in the log")
    base = f"http://127.0.0.1:{port}"
    scraped = {path: http_get(base + path)[1] for path in ("/metrics", "/healthz", "/readyz")}
    assert "bridge_records_consumed_total" in scraped["/metrics"]
    run.finish()

    log = bridge.log_path.read_text(errors="replace")
    assert '"sasl.mechanisms": "' not in log  # no configuration dump either
    assert any("sasl" in line.lower() for line in log.splitlines()), "librdkafka debug is on"
    assert_no_secret("the bridge's log (debug level)", log, secrets)
    for path, text in scraped.items():
        assert_no_secret(path, text, secrets)
    dead = " ".join(f"{msg.headers()!r} {msg.value()!r}" for msg in run.audit.dead if msg.headers())
    assert dead, "bad records were dead-lettered over SASL_SSL"
    assert_no_secret("the dead letters", dead, secrets)
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
    assert main(["check-config", "-c", str(bridge.config_path)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out
    assert_no_secret("check-config", out + err, secrets)

    if mechanism != "SCRAM-SHA-512":
        return
    # A wrong password: refused by the broker, said clearly, and not shown either.
    wrong = run.bridge(
        "bridge-wrong-password", env={**env, "BRIDGE_KAFKA__SASL_PASSWORD": WRONG_PASSWORD}
    )
    wrong.start()
    try:

        def refused() -> bool:
            text = wrong.log_path.read_text(errors="replace") if wrong.log_path.exists() else ""
            return "Authentication failed" in text

        wait_until(refused, 60, "the authentication failure in the log", interval=0.5)
        wrong_port = wait_until(wrong.port, 30, "the health port in the log")
        status, why = http_get(f"http://127.0.0.1:{wrong_port}/readyz")
        assert status == 503, why
        assert wrong.terminate(timeout=60) == 0
    finally:
        if wrong.alive():
            wrong.kill()
    log = wrong.log_path.read_text(errors="replace")
    assert_no_secret("the log of a refused bridge", log, (*secrets, WRONG_PASSWORD))
    print(f"    {mechanism}: refused login logged as: {refused_line(log)}")


def refused_line(log: str) -> str:
    for line in log.splitlines():
        if "Authentication failed" in line:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                return line[:200]
            return str(event.get("message") or event.get("error") or event.get("event"))[:240]
    return ""


# --------------------------------------------------------------------- AWS credentials chain
@pytest.fixture
def moto_sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    yield url
    server.stop()


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with no AWS credentials at all (tests/conftest.py sets dummy ones)."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_DEFAULT_REGION",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


# Every value of `aws.client` (a Literal). A renamed field fails the collection of this module
# (KeyError) and an annotation that is no longer a Literal fails the assert: neither turns these
# tests into a silent run of one default client, or into no run at all.
CLIENTS: tuple[str, ...] = typing.get_args(AwsConfig.model_fields["client"].annotation)
assert {"lean", "boto3"} <= set(CLIENTS), CLIENTS


def send_one(endpoint: LocalEventBridge, client: str, **aws: Any) -> str:
    """Build the bridge's client from the config as ``bridge run`` does; send, both blocking and
    as the pipeline sends (calls started, then collected); the key id used."""
    aws = {"endpoint_url": endpoint.url, "client": client, **aws}
    config = config_from_dict(
        {"aws": aws, "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}]}
    )
    sink = make_sink(config, make_client(config))
    outcomes = sink.send([ENTRY])
    assert [o.kind.value for o in outcomes] == ["delivered"], outcomes
    calls = make_calls(sink, 1)
    calls.start(1, [ENTRY])
    deadline = time.monotonic() + 30
    while not (finished := calls.finished()) and time.monotonic() < deadline:
        calls.wait(0.5)
    assert [(call, [o.kind.value for o in outcomes]) for call, outcomes in finished] == [
        (1, ["delivered"])
    ], finished
    calls.close()
    blocking, started = endpoint.calls()[-2:]
    assert blocking.access_key_id == started.access_key_id
    return started.access_key_id


@pytest.mark.parametrize("client", CLIENTS)
def test_credentials_from_the_environment(
    endpoint: LocalEventBridge, no_credentials: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    assert send_one(endpoint, client) == AWS_KEY_ID


@pytest.mark.parametrize("client", CLIENTS)
def test_credentials_from_a_named_profile(
    endpoint: LocalEventBridge, no_credentials: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    credentials = no_credentials / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIANOTTHISONE00000\naws_secret_access_key = x\n"
        "[bridge]\naws_access_key_id = AKIAPROFILE00000001\naws_secret_access_key = y\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "bridge")
    assert send_one(endpoint, client) == "AKIAPROFILE00000001"


@pytest.mark.parametrize("client", CLIENTS)
def test_credentials_from_web_identity(
    endpoint: LocalEventBridge,
    no_credentials: Path,
    moto_sts: str,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    """EKS IRSA / pod identity: a role ARN and a token file; STS (moto) hands out keys."""
    from moto.sts.models import sts_backends

    token = no_credentials / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJicmlkZ2UifQ.c2ln")
    role = "arn:aws:iam::123456789012:role/bridge-web-identity"
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "bridge")
    used = send_one(endpoint, client)
    assumed = {r.access_key_id: r for r in sts_backends["123456789012"]["aws"].assumed_roles}
    assert used.startswith("ASIA") and used in assumed, used
    assert assumed[used].role_arn == role


@pytest.mark.parametrize("client", CLIENTS)
def test_assume_role_with_external_id(
    endpoint: LocalEventBridge,
    no_credentials: Path,
    moto_sts: str,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    from moto.sts.models import sts_backends

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)  # the base identity, default chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    role = "arn:aws:iam::210987654321:role/bridge-writer"
    used = send_one(
        endpoint,
        client,
        assume_role_arn=role,
        external_id="ext-4242",
        role_session_name="eventbridge-bridge",
    )
    assumed = {r.access_key_id: r for r in sts_backends["210987654321"]["aws"].assumed_roles}
    assert used != AWS_KEY_ID and used in assumed, used
    assert assumed[used].role_arn == role
    assert assumed[used].external_id == "ext-4242"
    assert assumed[used].session_name == "eventbridge-bridge"


# --------------------------------------------------------------------- refused at start
def bridge_run(tmp_path: Path, aws: dict[str, Any]) -> str:
    """``bridge run`` as a child process with the current environment; exit 2; its output."""
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "aws": aws,
        "observability": {"enabled": False},
        "logging": {"format": "json"},
        "mappings": [{"topic": "orders", "source": "com.example.orders", "detail_type": "P"}],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    output = run_refused(path)
    assert output.count("\n") == 1, output[-3000:]
    return output


@pytest.mark.parametrize("client", CLIENTS)
def test_no_credentials_at_start_is_said_clearly(
    no_credentials: Path, tmp_path: Path, client: str
) -> None:
    aws = {"client": client}
    output = bridge_run(tmp_path, aws)
    assert "no AWS credentials found" in output, output
    for where in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "~/.aws",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "instance metadata",
    ):
        assert where in output, f"{where} is not named: {output}"
    print(f"    {client}: {output.strip()[:160]}...")


class _RefusingSts(BaseHTTPRequestHandler):
    """STS answering every call as AWS does a role whose trust policy denies the caller."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (
            b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            b"<Type>Sender</Type><Code>AccessDenied</Code><Message>User:"
            b" arn:aws:iam::123456789012:user/bridge is not authorized to perform: sts:AssumeRole"
            b" on resource: arn:aws:iam::210987654321:role/bridge-writer</Message></Error>"
            b"<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def refusing_sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingSts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    yield url
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("client", CLIENTS)
def test_assume_role_refused_at_start_is_said_clearly(
    no_credentials: Path,
    refusing_sts: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    client: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_TOKEN)
    role = "arn:aws:iam::210987654321:role/bridge-writer"
    aws = {"assume_role_arn": role, "external_id": EXTERNAL_ID, "client": client}
    output = bridge_run(tmp_path, aws)
    assert "aws.assume_role_arn" in output and role in output, output
    assert "AccessDenied" in output, output
    assert_no_secret("the refusal", output, (AWS_SECRET, AWS_TOKEN, EXTERNAL_ID))
    print(f"    {client}: {output.strip()}")
