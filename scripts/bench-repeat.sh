#!/usr/bin/env bash
# Runs one bench.sh scenario N times and reports how far its searches agree.
#
#   scripts/bench-repeat.sh SCENARIO [N]      (N defaults to 3)
#
# Every run's benches/results/SCENARIO.json is kept as
# benches/results/SCENARIO-run<i>.json; the spread table (median, spread,
# whether every run is within +-15% of the median) goes to
# benches/results/SCENARIO-spread.md. The environment is bench.sh's
# (TARGETS, SUBS, MARKET_TARGETS, NICE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/bench-repeat.sh SCENARIO [N]}
runs=${2:-3}
files=()
for i in $(seq "$runs"); do
    echo "bench-repeat: $scenario run $i of $runs" >&2
    scripts/bench.sh "$scenario" >/dev/null
    cp "benches/results/$scenario.json" "benches/results/$scenario-run$i.json"
    files+=("benches/results/$scenario-run$i.json")
done
python3 scripts/bench_spread.py "benches/results/$scenario-spread.md" "${files[@]}"
