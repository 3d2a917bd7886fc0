//! The legacy binary gateway over real mutual TLS: delivery in each format, every status
//! code, close-and-discard after an error, certificate checks, shutdown status 10.

use std::time::Duration;

use apns_sim::client::device::DeviceEvent;
use apns_sim::client::{BinaryClient, GatewayAnswer};
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::{CertEnvironment, Pki, DEFAULT_TOPIC};
use apns_sim::protocol::error_response::{ErrorResponse, Status};
use apns_sim::protocol::notification::{self, FrameItem};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::tls;
use bytes::{Bytes, BytesMut};

use crate::common::{self, frame, next_hub_event, next_notification, TIMEOUT};

const PAYLOAD: &str = r#"{"aps":{"alert":"hi"}}"#;

fn items(list: &[(u8, &[u8])]) -> Vec<u8> {
    let items: Vec<FrameItem> = list
        .iter()
        .map(|(id, data)| FrameItem {
            id: *id,
            data: Bytes::copy_from_slice(data),
        })
        .collect();
    let mut out = BytesMut::new();
    notification::encode_frame_items(&items, &mut out);
    out.to_vec()
}

fn enhanced(id: u32, expiry: u32, token: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    notification::encode_enhanced_raw(id.to_be_bytes(), expiry, token, payload, &mut out);
    out.to_vec()
}

fn simple(token: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    notification::encode_simple_raw(token, payload, &mut out);
    out.to_vec()
}

async fn expect_error(client: &mut BinaryClient, status: Status, id: u32) {
    let answer = client.finish(TIMEOUT).await.expect("answer");
    assert_eq!(
        answer,
        GatewayAnswer::Error(ErrorResponse {
            status,
            identifier: id.to_be_bytes()
        }),
        "expected status {status} for id {id}"
    );
}

#[tokio::test]
async fn each_format_is_delivered() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("FMT-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let expiry = common::in_an_hour(&t.clock);
    let mut gw = t.gateway().await;
    // Without an expiry the hub applies (and the device is shown) the 30-day policy.
    let policy = |e: u32| u64::from(e).checked_sub(30 * 86_400);
    let before = t.clock.now_secs();

    gw.send(&simple(token.as_bytes(), br#"{"aps":{"alert":"simple"}}"#))
        .await
        .unwrap();
    let DeviceEvent::Notification {
        id,
        priority,
        expiry: e,
        payload,
        token: got,
        ..
    } = next_notification(&mut dev).await
    else {
        unreachable!()
    };
    assert_eq!((id, priority, got), (0, 10, token));
    assert!(policy(e).is_some_and(|at| (before..=t.clock.now_secs()).contains(&at)));
    assert_eq!(payload["aps"]["alert"], "simple");

    gw.send(&enhanced(
        77,
        expiry,
        token.as_bytes(),
        br#"{"aps":{"alert":"enhanced"}}"#,
    ))
    .await
    .unwrap();
    let DeviceEvent::Notification {
        id,
        priority,
        expiry: e,
        payload,
        ..
    } = next_notification(&mut dev).await
    else {
        unreachable!()
    };
    assert_eq!((id, priority, e), (77, 10, expiry));
    assert_eq!(payload["aps"]["alert"], "enhanced");

    gw.send(&frame(
        token.as_bytes(),
        r#"{"aps":{"alert":"frame"}}"#,
        78,
        expiry,
        5,
    ))
    .await
    .unwrap();
    let DeviceEvent::Notification {
        id,
        priority,
        expiry: e,
        payload,
        app,
        ..
    } = next_notification(&mut dev).await
    else {
        unreachable!()
    };
    assert_eq!(
        (id, priority, e, app.as_str()),
        (78, 5, expiry, DEFAULT_TOPIC)
    );
    assert_eq!(payload["aps"]["alert"], "frame");

    // Optional items omitted: identifier 0, no expiry (the policy), priority 10.
    gw.send(&items(&[(2, PAYLOAD.as_bytes()), (1, token.as_bytes())]))
        .await
        .unwrap();
    let DeviceEvent::Notification {
        id,
        priority,
        expiry: e,
        ..
    } = next_notification(&mut dev).await
    else {
        unreachable!()
    };
    assert_eq!((id, priority), (0, 10));
    assert!(policy(e).is_some_and(|at| (before..=t.clock.now_secs()).contains(&at)));

    // Many notifications in one write, and one split across writes.
    let mut batch = Vec::new();
    for i in 100..110u32 {
        batch.extend(frame(token.as_bytes(), PAYLOAD, i, expiry, 10));
    }
    let split = frame(token.as_bytes(), PAYLOAD, 110, expiry, 10);
    batch.extend(&split[..20]);
    gw.send(&batch).await.unwrap();
    gw.send(&split[20..]).await.unwrap();
    for i in 100..=110u32 {
        let id = common::next_id(&mut dev).await;
        assert_eq!(id, i, "in order");
    }
    // Success is silent.
    common::assert_silent(&mut gw).await;
    t.stop().await;
}

#[tokio::test]
async fn every_status_code() {
    let t = common::start().await;
    let (_dev, tokens) = t
        .device("CODES-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let tok: &[u8] = token.as_bytes();
    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(2100));
    let legacy_big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(250));
    // A status and identifier, or `None`: closed without a byte (command 0 and an unknown
    // command byte, as Apple did).
    type Answer = Option<(Status, u32)>;
    let cases: Vec<(&str, Vec<u8>, Answer)> = vec![
        (
            "frame without token",
            items(&[(2, PAYLOAD.as_bytes()), (3, &9u32.to_be_bytes())]),
            Some((Status::MissingDeviceToken, 9)),
        ),
        (
            "frame with empty token",
            items(&[(1, b""), (2, PAYLOAD.as_bytes()), (3, &10u32.to_be_bytes())]),
            Some((Status::MissingDeviceToken, 10)),
        ),
        (
            "enhanced with empty token",
            enhanced(11, 0, b"", PAYLOAD.as_bytes()),
            Some((Status::MissingDeviceToken, 11)),
        ),
        (
            "frame without payload",
            items(&[(1, tok), (3, &12u32.to_be_bytes())]),
            Some((Status::MissingPayload, 12)),
        ),
        (
            "enhanced with empty payload",
            enhanced(13, 0, tok, b""),
            Some((Status::MissingPayload, 13)),
        ),
        (
            "frame with short token",
            items(&[
                (1, &tok[..31]),
                (2, PAYLOAD.as_bytes()),
                (3, &14u32.to_be_bytes()),
            ]),
            Some((Status::InvalidTokenSize, 14)),
        ),
        (
            "enhanced with long token",
            enhanced(15, 0, &[tok, &[0]].concat(), PAYLOAD.as_bytes()),
            Some((Status::InvalidTokenSize, 15)),
        ),
        (
            "frame payload over 2048",
            frame(tok, &big, 16, 0, 10),
            Some((Status::InvalidPayloadSize, 16)),
        ),
        (
            "enhanced payload over 256",
            enhanced(17, 0, tok, legacy_big.as_bytes()),
            Some((Status::InvalidPayloadSize, 17)),
        ),
        (
            "simple payload over 256",
            simple(tok, legacy_big.as_bytes()),
            None,
        ),
        (
            "unknown token",
            frame(&[7; 32], PAYLOAD, 18, 0, 10),
            Some((Status::InvalidToken, 18)),
        ),
        ("unknown command", vec![9, 0, 0, 0, 0], None),
        (
            "priority item of length 4",
            items(&[
                (1, tok),
                (2, PAYLOAD.as_bytes()),
                (3, &19u32.to_be_bytes()),
                (5, &[0, 0, 0, 10]),
            ]),
            Some((Status::ProtocolError, 19)),
        ),
        (
            "unknown item",
            items(&[
                (1, tok),
                (2, PAYLOAD.as_bytes()),
                (3, &20u32.to_be_bytes()),
                (6, b"x"),
            ]),
            Some((Status::ProtocolError, 20)),
        ),
        (
            "duplicate item",
            items(&[
                (1, tok),
                (2, PAYLOAD.as_bytes()),
                (3, &21u32.to_be_bytes()),
                (1, tok),
            ]),
            Some((Status::ProtocolError, 21)),
        ),
        (
            "priority 7",
            frame(tok, PAYLOAD, 22, 0, 7),
            Some((Status::ProtocolError, 22)),
        ),
        (
            "invalid JSON",
            frame(tok, "{\"aps\":", 23, 0, 10),
            Some((Status::ProtocolError, 23)),
        ),
        (
            "JSON that is not an object",
            frame(tok, "[1,2]", 24, 0, 10),
            Some((Status::ProtocolError, 24)),
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut gw = t.gateway().await;
        gw.send(&bytes).await.unwrap();
        let answer = gw.finish(TIMEOUT).await.unwrap();
        let Some((status, id)) = expected else {
            assert_eq!(
                answer,
                GatewayAnswer::Closed,
                "{what}: closed without a byte"
            );
            continue;
        };
        assert_eq!(
            answer,
            GatewayAnswer::Error(ErrorResponse {
                status,
                identifier: id.to_be_bytes()
            }),
            "{what}"
        );
        // Then the gateway closes.
        assert_eq!(
            gw.finish(TIMEOUT).await.unwrap(),
            GatewayAnswer::Closed,
            "{what}: closed"
        );
    }
    // Every rejection is in the delivery log with its reason.
    let rejected = t
        .sim
        .hub()
        .recent_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Notification {
                    outcome: Outcome::Rejected,
                    ..
                }
            )
        })
        .count();
    assert_eq!(rejected, 18);
    t.stop().await;
}

#[tokio::test]
async fn oversized_frame_length_is_refused_before_buffering() {
    let t = common::start().await;
    let mut gw = t.gateway().await;
    // Command 2 announcing a 1 GiB frame: answered from the 5-byte header alone.
    gw.send(&[2, 0x40, 0, 0, 0]).await.unwrap();
    expect_error(&mut gw, Status::InvalidPayloadSize, 0).await;
    // Command 1 announcing a 65535-byte payload: answered before the payload arrives.
    let mut gw = t.gateway().await;
    let mut bytes = enhanced(5, 0, &[1; 32], b"");
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&[0xFF, 0xFF]);
    gw.send(&bytes).await.unwrap();
    expect_error(&mut gw, Status::InvalidPayloadSize, 5).await;
    t.stop().await;
}

#[tokio::test]
async fn error_closes_and_discards_what_follows() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("DISCARD-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let expiry = common::in_an_hour(&t.clock);
    let mut gw = t.gateway().await;
    let mut batch = frame(token.as_bytes(), PAYLOAD, 1, expiry, 10);
    batch.extend(frame(&[9; 32], PAYLOAD, 2, expiry, 10)); // unknown token
    batch.extend(frame(token.as_bytes(), PAYLOAD, 3, expiry, 10));
    batch.extend(frame(token.as_bytes(), PAYLOAD, 4, expiry, 10));
    gw.send(&batch).await.unwrap();
    expect_error(&mut gw, Status::InvalidToken, 2).await;
    let id = common::next_id(&mut dev).await;
    assert_eq!(id, 1);
    // The gateway stopped reading at notification 2, before answering: 3 and 4 never
    // reached the hub.
    for e in t.sim.hub().recent_events() {
        if let Event::Notification { identifier, .. } = e {
            assert!(
                identifier < 3,
                "notification {identifier} should have been discarded"
            );
        }
    }
    // A new connection works again.
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), PAYLOAD, 5, expiry, 10))
        .await
        .unwrap();
    let id = common::next_id(&mut dev).await;
    assert_eq!(id, 5);
    t.stop().await;
}

#[tokio::test]
async fn tokens_of_other_apps_or_environments_get_status_8() {
    let t = common::start().await;
    let (_a, sandbox) = t
        .device(
            "ENV-1",
            Environment::Sandbox,
            &[DEFAULT_TOPIC, "com.example.other"],
        )
        .await;
    let (_b, production) = t
        .device("ENV-2", Environment::Production, &[DEFAULT_TOPIC])
        .await;
    let expiry = common::in_an_hour(&t.clock);

    // Production token over a sandbox connection (universal certificate, localhost).
    let mut gw = t.gateway().await;
    gw.send(&frame(
        production[DEFAULT_TOPIC].as_bytes(),
        PAYLOAD,
        31,
        expiry,
        10,
    ))
    .await
    .unwrap();
    expect_error(&mut gw, Status::InvalidToken, 31).await;

    // Another app's token with com.example.app's certificate.
    let mut gw = t.gateway().await;
    gw.send(&frame(
        sandbox["com.example.other"].as_bytes(),
        PAYLOAD,
        32,
        expiry,
        10,
    ))
    .await
    .unwrap();
    expect_error(&mut gw, Status::InvalidToken, 32).await;

    // Sandbox token through a production-only certificate.
    let mut gw = t
        .gateway_as(
            t.provider_tls(DEFAULT_TOPIC, CertEnvironment::Production),
            "localhost",
        )
        .await;
    gw.send(&frame(
        sandbox[DEFAULT_TOPIC].as_bytes(),
        PAYLOAD,
        33,
        expiry,
        10,
    ))
    .await
    .unwrap();
    expect_error(&mut gw, Status::InvalidToken, 33).await;

    // The production token is fine through the production host name (universal cert) …
    let mut gw = t
        .gateway_as(t.default_provider_tls(), "gateway.push.apple.com")
        .await;
    gw.send(&frame(
        production[DEFAULT_TOPIC].as_bytes(),
        PAYLOAD,
        34,
        expiry,
        10,
    ))
    .await
    .unwrap();
    // … and the sandbox token is not.
    gw.send(&frame(
        sandbox[DEFAULT_TOPIC].as_bytes(),
        PAYLOAD,
        35,
        expiry,
        10,
    ))
    .await
    .unwrap();
    expect_error(&mut gw, Status::InvalidToken, 35).await;
    t.stop().await;
}

/// A client certificate must be present and issued by the simulator's CA.
#[tokio::test]
async fn missing_or_foreign_client_certificate_is_refused() {
    let t = common::start().await;
    let (_dev, tokens) = t
        .device("CERT-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let bytes = frame(tokens[DEFAULT_TOPIC].as_bytes(), PAYLOAD, 1, 0, 10);
    let addr = t.sim.addrs().gateway.to_string();
    let mut events = t.sim.hub().subscribe();

    let no_cert = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let foreign_pki = Pki::generate().unwrap();
    let foreign = foreign_pki.default_provider();
    let foreign_cert = tls::client_config(
        t.pki.ca_cert_pem().as_bytes(),
        Some(
            tls::ClientIdentity::from_pem(foreign.cert_pem.as_bytes(), foreign.key_pem.as_bytes())
                .unwrap(),
        ),
        Vec::new(),
    )
    .unwrap();
    for (what, config) in [("no certificate", no_cert), ("foreign CA", foreign_cert)] {
        // With TLS 1.3 the client may finish its side of the handshake before the server
        // refuses the certificate, so the refusal can show up at connect or at first read.
        match BinaryClient::connect(&addr, "localhost", config).await {
            Err(_) => {}
            Ok(mut client) => {
                let _ = client.send(&bytes).await;
                let answer = client.finish(TIMEOUT).await;
                assert!(
                    matches!(answer, Err(_) | Ok(GatewayAnswer::Closed)),
                    "{what}: expected refusal, got {answer:?}"
                );
            }
        }
    }
    // Nothing reached the hub: the next hub event is the one this test triggers now.
    let mut gw = t.gateway().await;
    gw.send(&frame(tokens[DEFAULT_TOPIC].as_bytes(), PAYLOAD, 99, 0, 10))
        .await
        .unwrap();
    let e = next_hub_event(&mut events, |e| matches!(e, Event::Notification { .. })).await;
    assert!(
        matches!(e, Event::Notification { identifier: 99, .. }),
        "{e:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn shutdown_sends_status_10_with_last_accepted_identifier() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("SHUT-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), PAYLOAD, 41, 0, 10))
        .await
        .unwrap();
    gw.send(&frame(token.as_bytes(), PAYLOAD, 42, 0, 10))
        .await
        .unwrap();
    for want in [41, 42] {
        let id = common::next_id(&mut dev).await;
        assert_eq!(id, want);
    }
    let stopping = tokio::spawn(t.stop());
    expect_error(&mut gw, Status::Shutdown, 42).await;
    tokio::time::timeout(TIMEOUT, stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn uninstalled_app_token_is_accepted_silently_and_fed_back() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("GONE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token: DeviceToken = tokens[DEFAULT_TOPIC];
    common::command(
        &dev,
        apns_sim::client::device::DeviceCommand::Uninstall(DEFAULT_TOPIC.into()),
    )
    .await;
    common::next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Uninstalled { .. })).await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), PAYLOAD, 51, 0, 10))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 51, Outcome::NotInstalled)
    })
    .await;
    // Pushing again is still silent on the binary API (Apple reported it via feedback).
    gw.send(&frame(token.as_bytes(), PAYLOAD, 52, 0, 10))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 52, Outcome::Unregistered)
    })
    .await;
    common::assert_silent(&mut gw).await;
    t.stop().await;
}

/// A certificate from the simulator's CA with no topic (no UID, no Apple CN prefix, no
/// Apple OIDs) passes TLS but cannot push: status 3, Missing topic.
#[tokio::test]
async fn certificate_without_topic_gets_status_3() {
    let t = common::start().await;
    let ca_key = rcgen::KeyPair::from_pem(t.pki.ca_key_pem()).unwrap();
    let ca_params = rcgen::CertificateParams::from_ca_cert_pem(t.pki.ca_cert_pem()).unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "not a push certificate");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let identity =
        tls::ClientIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
    let config =
        tls::client_config(t.pki.ca_cert_pem().as_bytes(), Some(identity), Vec::new()).unwrap();
    let mut gw = t.gateway_as(config, "localhost").await;
    expect_error(&mut gw, Status::MissingTopic, 0).await;
    t.stop().await;
}

/// The binary API has no status for throttling: over the per-token limit, notifications are
/// dropped silently (the delivery log says `throttled`) and the connection stays up.
#[tokio::test]
async fn throttled_notifications_are_dropped_silently() {
    let t = common::start_with(|c| {
        c.settings.token_rate_limit = Some(apns_sim::settings::RateLimit {
            pushes: 1,
            per: Duration::from_secs(60),
        })
    })
    .await;
    let (mut dev, tokens) = t
        .device("RATE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), PAYLOAD, 61, 0, 10))
        .await
        .unwrap();
    gw.send(&frame(token.as_bytes(), PAYLOAD, 62, 0, 10))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 62, Outcome::Throttled)
    })
    .await;
    let id = common::next_id(&mut dev).await;
    assert_eq!(id, 61);
    common::assert_silent(&mut gw).await;
    t.stop().await;
}

/// Apple's legacy endpoints were TLS 1.2-era: a client that speaks only TLS 1.2 is served.
#[tokio::test]
async fn tls12_only_client_is_served() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("TLS12-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let provider = t.pki.default_provider();
    let identity =
        tls::ClientIdentity::from_pem(provider.cert_pem.as_bytes(), provider.key_pem.as_bytes())
            .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.pki.ca_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(identity.chain, identity.key)
    .unwrap();
    let mut gw = t.gateway_as(std::sync::Arc::new(config), "localhost").await;
    gw.send(&frame(tokens[DEFAULT_TOPIC].as_bytes(), PAYLOAD, 12, 0, 10))
        .await
        .unwrap();
    assert_eq!(common::next_id(&mut dev).await, 12);
    t.stop().await;
}

/// Command 0 has no error response: Apple dropped the connection without a word (spec §1.2,
/// §1.7). A bad one, and one to a token the simulator does not know, are answered with a
/// close and no bytes; what came before it was delivered.
#[tokio::test]
async fn command_0_refusals_close_the_connection_without_a_byte() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("SIMPLE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    for bad in [
        simple(&token.as_bytes()[..31], PAYLOAD.as_bytes()),
        simple(token.as_bytes(), b"{"),
        simple(token.as_bytes(), b""),
        simple(&[7; 32], PAYLOAD.as_bytes()),
    ] {
        let mut gw = t.gateway().await;
        let mut bytes = simple(token.as_bytes(), br#"{"aps":{"alert":"before"}}"#);
        bytes.extend(&bad);
        gw.send(&bytes).await.unwrap();
        match next_notification(&mut dev).await {
            DeviceEvent::Notification { payload, .. } => {
                assert_eq!(payload["aps"]["alert"], "before")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
    }
    t.stop().await;
}

/// TN2265: an unknown command byte closes the connection without a byte; the later
/// documents' status 128 is a setting.
#[tokio::test]
async fn the_answer_to_an_unknown_command_byte_is_a_setting() {
    let t = common::start().await;
    let mut gw = t.gateway().await;
    gw.send(&[3, 0, 0, 0, 1]).await.unwrap();
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
    t.stop().await;

    let t = common::start_with(|c| {
        c.settings.unknown_command = apns_sim::settings::UnknownCommand::ProtocolError
    })
    .await;
    let mut gw = t.gateway().await;
    gw.send(&[3, 0, 0, 0, 1]).await.unwrap();
    expect_error(&mut gw, Status::ProtocolError, 0).await;
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
    t.stop().await;
}

/// An alert payload of exactly `len` bytes (at least 20).
fn payload_of(len: usize) -> String {
    let empty = r#"{"aps":{"alert":""}}"#;
    format!(
        r#"{{"aps":{{"alert":"{}"}}}}"#,
        "x".repeat(len - empty.len())
    )
}

/// Commands 0 and 1: 256 bytes by default (Apple's legacy-format text), 2048 when the
/// setting says so (the reading that the iOS 8 change applied to every format).
#[tokio::test]
async fn the_payload_limit_of_commands_0_and_1_is_a_setting() {
    for (limit, setting) in [(256, None), (2048, Some(2048))] {
        let t = common::start_with(|c| {
            if let Some(bytes) = setting {
                c.settings.legacy_payload_limit = bytes;
            }
        })
        .await;
        let (mut dev, tokens) = t
            .device("LIMIT-1", Environment::Sandbox, &[DEFAULT_TOPIC])
            .await;
        let tok = tokens[DEFAULT_TOPIC];
        let at_limit = payload_of(limit);
        let over = payload_of(limit + 1);

        let mut gw = t.gateway().await;
        gw.send(&simple(tok.as_bytes(), at_limit.as_bytes()))
            .await
            .unwrap();
        gw.send(&enhanced(1, 0, tok.as_bytes(), at_limit.as_bytes()))
            .await
            .unwrap();
        assert_eq!(common::next_id(&mut dev).await, 0, "{limit}: command 0");
        assert_eq!(common::next_id(&mut dev).await, 1, "{limit}: command 1");
        gw.send(&enhanced(2, 0, tok.as_bytes(), over.as_bytes()))
            .await
            .unwrap();
        expect_error(&mut gw, Status::InvalidPayloadSize, 2).await;

        let mut gw = t.gateway().await;
        gw.send(&simple(tok.as_bytes(), over.as_bytes()))
            .await
            .unwrap();
        assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
        t.stop().await;
    }
}
