"""The README's first command, run as a user runs it, shows events arriving."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    demo, tests = readme_commands()[:2]
    assert demo == "./scripts/demo.sh"
    assert tests == "./scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./scripts/test.sh" in ci


def test_first_command_shows_events_arriving() -> None:
    demo = readme_commands()[0]
    result = subprocess.run(
        demo, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "==> 20 events received by the EventBridge endpoint:" in out
    assert len(re.findall(r"^  com\.example\.shop +Order (created|paid|shipped) ", out, re.M)) == 20
    assert "code=ValueNotJson stage=decode" in out
    assert "==> every record accounted for" in out
