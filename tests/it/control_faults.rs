//! Fault injection through the control API against a running simulator over real TLS: the
//! issue's example fault (two HTTP/2 pushes answered 500, the third delivered, the fault id
//! on the records), binary error responses and closes, GOAWAY after N streams, refused
//! connections, dropped device connections and withheld or delayed acknowledgements, the
//! feedback service holding an empty connection open, delays, listing, removing, used-up and
//! expired faults, provider connection numbers, and every bad body answered 400 naming its
//! field. Every wait is on an event or an answer, never a sleep.

use std::net::SocketAddr;
use std::time::Duration;

use apns_sim::client::http2::{read_response, Http2Request};
use apns_sim::client::{self, GatewayAnswer};
use apns_sim::hub::{Event, Logged, Outcome, ProviderEndpoint, Removed};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::error_response::Status;
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::common::{self, next_hub_event, TestSim, TIMEOUT};
use crate::control::get_at;

/// Sends `method path` with an optional body to the control API: the status and the body as
/// JSON (`null` when empty).
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    common::control_json(addr, method, path, body).await
}

/// Adds a fault and returns its id.
async fn add(t: &TestSim, fault: Value) -> String {
    let (status, body) = call(
        t.sim.addrs().control,
        "POST",
        "/v1/faults",
        Some(&fault.to_string()),
    )
    .await;
    assert_eq!(status, 201, "{fault}: {body}");
    body["id"].as_str().expect("an id").to_owned()
}

/// The fault id of a notification event.
fn fault_of(e: &Event) -> Option<&str> {
    match e {
        Event::Notification { fault, .. } => fault.as_deref(),
        _ => None,
    }
}

/// A device with the default app, online, and its token.
async fn phone(t: &TestSim, serial: &str) -> (apns_sim::client::device::DeviceHandle, DeviceToken) {
    let (dev, tokens) = t
        .device(serial, Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    (dev, tokens[DEFAULT_TOPIC])
}

fn push(token: &DeviceToken) -> Http2Request {
    Http2Request::push(&token.to_hex(), common::alert("hi")).header("apns-topic", DEFAULT_TOPIC)
}

/// Waits for the `FaultRemoved` of `id` and returns its reason.
async fn removed(events: &mut broadcast::Receiver<Logged>, id: &str) -> Removed {
    let id = id.to_owned();
    match next_hub_event(
        events,
        move |e| matches!(e, Event::FaultRemoved { id: i, .. } if *i == id),
    )
    .await
    {
        Event::FaultRemoved { reason, .. } => reason,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn the_issues_example_fails_two_http2_pushes_with_500_and_lets_the_third_through() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-1").await;
    let mut events = t.sim.hub().subscribe();
    // The issue's body, verbatim but for the token.
    let body = format!(
        r#"{{"on": "http2", "match": {{"token": "{}"}}, "respond": {{"status": 500, "reason": "InternalServerError"}}, "count": 2}}"#,
        token.to_hex()
    );
    let (status, fault) = call(t.sim.addrs().control, "POST", "/v1/faults", Some(&body)).await;
    assert_eq!(status, 201, "{fault}");
    assert_eq!(fault["id"], "f1");
    assert_eq!(
        (fault["hits"].clone(), fault["remaining"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(fault["respond"]["reason"], "InternalServerError");

    let mut http2 = t.http2().await;
    for _ in 0..2 {
        let answer = http2.send(&push(&token)).await.expect("an answer");
        assert_eq!(answer.status, 500, "{answer}");
        assert_eq!(answer.reason.as_deref(), Some("InternalServerError"));
        assert_eq!(answer.timestamp, None);
    }
    assert_eq!(removed(&mut events, "f1").await, Removed::UsedUp);
    let answer = http2.send(&push(&token)).await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut dev).await;

    let control = t.sim.addrs().control;
    let path = format!(
        "/v1/notifications?token={}&outcome=rejected",
        token.to_hex()
    );
    let (_, records) = get_at(control, &path).await;
    let records = records["notifications"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["fault"], "f1", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .contains("InternalServerError"),
            "{r}"
        );
    }
    let path = format!(
        "/v1/notifications/wait?token={}&outcome=acknowledged",
        token.to_hex()
    );
    let (status, acked) = get_at(control, &path).await;
    assert_eq!(status, 200);
    assert_eq!(
        acked["notifications"][0]["fault"],
        Value::Null,
        "the third was not hit"
    );
    let (_, list) = get_at(control, "/v1/faults").await;
    assert_eq!(list["faults"], json!([]), "used up");
    let (_, _, metrics) = crate::metrics::get_text(control, "/metrics").await;
    assert!(
        metrics.contains(r#"apns_sim_fault_hits_total{on="http2"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"apns_sim_rejections_total{api="http2",reason="InternalServerError"} 2"#),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn http2_410s_carry_a_timestamp_and_any_apple_reason_is_answered() {
    let t = common::start().await;
    let (_dev, token) = phone(&t, "fault-410").await;
    add(&t, json!({"on": "http2", "respond": {"status": 410, "reason": "ExpiredToken", "timestamp_ms": 1234}, "count": 1})).await;
    add(
        &t,
        json!({"on": "http2", "respond": {"status": 429}, "count": 1}),
    )
    .await;
    add(
        &t,
        json!({"on": "http2", "respond": {"status": 403, "reason": "Forbidden"}, "count": 1}),
    )
    .await;
    let mut http2 = t.http2().await;
    let answers: Vec<(u16, Option<String>, Option<u64>)> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let a = http2.send(&push(&token)).await.expect("an answer");
            out.push((a.status, a.reason, a.timestamp));
        }
        out
    };
    assert_eq!(
        answers,
        [
            (410, Some("ExpiredToken".to_owned()), Some(1234)),
            (429, Some("TooManyRequests".to_owned()), None),
            (403, Some("Forbidden".to_owned()), None),
        ]
    );
    t.stop().await;
}

#[tokio::test]
async fn binary_error_status_for_the_nth_notification_closes_and_discards_the_rest() {
    for status in [Status::Shutdown, Status::Unknown, Status::ProcessingError] {
        let t = common::start().await;
        let (mut dev, token) = phone(&t, "fault-bin").await;
        let id = add(
            &t,
            json!({"on": "binary", "match": {"every": 2}, "error": {"status": status.code()}, "count": 1}),
        )
        .await;
        let mut events = t.sim.hub().subscribe();
        let mut gw = t.gateway().await;
        let frames: Vec<u8> = (1..=3)
            .flat_map(|i| common::frame(token.as_bytes(), &common::alert("hi"), i, 0, 10))
            .collect();
        gw.send(&frames).await.unwrap();
        assert_eq!(common::next_id(&mut dev).await, 1);
        match gw.finish(TIMEOUT).await.unwrap() {
            GatewayAnswer::Error(e) => {
                assert_eq!(e.status, status);
                assert_eq!(e.identifier, 2u32.to_be_bytes());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
        let hit =
            next_hub_event(&mut events, |e| common::is_outcome(e, 2, Outcome::Rejected)).await;
        assert_eq!(fault_of(&hit), Some(id.as_str()));
        let sent_3 = t
            .sim
            .hub()
            .recent_events()
            .iter()
            .any(|e| common::is_outcome(e, 3, Outcome::Sent));
        assert!(!sent_3, "notification 3 was discarded");
        t.stop().await;
    }
}

#[tokio::test]
async fn a_binary_close_takes_the_nth_notification_then_closes_without_a_byte() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-close").await;
    add(
        &t,
        json!({"on": "binary", "match": {"every": 2}, "close": true, "count": 1}),
    )
    .await;
    let mut gw = t.gateway().await;
    let frames: Vec<u8> = (1..=3)
        .flat_map(|i| common::frame(token.as_bytes(), &common::alert("hi"), i, 0, 10))
        .collect();
    gw.send(&frames).await.unwrap();
    assert_eq!(common::next_id(&mut dev).await, 1);
    assert_eq!(common::next_id(&mut dev).await, 2, "the second is taken");
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
    let sent_3 = t
        .sim
        .hub()
        .recent_events()
        .iter()
        .any(|e| common::is_outcome(e, 3, Outcome::Sent));
    assert!(!sent_3, "what followed was discarded");
    t.stop().await;
}

#[tokio::test]
async fn provider_connections_are_numbered_and_a_fault_can_match_one() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-conn").await;
    let mut events = t.sim.hub().subscribe();
    let connected = |events: &mut broadcast::Receiver<Logged>| {
        let mut events = events.resubscribe();
        async move {
            match next_hub_event(&mut events, |e| {
                matches!(e, Event::ProviderConnected { .. })
            })
            .await
            {
                Event::ProviderConnected {
                    connection,
                    endpoint,
                    identity,
                    peer,
                    ..
                } => {
                    assert_eq!(endpoint, ProviderEndpoint::Gateway);
                    assert_eq!(identity, DEFAULT_TOPIC);
                    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
                    connection
                }
                _ => unreachable!(),
            }
        }
    };
    let first_wait = connected(&mut events);
    let mut first = t.gateway().await;
    // The connection is numbered once the gateway identified it; a frame makes sure it has.
    first
        .send(&common::frame(
            token.as_bytes(),
            &common::alert("a"),
            1,
            0,
            10,
        ))
        .await
        .unwrap();
    let one = first_wait.await;
    assert_eq!(common::next_id(&mut dev).await, 1);
    let mut after_first = t.sim.hub().subscribe();
    let mut second = t.gateway().await;
    let Event::ProviderConnected {
        connection: two, ..
    } = next_hub_event(&mut after_first, |e| {
        matches!(e, Event::ProviderConnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(two > one);
    add(
        &t,
        json!({"on": "binary", "match": {"connection": two}, "error": {"status": 1}}),
    )
    .await;
    first
        .send(&common::frame(
            token.as_bytes(),
            &common::alert("b"),
            2,
            0,
            10,
        ))
        .await
        .unwrap();
    assert_eq!(
        common::next_id(&mut dev).await,
        2,
        "the other connection is not hit"
    );
    second
        .send(&common::frame(
            token.as_bytes(),
            &common::alert("c"),
            3,
            0,
            10,
        ))
        .await
        .unwrap();
    match second.finish(TIMEOUT).await.unwrap() {
        GatewayAnswer::Error(e) => assert_eq!(
            (e.status, e.identifier),
            (Status::ProcessingError, 3u32.to_be_bytes())
        ),
        other => panic!("{other:?}"),
    }
    next_hub_event(&mut after_first, move |e| {
        matches!(e, Event::ProviderDisconnected { connection, endpoint: ProviderEndpoint::Gateway, .. } if *connection == two)
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn goaway_after_n_streams_answers_the_nth_then_ends_the_connection() {
    let t = common::start().await;
    let (_dev, token) = phone(&t, "fault-goaway").await;
    add(
        &t,
        json!({"on": "http2", "match": {"every": 2}, "goaway": {"reason": "Shutdown"}, "count": 1}),
    )
    .await;
    let mut http2 = t.http2().await;
    for _ in 0..2 {
        let answer = http2.send(&push(&token)).await.expect("an answer");
        assert_eq!(answer.status, 200, "{answer}");
    }
    let goaway = tokio::time::timeout(TIMEOUT, http2.closed())
        .await
        .expect("closed in time")
        .expect("a GOAWAY");
    assert_eq!(
        goaway.last_stream_id, 3,
        "the second stream was the last processed"
    );
    assert_eq!(goaway.reason().as_deref(), Some("Shutdown"));
    // A new connection is served as usual.
    let mut again = t.http2().await;
    assert_eq!(again.send(&push(&token)).await.unwrap().status, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_refuse_fault_closes_a_new_http2_connection_before_any_frame() {
    let t = common::start().await;
    let (_dev, token) = phone(&t, "fault-refuse").await;
    let mut events = t.sim.hub().subscribe();
    let id = add(&t, json!({"on": "http2", "refuse": true, "count": 1})).await;
    let refused = apns_sim::client::http2::Http2Client::connect(
        &t.http2_addr(),
        "localhost",
        t.http2_tls(Some(apns_sim::pki::CertEnvironment::Universal)),
    )
    .await;
    // `h2`'s client handshake only writes the preface, so the refusal may show at the first
    // request: no answer, and no GOAWAY either.
    if let Ok(mut client) = refused {
        assert!(client.send(&push(&token)).await.is_err(), "no answer");
        assert!(client.goaway().is_none(), "closed before any HTTP/2 frame");
    }
    assert_eq!(removed(&mut events, &id).await, Removed::UsedUp);
    let event = next_hub_event(&mut events, |e| {
        matches!(
            e,
            Event::ProviderDisconnected {
                endpoint: ProviderEndpoint::Http2,
                ..
            }
        )
    })
    .await;
    let Event::ProviderDisconnected { connection, .. } = event else {
        unreachable!()
    };
    let identity = t
        .sim
        .hub()
        .recent_events()
        .into_iter()
        .find_map(|e| match e {
            Event::ProviderConnected {
                connection: c,
                identity,
                ..
            } if c == connection => Some(identity),
            _ => None,
        });
    let identity = identity.expect("connected first");
    assert!(
        identity.starts_with(&format!("{DEFAULT_TOPIC}, ")),
        "the certificate's topics: {identity}"
    );
    let mut next = t.http2().await;
    assert_eq!(
        next.send(&push(&token)).await.unwrap().status,
        200,
        "used up"
    );
    t.stop().await;
}

#[tokio::test]
async fn http2_delay_routes_the_notification_before_its_answer() {
    let t = common::start().await;
    let (_dev, token) = phone(&t, "fault-delay").await;
    let id = add(&t, json!({"on": "http2", "delay_ms": 3000, "count": 1})).await;
    let mut events = t.sim.hub().subscribe();
    let mut http2 = t.http2().await;
    let request = push(&token);
    let (response, mut body) = http2.start(&request, false).await.unwrap();
    body.send_data(Bytes::from(common::alert("hi")), true)
        .unwrap();
    let answer = tokio::spawn(read_response(response));
    let acked = next_hub_event(&mut events, |e| {
        matches!(
            e,
            Event::Notification {
                outcome: Outcome::Acknowledged,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        fault_of(&acked),
        Some(id.as_str()),
        "the delivery names the fault"
    );
    assert!(!answer.is_finished(), "delivered before the delayed answer");
    let answer = tokio::time::timeout(TIMEOUT, answer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_binary_delay_still_delivers_and_names_the_fault() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-bdelay").await;
    let id = add(&t, json!({"on": "binary", "delay_ms": 20, "count": 1})).await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("a"),
        7,
        0,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut dev).await, 7);
    let sent = next_hub_event(&mut events, |e| common::is_outcome(e, 7, Outcome::Sent)).await;
    assert_eq!(fault_of(&sent), Some(id.as_str()));
    t.stop().await;
}

#[tokio::test]
async fn a_dropped_device_connection_requeues_the_notification_which_names_the_fault() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-drop").await;
    let id = add(
        &t,
        json!({"on": "devices", "match": {"serial": "fault-drop"}, "drop": true, "count": 1}),
    )
    .await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("a"),
        9,
        common::in_an_hour(&t.clock),
        10,
    ))
    .await
    .unwrap();
    let requeued =
        next_hub_event(&mut events, |e| common::is_outcome(e, 9, Outcome::Requeued)).await;
    assert_eq!(fault_of(&requeued), Some(id.as_str()));
    // The device reconnects and gets it after all.
    assert_eq!(common::next_id(&mut dev).await, 9);
    let acked = next_hub_event(&mut events, |e| {
        common::is_outcome(e, 9, Outcome::Acknowledged)
    })
    .await;
    assert_eq!(fault_of(&acked), Some(id.as_str()));
    t.stop().await;
}

#[tokio::test]
async fn a_withheld_ack_leaves_the_notification_pending_until_the_device_leaves() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-withhold").await;
    let id = add(
        &t,
        json!({"on": "devices", "withhold_ack": true, "count": 1}),
    )
    .await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("a"),
        11,
        common::in_an_hour(&t.clock),
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut dev).await, 11, "shown on the device");
    common::go_offline(&t, &mut dev, "fault-withhold").await;
    let logged = t.sim.hub().recent_events();
    assert!(
        !logged
            .iter()
            .any(|e| common::is_outcome(e, 11, Outcome::Acknowledged)),
        "the hub never heard the ack"
    );
    let requeued = next_hub_event(&mut events, |e| {
        common::is_outcome(e, 11, Outcome::Requeued)
    })
    .await;
    assert_eq!(fault_of(&requeued), Some(id.as_str()));
    let stored = next_hub_event(&mut events, |e| common::is_outcome(e, 11, Outcome::Stored)).await;
    assert_eq!(fault_of(&stored), Some(id.as_str()));
    t.stop().await;
}

#[tokio::test]
async fn a_delayed_ack_reaches_the_hub_and_names_the_fault() {
    let t = common::start().await;
    let (mut dev, token) = phone(&t, "fault-lateack").await;
    let id = add(&t, json!({"on": "devices", "delay_ms": 50, "count": 1})).await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("a"),
        12,
        0,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut dev).await, 12);
    let acked = next_hub_event(&mut events, |e| {
        common::is_outcome(e, 12, Outcome::Acknowledged)
    })
    .await;
    assert_eq!(fault_of(&acked), Some(id.as_str()));
    t.stop().await;
}

#[tokio::test]
async fn the_feedback_service_holds_an_empty_connection_open_until_the_provider_leaves() {
    let t = common::start().await;
    let addr = t.sim.addrs().feedback.to_string();
    // Without a fault an empty read closes at once.
    let tuples = client::read_feedback(&addr, "localhost", t.default_provider_tls(), TIMEOUT)
        .await
        .unwrap();
    assert!(tuples.is_empty());

    let id = add(&t, json!({"on": "feedback", "hold_ms": 600000, "count": 1})).await;
    let mut events = t.sim.hub().subscribe();
    let mut stream = client::connect_tls(&addr, "localhost", t.default_provider_tls())
        .await
        .unwrap();
    assert_eq!(
        removed(&mut events, &id).await,
        Removed::UsedUp,
        "the hold began"
    );
    let connection = t
        .sim
        .hub()
        .recent_events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::ProviderConnected {
                connection,
                endpoint: ProviderEndpoint::Feedback,
                ..
            } => Some(connection),
            _ => None,
        })
        .expect("numbered");
    let ended = |events: &[Event]| {
        events.iter().any(
            |e| matches!(e, Event::ProviderDisconnected { connection: c, .. } if *c == connection),
        )
    };
    assert!(!ended(&t.sim.hub().recent_events()), "held open");
    stream.shutdown().await.unwrap();
    next_hub_event(
        &mut events,
        move |e| matches!(e, Event::ProviderDisconnected { connection: c, .. } if *c == connection),
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn faults_are_listed_removed_and_expire_on_the_simulators_clock() {
    let t = common::start().await;
    let control = t.sim.addrs().control;
    let mut events = t.sim.hub().subscribe();
    let a = add(&t, json!({"on": "binary", "close": true})).await;
    let b = add(
        &t,
        json!({"on": "feedback", "hold_ms": 10, "for_ms": 60000}),
    )
    .await;
    let added = next_hub_event(&mut events, |e| matches!(e, Event::FaultAdded { .. })).await;
    assert!(matches!(&added, Event::FaultAdded { fault, .. } if fault.id == a));
    let (status, list) = get_at(control, "/v1/faults").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(list["faults"][1]["remaining"], Value::Null);
    assert!(list["faults"][1]["expires_at_ms"].as_u64().is_some());

    assert_eq!(
        call(control, "DELETE", &format!("/v1/faults/{a}"), None)
            .await
            .0,
        204
    );
    assert_eq!(removed(&mut events, &a).await, Removed::Removed);
    let (status, body) = call(control, "DELETE", &format!("/v1/faults/{a}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "id");

    t.clock.advance(Duration::from_secs(61));
    let (_, list) = get_at(control, "/v1/faults").await;
    assert_eq!(list["faults"], json!([]), "expired");
    assert_eq!(removed(&mut events, &b).await, Removed::Expired);

    add(&t, json!({"on": "binary", "close": true})).await;
    let c = add(&t, json!({"on": "binary", "close": true})).await;
    assert_eq!(c, "f4", "ids are not reused");
    assert_eq!(call(control, "DELETE", "/v1/faults", None).await.0, 204);
    let (_, list) = get_at(control, "/v1/faults").await;
    assert_eq!(list["faults"], json!([]));
    t.stop().await;
}

#[tokio::test]
async fn every_bad_fault_is_a_400_naming_its_field() {
    let t = common::start().await;
    let control = t.sim.addrs().control;
    let cases: &[(&str, Value)] = &[
        (
            r#"{"on": "http2", "respond": {"status": 500}, "colour": "red"}"#,
            json!("colour"),
        ),
        (
            r#"{"on": "http2", "match": {"tokn": "00"}, "respond": {"status": 500}}"#,
            json!("match.tokn"),
        ),
        (r#"{"respond": {"status": 500}}"#, json!("on")),
        (r#"{"on": "smtp", "respond": {"status": 500}}"#, json!("on")),
        (r#"{"on": "http2"}"#, json!("on")),
        (
            r#"{"on": "http2", "respond": {"status": "500"}}"#,
            json!("respond.status"),
        ),
        (
            r#"{"on": "http2", "respond": {"status": 299}}"#,
            json!("respond.status"),
        ),
        (
            r#"{"on": "http2", "respond": {"status": 500, "reason": "Unregistered"}}"#,
            json!("respond.reason"),
        ),
        (
            r#"{"on": "http2", "respond": {"status": 500, "reason": "Oops"}}"#,
            json!("respond.reason"),
        ),
        (
            r#"{"on": "http2", "goaway": {"reason": "Bye"}}"#,
            json!("goaway.reason"),
        ),
        (r#"{"on": "http2", "error": {"status": 8}}"#, json!("error")),
        (
            r#"{"on": "binary", "respond": {"status": 500}}"#,
            json!("respond"),
        ),
        (
            r#"{"on": "binary", "error": {"status": 9}}"#,
            json!("error.status"),
        ),
        (
            r#"{"on": "binary", "error": {"status": 1}, "close": true}"#,
            json!("close"),
        ),
        (r#"{"on": "devices", "hold_ms": 5}"#, json!("hold_ms")),
        (r#"{"on": "feedback", "hold_ms": 600001}"#, json!("hold_ms")),
        (
            r#"{"on": "binary", "close": true, "count": 0}"#,
            json!("count"),
        ),
        (
            r#"{"on": "binary", "close": true, "count": -1}"#,
            json!("count"),
        ),
        (
            r#"{"on": "binary", "close": true, "for_ms": 0}"#,
            json!("for_ms"),
        ),
        (
            r#"{"on": "binary", "close": true, "match": {"token": "zz"}}"#,
            json!("match.token"),
        ),
        (
            r#"{"on": "binary", "close": true, "match": {"rate": 2}}"#,
            json!("match.rate"),
        ),
        (
            r#"{"on": "binary", "close": true, "match": {"every": 0}}"#,
            json!("match.every"),
        ),
        (
            r#"{"on": "binary", "close": true, "match": {"serial": "D1"}}"#,
            json!("match.serial"),
        ),
        (r#"not json"#, Value::Null),
        (r#"[]"#, Value::Null),
        (r#""#, Value::Null),
    ];
    for (body, field) in cases {
        let (status, answer) = call(control, "POST", "/v1/faults", Some(body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(&answer["field"], field, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let (_, list) = get_at(control, "/v1/faults").await;
    assert_eq!(list["faults"], json!([]), "nothing was added");
    let (status, answer) = call(control, "PUT", "/v1/faults", Some("{}")).await;
    assert_eq!(status, 405);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("it answers GET, POST, DELETE"),
        "{answer}"
    );
    let (status, answer) = call(control, "POST", "/v1/health", None).await;
    assert_eq!(status, 405);
    assert!(
        answer["error"].as_str().unwrap().contains("answers GET"),
        "{answer}"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_openapi_document_gives_the_whole_fault_schema() {
    let t = common::start().await;
    let (_, doc) = get_at(t.sim.addrs().control, "/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let spec = &schemas["FaultSpec"]["properties"];
    for field in [
        "on",
        "match",
        "respond",
        "delay_ms",
        "goaway",
        "refuse",
        "error",
        "close",
        "drop",
        "withhold_ack",
        "hold_ms",
        "count",
        "for_ms",
    ] {
        assert!(
            spec.get(field).is_some(),
            "FaultSpec.{field}: {}",
            schemas["FaultSpec"]
        );
    }
    assert!(schemas["FaultMatch"]["properties"].get("rate").is_some());
    assert!(doc["paths"]["/v1/faults"]["post"].is_object());
    assert!(doc["paths"]["/v1/faults/{id}"]["delete"].is_object());
    t.stop().await;
}
