"""Fixtures of the deployment tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .support import CACHE, Helm, find_helm, missing_tool


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    binary = find_helm()
    if binary is None:
        missing_tool(f"helm (looked in $HELM, {CACHE / 'bin'} and PATH)")
    assert binary is not None
    version = subprocess.run(
        [binary, "version", "--short"], capture_output=True, text=True, check=False
    ).stdout
    assert version.startswith("v3."), f"Helm 3 expected, got {version!r} from {binary}"
    yield Helm(binary, tmp_path_factory.mktemp("helm-home"))
