#!/usr/bin/env bash
# Sets everything up, then runs the bridge end to end on local defaults: a local Kafka broker,
# a local EventBridge-compatible endpoint, sample records produced, the delivered events printed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The demo is a development tool of the checkout (testbed/), not a command of the product.
exec .venv/bin/python -m testbed.demo "$@"
