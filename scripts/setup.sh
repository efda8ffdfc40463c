#!/usr/bin/env bash
# Sets up what the demo and the tests need, from the project's own files: a virtualenv in .venv
# with the package and its dev tools, and the Apache Kafka jars (resolved from Maven Central with
# mvn, cached under ~/.cache/kafka-eventbridge-bridge). Java 17+ and Maven must be on the machine;
# on Debian they are installed with apt-get if missing. Helm, which only the deployment tests use,
# is installed by scripts/test.sh (scripts/setup-deploy-tools.sh), not here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need_apt[*]} with apt-get"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
  else
    echo "error: Java 17+ and Maven are needed to run the local Kafka broker: install ${need_apt[*]}" >&2
    exit 1
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "==> installing the bridge and its dev dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,bench]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
echo "==> resolving the Apache Kafka broker jars (Maven Central)"
.venv/bin/python -m testbed.kafka --resolve-only
