"""Helpers of the deployment tests: a real Helm (scripts/setup-deploy-tools.sh installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kafka-eventbridge-bridge"
ALL_ON = Path(__file__).resolve().parent / "values-all-on.yaml"
CACHE = Path(
    os.environ.get("KEB_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kafka-eventbridge-bridge"
)
RELEASE = "rel"
NAMESPACE = "bridge"
# The Kubernetes versions the chart is rendered for and validated against (kubernetes-validate
# ships schemas from 1.25 on; the chart's kubeVersion is >=1.23).
KUBE_VERSIONS = ("1.25.0", "1.33.0")


def missing_tool(what: str) -> None:
    """Skip when a tool is not installed, but fail in CI, where setup must have installed it."""
    message = f"{what}: run ./scripts/test.sh (it calls scripts/setup-deploy-tools.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"not installed in CI: {message}")
    pytest.skip(f"not installed: {message}")


def find_helm() -> str | None:
    for candidate in (os.environ.get("HELM"), str(CACHE / "bin" / "helm"), shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Helm:
    binary: str
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            # Helm's own state in a temporary home: no repositories, plugins or kubeconfig.
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.home / "no-kubeconfig"),
        }
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def template_args(
        self,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        kube_version: str = KUBE_VERSIONS[-1],
        chart: Path = CHART,
    ) -> list[str]:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
        args += ["--kube-version", kube_version]
        for path in values:
            args += ["--values", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def template(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Render the chart; the objects, in order."""
        result = self.run(*self.template_args(*args, **kwargs))
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_fails(self, *args: Any, **kwargs: Any) -> str:
        """Render the chart expecting a failure; Helm's error text."""
        result = self.run(*self.template_args(*args, **kwargs))
        assert result.returncode != 0, f"helm template accepted it:\n{result.stdout[:2000]}"
        return result.stderr

    def lint(
        self, values: Sequence[Path] = (), sets: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE]
        for path in values:
            args += ["--values", str(path)]
        for item in sets:
            args += ["--set", item]
        return self.run(*args)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]
