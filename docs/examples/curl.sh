#!/bin/sh
# Push one notification with curl over HTTP/2, with certificate or token auth.
#
#   sh curl.sh cert|token
#
# Reads what `apns-sim test` sets: APNS_SIM_HTTP2 (host:port), APNS_SIM_TOKEN,
# APNS_SIM_CA_FILE, APNS_SIM_CERT_FILE + APNS_SIM_KEY_FILE, or APNS_SIM_AUTH_KEY_FILE +
# APNS_SIM_KEY_ID + APNS_SIM_TEAM_ID. Exits 0 on 200, 1 otherwise.
set -e
if [ "$1" = cert ]; then
  set -- --cert "$APNS_SIM_CERT_FILE" --key "$APNS_SIM_KEY_FILE"
else
  # An ES256 JWT made with openssl. Its signature is DER, not JOSE's R||S: APNs (and the
  # simulator) accept both.
  b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  head=$(printf '{"alg":"ES256","kid":"%s"}' "$APNS_SIM_KEY_ID" | b64)
  claims=$(printf '{"iss":"%s","iat":%s}' "$APNS_SIM_TEAM_ID" "$(date +%s)" | b64)
  sig=$(printf '%s.%s' "$head" "$claims" | openssl dgst -sha256 -sign "$APNS_SIM_AUTH_KEY_FILE" | b64)
  set -- -H "authorization: bearer $head.$claims.$sig"
fi
status=$(curl --silent --show-error --http2 --cacert "$APNS_SIM_CA_FILE" "$@" \
  -H 'apns-topic: com.example.app' -H 'apns-push-type: alert' \
  -d '{"aps":{"alert":"Hello from apns-sim"}}' \
  -o /dev/stderr -w '%{http_version} %{http_code}' \
  "https://$APNS_SIM_HTTP2/3/device/$APNS_SIM_TOKEN")
echo "HTTP/$status"
[ "${status#* }" = 200 ]
