#!/usr/bin/env bash
# End-to-end broadcast benchmark: 1 topic, 1 publisher, N subscribers.
#
#   scripts/e2e-broadcast.sh [SUBSCRIBERS] [RATE] [DURATION]
#
# SUBSCRIBERS (default 1000), RATE ticks/s published (default 1000; 0 = flat
# out), DURATION measured seconds (default 10). Builds release, starts the
# broker on a free loopback port with one worker pinned to core 0, runs
# tickfan-load pinned to core 1, and prints its report. The broker is stopped
# by its pid when the script exits, however it exits.
#
# Environment:
#   WORKERS=N        broker workers (default 1)
#   PIN=0            do not pin with taskset (e.g. with WORKERS=2)
#   LOAD_ARGS="..."  extra tickfan-load flags (--threads 2, --warmup 3, ...)
#   JSON=FILE        also write the report as JSON (default target/e2e-broadcast.json)
#   BROKER_ARGS="..." extra broker flags
#   NICE=N           run broker and load generator at nice N (e.g. -10, root
#                    only) so other processes on a shared machine get only
#                    the CPU they leave
#   QUIET_WAIT=S     first wait up to S seconds (default 0) for the machine to
#                    be idle (>= 90% over 2 s), since a shared machine's other
#                    processes skew every figure; the report's "other
#                    processes' CPU" row says how much they did anyway.
set -euo pipefail

SUBSCRIBERS=${1:-1000}
RATE=${2:-1000}
DURATION=${3:-10}
WORKERS=${WORKERS:-1}
PIN=${PIN:-1}
JSON=${JSON:-target/e2e-broadcast.json}

cd "$(dirname "$0")/.."
cargo build --release --quiet -p tickfan -p tickfan-load

# perf counts the broker's send/write syscalls through tracepoints; they need
# tracefs. Mount it when root and missing; without it the report falls back
# to /proc/PID/io syscw and says so.
if [ "$(id -u)" = 0 ] && ! [ -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# Idle share of all CPUs over 2 s, in percent, from /proc/stat.
idle_pct() {
    local a b
    a=($(head -n1 /proc/stat)); sleep 2; b=($(head -n1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? idle * 100 / total : 100 ))
}
if [ "${QUIET_WAIT:-0}" -gt 0 ]; then
    waited=0
    while idle=$(idle_pct); [ "$idle" -lt 90 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        echo "machine ${idle}% idle; waiting for quiet" >&2
        waited=$((waited + 2))
    done
fi

broker_pin=()
load_pin=()
if [ -n "${NICE:-}" ]; then
    broker_pin=(nice -n "$NICE")
    load_pin=(nice -n "$NICE")
fi
if [ "$PIN" = 1 ]; then
    broker_pin+=(taskset -c 0)
    load_pin+=(taskset -c 1)
fi

log=$(mktemp)
broker_pid=
cleanup() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill "$broker_pid" 2>/dev/null || true
        # Bounded wait for its graceful shutdown, then force.
        for _ in $(seq 50); do
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$broker_pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# exec keeps the pid the broker's own (taskset execs it too).
# shellcheck disable=SC2086
"${broker_pin[@]}" target/release/tickfan --listen 127.0.0.1:0 --workers "$WORKERS" \
    --max-queue-bytes 4194304 --max-connections $((SUBSCRIBERS + 100)) --max-messages-per-sec 0 \
    --shutdown-grace-ms 500 ${BROKER_ARGS:-} 2>"$log" &
broker_pid=$!

port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*tickfan listening listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$port" ] && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$log" >&2; echo "broker exited" >&2; exit 1; }
    sleep 0.05
done
[ -n "$port" ] || { cat "$log" >&2; echo "no listening line from the broker" >&2; exit 1; }
echo "broker pid $broker_pid on 127.0.0.1:$port, workers $WORKERS, pinned: $PIN"

# shellcheck disable=SC2086
timeout 600 "${load_pin[@]}" target/release/tickfan-load \
    --addr "127.0.0.1:$port" --subscribers "$SUBSCRIBERS" --rate "$RATE" \
    --duration "$DURATION" --broker-pid "$broker_pid" --json "$JSON" ${LOAD_ARGS:-}
