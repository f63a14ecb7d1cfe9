#!/usr/bin/env bash
# The clients' tests (issue 13), each against the real broker binary:
#   - the JS bundle is rebuilt from its TypeScript source and must equal the
#     committed clients/js/dist/ (the broker embeds that build at compile
#     time, so a stale one would ship in the binary);
#   - the JS client's Node tests (node --test, through a TCP proxy);
#   - the Python client's pytest suite;
#   - the demo page in headless Chromium (Debian's chromium package).
# The broker is the debug binary `cargo build` (and `cargo test`) leaves in
# target/debug/tickfan; TICKFAN_BIN overrides it. install-test-deps.sh
# installs chromium, the npm packages and the Python venv.
set -euo pipefail
cd "$(dirname "$0")/.."

export TICKFAN_BIN="${TICKFAN_BIN:-$PWD/target/debug/tickfan}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
cargo build --quiet --bin tickfan

echo "== clients/js: the committed bundle is the build of the source"
(cd clients/js && node build.mjs)
if ! git diff --quiet --exit-code -- clients/js/dist; then
  git --no-pager diff --stat -- clients/js/dist
  echo "clients/js/dist differs from a fresh build of clients/js/src: run 'node build.mjs' in clients/js and commit dist/" >&2
  exit 1
fi
if [ -n "$(git status --porcelain -- clients/js/dist)" ]; then
  git status --porcelain -- clients/js/dist
  echo "clients/js/dist has files that are not committed" >&2
  exit 1
fi

echo "== clients/js: node --test against the broker"
(cd clients/js && node --test test/*.test.mjs)

echo "== clients/python: pytest against the broker"
(cd clients/python && ../../.venv/python-client/bin/python -m pytest -q)

echo "== demo page in headless Chromium (writes docs/demo.png)"
(cd clients/browser-test && node --test ./*.test.mjs)
