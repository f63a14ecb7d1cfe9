#!/usr/bin/env bash
# The cluster across three "hosts": network namespaces this script makes
# (tfh0..tfh2), joined by veth pairs to a bridge in a fourth (tfsw), each
# running one nats-server (clustered, JetStream, R3) and one tickfan node.
# Then it checks what tests/cluster.rs checks on loopback, over real links:
#   1. a tick published on host 0 reaches a long-poll on host 2, same seq;
#   2. host 1's link set down: its node stops serving (/readyz 503) while
#      hosts 0 and 2 go on publishing; link up: it catches up (the ticks of
#      the cut are served by a since long-poll on it) and serves again.
# Needs root and iproute2 (`ip netns`). Addresses 10.250.0.1-3/24 exist only
# inside these namespaces. Everything it starts is stopped on exit (by pid),
# and the namespaces are deleted.
#
#   sudo scripts/cluster-netns.sh        (TICKFAN_BIN=... to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
TICKFAN_BIN=${TICKFAN_BIN:-}
DIR=$(mktemp -d /tmp/tickfan-netns.XXXXXX)
HOSTS=(tfh0 tfh1 tfh2)
SWITCH=tfsw
pids=()

log() { echo "cluster-netns: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    for ns in "${HOSTS[@]}" "$SWITCH"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "needs root (ip netns)"
[ -x "$NATS_SERVER" ] || die "nats-server not found"
if [ -z "$TICKFAN_BIN" ]; then
    cargo build --release --bin tickfan
    TICKFAN_BIN=$PWD/target/release/tickfan
fi
for ns in "${HOSTS[@]}" "$SWITCH"; do
    ip netns list | grep -qw "$ns" && die "namespace $ns exists (another run?)"
done

# One bridge in the switch namespace; one veth pair per host.
ip netns add "$SWITCH"
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
for i in 0 1 2; do
    ns=${HOSTS[$i]}
    ip netns add "$ns"
    ip link add "veth$i" netns "$ns" type veth peer name "port$i" netns "$SWITCH"
    ip -n "$SWITCH" link set "port$i" master br0 up
    ip -n "$ns" addr add "10.250.0.$((i + 1))/24" dev "veth$i"
    ip -n "$ns" link set "veth$i" up
    ip -n "$ns" link set lo up
done

routes="nats://10.250.0.1:6222,nats://10.250.0.2:6222,nats://10.250.0.3:6222"
for i in 0 1 2; do
    ip netns exec "${HOSTS[$i]}" "$NATS_SERVER" -a "10.250.0.$((i + 1))" -p 4222 -m 8222 -js \
        -sd "$DIR/store$i" -n "host$i" --cluster_name tickfan-netns \
        --cluster "nats://10.250.0.$((i + 1)):6222" --routes "$routes" >"$DIR/nats$i.log" 2>&1 &
    pids+=($!)
done
http() { # http HOST URL...: curl inside host's namespace
    local host=$1
    shift
    ip netns exec "${HOSTS[$host]}" curl -s --max-time 5 "$@"
}
for i in 0 1 2; do
    for _ in $(seq 150); do
        http "$i" -f "http://10.250.0.$((i + 1)):8222/healthz" >/dev/null && break
        sleep 0.2
    done
done
for i in 0 1 2; do
    ip netns exec "${HOSTS[$i]}" "$TICKFAN_BIN" --listen "10.250.0.$((i + 1)):9001" \
        --cluster-nats "nats://10.250.0.$((i + 1)):4222" --set cluster.replicas=3 \
        --set cluster.ping_interval_ms=500 --ready-file "$DIR/ready$i" >"$DIR/tickfan$i.log" 2>&1 &
    pids+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 600); do [ -f "$DIR/ready$i" ] && break; sleep 0.1; done
    [ -f "$DIR/ready$i" ] || die "tickfan on host $i not ready: $(tail -n 3 "$DIR/tickfan$i.log")"
done
node() { echo "http://10.250.0.$(($1 + 1)):9001"; }
log "three hosts up"

# 1. Publish on host 0, read on host 2.
http 0 -X POST "$(node 0)/publish?topic=netns.A" -d '{"n":1}' >/dev/null
answer=$(http 2 "$(node 2)/poll?topic=netns.A&since=netns.A:0&timeout=5")
echo "$answer" | grep -q '"data":{"n":1}' || die "host 2 did not get host 0's tick: $answer"
seq0=$(echo "$answer" | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
log "1. host 0 -> host 2: seq $seq0"

# 2. Cut host 1 off.
ip -n "$SWITCH" link set port1 down
for _ in $(seq 100); do
    [ "$(http 1 -o /dev/null -w '%{http_code}' "$(node 1)/readyz")" = 503 ] && break
    sleep 0.2
done
[ "$(http 1 -o /dev/null -w '%{http_code}' "$(node 1)/readyz")" = 503 ] || die "host 1 still ready while cut off"
log "2. host 1 cut off: /readyz 503"
for n in 2 3 4; do
    code=$(http 0 -o /dev/null -w '%{http_code}' -X POST "$(node 0)/publish?topic=netns.A" -d "{\"n\":$n}")
    [ "$code" = 202 ] || die "host 0 refused a publish during the cut: $code"
done
ip -n "$SWITCH" link set port1 up
for _ in $(seq 150); do
    [ "$(http 1 -o /dev/null -w '%{http_code}' "$(node 1)/readyz")" = 200 ] && break
    sleep 0.2
done
[ "$(http 1 -o /dev/null -w '%{http_code}' "$(node 1)/readyz")" = 200 ] || die "host 1 did not come back"
answer=$(http 1 "$(node 1)/poll?topic=netns.A&since=netns.A:$seq0&timeout=5")
for n in 2 3 4; do
    echo "$answer" | grep -q "\"data\":{\"n\":$n}" || die "host 1 lacks tick $n after the cut: $answer"
done
log "2. host 1 back: caught up with the 3 ticks of the cut before serving"
log "passed"
