//! Token kinds and token lengths over real TLS: each kind of token an app registers is its
//! own token, a push of the fitting type reaches it, a push of another type gets Apple's
//! `DeviceTokenNotForTopic` (binary: status 8) with the hub saying why, and tokens of other
//! lengths than 32 bytes work end to end over HTTP/2.

use std::collections::HashMap;
use std::sync::Arc;

use apns_sim::client::device::{DeviceCommand, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::{Http2Client, Http2Request, Http2Response};
use apns_sim::client::GatewayAnswer;
use apns_sim::hub::{Event, Logged, Outcome};
use apns_sim::pki::{CertEnvironment, DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::error_response::{ErrorResponse, Status};
use apns_sim::protocol::token::{AppToken, DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use uuid::Uuid;

use crate::common::{self, TestSim, TIMEOUT};

/// Every kind of token of [`DEFAULT_TOPIC`].
fn every_kind() -> Vec<AppToken> {
    TokenKind::every("ride-1")
        .into_iter()
        .map(|kind| AppToken::new(DEFAULT_TOPIC, kind))
        .collect()
}

/// Starts a sandbox device holding `wanted`, waits for every token, and returns them by
/// app and kind.
async fn device_with(
    t: &TestSim,
    serial: &str,
    wanted: &[AppToken],
) -> (DeviceHandle, HashMap<AppToken, DeviceToken>) {
    let specs: Vec<String> = wanted.iter().map(AppToken::to_string).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let (dev, tokens) = t.device(serial, Environment::Sandbox, &specs).await;
    let tokens = tokens
        .into_iter()
        .map(|(spec, token)| (spec.parse().expect("APP[:KIND]"), token))
        .collect();
    (dev, tokens)
}

/// Sends an alert to the app's ordinary `token` (with a provider token when `jwt` is given)
/// and checks that the device shows it.
async fn alert_arrives(
    client: &mut Http2Client,
    dev: &mut DeviceHandle,
    token: DeviceToken,
    jwt: Option<&str>,
) {
    let mut request = push(&token, "alert", DEFAULT_TOPIC);
    if let Some(jwt) = jwt {
        request = request.bearer(jwt);
    }
    let answer = send(client, &request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(next_kind(dev).await, (TokenKind::Remote, token));
}

/// A push of `push_type` to `topic` and `token`.
fn push(token: &DeviceToken, push_type: &str, topic: &str) -> Http2Request {
    let payload = match push_type {
        "widgets" | "controls" => r#"{"aps":{"content-changed":true}}"#,
        _ => r#"{"aps":{"alert":"kinds"}}"#,
    };
    Http2Request::push(&token.to_hex(), payload)
        .header("apns-push-type", push_type)
        .header("apns-topic", topic)
}

/// Sends and returns the answer.
async fn send(client: &mut Http2Client, request: &Http2Request) -> Http2Response {
    tokio::time::timeout(TIMEOUT, client.send(request))
        .await
        .expect("answer in time")
        .expect("an answer")
}

/// The kind of the token the next notification the device shows was sent to.
async fn next_kind(dev: &mut DeviceHandle) -> (TokenKind, DeviceToken) {
    match common::next_notification(dev).await {
        DeviceEvent::Notification { kind, token, .. } => (kind, token),
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// The hub's reason for rejecting the notification with `apns_id`.
async fn rejection_detail(
    events: &mut tokio::sync::broadcast::Receiver<Logged>,
    answer: &Http2Response,
) -> String {
    let id: Uuid = answer
        .apns_id
        .as_deref()
        .expect("apns-id on the answer")
        .parse()
        .expect("a UUID");
    match common::next_hub_event(events, |e| {
        matches!(e, Event::Notification { apns_id, outcome: Outcome::Rejected, .. } if *apns_id == id)
    })
    .await
    {
        Event::Notification { detail, .. } => detail,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn every_kind_gets_its_own_token_and_its_push_type_reaches_it() {
    let t = common::start().await;
    let wanted = every_kind();
    let (mut dev, tokens) = device_with(&t, "KINDS-1", &wanted).await;
    let mut distinct: Vec<DeviceToken> = tokens.values().copied().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), wanted.len(), "one token per kind");

    // Token auth: a token connection may use every push type (spec §4.4).
    let mut client = t.http2_token().await;
    let jwt = t.jwt(DEFAULT_KEY_ID);
    for held in &wanted {
        let token = tokens[held];
        let request = push(&token, held.kind.push_type(), &held.topic()).bearer(&jwt);
        let answer = send(&mut client, &request).await;
        assert_eq!(answer.status, 200, "{held}: {answer:?}");
        assert_eq!(next_kind(&mut dev).await, (held.kind.clone(), token));
    }
    t.stop().await;
}

#[tokio::test]
async fn a_push_that_does_not_fit_the_token_gets_device_token_not_for_topic() {
    let t = common::start().await;
    let voip = AppToken::new(DEFAULT_TOPIC, TokenKind::Voip);
    let ordinary = AppToken::from(DEFAULT_TOPIC);
    let (mut dev, tokens) = device_with(&t, "KINDS-2", &[ordinary.clone(), voip.clone()]).await;
    let mut events = t.sim.hub().subscribe();
    // The default certificate lists com.example.app and com.example.app.voip.
    let mut client = t.http2().await;
    let voip_topic = voip.topic();

    // A VoIP push to the app's ordinary token.
    let answer = send(&mut client, &push(&tokens[&ordinary], "voip", &voip_topic)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.reason.as_deref(), Some("DeviceTokenNotForTopic"));
    let why = rejection_detail(&mut events, &answer).await;
    assert!(
        why.contains("remote-notification token")
            && why.contains("needs the app's PushKit VoIP token"),
        "{why}"
    );

    // An alert to the PushKit token.
    let answer = send(&mut client, &push(&tokens[&voip], "alert", DEFAULT_TOPIC)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.reason.as_deref(), Some("DeviceTokenNotForTopic"));
    let why = rejection_detail(&mut events, &answer).await;
    assert!(
        why.contains("PushKit VoIP token")
            && why.contains("needs the app's remote-notification token"),
        "{why}"
    );

    // The fitting pushes arrive, each at its own token.
    let answer = send(&mut client, &push(&tokens[&voip], "voip", &voip_topic)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(next_kind(&mut dev).await, (TokenKind::Voip, tokens[&voip]));
    alert_arrives(&mut client, &mut dev, tokens[&ordinary], None).await;
    t.stop().await;
}

#[tokio::test]
async fn the_binary_api_takes_the_kind_from_the_certificates_topic() {
    let voip_topic = TokenKind::Voip.topic(DEFAULT_TOPIC);
    let cert_topic = voip_topic.clone();
    let t = common::start_with(move |c| {
        Arc::get_mut(&mut c.pki)
            .expect("the configuration owns its PKI")
            .mint_provider(&cert_topic, CertEnvironment::Universal, DEFAULT_TEAM_ID)
            .expect("a VoIP certificate");
    })
    .await;
    let voip = AppToken::new(DEFAULT_TOPIC, TokenKind::Voip);
    let ordinary = AppToken::from(DEFAULT_TOPIC);
    let (mut dev, tokens) = device_with(&t, "KINDS-3", &[ordinary.clone(), voip.clone()]).await;
    let voip_tls = t.provider_tls(&voip_topic, CertEnvironment::Universal);
    let payload = common::alert("incoming call");

    // A certificate for com.example.app.voip pushes to the PushKit token …
    let mut gw = t.gateway_as(voip_tls.clone(), "localhost").await;
    gw.send(&common::frame(tokens[&voip].as_bytes(), &payload, 1, 0, 10))
        .await
        .unwrap();
    assert_eq!(next_kind(&mut dev).await, (TokenKind::Voip, tokens[&voip]));
    // … and not to the ordinary token: status 8, as for another app's token.
    gw.send(&common::frame(
        tokens[&ordinary].as_bytes(),
        &payload,
        2,
        0,
        10,
    ))
    .await
    .unwrap();
    let refused = GatewayAnswer::Error(ErrorResponse {
        status: Status::InvalidToken,
        identifier: 2u32.to_be_bytes(),
    });
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), refused);

    // The app's own certificate reaches the ordinary token only.
    let mut gw = t.gateway().await;
    gw.send(&common::frame(tokens[&voip].as_bytes(), &payload, 2, 0, 10))
        .await
        .unwrap();
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), refused);
    t.stop().await;
}

#[tokio::test]
async fn kinds_are_installed_and_removed_one_at_a_time() {
    let t = common::start().await;
    let ordinary = AppToken::from(DEFAULT_TOPIC);
    let (mut dev, tokens) = device_with(&t, "KINDS-4", std::slice::from_ref(&ordinary)).await;
    let start = AppToken::new(DEFAULT_TOPIC, TokenKind::LiveActivityStart);
    common::command(&dev, DeviceCommand::Install(start.clone())).await;
    let DeviceEvent::Registered { kind, token, .. } =
        common::next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Registered { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(kind, TokenKind::LiveActivityStart);
    assert_ne!(token, tokens[&ordinary]);

    // Removing the Live Activity token leaves the app and its ordinary token.
    common::command(&dev, DeviceCommand::Uninstall(start.clone())).await;
    common::next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Uninstalled { .. })).await;
    let mut client = t.http2_token().await;
    let jwt = t.jwt(DEFAULT_KEY_ID);
    let answer = send(
        &mut client,
        &push(&token, "liveactivity", &start.topic()).bearer(&jwt),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let gone =
        common::next_device_event(&mut dev, |e| matches!(e, DeviceEvent::NotInstalled { .. }))
            .await;
    let DeviceEvent::NotInstalled { app, kind, .. } = gone else {
        unreachable!()
    };
    assert_eq!(
        (app.as_deref(), kind),
        (Some(DEFAULT_TOPIC), Some(TokenKind::LiveActivityStart))
    );
    alert_arrives(&mut client, &mut dev, tokens[&ordinary], Some(&jwt)).await;
    t.stop().await;
}

#[tokio::test]
async fn with_token_len_80_a_device_gets_an_80_byte_token_that_http2_reaches() {
    let t = common::start_with(|c| c.settings.token_len = 80).await;
    let ordinary = AppToken::from(DEFAULT_TOPIC);
    let (mut dev, tokens) = device_with(&t, "LONG-1", std::slice::from_ref(&ordinary)).await;
    let token = tokens[&ordinary];
    assert_eq!(token.len(), 80);
    assert_eq!(token.to_hex().len(), 160);

    let mut client = t.http2().await;
    alert_arrives(&mut client, &mut dev, token, None).await;

    // The binary API keeps its 32-byte rule: status 5 (Invalid token size).
    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("long"),
        9,
        0,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(
        gw.finish(TIMEOUT).await.unwrap(),
        GatewayAnswer::Error(ErrorResponse {
            status: Status::InvalidTokenSize,
            identifier: 9u32.to_be_bytes(),
        })
    );
    t.stop().await;
}
