#!/usr/bin/env bash
# `apns-sim test` with a provider in another language than Rust: interop/test_provider.py
# (Python's standard library only: ssl, socket, struct, json, os) as COMMAND. Run by .ci/run.
#   1. passing: the provider pushes "hello" to the first device, which the scenario expects
#      -> exit 0, every expectation PASS;
#   2. COMMAND fails: the payload is too large, the gateway answers status 7, the provider
#      exits 4 -> apns-sim test exits 4 (COMMAND's code passed through);
#   3. an expectation fails: the provider pushes "goodbye" where "hello" is expected, and
#      exits 0 -> apns-sim test exits 1 and prints what was expected and what was seen.
# Environment: APNS_SIM_BIN (default target/debug/apns-sim), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${APNS_SIM_BIN:-target/debug/apns-sim}"
PYTHON="${PYTHON:-python3}"
[ -x "$BIN" ] || cargo build --quiet
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/world.toml" <<'TOML'
name = "a Python provider"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[device]]
serial = "TABLET-1"
apps = ["com.example.app"]

# The timeline runs alongside COMMAND: the tablet goes offline, and shows nothing.
[[step]]
offline = "TABLET-1"

[[expect]]
name = "the phone shows the provider's hello"
shows = { device = "PHONE-1", count = 1, payloads = [{ aps = { alert = "hello" } }] }

[[expect]]
name = "the tablet shows nothing"
shows = { device = "TABLET-1", count = 0 }

[[expect]]
nothing_else = true
TOML

failures=0
# case NAME EXPECTED_EXIT GREP_PATTERN… -- ENV…: runs apns-sim test, checks its exit code
# and that its output holds every pattern.
case_() {
  local name="$1" want="$2"
  shift 2
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local got=0
  env "$@" "$BIN" test --scenario "$WORK/world.toml" --junit "$WORK/$name.xml" \
    -- "$PYTHON" interop/test_provider.py >"$WORK/$name.out" 2>&1 || got=$?
  local ok=1
  [ "$got" = "$want" ] || ok=0
  for p in "${patterns[@]}"; do
    grep -qF -- "$p" "$WORK/$name.out" || { ok=0; echo "  missing: $p"; }
  done
  "$PYTHON" -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$WORK/$name.xml" || ok=0
  if [ "$ok" = 1 ]; then
    echo "ok   $name (exit $got)"
  else
    echo "FAIL $name: exit $got, wanted $want; output:"
    sed 's/^/     /' "$WORK/$name.out"
    failures=$((failures + 1))
  fi
}

case_ passing 0 \
  "PASS the phone shows the provider's hello" "PASS the tablet shows nothing" \
  "no error response" "PASSED (4 of 4 expectations hold" \
  -- TEST_PROVIDER_ALERT=hello

long="$(printf 'x%.0s' $(seq 1 2100))"
case_ command-fails 4 \
  "error response: status 7, identifier 42" "FAILED command: exited with code 4" \
  -- TEST_PROVIDER_ALERT="$long"

case_ expectation-fails 1 \
  "FAIL the phone shows the provider's hello" \
  'expected: PHONE-1 shows 1 notification(s) and payloads containing, in order: {"aps":{"alert":"hello"}}' \
  '{"aps":{"alert":"goodbye"}}' "PASS COMMAND" \
  -- TEST_PROVIDER_ALERT=goodbye

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "3 passed, 0 failed"
