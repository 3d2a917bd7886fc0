//! The control API's device routes and `POST /v1/push` against a running simulator over real
//! TLS: in-process devices created, listed, given apps, pushed to through both provider APIs
//! (seen in their inbox and in the delivery log), collapse ids applied, offline and back,
//! uninstalled, removed; every bad input answered 4xx naming the field; an outside device
//! listed but not driven (409); a control API without actors answering 503.
//!
//! Waits are on events (the actors' broadcast, which is sent after a device's state and
//! inbox are updated, and the hub's), never sleeps.

use std::net::SocketAddr;

use apns_sim::client::device::DeviceEvent;
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::Environment;
use apns_sim::server::control;
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::common::{self, next_hub_event, TestSim, OTHER_TOPIC, TIMEOUT};

/// One request to a control API: the status, the headers and the body.
pub(crate) async fn call_raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (u16, HeaderMap, Bytes) {
    let headers = [("content-type", "application/json")];
    common::control_request(addr, method.as_str(), path, &headers, body.unwrap_or("")).await
}

/// One request with a JSON body (or none): the status and the JSON answer (`null` for an
/// empty body).
pub(crate) async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    common::control_json(addr, method.as_str(), path, text.as_deref()).await
}

/// The test simulator's control API address.
fn api(t: &TestSim) -> SocketAddr {
    t.sim.addrs().control
}

/// Asserts a 4xx answer naming `field`.
fn refused(answer: &(u16, Value), status: u16, field: Option<&str>) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["field"].as_str(), field, "{}", answer.1);
    assert!(
        answer.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        answer.1
    );
}

/// Creates a managed device through the API; returns its JSON.
async fn create(t: &TestSim, serial: &str, apps: &[&str]) -> Value {
    let (status, device) = call(
        api(t),
        Method::POST,
        "/v1/devices",
        Some(json!({ "serial": serial, "apps": apps })),
    )
    .await;
    assert_eq!(status, 201, "{device}");
    device
}

/// The token of `app` (kind `remote`) in a device's JSON.
fn token_of(device: &Value, app: &str) -> String {
    device["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["app"] == app && a["kind"] == "remote")
        .unwrap_or_else(|| panic!("no {app} in {device}"))["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

/// Pushes through `POST /v1/push`; asserts a 200 and returns Apple's answer.
async fn push(t: &TestSim, body: Value) -> Value {
    let (status, answer) = call(api(t), Method::POST, "/v1/push", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Waits for the managed device to show the notification `apns_id`; returns the event.
async fn shown(events: &mut broadcast::Receiver<DeviceEvent>, apns_id: &str) -> DeviceEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e @ DeviceEvent::Notification { .. }) => {
                    if let DeviceEvent::Notification { apns_id: id, .. } = &e {
                        if id.to_string() == apns_id {
                            return e;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("actors' broadcast: {e}"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("shown in time")
}

/// The inbox's notifications.
async fn inbox(t: &TestSim, serial: &str) -> Vec<Value> {
    let (status, body) = call(
        api(t),
        Method::GET,
        &format!("/v1/devices/{serial}/inbox"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serial"], serial);
    body["notifications"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn a_created_device_is_listed_gets_apps_and_shows_pushes_from_both_apis() {
    let t = common::start().await;
    let mut events = t.sim.actors().subscribe();
    let device = create(&t, "API-1", &[DEFAULT_TOPIC]).await;
    assert_eq!(device["serial"], "API-1");
    assert_eq!(device["environment"], "sandbox");
    assert_eq!(device["online"], true);
    assert_eq!(device["managed"], true);
    let token = token_of(&device, DEFAULT_TOPIC);
    assert_eq!(token.len(), 64, "{token}");

    let (status, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    assert_eq!(status, 200);
    let listed = &list["devices"].as_array().expect("devices")[0];
    assert_eq!(listed, &device, "{list}");

    // Installing answers with the new token, which the list then shows.
    let (status, app) = call(
        api(&t),
        Method::POST,
        "/v1/devices/API-1/apps",
        Some(json!({ "app": OTHER_TOPIC })),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["app"], OTHER_TOPIC);
    assert_eq!(app["kind"], "remote");
    let other = app["token"].as_str().expect("a token").to_owned();
    let (_, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    assert_eq!(token_of(&list["devices"][0], OTHER_TOPIC), other);
    // A second kind of token of the same app.
    let (status, voip) = call(
        api(&t),
        Method::POST,
        "/v1/devices/API-1/apps",
        Some(json!({ "app": DEFAULT_TOPIC, "kind": "voip" })),
    )
    .await;
    assert_eq!(status, 201, "{voip}");
    assert_eq!(voip["kind"], "voip");

    // HTTP/2 by serial and app; binary by token; a VoIP push with its defaults.
    let h2 = push(
        &t,
        json!({ "serial": "API-1", "app": DEFAULT_TOPIC, "payload": {"aps": {"alert": "h2"}} }),
    )
    .await;
    assert_eq!(
        (h2["api"].as_str(), h2["status"].as_u64()),
        (Some("http2"), Some(200)),
        "{h2}"
    );
    let h2_id = h2["apns_id"].as_str().expect("an apns-id").to_owned();
    shown(&mut events, &h2_id).await;
    let bin = push(
        &t,
        json!({ "token": other, "api": "binary", "payload": {"aps": {"alert": "bin"}} }),
    )
    .await;
    assert_eq!(
        (bin["api"].as_str(), bin["status"].as_u64()),
        (Some("binary"), Some(0)),
        "{bin}"
    );
    let bin_id = bin["apns_id"].as_str().expect("an apns-id").to_owned();
    shown(&mut events, &bin_id).await;
    let call_push = push(
        &t,
        json!({ "serial": "API-1", "app": format!("{DEFAULT_TOPIC}:voip"), "payload": {"call": 1} }),
    )
    .await;
    assert_eq!(call_push["status"], 200, "{call_push}");
    shown(&mut events, call_push["apns_id"].as_str().unwrap()).await;

    let shown_list = inbox(&t, "API-1").await;
    let ids: Vec<&str> = shown_list
        .iter()
        .map(|s| s["apns_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            h2_id.as_str(),
            bin_id.as_str(),
            call_push["apns_id"].as_str().unwrap()
        ]
    );
    assert_eq!(shown_list[0]["app"], DEFAULT_TOPIC);
    assert_eq!(shown_list[0]["token"], token);
    assert_eq!(shown_list[0]["payload"], json!({"aps": {"alert": "h2"}}));
    assert_eq!(shown_list[0]["push_type"], "alert");
    assert_eq!(shown_list[1]["app"], OTHER_TOPIC);
    assert_eq!(shown_list[2]["kind"], "voip");
    assert_eq!(shown_list[2]["push_type"], "voip");
    assert!(shown_list[0]["index"].as_u64() < shown_list[1]["index"].as_u64());

    // The delivery log has both, acknowledged, under the device's serial.
    let (status, log) = call(
        api(&t),
        Method::GET,
        "/v1/notifications/wait?serial=API-1&outcome=acknowledged&count=3",
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let logged: Vec<&str> = log["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["apns_id"].as_str().unwrap())
        .collect();
    assert!(
        logged.contains(&h2_id.as_str()) && logged.contains(&bin_id.as_str()),
        "{log}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_collapse_id_replaces_the_shown_notification_in_place() {
    let t = common::start().await;
    let mut events = t.sim.actors().subscribe();
    create(&t, "COLLAPSE", &[DEFAULT_TOPIC]).await;
    let send = |text: &'static str, collapse: Option<&'static str>| {
        let mut body = json!({ "serial": "COLLAPSE", "app": DEFAULT_TOPIC,
                               "payload": {"aps": {"alert": text}} });
        if let Some(c) = collapse {
            body["collapse_id"] = json!(c);
        }
        body
    };
    for (text, collapse) in [
        ("score 1-0", Some("score")),
        ("other", None),
        ("score 2-0", Some("score")),
    ] {
        let answer = push(&t, send(text, collapse)).await;
        shown(&mut events, answer["apns_id"].as_str().unwrap()).await;
    }
    let list = inbox(&t, "COLLAPSE").await;
    let alerts: Vec<&Value> = list.iter().map(|s| &s["payload"]["aps"]["alert"]).collect();
    assert_eq!(alerts, [&json!("score 2-0"), &json!("other")], "{list:?}");
    assert_eq!(list[0]["collapse_id"], "score");
    assert_eq!(list[0]["index"], 3);
    assert!(list[1].get("collapse_id").is_none(), "{list:?}");
    t.stop().await;
}

#[tokio::test]
async fn offline_stores_online_delivers_uninstall_reports_and_delete_removes() {
    let t = common::start().await;
    let mut events = t.sim.actors().subscribe();
    let mut hub = t.sim.hub().subscribe();
    let device = create(&t, "ROAM", &[DEFAULT_TOPIC]).await;
    let token = token_of(&device, DEFAULT_TOPIC);

    let (status, off) = call(api(&t), Method::POST, "/v1/devices/ROAM/offline", None).await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["online"], false);
    let (status, again) = call(api(&t), Method::POST, "/v1/devices/ROAM/offline", None).await;
    assert_eq!((status, &again["online"]), (200, &json!(false)), "{again}");
    let stored = push(
        &t,
        json!({ "token": token, "payload": {"aps": {"alert": "later"}} }),
    )
    .await;
    assert_eq!(stored["status"], 200, "{stored}");
    next_hub_event(&mut hub, |e| {
        matches!(
            e,
            Event::Notification {
                outcome: Outcome::Stored,
                ..
            }
        )
    })
    .await;
    let (status, on) = call(api(&t), Method::POST, "/v1/devices/ROAM/online", None).await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["online"], true);
    assert_eq!(
        token_of(&on, DEFAULT_TOPIC),
        token,
        "a reconnect keeps the token"
    );
    shown(&mut events, stored["apns_id"].as_str().unwrap()).await;
    assert_eq!(inbox(&t, "ROAM").await.len(), 1);

    // Uninstalled: the device answers "not installed" to the next push, and the app's
    // notifications leave its inbox.
    let (status, _) = call(
        api(&t),
        Method::DELETE,
        &format!("/v1/devices/ROAM/apps/{DEFAULT_TOPIC}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(inbox(&t, "ROAM").await.is_empty());
    let gone = push(
        &t,
        json!({ "token": token, "payload": {"aps": {"alert": "gone"}} }),
    )
    .await;
    assert_eq!(gone["status"], 200, "{gone}");
    let (status, log) = call(
        api(&t),
        Method::GET,
        &format!("/v1/notifications/wait?token={token}&outcome=not_installed"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["notifications"][0]["apns_id"], gone["apns_id"]);
    // APNs now answers 410 for the token.
    let after = push(&t, json!({ "token": token, "payload": {"aps": {}} })).await;
    assert_eq!(
        (after["status"].as_u64(), after["reason"].as_str()),
        (Some(410), Some("Unregistered"))
    );

    // Deleted: gone from the actors; the hub remembers it, offline and unmanaged.
    let (status, _) = call(api(&t), Method::DELETE, "/v1/devices/ROAM", None).await;
    assert_eq!(status, 204);
    let (status, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["devices"][0]["managed"], false, "{list}");
    assert_eq!(list["devices"][0]["online"], false, "{list}");
    refused(
        &call(api(&t), Method::DELETE, "/v1/devices/ROAM", None).await,
        409,
        None,
    );
    refused(
        &call(api(&t), Method::DELETE, "/v1/devices/NEVER", None).await,
        404,
        None,
    );
    // The serial can be used again.
    create(&t, "ROAM", &[DEFAULT_TOPIC]).await;
    t.stop().await;
}

#[tokio::test]
async fn an_outside_device_is_listed_but_not_driven() {
    let t = common::start().await;
    let (_dev, tokens) = t
        .device("OUTSIDE", Environment::Production, &[DEFAULT_TOPIC])
        .await;
    let (status, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    assert_eq!(status, 200);
    let d = &list["devices"][0];
    assert_eq!(
        (
            d["serial"].as_str(),
            d["environment"].as_str(),
            d["online"].as_bool(),
            d["managed"].as_bool()
        ),
        (Some("OUTSIDE"), Some("production"), Some(true), Some(false)),
        "{list}"
    );
    assert_eq!(token_of(d, DEFAULT_TOPIC), tokens[DEFAULT_TOPIC].to_hex());
    for (method, path) in [
        (Method::POST, "/v1/devices/OUTSIDE/offline"),
        (Method::POST, "/v1/devices/OUTSIDE/online"),
        (Method::GET, "/v1/devices/OUTSIDE/inbox"),
        (Method::DELETE, "/v1/devices/OUTSIDE"),
    ] {
        let answer = call(api(&t), method, path, None).await;
        refused(&answer, 409, None);
        assert!(
            answer.1["error"].as_str().unwrap().contains("not managed"),
            "{}",
            answer.1
        );
    }
    refused(
        &call(
            api(&t),
            Method::POST,
            "/v1/devices",
            Some(json!({"serial": "OUTSIDE"})),
        )
        .await,
        409,
        None,
    );
    // A push to it by serial and app goes through the production environment.
    let answer = push(
        &t,
        json!({ "serial": "OUTSIDE", "app": DEFAULT_TOPIC, "payload": {"aps": {}}, "api": "binary" }),
    )
    .await;
    assert_eq!(answer["status"], 0, "{answer}");
    t.stop().await;
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_field() {
    let t = common::start().await;
    let device = create(&t, "STRICT", &[DEFAULT_TOPIC]).await;
    let token = token_of(&device, DEFAULT_TOPIC);
    let post = |path: &'static str, body: Value| {
        let addr = api(&t);
        async move { call(addr, Method::POST, path, Some(body)).await }
    };
    // POST /v1/devices
    refused(
        &post("/v1/devices", json!({"bogus": 1})).await,
        400,
        Some("bogus"),
    );
    refused(
        &post("/v1/devices", json!({"serial": ""})).await,
        400,
        Some("serial"),
    );
    refused(
        &post("/v1/devices", json!({"serial": "a b"})).await,
        400,
        Some("serial"),
    );
    refused(
        &post("/v1/devices", json!({"serial": 7})).await,
        400,
        Some("serial"),
    );
    refused(
        &post("/v1/devices", json!({"environment": "moon"})).await,
        400,
        Some("environment"),
    );
    refused(
        &post("/v1/devices", json!({"apps": ["com.a:bogus"]})).await,
        400,
        Some("apps"),
    );
    refused(
        &post("/v1/devices", json!({"apps": ["com.a", "com a"]})).await,
        400,
        Some("apps"),
    );
    // An app given twice (`com.a` is `com.a:remote`) is registered once.
    let twice = post(
        "/v1/devices",
        json!({"serial": "TWICE", "apps": ["com.a", "com.a:remote"]}),
    )
    .await;
    assert_eq!(twice.0, 201, "{}", twice.1);
    assert_eq!(
        twice.1["apps"].as_array().map(Vec::len),
        Some(1),
        "{}",
        twice.1
    );
    refused(
        &post("/v1/devices", json!({"apps": "com.a"})).await,
        400,
        Some("apps"),
    );
    refused(
        &post("/v1/devices", json!({"serial": "STRICT"})).await,
        409,
        None,
    );
    let (status, _, body) = call_raw(api(&t), Method::POST, "/v1/devices", Some("{not json")).await;
    assert_eq!(status, 400, "{body:?}");
    // The apps routes.
    refused(
        &post("/v1/devices/NOPE/apps", json!({"app": "com.a"})).await,
        404,
        None,
    );
    refused(
        &post("/v1/devices/STRICT/apps", json!({"ap": "com.a"})).await,
        400,
        Some("ap"),
    );
    refused(
        &post("/v1/devices/STRICT/apps", json!({})).await,
        400,
        Some("app"),
    );
    refused(
        &post("/v1/devices/STRICT/apps", json!({"app": ""})).await,
        400,
        Some("app"),
    );
    refused(
        &post(
            "/v1/devices/STRICT/apps",
            json!({"app": "com.a", "kind": "smoke"}),
        )
        .await,
        400,
        Some("kind"),
    );
    let delete = |path: &'static str| {
        let addr = api(&t);
        async move { call(addr, Method::DELETE, path, None).await }
    };
    refused(&delete("/v1/devices/STRICT/apps/com.none").await, 404, None);
    refused(
        &delete("/v1/devices/STRICT/apps/com.example.app?kind=bogus").await,
        400,
        Some("kind"),
    );
    refused(
        &delete("/v1/devices/STRICT/apps/com.example.app?other=1").await,
        400,
        Some("other"),
    );
    refused(&delete("/v1/devices/NOPE/apps/com.a").await, 404, None);
    // Offline, online, inbox of an unknown device.
    refused(
        &post("/v1/devices/NOPE/offline", json!(null)).await,
        404,
        None,
    );
    refused(
        &post("/v1/devices/NOPE/online", json!(null)).await,
        404,
        None,
    );
    refused(
        &call(api(&t), Method::GET, "/v1/devices/NOPE/inbox", None).await,
        404,
        None,
    );
    // The .apns download.
    let get = |path: &'static str| {
        let addr = api(&t);
        async move { call(addr, Method::GET, path, None).await }
    };
    refused(
        &get("/v1/devices/STRICT/inbox/abc/apns").await,
        400,
        Some("index"),
    );
    refused(&get("/v1/devices/STRICT/inbox/99/apns").await, 404, None);
    refused(&get("/v1/devices/NOPE/inbox/1/apns").await, 404, None);
    // POST /v1/push.
    let payload = json!({"aps": {}});
    refused(
        &post("/v1/push", json!({"payload": payload})).await,
        400,
        Some("token"),
    );
    refused(
        &post("/v1/push", json!({"token": token})).await,
        400,
        Some("payload"),
    );
    refused(
        &post("/v1/push", json!({"token": "zz", "payload": payload})).await,
        400,
        Some("token"),
    );
    refused(
        &post("/v1/push", json!({"token": token, "payload": 5})).await,
        400,
        Some("payload"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "payload": payload, "api": "smoke"}),
        )
        .await,
        400,
        Some("api"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "payload": payload, "priority": 7}),
        )
        .await,
        400,
        Some("priority"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "payload": payload, "extra": 1}),
        )
        .await,
        400,
        Some("extra"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "payload": payload, "api": "binary", "collapse_id": "c"}),
        )
        .await,
        400,
        Some("collapse_id"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "payload": payload, "topic": "a\nb"}),
        )
        .await,
        400,
        Some("topic"),
    );
    refused(
        &post("/v1/push", json!({"serial": "STRICT", "payload": payload})).await,
        400,
        Some("app"),
    );
    refused(
        &post("/v1/push", json!({"app": "com.a", "payload": payload})).await,
        400,
        Some("serial"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"token": token, "serial": "STRICT", "app": "com.a", "payload": payload}),
        )
        .await,
        400,
        Some("token"),
    );
    refused(
        &post(
            "/v1/push",
            json!({"serial": "NOPE", "app": "com.a", "payload": payload}),
        )
        .await,
        404,
        None,
    );
    refused(
        &post(
            "/v1/push",
            json!({"serial": "STRICT", "app": "com.none", "payload": payload}),
        )
        .await,
        404,
        None,
    );
    // Apple's refusals are answers, not errors.
    let bad = push(&t, json!({"token": "00".repeat(32), "payload": payload})).await;
    assert_eq!(
        (bad["status"].as_u64(), bad["reason"].as_str()),
        (Some(400), Some("BadDeviceToken"))
    );
    let bad = push(
        &t,
        json!({"token": "00".repeat(32), "payload": payload, "api": "binary"}),
    )
    .await;
    assert_eq!(bad["status"], 8, "{bad}");
    // A wrong method names the rule.
    let (status, body) = call(api(&t), Method::PUT, "/v1/devices", None).await;
    assert_eq!(status, 405, "{body}");
    t.stop().await;
}

#[tokio::test]
async fn the_apns_download_is_the_payload_with_its_bundle() {
    let t = common::start().await;
    let mut events = t.sim.actors().subscribe();
    create(&t, "FILE", &[DEFAULT_TOPIC]).await;
    let answer = push(
        &t,
        json!({"serial": "FILE", "app": DEFAULT_TOPIC, "payload": {"aps": {"alert": "file"}, "k": 1}}),
    )
    .await;
    shown(&mut events, answer["apns_id"].as_str().unwrap()).await;
    let index = inbox(&t, "FILE").await[0]["index"].as_u64().unwrap();
    let (status, headers, body) = call_raw(
        api(&t),
        Method::GET,
        &format!("/v1/devices/FILE/inbox/{index}/apns"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"FILE-{index}.apns\"")
    );
    let file: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        file,
        json!({"Simulator Target Bundle": DEFAULT_TOPIC, "aps": {"alert": "file"}, "k": 1})
    );
    t.stop().await;
}

#[tokio::test]
async fn a_control_api_without_actors_answers_503() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = apns_sim::hub::Hub::new(apns_sim::clock::Clock::system());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let endpoints = control::Endpoints {
        gateway: addr,
        feedback: addr,
        http2: addr,
        devices: addr,
        control: addr,
    };
    let server = tokio::spawn(control::run(
        listener,
        hub,
        endpoints,
        shutdown.clone(),
        control::ControlConfig::default(),
    ));
    let answer = call(addr, Method::POST, "/v1/devices", Some(json!({}))).await;
    refused(&answer, 503, None);
    let answer = call(
        addr,
        Method::POST,
        "/v1/push",
        Some(json!({"token": "00", "payload": {}})),
    )
    .await;
    refused(&answer, 503, None);
    // Listing still works: the hub's devices, none managed.
    let (status, list) = call(addr, Method::GET, "/v1/devices", None).await;
    assert_eq!((status, list), (200, json!({"devices": []})));
    shutdown.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_production_device_gets_pushes_through_the_production_environment() {
    let t = common::start().await;
    let mut events = t.sim.actors().subscribe();
    let (status, device) = call(
        api(&t),
        Method::POST,
        "/v1/devices",
        Some(json!({"serial": "PROD", "environment": "production",
                    "apps": [DEFAULT_TOPIC, format!("{DEFAULT_TOPIC}:voip")]})),
    )
    .await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(device["environment"], "production");
    assert_eq!(device["apps"].as_array().unwrap().len(), 2, "{device}");
    for api_name in ["http2", "binary"] {
        let answer = push(
            &t,
            json!({"serial": "PROD", "app": DEFAULT_TOPIC, "api": api_name, "payload": {"aps": {}}}),
        )
        .await;
        assert!(
            [0, 200].contains(&answer["status"].as_u64().unwrap()),
            "{answer}"
        );
        shown(&mut events, answer["apns_id"].as_str().unwrap()).await;
    }
    let voip = push(
        &t,
        json!({"serial": "PROD", "app": format!("{DEFAULT_TOPIC}:voip"), "payload": {"call": 1}}),
    )
    .await;
    assert_eq!(voip["status"], 200, "{voip}");
    shown(&mut events, voip["apns_id"].as_str().unwrap()).await;
    t.stop().await;
}

#[tokio::test]
async fn remove_all_stops_every_managed_device() {
    let t = common::start().await;
    create(&t, "ALL-1", &[DEFAULT_TOPIC]).await;
    create(&t, "ALL-2", &[]).await;
    assert_eq!(t.sim.actors().remove_all().await.len(), 2);
    assert!(t.sim.actors().list().is_empty());
    let (_, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    let managed: Vec<&Value> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["managed"] == true)
        .collect();
    assert!(managed.is_empty(), "{list}");
    t.stop().await;
}

#[tokio::test]
async fn reset_removing_devices_forgets_them_and_their_faults() {
    let t = common::start().await;
    let kept = create(&t, "RESET-KEEP", &[DEFAULT_TOPIC]).await;
    let (status, _) = call(
        api(&t),
        Method::POST,
        "/v1/faults",
        Some(json!({"on": "binary", "close": true})),
    )
    .await;
    assert_eq!(status, 201);
    // "keep": the device stays, online, with its token; the fault goes.
    let (status, answer) = call(
        api(&t),
        Method::POST,
        "/v1/reset",
        Some(json!({"devices": "keep"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["removed_devices"], &answer["cleared"]["faults"]),
        (&json!(0), &json!(1))
    );
    let (_, faults) = call(api(&t), Method::GET, "/v1/faults", None).await;
    assert_eq!(faults["faults"], json!([]));
    let (_, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    let listed = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == "RESET-KEEP")
        .cloned()
        .unwrap_or_else(|| panic!("kept: {list}"));
    assert_eq!(listed["online"], true);
    assert_eq!(
        token_of(&listed, DEFAULT_TOPIC),
        token_of(&kept, DEFAULT_TOPIC)
    );
    // "remove": every in-process device stops, and the hub, which has seen them leave,
    // forgets them: the list no longer has them, and their tokens are unknown.
    let (status, answer) = call(
        api(&t),
        Method::POST,
        "/v1/reset",
        Some(json!({"devices": "remove"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["removed_devices"].as_u64().unwrap() >= 1, "{answer}");
    assert!(
        answer["cleared"]["offline_devices"].as_u64().unwrap() >= 1,
        "{answer}"
    );
    let (_, list) = call(api(&t), Method::GET, "/v1/devices", None).await;
    assert_eq!(list["devices"], json!([]), "{list}");
    let gone = push(
        &t,
        json!({"token": token_of(&kept, DEFAULT_TOPIC), "topic": DEFAULT_TOPIC, "payload": {"aps": {}}}),
    )
    .await;
    assert_eq!(gone["status"], 400, "{gone}");
    assert_eq!(gone["reason"], "BadDeviceToken", "{gone}");
    t.stop().await;
}

#[tokio::test]
async fn a_device_that_cannot_get_online_is_answered_with_its_reason() {
    // No connection slot on the device endpoint: the handshake never completes.
    let t = common::start_with(|c| c.settings.max_device_connections = 0).await;
    let (status, body) = call(
        api(&t),
        Method::POST,
        "/v1/devices",
        Some(json!({"serial": "STUCK"})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("STUCK") && error.contains("Welcome"),
        "{error}"
    );
    assert!(
        t.sim.actors().list().is_empty(),
        "the failed device is removed"
    );
    t.stop().await;
}
