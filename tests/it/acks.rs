//! Device acknowledgements on the wire: the cumulative AckThrough and the per-notification Ack
//! and NotInstalled mixed on one session, all the answers of one read in one write, and an
//! AckThrough past what the session was sent refused.

use std::collections::BTreeMap;

use apns_sim::client::connect_tls;
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::device::{
    decode_server_message, encode_device_message, CloseCode, DeviceMessage, ServerMessage,
    PROTOCOL_VERSION,
};
use apns_sim::protocol::token::{DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use apns_sim::tls;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::common::{self, next_hub_event, TIMEOUT};

/// A hand-driven device session: it writes exactly the frames the test gives it.
struct RawDevice {
    stream: TlsStream<tokio::net::TcpStream>,
    read: BytesMut,
}

impl RawDevice {
    /// Says hello as `serial` (sandbox) and registers the default topic's token.
    async fn online(t: &common::TestSim, serial: &str) -> (RawDevice, DeviceToken) {
        let tls = tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
        let addr = t.sim.addrs().devices.to_string();
        let stream = connect_tls(&addr, "localhost", tls).await.unwrap();
        let mut device = RawDevice {
            stream,
            read: BytesMut::new(),
        };
        device
            .write(&[
                DeviceMessage::Hello {
                    version: PROTOCOL_VERSION,
                    environment: Environment::Sandbox,
                    serial: serial.to_owned(),
                },
                DeviceMessage::Register {
                    fresh_install: true,
                    app: DEFAULT_TOPIC.to_owned(),
                    kind: TokenKind::Remote,
                },
            ])
            .await;
        assert!(matches!(device.next().await, ServerMessage::Welcome { .. }));
        let ServerMessage::Registered { token, .. } = device.next().await else {
            panic!("expected Registered");
        };
        (device, token)
    }

    /// Writes `messages` in one write.
    async fn write(&mut self, messages: &[DeviceMessage]) {
        let mut out = BytesMut::new();
        for m in messages {
            encode_device_message(m, &mut out);
        }
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next message from the simulator.
    async fn next(&mut self) -> ServerMessage {
        let read = async {
            loop {
                if let Some(m) = decode_server_message(&mut self.read).expect("valid frame") {
                    return m;
                }
                let n = self.stream.read_buf(&mut self.read).await.expect("read");
                assert!(n > 0, "closed");
            }
        };
        tokio::time::timeout(TIMEOUT, read).await.expect("in time")
    }

    /// The next `count` notifications: identifier → delivery number.
    async fn notifications(&mut self, count: usize) -> BTreeMap<u32, u64> {
        let mut got = BTreeMap::new();
        while got.len() < count {
            if let ServerMessage::Notification(n) = self.next().await {
                got.insert(u32::from_be_bytes(n.identifier), n.delivery);
            }
        }
        got
    }
}

/// Pushes notifications `ids` to `token` through the binary gateway.
async fn push(t: &common::TestSim, token: &DeviceToken, ids: std::ops::RangeInclusive<u32>) {
    let mut gw = t.gateway().await;
    let expiry = common::in_an_hour(&t.clock);
    for id in ids {
        let frame = common::frame(token.as_bytes(), &common::alert("hi"), id, expiry, 10);
        gw.send(&frame).await.unwrap();
    }
}

/// Waits until the hub has recorded an answer (acknowledged or not installed) for each of
/// `count` notifications, and returns them: identifier → outcome.
async fn answers(
    events: &mut tokio::sync::broadcast::Receiver<apns_sim::hub::Logged>,
    count: usize,
) -> BTreeMap<u32, Outcome> {
    let mut got = BTreeMap::new();
    while got.len() < count {
        let event = next_hub_event(events, |e| {
            matches!(e, Event::Notification { outcome, .. }
                if matches!(outcome, Outcome::Acknowledged | Outcome::NotInstalled))
        })
        .await;
        if let Event::Notification {
            identifier,
            outcome,
            ..
        } = event
        {
            assert_eq!(got.insert(identifier, outcome), None, "answered twice");
        }
    }
    got
}

#[tokio::test]
async fn cumulative_and_single_acks_mix_on_one_session() {
    let t = common::start().await;
    let mut events = t.sim.hub().subscribe();
    let (mut device, token) = RawDevice::online(&t, "ACKS-1").await;

    // Six notifications; the device answers all of them in one write, mixing every kind of
    // answer: an Ack of the first, an AckThrough of the second and third, a NotInstalled of
    // the fifth, then an AckThrough of the sixth that also covers the fourth and passes
    // over the fifth, already answered.
    push(&t, &token, 1..=6).await;
    let sent = device.notifications(6).await;
    device
        .write(&[
            DeviceMessage::Ack { delivery: sent[&1] },
            DeviceMessage::AckThrough { delivery: sent[&3] },
            DeviceMessage::NotInstalled { delivery: sent[&5] },
            DeviceMessage::AckThrough { delivery: sent[&6] },
        ])
        .await;
    let answered = answers(&mut events, 6).await;
    let want: BTreeMap<u32, Outcome> = [
        (1, Outcome::Acknowledged),
        (2, Outcome::Acknowledged),
        (3, Outcome::Acknowledged),
        (4, Outcome::Acknowledged),
        (5, Outcome::NotInstalled),
        (6, Outcome::Acknowledged),
    ]
    .into();
    assert_eq!(answered, want);

    // The app reinstalled (its old token is unregistered now) …
    device
        .write(&[DeviceMessage::Register {
            fresh_install: true,
            app: DEFAULT_TOPIC.to_owned(),
            kind: TokenKind::Remote,
        }])
        .await;
    let ServerMessage::Registered { token, .. } = device.next().await else {
        panic!("expected Registered");
    };
    // … and a device that acknowledges every notification on its own, all acks of one read
    // in one write (as devices did before AckThrough), on the same session; then a repeated
    // AckThrough, which owes nothing and is no error.
    push(&t, &token, 7..=9).await;
    let sent = device.notifications(3).await;
    let acks: Vec<DeviceMessage> = sent
        .values()
        .map(|&delivery| DeviceMessage::Ack { delivery })
        .collect();
    device.write(&acks).await;
    let answered = answers(&mut events, 3).await;
    assert!(answered.values().all(|o| *o == Outcome::Acknowledged));
    device
        .write(&[DeviceMessage::AckThrough { delivery: sent[&9] }])
        .await;

    // Pinged after it so that the answer shows the AckThrough was taken without an error:
    // the Pong comes back on the same session.
    device.write(&[DeviceMessage::Ping { nonce: 7 }]).await;
    assert_eq!(device.next().await, ServerMessage::Pong { nonce: 7 });

    // An AckThrough past the last delivery the session was written would acknowledge what
    // the device cannot have seen: refused as a protocol error.
    device
        .write(&[DeviceMessage::AckThrough {
            delivery: sent[&9] + 1,
        }])
        .await;
    let refused = device.next().await;
    assert!(
        matches!(&refused, ServerMessage::Error { code: CloseCode::Protocol, message }
            if message.contains("beyond the last one sent")),
        "{refused:?}"
    );
    t.stop().await;
}

/// A simulated device (`client::device`) answers with AckThrough, and every notification it
/// shows is acknowledged in the hub.
#[tokio::test]
async fn a_simulated_device_acknowledges_with_ack_through() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("ACKS-2", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let mut events = t.sim.hub().subscribe();
    push(&t, &tokens[DEFAULT_TOPIC], 1..=20).await;
    for _ in 0..20 {
        common::next_notification(&mut dev).await;
    }
    let answered = answers(&mut events, 20).await;
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert!(answered.values().all(|o| *o == Outcome::Acknowledged));
    t.stop().await;
}
