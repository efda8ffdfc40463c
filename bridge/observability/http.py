"""One HTTP port for ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``.

Cheap to call: each answer reads a few fields; nothing touches Kafka or AWS.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.observability.metrics import Metrics


class Health:
    """What the loop reports about itself; read by the probes.

    Args:
        stuck_after_s: The loop is considered stuck when it has not turned for this long.
    """

    def __init__(self, stuck_after_s: float) -> None:
        self.stuck_after_s = stuck_after_s
        self._beat = time.monotonic()
        self.joined = False
        self.brokers_down = False
        self.stopping = False
        self.outage: str | None = None
        """Why the bus is out of reach (the circuit breaker is open), or None."""

    def on_kafka_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: readiness follows whether any broker is reachable."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_down = True

    def beat(self) -> None:
        """The loop turned."""
        self._beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        """Whether the loop is alive and turning, with a one-line reason."""
        idle = time.monotonic() - self._beat
        if idle > self.stuck_after_s:
            return False, f"loop has not turned for {idle:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Whether the bridge is in its group and its brokers are reachable."""
        if self.stopping:
            return False, "stopping"
        if self.brokers_down:
            return False, "all brokers are down"
        if not self.joined:
            return False, "not yet in the consumer group"
        if self.outage is not None:
            return False, self.outage
        return self.live()


class ObservabilityServer:
    """Serves the probes and the metrics in a daemon thread."""

    def __init__(self, host: str, port: int, health: Health, metrics: Metrics) -> None:
        handler = _handler(health, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="observability", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> ObservabilityServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Health, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                self._probe(*health.live())
            elif path == "/readyz":
                self._probe(*health.ready())
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

        def _probe(self, ok: bool, reason: str) -> None:
            self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would flood the log

    return Handler
