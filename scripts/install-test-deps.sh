#!/usr/bin/env bash
# Installs the system packages the test suite needs (Debian), skipping what
# is already there so that repeated runs cost nothing.
set -euo pipefail

# chromium: the demo page's browser test (headless; Debian's package, so
# nothing downloads a browser). nats-server: the cluster tests (tests/cluster.rs
# start their own JetStream cluster; under CI they fail without it).
packages=(python3 python3-venv python3-pip curl prometheus socat openssl chromium nats-server)
# Node (the JS client's build and tests; 18 or later): Debian's nodejs and
# npm unless a node is already there (e.g. NodeSource's, which bundles npm
# and conflicts with Debian's npm package).
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component" || true
done

# Python clients the integration tests run against the broker (tests/tls.rs:
# the `websockets` library over wss with a verifying ssl context), in a
# virtualenv of their own, reused when it already has the version.
clients_venv=.venv/clients
websockets_version=15.0.1
if ! "$clients_venv/bin/python" -m pip show websockets 2>/dev/null | grep -qx "Version: $websockets_version"; then
  rm -rf "$clients_venv"
  python3 -m venv "$clients_venv"
  "$clients_venv/bin/python" -m pip install --quiet --disable-pip-version-check "websockets==$websockets_version"
fi

# Node clients (tests/deflate.rs: the `ws` library, which offers
# permessage-deflate by default), pinned by tests/clients/node's lock file
# and installed next to it; reinstalled only when ws is not the pinned version.
node_clients=tests/clients/node
ws_version=8.18.3
if command -v npm >/dev/null; then
  if ! grep -qs "\"version\": \"$ws_version\"" "$node_clients/node_modules/ws/package.json"; then
    (cd "$node_clients" && npm ci --no-audit --no-fund --silent)
  fi
else
  echo "install-test-deps: npm not found; the Node client tests will be skipped" >&2
fi

# The Python client's tests: pytest and the client package (editable), on
# the same websockets version.
client_venv=.venv/python-client
if ! "$client_venv/bin/python" -c "import tickfan, pytest, websockets; assert websockets.__version__ == '$websockets_version'" 2>/dev/null; then
  rm -rf "$client_venv"
  python3 -m venv "$client_venv"
  "$client_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "websockets==$websockets_version" "pytest==9.2.0" -e clients/python
fi

# The JS client's build and tests, and the browser test's driver, from their
# committed lockfiles; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD keeps playwright-core
# from fetching a browser (the test uses /usr/bin/chromium).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
for dir in clients/js clients/browser-test; do
  if ! (cd "$dir" && npm ls --depth=0 >/dev/null 2>&1); then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
