#!/usr/bin/env python3
"""A legacy binary-API provider as a user has it, for `apns-sim run`
(interop/run_unmodified.sh): Python's standard library (ssl, socket, struct), Apple's
`gateway.sandbox.push.apple.com:2195` hard-coded, `ssl.create_default_context()` (the
system's trust store). Only the credentials and the device token come from the
environment; the binary API never confirms success, so the delivery is checked on the
control API (interop/run_delivered.py).

Exit status: 0 when the device got the notification and no error response came; 1
otherwise.
"""

import json
import os
import socket
import ssl
import struct
import sys

from run_delivered import delivered

GATEWAY = ("gateway.sandbox.push.apple.com", 2195)
ALERT = "hello from the binary API"


def item(item_id, data):
    """One frame item: id (1 byte), length (2 bytes, big-endian), data."""
    return struct.pack(">BH", item_id, len(data)) + data


def main():
    token = os.environ["APNS_SIM_TOKEN"]
    payload = json.dumps({"aps": {"alert": ALERT}}, separators=(",", ":")).encode()
    items = (
        item(1, bytes.fromhex(token))  # device token
        + item(2, payload)  # payload
        + item(3, struct.pack(">I", 7))  # notification identifier
        + item(4, struct.pack(">I", 0))  # expiry: now or never
        + item(5, struct.pack(">B", 10))  # priority: now
    )
    context = ssl.create_default_context()
    context.load_cert_chain(os.environ["APNS_SIM_CERT_FILE"], os.environ["APNS_SIM_KEY_FILE"])
    with socket.create_connection(GATEWAY, timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=GATEWAY[0]) as tls:
            tls.sendall(struct.pack(">BI", 2, len(items)) + items)
            ok = delivered(token, ALERT)
            # An error response would have come before the delivery; none is waiting.
            tls.setblocking(False)
            try:
                answer = tls.recv(6)
            except ssl.SSLWantReadError:
                answer = None
    if answer:
        print(f"error response: {answer.hex()}")
        return 1
    print(f"{GATEWAY[0]}:{GATEWAY[1]}: accepted")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
