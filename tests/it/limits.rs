//! Bounds: handshake, hello and idle deadlines, and the connection limit. Each test shrinks
//! one setting so that the bound is reached quickly, then waits for its effect.

use std::time::Duration;

use apns_sim::client::{connect_tls, BinaryClient, GatewayAnswer};
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
    let addr = t.sim.addrs().gateway.to_string();
    let tls = t.default_provider_tls();
    let mut second =
        tokio::spawn(async move { BinaryClient::connect(&addr, "localhost", tls).await });
    // While the first holds the only slot, the second is not served. (A slow machine can
    // only make this pass wrongly, never fail wrongly.)
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(early.is_err(), "second connection served beyond the limit");
    first.close().await.unwrap();
    let second = tokio::time::timeout(TIMEOUT, second)
        .await
        .unwrap()
        .unwrap();
    assert!(second.is_ok(), "served once the slot is free");
    t.stop().await;
}
