//! The control API's event stream, reset, token and delivery record against a running
//! simulator: `GET /v1/events` delivers a push's events in order with their ids, resumes
//! with `Last-Event-ID` with exactly the missed ones, and opens with `truncated` when they are
//! gone; `POST /v1/reset` clears the log, the store and the feedback and keeps online devices
//! (a push after it is delivered); `--control-token` is required (401 without, 200 with,
//! `?access_token` on the event stream) and lets the API listen off loopback; a record
//! carries the payload, the push type and, for a binary command 2, its bytes labelled.
//!
//! The client is hyper-util's legacy client over plain HTTP/1.1, as in `control.rs`; the
//! event stream is read frame by frame from the response body and split at blank lines.

use std::net::SocketAddr;

use apns_sim::client::device::{DeviceCommand, DeviceEvent};
use apns_sim::client::http2::Http2Request;
use apns_sim::hub::Outcome;
use apns_sim::pki::{Pki, DEFAULT_TOPIC};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{self, command, next_device_event, next_hub_event, TestSim, TIMEOUT};

/// The token the token tests run with.
const TOKEN: &str = "s3cret-token";

/// Sends a request to a control API: the status, the headers and the whole body as JSON.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, Value) {
    let (status, headers, bytes) = common::control_request(addr, method, path, headers, body).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"));
    (status, headers, json)
}

/// Sends a request and returns the response with its body unread.
async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> hyper::Response<Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .expect("answered in time")
        .expect("an answer")
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Message {
    /// `id:`, if any.
    id: Option<u64>,
    /// `event:`.
    event: String,
    /// `data:`, parsed.
    data: Value,
}

/// An open event stream.
struct Stream {
    body: Incoming,
    buf: String,
}

impl Stream {
    /// Opens `GET /v1/events` + `query` with `headers`; asserts 200 and the content type.
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Stream {
        let response = open(addr, "GET", &format!("/v1/events{query}"), headers, "").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Stream {
            body: response.into_body(),
            buf: String::new(),
        }
    }

    /// The next message (comments skipped).
    async fn next(&mut self) -> Message {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut message = Message {
                        id: None,
                        event: "message".to_owned(),
                        data: Value::Null,
                    };
                    let mut any = false;
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            message.id = Some(v.trim().parse().expect("a numeric id"));
                        } else if let Some(v) = line.strip_prefix("event:") {
                            message.event = v.trim().to_owned();
                            any = true;
                        } else if let Some(v) = line.strip_prefix("data:") {
                            message.data = serde_json::from_str(v.trim()).expect("JSON data");
                            any = true;
                        }
                    }
                    if any {
                        return message;
                    }
                    continue;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the stream goes on")
                    .expect("a frame");
                if let Ok(data) = frame.into_data() {
                    self.buf
                        .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                }
            }
        })
        .await
        .expect("a message in time")
    }

    /// Messages until one matches `pred`; returns them all, the match last.
    async fn until(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut seen = Vec::new();
        loop {
            let m = self.next().await;
            let done = pred(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

/// Whether `m` is the notification event of identifier `id` with `outcome`.
fn is(m: &Message, id: u64, outcome: &str) -> bool {
    m.event == "notification" && m.data["identifier"] == id && m.data["outcome"] == outcome
}

/// Pushes a command-2 notification through the binary gateway; returns its bytes.
async fn push(t: &TestSim, token: DeviceToken, id: u32) -> Vec<u8> {
    let mut gw = t.gateway().await;
    let frame = common::frame(token.as_bytes(), &common::alert("hi"), id, 0, 10);
    gw.send(&frame).await.expect("sent");
    common::assert_silent(&mut gw).await;
    frame
}

/// The newest sequence number of the simulator's log.
fn last_seq(t: &TestSim) -> u64 {
    t.sim.hub().events_after(u64::MAX).last_seq
}

#[tokio::test]
async fn the_stream_carries_a_push_in_order_with_ids_and_resumes_exactly() {
    let t = common::start().await;
    let addr = t.sim.addrs().control;
    let mut stream = Stream::open(addr, "", &[]).await;
    let (mut dev, tokens) = t
        .device("ev-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let sent = push(&t, token, 7).await;
    common::next_id(&mut dev).await;
    let seen = stream.until(|m| is(m, 7, "acknowledged")).await;
    // Every event since the start, numbered 1, 2, 3 … with the id in the data too.
    for (i, m) in seen.iter().enumerate() {
        assert_eq!(m.id, Some(i as u64 + 1), "{seen:?}");
        assert_eq!(m.data["seq"], i as u64 + 1);
        assert_eq!(m.data["event"], m.event.as_str());
    }
    // (Provider connection events, if any, are not this test's business.)
    let ours: Vec<&Message> = seen
        .iter()
        .filter(|m| !m.event.starts_with("provider_"))
        .collect();
    let tags: Vec<&str> = ours.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(
        tags,
        [
            "device_online",
            "registered",
            "notification",
            "notification"
        ]
    );
    assert!(is(ours[2], 7, "sent"));
    assert_eq!(ours[3].data["serial"], "ev-1");
    // A notification event carries the record's fields, the binary bytes labelled too.
    assert_eq!(ours[2].data["payload"]["aps"]["alert"], "hi");
    assert_eq!(ours[2].data["frame"], hex::encode(&sent));
    assert_eq!(ours[2].data["frame_fields"][0]["value"], "2 (frame)");

    // Two more pushes while a reader is away; it resumes after what it saw.
    let resume = seen.last().and_then(|m| m.id).expect("an id");
    push(&t, token, 8).await;
    push(&t, token, 9).await;
    common::next_id(&mut dev).await;
    common::next_id(&mut dev).await;
    let mut events = t.sim.hub().subscribe();
    let done = |e: &apns_sim::hub::Event| common::is_outcome(e, 9, Outcome::Acknowledged);
    if !t.sim.hub().recent_events().iter().any(done) {
        next_hub_event(&mut events, done).await;
    }
    let missed: Vec<u64> = t
        .sim
        .hub()
        .events_after(resume)
        .events
        .iter()
        .map(|l| l.seq)
        .collect();
    let header = resume.to_string();
    let mut again = Stream::open(addr, "", &[("Last-Event-ID", &header)]).await;
    let got = again.until(|m| is(m, 9, "acknowledged")).await;
    assert_eq!(
        got.iter().map(|m| m.id.expect("an id")).collect::<Vec<_>>(),
        missed[..got.len()],
        "exactly the missed ones"
    );
    assert_eq!(got[0].id, Some(resume + 1));
    // `?since` does the same.
    let mut by_query = Stream::open(addr, &format!("?since={resume}"), &[]).await;
    assert_eq!(by_query.next().await.id, Some(resume + 1));
    // And the first stream goes on live, without a duplicate.
    let live = stream.until(|m| is(m, 9, "acknowledged")).await;
    assert_eq!(live.first().and_then(|m| m.id), Some(resume + 1));
    // Bad cursors are named.
    let (status, _, body) = request(addr, "GET", "/v1/events?since=x", &[], "").await;
    assert_eq!((status, &body["field"]), (400, &Value::from("since")));
    let (status, _, body) =
        request(addr, "GET", "/v1/events", &[("Last-Event-ID", "nope")], "").await;
    assert_eq!(
        (status, &body["field"]),
        (400, &Value::from("Last-Event-ID"))
    );
    t.stop().await;
}

#[tokio::test]
async fn a_cursor_out_of_the_log_hears_truncated_first() {
    let t = common::start_with(|c| c.settings.delivery_log_len = 3).await;
    let addr = t.sim.addrs().control;
    let (mut dev, tokens) = t
        .device("ev-2", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    push(&t, tokens[DEFAULT_TOPIC], 1).await;
    common::next_id(&mut dev).await;
    let mut events = t.sim.hub().subscribe();
    let done = |e: &apns_sim::hub::Event| common::is_outcome(e, 1, Outcome::Acknowledged);
    if !t.sim.hub().recent_events().iter().any(done) {
        next_hub_event(&mut events, done).await;
    }
    let last = last_seq(&t);
    assert!(last > 3, "more events than the log keeps");
    let mut stream = Stream::open(addr, "?since=0", &[]).await;
    let first = stream.next().await;
    assert_eq!(first.event, "truncated", "{first:?}");
    assert_eq!(first.id, None);
    assert_eq!(first.data["since"], 0);
    // The ring holds the newest 3; more may have joined since `last` was read (a provider
    // connection's end is logged when its task notices), so the stream resumes at the oldest
    // kept, which is at least `last - 2`.
    let resumes_at = first.data["resumes_at"].as_u64().expect("resumes_at");
    assert!(resumes_at >= last - 2, "{resumes_at} < {last} - 2");
    assert_eq!(stream.next().await.id, Some(resumes_at));
    // The log's length shows in the list too.
    let (_, _, list) = request(addr, "GET", "/v1/notifications", &[], "").await;
    assert_eq!(list["truncated"], true);
    t.stop().await;
}

#[tokio::test]
async fn reset_clears_the_log_store_and_feedback_and_keeps_online_devices() {
    let t = common::start().await;
    let addr = t.sim.addrs().control;
    // An online device, one that went offline with a notification stored, and an app
    // uninstalled with its feedback tuple unread.
    let (mut dev, tokens) = t
        .device("keep-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let kept = tokens[DEFAULT_TOPIC];
    let (mut away, away_tokens) = t
        .device("away-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let gone = away_tokens[DEFAULT_TOPIC];
    command(&away, DeviceCommand::Uninstall(DEFAULT_TOPIC.into())).await;
    next_device_event(&mut away, |e| matches!(e, DeviceEvent::Uninstalled { .. })).await;
    let mut events = t.sim.hub().subscribe();
    push(&t, gone, 1).await;
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::NotInstalled)
    })
    .await;
    let (mut other, other_tokens) = t
        .device("away-2", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    common::go_offline(&t, &mut other, "away-2").await;
    let expiry = common::in_an_hour(&t.clock);
    let mut gw = t.gateway().await;
    let frame = common::frame(
        other_tokens[DEFAULT_TOPIC].as_bytes(),
        &common::alert("later"),
        2,
        expiry,
        10,
    );
    gw.send(&frame).await.expect("sent");
    common::assert_silent(&mut gw).await;
    next_hub_event(&mut events, |e| common::is_outcome(e, 2, Outcome::Stored)).await;
    let feedback = format!("/v1/feedback?topic={DEFAULT_TOPIC}&environment=sandbox");
    let (_, _, before) = request(addr, "GET", &feedback, &[], "").await;
    assert_eq!(before["tuples"].as_array().map(Vec::len), Some(1));
    let seq_before = last_seq(&t);

    // Bad bodies name their field (none for a body that is not a JSON object).
    for (body, field) in [
        (r#"{"devices":"all"}"#, Value::from("devices")),
        (r#"{"device":"keep"}"#, Value::from("device")),
        ("[1]", Value::Null),
    ] {
        let (status, _, answer) = request(addr, "POST", "/v1/reset", &[], body).await;
        assert_eq!((status, &answer["field"]), (400, &field), "{body}");
    }
    let (status, _, answer) = request(addr, "POST", "/v1/reset", &[], "{}").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["devices"], "keep");
    assert_eq!(answer["cleared"]["stored"], 1);
    assert_eq!(answer["cleared"]["feedback"], 1);
    assert_eq!(answer["cleared"]["unregistered"], 1);
    assert_eq!(answer["cleared"]["offline_devices"], 1);
    assert_eq!(answer["cleared"]["events"], seq_before);

    // The log holds the reset alone, numbered on; the store and the feedback are empty.
    let (_, _, list) = request(addr, "GET", "/v1/notifications", &[], "").await;
    assert_eq!(list["notifications"], Value::Array(Vec::new()));
    assert_eq!(list["truncated"], true, "a cursor from before is told");
    let mut stream = Stream::open(addr, &format!("?since={seq_before}"), &[]).await;
    let reset = stream.next().await;
    assert_eq!(
        (reset.event.as_str(), reset.id),
        ("reset", Some(seq_before + 1))
    );
    let (_, _, after) = request(addr, "GET", &feedback, &[], "").await;
    assert_eq!(after["tuples"], Value::Array(Vec::new()));
    // The online device still gets its pushes; the forgotten tokens are unknown now.
    push(&t, kept, 3).await;
    assert_eq!(common::next_id(&mut dev).await, 3);
    stream.until(|m| is(m, 3, "acknowledged")).await;
    let mut gw = t.gateway().await;
    let frame = common::frame(gone.as_bytes(), &common::alert("x"), 4, 0, 10);
    gw.send(&frame).await.expect("sent");
    let answer = gw.finish(TIMEOUT).await.expect("an answer");
    assert!(
        matches!(answer, apns_sim::client::GatewayAnswer::Error(e) if e.status.code() == 8),
        "{answer:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_control_token_is_required_on_every_route() {
    let t = common::start_with(|c| c.control_token = Some(TOKEN.to_owned())).await;
    let addr = t.sim.addrs().control;
    let bearer = format!("Bearer {TOKEN}");
    for (path, method) in [
        ("/v1/health", "GET"),
        ("/v1/notifications", "GET"),
        ("/v1/events", "GET"),
        ("/v1/reset", "POST"),
        ("/metrics", "GET"),
        ("/no/such/route", "GET"),
    ] {
        for headers in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
            let (status, h, body) = request(addr, method, path, headers, "").await;
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(body["field"], "Authorization");
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
            assert!(
                h["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{h:?}"
            );
        }
    }
    let (status, _, body) =
        request(addr, "GET", "/v1/health", &[("Authorization", &bearer)], "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = request(
        addr,
        "GET",
        "/v1/health",
        &[("authorization", &format!("bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(status, 200, "the scheme is case-insensitive");
    // The query token works on the event stream only.
    let (status, _, _) = request(
        addr,
        "GET",
        &format!("/v1/health?access_token={TOKEN}"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let mut stream = Stream::open(addr, &format!("?access_token={TOKEN}"), &[]).await;
    let (_dev, _) = t
        .device("tok-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    assert_eq!(stream.next().await.event, "device_online");
    let (status, _, _) = request(addr, "GET", "/v1/events?access_token=wrong", &[], "").await;
    assert_eq!(status, 401);
    t.stop().await;
}

#[tokio::test]
async fn with_a_token_the_control_api_may_listen_off_loopback() {
    let mut listeners = Listeners::bind_local().await.unwrap();
    listeners.control = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listeners.control.local_addr().unwrap().port();
    let mut config = SimulatorConfig::new(Pki::generate().unwrap());
    config.control_token = Some(TOKEN.to_owned());
    let sim = Simulator::start(config, listeners).expect("starts with a token");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, _) = request(addr, "GET", "/v1/health", &[], "").await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, _) =
        request(addr, "GET", "/v1/health", &[("Authorization", &bearer)], "").await;
    assert_eq!(status, 200);
    sim.shutdown().await;
    // An empty token is refused.
    let mut config = SimulatorConfig::new(Pki::generate().unwrap());
    config.control_token = Some(String::new());
    let err = Simulator::start(config, Listeners::bind_local().await.unwrap()).unwrap_err();
    assert!(err.to_string().contains("control token"), "{err}");
}

#[tokio::test]
async fn control_connections_beyond_the_limit_wait_for_a_slot() {
    let t = common::start_with(|c| c.settings.max_control_connections = 1).await;
    let addr = t.sim.addrs().control;
    // A client that connects and says nothing holds the one slot (it was first in the
    // backlog, so it was accepted first).
    let idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let health = tokio::spawn(async move { request(addr, "GET", "/v1/health", &[], "").await });
    tokio::pin!(health);
    // (A slow machine can only make this pass wrongly, never fail wrongly.)
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut health)
            .await
            .is_err(),
        "the second connection waits"
    );
    drop(idle);
    let (status, _, _) = tokio::time::timeout(TIMEOUT, health)
        .await
        .expect("served once the slot is free")
        .expect("the task");
    assert_eq!(status, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_record_carries_the_payload_push_type_and_labelled_frame() {
    let t = common::start().await;
    let addr = t.sim.addrs().control;
    let (mut dev, tokens) = t
        .device("rec-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let sent = push(&t, token, 5).await;
    common::next_id(&mut dev).await;
    let (status, _, answer) = request(
        addr,
        "GET",
        "/v1/notifications/wait?api=binary&outcome=acknowledged",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let record = &answer["notifications"][0];
    assert_eq!(record["payload"]["aps"]["alert"], "hi");
    assert_eq!(record["priority"], 10);
    assert_eq!(record["expiry"], 0);
    assert_eq!(record["serial"], "rec-1");
    assert_eq!(record["frame"], hex::encode(&sent));
    let fields = record["frame_fields"].as_array().expect("frame_fields");
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
    };
    assert_eq!(field("command")["value"], "2 (frame)");
    assert_eq!(field("device token")["value"], token.to_hex());
    assert_eq!(
        (
            &field("device token")["offset"],
            &field("device token")["length"]
        ),
        (&8.into(), &32.into())
    );
    assert_eq!(field("payload")["value"], common::alert("hi"));
    assert_eq!(field("identifier")["value"], "00000005 (5)");
    assert_eq!(field("priority")["value"], "10");

    // HTTP/2: push type, collapse id, priority and payload; no frame.
    let mut client = t.http2().await;
    let answer = client
        .send(
            &Http2Request::push(&token.to_hex(), common::alert("h2"))
                .header("apns-topic", DEFAULT_TOPIC)
                .header("apns-push-type", "alert")
                .header("apns-collapse-id", "score")
                .header("apns-priority", "5"),
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status, 200);
    common::next_id(&mut dev).await;
    let (status, _, answer) = request(
        addr,
        "GET",
        "/v1/notifications/wait?api=http2&outcome=acknowledged",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let record = &answer["notifications"][0];
    assert_eq!(record["payload"]["aps"]["alert"], "h2");
    assert_eq!(record["push_type"], "alert");
    assert_eq!(record["collapse_id"], "score");
    assert_eq!(record["priority"], 5);
    assert_eq!(record["frame"], Value::Null);
    assert_eq!(record["frame_fields"], Value::Null);

    // A command the gateway refused shows its bytes labelled too: priority 7 is no priority.
    let bad = common::frame(token.as_bytes(), &common::alert("bad"), 6, 0, 7);
    let mut gw = t.gateway().await;
    gw.send(&bad).await.expect("sent");
    let answer = gw.finish(TIMEOUT).await.expect("an answer");
    assert!(
        matches!(answer, apns_sim::client::GatewayAnswer::Error(e) if e.status.code() == 128),
        "{answer:?}"
    );
    let (status, _, answer) = request(
        addr,
        "GET",
        "/v1/notifications/wait?api=binary&outcome=rejected",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let record = &answer["notifications"][0];
    assert_eq!(record["identifier"], 6);
    assert_eq!(record["frame"], hex::encode(&bad));
    assert_eq!(record["payload"], Value::Null, "never checked");
    let fields = record["frame_fields"].as_array().expect("frame_fields");
    let priority = fields
        .iter()
        .find(|f| f["name"] == "priority")
        .expect("labelled");
    assert_eq!(priority["value"], "7");
    t.stop().await;
}
