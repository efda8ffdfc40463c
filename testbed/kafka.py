"""A real single-node Apache Kafka (KRaft) broker started from Maven Central jars.

The broker jars are resolved once with Maven (``kafka-pom.xml`` next to this file) into a cache
directory, then each :class:`LocalKafka` formats a data directory and runs ``kafka.Kafka`` in a
JVM child process. No Docker needed: only ``java`` (17+) and ``mvn`` on ``PATH``.

Run ``python -m testbed.kafka`` for a foreground broker on 127.0.0.1:9092.

With ``sasl_users`` and/or ``tls`` the broker gets a second listener, ``SECURE``, next to the
PLAINTEXT one (which the broker itself and the tests' admin clients keep using): SASL_SSL,
SASL_PLAINTEXT or SSL. SASL accepts SCRAM-SHA-256, SCRAM-SHA-512 (users created by
``StorageTool format --add-scram``, as KRaft does it) and PLAIN; TLS uses a CA and a broker
certificate generated into the data directory (:mod:`testbed.tls`).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

KAFKA_VERSION = "4.1.1"
POM_PATH = Path(__file__).with_name("kafka-pom.xml")
_MARKER = ".complete"
# Measured on 2 cores: C1-only JIT + serial GC start the broker ~0.8 s faster; an AppCDS archive
# (created on the first clean broker exit, disable with BRIDGE_KAFKA_CDS=0) saves ~1 s more.
_FAST_JVM = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto"]


SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
"""What the SECURE listener accepts when ``sasl_users`` is given."""
_SASL_TEXT = re.compile(r"[A-Za-z0-9._-]{1,128}")


class LocalKafkaError(RuntimeError):
    """Raised when the local broker cannot be resolved, formatted, started or reached."""


def _tail(text: str | bytes, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalKafkaError(
            f"`{tool}` not found on PATH: the local Kafka broker needs Java 17+ "
            "and Maven (or set KAFKA_BOOTSTRAP_SERVERS to an existing broker)"
        )
    return path


def _run(cmd: list[str], timeout: float) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        raise LocalKafkaError(
            f"`{' '.join(cmd)}` timed out after {timeout:.0f}s:\n{_tail(out)}"
        ) from exc
    if res.returncode != 0:
        raise LocalKafkaError(
            f"`{' '.join(cmd)}` failed with exit code {res.returncode}:\n"
            f"{_tail(res.stdout + res.stderr)}"
        )


def _version_dir(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        env = os.environ.get("BRIDGE_CACHE_DIR")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "kafka-eventbridge-bridge"
    return cache_dir / f"kafka-{KAFKA_VERSION}"


def kafka_libs(cache_dir: Path | None = None) -> Path:
    """Resolves the broker's runtime jars with Maven, reusing a complete earlier download.

    Args:
        cache_dir: Cache root; defaults to ``$BRIDGE_CACHE_DIR`` or
            ``~/.cache/kafka-eventbridge-bridge``. Jars go to ``<root>/kafka-<ver>/libs``.

    Returns:
        The directory holding the jars (use it as the classpath ``DIR/*``).

    Raises:
        LocalKafkaError: ``java`` or ``mvn`` is missing, or Maven failed (the message names the
            command and ends with the tail of its output).
    """
    libs = _version_dir(cache_dir) / "libs"
    if (libs / _MARKER).is_file():
        return libs
    _require("java")
    mvn = _require("mvn")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    try:
        cmd = [mvn, "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies"]
        cmd += [f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        _run([*cmd, f"-Dkafka.version={KAFKA_VERSION}"], timeout=900)
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise LocalKafkaError(f"Maven produced no kafka_2.13 jar in {staging}")
        (staging / _MARKER).write_text(KAFKA_VERSION + "\n")
        staging.chmod(0o755)
        if libs.exists() and not (libs / _MARKER).is_file():
            shutil.rmtree(libs, ignore_errors=True)  # an incomplete copy from an older run
        with contextlib.suppress(OSError):  # another process may have won the race: fine
            staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (libs / _MARKER).is_file():
        raise LocalKafkaError(f"could not install the Kafka jars into {libs}")
    return libs


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> Callable[[], None] | None:
    """Returns a preexec_fn making the child get SIGKILL when this (main) thread dies (Linux)."""
    main_thread = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not main_thread:
        return None  # PR_SET_PDEATHSIG fires when the *thread* that forked exits
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class LocalKafka:
    """A single-node KRaft broker (broker + controller in one JVM) on 127.0.0.1.

    Example:
        with LocalKafka() as kafka:
            producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    """

    def __init__(
        self,
        *,
        port: int = 0,
        controller_port: int = 0,
        data_dir: Path | None = None,
        auto_create_topics: bool = True,
        extra_properties: Mapping[str, str] | None = None,
        sasl_users: Mapping[str, str] | None = None,
        tls: bool = False,
        secure_port: int = 0,
    ) -> None:
        """Configures (but does not start) the broker.

        Args:
            port: PLAINTEXT listener port; 0 picks a free port (kept across restarts).
            controller_port: KRaft controller port; 0 picks a free port.
            data_dir: Where properties, log segments and ``kafka.log`` live; None uses a
                temporary directory removed by :meth:`stop`.
            auto_create_topics: Value of ``auto.create.topics.enable``.
            extra_properties: Extra/overriding ``server.properties`` entries.
            sasl_users: User name -> password accepted by the SECURE listener with SCRAM-SHA-256,
                SCRAM-SHA-512 and PLAIN (letters, digits, ``.``, ``_``, ``-``). SCRAM users are
                created when the data directory is formatted, so they are fixed for its life.
            tls: Whether the SECURE listener speaks TLS (certificates in ``<data_dir>/tls``;
                clients trust :attr:`ca_path`).
            secure_port: SECURE listener port; 0 picks a free port (kept across restarts).

        Raises:
            ValueError: A SASL user name or password with other characters.
        """
        free = iter(_free_ports(3))
        self.port = port or next(free)
        self.controller_port = controller_port or next(free)
        self.sasl_users = dict(sasl_users or {})
        for text in (*self.sasl_users, *self.sasl_users.values()):
            if not _SASL_TEXT.fullmatch(text):
                raise ValueError(
                    "SASL user names and passwords of the local broker may hold only letters,"
                    " digits, '.', '_' and '-' (they are written into JAAS and StorageTool"
                    " arguments)"
                )
        self.tls = tls
        self.secure_port = (secure_port or next(free)) if (self.sasl_users or tls) else None
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="local-kafka-"))
        self.log_path = self.data_dir / "kafka.log"
        self._auto_create = auto_create_topics
        self._extra = dict(extra_properties or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cds_tmp: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` string of the PLAINTEXT listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def secure_protocol(self) -> str | None:
        """``SASL_SSL``, ``SASL_PLAINTEXT`` or ``SSL`` for the SECURE listener; None without."""
        if self.secure_port is None:
            return None
        if self.sasl_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL"

    @property
    def secure_bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` string of the SECURE listener."""
        if self.secure_port is None:
            raise LocalKafkaError("this broker has no SECURE listener (no sasl_users, no tls)")
        return f"127.0.0.1:{self.secure_port}"

    @property
    def ca_path(self) -> Path:
        """The test CA's certificate (PEM): what clients of the TLS listener trust."""
        return self.data_dir / "tls" / "ca.pem"

    def secure_client_config(
        self,
        username: str | None = None,
        password: str | None = None,
        mechanism: str = "SCRAM-SHA-256",
    ) -> dict[str, str]:
        """librdkafka settings to reach the SECURE listener as ``username``."""
        conf = {
            "bootstrap.servers": self.secure_bootstrap_servers,
            "security.protocol": str(self.secure_protocol),
        }
        if self.tls:
            conf["ssl.ca.location"] = str(self.ca_path)
        if self.sasl_users:
            conf["sasl.mechanisms"] = mechanism
            conf["sasl.username"] = username or next(iter(self.sasl_users))
            conf["sasl.password"] = password or self.sasl_users[conf["sasl.username"]]
        return conf

    def _secure_properties(self) -> dict[str, str]:
        if self.secure_port is None:
            return {}
        props: dict[str, str] = {}
        prefix = "listener.name.secure."
        if self.sasl_users:
            props[prefix + "sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for mechanism in ("scram-sha-256", "scram-sha-512"):
                props[f"{prefix}{mechanism}.sasl.jaas.config"] = scram
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            props[prefix + "plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        if self.tls:
            if not self.ca_path.is_file():
                from testbed.tls import write_test_pki

                write_test_pki(self.ca_path.parent)
            props[prefix + "ssl.keystore.type"] = "PEM"
            props[prefix + "ssl.keystore.location"] = str(self.ca_path.parent / "broker.pem")
            props[prefix + "ssl.truststore.type"] = "PEM"
            props[prefix + "ssl.truststore.location"] = str(self.ca_path)
        return props

    def _scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments of ``StorageTool format``: KRaft's way to create users."""
        args: list[str] = []
        for user, password in self.sasl_users.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        return args

    def _write_properties(self) -> Path:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.secure_port is not None:
            listeners.append(f"SECURE://127.0.0.1:{self.secure_port}")
            protocols.append(f"SECURE:{self.secure_protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(protocols),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After kill() the restarted controller waits out the dead broker's session: shorten.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "auto.create.topics.enable": str(self._auto_create).lower(),
        }
        props |= self._secure_properties() | self._extra
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _jvm_flags(self, libs: Path, java: str) -> list[str]:
        flags = list(_FAST_JVM)
        if os.environ.get("BRIDGE_KAFKA_CDS", "1") == "0":
            return flags
        key = hashlib.sha1(os.path.realpath(java).encode()).hexdigest()[:10]
        archive = libs.parent / f"broker-{key}.jsa"
        if archive.is_file():
            return [*flags, f"-XX:SharedArchiveFile={archive}"]
        self._cds_tmp = archive.with_name(f"{archive.name}.{os.getpid()}.{id(self)}.tmp")
        return [*flags, f"-XX:ArchiveClassesAtExit={self._cds_tmp}"]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        """Formats the data directory if needed, starts the JVM and waits until it serves.

        Args:
            timeout: Seconds to wait for the broker to answer a metadata request.

        Returns:
            self, for chaining.

        Raises:
            LocalKafkaError: Jars/tools missing, formatting failed, or the broker exited or did
                not answer in time (the message ends with the tail of :attr:`log_path`).
        """
        if self.running:
            return self
        libs, java = kafka_libs(), _require("java")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_properties()
        flags = self._jvm_flags(libs, java)
        classpath = ["-cp", f"{libs}/*", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]
        if not (self.data_dir / "logs" / "meta.properties").is_file():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # what Kafka's Uuid.randomUuid() also avoids
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cmd = [java, *(f for f in flags if "ArchiveClassesAtExit" not in f), *classpath]
            cmd += ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
            _run([*cmd, *self._scram_arguments()], 120)
        ports = (self.port, self.controller_port)
        for port in ports if self.secure_port is None else (*ports, self.secure_port):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise LocalKafkaError(f"port 127.0.0.1:{port} is already in use") from exc
        self._log = self.log_path.open("ab")
        self._log.write(f"--- starting Kafka {KAFKA_VERSION} at {time.ctime()} ---\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            [java, "-Xmx512m", *flags, *classpath, "kafka.Kafka", str(props)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.kill()  # keeps the data dir (and its kafka.log) for a post-mortem
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        meta = (self.data_dir / "logs" / "meta.properties").read_text()
        cluster_id = next(ln[11:] for ln in meta.splitlines() if ln.startswith("cluster.id="))
        last: object = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LocalKafkaError(
                    f"Kafka broker exited with code {self._proc.returncode}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
                wait = max(1.0, min(5.0, deadline - time.monotonic()))
                md = admin.list_topics(timeout=wait)
                if md.brokers and md.cluster_id == cluster_id:  # ours, not a squatter's
                    return
            except Exception as exc:  # connection refused / metadata timeout: retry
                last = exc
            time.sleep(0.2)
        raise LocalKafkaError(
            f"Kafka broker at {self.bootstrap_servers} not ready in time "
            f"(last error: {last}); log {self.log_path}:\n{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        """Whether the broker JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Returns the last ``lines`` lines of the broker log (empty if there is none)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
                return _tail(fh.read(), lines)
        except OSError:
            return ""

    def _signal(self, sig: int, wait: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            atexit.unregister(self.stop)
        if self._cds_tmp is not None:  # the archive is only complete after a clean exit
            archive = self._cds_tmp.with_name(self._cds_tmp.name.split(".jsa.")[0] + ".jsa")
            if proc is not None and proc.returncode in (0, 143) and self._cds_tmp.is_file():
                self._cds_tmp.replace(archive)
            self._cds_tmp.unlink(missing_ok=True)
            self._cds_tmp = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, keep_data: bool = False) -> None:
        """Stops the broker (SIGTERM, then SIGKILL after 15 s).

        Args:
            keep_data: Keep a temporary data dir, so that :meth:`start` brings the same broker
                back (same ports, topics, offsets); otherwise it is removed.
        """
        self._signal(signal.SIGTERM, 15.0)
        if self._owns_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Kills the broker with SIGKILL (no clean shutdown); the data directory is kept."""
        self._signal(signal.SIGKILL, 15.0)

    def restart(self) -> None:
        """Stops the broker cleanly and starts it again on the same ports and data directory."""
        self._signal(signal.SIGTERM, 15.0)
        self.start()

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_broker_for_tests() -> tuple[str, Callable[[], None]]:
    """Starts a throwaway broker: a local JVM if java+mvn exist, else a testcontainers one.

    Returns:
        ``(bootstrap_servers, stop_fn)``.

    Raises:
        LocalKafkaError: Neither way works.
    """
    if shutil.which("java") and shutil.which("mvn"):
        kafka = LocalKafka().start()
        return kafka.bootstrap_servers, kafka.stop
    try:
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().start()
    except Exception as exc:  # ImportError, docker.errors.DockerException (no Docker engine), ...
        raise LocalKafkaError(
            "cannot start a Kafka broker for the tests: java and/or mvn are not on PATH (needed "
            f"for a local broker from Maven Central jars) and testcontainers failed ({exc!r}); "
            "install Java 17+ and Maven, start a Docker engine, or set KAFKA_BOOTSTRAP_SERVERS "
            "to an existing broker"
        ) from exc
    return str(container.get_bootstrap_server()), container.stop


def main() -> None:
    """CLI: resolve the jars, or run a broker in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m testbed.kafka", description=__doc__)
    parser.add_argument("--port", type=int, default=9092, help="listener port (0 = any free)")
    parser.add_argument("--controller-port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, help="persistent data dir (default: temporary)")
    parser.add_argument("--no-auto-create-topics", action="store_true")
    parser.add_argument("--resolve-only", action="store_true", help="only fetch the jars")
    args = parser.parse_args()
    try:
        libs = kafka_libs()
        if args.resolve_only:
            print(libs, flush=True)
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        kafka = LocalKafka(
            port=args.port,
            controller_port=args.controller_port,
            data_dir=args.data_dir,
            auto_create_topics=not args.no_auto_create_topics,
        ).start()
    except LocalKafkaError as exc:
        sys.exit(f"error: {exc}")
    print(f"Kafka broker ready at {kafka.bootstrap_servers}", flush=True)
    try:
        while not stop.wait(1.0):
            if not kafka.running:
                sys.exit(f"error: Kafka broker died; log tail:\n{kafka.log_tail()}")
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()
