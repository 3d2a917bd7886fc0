#!/usr/bin/env bash
# `apns-sim run` with providers that hard-code Apple's hosts and trust only the system's
# store, unmodified (run by .ci/run, as root; needs interop/.venv with
# interop/requirements-run.txt, and node):
#   1. httpx with http2 to api.sandbox.push.apple.com:443 (interop/run_httpx.py);
#   2. Node's built-in http2 module to the same (interop/run_node_http2.js);
#   3. the legacy binary API on gateway.sandbox.push.apple.com:2195 with Python's standard
#      library, SSL_CERT_FILE unset so only the bind-mounted system bundle is trusted, in a
#      user namespace (the unprivileged path) (interop/run_binary.py);
#   4. httpx again under --scenario, whose expectation (the phone shows the notification)
#      is judged after COMMAND.
# Each provider checks its 200 (or the absence of an error response) and the delivery on
# the control API; the exit code is COMMAND's, passed back by apns-sim run.
# Environment: APNS_SIM_BIN (default target/debug/apns-sim).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${APNS_SIM_BIN:-target/debug/apns-sim}"
VENV_PY="interop/.venv/bin/python"
[ -x "$BIN" ] || cargo build --quiet
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/phone.toml" <<'TOML'
name = "an unmodified httpx provider"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[expect]]
name = "the phone shows httpx's hello"
shows = { device = "PHONE-1", count = 1, payloads = [{ aps = { alert = "hello from httpx" } }] }
TOML

failures=0
# case NAME PATTERN -- apns-sim run ARGS…: runs it, wants exit 0 and PATTERN in the output.
case_() {
  local name="$1" pattern="$2"
  shift 3
  local got=0
  "$BIN" run --certs "$WORK/certs" "$@" >"$WORK/$name.out" 2>&1 || got=$?
  if [ "$got" = 0 ] && grep -qF -- "$pattern" "$WORK/$name.out"; then
    echo "ok   $name"
  else
    echo "FAIL $name: exit $got, wanted 0 and \"$pattern\"; output:"
    sed 's/^/     /' "$WORK/$name.out"
    failures=$((failures + 1))
  fi
}

case_ httpx-http2 "200 over HTTP/2" -- -- "$VENV_PY" interop/run_httpx.py
case_ node-http2 "delivered: [\"hello from node http2\"]" -- -- node interop/run_node_http2.js
case_ binary-system-store "gateway.sandbox.push.apple.com:2195: accepted" -- \
  --user-namespace always -- env -u SSL_CERT_FILE -u SSL_CERT_DIR python3 interop/run_binary.py
case_ scenario-verdict "PASS the phone shows httpx's hello" -- \
  --scenario "$WORK/phone.toml" -- "$VENV_PY" interop/run_httpx.py

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "4 passed, 0 failed"
