#!/usr/bin/env bash
# Makes sure Prometheus' `promtool` is on this machine (the metrics test has it check a scrape of
# /metrics), installing Debian's prometheus package if not. Installing it starts no server.
set -euo pipefail
command -v promtool >/dev/null && exit 0
echo "promtool not found: installing Debian's prometheus package" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
install() {
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
}
install || { $SUDO apt-get update -qq >&2 || true; install; }
# A package that started its server (a systemd machine) is stopped: the tests need only the tool.
$SUDO systemctl stop prometheus >/dev/null 2>&1 || true
command -v promtool >/dev/null || { echo "could not install promtool" >&2; exit 1; }
