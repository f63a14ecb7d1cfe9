#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each;
# `scripts/fuzz.sh 600` for ten minutes), starting from the committed seed
# corpus in fuzz/corpus/. Prints the executions each target ran. A crash
# stops the script with the reproducer in fuzz/artifacts/<target>/: turn it
# into a regression test before fixing.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the
# machine's stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets=(frame_decoder http_request client_op stream_query publish_body session_ops)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  # Work on a copy so the committed seeds stay small; keep new finds local.
  work="fuzz/target/corpus/$target"
  mkdir -p "$work"
  cp -n "fuzz/corpus/$target"/* "$work"/ 2>/dev/null || true
  log="fuzz/target/$target.log"
  echo "== $target for ${seconds}s"
  cargo fuzz run "$target" "$work" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || {
    tail -40 "$log"
    echo "fuzz: $target FAILED, reproducer in fuzz/artifacts/$target/" >&2
    exit 1
  }
  runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | grep -Eo '[0-9]+' || echo "?")
  echo "$target: $runs executions in ${seconds}s, no crash"
done
