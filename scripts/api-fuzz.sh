#!/usr/bin/env bash
# Validates the live daemon's OpenAPI document (/openapi.json), then points schemathesis at the
# daemon with it: a 5xx, a response the document does not describe, or a status code it does
# not list fails the run.
# Starts its own nats-server and daemon (each on a port it picks and reports) with a token of
# every action, feeds a few tickets and a bad event, fuzzes every operation (bounded), and
# stops both. Wants the debug binary built (scripts/test.sh builds it) and installs schemathesis
# from PyPI if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug/ticket-ledger
[ -x "$BIN" ] || cargo build --locked --bin ticket-ledger
if ! command -v schemathesis >/dev/null || ! python3 -c "import openapi_spec_validator" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check schemathesis openapi-spec-validator
fi
NATS=$(bash scripts/ensure-nats-server.sh)
TMP=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
"$NATS" -a 127.0.0.1 -p -1 -js -sd "$TMP/js" --ports_file_dir "$TMP" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do ls "$TMP"/*.ports >/dev/null 2>&1 && break; sleep 0.1; done
NATS_PORT=$(python3 -c 'import json,glob,sys; print(json.load(open(glob.glob(sys.argv[1]+"/*.ports")[0]))["nats"][0].rsplit(":",1)[1])' "$TMP")
TOKEN=fuzz-token
cat > "$TMP/ledger.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[store]
path = "$TMP/store"
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
embedded = "never"
[log]
format = "json"
level = "warn,ticket_ledger::app=info"
[auth]
access_keys = []
[[auth.principals]]
name = "fuzz"
projects = ["proj-a"]
actions = ["coc:job:list", "coc:job:get", "coc:job:operate", "coc:ledger:admin"]
[[auth.tokens]]
principal = "fuzz"
sha256 = "$(printf '%s\n' "$TOKEN" | "$BIN" hash-token)"
TOML
export TICKET_LEDGER_CONFIG="$TMP/ledger.toml"
"$BIN" serve 2> "$TMP/daemon.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '"listening"' "$TMP/daemon.log" 2>/dev/null && break; sleep 0.1; done
PORT=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: v=json.loads(l)
    except ValueError: continue
    if v.get("fields",{}).get("message")=="listening": print(v["fields"]["addr"].rsplit(":",1)[1]); break' "$TMP/daemon.log")
URL="http://127.0.0.1:$PORT"
"$BIN" emit --kind created --project proj-a --order-id 1 --name patch --creator alice --execute-uuid SCT1 >/dev/null
"$BIN" emit --kind started --project proj-a --order-id 1 >/dev/null
"$BIN" emit --kind finished --project proj-a --order-id 2 >/dev/null   # a dead letter
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
# The document itself first: valid OpenAPI 3.1.
python3 -c 'import json,sys,urllib.request
from openapi_spec_validator import validate
validate(json.load(urllib.request.urlopen(sys.argv[1])))
print("openapi.json: valid OpenAPI", json.load(urllib.request.urlopen(sys.argv[1]))["openapi"])' "$URL/openapi.json"
# One worker: with two, CPython 3.11's ast.parse (which hypothesis calls to describe its filters)
# raced between the threads once ("AST constructor recursion depth mismatch"), an error of the
# tool, not of the daemon.
schemathesis run "$URL/openapi.json" \
  --header "X-Auth-Token: $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${FUZZ_EXAMPLES:-60}" \
  --workers 1 \
  --no-color
