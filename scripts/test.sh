#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (unit, functional, integration).
# A real Kafka broker is started from Maven Central jars unless KAFKA_BOOTSTRAP_SERVERS is set.
# Extra arguments go to pytest, e.g. ./scripts/test.sh tests/unit -k packer
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
set +e
.venv/bin/python -m pytest -ra --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
fi
exit "$rc"
