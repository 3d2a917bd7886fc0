#!/usr/bin/env python3
"""Schemathesis against the control API's own OpenAPI document (`GET /v1/openapi.json`).

Run by .ci/run with the interop venv (schemathesis is pinned in interop/requirements.txt):
    interop/.venv/bin/python interop/schema_test.py

It starts `apns-sim serve` with every port 0 and the demo fleet (so the device routes have
devices to act on), then runs `schemathesis run` with every check: each generated request,
valid or not, must get an answer the document lists for that route, with a body of the
documented schema, a valid request must not be refused, and no answer may be a 5xx. The run
is bounded (SCHEMATHESIS_MAX_TIME seconds of generation, default 120) and deterministic
(a fixed seed), so a failure is reproduced by running it again. Reports (JUnit) go to
target/schemathesis/. Per-operation settings are in interop/schemathesis.toml.

Exit status: schemathesis's own (0 when every check held).
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import control_e2e  # noqa: E402 - the same simulator start-up, standard library only

# A generated `GET /v1/notifications/wait` may legitimately wait its whole `timeout_ms`
# (at most 60 s, `MAX_TIMEOUT_MS`), so a request's own time limit must be longer than that.
REQUEST_TIMEOUT_S = 75
SEED = 20261201


def main():
    tmp = tempfile.mkdtemp(prefix="apns-sim-schema-")
    proc, addrs = control_e2e.start_simulator(tmp, demo_devices=True)
    try:
        base = "http://" + addrs["control API"]
        schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        report_dir = os.path.join(ROOT, "target", "schemathesis")
        argv = [
            schemathesis, "--config-file", os.path.join(HERE, "schemathesis.toml"),
            "run", base + "/v1/openapi.json",
            "--checks", "all",
            "--max-time", os.environ.get("SCHEMATHESIS_MAX_TIME", "120"),
            "--max-examples", "40",
            "--request-timeout", str(REQUEST_TIMEOUT_S),
            "--max-response-time", str(REQUEST_TIMEOUT_S),
            "--seed", str(SEED),
            "--generation-deterministic",
            "--report", "junit", "--report-dir", report_dir,
        ]
        print(" ".join(argv), flush=True)
        return subprocess.run(argv, timeout=1200).returncode
    finally:
        proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
