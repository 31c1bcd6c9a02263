#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 20), from the committed
# seeds (fuzz/corpus/<target>, written by fuzz/seeds.py) and what earlier runs on this machine
# found (fuzz/target/corpus/<target>, where new inputs go). Exits non-zero on the first crash;
# its input is in fuzz/artifacts/<target>/.
#
# cargo fuzz wants a nightly compiler for its flags; RUSTC_BOOTSTRAP lets the stable toolchain
# take them, and `-s none` leaves out the sanitizers (the targets look for panics, which
# libFuzzer reports as crashes without one).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -s none
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target" "target/corpus/$target"
  echo "== fuzz $target for ${SECONDS_EACH}s"
  log="target/fuzz-$target.log"
  mkdir -p target
  status=0
  cargo fuzz run -s none "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|SUMMARY|thread|Failing input)" "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $target crashed (exit $status): see fuzz/artifacts/$target/ and fuzz/$log" >&2
    exit 1
  fi
done
