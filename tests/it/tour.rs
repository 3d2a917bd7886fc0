//! `apns-sim tour`: run through the library with a captured sink, and as the binary. The
//! output is checked step by step (each flow's narration, in order) and for the labelled
//! bytes: the command-2 items, the device frames, the HTTP/2 push's frames and HPACK fields
//! with its 200, the feedback tuple's fields, the error response's command, status and
//! identifier, the 410.

use std::process::Stdio;

use apns_sim::tour::{self, Pacing, TourConfig};
use http::Method;
use tokio::process::Command;

use crate::common::TIMEOUT;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// The tour's output, cut into its five steps (the text before step 1 is the preamble).
fn steps(out: &str) -> Vec<&str> {
    let starts: Vec<usize> = (1..=5)
        .filter_map(|n| {
            out.find(&format!("\nStep {n} of 5: "))
                .map(|i| i + "\nStep ".len())
        })
        .collect();
    let ends = starts.iter().skip(1).copied().chain([out.len()]);
    starts.iter().zip(ends).map(|(&a, b)| &out[a..b]).collect()
}

/// Whether `text` has a labelled field line naming `name` whose value starts with `value`.
fn has_field(text: &str, name: &str, value: &str) -> bool {
    text.lines().any(|line| {
        line.split_once(&format!(" {name} "))
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(value))
    })
}

/// Asserts that `needles` appear in `text` in this order.
fn in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        match text[at..].find(needle) {
            Some(i) => at += i + needle.len(),
            None => panic!("{needle:?} missing (or out of order) in:\n{text}"),
        }
    }
}

async fn run_tour() -> String {
    let mut out = Vec::new();
    let config = TourConfig {
        control_port: 0,
        pacing: Pacing::Straight,
        linger: false,
    };
    tokio::time::timeout(TIMEOUT, tour::run(config, &mut out))
        .await
        .expect("the tour finished in time")
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    String::from_utf8(out).expect("UTF-8 output")
}

#[tokio::test]
async fn the_tour_narrates_every_step_with_labelled_bytes() {
    let out = run_tour().await;
    assert!(out.contains("dashboard: http://127.0.0.1:"), "{out}");
    let steps = steps(&out);
    assert_eq!(steps.len(), 5, "{out}");
    for (i, step) in steps.iter().enumerate() {
        assert!(step.starts_with(&format!("{} of 5: ", i + 1)), "{step}");
        assert!(step.contains(&format!("\nStep {} done.", i + 1)), "{step}");
    }
    assert!(
        out.ends_with("every step happened as described.\n"),
        "{out}"
    );

    // 1. Registration: Hello, Welcome, Register, the minted token in Registered.
    let s = steps[0];
    in_order(
        s,
        &[
            "[device] TOUR-PHONE opens a TLS connection",
            "device → simulator: Hello",
            "[hub] opened a session for TOUR-PHONE in sandbox",
            "simulator → device: Welcome",
            "device → simulator: Register",
            "[hub] minted the device token",
            "simulator → device: Registered",
            "the tour plays the app server",
        ],
    );
    assert!(has_field(s, "message type", "0x01 (Hello)"), "{s}");
    assert!(has_field(s, "serial", "\"TOUR-PHONE\""), "{s}");
    assert!(has_field(s, "environment", "0 (sandbox)"), "{s}");
    assert!(has_field(s, "fresh install", "1 (yes"), "{s}");
    assert!(has_field(s, "token length", "32"), "{s}");
    let minted = s
        .split("[hub] minted the device token ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the minted token");
    assert_eq!(minted.len(), 64, "{minted}");
    assert!(has_field(s, "device token", minted), "{s}");

    // 2. A push: certificate, a labelled command-2 frame, routed, shown, acknowledged.
    let s = steps[1];
    in_order(
        s,
        &[
            "[provider] connects to the binary gateway",
            "[gateway] checked the certificate",
            "provider → gateway: command 2 frame, identifier 1",
            "[gateway] decoded the frame",
            "[hub] looked the token up",
            "simulator → device: Notification",
            "[device] shows the notification",
            "device → simulator: Ack",
            "[hub] recorded notification 1 as acknowledged",
            "success is silent",
            "[provider] now pushes over the HTTP/2 API",
            "[provider] its HTTP/2 library opens the connection and sends POST /3/device/",
            "provider → HTTP/2 API: connection preface, 24 bytes",
            "provider → HTTP/2 API: HEADERS frame, stream 1",
            "provider → HTTP/2 API: DATA frame, stream 1",
            "HTTP/2 API → provider: HEADERS frame, stream 1",
            "[HTTP/2 API] sent its SETTINGS",
            "answered the request of stream 1 on the same stream with a HEADERS frame alone",
            "[HTTP/2 API] answered 200 with apns-id ",
            "[hub] routed it like the binary one",
            "simulator → device: Notification",
            "[device] shows the notification for com.example.app: {\"aps\":{\"alert\":\"Hello over HTTP/2\"}}",
            "device → simulator: Ack",
            "[hub] recorded the HTTP/2 notification ",
            "[provider] is done with this connection",
            "provider → HTTP/2 API: GOAWAY frame",
        ],
    );
    // The HTTP/2 push's bytes, labelled: the request's HPACK fields and body, the 200
    // (HEADERS alone, END_STREAM), the apns-id the device then gets.
    let h2 = s
        .split("[provider] now pushes over the HTTP/2 API")
        .nth(1)
        .expect("the HTTP/2 push");
    assert!(
        has_field(h2, "HPACK indexed", ":method: POST (static table entry 3)"),
        "{h2}"
    );
    assert!(
        has_field(h2, "HPACK literal", &format!(":path: /3/device/{minted} (")),
        "{h2}"
    );
    assert!(
        has_field(h2, "HPACK literal", "apns-push-type: alert ("),
        "{h2}"
    );
    assert!(
        has_field(
            h2,
            "data",
            "{\"aps\":{\"alert\":\"Hello over HTTP/2\"}} (37 bytes)"
        ),
        "{h2}"
    );
    assert!(
        has_field(h2, "HPACK indexed", ":status: 200 (static table entry 8)"),
        "{h2}"
    );
    assert!(
        has_field(h2, "flags", "0x05 (END_STREAM | END_HEADERS)"),
        "{h2}"
    );
    let apns_id = h2
        .split("[HTTP/2 API] answered 200 with apns-id ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .expect("the apns-id");
    assert!(
        has_field(h2, "HPACK literal", &format!("apns-id: {apns_id} (")),
        "{h2}"
    );
    assert!(has_field(h2, "apns-id", apns_id), "{h2}");
    assert!(has_field(h2, "device token", minted), "{h2}");
    assert!(has_field(s, "command", "2 (frame)"), "{s}");
    assert!(has_field(s, "frame length", "95"), "{s}");
    for item in [
        "1 (device token)",
        "2 (payload)",
        "3 (identifier)",
        "4 (expiry)",
        "5 (priority)",
    ] {
        assert!(has_field(s, "item id", item), "{item}: {s}");
    }
    assert!(has_field(s, "device token", minted), "{s}");
    assert!(has_field(s, "identifier", "00000001 (1)"), "{s}");
    assert!(has_field(s, "priority", "10"), "{s}");
    assert!(has_field(s, "payload", "{\"aps\""), "{s}");
    assert!(has_field(s, "message type", "0x83 (Notification)"), "{s}");
    assert!(has_field(s, "message type", "0x03 (Ack)"), "{s}");
    assert!(has_field(s, "apns-id", ""), "{s}");

    // 3. Uninstall: not installed, feedback tuple, 410 with the same moment, reinstall.
    let s = steps[2];
    in_order(
        s,
        &[
            "[device] the user uninstalls com.example.app",
            "provider → gateway: command 2 frame, identifier 2",
            "[hub] the token is still valid as far as it knows",
            "[device] has no app holding the token",
            "device → simulator: NotInstalled",
            "[hub] recorded notification 2 as not installed",
            "[provider] connects to the feedback service",
            "feedback service → provider, then it closes, 38 bytes",
            "[feedback service] handed over 1 tuple(s)",
            "[provider] reads the feedback service a second time",
            "feedback service → provider, then it closes, 0 bytes",
            "[feedback service] sent nothing this time",
            "[provider] its HTTP/2 library opens the connection and sends POST /3/device/",
            "provider → HTTP/2 API: connection preface, 24 bytes",
            "provider → HTTP/2 API: HEADERS frame, stream 1",
            "provider → HTTP/2 API: DATA frame, stream 1",
            "HTTP/2 API → provider: HEADERS frame, stream 1",
            "HTTP/2 API → provider: DATA frame, stream 1",
            "{\"reason\":\"Unregistered\",\"timestamp\":",
            "[HTTP/2 API] sent its SETTINGS",
            "answered the request of stream 1 on the same stream",
            "[HTTP/2 API] answered 410 Unregistered with timestamp",
            "[hub] listed the token for feedback again after this push to it",
            "[provider] is done with this connection",
            "provider → HTTP/2 API: GOAWAY frame",
            "[device] the user installs com.example.app again",
            "a reinstalled app gets a new token",
        ],
    );
    assert!(has_field(s, "message type", "0x04 (NotInstalled)"), "{s}");
    // The HTTP/2 bytes, every field labelled: the preface, the frame headers, SETTINGS
    // entries (and their acknowledgements), the request's HPACK fields, the 410's.
    let h2 = s
        .split("[provider] its HTTP/2 library opens the connection")
        .nth(1)
        .and_then(|r| r.split("[device] the user installs").next())
        .expect("the HTTP/2 exchange");
    assert!(
        has_field(
            h2,
            "preface",
            "\"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\""
        ),
        "{h2}"
    );
    assert!(h2.contains("50 52 49 20 2a 20 48 54 54 50 2f 32"), "{h2}");
    assert!(has_field(h2, "type", "0x4 (SETTINGS)"), "{h2}");
    assert!(has_field(h2, "flags", "0x01 (ACK)"), "{h2}");
    assert!(
        has_field(h2, "setting", "SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = "),
        "{h2}"
    );
    assert!(has_field(h2, "type", "0x1 (HEADERS)"), "{h2}");
    assert!(has_field(h2, "flags", "0x04 (END_HEADERS)"), "{h2}");
    assert!(has_field(h2, "stream id", "1"), "{h2}");
    assert!(has_field(h2, "length", ""), "{h2}");
    assert!(
        has_field(h2, "HPACK indexed", ":method: POST (static table entry 3)"),
        "{h2}"
    );
    assert!(
        has_field(h2, "HPACK literal", &format!(":path: /3/device/{minted} (")),
        "{h2}"
    );
    assert!(
        has_field(h2, "HPACK literal", "apns-topic: com.example.app ("),
        "{h2}"
    );
    assert!(has_field(h2, "name", "apns-topic"), "{h2}");
    assert!(has_field(h2, "value", "com.example.app"), "{h2}");
    assert!(has_field(h2, "HPACK literal", ":status: 410 ("), "{h2}");
    assert!(
        has_field(h2, "data", "{\"aps\":{\"alert\":\"Anyone?\"}} (27 bytes)"),
        "{h2}"
    );
    assert!(
        has_field(h2, "data", "{\"reason\":\"Unregistered\",\"timestamp\":"),
        "{h2}"
    );
    assert!(has_field(h2, "type", "0x7 (GOAWAY)"), "{h2}");
    assert!(has_field(h2, "error code", "0x0 (NO_ERROR)"), "{h2}");
    assert!(has_field(s, "time", ""), "{s}");
    assert!(has_field(s, "token length", "32"), "{s}");
    assert!(has_field(s, "device token", minted), "{s}");
    let tuple_time = s
        .lines()
        .find_map(|l| l.split_once(" time ").map(|(_, v)| v.trim().to_owned()))
        .expect("the tuple's time");
    let secs = tuple_time.split_whitespace().next().unwrap();
    let ms = s
        .split("\"timestamp\":")
        .nth(1)
        .and_then(|r| r.split('}').next())
        .expect("the 410's timestamp");
    assert_eq!(
        &ms[..ms.len() - 3],
        secs,
        "410 timestamp {ms} vs feedback {secs}"
    );

    // 4. Offline: stored, discarded, delivered on return; stored, clock moved, expired.
    let s = steps[3];
    in_order(
        s,
        &[
            "[device] TOUR-PHONE loses its network",
            "[hub] saw the session end",
            "identifier 10",
            "[hub] stored notification 10",
            "identifier 11",
            "[hub] discarded notification 11: expiry 0",
            "[device] TOUR-PHONE is back on the network",
            "device → simulator: Hello",
            "simulator → device: Notification",
            "[device] shows the notification for com.example.app: {\"aps\":{\"alert\":\"Kept for later\"}}",
            "[hub] recorded notification 10 as acknowledged",
            "[hub] saw the session end",
            "[hub] stored notification 12",
            "[clock] the tour moves the simulator's clock 120 seconds forward",
            "[hub] found notification 12 expired",
        ],
    );
    assert!(has_field(s, "identifier", "0000000a (10)"), "{s}");

    // 5. The error response: 20 delivered, 21 refused (status 5, identifier 21), close,
    // 22 and 23 discarded.
    let s = steps[4];
    in_order(
        s,
        &[
            "identifier 20",
            "identifier 21",
            "identifier 22",
            "identifier 23",
            "[hub] recorded notification 20 as acknowledged",
            "[gateway] refused notification 21: device token is 31 bytes",
            "gateway → provider: error response, 6 bytes",
            "[gateway] status 5 (Invalid token size) names notification 21",
            "[gateway] closed the connection. Notifications 22 and 23 were discarded unread",
        ],
    );
    let bad = s
        .split("identifier 21, ")
        .nth(1)
        .and_then(|r| r.split("identifier 22").next())
        .expect("frame 21");
    assert!(has_field(bad, "item length", "31"), "{bad}");
    assert!(has_field(bad, "identifier", "00000015 (21)"), "{bad}");
    let response = s
        .split("error response, 6 bytes:")
        .nth(1)
        .expect("response");
    assert!(response.contains("08 05 00 00 00 15"), "{response}");
    assert!(
        has_field(response, "command", "8 (error response)"),
        "{response}"
    );
    assert!(
        has_field(response, "status", "5 (Invalid token size)"),
        "{response}"
    );
    assert!(
        has_field(response, "identifier", "00000015 (21)"),
        "{response}"
    );
    assert!(!s.contains("Fourth of four\"}}, and acknowledges"), "{s}");
}

/// The binary: `tour --fast` completes with exit code 0; without `--fast` a stdin that is
/// not a terminal goes straight through too; `--linger` with stdin at its end says the
/// simulator stays up and stops; a busy control port is an error, not a hang.
#[tokio::test]
async fn the_binary_runs_the_tour_and_fails_loudly() {
    for args in [
        &["tour", "--fast"][..],
        &["tour"][..],
        &["tour", "--fast", "--linger"][..],
    ] {
        let output = tokio::time::timeout(
            TIMEOUT,
            Command::new(BIN)
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("in time")
        .expect("ran");
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {out}");
        assert!(out.contains("The tour is complete"), "{out}");
        assert!(!out.contains("Press Enter to go on"), "{out}");
        assert_eq!(
            out.contains("The simulator stays up"),
            args.contains(&"--linger"),
            "{args:?}: {out}"
        );
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let output = Command::new(BIN)
        .args(["tour", "--fast", "--control-port", &port])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(&format!("binding 127.0.0.1:{port}")), "{err}");
}

/// At the end of a lingering tour, reads the delivery log through the control API, which is
/// still up, as the dashboard would.
struct LookAtTheEnd {
    seen: Option<(u16, serde_json::Value)>,
}

impl tour::Pace for LookAtTheEnd {
    fn before_step(&mut self, next: u8, control: std::net::SocketAddr) -> tour::PauseFuture<'_> {
        Box::pin(async move {
            if next == tour::LINGER {
                self.seen = Some(
                    crate::control_devices::call(control, Method::GET, "/v1/notifications", None)
                        .await,
                );
            }
            Ok(())
        })
    }
}

/// With `linger`, the tour's simulator is still up once every step is done: its control API
/// answers with the tour's notifications, and the tour ends when the caller lets it.
#[tokio::test]
async fn a_lingering_tour_keeps_its_simulator_up_after_the_last_step() {
    let mut out = Vec::new();
    let config = TourConfig {
        control_port: 0,
        pacing: Pacing::Straight,
        linger: true,
    };
    let mut look = LookAtTheEnd { seen: None };
    tokio::time::timeout(TIMEOUT, tour::run_with(config, &mut out, &mut look))
        .await
        .expect("the tour ended in time")
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("The tour is complete"), "{out}");
    let (status, body) = look.seen.expect("the hook was called after the last step");
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for outcome in [
        "acknowledged",
        "not_installed",
        "unregistered",
        "expired",
        "rejected",
    ] {
        assert!(text.contains(outcome), "{outcome} missing from {text}");
    }
}

/// Before step 2, sets a binary fault on the tour's simulator through its control API, as a
/// person at the dashboard could.
struct BreakTheGateway;

impl tour::Pace for BreakTheGateway {
    fn before_step(&mut self, next: u8, control: std::net::SocketAddr) -> tour::PauseFuture<'_> {
        Box::pin(async move {
            if next == 2 {
                let fault = serde_json::json!({"on": "binary", "error": {"status": 1}});
                let (status, body) =
                    crate::control_devices::call(control, Method::POST, "/v1/faults", Some(fault))
                        .await;
                assert_eq!(status, 201, "{body}");
            }
            Ok(())
        })
    }
}

/// The narration comes from what happened: when the gateway refuses the push of step 2, the
/// tour says so and fails that step, instead of printing the step as if it had worked.
#[tokio::test]
async fn a_step_that_does_not_happen_fails_the_tour() {
    let mut out = Vec::new();
    let config = TourConfig {
        control_port: 0,
        pacing: Pacing::Straight,
        linger: false,
    };
    let err = tokio::time::timeout(
        TIMEOUT,
        tour::run_with(config, &mut out, &mut BreakTheGateway),
    )
    .await
    .expect("the tour ended in time")
    .unwrap_err();
    let out = String::from_utf8(out).unwrap();
    assert!(
        matches!(err, tour::TourError::Step { step: 2, .. }),
        "{err}\n{out}"
    );
    assert!(err.to_string().contains("the hub says rejected"), "{err}");
    assert!(out.contains("\nStep 1 done."), "{out}");
    assert!(
        out.contains("\nSTEP 2 FAILED: expected notification 1 to be sent"),
        "{out}"
    );
    assert!(!out.contains("Step 2 done."), "{out}");
    assert!(!out.contains("[device] shows the notification"), "{out}");
    assert!(!out.contains("Step 3 of 5"), "{out}");
}
