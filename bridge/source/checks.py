"""librdkafka's view of the Kafka settings, connecting to no broker (``bridge check-config``).

``bridge run`` hands ``kafka.properties`` (and ``dlq.producer``) to librdkafka, which refuses
unknown keys, bad values, files it cannot load (``ssl.ca.location``, keys) and some combinations
(SASL without credentials, idempotence with too many requests in flight). The pydantic model
cannot know these rules: the only faithful check is to create the clients. Without
``bootstrap.servers`` they read their settings and connect to no broker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from pydantic import SecretStr

from bridge.config import BridgeConfig
from bridge.dlq.producer import dlq_producer_config
from bridge.source.consumer import consumer_config

MASK = "**********"
NEED_CREDENTIALS = "sasl.username and sasl.password must be set"
"""librdkafka's refusal of SASL PLAIN/SCRAM without credentials."""

_CREDENTIALS = {  # librdkafka key: (config key, its environment variable)
    "sasl.username": ("kafka.sasl_username", "BRIDGE_KAFKA__SASL_USERNAME"),
    "sasl.password": ("kafka.sasl_password", "BRIDGE_KAFKA__SASL_PASSWORD"),
}


@dataclass
class KafkaCheck:
    """What librdkafka refused (``problems``) and what the check left out (``notes``)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Discard:
    """A ``logger`` for librdkafka that drops its lines (a check, not a client in use)."""

    def log(self, *_: Any, **__: Any) -> None:
        pass


def refusal_text(exc: KafkaException, conf: dict[str, Any], secrets: Iterable[str]) -> str:
    """librdkafka's refusal in one line: a missing file said plainly, ``secrets`` masked.

    Args:
        exc: What creating the client raised.
        conf: The settings it was given (to tell whether a ``*.location`` file exists).
        secrets: Values never to print.
    """
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    text = re.sub(r"^Failed to create (consumer|producer): ", "", text)
    # "ssl.ca.location failed: error:05880020:x509 certificate routines::BIO lib" is OpenSSL's
    # way of saying that the file is not there.
    for key in re.findall(r"\b([a-z.]+\.location) failed", text):
        where = conf.get(key)
        if isinstance(where, str) and not os.path.exists(where):
            text += f" (no such file: {where})"
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return f"librdkafka refused a setting: {text}"


def check_clients(
    clients: Iterable[tuple[str, Callable[..., Any], dict[str, Any]]],
    secrets: Iterable[str],
    skip_files: bool = False,
) -> KafkaCheck:
    """Create and close each client with its settings minus ``bootstrap.servers``.

    Args:
        clients: ``(section, Consumer or Producer, settings)``; ``section`` names where the
            settings come from in the config file (``kafka.properties``, ...).
        secrets: Values never to print.
        skip_files: Leave out every ``*.location`` setting (the files exist where the bridge
            runs, not here: CI, a chart's rendered config).

    Returns:
        One problem per distinct refusal (``kafka.properties`` reach both clients: said once).
        Credentials not set (they come from the environment where the bridge runs) are a note,
        not a problem, and the check goes on without them.
    """
    secrets = list(secrets)
    check = KafkaCheck()
    seen: set[str] = set()
    for section, make, settings in clients:
        conf = {k: v for k, v in settings.items() if k not in ("bootstrap.servers", "error_cb")}
        if skip_files:
            conf = {k: v for k, v in conf.items() if not k.endswith(".location")}
        conf["logger"] = _Discard()
        text = _refusal(make, conf, secrets)
        missing = [k for k in _CREDENTIALS if not conf.get(k)]
        if text is not None and text.endswith(NEED_CREDENTIALS) and missing:
            names = " and ".join(_CREDENTIALS[k][0] for k in missing)
            envs = ", ".join(_CREDENTIALS[k][1] for k in missing)
            them = "it" if len(missing) == 1 else "them"
            note = f"{names} not set here: `bridge run` needs {them} (from {envs})"
            if note not in check.notes:
                check.notes.append(note)
            text = _refusal(make, {**conf, **{k: "not-set" for k in missing}}, secrets)
        if text is not None and text not in seen:
            seen.add(text)
            check.problems.append(f"{section}: {text}")
    return check


def _refusal(make: Callable[..., Any], conf: dict[str, Any], secrets: list[str]) -> str | None:
    try:
        client = make(conf)
    except KafkaException as exc:
        return refusal_text(exc, conf, secrets)
    if isinstance(client, Consumer):
        client.close()
    return None


def check_kafka_settings(config: BridgeConfig, skip_files: bool = False) -> KafkaCheck:
    """Create (and close, unconnected) the consumer and the dead-letter producer as ``run``
    would: what librdkafka refuses, secrets masked."""
    clients = [
        ("kafka.properties", Consumer, consumer_config(config)),
        ("dlq.producer / kafka.properties", Producer, dlq_producer_config(config)),
    ]
    return check_clients(clients, kafka_secrets(config), skip_files)


def kafka_secrets(config: BridgeConfig) -> list[str]:
    """Every secret among the Kafka settings (masked in librdkafka's refusals)."""
    found = [config.kafka.sasl_password] if config.kafka.sasl_password is not None else []
    for props in (config.kafka.properties, config.dlq.producer):
        found += [v for v in props.values() if isinstance(v, SecretStr)]
    return [s.get_secret_value() for s in found if s.get_secret_value()]
