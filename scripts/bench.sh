#!/usr/bin/env bash
# Named end-to-end benchmarks of tickfan (and its peers) on loopback.
#
#   scripts/bench.sh SCENARIO
#
# SCENARIO:
#   broadcast       1 topic, 100 / 1,000 / 10,000 WebSocket subscribers, ~100-byte
#                   ticks: the highest publish rate with delivery >= 0.999 (flat-out
#                   run, then a short bounded bisection), then a run at 50% of it;
#                   with several TARGETS, each peer and tickfan also run at half
#                   the lower of their two maxima ("same-rate vs PEER" rows)
#   ws-vs-longpoll  100 topics, 1,000 clients on one topic each, 10 ticks/s per topic
#                   (1,000 ticks/s aggregate), over WebSocket then long-poll; then the
#                   highest aggregate rate each sustains with delivery >= 0.999
#                   (peers without a long-poll route run the WebSocket half only)
#   batching        the candidates for batching that follows load, side by side:
#                   1 topic x 1,000 subscribers at each of BATCH_RATES, uWebSockets,
#                   the BASE_BIN build (if set) and tickfan with each of
#                   BATCH_VARIANTS ("label:--set key=value ..." entries)
#   idle            15,000 subscribed idle WebSocket connections, nothing published:
#                   broker RSS per connection and idle CPU over 10 s
#   market          2,000 symbols, 5,000 subscribers with 20 Zipf-chosen symbols
#                   each, 20,000 ticks/s aggregate (round robin over the symbols),
#                   then the highest aggregate rate with delivery >= 0.999; for
#                   each of MARKET_TARGETS (tickfan uws nats)
#   peers           broadcast at 1,000 subscribers for tickfan and the peers (with
#                   the same-rate runs), and ws-vs-longpoll for tickfan and nchan
#   flush           the latency/CPU trade-off of tickfan's --flush-interval-ms:
#                   1 topic x 1,000 subscribers at fixed rates, uWebSockets then
#                   tickfan with each interval, at the same rate
#   wss             TLS: broadcast at 1,000 subscribers (SUBS) for tickfan over ws,
#                   tickfan over wss and uWebSockets' SSLApp over wss (highest rate
#                   with delivery >= 0.999, then all three at half the lowest max);
#                   15,000 idle wss subscribers (IDLE_CONNS); full TLS handshakes
#                   per second against one broker core (openssl s_time, new sessions)
#   deflate         permessage-deflate: 1 topic x 1,000 subscribers at DEFLATE_RATE
#                   ticks/s of ~300-byte quotes, then of ~2 KB order books; for
#                   each, tickfan plain and with deflate offered (--deflate), and
#                   uWebSockets with --compression off, shared and dedicated: wire
#                   bytes per tick and broker CPU per delivered tick side by side;
#                   then the highest rate with delivery >= 0.999 of quotes for
#                   tickfan plain, tickfan with deflate and uWebSockets shared
#   cluster         cluster mode through NATS JetStream (three nats-servers, R3):
#                   broadcast at 1,000 subscribers (highest rate with delivery
#                   >= 0.999) for a single node and for a cluster node, in the
#                   same run; publish-to-delivery latency through the engine at
#                   CLUSTER_LATENCY_RATES ticks/s (CLUSTER_LATENCY_SUBS
#                   subscribers); the highest ingest one node gets into the
#                   R3 stream (1 subscriber)
#
# Builds release; starts tickfan (one worker) and/or the peers
# (../shared/peers/peers.sh, or $PEERS_DIR/peers.sh; `install` first if missing);
# pins the broker to core 0 and tickfan-load to core 1 with taskset; stops by pid
# (or with peers.sh stop) only what it started; writes
#   benches/results/SCENARIO.json  .md  .svg
# and keeps raw per-run JSON and logs under benches/results/tmp/ (not committed).
#
# Environment:
#   TARGETS="tickfan uws"  targets for broadcast / ws-vs-longpoll (peers: all of
#                          tickfan uws nchan ws nats; set to narrow)
#   SUBS="100 1000"        subscriber counts for broadcast
#   DURATION=5             seconds measured in the reported runs
#   SEARCH_DURATION=3      seconds measured in each search run
#   SEARCH_STEPS=5         search runs after the flat-out one
#   INGEST_STEPS=10        search runs of the cluster scenario's one-subscriber ingest
#   IDLE_CONNS=15000  MARKET_SUBS=5000  MARKET_TOPICS=2000  MARKET_RATE=20000
#   PEER_WORKERS=1         (nchan stays at its config's worker_processes 1)
#   PACED_FLUSH_MS=20      tickfan's --flush-interval-ms in the paced same-rate runs
#   FLUSH_RATES="300 1500" FLUSH_MS="0 10 20 50" FLUSH_PEER=uws  (flush scenario)
#   DEFLATE_RATE=200  DEFLATE_SHAPES="quote book"  DEFLATE_PEER_MODES="off shared dedicated"
#                          (deflate scenario; DEFLATE_PEER_MODES="" skips uWebSockets)
#   NICE=N                 run broker and tickfan-load at nice N (root: e.g. -5)
#   TICKFAN_BIN=PATH       the tickfan binary measured (default target/release/tickfan)
#   BASE_BIN=PATH          another build, measured as target "base" (before/after in
#                          one run: TARGETS="base tickfan", MARKET_TARGETS="base tickfan")
#   MARKET_TARGETS="tickfan"  BATCH_RATES="746 3000"
# The machine has 2 cores and may be shared: every run records the other
# processes' CPU ("other_processes_cpu_pct"); treat figures as noisy.
set -euo pipefail

SCENARIO=${1:-}
case $SCENARIO in
    broadcast | ws-vs-longpoll | idle | market | peers | flush | wss | deflate | batching | cluster) ;;
    *)
        sed -n '2,50p' "$0" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
DURATION=${DURATION:-5}
SEARCH_DURATION=${SEARCH_DURATION:-3}
SEARCH_STEPS=${SEARCH_STEPS:-5}
RESULTS=benches/results
TMP=$RESULTS/tmp/$SCENARIO-$(date +%Y%m%d-%H%M%S)
mkdir -p "$TMP"
ROWS=$TMP/rows.jsonl
: >"$ROWS"

cargo build --release --quiet -p tickfan -p tickfan-load
# One process holds at most ~19,900 sockets here; the hard limit is 20,000.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(id -u)" = 0 ] && ! [ -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

nice_cmd=()
[ -n "${NICE:-}" ] && nice_cmd=(nice -n "$NICE")

log() { echo "bench: $*" >&2; }

# ---- brokers -----------------------------------------------------------------

broker_pid= # the pid measured (tickfan, node, nats-server, nginx worker)
tickfan_pid=
peers_started=() # peers this script started, stopped on exit
addr=

port_of() {
    case $1 in
        nchan) echo 8081 ;; nats) echo 8082 ;; uws) echo 8085 ;; ws) echo 8086 ;;
    esac
}

listening() { ss -ltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }

# Stops a broker this script started: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
}

stop_tickfan() {
    stop_pid "$tickfan_pid"
    tickfan_pid=
}

stop_peers() {
    local p
    for p in "${peers_started[@]}"; do
        "$PEERS_DIR/peers.sh" stop "$p" >/dev/null 2>&1 || true
        # nginx -s stop returns before the port is free; wait (bounded).
        for _ in $(seq 50); do
            listening "$(port_of "$p")" || break
            sleep 0.1
        done
    done
    peers_started=()
}

nats_pids=() # the nats-servers the cluster scenario started

stop_nats() {
    local pid
    for pid in "${nats_pids[@]}"; do stop_pid "$pid"; done
    nats_pids=()
}

cleanup() {
    stop_tickfan
    stop_nats
    stop_peers
    stop_uws_custom
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tls_addr= # tickfan's TLS listener, when start_tickfan was given --tls-listen
TICKFAN_BIN=${TICKFAN_BIN:-target/release/tickfan}

start_tickfan() { # start_tickfan [EXTRA BROKER FLAGS...]
    local blog=$TMP/tickfan-$RANDOM.log
    "${nice_cmd[@]}" taskset -c 0 "${BIN:-$TICKFAN_BIN}" --listen 127.0.0.1:0 --workers 1 \
        --max-queue-bytes 4194304 --max-connections 19500 --max-messages-per-sec 0 \
        --shutdown-grace-ms 500 "$@" 2>"$blog" &
    tickfan_pid=$!
    local port=
    # 5 s, or START_STEPS x 50 ms (a cluster node binds its stream first).
    for _ in $(seq "${START_STEPS:-100}"); do
        port=$(sed -n 's/.*tickfan listening listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$blog" | head -n1)
        [ -n "$port" ] && break
        kill -0 "$tickfan_pid" 2>/dev/null || { cat "$blog" >&2; return 1; }
        sleep 0.05
    done
    [ -n "$port" ] || { cat "$blog" >&2; return 1; }
    addr=127.0.0.1:$port
    tls_addr=$(sed -n 's/.*tickfan listening.* tls=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$blog" | head -n1)
    broker_pid=$tickfan_pid
}

ensure_peers_installed() {
    if command -v nginx >/dev/null && command -v nats-server >/dev/null \
        && [ -d "$PEERS_DIR/node/node_modules/uwebsockets" ] \
        && [ -d "$PEERS_DIR/node/node_modules/ws" ]; then
        return 0
    fi
    log "installing peers ($PEERS_DIR/peers.sh install)"
    "$PEERS_DIR/peers.sh" install >"$TMP/peers-install.log" 2>&1
}

# Pins every thread of pid $1 and of its children to core 0.
pin_tree() {
    local pid=$1 child
    taskset -a -pc 0 "$pid" >/dev/null 2>&1 || true
    for child in $(pgrep -P "$pid" || true); do
        taskset -a -pc 0 "$child" >/dev/null 2>&1 || true
    done
}

start_peer() {
    local name=$1 port pidfile pid
    port=$(port_of "$name")
    ensure_peers_installed
    if listening "$port"; then
        log "port $port is already in use; not starting $name (someone else's?)"
        return 1
    fi
    "$PEERS_DIR/peers.sh" start "$name" >"$TMP/peer-$name.log" 2>&1 || true
    peers_started+=("$name")
    for _ in $(seq 50); do
        listening "$port" && break
        sleep 0.1
    done
    listening "$port" || { log "$name did not start"; return 1; }
    case $name in
        nchan) pidfile=$PEERS_DIR/nchan/run/nginx.pid ;;
        nats) pidfile=$PEERS_DIR/nats/run/nats.bgpid ;;
        uws) pidfile=$PEERS_DIR/node/run/uws.pid ;;
        ws) pidfile=$PEERS_DIR/node/run/ws.pid ;;
    esac
    pid=$(cat "$pidfile")
    pin_tree "$pid"
    broker_pid=$pid
    if [ "$name" = nchan ]; then
        # The worker does the work; the master only supervises.
        broker_pid=$(pgrep -P "$pid" | head -n1)
    fi
    addr=127.0.0.1:$port
}

start_target() {
    case $1 in
        tickfan) start_tickfan ;;
        base) BIN=${BASE_BIN:?BASE_BIN names the build measured as target base} start_tickfan ;;
        *) start_peer "$1" ;;
    esac
}

stop_target() {
    case $1 in tickfan | base) stop_tickfan ;; *) stop_peers ;; esac
}

# The dialect tickfan-load speaks to a target ("base" is a tickfan build).
load_target() {
    case $1 in base) echo tickfan ;; *) echo "$1" ;; esac
}

# ---- runs --------------------------------------------------------------------

# run_load TARGET OUTJSON ARGS...: one tickfan-load run against $addr.
run_load() {
    local target=$1 out=$2
    shift 2
    local rlog=${out%.json}.log
    if ! timeout 600 "${nice_cmd[@]}" taskset -c 1 target/release/tickfan-load \
        --target "$(load_target "$target")" \
        --addr "$addr" --broker-pid "$broker_pid" --json "$out" "$@" >"$rlog" 2>&1; then
        log "run failed: $target $*"
        tail -n 5 "$rlog" >&2
        return 1
    fi
    grep -E "delivered in window|delivery ratio|latency|other processes" "$rlog" | sed 's/^/    /' >&2
}

# ok JSON RATE: delivery >= 0.999 and the publisher kept (97% of) the pace.
ok() {
    jq -e --argjson rate "$2" \
        '(.delivered.ratio // 0) >= 0.999 and ($rate == 0 or .published.per_s >= 0.97 * $rate)' \
        "$1" >/dev/null
}

# search NAME TARGET ARGS...: the highest paced publish rate with delivery
# >= 0.999, bounded to 1 + SEARCH_STEPS runs. A flat-out run first: if it
# passes, its rate is the floor and paced runs try above it (the answer is
# marked flat out when none beat it). Otherwise its delivered rate over the average fan-out
# estimates the capacity; the search starts at 90% of that, doubles or
# halves until it has a passing and a failing rate, then bisects. Prints
# "RATE FLAT(0|1)"; the best run's JSON is left at $TMP/NAME-best.json.
# KNOWN_OK=RATE:JSON names a run already known to pass: the search starts
# above it when the estimate is lower.
search() {
    local name=$1 target=$2
    shift 2
    local common=(--warmup 1 --duration "$SEARCH_DURATION" --drain 1 "$@")
    local flat=$TMP/$name-flat.json
    log "$name: flat out"
    run_load "$target" "$flat" --rate 0 "${common[@]}" || { echo "0 0"; return 0; }
    local lo=0 hi=0 step rate flat_ok=0
    if ok "$flat" 0; then
        # A paced publisher can get more in than a flat-out one (which
        # queues behind the broker's reads): keep searching above it.
        cp "$flat" "$TMP/$name-best.json"
        flat_ok=$(jq '.published.per_s | floor' "$flat")
    fi
    # Overloaded flat out, a broker may deliver next to nothing in the
    # window (tickfan at 10,000 subscribers did): never start below
    # 100,000 deliveries/s, under what a broker writing one tick per
    # syscall does on these machines (DESIGN.md: 150-200k).
    rate=$(jq '(.delivered.expected_total / ([.published.total, 1] | max)) as $fanout
        | [(.delivered.per_s / ([$fanout, 1] | max)) * 0.9, 100000 / ([$fanout, 1] | max), 1]
        | max | floor' "$flat")
    if [ "$flat_ok" -gt 0 ]; then
        lo=$flat_ok
        [ "$rate" -gt "$lo" ] || rate=$((lo * 2 + 1))
    elif [ -n "${KNOWN_OK:-}" ] && [ "${KNOWN_OK%%:*}" -ge "$rate" ]; then
        lo=${KNOWN_OK%%:*}
        cp "${KNOWN_OK#*:}" "$TMP/$name-best.json"
        rate=$((lo * 3 / 2 + 1))
    fi
    for step in $(seq "$SEARCH_STEPS"); do
        local out=$TMP/$name-$step.json
        log "$name: rate $rate (passing $lo, failing ${hi/#0/-})"
        if run_load "$target" "$out" --rate "$rate" "${common[@]}" && ok "$out" "$rate"; then
            lo=$rate
            cp "$out" "$TMP/$name-best.json"
        else
            hi=$rate
        fi
        if [ "$hi" = 0 ]; then
            rate=$((rate * 2 + 1))
        elif [ "$lo" = 0 ]; then
            rate=$((rate / 2))
            [ "$rate" -ge 1 ] || break
        else
            rate=$(((lo + hi) / 2))
            # Within 3%: close enough for a noisy machine.
            [ $(((hi - lo) * 100)) -gt $((lo * 3)) ] || break
        fi
    done
    if [ "$flat_ok" -gt 0 ] && [ "$lo" = "$flat_ok" ]; then
        echo "$lo 1"
    else
        echo "$lo 0"
    fi
}

# row PART TARGET TRANSPORT CLIENTS TOPICS RATE "MAX FLAT" REPORT_JSON [BEST_JSON]
row() {
    local best=${9:-} max flat
    read -r max flat <<<"$7"
    [ -n "$best" ] && [ -f "$best" ] || best=
    jq -c --arg part "$1" --arg target "$2" --arg transport "$3" \
        --argjson clients "$4" --argjson topics "$5" --argjson rate "$6" --argjson max "$max" \
        --argjson flat "${flat:-0}" --slurpfile best "${best:-/dev/null}" \
        '{part: $part, target: $target, transport: $transport, clients: $clients,
          topics: $topics, rate: $rate, max_rate: $max, max_is_flat_out: ($flat == 1),
          report: ., at_max: ($best[0] // null)}' "$8" >>"$ROWS"
}

# ---- scenarios ---------------------------------------------------------------

declare -A MAX_RATE # "TARGET SUBS" -> the broadcast search's max rate

broadcast() { # broadcast TARGET SUBS
    local target=$1 subs=$2 name=broadcast-$1-$2
    start_target "$target" || return 0
    local args=(--subscribers "$subs" --topics 1 --threads 1)
    local found max
    found=$(search "$name" "$target" "${args[@]}")
    max=${found% *}
    MAX_RATE["$target $subs"]=$max
    local half=$((max / 2))
    if [ "$half" -gt 0 ]; then
        log "$name: at 50% of $max = $half ticks/s"
        run_load "$target" "$TMP/$name-half.json" --rate "$half" --warmup 2 \
            --duration "$DURATION" --drain 1 "${args[@]}" \
            && row broadcast "$target" ws "$subs" 1 "$half" "$found" \
                "$TMP/$name-half.json" "$TMP/$name-best.json"
    fi
    stop_target "$target"
}

# same_rate SUBS PEERS...: for each peer that has a broadcast max, runs the
# peer, tickfan as configured by default, and tickfan with
# --flush-interval-ms $PACED_FLUSH_MS (row target "tickfan flush=N ms") at
# half the lower of the two maxima, so broker CPU per delivered tick and
# latency are compared at one rate (the brief's comparison; at each one's
# own 50% the faster broker is measured at a higher rate).
same_rate() {
    local subs=$1 peer variant
    shift
    local mine=${MAX_RATE["tickfan $subs"]:-0} paced=${PACED_FLUSH_MS:-20}
    for peer in "$@"; do
        local theirs=${MAX_RATE["$peer $subs"]:-0}
        [ "$peer" != tickfan ] && [ "$mine" -gt 0 ] && [ "$theirs" -gt 0 ] || continue
        local rate=$((($mine < $theirs ? $mine : $theirs) / 2))
        [ "$rate" -gt 0 ] || continue
        for variant in "$peer" tickfan tickfan-paced; do
            local name=same-rate-$peer-$variant-$subs target=$variant label=$variant
            case $variant in
                tickfan-paced)
                    target=tickfan label="tickfan flush=$paced ms"
                    start_tickfan --flush-interval-ms "$paced" || continue
                    ;;
                *) start_target "$variant" || continue ;;
            esac
            log "$name: $rate ticks/s, the same for $peer and tickfan"
            run_load "$target" "$TMP/$name.json" --rate "$rate" --warmup 2 \
                --duration "$DURATION" --drain 1 --subscribers "$subs" --topics 1 --threads 1 \
                && row "same-rate vs $peer" "$label" ws "$subs" 1 "$rate" null "$TMP/$name.json"
            stop_target "$target"
        done
    done
}

ws_vs_longpoll() { # ws_vs_longpoll TARGET
    local target=$1 transport
    for transport in ws longpoll; do
        case $transport:$target in longpoll:uws | longpoll:nats | longpoll:ws) continue ;; esac
        local name=wsvlp-$target-$transport
        local args=(--topics 100)
        if [ "$transport" = ws ]; then
            args+=(--subscribers 1000)
        else
            args+=(--subscribers 0 --longpoll 1000)
        fi
        start_target "$target" || return 0
        log "$name: 1,000 ticks/s over 100 topics"
        run_load "$target" "$TMP/$name-fixed.json" --rate 1000 --warmup 2 \
            --duration "$DURATION" --drain 1 "${args[@]}" || { stop_target "$target"; continue; }
        local found known=
        ok "$TMP/$name-fixed.json" 1000 && known=1000:$TMP/$name-fixed.json
        found=$(KNOWN_OK=$known search "$name" "$target" "${args[@]}")
        row ws-vs-longpoll "$target" "$transport" 1000 100 1000 "$found" \
            "$TMP/$name-fixed.json" "$TMP/$name-best.json"
        stop_target "$target"
    done
}

idle() {
    local conns=${IDLE_CONNS:-15000}
    start_tickfan
    log "idle: $conns connections, nothing published, 10 s"
    run_load tickfan "$TMP/idle.json" --no-publish --subscribers "$conns" --warmup 1 \
        --duration 10 --drain 0 --setup-timeout 120 \
        && row idle tickfan ws "$conns" 1 0 null "$TMP/idle.json"
    stop_tickfan
}

market() {
    local subs=${MARKET_SUBS:-5000} topics=${MARKET_TOPICS:-2000} rate=${MARKET_RATE:-20000} target
    local args=(--subscribers "$subs" --topics "$topics" --zipf-per-client 20 --setup-timeout 120)
    for target in ${MARKET_TARGETS:-tickfan}; do
        local name=market-$target
        start_target "$target" || continue
        log "$name: $topics symbols, $subs subscribers x 20 Zipf symbols, $rate ticks/s"
        run_load "$target" "$TMP/$name.json" --rate "$rate" --warmup 2 --duration "$DURATION" \
            --drain 2 "${args[@]}" || { stop_target "$target"; continue; }
        local found known=
        ok "$TMP/$name.json" "$rate" && known=$rate:$TMP/$name.json
        found=$(KNOWN_OK=$known search "$name" "$target" "${args[@]}")
        row market "$target" ws "$subs" "$topics" "$rate" "$found" "$TMP/$name.json" \
            "$TMP/$name-best.json"
        stop_target "$target"
    done
}

# batching: for each rate, the peer, the base build and each tickfan variant.
batching() {
    local rate variant label flags
    local args=(--warmup 2 --duration "$DURATION" --drain 1 --subscribers 1000 --topics 1 --threads 1)
    local variants=${BATCH_VARIANTS:-"immediate:--set broker.max_batch_delay_ms=0
sweep 5 ms (default):
sweep 10 ms:--set broker.max_batch_delay_ms=10
connection 5 ms:--set broker.batching=connection
fixed flush=20 ms:--flush-interval-ms 20"}
    for rate in ${BATCH_RATES:-746 3000}; do
        for peer in uws ${BASE_BIN:+base}; do
            start_target "$peer" || continue
            log "batching: $peer at $rate ticks/s"
            run_load "$peer" "$TMP/batching-$rate-$peer.json" --rate "$rate" "${args[@]}" \
                && row "batching at $rate/s" "$peer" ws 1000 1 "$rate" null \
                    "$TMP/batching-$rate-$peer.json"
            stop_target "$peer"
        done
        while IFS= read -r variant; do
            label=${variant%%:*} flags=${variant#*:}
            # shellcheck disable=SC2086 # flags are words
            start_tickfan $flags || continue
            local out=$TMP/batching-$rate-${label//[^a-z0-9]/_}.json
            log "batching: tickfan $label at $rate ticks/s"
            run_load tickfan "$out" --rate "$rate" "${args[@]}" \
                && row "batching at $rate/s" "tickfan $label" ws 1000 1 "$rate" null "$out"
            stop_tickfan
        done <<<"$variants"
    done
}

# flush: for each rate, the peer and then tickfan with each flush interval.
flush() {
    local rate ms peer=${FLUSH_PEER:-uws}
    local args=(--warmup 2 --duration "$DURATION" --drain 1 --subscribers 1000 --topics 1 --threads 1)
    for rate in ${FLUSH_RATES:-300 1500}; do
        if [ -n "$peer" ] && start_peer "$peer"; then
            log "flush: $peer at $rate ticks/s"
            run_load "$peer" "$TMP/flush-$rate-$peer.json" --rate "$rate" "${args[@]}" \
                && row "flush at $rate/s" "$peer" ws 1000 1 "$rate" null "$TMP/flush-$rate-$peer.json"
            stop_peers
        fi
        for ms in ${FLUSH_MS:-0 10 20 50}; do
            start_tickfan --flush-interval-ms "$ms" || continue
            log "flush: tickfan --flush-interval-ms $ms at $rate ticks/s"
            run_load tickfan "$TMP/flush-$rate-$ms.json" --rate "$rate" "${args[@]}" \
                && row "flush at $rate/s" "tickfan flush=$ms ms" ws 1000 1 "$rate" null \
                    "$TMP/flush-$rate-$ms.json"
            stop_tickfan
        done
    done
}

# ---- uWebSockets with flags peers.sh does not pass ----------------------------

uws_custom_pid=

# start_uws_custom LOGNAME ARGS...: uWebSockets (uws-broker.js) on its port
# with ARGS (--tls CERT KEY, --compression MODE), pinned like every broker
# and at the same NICE; stopped by its pid.
start_uws_custom() {
    local name=$1 port
    shift
    port=$(port_of uws)
    ensure_peers_installed
    if listening "$port"; then
        log "port $port is already in use; not starting uws $* (someone else's?)"
        return 1
    fi
    (cd "$PEERS_DIR/node" && exec "${nice_cmd[@]}" taskset -c 0 node uws-broker.js "$port" "$@") \
        >"$TMP/uws-$name.log" 2>&1 &
    uws_custom_pid=$!
    for _ in $(seq 50); do
        listening "$port" && break
        sleep 0.1
    done
    listening "$port" || { log "uws $* did not start"; return 1; }
    broker_pid=$uws_custom_pid
    addr=127.0.0.1:$port
}

stop_uws_custom() {
    stop_pid "$uws_custom_pid"
    uws_custom_pid=
    for _ in $(seq 50); do
        listening "$(port_of uws)" || break
        sleep 0.1
    done
}

# ---- wss ---------------------------------------------------------------------

cert=$ROOT/$TMP/cert.pem
key=$ROOT/$TMP/key.pem
make_cert() {
    [ -f "$cert" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$key" -out "$cert" 2>/dev/null
}

start_tickfan_tls() {
    start_tickfan --tls-listen 127.0.0.1:0 --tls-cert "$cert" --tls-key "$key"
}

# wss_variant VARIANT: starts the broker of one variant (tickfan-ws,
# tickfan-wss, uws-wss); sets $addr and the dialect and TLS flags of its runs.
wss_dialect=
wss_flags=()
start_wss_variant() {
    case $1 in
        tickfan-ws) start_tickfan_tls || return 1; wss_dialect=tickfan; wss_flags=() ;;
        tickfan-wss)
            start_tickfan_tls || return 1
            addr=$tls_addr wss_dialect=tickfan wss_flags=(--tls-ca "$cert")
            ;;
        uws-wss)
            start_uws_custom tls --tls "$cert" "$key" || return 1
            wss_dialect=uws wss_flags=(--tls-ca "$cert")
            ;;
    esac
}

stop_wss_variant() {
    case $1 in
        uws-wss) stop_uws_custom ;;
        *) stop_tickfan ;;
    esac
}

wss() {
    local subs=${SUBS:-1000} variant
    make_cert
    declare -A wss_max
    local args=(--subscribers "$subs" --topics 1 --threads 1)
    for variant in tickfan-ws tickfan-wss uws-wss; do
        start_wss_variant "$variant" || continue
        local name=wss-$variant-$subs found
        found=$(search "$name" "$wss_dialect" "${args[@]}" "${wss_flags[@]}")
        wss_max[$variant]=${found% *}
        row "broadcast over TLS" "${variant%-*}" "${variant##*-}" "$subs" 1 "${found% *}" "$found" \
            "$TMP/$name-best.json" "$TMP/$name-best.json"
        stop_wss_variant "$variant"
    done
    # All three at one rate, half the lowest maximum: broker CPU per tick.
    local low=0
    for variant in tickfan-ws tickfan-wss uws-wss; do
        local m=${wss_max[$variant]:-0}
        [ "$m" -gt 0 ] && { [ "$low" = 0 ] || [ "$m" -lt "$low" ]; } && low=$m
    done
    local rate=$((low / 2))
    if [ "$rate" -gt 0 ]; then
        for variant in tickfan-ws tickfan-wss uws-wss; do
            start_wss_variant "$variant" || continue
            local name=wss-same-$variant-$subs
            log "$name: $rate ticks/s"
            run_load "$wss_dialect" "$TMP/$name.json" --rate "$rate" --warmup 2 \
                --duration "$DURATION" --drain 1 "${args[@]}" "${wss_flags[@]}" \
                && row "same rate over TLS" "${variant%-*}" "${variant##*-}" "$subs" 1 "$rate" null \
                    "$TMP/$name.json"
            stop_wss_variant "$variant"
        done
    fi
    # Idle wss subscribers: broker RSS per connection.
    local conns=${IDLE_CONNS:-15000}
    for variant in tickfan-ws tickfan-wss; do
        start_wss_variant "$variant" || continue
        log "idle over ${variant##*-}: $conns connections, nothing published, 10 s"
        run_load tickfan "$TMP/idle-$variant.json" --no-publish --subscribers "$conns" \
            --warmup 1 --duration 10 --drain 0 --setup-timeout 180 "${wss_flags[@]}" \
            && row idle tickfan "${variant##*-}" "$conns" 1 0 null "$TMP/idle-$variant.json"
        stop_wss_variant "$variant"
    done
    # Full TLS handshakes: openssl s_time (core 1) opens a new session per
    # connection for 10 s; the broker (core 0) does the server side.
    for variant in tickfan-wss uws-wss; do
        start_wss_variant "$variant" || continue
        local before after out=$TMP/handshakes-$variant.txt
        before=$(awk '{print $14 + $15}' "/proc/$broker_pid/stat")
        timeout 60 taskset -c 1 openssl s_time -connect "$addr" -new -time 10 -CAfile "$cert" \
            >"$out" 2>&1 || true
        after=$(awk '{print $14 + $15}' "/proc/$broker_pid/stat")
        local cpu=$((after - before))
        log "handshakes $variant: $(grep -E 'real seconds' "$out" | tail -n1); broker CPU ticks $cpu"
        jq -cn --arg target "${variant%-*}" --arg line "$(grep -E 'connections in .* real seconds' "$out" | tail -n1)" \
            --argjson cpu_ticks "$cpu" --argjson hz "$(getconf CLK_TCK)" \
            '{part: "TLS handshakes", target: $target, transport: "wss", openssl_s_time: $line,
              connections: ($line | capture("^(?<n>[0-9]+) connections in (?<s>[0-9]+) real") | .n | tonumber),
              seconds: ($line | capture("^(?<n>[0-9]+) connections in (?<s>[0-9]+) real") | .s | tonumber),
              broker_cpu_s: ($cpu_ticks / $hz)}
             | .per_s = (.connections / .seconds) | .per_broker_cpu_s = (.connections / ([.broker_cpu_s, 0.001] | max))' \
            >>"$TMP/handshakes.jsonl" || true
        stop_wss_variant "$variant"
    done
}

# deflate: per tick shape, tickfan plain and with deflate, then uWebSockets
# per compression mode, all at one fixed rate.
deflate() {
    local rate=${DEFLATE_RATE:-200} shape mode
    local args=(--warmup 2 --duration "$DURATION" --drain 1 --subscribers 1000 --topics 1
        --threads 1 --rate "$rate")
    for shape in ${DEFLATE_SHAPES:-quote book}; do
        if start_tickfan; then
            log "deflate: tickfan plain, $shape ticks at $rate/s"
            run_load tickfan "$TMP/deflate-$shape-tickfan.json" "${args[@]}" --tick-shape "$shape" \
                && row "deflate $shape" "tickfan plain" ws 1000 1 "$rate" null \
                    "$TMP/deflate-$shape-tickfan.json"
            log "deflate: tickfan deflate, $shape ticks at $rate/s"
            run_load tickfan "$TMP/deflate-$shape-tickfan-deflate.json" "${args[@]}" \
                --tick-shape "$shape" --deflate \
                && row "deflate $shape" "tickfan deflate" ws 1000 1 "$rate" null \
                    "$TMP/deflate-$shape-tickfan-deflate.json"
            stop_tickfan
        fi
        for mode in ${DEFLATE_PEER_MODES-off shared dedicated}; do
            start_uws_custom "$mode" --compression "$mode" || { stop_uws_custom; continue; }
            log "deflate: uws --compression $mode, $shape ticks at $rate/s"
            run_load uws "$TMP/deflate-$shape-uws-$mode.json" "${args[@]}" --tick-shape "$shape" \
                --deflate \
                && row "deflate $shape" "uws $mode" ws 1000 1 "$rate" null \
                    "$TMP/deflate-$shape-uws-$mode.json"
            stop_uws_custom
        done
    done
    # Highest rates of ~300-byte quotes: compression once per publish
    # (tickfan) against once per subscriber (uWebSockets).
    local max_args=(--subscribers 1000 --topics 1 --threads 1 --tick-shape quote)
    local variant
    for variant in "tickfan plain" "tickfan deflate" "uws shared"; do
        local name=deflate-max-${variant// /-} dialect=tickfan flags=()
        case $variant in
            "tickfan plain") start_tickfan || continue ;;
            "tickfan deflate") start_tickfan || continue; flags=(--deflate) ;;
            "uws shared")
                start_uws_custom shared-max --compression shared || { stop_uws_custom; continue; }
                dialect=uws flags=(--deflate)
                ;;
        esac
        local found
        found=$(search "$name" "$dialect" "${max_args[@]}" "${flags[@]}")
        row "deflate quote max" "$variant" ws 1000 1 "${found% *}" "$found" \
            "$TMP/$name-best.json" "$TMP/$name-best.json"
        case $variant in uws*) stop_uws_custom ;; *) stop_tickfan ;; esac
    done
}

# A free loopback port (bound, then released).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

nats_url= # a client URL of the cluster the scenario started

# Three nats-servers clustered with JetStream, stores under $TMP; waits for
# their /healthz.
start_nats_cluster() {
    local bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
    [ -x "$bin" ] || { log "nats-server not found"; return 1; }
    local i ports=() routes=""
    for i in 0 1 2; do
        ports+=("$(free_port) $(free_port) $(free_port)")
    done
    for i in 0 1 2; do
        read -r _ route _ <<<"${ports[$i]}"
        routes+="${routes:+,}nats://127.0.0.1:$route"
    done
    for i in 0 1 2; do
        local client route mon
        read -r client route mon <<<"${ports[$i]}"
        "$bin" -a 127.0.0.1 -p "$client" -m "$mon" -js -sd "$TMP/nats$i" -n "bench$i" \
            --cluster_name bench --cluster "nats://127.0.0.1:$route" --routes "$routes" \
            >"$TMP/nats$i.log" 2>&1 &
        nats_pids+=($!)
        [ "$i" = 0 ] && nats_url=nats://127.0.0.1:$client
    done
    for i in 0 1 2; do
        local mon
        read -r _ _ mon <<<"${ports[$i]}"
        for _ in $(seq 150); do
            curl -sf "http://127.0.0.1:$mon/healthz" >/dev/null && break
            sleep 0.2
        done
    done
}

# A cluster node: R3 through the first server, up to a minute to bind the
# stream and catch up before it listens.
start_cluster_node() {
    START_STEPS=1200 start_tickfan --cluster-nats "$nats_url" --set cluster.replicas=3 "$@"
}

# cluster_rows PART LABEL SUBS [ARGS...]: `search` against the tickfan
# running now (single node or cluster node), then its row at the max.
cluster_rows() {
    local part=$1 label=$2 subs=$3
    shift 3
    local found max
    found=$(search "cluster-$part" tickfan --subscribers "$subs" --topics 1 --threads 1 "$@")
    max=${found% *}
    [ -f "$TMP/cluster-$part-best.json" ] &&
        row "$part" "$label" ws "$subs" 1 "$max" "$found" \
            "$TMP/cluster-$part-best.json" "$TMP/cluster-$part-best.json"
}

cluster() {
    start_nats_cluster || return 0
    start_tickfan || return 0
    cluster_rows "broadcast 1000" "tickfan single node" 1000
    stop_tickfan
    start_cluster_node || { stop_nats; return 0; }
    cluster_rows "broadcast 1000" "tickfan cluster node (R3)" 1000
    local rate subs=${CLUSTER_LATENCY_SUBS:-100}
    for rate in ${CLUSTER_LATENCY_RATES:-1000 10000}; do
        log "cluster: latency at $rate ticks/s, $subs subscribers"
        run_load tickfan "$TMP/cluster-latency-$rate.json" --rate "$rate" --warmup 2 \
            --duration "$DURATION" --drain 1 --subscribers "$subs" --topics 1 --threads 1 &&
            row "latency $rate/s" "tickfan cluster node (R3)" ws "$subs" 1 "$rate" "$rate 0" \
                "$TMP/cluster-latency-$rate.json"
    done
    # One subscriber: the search starts at 100,000 ticks/s and halves, so
    # it needs more steps than a fan-out search to close in within 3%.
    SEARCH_STEPS=${INGEST_STEPS:-10} cluster_rows "ingest" "tickfan cluster node (R3)" 1
    stop_tickfan
    stop_nats
}

case $SCENARIO in
    cluster) cluster ;;
    wss) wss ;;
    deflate) deflate ;;
    flush) flush ;;
    batching) batching ;;
    broadcast)
        for t in ${TARGETS:-tickfan}; do
            for s in ${SUBS:-100 1000 10000}; do broadcast "$t" "$s"; done
        done
        for s in ${SUBS:-100 1000 10000}; do same_rate "$s" ${TARGETS:-tickfan}; done
        ;;
    ws-vs-longpoll)
        for t in ${TARGETS:-tickfan}; do ws_vs_longpoll "$t"; done
        ;;
    idle) idle ;;
    market) market ;;
    peers)
        for t in ${TARGETS:-tickfan uws nchan ws nats}; do broadcast "$t" 1000; done
        same_rate 1000 ${TARGETS:-tickfan uws nchan ws nats}
        for t in ${TARGETS:-tickfan nchan}; do
            case $t in tickfan | nchan) ws_vs_longpoll "$t" ;; esac
        done
        ;;
esac

# ---- results -----------------------------------------------------------------

machine=$(jq -n --arg cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)" \
    --argjson cores "$(nproc)" --arg kernel "$(uname -r)" \
    '{cpu: $cpu, cores: $cores, kernel: $kernel}')
jq -s --arg scenario "$SCENARIO" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg commit "$(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)" \
    --argjson machine "$machine" --argjson runs "$(find "$TMP" -name "*.json" | wc -l)" \
    '{scenario: $scenario, date: $date, commit: $commit, machine: $machine,
      ceiling_ticks_per_s: 9.5e6, runs: $runs,
      note: "2-core VM shared with other work: see other_processes_cpu_pct per run; figures are noisy",
      rows: .}' "$ROWS" >"$RESULTS/$SCENARIO.json"
if [ -s "$TMP/handshakes.jsonl" ]; then
    jq --slurpfile hs "$TMP/handshakes.jsonl" '.tls_handshakes = $hs' "$RESULTS/$SCENARIO.json" \
        >"$TMP/with-handshakes.json" && mv "$TMP/with-handshakes.json" "$RESULTS/$SCENARIO.json"
fi
python3 scripts/bench_report.py "$RESULTS/$SCENARIO.json"
cat "$RESULTS/$SCENARIO.md"
