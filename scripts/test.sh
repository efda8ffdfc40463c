#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, then Helm for the deployment tests with
# scripts/setup-deploy-tools.sh), then runs the whole test suite.
# A real Kafka broker is started from Maven Central jars unless KAFKA_BOOTSTRAP_SERVERS is set.
# Extra arguments go to pytest, e.g. ./scripts/test.sh tests/unit -k packer
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "==> deployment test tools (Helm for tests/deploy; built once with Go, then cached)"
./scripts/setup-deploy-tools.sh
set +e
.venv/bin/python -m pytest -ra --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
fi
exit "$rc"
