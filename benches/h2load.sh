#!/usr/bin/env bash
# HTTP/2 API throughput with h2load (token auth, one demo device receiving every push), or
# the same load against the bare hyper HTTP/2 anchor (TARGET=h2, benches/anchors/h2.rs).
#
#   apt-get install nghttp2-client      # h2load
#   bash .ci/run                        # once: creates interop/.venv (PyJWT signs the JWT)
#   cargo build --release --bin apns-sim --example anchors
#   LOG=warn benches/h2load.sh          # LOG=info for the CLI's default log level
#   TARGET=h2 benches/h2load.sh         # the bare hyper server, same requests
#
# Parameters: N requests [200000], C connections [4], M streams per connection [100]; BIN
# another apns-sim binary (say, a copy of an earlier build, for a before/after comparison).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-"$root/target/release/apns-sim"}
anchors="$root/target/release/examples/anchors"
py="$root/interop/.venv/bin/python"
work=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
cd "$work"
if [ "${TARGET:-apns-sim}" = h2 ]; then
  "$anchors" h2 --certs certs --info info.json >out 2>err &
  pid=$!
  for _ in $(seq 300); do [ -f info.json ] && break; sleep 0.1; done
  api=$("$py" -c 'import json; print(json.load(open("info.json"))["http2"])')
  # Any token: the anchor routes nothing.
  token=$("$py" -c 'import os; print(os.urandom(32).hex())')
else
  RUST_LOG=${LOG:-warn} "$bin" serve --certs certs --gateway-port 0 --feedback-port 0 \
    --http2-port 0 --device-port 0 --control-port 0 --devices 1 >out 2>err &
  pid=$!
  for _ in $(seq 300); do grep -q "push to the first" out 2>/dev/null && break; sleep 0.1; done
  api=$(grep -m1 "  HTTP/2 API" out | awk '{print $3}')
  token=$(grep -m1 "DEMO-0001" out | awk '{print $4}')
fi
jwt=$("$py" - <<'PY'
import json, time, jwt
m = json.load(open("certs/manifest.json"))
k = next(f for f in m["files"] if f["role"] == "auth-key")
print(jwt.encode({"iss": k["team_id"], "iat": int(time.time())},
                 open("certs/" + k["path"]).read(), algorithm="ES256",
                 headers={"kid": k["key_id"]}))
PY
)
echo '{"aps":{"alert":"load"}}' >payload.json
h2load -n "${N:-200000}" -c "${C:-4}" -m "${M:-100}" -t 1 -d payload.json \
  -H "authorization: bearer $jwt" -H "apns-topic: com.example.app" \
  -H "apns-push-type: alert" -H "apns-expiration: 0" "https://$api/3/device/$token" |
  grep -E "finished in|requests:|status codes|TLS Protocol|Application protocol"
# CPU seconds (user + system) the server used, from /proc (USER_HZ = 100).
awk '{printf "server CPU: %.2f s\n", ($14 + $15) / 100}' "/proc/$pid/stat"
