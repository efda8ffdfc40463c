"""scripts/setup-deploy-tools.sh: idempotent, quick once Helm is installed, non-interactive."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from .support import CACHE, ROOT

SCRIPT = ROOT / "scripts" / "setup-deploy-tools.sh"


def pinned_helm_version() -> str:
    match = re.search(r'^HELM_VERSION="(v3\.\d+\.\d+)"', SCRIPT.read_text(encoding="utf-8"), re.M)
    assert match, "HELM_VERSION not found in the script"
    return match.group(1)


def test_script_is_valid_bash() -> None:
    assert os.access(SCRIPT, os.X_OK), "scripts/setup-deploy-tools.sh must be executable"
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_second_run_is_a_quick_no_op() -> None:
    version = pinned_helm_version()
    helm = CACHE / "bin" / "helm"
    if not (helm.exists() and (CACHE / "bin" / f".helm-{version}").exists()):
        pytest.skip(f"Helm {version} not installed by the script in {CACHE} (run it first)")
    env = {**os.environ, "CI": "true"}
    started = time.monotonic()
    result = subprocess.run(
        [str(SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 5, f"took {elapsed:.1f} s with Helm already installed"
    reported = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    assert reported.stdout.startswith(version), reported.stdout


def commands(script: str) -> list[str]:
    """The lines of scripts/<script> that run something (comments and blank lines dropped)."""
    text = (ROOT / "scripts" / script).read_text(encoding="utf-8")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_only_the_test_command_installs_helm() -> None:
    """The demo's setup never builds Helm with Go; the test command (CI's) does, before pytest."""
    assert not [line for line in commands("setup.sh") if "setup-deploy-tools" in line]
    assert not [line for line in commands("demo.sh") if "setup-deploy-tools" in line]
    assert "./scripts/setup.sh" in commands("demo.sh")
    test = commands("test.sh")
    helm = test.index("./scripts/setup-deploy-tools.sh")
    assert test.index("./scripts/setup.sh") < helm
    assert helm < next(i for i, line in enumerate(test) if "-m pytest" in line)
