#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the integration tests, which start their own
# nats-server on free ports (installed here if missing) with their own temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-nats-server.sh >/dev/null
exec cargo test --locked "$@"
