#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300), starting from the committed seeds
# (fuzz/seeds/TARGET) and the corpus it grows (fuzz/corpus/TARGET, not committed). A crash
# stops it with the reproducer in fuzz/artifacts/TARGET. Stable Rust: cargo-fuzz with
# `-s none` (libFuzzer's coverage instrumentation is stable rustc flags; the sanitizers
# are not), so memory errors are caught only as far as safe Rust and debug assertions do.
# Prints each target's executions.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-300}
targets=$(cargo fuzz list)
cargo fuzz build -s none --debug-assertions >/dev/null
for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  log=$(mktemp)
  if ! cargo fuzz run -s none --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t CRASHED (reproducer in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | awk '{print $2}')
  echo "fuzz: $t: ${runs:-?} executions in ${seconds}s, no crash"
  rm -f "$log"
done
