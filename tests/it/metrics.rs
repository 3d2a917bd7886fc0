//! `GET /metrics` against a running simulator: one push through the binary gateway and one
//! through HTTP/2 to a live device, one HTTP/2 push to an unknown token, then the scrape is
//! parsed and its exact counts checked (outcomes, the rejection's reason, connections,
//! sessions, the latency histogram), with the content type and every metric's HELP line.

use std::net::SocketAddr;

use apns_sim::client::http2::Http2Request;
use apns_sim::hub::{Api, Event, Outcome};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;

use crate::common::{self, next_hub_event};

/// Every metric the simulator exposes.
const METRICS: [&str; 8] = [
    "apns_sim_notifications",
    "apns_sim_rejections",
    "apns_sim_connections",
    "apns_sim_connections_open",
    "apns_sim_feedback_tuples",
    "apns_sim_device_sessions",
    "apns_sim_notifications_stored",
    "apns_sim_delivery_latency_seconds",
];

/// GETs `path` from a control API at `addr`: the status, the content type and the body.
pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let (status, headers, body) = common::control_request(addr, "GET", path, &[], "").await;
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = String::from_utf8(body.to_vec()).expect("UTF-8 text");
    (status, content_type, body)
}

/// The value of the sample named exactly `series` (name and labels, as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Whether `e` is an acknowledgement of an HTTP/2 notification.
fn http2_acknowledged(e: &Event) -> bool {
    matches!(
        e,
        Event::Notification {
            api: Api::Http2,
            outcome: Outcome::Acknowledged,
            ..
        }
    )
}

#[tokio::test]
async fn the_scrape_counts_what_happened() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("METRICS-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut events = t.sim.hub().subscribe();

    // One push through the binary gateway, acknowledged.
    let mut gw = t.gateway().await;
    let frame = common::frame(token.as_bytes(), &common::alert("hi"), 1, 0, 10);
    gw.send(&frame).await.expect("sent");
    assert_eq!(common::next_id(&mut dev).await, 1);
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::Acknowledged)
    })
    .await;

    // One through HTTP/2, acknowledged, and one to a token no device holds.
    let mut client = t.http2().await;
    let request = Http2Request::push(&token.to_hex(), r#"{"aps":{"alert":"hi"}}"#)
        .header("apns-topic", DEFAULT_TOPIC);
    let answer = client.send(&request).await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut dev).await;
    next_hub_event(&mut events, http2_acknowledged).await;
    let unknown = DeviceToken::new(&[7; 32]).expect("a token");
    let bad = Http2Request::push(&unknown.to_hex(), "{}").header("apns-topic", DEFAULT_TOPIC);
    let answer = client.send(&bad).await.expect("an answer");
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (400, Some("BadDeviceToken")),
        "{answer}"
    );

    let (status, content_type, text) = get_text(t.sim.addrs().control, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for name in METRICS {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");

    let count = |series: &str| sample(&text, series).unwrap_or(0.0);
    let notifications = |api: &str, outcome: &str| {
        count(&format!(
            "apns_sim_notifications_total{{api=\"{api}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(notifications("binary", "sent"), 1.0, "{text}");
    assert_eq!(notifications("binary", "acknowledged"), 1.0, "{text}");
    assert_eq!(notifications("http2", "sent"), 1.0, "{text}");
    assert_eq!(notifications("http2", "acknowledged"), 1.0, "{text}");
    assert_eq!(notifications("http2", "rejected"), 1.0, "{text}");
    assert_eq!(notifications("binary", "rejected"), 0.0, "{text}");
    assert_eq!(
        count("apns_sim_rejections_total{api=\"http2\",reason=\"BadDeviceToken\"}"),
        1.0,
        "{text}"
    );
    // The control API counts its own connections too: this scrape's is open while it is served.
    for endpoint in ["gateway", "http2", "devices", "control"] {
        let total = count(&format!(
            "apns_sim_connections_total{{endpoint=\"{endpoint}\"}}"
        ));
        assert!(total >= 1.0, "{endpoint}: {text}");
        let open = count(&format!(
            "apns_sim_connections_open{{endpoint=\"{endpoint}\"}}"
        ));
        assert!(open >= 1.0, "{endpoint} is still connected: {text}");
    }
    assert!(count("apns_sim_device_sessions") >= 1.0, "{text}");
    assert_eq!(count("apns_sim_notifications_stored"), 0.0, "{text}");
    assert_eq!(
        count("apns_sim_delivery_latency_seconds_count"),
        2.0,
        "{text}"
    );
    assert_eq!(
        count("apns_sim_delivery_latency_seconds_bucket{le=\"+Inf\"}"),
        2.0,
        "{text}"
    );
    drop((gw, client, dev));
    t.stop().await;
}
