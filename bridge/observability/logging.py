"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for the process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
        level: ``debug``, ``info``, ``warning`` or ``error``.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Whatever sys.stderr is when a line is logged (tests swap it); no per-logger caching.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound with the component name.

    A lazy proxy: safe at import time, it takes the configuration in force at its first use.
    """
    return structlog.get_logger(component=name)


class _ToStructlog(logging.Handler):
    """Forwards librdkafka's log lines (through confluent-kafka's ``logger``) to structlog."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self._log = get_logger(component)

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        method = getattr(self._log, level if level in _LEVELS else "info")
        method("librdkafka", message=record.getMessage())


def kafka_logger(component: str) -> logging.Logger:
    """A stdlib logger for a confluent-kafka client's ``logger`` setting."""
    logger = logging.getLogger(f"bridge.librdkafka.{component}")
    if not logger.handlers:
        logger.addHandler(_ToStructlog(component))
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    return logger
