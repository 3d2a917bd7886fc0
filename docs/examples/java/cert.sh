#!/bin/sh
# Push.java with certificate auth: packs APNS_SIM_CERT_FILE and APNS_SIM_KEY_FILE into a
# .p12, then runs it. Once `apns-sim certs export --format p12` exists, the openssl line
# gives way to it.
set -e
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
openssl pkcs12 -export -in "$APNS_SIM_CERT_FILE" -inkey "$APNS_SIM_KEY_FILE" \
  -name com.example.app -passout pass:secret -out "$dir/provider.p12"
java "$(dirname "$0")/Push.java" cert "$dir/provider.p12" secret
