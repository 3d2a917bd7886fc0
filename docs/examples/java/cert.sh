#!/bin/sh
# Push.java with certificate auth: exports the provider certificate, its key and the CA as
# a .p12 with `apns-sim certs export --format p12` (from the folder apns-sim test wrote
# APNS_SIM_CERT_FILE into), then runs it.
set -e
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
apns-sim certs export --format p12 --password secret \
  --certs "$(dirname "$APNS_SIM_CERT_FILE")" --out "$dir" >/dev/null
java "$(dirname "$0")/Push.java" cert "$dir/provider.p12" secret
