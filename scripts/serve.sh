#!/usr/bin/env bash
# Starts the daemon with everything it needs: installs nats-server if missing (the daemon runs it
# as a child when no NATS server answers at nats.url), builds, and runs `ticket-ledger serve`.
# Extra arguments go to ticket-ledger (e.g. --config my.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-nats-server.sh >/dev/null
exec cargo run --release --locked -- "$@" serve
