#!/usr/bin/env bash
# A local tickfan cluster on loopback: three nats-servers clustered with
# JetStream and three tickfan nodes, each node joined through its own server
# (README.md, "Cluster").
#
#   scripts/cluster.sh start     build release, start the six processes, wait until ready
#   scripts/cluster.sh stop      stop what `start` started (by the pids it recorded)
#   scripts/cluster.sh status    which of them still run
#
# Ports (override with the variables): NATS clients NATS_PORT..+2 (4222..),
# routes ROUTE_PORT..+2 (6222..), monitoring MON_PORT..+2 (8222..), tickfan
# nodes TICKFAN_PORT..+2 (9001..); TICKFAN_BIN runs a given binary instead
# of building release. Extra arguments to `start` go to every tickfan node. State (pids, stores, logs) in
# CLUSTER_DIR (default target/cluster). Stops only the pids it wrote there.
set -euo pipefail

cd "$(dirname "$0")/.."
CLUSTER_DIR=${CLUSTER_DIR:-target/cluster}
NATS_PORT=${NATS_PORT:-4222}
ROUTE_PORT=${ROUTE_PORT:-6222}
MON_PORT=${MON_PORT:-8222}
TICKFAN_PORT=${TICKFAN_PORT:-9001}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
# Unset: `start` builds the release binary first and runs it.
TICKFAN_BIN=${TICKFAN_BIN:-}

die() { echo "cluster.sh: $*" >&2; exit 1; }

# Waits up to $2 seconds for $1 (a command) to succeed.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  [ -x "$NATS_SERVER" ] || die "nats-server not found (apt-get install nats-server, or set NATS_SERVER)"
  for i in 0 1 2; do
    running "$CLUSTER_DIR/nats$i.pid" && die "already running (scripts/cluster.sh stop first)"
    running "$CLUSTER_DIR/tickfan$i.pid" && die "already running (scripts/cluster.sh stop first)"
  done
  if [ -z "$TICKFAN_BIN" ]; then
    cargo build --release --bin tickfan
    TICKFAN_BIN=target/release/tickfan
  fi
  mkdir -p "$CLUSTER_DIR"
  local routes="nats://127.0.0.1:$ROUTE_PORT,nats://127.0.0.1:$((ROUTE_PORT + 1)),nats://127.0.0.1:$((ROUTE_PORT + 2))"
  for i in 0 1 2; do
    "$NATS_SERVER" -a 127.0.0.1 -p $((NATS_PORT + i)) -m $((MON_PORT + i)) -js \
      -sd "$CLUSTER_DIR/store$i" -n "nats$i" --cluster_name tickfan \
      --cluster "nats://127.0.0.1:$((ROUTE_PORT + i))" --routes "$routes" \
      >"$CLUSTER_DIR/nats$i.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/nats$i.pid"
  done
  for i in 0 1 2; do
    wait_for "curl -sf http://127.0.0.1:$((MON_PORT + i))/healthz" 30 ||
      die "nats$i not healthy within 30 s (see $CLUSTER_DIR/nats$i.log)"
  done
  for i in 0 1 2; do
    rm -f "$CLUSTER_DIR/tickfan$i.ready"
    "$TICKFAN_BIN" --listen "127.0.0.1:$((TICKFAN_PORT + i))" \
      --cluster-nats "nats://127.0.0.1:$((NATS_PORT + i))" --set cluster.replicas=3 \
      --ready-file "$CLUSTER_DIR/tickfan$i.ready" "$@" \
      >"$CLUSTER_DIR/tickfan$i.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/tickfan$i.pid"
  done
  for i in 0 1 2; do
    wait_for "[ -f $CLUSTER_DIR/tickfan$i.ready ]" 60 ||
      die "tickfan$i not ready within 60 s (see $CLUSTER_DIR/tickfan$i.log)"
  done
  echo "cluster up: tickfan ws://127.0.0.1:$TICKFAN_PORT/ws, :$((TICKFAN_PORT + 1)), :$((TICKFAN_PORT + 2));" \
    "NATS nats://127.0.0.1:$NATS_PORT..$((NATS_PORT + 2)); logs in $CLUSTER_DIR"
}

stop() {
  local stopped=0
  for name in tickfan0 tickfan1 tickfan2 nats0 nats1 nats2; do
    local pidfile="$CLUSTER_DIR/$name.pid"
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait_for "! kill -0 $pid" 10 || kill -KILL "$pid" 2>/dev/null || true
      stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
  done
  echo "stopped $stopped processes"
}

status() {
  for name in nats0 nats1 nats2 tickfan0 tickfan1 tickfan2; do
    if running "$CLUSTER_DIR/$name.pid"; then
      echo "$name: running (pid $(cat "$CLUSTER_DIR/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: scripts/cluster.sh start [TICKFAN FLAGS...] | stop | status" ;;
esac
