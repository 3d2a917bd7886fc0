#!/usr/bin/env python3
"""Interop test: real third-party APNs provider libraries against apns-sim's HTTP/2 API.

Run by .ci/run after `cargo test`, once the libraries are installed:
    npm ci --prefix interop                     # @parse/node-apn into interop/node_modules
    python3 -m venv interop/.venv && interop/.venv/bin/pip install -r interop/requirements.txt
    python3 interop/run.py

What it does (standard library only):
 1. Starts `apns-sim serve` on port 0 everywhere, with fresh certificates in a temp folder and
    one demo device (its token is the live one).
 2. Makes an unregistered token: a simulated device (`apns-sim device`) registers
    com.example.app, uninstalls it, receives one push through the binary gateway and reports
    it not installed; the feedback service then reports the token with a time in seconds.
 3. Runs interop/node_apn_test.js (@parse/node-apn) and interop/aioapns_test.py (aioapns),
    each with certificate auth and token (JWT) auth, pushing {"aps":{"alert":"interop"}} to
    topic com.example.app for a live, a bad (64 hex digits nobody registered) and the
    unregistered token. Those scripts report what their library returned; this one judges:
    live -> 200; bad -> 400 BadDeviceToken; unregistered -> 410 Unregistered with a
    millisecond timestamp in the second the feedback service reported.
 4. Runs interop/fidelity_test.py (PyJWT and hyper-h2 from the venv, nothing of ours on the
    client side): a provider token whose `iat` is a float (Python's time.time()) and one
    whose `iat` is a string of digits must both be answered 200, as Apple answers them; on
    a fresh token connection the server's stream limit must start at 1 and be raised by a
    SETTINGS frame after the first valid token, and a burst of concurrent pushes must then
    all be answered 200.
 5. A library-default push (aioapns, no time_to_live, so no apns-expiration) to a device
    that is offline must be answered 200 and reach the device when it comes back online.
 6. Checks that the demo device showed one notification per push to it answered 200.

One line per check, then `N passed, M failed`; exit status 1 on any failure.
Every wait is bounded; all children are killed on exit. Only 127.0.0.1 is contacted.

Environment: APNS_SIM_BIN (default target/debug/apns-sim, built with `cargo build` if
missing), INTEROP_PYTHON (default interop/.venv/bin/python), INTEROP_NODE (default node),
INTEROP_KEEP=1 keeps the temp folder (with the simulator's log) for inspection.
"""

import atexit
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOPIC = "com.example.app"
PAYLOAD = {"aps": {"alert": "interop"}}
HOST = "127.0.0.1"
WAIT_S = 30.0  # any single wait for the simulator or a device
SCRIPT_TIMEOUT_S = 120.0  # one library's whole script (both auth modes)
LIBS = ("node-apn", "aioapns")
AUTHS = ("cert", "token")
CASES = ("live", "bad", "gone")

CHILDREN = []  # Popen objects this driver started; killed on exit


class Failure(Exception):
    """Setup could not complete; the message says why."""


def kill_children():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def on_signal(signum, _frame):
    kill_children()
    sys.exit(128 + signum)


class Child:
    """A child process whose stdout lines are read by a thread into a queue."""

    def __init__(self, name, argv, cwd, stdin=False, log_path=None):
        self.name = name
        self.lines = queue.Queue()
        self.seen = []  # every stdout line so far, for messages
        stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            bufsize=1,
        )
        if log_path:
            stderr.close()
        CHILDREN.append(self.proc)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.seen.append(line)
            self.lines.put(line)
        self.lines.put(None)  # end of output

    def wait_line(self, what, match, timeout=WAIT_S):
        """Returns match(line)'s first true result among the next lines, within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: no %s within %.0f s" % (self.name, what, timeout))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise Failure("%s exited (status %s) before %s; its output: %s"
                              % (self.name, self.proc.wait(), what, " | ".join(self.seen[-8:])))
            found = match(line)
            if found:
                return found

    def send(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def simulator_binary():
    path = os.environ.get("APNS_SIM_BIN") or os.path.join(ROOT, "target", "debug", "apns-sim")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True, timeout=1800)
    if not os.path.exists(path):
        raise Failure("no simulator binary at %s" % path)
    return path


def start_simulator(binary, tmp):
    sim = Child("apns-sim serve", [
        binary, "serve", "--certs", os.path.join(tmp, "certs"), "--bind", HOST,
        "--gateway-port", "0", "--feedback-port", "0", "--http2-port", "0",
        "--device-port", "0", "--control-port", "0", "--devices", "1",
    ], cwd=tmp, log_path=os.path.join(tmp, "serve.log"))
    # Output of `serve` (src/cli/serve.rs): "  binary gateway   ADDR", …, "demo devices:",
    # "  SERIAL  ENV  APP  TOKEN", "push to the first one …".
    addr_re = re.compile(r"^\s+(binary gateway|feedback service|HTTP/2 API|device endpoint)"
                         r"\s+(\S+)$")
    dev_re = re.compile(r"^\s+(\S+)\s+(sandbox|production)\s+(\S+)\s+([0-9a-f]{64})$")
    addrs, demo = {}, None

    def parse(line):
        nonlocal demo
        m = addr_re.match(line)
        if m:
            addrs[m.group(1)] = m.group(2)
        m = dev_re.match(line)
        if m and demo is None and m.group(2) == "sandbox" and m.group(3) == TOPIC:
            demo = (m.group(1), m.group(4))
        return line.startswith("push to the first one")

    sim.wait_line("demo device list", parse)
    names = ("binary gateway", "feedback service", "HTTP/2 API", "device endpoint")
    for name in names:
        if name not in addrs:
            raise Failure("serve printed no %s address" % name)
        if not addrs[name].startswith(HOST + ":"):
            raise Failure("%s is on %s, not %s" % (name, addrs[name], HOST))
    if demo is None:
        raise Failure("serve printed no sandbox %s demo device" % TOPIC)
    return sim, addrs, demo


def read_manifest(certs):
    with open(os.path.join(certs, "manifest.json")) as f:
        manifest = json.load(f)
    keys = [e for e in manifest["files"] if e.get("role") == "auth-key"]
    if not keys:
        raise Failure("manifest.json lists no auth key")
    return keys[0]["key_id"], keys[0]["team_id"]


def unregistered_token(binary, tmp, addrs):
    """A token whose app was uninstalled and reported: (token, feedback time in seconds)."""
    certs = os.path.join(tmp, "certs")
    tls = ["--cert", os.path.join(certs, "provider.pem"),
           "--key", os.path.join(certs, "provider-key.pem"),
           "--ca", os.path.join(certs, "ca.pem")]
    device = Child("apns-sim device", [
        binary, "device", "--server", addrs["device endpoint"],
        "--ca", os.path.join(certs, "ca.pem"), "--serial", "INTEROP-GONE", "--app", TOPIC,
    ], cwd=tmp, stdin=True, log_path=os.path.join(tmp, "device.log"))

    token = device.wait_line("registered event", json_event("registered", app=TOPIC))["token"]
    device.send("uninstall " + TOPIC)
    device.wait_line("uninstalled event", json_event("uninstalled", app=TOPIC))
    push = subprocess.run(
        [binary, "push", "--token", token, "--gateway", addrs["binary gateway"],
         "--payload", json.dumps(PAYLOAD), "--wait-ms", "300"] + tls,
        cwd=tmp, capture_output=True, text=True, timeout=WAIT_S)
    if push.returncode != 0:
        raise Failure("binary push to the uninstalled app failed: %s"
                      % (push.stdout + push.stderr).strip())
    device.wait_line("not_installed event", json_event("not_installed", token=token))
    device.send("quit")
    # The device printed not_installed after telling the simulator; the feedback service
    # lists the token once the hub has recorded it. Poll it (each read clears it).
    deadline = time.monotonic() + WAIT_S
    while True:
        fb = subprocess.run([binary, "feedback", "--feedback", addrs["feedback service"]] + tls,
                            cwd=tmp, capture_output=True, text=True, timeout=WAIT_S)
        for line in fb.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == token and parts[0].isdigit():
                device.stop(signal.SIGTERM)
                return token, int(parts[0])
        if fb.returncode != 0:
            raise Failure("apns-sim feedback failed: %s" % (fb.stdout + fb.stderr).strip())
        if time.monotonic() > deadline:
            raise Failure("the feedback service did not report %s within %.0f s"
                          % (token, WAIT_S))
        time.sleep(0.1)


def json_event(name, **fields):
    """A wait_line matcher for an `apns-sim device` JSON event with these fields."""
    def match(line):
        try:
            ev = json.loads(line)
        except ValueError:
            return None
        if ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items()):
            return ev
        return None
    return match


def offline_device(binary, tmp, addrs):
    """A device registered for TOPIC that then went offline: (Child, token)."""
    certs = os.path.join(tmp, "certs")
    device = Child("apns-sim device (offline)", [
        binary, "device", "--server", addrs["device endpoint"],
        "--ca", os.path.join(certs, "ca.pem"), "--serial", "INTEROP-OFFLINE", "--app", TOPIC,
    ], cwd=tmp, stdin=True, log_path=os.path.join(tmp, "offline-device.log"))
    token = device.wait_line("registered event", json_event("registered", app=TOPIC))["token"]
    device.send("offline")
    device.wait_line("offline event", json_event("offline"))
    return device, token


def run_library(lib, config_path, tmp, extra=()):
    """Runs one library's script; returns ({(auth, case): result}, problem or None)."""
    if lib == "node-apn":
        if not os.path.isdir(os.path.join(HERE, "node_modules", "@parse", "node-apn")):
            return {}, "not installed: run `npm ci --prefix interop`"
        argv = [os.environ.get("INTEROP_NODE", "node"),
                os.path.join(HERE, "node_apn_test.js"), config_path]
    else:
        python = os.environ.get("INTEROP_PYTHON") or os.path.join(HERE, ".venv", "bin", "python")
        if not os.path.exists(python):
            return {}, ("not installed: run `python3 -m venv interop/.venv && "
                        "interop/.venv/bin/pip install -r interop/requirements.txt`")
        script = "fidelity_test.py" if lib == "fidelity" else "aioapns_test.py"
        argv = [python, os.path.join(HERE, script), config_path]
    argv += list(extra)
    env = dict(os.environ)
    for var in ("DEBUG", "NODE_DEBUG", "NODE_OPTIONS", "PYTHONPATH"):
        env.pop(var, None)
    err_path = os.path.join(tmp, "%s%s.stderr" % (lib, "-" + "-".join(extra) if extra else ""))
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        CHILDREN.append(proc)
        try:
            out, _ = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
            problem = None if proc.returncode == 0 else "exited with status %d" % proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
            problem = "killed after %.0f s" % SCRIPT_TIMEOUT_S
    results = {}
    for line in out.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("lib", "fidelity") == lib:
            results[(r.get("auth"), r.get("case"))] = r
    if problem:
        with open(err_path) as f:
            tail = " | ".join(line.strip() for line in f.read().strip().splitlines()[-3:])
        problem += (": " + tail) if tail else ""
    return results, problem


def judge(case, r, gone_seconds):
    """(ok, text) for one library result."""
    if r.get("error") and r.get("status") is None:
        return False, "no response: %s" % r["error"]
    status, reason, ts = r.get("status"), r.get("reason"), r.get("timestamp")
    got = "%s %s" % (status, reason or "") + ("" if ts is None else " timestamp=%s" % ts)
    got = got.strip()
    if case == "live":
        if status == 200 and not reason:
            return True, "200, apns-id %s" % r.get("apns_id")
        return False, "expected 200, got %s" % got
    if case == "bad":
        if status == 400 and reason == "BadDeviceToken":
            return True, got
        return False, "expected 400 BadDeviceToken, got %s" % got
    if status != 410 or reason != "Unregistered":
        return False, "expected 410 Unregistered, got %s" % got
    if not isinstance(ts, int) or isinstance(ts, bool):
        return False, "410 Unregistered without a numeric timestamp (got %r)" % (ts,)
    if ts // 1000 != gone_seconds:
        return False, ("timestamp %d ms is not in second %d reported by the feedback service"
                       % (ts, gone_seconds))
    return True, "%s (ms; feedback said %d s)" % (got, gone_seconds)


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(kill_children)
    tmp = tempfile.mkdtemp(prefix="apns-sim-interop-")
    if os.environ.get("INTEROP_KEEP"):
        print("interop: keeping %s" % tmp)
    else:
        atexit.register(shutil.rmtree, tmp, True)

    passed = failed = 0

    def report(ok, name, text):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print("%s %s: %s" % ("PASS" if ok else "FAIL", name, text), flush=True)

    labels = {"live": "live token", "bad": "bad token", "gone": "unregistered token"}
    checks = [(lib, auth, case) for lib in LIBS for auth in AUTHS for case in CASES]
    sim = None
    try:
        binary = simulator_binary()
        sim, addrs, (demo_serial, live) = start_simulator(binary, tmp)
        key_id, team_id = read_manifest(os.path.join(tmp, "certs"))
        gone, gone_seconds = unregistered_token(binary, tmp, addrs)
        away, offline = offline_device(binary, tmp, addrs)
    except (Failure, OSError, subprocess.SubprocessError) as e:
        for lib, auth, case in checks:
            report(False, "%s %s %s" % (lib, auth, labels[case]), "setup failed: %s" % e)
        report(False, "demo device shows each accepted push", "setup failed")
        print("%d passed, %d failed" % (passed, failed))
        return 1

    bad = secrets.token_hex(32)
    while bad in (live, gone):
        bad = secrets.token_hex(32)
    config = {
        "host": HOST,
        "port": int(addrs["HTTP/2 API"].rsplit(":", 1)[1]),
        "certs": os.path.join(tmp, "certs"),
        "key_id": key_id,
        "team_id": team_id,
        "topic": TOPIC,
        "payload": PAYLOAD,
        "tokens": {"live": live, "bad": bad, "gone": gone, "offline": offline},
    }
    config_path = os.path.join(tmp, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)

    accepted = 0
    for lib in LIBS:
        results, problem = run_library(lib, config_path, tmp)
        for auth in AUTHS:
            for case in CASES:
                name = "%s %s %s" % (lib, auth, labels[case])
                r = results.get((auth, case))
                if r is None:
                    report(False, name, "no result (%s)" % (problem or "script reported none"))
                    continue
                ok, text = judge(case, r, gone_seconds)
                accepted += case == "live" and r.get("status") == 200
                report(ok, name, text)
        if problem and results:
            print("note: %s script %s" % (lib, problem))

    # What other tools produce that Apple accepts (fidelity_test.py).
    results, problem = run_library("fidelity", config_path, tmp)
    for case, label in (("float-iat", "PyJWT token with a float iat (time.time())"),
                        ("string-iat", "PyJWT token with a digit-string iat")):
        r = results.get((None, case))
        if r is None:
            report(False, label, "no result (%s)" % (problem or "script reported none"))
            continue
        ok = r.get("status") == 200
        accepted += ok
        report(ok, label, "200" if ok else "expected 200, got %s %s (%s)%s" % (
            r.get("status"), r.get("reason"), r.get("detail"),
            " error: %s" % r["error"] if r.get("error") else ""))
    r = results.get((None, "stream-limit"))
    label = "token connection: stream limit 1 until a valid token, then raised"
    if r is None:
        report(False, label, "no result (%s)" % (problem or "script reported none"))
    else:
        raised = r.get("raised") or 0
        ok = r.get("initial") == 1 and raised > 1 and r.get("ok") == r.get("burst")
        accepted += (r.get("first") == 200) + (r.get("ok") or 0)
        report(ok, label, "initial %s, raised to %s, %s of %s concurrent pushes answered 200%s"
               % (r.get("initial"), r.get("raised"), r.get("ok"), r.get("burst"),
                  "; error: %s" % r["error"] if r.get("error") else ""))

    # A library-default push (no apns-expiration) to an offline device is stored.
    label = "aioapns default push (no expiry) to an offline device arrives when it returns"
    results, problem = run_library("aioapns", config_path, tmp, extra=("offline",))
    r = results.get(("cert", "offline"))
    if r is None or r.get("status") != 200:
        report(False, label, "push not answered 200: %s" % (
            r if r is not None else problem or "script reported none"))
    else:
        away.send("online")
        try:
            away.wait_line("the stored notification", json_event("notification", token=offline))
            report(True, label, "200, then shown after online")
        except Failure as e:
            report(False, label, "answered 200 but never shown: %s" % e)
    away.stop(signal.SIGTERM)

    # Each push answered 200 reached the demo device (serve prints what it shows).
    # (Each library serialises the payload its own way, so compare it as JSON.)
    prefix = "device %s shows a notification for %s: " % (demo_serial, TOPIC)

    def shown_line(line):
        if not line.startswith(prefix):
            return False
        try:
            return json.loads(line[len(prefix):]) == PAYLOAD
        except ValueError:
            return False

    name = "demo device shows each accepted push"
    if accepted == 0:
        report(False, name, "no push was accepted")
    else:
        shown = 0
        try:
            while shown < accepted:
                sim.wait_line("notification shown", shown_line, timeout=10)
                shown += 1
        except Failure:
            pass
        report(shown == accepted, name, "%d of %d shown by %s" % (shown, accepted, demo_serial))

    sim.stop()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
