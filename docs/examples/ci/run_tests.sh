#!/bin/sh
# CI without a CI service: the provider's test suite against a fresh simulator, with a
# JUnit report. The exit status is the suite's failure, else the scenario's verdict.
#   APNS_SIM: the apns-sim binary (default: apns-sim on PATH)
set -e
APNS_SIM="${APNS_SIM:-apns-sim}"
mkdir -p target
"$APNS_SIM" scenario check docs/examples/scenario.toml
"$APNS_SIM" test --scenario docs/examples/scenario.toml --junit target/apns-sim-junit.xml \
  -- python3 -m unittest discover -v -s docs/examples/ci
