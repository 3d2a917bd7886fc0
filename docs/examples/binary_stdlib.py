"""Push one notification over the legacy binary API, then read the feedback service, with
nothing but Python's standard library (ssl, socket, struct).

    python3 binary_stdlib.py

Reads what `apns-sim test` sets: APNS_SIM_GATEWAY and APNS_SIM_FEEDBACK (host:port),
APNS_SIM_TOKEN, APNS_SIM_CA_FILE, APNS_SIM_CERT_FILE and APNS_SIM_KEY_FILE (the binary
API knows certificate auth only). Exits 0 when no error response came, 1 when one did.
"""

import json
import os
import socket
import ssl
import struct

env = os.environ
context = ssl.create_default_context(cafile=env["APNS_SIM_CA_FILE"])
context.load_cert_chain(env["APNS_SIM_CERT_FILE"], env["APNS_SIM_KEY_FILE"])


def connect(address):
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    # Verify the name the server certificate carries; an Apple host name such as
    # gateway.sandbox.push.apple.com would also pick the environment.
    return context.wrap_socket(raw, server_hostname="localhost")


def item(item_id, data):
    """A command-2 item: id (u8), length (u16), data."""
    return struct.pack(">BH", item_id, len(data)) + data


token = bytes.fromhex(env["APNS_SIM_TOKEN"])
payload = json.dumps({"aps": {"alert": "Hello from apns-sim"}}).encode()
items = (
    item(1, token)  # device token, 32 bytes
    + item(2, payload)  # JSON payload
    + item(3, struct.pack(">I", 7))  # notification identifier, echoed in an error response
    + item(4, struct.pack(">I", 0))  # expiry: 0 = now or never
    + item(5, struct.pack(">B", 10))  # priority: 10 = now
)
frame = struct.pack(">BI", 2, len(items)) + items  # command 2, frame length

with connect(env["APNS_SIM_GATEWAY"]) as gateway:
    gateway.sendall(frame)
    # Success is silent: wait a moment for the 6-byte error response (command 8).
    gateway.settimeout(1.0)
    try:
        answer = gateway.recv(6)
    except TimeoutError:
        answer = b""
if len(answer) == 6:
    command, status, identifier = struct.unpack(">BBI", answer)
    print(f"error response: status {status} for notification {identifier}")
    raise SystemExit(1)
print("accepted (no error response)")

# Feedback: tuples of (timestamp u32, token length u16, token) until the server closes.
with connect(env["APNS_SIM_FEEDBACK"]) as feedback:
    data = b""
    while chunk := feedback.recv(4096):
        data += chunk
while data:
    timestamp, length = struct.unpack(">IH", data[:6])
    print(f"feedback: {data[6:6 + length].hex()} uninstalled at {timestamp}")
    data = data[6 + length:]
