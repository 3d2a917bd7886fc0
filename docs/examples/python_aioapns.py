"""Push one notification with aioapns (HTTP/2), with certificate or token auth.

    python3 python_aioapns.py cert|token

Reads what `apns-sim test` sets: APNS_SIM_HTTP2 (host:port), APNS_SIM_TOKEN,
APNS_SIM_CA_FILE, APNS_SIM_CERT_FILE + APNS_SIM_KEY_FILE, or APNS_SIM_AUTH_KEY_FILE +
APNS_SIM_KEY_ID + APNS_SIM_TEAM_ID. Exits 0 on 200, 1 otherwise.
"""

import asyncio
import os
import ssl
import sys
import tempfile

from aioapns import APNs, NotificationRequest
from aioapns.connection import APNsDevelopmentClientProtocol

env = os.environ
host, port = env["APNS_SIM_HTTP2"].rsplit(":", 1)


# aioapns has no host or port option: it connects to its protocol class's APNS_SERVER and
# APNS_PORT (api.development.push.apple.com:443 with use_sandbox=True). A subclass on this
# one client points it at the simulator; TLS, HTTP/2 and JWT stay the library's own.
class Simulator(APNsDevelopmentClientProtocol):
    APNS_SERVER = host
    APNS_PORT = int(port)


async def main(auth):
    # Trust the simulator's CA (its server certificate also names 127.0.0.1).
    context = ssl.create_default_context(cafile=env["APNS_SIM_CA_FILE"])
    common = dict(topic="com.example.app", use_sandbox=True, ssl_context=context)
    if auth == "cert":
        # aioapns loads certificate and key from one PEM file.
        bundle = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)
        for part in ("APNS_SIM_CERT_FILE", "APNS_SIM_KEY_FILE"):
            with open(env[part]) as f:
                bundle.write(f.read())
        bundle.close()
        apns = APNs(client_cert=bundle.name, **common)
        os.unlink(bundle.name)
    else:
        with open(env["APNS_SIM_AUTH_KEY_FILE"]) as f:
            key = f.read()
        apns = APNs(key=key, key_id=env["APNS_SIM_KEY_ID"], team_id=env["APNS_SIM_TEAM_ID"], **common)
    apns.pool.protocol_class = Simulator

    request = NotificationRequest(
        device_token=env["APNS_SIM_TOKEN"],
        message={"aps": {"alert": "Hello from apns-sim"}},
    )
    result = await apns.send_notification(request)
    print(auth, result.status, result.description or "", result.notification_id)
    apns.pool.close()
    return 0 if result.is_successful else 1


sys.exit(asyncio.run(main(sys.argv[1])))
