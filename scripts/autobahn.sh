#!/usr/bin/env bash
# Autobahn|Testsuite conformance run (RFC 6455 cases 1.* to 10.*, and the
# permessage-deflate cases 12.* and 13.* of RFC 7692) against the echo route
# of a release build, through the `kosoku` runner of Autobahn's own case
# files. The per-case verdicts are reduced to tests/autobahn/
# expected-verdicts.json's shape and diffed against it, as tungstenite's CI
# does: a FAILED case, a changed verdict, or a case missing or added fails.
#
# Usage: scripts/autobahn.sh           run and compare
#        scripts/autobahn.sh --update  run and rewrite the expected file
#        scripts/autobahn.sh --wss     cases 1.* to 10.* over wss: tickfan's
#                                      TLS echo route behind a socat TLS client
#                                      tunnel (kosoku speaks plain ws to
#                                      socat, socat TLS to tickfan), compared
#                                      with the same expected verdicts (the
#                                      deflate cases add ~3 minutes and test
#                                      nothing TLS changes, so they run over
#                                      plain ws only)
#
# Needs python3 with the venv module and cargo (and socat and openssl for
# --wss); only binds 127.0.0.1.
set -euo pipefail

update=0
wss=0
case "${1:-}" in
"") ;;
--update) update=1 ;;
--wss) wss=1 ;;
*)
    echo "usage: $0 [--update]" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv=.venv/autobahn
outdir=reports/autobahn
expected=tests/autobahn/expected-verdicts.json
kosoku_version=0.1.0
# Seconds to wait for the server's "listening" line, and for the whole suite.
startup_timeout_s=60
suite_timeout_s=1200

# 1. The runner, in its own virtualenv (reused when it already has the version).
if [[ ! -x "$venv/bin/kosoku" ]] ||
    ! "$venv/bin/python" -m pip show kosoku 2>/dev/null | grep -qx "Version: $kosoku_version"; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        echo "autobahn: python3's venv module is missing; on Debian: apt-get install python3-venv" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kosoku==$kosoku_version"
fi

# 2. The server under test, on an ephemeral loopback port.
cargo build --release --bin tickfan

tmp="$(mktemp -d)"
server_pid=""
tunnel_pid=""
cleanup() {
    for pid in "$tunnel_pid" "$server_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

tls_args=()
if ((wss)); then
    # A throwaway self-signed certificate: the tunnel does not verify it
    # (what is tested here is the WebSocket protocol over tickfan's TLS).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
    tls_args=(--tls-listen 127.0.0.1:0 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem")
fi

server_log="$tmp/tickfan.stderr"
target/release/tickfan \
    "${tls_args[@]}" \
    --listen 127.0.0.1:0 \
    --workers 2 \
    --echo-path /echo \
    --max-message-bytes 16777216 \
    --max-frame-bytes 16777216 \
    --max-fragments-per-message 65536 \
    --log-level warn,tickfan=info \
    2>"$server_log" &
server_pid=$!

port=""
deadline=$((SECONDS + startup_timeout_s))
while [[ -z "$port" ]]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "autobahn: tickfan exited before listening:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "autobahn: tickfan did not report its port within ${startup_timeout_s}s:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    port="$(sed -n 's/.*tickfan listening listen=127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$server_log" | head -n 1)"
    [[ -n "$port" ]] || sleep 0.1
done
echo "autobahn: tickfan pid $server_pid listening on 127.0.0.1:$port"
if ((wss)); then
    tls_port="$(sed -n 's/.*tls=127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$server_log" | head -n 1)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
        "OPENSSL:127.0.0.1:$tls_port,verify=0" 2>"$tmp/socat.stderr" &
    tunnel_pid=$!
    deadline=$((SECONDS + startup_timeout_s))
    until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
        if ((SECONDS >= deadline)) || ! kill -0 "$tunnel_pid" 2>/dev/null; then
            echo "autobahn: the socat tunnel did not come up:" >&2
            cat "$tmp/socat.stderr" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "autobahn: over wss: kosoku -> socat 127.0.0.1:$port -> TLS 127.0.0.1:$tls_port"
fi

# 3. The suite: 1.* to 10.* (there is no 8.*; 11.* does not exist either),
# and over plain ws the permessage-deflate cases 12.* and 13.*.
cases=(-i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*')
((wss)) || cases+=(-i '12.*' -i '13.*')
rm -rf "$outdir"
kosoku_rc=0
timeout "$suite_timeout_s" "$venv/bin/kosoku" -m fuzzingclient "ws://127.0.0.1:$port/echo" \
    "${cases[@]}" -p 4 -o "$outdir" || kosoku_rc=$?
# kosoku exits 1 when a case FAILED; the comparison below reports which.
# Anything else (124 is the time bound) means there are no trustworthy reports.
if ((kosoku_rc != 0 && kosoku_rc != 1)); then
    echo "autobahn: kosoku exited $kosoku_rc" >&2
    exit 1
fi
if [[ ! -f "$outdir/index.json" ]]; then
    echo "autobahn: kosoku wrote no $outdir/index.json" >&2
    exit 1
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "autobahn: tickfan died during the run:" >&2
    tail -n 50 "$server_log" >&2
    exit 1
fi

# 4. Reduce to {"case": [behavior, behaviorClose]} and compare.
"$venv/bin/python" - "$outdir/index.json" "$expected" "$update" "$wss" <<'PY'
import json
import re
import sys

index_path, expected_path, update = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
# Over wss only 1.* to 10.* run: the deflate cases' expected verdicts are not
# this run's to check (and --update keeps them).
deflate_cases_ran = sys.argv[4] != "1"


def is_deflate_case(case_id):
    return case_id.split(".")[0] in ("12", "13")


with open(index_path) as f:
    index = json.load(f)  # {agent: {case_id: {"behavior": ..., "behaviorClose": ..., ...}}}


def case_key(case_id):
    return [int(part) for part in re.findall(r"\d+", case_id)]


actual = {}
for agent_cases in index.values():
    for case_id, entry in agent_cases.items():
        actual[case_id] = [entry["behavior"], entry["behaviorClose"]]
actual = dict(sorted(actual.items(), key=lambda item: case_key(item[0])))


def write_verdicts(path, verdicts):
    with open(path, "w") as f:
        f.write("{\n")
        f.write(",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in verdicts.items()))
        f.write("\n}\n")


counts = {}
for verdict in actual.values():
    # A case's verdict is its worse half, so a bad close is not hidden by an OK message.
    for label in ("FAILED", "UNIMPLEMENTED", "NON-STRICT", "INFORMATIONAL", "OK"):
        if label in verdict:
            counts[label] = counts.get(label, 0) + 1
            break
    else:
        counts["other"] = counts.get("other", 0) + 1
print(
    f"autobahn: {len(actual)} cases, {counts.get('OK', 0)} OK, "
    f"{counts.get('INFORMATIONAL', 0)} INFORMATIONAL, {counts.get('NON-STRICT', 0)} NON-STRICT, "
    f"{counts.get('UNIMPLEMENTED', 0)} UNIMPLEMENTED, {counts.get('FAILED', 0)} FAILED"
    + (f", {counts['other']} other" if "other" in counts else "")
)

if update and not deflate_cases_ran:
    try:
        with open(expected_path) as f:
            kept = {k: v for k, v in json.load(f).items() if is_deflate_case(k)}
    except FileNotFoundError:
        kept = {}
    actual = dict(sorted({**kept, **actual}.items(), key=lambda item: case_key(item[0])))

if update:
    write_verdicts(expected_path, actual)
    print(f"autobahn: wrote {expected_path}")
    failed = sorted((c for c, v in actual.items() if "FAILED" in v), key=case_key)
    for case_id in failed:
        print(f"  FAILED {case_id}: {actual[case_id]}")
    print(f"{len(actual) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)

try:
    with open(expected_path) as f:
        expected = json.load(f)
except FileNotFoundError:
    print(f"autobahn: {expected_path} is missing; run scripts/autobahn.sh --update", file=sys.stderr)
    expected = {}
if not deflate_cases_ran:
    expected = {k: v for k, v in expected.items() if not is_deflate_case(k)}

passed = failed = 0
problems = []
for case_id in sorted(set(actual) | set(expected), key=case_key):
    got, want = actual.get(case_id), expected.get(case_id)
    if got is None:
        problems.append(f"- {case_id}: {want} (missing from this run)")
        failed += 1
    elif want is None:
        problems.append(f"+ {case_id}: {got} (not in {expected_path})")
        failed += 1
    elif got != want:
        problems.append(f"~ {case_id}: expected {want}, got {got}")
        failed += 1
    elif "FAILED" in got:
        problems.append(f"! {case_id}: {got} (FAILED, and expected so)")
        failed += 1
    else:
        passed += 1

if problems:
    print(f"autobahn: {len(problems)} cases differ from {expected_path} or failed:")
    for line in problems:
        print(f"  {line}")
    print("autobahn: reports in reports/autobahn/ (index.html); if a change is intended, "
          "run scripts/autobahn.sh --update and commit the expected file")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
