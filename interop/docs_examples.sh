#!/usr/bin/env bash
# Runs every example of docs/clients.md and docs/ci.md against a fresh simulator, each
# under `apns-sim test --scenario docs/examples/scenario.toml -- COMMAND` (docs/ci.md's
# suite under `apns-sim run` too): the scenario
# expects exactly one delivery to its phone and nothing refused, so a PASSED verdict proves
# the example's notification arrived. Run by .ci/run, which installs what it needs
# (aioapns in interop/.venv, @parse/node-apn in interop/node_modules, Go, a JDK, curl).
# tests/it/docs.rs checks that each `example` line below is a command docs/clients.md shows.
# Environment: APNS_SIM_BIN (default target/debug/apns-sim).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${APNS_SIM_BIN:-target/debug/apns-sim}")"
[ -x "$BIN" ] || { cargo build --quiet && BIN="$(realpath target/debug/apns-sim)"; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The docs' commands as a reader runs them: `apns-sim` and `python3` (with aioapns) on
# PATH, node-apn where `require` finds it, Go's build cache inside target/.
mkdir -p "$WORK/bin" target/go-cache
ln -s "$BIN" "$WORK/bin/apns-sim"
export PATH="$WORK/bin:$PWD/interop/.venv/bin:$PATH"
export NODE_PATH="$PWD/interop/node_modules"
export GOCACHE="$PWD/target/go-cache"
SCENARIO=docs/examples/scenario.toml

failures=0
passed=0
# check NAME WANTED_EXIT PATTERN -- COMMAND…: runs COMMAND, wants its exit code and PATTERN
# in its output.
check() {
  local name="$1" want="$2" pattern="$3"
  shift 4
  local got=0
  "$@" >"$WORK/out" 2>&1 || got=$?
  if [ "$got" = "$want" ] && grep -qF -- "$pattern" "$WORK/out"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name: exit $got (wanted $want), output:"
    sed 's/^/     /' "$WORK/out"
    failures=$((failures + 1))
  fi
}
# example COMMAND: one docs example under `apns-sim test`, which must pass.
example() {
  check "$1" 0 "PASSED (3 of 3 expectations hold" -- \
    sh -c "apns-sim test --scenario $SCENARIO -- $1"
}

check "scenario check" 0 "valid" -- apns-sim scenario check "$SCENARIO"
# The verdict can fail: a COMMAND that pushes nothing leaves the phone without its notification.
check "a COMMAND that pushes nothing fails the verdict" 1 "FAIL the phone shows" -- \
  apns-sim test --scenario "$SCENARIO" -- true

example "python3 docs/examples/python_aioapns.py cert"
example "python3 docs/examples/python_aioapns.py token"
example "node docs/examples/node_apn.js cert"
example "node docs/examples/node_apn.js token"
example "go run docs/examples/go/main.go cert"
example "go run docs/examples/go/main.go token"
example "sh docs/examples/java/cert.sh"
example "java docs/examples/java/Push.java token"
example "sh docs/examples/curl.sh cert"
example "sh docs/examples/curl.sh token"
example "python3 docs/examples/binary_stdlib.py"

# docs/ci.md: the plain shell script, and the GitHub Actions job's test step run as the
# runner would run it (bash -e, in a checkout: a copy of docs/ here).
check "docs/examples/ci/run_tests.sh" 0 "PASSED (3 of 3 expectations hold" -- \
  docs/examples/ci/run_tests.sh
mkdir -p "$WORK/checkout"
cp -r docs "$WORK/checkout/"
python3 - "$WORK/step.sh" <<'PY'
import sys, yaml
job = yaml.safe_load(open("docs/examples/ci/github-actions.yml"))["jobs"]["apns"]
[step] = [s for s in job["steps"] if s.get("name") == "Provider tests against apns-sim"]
open(sys.argv[1], "w").write(step["run"])
PY
check "github-actions.yml: its test step" 0 "PASSED (3 of 3 expectations hold" -- \
  sh -c "cd '$WORK/checkout' && bash -e '$WORK/step.sh' && test -s apns-sim-junit.xml"
# docs/ci.md's `apns-sim run` command (Linux, as root or with user namespaces), in the
# checkout too, so the certs/ it mints are the copy's (the report removed first: the step
# above wrote one).
check "docs/ci.md: the suite under apns-sim run" 0 "PASSED (3 of 3 expectations hold" -- \
  sh -c "cd '$WORK/checkout' && rm -f apns-sim-junit.xml \
    && apns-sim run --scenario docs/examples/scenario.toml \
    --junit apns-sim-junit.xml -- python3 -m unittest discover -v -s docs/examples/ci \
    && test -s apns-sim-junit.xml"

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
