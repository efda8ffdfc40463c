"""Every example in config/ is accepted by `bridge check-config`, as the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # secrets are never in the files: they come from the environment, as documented
    monkeypatch.setenv("BRIDGE_ALIBABA__ACCESS_KEY_SECRET", "from-the-environment")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", "from-the-environment")
    assert main(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "from-the-environment" not in out


def test_alibaba_example_without_its_secret_names_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--config", str(CONFIG_DIR / "alibaba.yaml")]) == 2
    err = capsys.readouterr().err
    assert "alibaba.access_key_secret: required when sink is alibaba" in err
