"""The codebase's own standards, checked on every run: mypy strict and ruff on bridge/ and
testbed/ (the development tools the tests and the demo run on)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_on_bridge() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout[-5000:]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["packages"]
    assert {"bridge", "testbed"} <= set(packages), packages


def test_ruff_lint_and_format_on_bridge() -> None:
    lint = run("ruff", "check", "bridge", "testbed")
    assert lint.returncode == 0, lint.stdout[-5000:]
    fmt = run("ruff", "format", "--check", "bridge", "testbed")
    assert fmt.returncode == 0, fmt.stdout[-5000:]
