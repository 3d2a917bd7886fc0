//! The control API against a running simulator: every route's happy path and its bad inputs
//! (each a 400 naming the field), `wait` answering on delivery, at once for records already
//! logged and 408 after its timeout, the OpenAPI document listing every route, and the
//! feedback peek leaving the tuples for the feedback service.
//!
//! The client is hyper-util's legacy client over plain HTTP/1.1, already a dependency of the
//! library (the webhook uses it), so the tests add no crate.

use std::net::SocketAddr;

use apns_sim::client::device::{DeviceCommand, DeviceEvent};
use apns_sim::client::read_feedback;
use apns_sim::hub::Outcome;
use apns_sim::pki::{Pki, DEFAULT_TOPIC};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::server::control;
use apns_sim::server::control::notifications::{MAX_LIMIT, MAX_TIMEOUT_MS};
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig, StartError};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{self, command, next_device_event, next_hub_event, TestSim, TIMEOUT};

/// GETs `path_and_query` from a control API at `addr`: the status and the JSON body.
pub(crate) async fn get_at(addr: SocketAddr, path_and_query: &str) -> (u16, Value) {
    common::control_json(addr, "GET", path_and_query, None).await
}

/// GETs from the test simulator's control API.
async fn get(t: &TestSim, path_and_query: &str) -> (u16, Value) {
    get_at(t.sim.addrs().control, path_and_query).await
}

/// A device with the default app, and one notification to it pushed through the binary
/// gateway and acknowledged.
async fn delivered(t: &TestSim, serial: &str, id: u32) -> DeviceToken {
    let (mut dev, tokens) = t
        .device(serial, Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut events = t.sim.hub().subscribe();
    push(t, token, id).await;
    common::next_id(&mut dev).await;
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, id, Outcome::Acknowledged)
    })
    .await;
    token
}

/// Pushes one notification with identifier `id` to `token` through the binary gateway.
async fn push(t: &TestSim, token: DeviceToken, id: u32) {
    let mut gw = t.gateway().await;
    let frame = common::frame(token.as_bytes(), &common::alert("hi"), id, 0, 10);
    gw.send(&frame).await.expect("sent");
    common::assert_silent(&mut gw).await;
}

/// The records of an answer, as (identifier, outcome) pairs.
fn records(body: &Value) -> Vec<(u64, String)> {
    body["notifications"]
        .as_array()
        .expect("a notifications array")
        .iter()
        .map(|r| {
            (
                r["identifier"].as_u64().expect("an identifier"),
                r["outcome"].as_str().expect("an outcome").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn health_names_every_endpoint() {
    let t = common::start().await;
    let (status, body) = get(&t, "/v1/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let a = t.sim.addrs();
    for (name, addr) in [
        ("gateway", a.gateway),
        ("feedback", a.feedback),
        ("http2", a.http2),
        ("devices", a.devices),
        ("control", a.control),
    ] {
        assert_eq!(body["endpoints"][name], addr.to_string(), "{name}");
    }
    t.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_answers() {
    let t = common::start().await;
    let (status, doc) = get(&t, "/v1/openapi.json").await;
    assert_eq!(status, 200);
    let version = doc["openapi"].as_str().expect("an openapi field");
    assert!(version.starts_with("3."), "{version}");
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let mut routes = control::routes();
    documented.sort_unstable();
    routes.sort_unstable();
    assert_eq!(documented, routes);
    // Each listed route is served (feedback without its parameters is a 400, a wait on an
    // empty log that may not wait a 408, a route without GET such as `DELETE
    // /v1/faults/{id}` a 405, never a 404), and every other path is a JSON 404.
    for route in control::routes() {
        if route == "/metrics" || route == "/" || route.starts_with("/dashboard/") {
            // Text, not JSON: tests/it/metrics.rs and tests/it/dashboard.rs read them.
            let (status, _, text) = crate::metrics::get_text(t.sim.addrs().control, route).await;
            assert_eq!(status, 200, "{route}: {text}");
            continue;
        }
        if route == "/v1/events" {
            // A stream that does not end: tests/it/control_events.rs reads it.
            continue;
        }
        let path = if route.ends_with("/wait") {
            format!("{route}?timeout_ms=0")
        } else {
            route.to_owned()
        };
        let (status, body) = get(&t, &path).await;
        // A route that does not answer GET (POST /v1/push, DELETE /v1/devices/{serial}) is a
        // JSON 405; a path template taken literally names no device, a JSON 404.
        let allowed: &[u16] = if route.contains('{') {
            &[200, 400, 404, 405, 408]
        } else {
            &[200, 400, 405, 408]
        };
        assert!(allowed.contains(&status), "{route}: {status} {body}");
        assert!(
            [200, 408].contains(&status) || body["error"].as_str().is_some(),
            "{route}: {status} {body}"
        );
    }
    let (status, body) = get(&t, "/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().is_some(), "{body}");
    t.stop().await;
}

#[tokio::test]
async fn the_delivery_log_filters_and_pages() {
    let t = common::start().await;
    let token = delivered(&t, "CTL-LOG", 1).await;
    let other = delivered(&t, "CTL-OTHER", 2).await;

    let (status, all) = get(&t, "/v1/notifications").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        records(&all),
        [
            (1, "sent".into()),
            (1, "acknowledged".into()),
            (2, "sent".into()),
            (2, "acknowledged".into())
        ]
    );
    assert_eq!(all["truncated"], false);
    let first = &all["notifications"][0];
    assert_eq!(first["token"], token.to_hex());
    assert_eq!(first["serial"], "CTL-LOG");
    assert_eq!(first["topic"], DEFAULT_TOPIC);
    assert_eq!(first["api"], "binary");
    let seqs: Vec<u64> = all["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(all["next"].as_u64().unwrap() >= *seqs.last().unwrap());

    let hex = other.to_hex();
    for (query, want) in [
        (
            format!("token={hex}"),
            vec![(2, "sent"), (2, "acknowledged")],
        ),
        (
            format!("token={}", hex.to_uppercase()),
            vec![(2, "sent"), (2, "acknowledged")],
        ),
        (
            "serial=CTL-LOG".to_owned(),
            vec![(1, "sent"), (1, "acknowledged")],
        ),
        (
            "outcome=acknowledged".to_owned(),
            vec![(1, "acknowledged"), (2, "acknowledged")],
        ),
        ("api=http2".to_owned(), vec![]),
        (
            "api=binary&serial=CTL-OTHER&outcome=sent".to_owned(),
            vec![(2, "sent")],
        ),
        ("topic=com.example.nothing".to_owned(), vec![]),
        ("serial=NO-SUCH".to_owned(), vec![]),
    ] {
        let (status, body) = get(&t, &format!("/v1/notifications?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let want: Vec<(u64, String)> = want.into_iter().map(|(i, o)| (i, o.to_owned())).collect();
        assert_eq!(records(&body), want, "{query}");
    }

    // Pages: `limit` records, `next` the last one returned, the rest after it.
    let (_, page) = get(&t, "/v1/notifications?limit=1&outcome=acknowledged").await;
    assert_eq!(records(&page), [(1, "acknowledged".to_owned())]);
    assert_eq!(page["next"], page["notifications"][0]["seq"]);
    let next = page["next"].as_u64().unwrap();
    let (_, rest) = get(
        &t,
        &format!("/v1/notifications?outcome=acknowledged&since={next}"),
    )
    .await;
    assert_eq!(records(&rest), [(2, "acknowledged".to_owned())]);
    // From the end of the log, nothing yet.
    let end = all["next"].as_u64().unwrap();
    let (status, none) = get(&t, &format!("/v1/notifications?since={end}")).await;
    assert_eq!(status, 200);
    assert!(records(&none).is_empty());
    assert_eq!(none["next"], end);
    t.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_field() {
    let t = common::start().await;
    let over_limit = MAX_LIMIT + 1;
    let over_timeout = MAX_TIMEOUT_MS + 1;
    let cases: Vec<(String, &str)> = vec![
        ("/v1/notifications?api=smtp".into(), "api"),
        ("/v1/notifications?outcome=lost".into(), "outcome"),
        ("/v1/notifications?token=xyz".into(), "token"),
        ("/v1/notifications?since=abc".into(), "since"),
        ("/v1/notifications?since=-1".into(), "since"),
        (
            "/v1/notifications?since=99999999999999999999999".into(),
            "since",
        ),
        ("/v1/notifications?since=1000000".into(), "since"),
        ("/v1/notifications?limit=0".into(), "limit"),
        (format!("/v1/notifications?limit={over_limit}"), "limit"),
        ("/v1/notifications?limit=ten".into(), "limit"),
        ("/v1/notifications?count=1".into(), "count"),
        ("/v1/notifications?colour=red".into(), "colour"),
        ("/v1/notifications?api=binary&api=http2".into(), "api"),
        ("/v1/notifications/wait?api=smtp".into(), "api"),
        ("/v1/notifications/wait?outcome=".into(), "outcome"),
        ("/v1/notifications/wait?since=x".into(), "since"),
        ("/v1/notifications/wait?count=abc".into(), "count"),
        ("/v1/notifications/wait?count=0".into(), "count"),
        (
            format!("/v1/notifications/wait?count={over_limit}"),
            "count",
        ),
        (
            "/v1/notifications/wait?timeout_ms=soon".into(),
            "timeout_ms",
        ),
        (
            format!("/v1/notifications/wait?timeout_ms={over_timeout}"),
            "timeout_ms",
        ),
        ("/v1/notifications/wait?limit=5".into(), "limit"),
        ("/v1/feedback?environment=sandbox".into(), "topic"),
        ("/v1/feedback?topic=&environment=sandbox".into(), "topic"),
        (format!("/v1/feedback?topic={DEFAULT_TOPIC}"), "environment"),
        (
            format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=moon"),
            "environment",
        ),
        (
            format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=sandbox&x=1"),
            "x",
        ),
    ];
    for (path, field) in cases {
        let (status, body) = get(&t, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
        assert!(
            !body["error"].as_str().unwrap_or_default().is_empty(),
            "{path}: {body}"
        );
    }
    // A query that is not even form-encoded is a 400 too, naming no field.
    let (status, body) = get(&t, "/v1/notifications?token=%zz").await;
    assert_eq!(status, 400, "{body}");
    t.stop().await;
}

#[tokio::test]
async fn wait_answers_when_the_delivery_happens() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("CTL-WAIT", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let (_, now) = get(&t, "/v1/notifications").await;
    let since = now["next"].as_u64().unwrap();
    let addr = t.sim.addrs().control;
    let query = format!(
        "/v1/notifications/wait?token={}&outcome=acknowledged&since={since}&timeout_ms={MAX_TIMEOUT_MS}",
        token.to_hex()
    );
    let waiting = tokio::spawn(async move { get_at(addr, &query).await });
    push(&t, token, 7).await;
    common::next_id(&mut dev).await;
    let (status, body) = waiting.await.expect("the wait task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(records(&body), [(7, "acknowledged".to_owned())]);
    assert_eq!(body["notifications"][0]["serial"], "CTL-WAIT");
    assert_eq!(body["next"], body["notifications"][0]["seq"]);
    t.stop().await;
}

#[tokio::test]
async fn wait_counts_what_is_already_logged_and_times_out_with_what_matched() {
    let t = common::start().await;
    let token = delivered(&t, "CTL-PAST", 3).await;
    // Already in the log: answered at once, however long the timeout.
    let (status, body) = get(
        &t,
        &format!("/v1/notifications/wait?serial=CTL-PAST&count=2&timeout_ms={MAX_TIMEOUT_MS}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        records(&body),
        [(3, "sent".to_owned()), (3, "acknowledged".to_owned())]
    );

    // More than there are: 408 after the timeout, with what matched so far.
    let (status, body) = get(
        &t,
        &format!(
            "/v1/notifications/wait?token={}&count=3&timeout_ms=50",
            token.to_hex()
        ),
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(
        records(&body),
        [(3, "sent".to_owned()), (3, "acknowledged".to_owned())]
    );
    // timeout_ms=0 looks once.
    let (status, body) = get(&t, "/v1/notifications/wait?outcome=stored&timeout_ms=0").await;
    assert_eq!(status, 408, "{body}");
    assert!(records(&body).is_empty());
    t.stop().await;
}

#[tokio::test]
async fn feedback_peek_does_not_drain() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("CTL-FB", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let path = format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=sandbox");
    let (status, empty) = get(&t, &path).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["tuples"], Value::Array(Vec::new()));

    command(&dev, DeviceCommand::Uninstall(DEFAULT_TOPIC.into())).await;
    next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Uninstalled { .. })).await;
    let mut events = t.sim.hub().subscribe();
    push(&t, token, 9).await;
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 9, Outcome::NotInstalled)
    })
    .await;
    let at_ms = t.sim.hub().unregistered_at(&token).expect("unregistered");

    let (_, first) = get(&t, &path).await;
    let (_, second) = get(&t, &path).await;
    assert_eq!(first, second, "a peek leaves the tuples");
    assert_eq!(first["topic"], DEFAULT_TOPIC);
    assert_eq!(first["environment"], "sandbox");
    assert_eq!(first["tuples"][0]["token"], token.to_hex());
    assert_eq!(first["tuples"][0]["timestamp"], at_ms / 1000);
    assert_eq!(first["tuples"].as_array().unwrap().len(), 1);
    // The production list of the same topic is another list; `development` is sandbox.
    let (_, prod) = get(
        &t,
        &format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=production"),
    )
    .await;
    assert_eq!(prod["tuples"], Value::Array(Vec::new()));
    let (_, dev_alias) = get(
        &t,
        &format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=development"),
    )
    .await;
    assert_eq!(dev_alias["tuples"], first["tuples"]);

    // The feedback service still delivers the tuple, once.
    let addr = t.sim.addrs().feedback.to_string();
    let tls = t.default_provider_tls();
    let tuples = read_feedback(&addr, "localhost", tls.clone(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(tuples.len(), 1);
    assert_eq!(tuples[0].token, token);
    assert!(read_feedback(&addr, "localhost", tls, TIMEOUT)
        .await
        .unwrap()
        .is_empty());
    let (_, drained) = get(&t, &path).await;
    assert_eq!(drained["tuples"], Value::Array(Vec::new()));
    t.stop().await;
}

#[tokio::test]
async fn the_control_api_refuses_a_listener_off_loopback() {
    let mut listeners = Listeners::bind_local().await.unwrap();
    listeners.control = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err =
        Simulator::start(SimulatorConfig::new(Pki::generate().unwrap()), listeners).unwrap_err();
    assert!(
        matches!(err, StartError::ControlNotLoopback(addr) if addr.ip().is_unspecified()),
        "{err:?}"
    );
    assert!(err.to_string().contains("--control-token"), "{err}");
}
