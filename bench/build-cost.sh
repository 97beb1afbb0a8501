#!/usr/bin/env bash
# The dependencies' cost: a release build of the agent from an empty target directory
# (wall time, crates compiled) and the stripped binary's size. Writes bench/BUILD.md, which
# `make bench` puts into bench/REPORT.md as its last section. Takes a few minutes; the
# figure means something only on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
load_before=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
CARGO_TARGET_DIR="$target" cargo build --release --locked --bin smime-agent 2>"$target/log"
end=$(date +%s.%N)
crates=$(grep -c '^ *Compiling ' "$target/log")
strip -o "$target/stripped" "$target/release/smime-agent"
size=$(stat -c %s "$target/stripped")
dups=$(cargo tree -d -e normal --workspace 2>/dev/null | grep -E '^[a-z]' | sort -u | tr '\n' ' ')
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
{
  echo "## 8. Build (the dependencies' cost)"
  echo
  echo "| figure | value |"
  echo "|---|---|"
  printf '| `cargo build --release --bin smime-agent` from an empty target directory | %.0f s, %d crates |\n' "$secs" "$crates"
  printf '| release binary, stripped | %.1f MB |\n' "$(awk -v s="$size" 'BEGIN { print s / 1000000 }')"
  echo "| crates in two versions (\`cargo tree -d -e normal\`) | ${dups:-none} |"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at $(git rev-parse --short HEAD) with \`bench/build-cost.sh\` ($(nproc) CPUs; load average $load_before when it started: above 0.5 the time is an upper bound)."
} > bench/BUILD.md
cat bench/BUILD.md
