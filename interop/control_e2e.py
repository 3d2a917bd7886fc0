#!/usr/bin/env python3
"""End-to-end test of the control API from another language: Python's standard library only.

Run by .ci/run (and by hand: `python3 interop/control_e2e.py`). It proves that a test suite
written in any language can drive a whole case through the control API and the binary
gateway, with nothing of ours on the client side:

 1. starts `apns-sim serve` with every port 0 and no demo devices, fresh certificates in a
    temp folder, and reads the endpoints from its banner;
 2. `GET /v1/health` names the same endpoints;
 3. `POST /v1/devices` creates an in-process device with com.example.app and answers with
    its token;
 4. pushes to it through the binary gateway (command 2, over mutual TLS with the minted
    provider certificate, built here byte by byte with `struct` and `ssl`);
 5. `GET /v1/notifications/wait` answers with the `acknowledged` record of that push (the
    device showed it), and the device's inbox holds the payload;
 6. `DELETE /v1/devices/{serial}/apps/com.example.app` uninstalls the app; a second push
    gets `not_installed` (waited for the same way);
 7. `GET /v1/feedback` lists the token, twice (a peek does not drain);
 8. `POST /v1/reset` empties the log and the feedback list; the device is kept.

One line per check, then `N passed, M failed`; exit status 1 on any failure. Every wait is
bounded; the simulator is killed on exit. Only 127.0.0.1 is contacted.

Environment: APNS_SIM_BIN (default target/debug/apns-sim, built if missing).
"""

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
TOPIC = "com.example.app"
SERIAL = "PY-E2E-1"
WAIT_S = 30.0  # any single wait for the simulator


class Failure(Exception):
    """A step could not be taken at all; the message says why."""


RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""))


def api(base, method, path, body=None):
    """One control API request; returns (status, decoded JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=WAIT_S + 15) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, (json.loads(text) if text else None)
    except ValueError:
        raise Failure("%s %s answered %d with a body that is not JSON: %r"
                      % (method, path, status, text[:200]))


def start_simulator(tmp, demo_devices=False):
    """Starts `serve` on port 0 everywhere (with the demo fleet, or with no device at all);
    returns the process and the banner's addresses by name."""
    binary = os.environ.get("APNS_SIM_BIN") or os.path.join(ROOT, "target", "debug", "apns-sim")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True, timeout=1800)
    log = open(os.path.join(tmp, "serve.log"), "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--certs", os.path.join(tmp, "certs"), "--bind", HOST,
         "--gateway-port", "0", "--feedback-port", "0", "--http2-port", "0",
         "--device-port", "0", "--control-port", "0"]
        + ([] if demo_devices else ["--devices", "0"]),
        cwd=tmp, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    # The banner (src/cli/serve.rs): "  binary gateway   ADDR", …, "  control API      ADDR".
    addr_re = re.compile(r"^\s+(binary gateway|feedback service|HTTP/2 API|device endpoint|"
                         r"control API)\s+(\S+)$")
    addrs = {}
    deadline = time.monotonic() + WAIT_S
    while len(addrs) < 5:
        if time.monotonic() > deadline:
            raise Failure("serve printed %s within %.0f s" % (sorted(addrs), WAIT_S))
        line = proc.stdout.readline()
        if not line:
            raise Failure("serve exited with %s before its banner" % proc.wait())
        m = addr_re.match(line.rstrip("\n"))
        if m:
            addrs[m.group(1)] = m.group(2)
    # Keep reading stdout so that the simulator never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, addrs


def command2(token_hex, payload, identifier):
    """A binary command-2 frame (spec: frame length, then items of id, length, data)."""
    token = bytes.fromhex(token_hex)
    body = json.dumps(payload, separators=(",", ":")).encode()
    items = b"".join([
        struct.pack(">BH", 1, len(token)) + token,             # item 1: device token
        struct.pack(">BH", 2, len(body)) + body,               # item 2: payload
        struct.pack(">BHI", 3, 4, identifier),                 # item 3: notification id
        struct.pack(">BHI", 4, 4, int(time.time()) + 3600),    # item 4: expiration
        struct.pack(">BHB", 5, 1, 10),                         # item 5: priority
    ])
    return struct.pack(">BI", 2, len(items)) + items


def binary_push(addr, certs, token_hex, payload, identifier):
    """Sends one notification; returns the error response (status, id) or None if none
    came back before the simulator's quiet period (a notification Apple accepts gets no
    answer on this API)."""
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(certs, "provider.pem"), os.path.join(certs, "provider-key.pem"))
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(command2(token_hex, payload, identifier))
            tls.settimeout(1.0)
            try:
                answer = tls.recv(6)
            except socket.timeout:
                return None
            if len(answer) == 6 and answer[0] == 8:
                return answer[1], struct.unpack(">I", answer[2:])[0]
            return None


def wait_for(base, token, outcome):
    status, body = api(base, "GET", "/v1/notifications/wait?token=%s&outcome=%s&count=1&timeout_ms=%d"
                       % (token, outcome, int(WAIT_S * 1000)))
    return status, (body or {}).get("notifications", [])


def main():
    tmp = tempfile.mkdtemp(prefix="apns-sim-e2e-")
    certs = os.path.join(tmp, "certs")
    proc, addrs = start_simulator(tmp)
    try:
        base = "http://" + addrs["control API"]
        status, health = api(base, "GET", "/v1/health")
        check("health answers 200 with the banner's gateway",
              status == 200 and health["endpoints"]["gateway"] == addrs["binary gateway"],
              "%s %s" % (status, health))

        status, device = api(base, "POST", "/v1/devices",
                             {"serial": SERIAL, "environment": "sandbox", "apps": [TOPIC]})
        check("POST /v1/devices creates an online device (201)",
              status == 201 and device.get("online") is True, "%s %s" % (status, device))
        apps = [a for a in (device or {}).get("apps", []) if a.get("app") == TOPIC]
        if status != 201 or not apps:
            raise Failure("no device to push to: %s %s" % (status, device))
        token = apps[0]["token"]
        check("its token is 64 hex digits", re.fullmatch(r"[0-9a-f]{64}", token) is not None, token)

        status, listed = api(base, "GET", "/v1/devices")
        check("GET /v1/devices lists it",
              status == 200 and any(d["serial"] == SERIAL for d in listed["devices"]),
              "%s %s" % (status, listed))

        payload = {"aps": {"alert": "from python"}, "case": 1}
        answer = binary_push(addrs["binary gateway"], certs, token, payload, 0x01020304)
        check("the gateway accepts the push (no error response)", answer is None, str(answer))
        status, records = wait_for(base, token, "acknowledged")
        check("wait answers 200 with the acknowledged record",
              status == 200 and len(records) == 1 and records[0]["identifier"] == 0x01020304
              and records[0]["api"] == "binary", "%s %s" % (status, records))

        status, inbox = api(base, "GET", "/v1/devices/%s/inbox" % SERIAL)
        shown = (inbox or {}).get("notifications", [])
        check("the inbox shows the payload",
              status == 200 and len(shown) == 1 and shown[0]["payload"] == payload,
              "%s %s" % (status, inbox))

        status, _ = api(base, "DELETE", "/v1/devices/%s/apps/%s" % (SERIAL, TOPIC))
        check("DELETE .../apps/%s uninstalls (204)" % TOPIC, status == 204, str(status))
        answer = binary_push(addrs["binary gateway"], certs, token, {"aps": {"alert": "gone"}}, 2)
        check("the gateway accepts the push to the uninstalled app", answer is None, str(answer))
        status, records = wait_for(base, token, "not_installed")
        check("wait answers 200 with the not_installed record",
              status == 200 and len(records) == 1 and records[0]["identifier"] == 2,
              "%s %s" % (status, records))

        for attempt in ("first", "second"):
            status, fb = api(base, "GET", "/v1/feedback?topic=%s&environment=sandbox" % TOPIC)
            tokens = [t["token"] for t in (fb or {}).get("tuples", [])]
            check("feedback peek (%s) lists the token" % attempt,
                  status == 200 and tokens == [token], "%s %s" % (status, fb))

        status, reset = api(base, "POST", "/v1/reset", {"devices": "keep"})
        check("POST /v1/reset answers 200", status == 200, "%s %s" % (status, reset))
        status, log = api(base, "GET", "/v1/notifications")
        check("the delivery log is empty after reset",
              status == 200 and log["notifications"] == [], "%s %s" % (status, log))
        status, fb = api(base, "GET", "/v1/feedback?topic=%s&environment=sandbox" % TOPIC)
        check("the feedback list is empty after reset",
              status == 200 and fb.get("tuples") == [], "%s %s" % (status, fb))
        status, listed = api(base, "GET", "/v1/devices")
        check("the device is kept",
              status == 200 and any(d["serial"] == SERIAL for d in listed["devices"]),
              "%s %s" % (status, listed))

        status, err = api(base, "POST", "/v1/devices", {"serial": SERIAL, "colour": "red"})
        check("a bad body is a 400 naming the field",
              status == 400 and (err or {}).get("field") == "colour", "%s %s" % (status, err))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print("FAIL setup: %s" % e)
        sys.exit(1)
