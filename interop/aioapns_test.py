"""Interop test: aioapns (unmodified, from interop/.venv) against apns-sim's HTTP/2 API.

Run by interop/run.py with the venv's python and the path of a JSON config
({host, port, certs, key_id, team_id, topic, payload, tokens: {live, bad, gone, offline}});
prints one JSON object per request on stdout:
  {"lib":"aioapns","auth":"cert|token","case":"live|bad|gone|offline",
   "status":200|400|410|None,"reason":…,"timestamp":…,"apns_id":…,"error":…}
With the argument `offline` it sends one push, certificate auth, to tokens.offline with
aioapns' defaults (no time_to_live, so no apns-expiration header: Apple stores it for an
offline device under its default policy), instead of the three cases.
run.py judges the outcomes; this script only reports what the library returned.

How aioapns is pointed at the simulator (aioapns 4.0, aioapns/connection.py):
- It has no host or port option. The pool picks a protocol class at construction
  (``use_sandbox=True`` -> ``APNsDevelopmentClientProtocol``) and connects to that class's
  ``APNS_SERVER`` / ``APNS_PORT`` (api.development.push.apple.com:443), which also fill the
  request's ``host`` header. We replace ``apns.pool.protocol_class`` on our instance with a
  subclass whose two class attributes are 127.0.0.1 and the simulator's port. Nothing else
  of the library changes: TLS, HTTP/2 (h2), JWT signing and response parsing are its own.
  (The alternative without touching an attribute, its HTTP CONNECT proxy support, would
  need a proxy in this test and still send the Apple host name.)
- Trust: ``ssl_context`` is a documented argument; we pass a default context that trusts
  the simulator's CA. Like aioapns' own default context it offers no ALPN, so the simulator
  must speak HTTP/2 with prior knowledge. The hostname 127.0.0.1 is checked against the
  server certificate's IP address entry. For certificate auth aioapns loads
  ``client_cert`` (certificate and key in one PEM: provider-bundle.pem) into that context.
- ``key`` is the .p8 file's contents (aioapns passes it to PyJWT as is).
- aioapns sends its own ``apns-id`` and matches each response to its request by the
  response's ``apns-id`` header, so a server that does not echo it leaves the request
  waiting (reported here as "no answer").
"""

import asyncio
import json
import logging
import os
import ssl
import sys

from aioapns import APNs, NotificationRequest
from aioapns.connection import APNsDevelopmentClientProtocol

REQUEST_TIMEOUT_S = 10.0


class Recent(logging.Handler):
    """Keeps aioapns' first warning or error of a request (why it could not connect, say)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.first = None

    def emit(self, record):
        if self.first is None:
            self.first = record.getMessage()


RECENT = Recent()
logging.getLogger("aioapns").addHandler(RECENT)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def make_client(cfg, auth):
    certs = cfg["certs"]
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    common = dict(
        topic=cfg["topic"],
        use_sandbox=True,
        ssl_context=ctx,
        max_connection_attempts=1,
    )
    if auth == "cert":
        apns = APNs(client_cert=os.path.join(certs, "provider-bundle.pem"), **common)
    else:
        with open(os.path.join(certs, "AuthKey_%s.p8" % cfg["key_id"])) as f:
            key = f.read()
        apns = APNs(key=key, key_id=cfg["key_id"], team_id=cfg["team_id"], **common)

    class SimulatorProtocol(APNsDevelopmentClientProtocol):
        APNS_SERVER = cfg["host"]
        APNS_PORT = cfg["port"]

    apns.pool.protocol_class = SimulatorProtocol
    return apns


async def quiet_errors(_request, _result):
    """err_func: keeps aioapns from logging each expected error response."""


async def run_mode(cfg, auth, cases=("live", "bad", "gone")):
    try:
        apns = make_client(cfg, auth)
        apns.err_func = quiet_errors
    except Exception as e:  # noqa: BLE001 - reported, judged by run.py
        for case in cases:
            emit(dict(lib="aioapns", auth=auth, case=case, status=None,
                      error="APNs(): %s: %s" % (type(e).__name__, e)))
        return
    stalled = None  # after a request that got no answer in time, skip the others
    try:
        for case in cases:
            if stalled:
                emit(dict(lib="aioapns", auth=auth, case=case, status=None,
                          error="skipped: " + stalled))
                continue
            out = dict(lib="aioapns", auth=auth, case=case, status=None, reason=None,
                       timestamp=None, apns_id=None, error=None)
            request = NotificationRequest(device_token=cfg["tokens"][case],
                                          message=cfg["payload"])
            RECENT.first = None
            try:
                result = await asyncio.wait_for(apns.send_notification(request),
                                                REQUEST_TIMEOUT_S)
                out["status"] = int(result.status) if result.status else None
                out["reason"] = result.description
                out["timestamp"] = result.timestamp
                out["apns_id"] = result.notification_id
            except asyncio.TimeoutError:
                out["error"] = "no answer within %.0f s" % REQUEST_TIMEOUT_S
                stalled = "the %s request got no answer within %.0f s" % (case, REQUEST_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - reported, judged by run.py
                out["error"] = "%s%s%s" % (type(e).__name__, ": %s" % e if str(e) else "",
                                           " (aioapns: %s)" % RECENT.first if RECENT.first else "")
            emit(out)
    finally:
        apns.pool.close()


async def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    if sys.argv[2:] == ["offline"]:
        await run_mode(cfg, "cert", cases=("offline",))
        return
    for auth in sys.argv[2:] or ["cert", "token"]:
        await run_mode(cfg, auth)


if __name__ == "__main__":
    asyncio.run(main())
