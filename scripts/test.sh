#!/usr/bin/env bash
# Runs every test of tickfan: formatting and lints, unit and integration
# tests, the benches' compilation, the Autobahn|Testsuite conformance run, and
# the clients' tests (JS, Python, the demo page in headless Chromium).
# Installs what the tests need first, so it works on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
# --workspace: the broker (root package) and tickfan-load (member); plain
# `cargo test` at the root would test the broker alone. fuzz/ is a workspace
# of its own, built by scripts/fuzz.sh.
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (unit, integration, benches compile; broker and tickfan-load)"
cargo test --workspace --all-targets
echo "== autobahn conformance (kosoku)"
scripts/autobahn.sh
echo "== autobahn conformance over wss (kosoku -> socat -> tickfan's TLS listener)"
scripts/autobahn.sh --wss
scripts/soak.sh 20 --short
echo "== clients: JS bundle up to date, Node tests, pytest, the demo in headless Chromium"
scripts/clients-test.sh
# The cluster across three network namespaces (real links, a host's link set
# down): where this machine lets us make namespaces (root, iproute2).
if [ "$(id -u)" = 0 ] && ip netns add tickfan-probe 2>/dev/null; then
    ip netns del tickfan-probe
    echo "== cluster across network namespaces"
    cargo build --bin tickfan # built by the tests already
    TICKFAN_BIN=target/debug/tickfan scripts/cluster-netns.sh
else
    echo "== cluster across network namespaces: skipped (needs root and ip netns)"
fi
