"""The process entry point of the ``bridge`` console command and of ``python -m bridge``.

Importing the bridge (pydantic, boto3, confluent-kafka) and loading the configuration take a
few hundred milliseconds before :func:`bridge.app.run_bridge` installs its signal handlers. A
SIGTERM in that window (Kubernetes stopping a pod it has just started) would end the process
with the default action, exit 143. So for ``bridge run`` the first thing done, before anything
heavy is imported, is to install handlers that only record the request; ``run_bridge`` then
exits 0 without consuming. This module imports nothing but ``signal`` and ``sys`` on purpose.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

_requested: list[int] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _requested.append(signum)


def install_early_handlers() -> None:
    """Record SIGTERM and SIGINT instead of dying, until ``run_bridge`` takes over."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _record)


def stop_requested_early() -> bool:
    """Whether a SIGTERM or SIGINT arrived before ``run_bridge`` installed its handlers."""
    return bool(_requested)


def main(argv: list[str] | None = None) -> int:
    """Run the ``bridge`` command (``argv``: the arguments, default ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else argv
    # Only `run` treats a signal as a clean stop; the other commands keep the default actions
    # (Ctrl-C ends `render` or `check-config` at once).
    if args[:1] == ["run"]:
        install_early_handlers()
    from bridge.cli import main as cli_main  # after the handlers: it imports everything

    return cli_main(args, stop_requested_early)
