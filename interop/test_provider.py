#!/usr/bin/env python3
"""A provider in another language than Rust, for `apns-sim test` (interop/test_runner.sh).

It uses only the standard library's ssl, socket, struct, json, os and urllib, as a CI
suite's own provider code might: it reads the variables `apns-sim test` sets, opens a
mutual-TLS connection to APNS_SIM_GATEWAY with APNS_SIM_CERT_FILE / APNS_SIM_KEY_FILE
(trusting APNS_SIM_CA_FILE), sends one command-2 frame to APNS_SIM_TOKEN, and waits up to
TEST_PROVIDER_WAIT_S seconds for an error response (the binary API never confirms success).

    TEST_PROVIDER_ALERT    the alert text (default "hello"); a long one makes the payload
                           too large, which the gateway answers with status 7
    TEST_PROVIDER_WAIT_S   how long to wait for an error response (default 1.0)
    TEST_PROVIDER_OFFLINE  a device's serial: first wait (on the control API's event
                           stream, APNS_SIM_CONTROL_URL/v1/events) until the scenario's
                           timeline has taken that device offline, then send a second frame,
                           to that device's token, after the first

Every frame has expiry 0 (deliver now or never), so one to an offline device is discarded.

Exit status: 0 when no error response came (the gateway accepted the notifications), 4 when
one came (its status is printed), 5 when the gateway closed without one, 6 when
APNS_SIM_INFO does not describe the token it was given, 7 when the device of
TEST_PROVIDER_OFFLINE did not go offline within TEST_PROVIDER_OFFLINE_WAIT_S (default 20).
"""

import json
import os
import socket
import ssl
import struct
import time
import urllib.request

COMMAND_FRAME = 2
COMMAND_ERROR = 8
ITEM_TOKEN, ITEM_PAYLOAD, ITEM_IDENTIFIER, ITEM_EXPIRY, ITEM_PRIORITY = 1, 2, 3, 4, 5
IDENTIFIER = 42


def item(item_id, data):
    """One frame item: id (1 byte), length (2 bytes, big-endian), data."""
    return struct.pack(">BH", item_id, len(data)) + data


def frame(token, payload, identifier, expiry, priority):
    """Command 2: command (1 byte), frame length (4 bytes), then the items."""
    items = (
        item(ITEM_TOKEN, token)
        + item(ITEM_PAYLOAD, payload)
        + item(ITEM_IDENTIFIER, struct.pack(">I", identifier))
        + item(ITEM_EXPIRY, struct.pack(">I", expiry))
        + item(ITEM_PRIORITY, struct.pack(">B", priority))
    )
    return struct.pack(">BI", COMMAND_FRAME, len(items)) + items


def await_offline(serial, wait_s):
    """Reads the control API's event stream (it replays the events from the start, then
    goes on live) until a `device_offline` event of `serial`; False if none came in time."""
    deadline = time.monotonic() + wait_s
    url = os.environ["APNS_SIM_CONTROL_URL"] + "/v1/events?since=0"
    try:
        with urllib.request.urlopen(url, timeout=wait_s) as stream:
            event = None
            while time.monotonic() < deadline:
                line = stream.readline().decode().strip()
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "device_offline":
                    if json.loads(line.split(":", 1)[1]).get("serial") == serial:
                        return True
    except TimeoutError:
        pass
    return False


def main():
    token_hex = os.environ["APNS_SIM_TOKEN"]
    with open(os.environ["APNS_SIM_INFO"], encoding="utf-8") as f:
        info = json.load(f)
    first = info["devices"][0]
    if first["token"] != token_hex or info["gateway"] != os.environ["APNS_SIM_GATEWAY"]:
        print("APNS_SIM_INFO disagrees with the variables:", first, info["gateway"])
        return 6
    host, port = os.environ["APNS_SIM_GATEWAY"].rsplit(":", 1)
    alert = os.environ.get("TEST_PROVIDER_ALERT", "hello")
    wait_s = float(os.environ.get("TEST_PROVIDER_WAIT_S", "1.0"))
    payload = json.dumps({"aps": {"alert": alert}}, separators=(",", ":")).encode()
    frames = frame(bytes.fromhex(token_hex), payload, IDENTIFIER, 0, 10)
    offline = os.environ.get("TEST_PROVIDER_OFFLINE")
    if offline:
        wait_offline_s = float(os.environ.get("TEST_PROVIDER_OFFLINE_WAIT_S", "20"))
        if not await_offline(offline, wait_offline_s):
            print(f"{offline} did not go offline within {wait_offline_s} s")
            return 7
        other = next((d for d in info["devices"] if d["serial"] == offline), None)
        if other is None:
            print(f"APNS_SIM_INFO has no device {offline}")
            return 6
        frames += frame(bytes.fromhex(other["token"]), payload, IDENTIFIER + 1, 0, 10)
        print(f"{offline} is offline; pushing to it too")

    context = ssl.create_default_context(cafile=os.environ["APNS_SIM_CA_FILE"])
    context.load_cert_chain(os.environ["APNS_SIM_CERT_FILE"], os.environ["APNS_SIM_KEY_FILE"])
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        # The simulator's server certificate names localhost (and Apple's host names).
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            # Expiry 0: deliver now or never (no clock needed on this side).
            tls.sendall(frames)
            tls.settimeout(wait_s)
            try:
                answer = tls.recv(6)
            except (socket.timeout, TimeoutError):
                print(f"sent {first['serial']} {alert!r}: no error response in {wait_s} s")
                return 0
    if len(answer) == 6:
        command, status, identifier = struct.unpack(">BBI", answer)
        if command == COMMAND_ERROR:
            print(f"error response: status {status}, identifier {identifier}")
            return 4
    print(f"the gateway closed the connection ({answer.hex() or 'no bytes'})")
    return 5


if __name__ == "__main__":
    raise SystemExit(main())
