//! Bounds: handshake, hello and idle deadlines, and the connection limit. Each test shrinks
//! one setting so that the bound is reached quickly, then waits for its effect.

use std::time::Duration;

use apns_sim::client::{connect_tls, GatewayAnswer};
use apns_sim::protocol::device::{decode_server_message, CloseCode, ServerMessage};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::common::{self, TIMEOUT};

#[tokio::test]
async fn silent_tcp_client_is_dropped_after_the_handshake_deadline() {
    let t = common::start_with(|c| c.settings.handshake_timeout = Duration::from_millis(300)).await;
    let mut tcp = TcpStream::connect(t.sim.addrs().gateway).await.unwrap();
    let mut buf = [0u8; 64];
    // The server closes without a byte once the deadline passes.
    let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    t.stop().await;
}

#[tokio::test]
async fn device_without_hello_is_told_and_dropped() {
    let t = common::start_with(|c| c.settings.hello_timeout = Duration::from_millis(300)).await;
    let tls =
        apns_sim::tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let mut stream = connect_tls(&t.sim.addrs().devices.to_string(), "localhost", tls)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let answer = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(m) = decode_server_message(&mut buf).unwrap() {
                return m;
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "closed without Error"
            );
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(&answer, ServerMessage::Error { code, message } if *code == CloseCode::Idle && message.contains("Hello")),
        "{answer:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn idle_provider_connection_is_closed() {
    let t =
        common::start_with(|c| c.settings.provider_idle_timeout = Duration::from_millis(300)).await;
    let mut gw = t.gateway().await;
    assert_eq!(gw.finish(TIMEOUT).await.unwrap(), GatewayAnswer::Closed);
    t.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let t = common::start_with(|c| c.settings.max_provider_connections = 1).await;
    let first = t.gateway().await;
    // The second completes its TLS handshake (handshakes do not take slots), then waits for
    // the slot: a notification to an unknown token is answered only once it is served.
    let mut second = t.gateway().await;
    let unknown = [0xAB; 32];
    let expiry = common::in_an_hour(&t.clock);
    second
        .send(&common::frame(&unknown, &common::alert("x"), 5, expiry, 10))
        .await
        .unwrap();
    // While the first holds the only slot, the second is not served. (A slow machine can
    // only make this pass wrongly, never fail wrongly.)
    common::assert_silent(&mut second).await;
    first.close().await.unwrap();
    let answer = second.finish(TIMEOUT).await.unwrap();
    assert_eq!(
        answer,
        GatewayAnswer::Error(apns_sim::protocol::error_response::ErrorResponse {
            status: apns_sim::protocol::error_response::Status::InvalidToken,
            identifier: 5u32.to_be_bytes(),
        }),
        "served once the slot is free"
    );
    t.stop().await;
}
