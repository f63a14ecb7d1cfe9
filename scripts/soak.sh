#!/usr/bin/env bash
# Soak test: connection churn plus steady publishing against a release build
# of tickfan, checking that the broker gives back every file descriptor and
# that its memory stays near its warm-up level.
#
# Usage: scripts/soak.sh [SECONDS] [--short]
#   SECONDS   how long the load runs (default 60; 20 with --short)
#   --short   the test-suite mode: 20 seconds unless SECONDS is given, and a
#             shorter warm-up
#
# It builds the broker and examples/soak_client.rs in release mode, starts
# the broker on a free loopback port (`--workers 2`; its pid is recorded and
# it is stopped by that pid on exit), warms it up, records its descriptor
# count and RSS, then runs CLIENTS churning clients over TOPICS topics while
# one publisher sends RATE ticks per second. At the end it prints what was
# served and the broker's descriptors and RSS at start and end, and exits 1
# if the descriptor count has not returned to its start value after a
# settle wait, if RSS ended above 2 x start + 32 MiB, if the broker died, or
# if the load generator reported errors. Not part of `cargo test`;
# scripts/test.sh runs the short mode.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=""
short=0
for arg in "$@"; do
    case "$arg" in
        --short) short=1 ;;
        '' | *[!0-9]*)
            echo "usage: scripts/soak.sh [SECONDS] [--short]" >&2
            exit 2
            ;;
        *) duration="$arg" ;;
    esac
done
if [ -z "$duration" ]; then
    if [ "$short" = 1 ]; then duration=20; else duration=60; fi
fi
if [ "$short" = 1 ]; then warmup=3; else warmup=5; fi
clients=200
topics=50
rate=2000
# Descriptors may take this long to return: a client that vanished is seen
# at once, but a connection left mid-close waits out the close timeout (3 s).
settle_secs=15
rss_slack_kib=$((32 * 1024))

echo "== soak: building (release)"
cargo build --release --quiet --bin tickfan --example soak_client
broker_bin=target/release/tickfan
client_bin=target/release/examples/soak_client

workdir=$(mktemp -d target/soak.XXXXXX)
log="$workdir/tickfan.log"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

"$broker_bin" --listen 127.0.0.1:0 --workers 2 2>"$log" &
pid=$!
addr=""
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*tickfan listening.*listen=\([0-9.:]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "soak: the broker did not start; its log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "== soak: broker pid $pid listening on $addr"

fds() { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
# Waits (bounded) until the broker holds $1 descriptors; prints the count.
settle_fds() {
    local want=$1 now
    for _ in $(seq 1 $((settle_secs * 10))); do
        now=$(fds)
        [ "$now" -eq "$want" ] && break
        sleep 0.1
    done
    echo "$now"
}

idle_fds=$(fds)
echo "== soak: warm-up (${warmup}s)"
"$client_bin" "$addr" "$warmup" --clients 50 --topics "$topics" --rate "$rate" >"$workdir/warmup.txt" || {
    cat "$workdir/warmup.txt"
    echo "soak: the warm-up failed" >&2
    exit 1
}
fd_start=$(settle_fds "$idle_fds")
rss_start=$(rss_kib)
echo "== soak: start: fds $fd_start (idle $idle_fds), RSS $rss_start KiB"

echo "== soak: ${duration}s of churn: $clients clients, $topics topics, $rate ticks/s"
status=0
"$client_bin" "$addr" "$duration" --clients "$clients" --topics "$topics" --rate "$rate" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
    echo "soak: FAIL: the broker died; its log:" >&2
    tail -n 50 "$log" >&2
    exit 1
fi
fd_end=$(settle_fds "$fd_start")
rss_end=$(rss_kib)
rss_bound=$((2 * rss_start + rss_slack_kib))
echo "fd count at start: $fd_start"
echo "fd count at end: $fd_end"
echo "RSS at start: $rss_start KiB"
echo "RSS at end: $rss_end KiB (bound $rss_bound KiB)"

failed=0
if [ "$status" -ne 0 ]; then
    echo "soak: FAIL: the load generator exited $status" >&2
    failed=1
fi
if [ "$fd_end" -ne "$fd_start" ]; then
    echo "soak: FAIL: the broker holds $fd_end descriptors ${settle_secs}s after the load, $fd_start before it" >&2
    failed=1
fi
if [ "$rss_end" -gt "$rss_bound" ]; then
    echo "soak: FAIL: RSS $rss_end KiB is over 2 x $rss_start + $rss_slack_kib KiB" >&2
    failed=1
fi
if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "== soak: OK"
