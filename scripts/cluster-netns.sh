#!/usr/bin/env bash
# The cluster across three "hosts": network namespaces this script makes
# (tfh0..tfh2), joined by veth pairs to a bridge in a fourth (tfsw), each
# running one nats-server (clustered, JetStream, R3) and one tickfan node.
# Then it checks what tests/cluster.rs checks on loopback, over real links:
#   1. a tick published on host 0 reaches a long-poll on host 2, same seq;
#   2. host 1's link set down: its node stops serving (/readyz 503) while
#      hosts 0 and 2 go on publishing (after electing a new stream leader
#      if host 1 led it); link up: it catches up (the ticks of the cut
#      are served by a since long-poll on it) and serves again. This is
#      done twice: with host 1 following the stream, then leading it (the
#      leader is moved with $JS.API.STREAM.LEADER.STEPDOWN).
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

log() { echo "cluster-netns: [${SECONDS}s] $*" >&2; }
die() {
    log "FAILED: $*"
    local f
    for f in "$DIR"/tickfan*.log "$DIR"/nats*.log; do
        [ -f "$f" ] && { log "--- tail of $(basename "$f")"; tail -n 15 "$f" >&2; }
    done
    exit 1
}

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

ready_code() { http "$1" -o /dev/null -w '%{http_code}' "$(node "$1")/readyz"; }
wait_ready() { # wait_ready HOST CODE SECONDS
    local deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ "$(ready_code "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    [ "$(ready_code "$1")" = "$2" ]
}
# The stream's leader, as host 0's NATS server reports it (empty: none).
stream_leader() {
    http 0 "http://10.250.0.1:8222/jsz?streams=true" | python3 -c '
import json, sys
for account in json.load(sys.stdin).get("account_details", []):
    for stream in account.get("stream_detail", []):
        if stream.get("name") == "TICKFAN":
            print(stream.get("cluster", {}).get("leader", ""))'
}
# Asks the stream's leader to step down (a new one is elected), over the
# NATS protocol itself: $JS.API.STREAM.LEADER.STEPDOWN, answer awaited.
step_down() {
    ip netns exec "${HOSTS[0]}" python3 -c '
import socket
s = socket.create_connection(("10.250.0.1", 4222), timeout=5)
s.recv(4096)
s.sendall(b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.down 1\r\n"
          b"PUB $JS.API.STREAM.LEADER.STEPDOWN.TICKFAN _INBOX.down 0\r\n\r\n")
got = b""
while b"MSG" not in got:
    got += s.recv(4096)'
}
# Steps the leader down until host 1 leads (LEADS=yes) or does not.
place_leader() {
    local leads=$1 leader now
    for _ in $(seq 30); do
        leader=$(stream_leader)
        now=no
        [ "$leader" = host1 ] && now=yes
        [ -n "$leader" ] && [ "$now" = "$leads" ] && return 0
        [ -n "$leader" ] && step_down
        sleep 0.5
    done
    die "could not place the stream's leader (host 1 leads: $leads; leader: $leader)"
}

# 2. Cut host 1 off, once while another host leads the stream (host 1's
# server cannot reach the leader: no answer) and once while host 1 leads
# it (its server answers, stale, until it sees it lost its peers).
tick=1
for leads in no yes; do
    place_leader "$leads"
    wait_ready 1 200 60 || die "host 1 does not serve after the leader moved"
    ip -n "$SWITCH" link set port1 down
    wait_ready 1 503 20 || die "host 1 (leads the stream: $leads) still ready while cut off"
    log "2. host 1 (leads the stream: $leads) cut off: /readyz 503"
    # If host 1 led the stream, hosts 0 and 2 elect a new leader first (a
    # few seconds in which they answer 503 too): host 0's publishes are
    # retried, as a client would, until it serves again.
    cut_ticks=()
    for _ in 1 2 3; do
        tick=$((tick + 1))
        deadline=$((SECONDS + 30))
        until code=$(http 0 -o /dev/null -w '%{http_code}' -X POST "$(node 0)/publish?topic=netns.A" -d "{\"n\":$tick}") &&
            [ "$code" = 202 ]; do
            [ "$code" = 503 ] && [ "$SECONDS" -lt "$deadline" ] ||
                die "host 0 refused a publish during the cut: $code"
            sleep 0.2
        done
        cut_ticks+=("$tick")
    done
    ip -n "$SWITCH" link set port1 up
    # Back within a minute: it rejoins, a stale leader steps down, it
    # catches up, and only then serves.
    wait_ready 1 200 60 || die "host 1 did not come back"
    answer=$(http 1 "$(node 1)/poll?topic=netns.A&since=netns.A:$seq0&timeout=5")
    for n in "${cut_ticks[@]}"; do
        echo "$answer" | grep -q "\"data\":{\"n\":$n}" || die "host 1 lacks tick $n after the cut: $answer"
    done
    log "2. host 1 back: caught up with the 3 ticks of the cut before serving"
done
log "passed"
