#!/usr/bin/env bash
# Runs the whole test suite:
#   1. cargo test: unit tests (the daemon's and the benchmark's), and the integration tests,
#      which start their own nats-server (on a port it picks and reports) with their own temp dirs;
#   2. pytest tests/sdk: the official Huawei Cloud Python SDK against the built daemon;
#   3. scripts/browser-test.sh: the console in Debian's headless chromium, with Playwright;
#   4. scripts/api-fuzz.sh: schemathesis against the built daemon, with its OpenAPI document;
#   5. scripts/fuzz.sh 15: every cargo-fuzz target (the decoders and parsers) for 15 s each.
# Installs what is missing first: nats-server, promtool (for the metrics test), and the SDK with
# pytest (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-nats-server.sh >/dev/null
bash scripts/ensure-nats-current.sh >/dev/null
bash scripts/ensure-promtool.sh
if ! python3 -c "import huaweicloudsdkcoc, pytest, jsonschema" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check huaweicloudsdkcoc pytest jsonschema
fi
# A failing test's panic message, not a backtrace, is what the end of its output must show.
export RUST_BACKTRACE=0
cargo test --locked --workspace "$@"
cargo build --locked --bin ticket-ledger
python3 -m pytest -q tests/sdk
bash scripts/browser-test.sh
bash scripts/api-fuzz.sh
bash scripts/fuzz.sh 15
