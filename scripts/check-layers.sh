#!/usr/bin/env bash
# The layers of src/ (see src/lib.rs) as rules a grep can check; CI runs this.
#   core/  no I/O: no sled, NATS, tokio, axum, HTTP client, std::{fs,io,net,process,thread}, and
#          nothing of the crate outside core.
#   view/  no I/O either (threads are allowed: the bulk build uses them); of the crate, core only.
#   store/ no NATS, tokio or HTTP; of the crate, core and view (and config for nothing).
#   nats/  no sled, no view or store, no HTTP.
# It also holds every file of src/ to about 600 lines of code (tests and comments aside).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
# Every line of code of a folder's files, as file:line:text, tests (after `#[cfg(test)]`) and
# comments aside.
code() {
  find "src/$1" -name '*.rs' -print0 | xargs -0 awk '
    FNR == 1 { test = 0 }
    /^#\[cfg\(test\)\]/ { test = 1 }
    !test && !/^[[:space:]]*\/\// { print FILENAME ":" FNR ":" $0 }'
}
check() { # folder, pattern, what
  local hits
  hits=$(code "$1" | grep -E "$2" || true)
  if [ -n "$hits" ]; then
    echo "layer rule broken: src/$1 must not use $3:"
    echo "$hits"
    fail=1
  fi
}
io='\b(sled|async_nats|tokio|tokio_util|axum|tower|tower_http|reqwest|hyper|mio)::|std::(fs|io|net|process)\b|\bstd::env::var'
check core "$io|std::thread\b" "I/O or threads (sled, NATS, tokio, axum, std::fs/io/net/process/thread)"
check core 'crate::(view|store|nats|http|ops|app|config|telemetry)\b' "a layer outside core"
# (The view may use std::thread: its bulk build indexes projects on threads of their own.)
check view "$io" "I/O"
check view 'crate::(store|nats|http|ops|app|config|telemetry)\b' "a layer outside core and view"
check store '\b(async_nats|tokio|axum|reqwest)::' "NATS, tokio or HTTP"
check store 'crate::(nats|http|ops|app)\b' "the broker, HTTP or ops layers"
check nats '\b(sled|axum)::' "sled or axum"
check nats 'crate::(view|store|http|ops|app)\b' "the view, store, HTTP or ops layers"
# Files of about 600 lines of code at most: lines before `#[cfg(test)]`, without blank lines
# and comments.
while IFS= read -r f; do
  n=$(awk '/^#\[cfg\(test\)\]/{exit} !/^[[:space:]]*(\/\/|$)/{c++} END{print c+0}' "$f")
  if [ "$n" -gt 620 ]; then
    echo "$f: $n lines of code (more than about 600): split it by concern"
    fail=1
  fi
done < <(find src -name '*.rs')
if [ "$fail" -ne 0 ]; then exit 1; fi
echo "layers: ok"
