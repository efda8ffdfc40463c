"""The codebase's own standards, checked on every run: mypy strict and ruff on bridge/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_on_bridge() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout[-5000:]


def test_ruff_lint_and_format_on_bridge() -> None:
    lint = run("ruff", "check", "bridge")
    assert lint.returncode == 0, lint.stdout[-5000:]
    fmt = run("ruff", "format", "--check", "bridge")
    assert fmt.returncode == 0, fmt.stdout[-5000:]
