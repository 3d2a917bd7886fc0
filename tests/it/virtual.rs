//! Virtual fleets (issue 10): devices held inside the simulator with no socket, whose
//! tokens are derived. Pushes to them over HTTP/2 and binary are delivered and acknowledged;
//! an uninstalled app is reported as a real device reports it (feedback once, with its
//! timestamp, then 410 with the same instant); an offline one stores and delivers on its
//! return; the device list counts the fleet instead of listing it; and the tokens survive a
//! restart with durable state.

use apns_sim::client;
use apns_sim::client::http2::{Http2Client, Http2Request, Http2Response};
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::token::DeviceToken;
use apns_sim::sim::SimulatorConfig;
use serde_json::Value;
use uuid::Uuid;

use crate::common::{self, control_json, next_hub_event, TestSim, TIMEOUT};

const APP: &str = DEFAULT_TOPIC;
const FLEET: u32 = 10_000;

/// A simulator with a virtual fleet of [`FLEET`] devices.
async fn start() -> TestSim {
    common::start_with(fleet(FLEET)).await
}

fn fleet(count: u32) -> impl FnOnce(&mut SimulatorConfig) {
    move |c| c.settings.virtual_devices = count
}

/// The control API's answer to a GET, which must be 200.
async fn get(t: &TestSim, path: &str) -> Value {
    let (status, body) = control_json(t.sim.addrs().control, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Virtual device `index` as the control API lists it.
async fn device(t: &TestSim, index: u32) -> Value {
    let page = get(t, &format!("/v1/virtual/devices?from={index}&limit=1")).await;
    page["devices"][0].clone()
}

/// The token of `index`'s app `app` of kind `kind`.
async fn token(t: &TestSim, index: u32, kind: &str) -> DeviceToken {
    let d = device(t, index).await;
    let hex = d["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == APP && a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} token: {d}"))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    DeviceToken::from_hex(&hex).unwrap()
}

fn alert(token: &DeviceToken) -> Http2Request {
    Http2Request::push(&token.to_hex(), common::alert("virtual")).header("apns-topic", APP)
}

async fn send(client: &mut Http2Client, request: &Http2Request) -> Http2Response {
    client.send(request).await.expect("an answer")
}

/// Waits for the notification `apns_id` to reach `outcome` in the delivery log.
async fn outcome_of(
    events: &mut tokio::sync::broadcast::Receiver<apns_sim::hub::Logged>,
    id: Uuid,
    outcome: Outcome,
) -> Event {
    next_hub_event(events, move |e| {
        matches!(e, Event::Notification { apns_id, outcome: o, .. } if *apns_id == id && *o == outcome)
    })
    .await
}

#[tokio::test]
async fn virtual_tokens_are_delivered_over_http2_and_binary() {
    let t = start().await;
    let summary = get(&t, "/v1/virtual").await;
    assert_eq!(summary["count"], FLEET);
    assert_eq!(summary["online"], FLEET);
    assert_eq!(summary["tokens_per_device"], 10);
    assert_eq!(summary["environment"], "sandbox");
    // The device list counts the fleet and lists none of it.
    let listed = get(&t, "/v1/devices").await;
    assert_eq!(listed["virtual"]["count"], FLEET, "{listed}");
    assert!(
        listed["devices"].as_array().unwrap().len() < 100,
        "{listed}"
    );
    // Pages are bounded and end with the fleet.
    let page = get(&t, "/v1/virtual/devices?from=9990&limit=1000").await;
    assert_eq!(page["devices"].as_array().unwrap().len(), 10);
    assert_eq!(page["devices"][9]["serial"], "virtual-9999");
    let (status, body) = control_json(
        t.sim.addrs().control,
        "GET",
        "/v1/virtual/devices?limit=1001",
        None,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("limit")),
        "{body}"
    );

    // HTTP/2: 200, then sent and acknowledged in the log, naming the virtual device.
    let last = token(&t, FLEET - 1, "remote").await;
    let mut events = t.sim.hub().subscribe();
    let mut h2 = t.http2().await;
    let answer = send(&mut h2, &alert(&last)).await;
    assert_eq!(answer.status, 200, "{answer}");
    let id: Uuid = answer.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, id, Outcome::Acknowledged).await;
    let log = get(&t, &format!("/v1/notifications?token={}", last.to_hex())).await;
    let seen: Vec<(&str, &str)> = log["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["serial"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("sent", "virtual-9999"), ("acknowledged", "virtual-9999")],
        "{log}"
    );

    // Binary, command 2.
    let first = token(&t, 0, "remote").await;
    let mut gw = t.gateway().await;
    let expiry = common::in_an_hour(&t.clock);
    gw.send(&common::frame(
        first.as_bytes(),
        &common::alert("b"),
        77,
        expiry,
        10,
    ))
    .await
    .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 77, Outcome::Acknowledged)
    })
    .await;

    // A kind the push does not fit, and a forged token: refused like any other.
    let voip = token(&t, 3, "voip").await;
    let answer = send(&mut h2, &alert(&voip)).await;
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (400, Some("DeviceTokenNotForTopic")),
        "{answer}"
    );
    let mut forged = last.as_bytes().to_vec();
    forged[31] ^= 0x40;
    let forged = DeviceToken::new(&forged).unwrap();
    let answer = send(&mut h2, &alert(&forged)).await;
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (400, Some("BadDeviceToken")),
        "{answer}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_uninstalled_virtual_app_gives_feedback_once_then_410() {
    let t = start().await;
    let token = token(&t, 42, "remote").await;
    let control = t.sim.addrs().control;
    let (status, body) = control_json(
        control,
        "POST",
        "/v1/virtual/devices/42/uninstall",
        Some(&format!(r#"{{"app":"{APP}"}}"#)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["state"] == "uninstalled"));
    let (status, body) = control_json(
        control,
        "POST",
        "/v1/virtual/devices/42/uninstall",
        Some(r#"{"app":"com.example.none"}"#),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("app")),
        "{body}"
    );
    let (status, _) = control_json(
        control,
        "POST",
        "/v1/virtual/devices/10000/uninstall",
        Some(&format!(r#"{{"app":"{APP}"}}"#)),
    )
    .await;
    assert_eq!(status, 404);

    // The push is accepted; the device reports the app gone.
    let mut events = t.sim.hub().subscribe();
    let mut h2 = t.http2().await;
    let first = send(&mut h2, &alert(&token)).await;
    assert_eq!(first.status, 200, "{first}");
    let id: Uuid = first.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, id, Outcome::NotInstalled).await;
    let at_ms = t.sim.hub().unregistered_at(&token).expect("unregistered");

    // The feedback service reports the token once, at that second.
    let addr = t.sim.addrs().feedback.to_string();
    let tls = t.default_provider_tls();
    let tuples = client::read_feedback(&addr, "localhost", tls.clone(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(tuples.len(), 1, "{tuples:?}");
    assert_eq!(tuples[0].token, token);
    assert_eq!(u64::from(tuples[0].timestamp), at_ms / 1000);
    let again = client::read_feedback(&addr, "localhost", tls, TIMEOUT)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");

    // A later push: 410 with the same instant.
    let answer = send(&mut h2, &alert(&token)).await;
    assert_eq!(
        (answer.status, answer.reason.as_deref(), answer.timestamp),
        (410, Some("Unregistered"), Some(at_ms)),
        "{answer}"
    );
    let summary = get(&t, "/v1/virtual").await;
    assert_eq!(
        (
            summary["unregistered"].as_u64(),
            summary["uninstalled"].as_u64()
        ),
        (Some(1), Some(9)),
        "{summary}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_offline_virtual_device_stores_and_delivers_on_return() {
    let t = start().await;
    let token = token(&t, 7, "remote").await;
    let control = t.sim.addrs().control;
    let (status, body) = control_json(control, "POST", "/v1/virtual/devices/7/offline", None).await;
    assert_eq!(
        (status, &body["online"]),
        (200, &Value::Bool(false)),
        "{body}"
    );

    let mut events = t.sim.hub().subscribe();
    let mut h2 = t.http2().await;
    let expiry = common::in_an_hour(&t.clock).to_string();
    let older = send(&mut h2, &alert(&token).header("apns-expiration", &expiry)).await;
    assert_eq!(older.status, 200, "{older}");
    let older: Uuid = older.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, older, Outcome::Stored).await;
    let newer = send(&mut h2, &alert(&token).header("apns-expiration", &expiry)).await;
    let newer: Uuid = newer.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, older, Outcome::Superseded).await;
    let summary = get(&t, "/v1/virtual").await;
    assert_eq!(
        (summary["offline"].as_u64(), summary["stored"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );

    let (status, body) = control_json(control, "POST", "/v1/virtual/devices/7/online", None).await;
    assert_eq!(
        (status, &body["online"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    outcome_of(&mut events, newer, Outcome::Acknowledged).await;
    let summary = get(&t, "/v1/virtual").await;
    assert_eq!(summary["stored"], 0, "{summary}");
    t.stop().await;
}

#[tokio::test]
async fn virtual_tokens_and_their_unregistration_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let durable = |c: &mut SimulatorConfig| {
        c.settings.virtual_devices = 100;
        c.state_dir = Some(dir.path().to_owned());
    };
    let t = common::start_with(durable).await;
    let live = token(&t, 1, "remote").await;
    let gone = token(&t, 2, "remote").await;
    let (status, _) = control_json(
        t.sim.addrs().control,
        "POST",
        "/v1/virtual/devices/2/uninstall",
        Some(&format!(r#"{{"app":"{APP}"}}"#)),
    )
    .await;
    assert_eq!(status, 200);
    let mut events = t.sim.hub().subscribe();
    let mut h2 = t.http2().await;
    let answer = send(&mut h2, &alert(&gone)).await;
    let id: Uuid = answer.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, id, Outcome::NotInstalled).await;
    let at_ms = t.sim.hub().unregistered_at(&gone).expect("unregistered");
    // The 410 is answered once the row is on disk.
    let answer = send(&mut h2, &alert(&gone)).await;
    assert_eq!(answer.status, 410, "{answer}");
    drop(h2);
    t.stop().await;

    let t = common::start_with(durable).await;
    assert_eq!(
        token(&t, 1, "remote").await,
        live,
        "the same key, the same tokens"
    );
    let mut events = t.sim.hub().subscribe();
    let mut h2 = t.http2().await;
    let answer = send(&mut h2, &alert(&live)).await;
    assert_eq!(answer.status, 200, "{answer}");
    let id: Uuid = answer.apns_id.unwrap().parse().unwrap();
    outcome_of(&mut events, id, Outcome::Acknowledged).await;
    let answer = send(&mut h2, &alert(&gone)).await;
    assert_eq!(
        (answer.status, answer.timestamp),
        (410, Some(at_ms)),
        "{answer}"
    );
    t.stop().await;
}
