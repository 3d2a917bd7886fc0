#!/usr/bin/env bash
# `apns-sim test` with a provider in another language than Rust: interop/test_provider.py
# (Python's standard library only: ssl, socket, struct, json, os, urllib) as COMMAND. Run by
# .ci/run.
#   1. passing: the provider pushes "hello" to the first device, which the scenario expects
#      -> exit 0, every expectation PASS;
#   2. COMMAND fails: the payload is too large, the gateway answers status 7, the provider
#      exits 4 -> apns-sim test exits 4 (COMMAND's code passed through);
#   3. an expectation fails: the provider pushes "goodbye" where "hello" is expected, and
#      exits 0 -> apns-sim test exits 1 and prints what was expected and what was seen.
# Each case's --junit report, and that of `apns-sim scenario run` on a scenario with a
# deliberately wrong expectation (4.), is read with junitparser (PyPI), a JUnit reader that
# is not the crate that wrote it: the failed test case, its message with what was expected
# and what was seen, and the counts.
# Environment: APNS_SIM_BIN (default target/debug/apns-sim), PYTHON (default python3),
# JUNIT_PYTHON (default interop/.venv/bin/python, where .ci/run installs
# interop/requirements.txt, junitparser with it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${APNS_SIM_BIN:-target/debug/apns-sim}"
PYTHON="${PYTHON:-python3}"
JUNIT_PYTHON="${JUNIT_PYTHON:-interop/.venv/bin/python}"
if ! "$JUNIT_PYTHON" -c 'import junitparser' 2>/dev/null; then
  echo "junitparser is missing from $JUNIT_PYTHON: pip install -r interop/requirements.txt into interop/.venv"
  exit 1
fi
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

# The timeline runs alongside COMMAND: the tablet goes offline; the provider waits until
# the control API says so, then pushes to it too, for now or never (expiry 0), so the
# tablet shows nothing. Had the step not run, the provider's wait would be in vain (exit 7),
# or the online tablet would show its push.
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

# junit FILE TESTS FAILURES [CASE EXPECTED SEEN]: reads a JUnit report with junitparser and
# checks its counts (those it states, and those of its test cases); with CASE, that this
# test case failed with a message holding EXPECTED and SEEN.
junit() {
  "$JUNIT_PYTHON" - "$@" <<'PY'
import sys
from junitparser import Failure, JUnitXml, TestSuite

path, tests, failures = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
xml = JUnitXml.fromfile(path)
suites = [xml] if isinstance(xml, TestSuite) else list(xml)
cases = [case for suite in suites for case in suite]
failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
problems = []
if (xml.tests, xml.failures) != (tests, failures):
    problems.append(f"the report says {xml.tests} tests, {xml.failures} failures")
if (len(cases), len(failed)) != (tests, failures):
    problems.append(f"it holds {len(cases)} test cases, {len(failed)} failed")
if len(sys.argv) > 4:
    name, expected, seen = sys.argv[4:7]
    case = next((c for c in failed if c.name == name), None)
    if case is None:
        problems.append(f"no failed test case {name!r} in {[c.name for c in failed]}")
    else:
        message = next(r.message for r in case.result if isinstance(r, Failure)) or ""
        for words in (f"expected {expected}", f"seen {seen}"):
            if words not in message:
                problems.append(f"{name}: {words!r} not in the failure message {message!r}")
for p in problems:
    print(f"  junit {path}: {p}")
sys.exit(1 if problems else 0)
PY
}

failures=0
# case NAME EXPECTED_EXIT FAILED_CASES GREP_PATTERN… -- ENV…: runs apns-sim test, checks
# its exit code, that its output holds every pattern, and that its JUnit report has
# FAILED_CASES failed test cases.
case_() {
  local name="$1" want="$2" want_failures="$3"
  shift 3
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
  # COMMAND and the three expectations are the report's test cases.
  junit "$WORK/$name.xml" 4 "$want_failures" || ok=0
  if [ "$ok" = 1 ]; then
    echo "ok   $name (exit $got)"
  else
    echo "FAIL $name: exit $got, wanted $want; output:"
    sed 's/^/     /' "$WORK/$name.out"
    failures=$((failures + 1))
  fi
}

case_ passing 0 0 \
  "PASS the phone shows the provider's hello" "PASS the tablet shows nothing" \
  "no error response" "TABLET-1 is offline; pushing to it too" \
  "PASSED (4 of 4 expectations hold" \
  -- TEST_PROVIDER_ALERT=hello TEST_PROVIDER_OFFLINE=TABLET-1

long="$(printf 'x%.0s' $(seq 1 2100))"
case_ command-fails 4 3 \
  "error response: status 7, identifier 42" "FAILED command: exited with code 4" \
  -- TEST_PROVIDER_ALERT="$long" TEST_PROVIDER_OFFLINE=TABLET-1

case_ expectation-fails 1 1 \
  "FAIL the phone shows the provider's hello" \
  'expected: PHONE-1 shows 1 notification(s) and payloads containing, in order: {"aps":{"alert":"hello"}}' \
  '{"aps":{"alert":"goodbye"}}' "PASS COMMAND" "PASS the tablet shows nothing" \
  -- TEST_PROVIDER_ALERT=goodbye TEST_PROVIDER_OFFLINE=TABLET-1

# 4. `apns-sim scenario run` of a scenario with a deliberately wrong expectation: exit 1,
#    and its JUnit report read back by junitparser with the failed case, its expected and
#    seen, and the counts (3 test cases, 1 failed).
cat >"$WORK/wrong.toml" <<'TOML'
name = "wrong on purpose"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[step]]
name = "hello"
push = { device = "PHONE-1", payload = { aps = { alert = "hello" } } }

[[expect]]
name = "answered 200"
answer = { step = "hello", status = 200 }

[[expect]]
name = "shows goodbye"
shows = { device = "PHONE-1", payloads = [{ aps = { alert = "goodbye" } }] }

[[expect]]
nothing_else = true
TOML
got=0
"$BIN" scenario run "$WORK/wrong.toml" --junit "$WORK/wrong.xml" >"$WORK/wrong.out" 2>&1 || got=$?
if [ "$got" = 1 ] && junit "$WORK/wrong.xml" 3 1 "shows goodbye" \
  'PHONE-1 shows payloads containing, in order: {"aps":{"alert":"goodbye"}}' \
  "PHONE-1 shows 1 notification(s)" \
  && junit "$WORK/expectation-fails.xml" 4 1 "the phone shows the provider's hello" \
    'PHONE-1 shows 1 notification(s) and payloads containing, in order: {"aps":{"alert":"hello"}}' \
    "PHONE-1 shows 1 notification(s)"; then
  echo "ok   junit (junitparser reads the failed cases, their expected and seen, the counts)"
else
  echo "FAIL junit: scenario run exited $got, wanted 1; output:"
  sed 's/^/     /' "$WORK/wrong.out"
  failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "4 passed, 0 failed"
