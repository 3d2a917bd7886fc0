#!/usr/bin/env python3
"""An HTTP/2 provider as a user has it, for `apns-sim run` (interop/run_unmodified.sh):
httpx with http2, Apple's sandbox host and port hard-coded, and only the system's trust
store (httpx's create_ssl_context, which reads SSL_CERT_FILE). Only the credentials and
the device token come from the environment (`apns-sim run` sets APNS_SIM_CERT_FILE,
APNS_SIM_KEY_FILE and APNS_SIM_TOKEN), and the delivery is checked on the control API.

Exit status: 0 when Apple's host answered 200 over HTTP/2 and the device got the
notification; 1 otherwise.
"""

import os
import sys

import httpx

from run_delivered import delivered

APNS = "https://api.sandbox.push.apple.com:443"
ALERT = "hello from httpx"


def main():
    token = os.environ["APNS_SIM_TOKEN"]
    context = httpx.create_ssl_context()
    context.load_cert_chain(os.environ["APNS_SIM_CERT_FILE"], os.environ["APNS_SIM_KEY_FILE"])
    with httpx.Client(http2=True, verify=context) as client:
        answer = client.post(
            f"{APNS}/3/device/{token}",
            headers={"apns-topic": "com.example.app", "apns-push-type": "alert"},
            json={"aps": {"alert": ALERT}},
        )
    print(f"{APNS}: {answer.status_code} over {answer.http_version}, apns-id {answer.headers.get('apns-id')}")
    ok = answer.status_code == 200 and answer.http_version == "HTTP/2"
    return 0 if ok and delivered(token, ALERT) else 1


if __name__ == "__main__":
    sys.exit(main())
