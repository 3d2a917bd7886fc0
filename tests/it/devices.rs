//! Simulated devices: registration, store-and-forward while offline, reinstall, session
//! replacement, the token webhook, and device protocol errors.

use std::time::Duration;

use apns_sim::client::device::{DeviceCommand, DeviceEvent};
use apns_sim::client::http2::Http2Request;
use apns_sim::client::{connect_tls, read_feedback};
use apns_sim::hub::Outcome;
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::device::{decode_server_message, CloseCode, ServerMessage};
use apns_sim::protocol::Environment;
use apns_sim::tls;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    self, command, go_offline, next_device_event, next_hub_event, next_notification, TIMEOUT,
};

fn frame(token: &[u8], text: &str, id: u32, expiry: u32) -> Vec<u8> {
    common::frame(token, &common::alert(text), id, expiry, 10)
}

#[tokio::test]
async fn tokens_are_per_app_and_stable_across_reconnects() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device(
            "REG-1",
            Environment::Sandbox,
            &[DEFAULT_TOPIC, "com.example.other"],
        )
        .await;
    assert_ne!(tokens[DEFAULT_TOPIC], tokens["com.example.other"]);
    go_offline(&t, &mut dev, "REG-1").await;
    command(&dev, DeviceCommand::Online).await;
    let again = next_device_event(
        &mut dev,
        |e| matches!(e, DeviceEvent::Registered { app, .. } if app == DEFAULT_TOPIC),
    )
    .await;
    let DeviceEvent::Registered { token, .. } = again else {
        unreachable!()
    };
    assert_eq!(token, tokens[DEFAULT_TOPIC], "reconnecting keeps the token");
    t.stop().await;
}

#[tokio::test]
async fn offline_device_gets_only_the_newest_stored_notification() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("STORE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    go_offline(&t, &mut dev, "STORE-1").await;

    let mut events = t.sim.hub().subscribe();
    let expiry = common::in_an_hour(&t.clock);
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), "first", 1, expiry))
        .await
        .unwrap();
    gw.send(&frame(token.as_bytes(), "second", 2, expiry))
        .await
        .unwrap();
    gw.send(&frame(token.as_bytes(), "not stored", 3, 0))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| common::is_outcome(e, 1, Outcome::Stored)).await;
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::Superseded)
    })
    .await;
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 3, Outcome::Discarded)
    })
    .await;

    command(&dev, DeviceCommand::Online).await;
    let DeviceEvent::Notification { id, payload, .. } = next_notification(&mut dev).await else {
        unreachable!()
    };
    assert_eq!((id, payload["aps"]["alert"].as_str()), (2, Some("second")));
    // Stored notifications are sent as the session opens, before anything newer: a marker
    // pushed now arrives next, proving nothing else was kept.
    gw.send(&frame(token.as_bytes(), "marker", 4, expiry))
        .await
        .unwrap();
    let id = common::next_id(&mut dev).await;
    assert_eq!(id, 4);
    t.stop().await;
}

#[tokio::test]
async fn stored_notification_expires_while_device_is_away() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("EXP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    go_offline(&t, &mut dev, "EXP-1").await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    let expiry = (t.clock.now_secs() + 60) as u32;
    gw.send(&frame(token.as_bytes(), "short-lived", 1, expiry))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| common::is_outcome(e, 1, Outcome::Stored)).await;
    // Two minutes pass (on the simulator's clock) before the device comes back.
    t.clock.advance(Duration::from_secs(120));
    command(&dev, DeviceCommand::Online).await;
    next_hub_event(&mut events, |e| common::is_outcome(e, 1, Outcome::Expired)).await;
    gw.send(&frame(token.as_bytes(), "marker", 2, 0))
        .await
        .unwrap();
    let id = common::next_id(&mut dev).await;
    assert_eq!(id, 2, "the expired notification was not delivered");
    t.stop().await;
}

/// The reinstall rule (`State::retire`; README, "How long a token lives"): the old token is
/// unregistered from the reinstall on and reaches the device no more. HTTP/2 answers 410
/// `Unregistered` with the reinstall's time, the binary API drops it silently, and the
/// feedback service lists it once however many pushes it got.
#[tokio::test]
async fn reinstall_gets_a_new_token_and_the_old_one_is_unregistered() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("REINST-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let old = tokens[DEFAULT_TOPIC];
    command(&dev, DeviceCommand::Uninstall(DEFAULT_TOPIC.into())).await;
    command(&dev, DeviceCommand::Install(DEFAULT_TOPIC.into())).await;
    let DeviceEvent::Registered { token: new, .. } =
        next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Registered { .. })).await
    else {
        unreachable!()
    };
    assert_ne!(new, old, "a reinstalled app gets a new token");
    let at_ms = t
        .sim
        .hub()
        .unregistered_at(&old)
        .expect("unregistered by the reinstall");
    assert!(t.sim.hub().unregistered_at(&new).is_none());

    let mut h2 = t.http2().await;
    let to_old = Http2Request::push(&old.to_hex(), common::alert("to the old token"))
        .header("apns-topic", DEFAULT_TOPIC);
    for _ in 0..2 {
        let answer = h2.send(&to_old).await.unwrap();
        assert_eq!(
            (answer.status, answer.reason.as_deref(), answer.timestamp),
            (410, Some("Unregistered"), Some(at_ms)),
            "{answer}"
        );
    }

    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&frame(old.as_bytes(), "to the old token", 1, 0))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::Unregistered)
    })
    .await;
    // No error response: the same connection goes on, and the device sees only the new one.
    gw.send(&frame(new.as_bytes(), "to the new token", 2, 0))
        .await
        .unwrap();
    let shown = next_device_event(&mut dev, |e| {
        matches!(
            e,
            DeviceEvent::Notification { .. } | DeviceEvent::NotInstalled { .. }
        )
    })
    .await;
    assert!(
        matches!(shown, DeviceEvent::Notification { id: 2, token, .. } if token == new),
        "{shown:?}"
    );

    let feedback = t.sim.addrs().feedback.to_string();
    let tuples = read_feedback(&feedback, "localhost", t.default_provider_tls(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(tuples.len(), 1, "listed once: {tuples:?}");
    assert_eq!(tuples[0].token, old);
    assert_eq!(u64::from(tuples[0].timestamp), at_ms / 1000);
    t.stop().await;
}

#[tokio::test]
async fn same_serial_replaces_the_older_session() {
    let t = common::start().await;
    let (mut first, tokens) = t
        .device("TWIN-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let (mut second, again) = t
        .device("TWIN-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    assert_eq!(tokens, again, "same device, same app: same token");
    let DeviceEvent::Disconnected { reason, .. } = next_device_event(&mut first, |e| {
        matches!(e, DeviceEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("replaced"), "{reason}");
    let mut gw = t.gateway().await;
    gw.send(&frame(
        tokens[DEFAULT_TOPIC].as_bytes(),
        "to the newer session",
        7,
        0,
    ))
    .await
    .unwrap();
    let id = common::next_id(&mut second).await;
    assert_eq!(id, 7);
    t.stop().await;
}

/// Step 3 of registration: the device POSTs its token to the provider's app server.
#[tokio::test]
async fn token_is_posted_to_the_register_url() {
    let t = common::start().await;
    let app_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/register", app_server.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut sock, _) = app_server.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the JSON body is complete (it ends with '}').
        while !request.ends_with(b"}") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        sock.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(request).unwrap()
    });
    let tls = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let mut dev = apns_sim::client::device::spawn(
        apns_sim::client::device::DeviceConfig {
            server: t.sim.addrs().devices.to_string(),
            server_name: "localhost".into(),
            tls,
            serial: "HOOK-1".into(),
            environment: Environment::Sandbox,
            apps: vec![DEFAULT_TOPIC.into()],
            register_url: Some(url),
        },
        t.devices_stop.clone(),
    );
    let DeviceEvent::Registered { token, .. } =
        next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Registered { .. })).await
    else {
        unreachable!()
    };
    let posted =
        next_device_event(&mut dev, |e| matches!(e, DeviceEvent::TokenPosted { .. })).await;
    assert!(matches!(
        posted,
        DeviceEvent::TokenPosted { status: 201, .. }
    ));
    let request = tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap();
    assert!(request.starts_with("POST /register HTTP/1.1"), "{request}");
    let body: serde_json::Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "token": token.to_hex(),
            "app": DEFAULT_TOPIC,
            "kind": "remote",
            "environment": "sandbox",
            "serial": "HOOK-1",
        })
    );
    t.stop().await;
}

/// Garbage on the device endpoint gets an Error frame naming the problem, then a close.
#[tokio::test]
async fn device_protocol_errors_are_answered() {
    let t = common::start().await;
    let tls = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let addr = t.sim.addrs().devices.to_string();

    // An unknown frame type instead of Hello.
    let mut stream = connect_tls(&addr, "localhost", tls.clone()).await.unwrap();
    stream.write_all(&[0x7f, 0, 0]).await.unwrap();
    let answer = read_server_message(&mut stream).await;
    assert!(
        matches!(&answer, ServerMessage::Error { code, message } if *code == CloseCode::Protocol && message.contains("0x7f") || message.contains("127")),
        "{answer:?}"
    );

    // A frame announcing more than the maximum body: refused from the header.
    let mut stream = connect_tls(&addr, "localhost", tls).await.unwrap();
    stream.write_all(&[0x01, 0xff, 0xff]).await.unwrap();
    let answer = read_server_message(&mut stream).await;
    assert!(
        matches!(&answer, ServerMessage::Error { code, .. } if *code == CloseCode::Protocol),
        "{answer:?}"
    );
    t.stop().await;
}

/// A device whose server is not the simulator reports why it cannot get online, and retries.
#[tokio::test]
async fn a_failed_connection_is_reported_with_its_cause() {
    let t = common::start().await;
    // Accepts TCP and hangs up at once: the TLS handshake cannot complete.
    let not_tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = not_tls.local_addr().unwrap().to_string();
    let hang_up = tokio::spawn(async move {
        loop {
            let (sock, _) = not_tls.accept().await.unwrap();
            drop(sock);
        }
    });
    let tls = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let mut dev = apns_sim::client::device::spawn(
        apns_sim::client::device::DeviceConfig {
            server,
            server_name: "localhost".into(),
            tls,
            serial: "NOTLS-1".into(),
            environment: Environment::Sandbox,
            apps: vec![DEFAULT_TOPIC.into()],
            register_url: None,
        },
        t.devices_stop.clone(),
    );
    for _ in 0..2 {
        let DeviceEvent::Disconnected { reason, .. } =
            next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Disconnected { .. })).await
        else {
            unreachable!()
        };
        assert!(reason.starts_with("TLS: "), "{reason}");
    }
    hang_up.abort();
    t.stop().await;
}

/// A Hello with a protocol version the simulator does not speak is a bad hello (code 1), not a
/// protocol error (code 2); so is a first message other than Hello. Both then close.
#[tokio::test]
async fn bad_hello_gets_close_code_1() {
    let t = common::start().await;
    let tls = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let addr = t.sim.addrs().devices.to_string();

    let mut stream = connect_tls(&addr, "localhost", tls.clone()).await.unwrap();
    stream
        .write_all(&[
            0x01, // type Hello
            0x00, 0x07, // body length 7
            0x02, // version 2: not ours
            0x00, // sandbox
            0x04, b'V', b'E', b'R', b'2', // serial "VER2"
        ])
        .await
        .unwrap();
    let answer = read_server_message(&mut stream).await;
    assert!(
        matches!(&answer, ServerMessage::Error { code: CloseCode::BadHello, message }
            if message.contains("version 2") && message.contains("speaks 1")),
        "{answer:?}"
    );
    assert_closed(&mut stream).await;

    let mut stream = connect_tls(&addr, "localhost", tls).await.unwrap();
    stream
        .write_all(&[
            0x05, // type Ping
            0x00, 0x08, // body length 8
            0, 0, 0, 0, 0, 0, 0, 1, // nonce 1
        ])
        .await
        .unwrap();
    let answer = read_server_message(&mut stream).await;
    assert!(
        matches!(&answer, ServerMessage::Error { code: CloseCode::BadHello, message }
            if message.contains("Hello first")),
        "{answer:?}"
    );
    assert_closed(&mut stream).await;
    t.stop().await;
}

/// Reads until the simulator closes the connection, failing on any further frame.
async fn assert_closed(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    // A close without close_notify is also a close.
    if let Err(err) = read {
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    }
    assert!(rest.is_empty(), "bytes after the Error frame: {rest:?}");
}

async fn read_server_message(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> ServerMessage {
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(msg) = decode_server_message(&mut buf).expect("valid server frame") {
                return msg;
            }
            let n = stream.read_buf(&mut buf).await.expect("read");
            assert!(n > 0, "closed without an Error frame");
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("answer in time")
}
