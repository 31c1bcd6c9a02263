#!/usr/bin/env bash
# The console's browser test: Debian's chromium, driven by Playwright (the Python package, with
# the system browser: no browser download), against the built daemon. Installs what is missing.
# Screenshots of each step land in target/console-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
fi
if ! python3 -c "import playwright, pytest" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check playwright pytest
fi
[ -x target/debug/ticket-ledger ] || cargo build --locked --bin ticket-ledger
python3 -m pytest -q tests/browser
