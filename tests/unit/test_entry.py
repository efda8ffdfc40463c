"""The process entry point: only ``bridge run`` records a signal early (tests/reliability's
``test_sigterm_during_start_up_exits_0`` checks ``run`` itself against a real broker)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_still_ends_a_command_other_than_run(tmp_path: Path) -> None:
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "mappings": [{"topic": "t", "source": "com.example.t", "detail_type": "T"}],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    # `render` waits for the record on standard input, which stays open.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "render", "-c", str(path), "-t", "t"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # 130 once in `render`; an uncaught KeyboardInterrupt (-2) if it came during the imports.
    assert code in (130, -signal.SIGINT), code
