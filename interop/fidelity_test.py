"""Interop test: what third-party tools produce that Apple accepts, against apns-sim's HTTP/2 API.

Run by interop/run.py with the venv's python and the path of its JSON config
({host, port, certs, key_id, team_id, topic, payload, tokens: {live, …}}). The tokens are
signed with PyJWT (the venv's, the library aioapns itself signs with), never with the
project's own signer, and spoken over the venv's `h2` (hyper-h2) library on plain sockets,
so nothing of apns-sim is on the client side. Prints one JSON object per check on stdout:

  {"case":"float-iat","status":200|…,"reason":…,"detail":…,"error":…}
      iat = time.time(), a JSON float as Python writes it (RFC 7519 NumericDate allows
      fractions; Apple accepts it)
  {"case":"string-iat",…}
      iat = str(int(time.time())), a string of decimal digits (Apple accepts it)
  {"case":"stream-limit","initial":N,"raised":M,"burst":K,"ok":J,"error":…}
      a fresh token connection: the server's first SETTINGS_MAX_CONCURRENT_STREAMS (N),
      the value a later SETTINGS frame raises it to once a valid token was seen (M), and
      how many of a burst of K concurrent requests then got 200 (J); "first" is the status
      of the push that carried the first token

run.py judges; this script only reports. Every wait is bounded. Only the configured host
(127.0.0.1) is contacted.
"""

import json
import os
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import jwt

WAIT_S = 10.0  # any single wait for the server
BURST = 20  # concurrent requests once the stream limit is raised


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def provider_token(cfg, iat):
    """An ES256 provider token signed by PyJWT with `iat` exactly as given."""
    with open(os.path.join(cfg["certs"], "AuthKey_%s.p8" % cfg["key_id"])) as f:
        key = f.read()
    return jwt.encode({"iss": cfg["team_id"], "iat": iat}, key, algorithm="ES256",
                      headers={"kid": cfg["key_id"]})


class Connection:
    """One HTTP/2 connection over TLS (ALPN h2), without a client certificate."""

    def __init__(self, cfg):
        ctx = ssl.create_default_context(cafile=os.path.join(cfg["certs"], "ca.pem"))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((cfg["host"], cfg["port"]), timeout=WAIT_S)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock.settimeout(WAIT_S)
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()
        self.cfg = cfg
        self.settings = []  # the server's MAX_CONCURRENT_STREAMS values, in order
        self.responses = {}  # stream id -> {"status", "reason", "detail", "body"}
        self.ended = set()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """Reads once and handles what arrived."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                changed = event.changed_settings.get(
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                if changed is not None:
                    self.settings.append(changed.new_value)
            elif isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
                self.responses[event.stream_id] = {
                    "status": int(headers.get(":status", "0")),
                    "detail": headers.get("apns-sim-detail"),
                    "body": b"",
                }
            elif isinstance(event, h2.events.DataReceived):
                self.responses.setdefault(event.stream_id, {"body": b""})["body"] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError("GOAWAY: %s %r" % (event.error_code, event.additional_data))
        self.flush()

    def wait(self, what, done):
        deadline = time.monotonic() + WAIT_S
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("no %s within %.0f s" % (what, WAIT_S))
            self.pump()

    def start_push(self, token, bearer):
        """Opens a stream with one push; returns its id."""
        stream = self.h2.get_next_available_stream_id()
        body = json.dumps(self.cfg["payload"]).encode()
        self.h2.send_headers(stream, [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", "/3/device/" + token),
            ("authorization", "bearer " + bearer),
            ("apns-topic", self.cfg["topic"]),
            ("apns-push-type", "alert"),
        ])
        self.h2.send_data(stream, body, end_stream=True)
        self.flush()
        return stream

    def result(self, stream):
        r = self.responses.get(stream, {})
        reason = None
        if r.get("body"):
            try:
                reason = json.loads(r["body"]).get("reason")
            except ValueError:
                reason = r["body"].decode(errors="replace")
        return r.get("status"), reason, r.get("detail")

    def close(self):
        try:
            self.h2.close_connection()
            self.flush()
            self.sock.close()
        except OSError:
            pass


def one_push(cfg, case, iat):
    out = dict(case=case, status=None, reason=None, detail=None, error=None)
    conn = None
    try:
        conn = Connection(cfg)
        stream = conn.start_push(cfg["tokens"]["live"], provider_token(cfg, iat))
        conn.wait("answer", lambda: stream in conn.ended)
        out["status"], out["reason"], out["detail"] = conn.result(stream)
    except Exception as e:  # noqa: BLE001 - reported, judged by run.py
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if conn:
            conn.close()
    emit(out)


def stream_limit(cfg):
    out = dict(case="stream-limit", initial=None, first=None, raised=None, burst=BURST, ok=0,
               error=None)
    conn = None
    try:
        conn = Connection(cfg)
        conn.wait("server SETTINGS", lambda: conn.settings)
        out["initial"] = conn.settings[0]
        bearer = provider_token(cfg, int(time.time()))
        first = conn.start_push(cfg["tokens"]["live"], bearer)
        conn.wait("first answer", lambda: first in conn.ended)
        out["first"] = conn.result(first)[0]
        conn.wait("a raised stream limit", lambda: len(conn.settings) > 1)
        out["raised"] = conn.settings[-1]
        if out["first"] != 200:
            raise RuntimeError("first push answered %s %s (%s)" % conn.result(first))
        burst = [conn.start_push(cfg["tokens"]["live"], bearer) for _ in range(BURST)]
        conn.wait("the burst's answers", lambda: all(s in conn.ended for s in burst))
        out["ok"] = sum(conn.result(s)[0] == 200 for s in burst)
    except Exception as e:  # noqa: BLE001 - reported, judged by run.py
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if conn:
            conn.close()
    emit(out)


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    one_push(cfg, "float-iat", time.time())
    one_push(cfg, "string-iat", str(int(time.time())))
    stream_limit(cfg)


if __name__ == "__main__":
    main()
