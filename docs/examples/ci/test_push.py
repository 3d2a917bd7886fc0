"""A provider's test suite, as `apns-sim test` runs it in CI (docs/ci.md).

    python3 -m unittest discover -s docs/examples/ci

`send_alert` stands for the provider code under test (here: the legacy binary API with
Python's standard library). The test pushes through it, then asks the simulator's control
API (APNS_SIM_CONTROL_URL) to wait until the device has acknowledged the notification,
so it needs no sleep and fails with what the simulator saw.
"""

import json
import os
import socket
import ssl
import struct
import unittest
import urllib.error
import urllib.parse
import urllib.request

env = os.environ


def send_alert(token_hex, alert):
    """The code under test: one command-2 frame (token, payload) to APNS_SIM_GATEWAY."""
    context = ssl.create_default_context(cafile=env["APNS_SIM_CA_FILE"])
    context.load_cert_chain(env["APNS_SIM_CERT_FILE"], env["APNS_SIM_KEY_FILE"])
    host, port = env["APNS_SIM_GATEWAY"].rsplit(":", 1)
    payload = json.dumps({"aps": {"alert": alert}}).encode()
    items = struct.pack(">BH", 1, 32) + bytes.fromhex(token_hex)
    items += struct.pack(">BH", 2, len(payload)) + payload
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(struct.pack(">BI", 2, len(items)) + items)


def wait_for(token_hex, outcome):
    """The first delivery-log record of the token with this outcome (control API)."""
    query = urllib.parse.urlencode({"token": token_hex, "outcome": outcome, "timeout_ms": 20000})
    url = f"{env['APNS_SIM_CONTROL_URL']}/v1/notifications/wait?{query}"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.load(answer)["notifications"][0]
    except urllib.error.HTTPError as e:  # 408: not in time; the body says what matched
        raise AssertionError(f"no {outcome} record: {e.read().decode()}") from e


class PushTest(unittest.TestCase):
    def test_an_alert_reaches_the_device(self):
        token = env["APNS_SIM_TOKEN"]
        send_alert(token, "Hello from apns-sim")
        record = wait_for(token, "acknowledged")
        self.assertEqual(record["payload"], {"aps": {"alert": "Hello from apns-sim"}})
        self.assertEqual(record["api"], "binary")


if __name__ == "__main__":
    unittest.main()
