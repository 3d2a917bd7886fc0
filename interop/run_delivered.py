"""Shared by the `apns-sim run` providers (interop/run_unmodified.sh): asks the control API
(APNS_SIM_CONTROL_URL, standard library only) whether the notification reached the
device, waiting on the simulator's own event (GET /v1/notifications/wait), never sleeping.
"""

import json
import os
import urllib.error
import urllib.request


def delivered(token, alert):
    """True when the device acknowledged one notification with `alert` for `token`."""
    url = (
        os.environ["APNS_SIM_CONTROL_URL"]
        + f"/v1/notifications/wait?token={token}&outcome=acknowledged&count=1&timeout_ms=20000"
    )
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as e:
        print(f"no delivery: {e.code} {e.read().decode(errors='replace')}")
        return False
    alerts = [n["payload"].get("aps", {}).get("alert") for n in body["notifications"]]
    print(f"delivered: {alerts}")
    return alert in alerts
