//! Availability under hostile or broken peers (issue 11, admission and deadlines): each
//! attack reproduced at small scale against a real simulator over TLS on 127.0.0.1. In each,
//! the offenders are cut off or held to their share and a well-behaved client on the same
//! server is still served. Deadlines are set short in the test's settings; the tests wait on
//! outcomes (a closed socket, an answer, an event) with generous timeouts, never on time.
//!
//! - a half-open flood (sockets that never send a ClientHello): the oldest give way;
//! - HTTP/2 connections without credentials dripping bytes: cut off by the frame deadline,
//!   and held to the unauthenticated share (the oldest gives way);
//! - gateway connections with a valid certificate dripping a frame that never completes;
//! - a device that stops reading: cut off by the write deadline, its notifications routed
//!   again;
//! - stalled HTTP/2 bodies past the global body budget: 503 `ServiceUnavailable`;
//! - `apns-sim serve --state` with a device that stops reading exits on SIGTERM, its state
//!   file complete.

use std::sync::Arc;
use std::time::Duration;

use apns_sim::client::http2::{read_response, Http2Request};
use apns_sim::client::{connect_tls, BinaryClient, CertsDir};
use apns_sim::hub::Event;
use apns_sim::pki::{DEFAULT_KEY_ID, DEFAULT_TOPIC};
use apns_sim::protocol::device::{
    decode_server_message, encode_device_message, DeviceMessage, ServerMessage, PROTOCOL_VERSION,
};
use apns_sim::protocol::http2 as frames;
use apns_sim::protocol::token::{DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::common::{self, next_hub_event, TIMEOUT};
use crate::durable;

/// How long a dripping client waits between two bytes: slow enough that every frame it
/// drips outlives the frame deadline the tests set (300 ms) many times over.
const DRIP_EVERY: Duration = Duration::from_millis(100);

/// Reads and discards until the server closes `stream` (end of stream or an error); panics
/// if it is still open after [`TIMEOUT`].
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S, what: &str) {
    let wait = async {
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open"));
}

/// Writes `bytes` one at a time, [`DRIP_EVERY`] apart, over and over, while reading what the
/// server sends; returns once the server has closed the connection (or [`TIMEOUT`] passes:
/// a panic).
async fn drip_until_closed<S: AsyncRead + AsyncWrite + Unpin>(stream: S, bytes: &[u8], what: &str) {
    let (mut read, mut write) = tokio::io::split(stream);
    let drip = async {
        for byte in bytes.iter().cycle() {
            // The pacing is the attack itself, not a way to wait for the server.
            tokio::time::sleep(DRIP_EVERY).await;
            if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
        // The server stopped taking bytes: wait for its close on the read side.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = closed_by_server(&mut read, what) => {}
        _ = drip => {}
    }
}

/// A device connected as `serial` (sandbox) on the device endpoint: its raw TLS stream, what
/// was read past the token, the default topic's token, and the messages that came before it
/// (a stored notification may). `recv_buffer`: the socket's receive buffer, small for a device
/// that is to stop reading (so that the simulator's writes block soon).
async fn raw_device(
    addr: std::net::SocketAddr,
    tls: Arc<ClientConfig>,
    serial: &str,
    recv_buffer: Option<u32>,
) -> (
    TlsStream<TcpStream>,
    BytesMut,
    DeviceToken,
    Vec<ServerMessage>,
) {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let mut out = BytesMut::new();
    for m in [
        DeviceMessage::Hello {
            version: PROTOCOL_VERSION,
            environment: Environment::Sandbox,
            serial: serial.to_owned(),
        },
        DeviceMessage::Register {
            fresh_install: false,
            app: DEFAULT_TOPIC.to_owned(),
            kind: TokenKind::Remote,
        },
    ] {
        encode_device_message(&m, &mut out);
    }
    stream.write_all(&out).await.unwrap();
    let mut read = BytesMut::new();
    let mut before = Vec::new();
    loop {
        match next_message(&mut stream, &mut read).await {
            ServerMessage::Registered { token, .. } => return (stream, read, token, before),
            other => before.push(other),
        }
    }
}

/// The next message the simulator sends a raw device.
async fn next_message(stream: &mut TlsStream<TcpStream>, read: &mut BytesMut) -> ServerMessage {
    let wait = async {
        loop {
            if let Some(m) = decode_server_message(read).expect("valid frame") {
                return m;
            }
            let n = stream.read_buf(read).await.expect("read");
            assert!(n > 0, "closed");
        }
    };
    tokio::time::timeout(TIMEOUT, wait).await.expect("in time")
}

/// An HTTP/2 alert push of `payload` to `token` for the default topic.
fn alert(token: &DeviceToken, payload: &str) -> Http2Request {
    Http2Request::push(&token.to_hex(), payload.to_owned()).header("apns-topic", DEFAULT_TOPIC)
}

/// Client TLS with ALPN h2 and no certificate: an HTTP/2 peer without credentials.
fn no_cert_h2(t: &common::TestSim) -> Arc<ClientConfig> {
    t.client_tls(None, vec![b"h2".to_vec()])
}

#[tokio::test]
async fn a_half_open_flood_keeps_no_provider_out() {
    // Fewer connection slots than flooding sockets, and the handshake deadline far away:
    // only the oldest giving way can let anyone in.
    let t = common::start_with(|c| {
        c.settings.max_provider_connections = 16;
        c.settings.max_handshaking = 8;
        c.settings.handshake_timeout = Duration::from_secs(120);
    })
    .await;
    let (mut phone, tokens) = t
        .device("FLOOD-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let addrs = *t.sim.addrs();
    // Sockets that connect and never send a ClientHello, many more than the seats.
    let mut flood = Vec::new();
    for addr in [addrs.gateway, addrs.http2] {
        for _ in 0..40 {
            flood.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    // A provider arriving after the flood is served on both APIs.
    let mut gw = t.gateway().await;
    let expiry = common::in_an_hour(&t.clock);
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("binary, through the flood"),
        1,
        expiry,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut phone).await, 1);
    let mut h2 = t.http2().await;
    let answer = h2
        .send(&alert(&token, &common::alert("http2, through the flood")))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    // The oldest of each flood gave way, long before their handshake deadline.
    closed_by_server(&mut flood[0], "oldest half-open gateway socket").await;
    closed_by_server(&mut flood[40], "oldest half-open HTTP/2 socket").await;
    t.stop().await;
}

#[tokio::test]
async fn http2_peers_without_credentials_dripping_bytes_are_cut_off() {
    // Eight slots, so two for peers without credentials; the first-request deadline is far
    // away, so the frame deadline is what cuts a drip off.
    let t = common::start_with(|c| {
        c.settings.max_provider_connections = 8;
        c.settings.frame_timeout = Duration::from_millis(300);
        c.settings.first_request_timeout = Duration::from_secs(120);
    })
    .await;
    let (mut phone, tokens) = t
        .device("DRIP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    // Ten connections without a certificate, more than the slots: the preface and
    // SETTINGS, then a PING frame a byte at a time, for ever.
    let ping = [&[0u8, 0, 8, 0x6, 0, 0, 0, 0, 0][..], &[1; 8]].concat();
    let mut drippers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut stream = connect_tls(&t.http2_addr(), "localhost", no_cert_h2(&t))
            .await
            .unwrap();
        // A dripper the next ones already pushed out may find its socket closed: the
        // drip below then sees the close.
        let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        opening.extend_from_slice(&frames::settings(&[]));
        let _ = stream.write_all(&opening).await;
        let _ = stream.flush().await;
        let ping = ping.clone();
        drippers.spawn(async move {
            drip_until_closed(stream, &ping, &format!("dripping HTTP/2 connection {i}")).await
        });
    }
    // Meanwhile a provider with a certificate is served...
    let mut client = t.http2().await;
    let answer = client
        .send(&alert(&token, &common::alert("certificate")))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    // ...and so is one with a valid provider token.
    let mut token_client = t.http2_token().await;
    let answer = token_client
        .send(&alert(&token, &common::alert("token")).bearer(&t.jwt(DEFAULT_KEY_ID)))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    // Every dripper was closed by the server (each task returns only then).
    while let Some(done) = drippers.join_next().await {
        done.unwrap();
    }
    t.stop().await;
}

#[tokio::test]
async fn http2_peers_without_credentials_are_held_to_their_share() {
    // Eight slots, two for peers without credentials; no deadline comes near.
    let t = common::start_with(|c| {
        c.settings.max_provider_connections = 8;
        c.settings.first_request_timeout = Duration::from_secs(120);
    })
    .await;
    let (mut phone, tokens) = t
        .device("SHARE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    // Three well-formed HTTP/2 connections without credentials that never send a request:
    // the third arrival makes the first give way.
    let first = t.http2_token().await;
    let _second = t.http2_token().await;
    let _third = t.http2_token().await;
    tokio::time::timeout(TIMEOUT, first.closed())
        .await
        .expect("the oldest connection without credentials gave way");
    // A newcomer with a valid token is served (and, authenticated, leaves the share). One
    // token for both its pushes: a new one so soon would be TooManyProviderTokenUpdates.
    let jwt = t.jwt(DEFAULT_KEY_ID);
    let mut newcomer = t.http2_token().await;
    let answer = newcomer
        .send(&alert(&token, &common::alert("token")).bearer(&jwt))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    // Once authenticated it no longer gives way to newcomers without credentials.
    let _fourth = t.http2_token().await;
    let _fifth = t.http2_token().await;
    let _sixth = t.http2_token().await;
    let answer = newcomer
        .send(&alert(&token, &common::alert("still here")).bearer(&jwt))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    t.stop().await;
}

#[tokio::test]
async fn gateway_connections_dripping_a_frame_are_cut_off() {
    // Two slots, both taken by providers with a valid certificate dripping a frame.
    let t = common::start_with(|c| {
        c.settings.max_provider_connections = 2;
        c.settings.frame_timeout = Duration::from_millis(300);
        c.settings.first_request_timeout = Duration::from_secs(120);
    })
    .await;
    let (mut phone, tokens) = t
        .device("GW-DRIP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let expiry = common::in_an_hour(&t.clock);
    let dripped = common::frame(
        token.as_bytes(),
        &common::alert("never whole"),
        9,
        expiry,
        10,
    );
    let gateway = t.sim.addrs().gateway.to_string();
    let mut drippers = tokio::task::JoinSet::new();
    for i in 0..2 {
        let stream = connect_tls(&gateway, "localhost", t.default_provider_tls())
            .await
            .unwrap();
        let dripped = dripped.clone();
        drippers.spawn(async move {
            drip_until_closed(
                stream,
                &dripped,
                &format!("dripping gateway connection {i}"),
            )
            .await
        });
    }
    // A provider arriving while both slots are held is served once the drips are cut off.
    let mut gw = BinaryClient::connect(&gateway, "localhost", t.default_provider_tls())
        .await
        .unwrap();
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("whole"),
        1,
        expiry,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut phone).await, 1);
    while let Some(done) = drippers.join_next().await {
        done.unwrap();
    }
    t.stop().await;
}

#[tokio::test]
async fn a_device_that_stops_reading_is_cut_off_and_its_notifications_routed_again() {
    let t = common::start_with(|c| c.settings.write_timeout = Duration::from_millis(300)).await;
    let mut events = t.sim.hub().subscribe();
    let devices = t.sim.addrs().devices;
    let tls = t.client_tls(None, Vec::new());
    // Says hello, registers, then never reads again (with a tiny receive buffer, so the
    // simulator's writes to it block soon).
    let (stalled, _, token, _) = raw_device(devices, tls.clone(), "STALL-1", Some(4096)).await;
    // Push nearly 4 KiB notifications until the hub sees the device go.
    let big = common::alert(&"x".repeat(3900));
    let mut client = t.http2().await;
    let pusher = async {
        // A bound, not a pace: the loop ends when the hub sees the device go (the select
        // below), which takes the write deadline; HTTP/2 answers fast enough that a
        // thousand fit in less than that.
        for _ in 0..100_000 {
            let answer = client.send(&alert(&token, &big)).await.unwrap();
            assert_eq!(answer.status, 200, "{answer}");
        }
        panic!("100,000 notifications pushed and the device that stopped reading still online");
    };
    let offline = next_hub_event(
        &mut events,
        |e| matches!(e, Event::DeviceOffline { serial, .. } if serial == "STALL-1"),
    );
    tokio::select! {
        _ = offline => {}
        _ = pusher => {}
    }
    drop(stalled);
    // What it had not acknowledged was routed again: the device, back, receives it.
    // (The stored notification may come before or after the token.)
    let (mut back, mut read, again, before) = raw_device(devices, tls, "STALL-1", None).await;
    assert_eq!(again, token, "same device, same app: same token");
    let mut first = before.into_iter().find_map(|m| match m {
        ServerMessage::Notification(n) => Some(n),
        _ => None,
    });
    while first.is_none() {
        if let ServerMessage::Notification(n) = next_message(&mut back, &mut read).await {
            first = Some(n);
        }
    }
    assert_eq!(first.map(|n| n.token), Some(token));
    // And a well-behaved device on the same server is served.
    let (mut phone, tokens) = t
        .device("WELL-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let answer = client
        .send(&alert(&tokens[DEFAULT_TOPIC], &common::alert("hello")))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    t.stop().await;
}

#[tokio::test]
async fn stalled_http2_bodies_past_the_budget_get_service_unavailable() {
    // Room for two bodies of alert size (4096 bytes each) at once.
    let t = common::start_with(|c| {
        c.settings.http2_body_budget = 2 * 4096;
        c.settings.request_body_timeout = Duration::from_secs(1);
    })
    .await;
    let (mut phone, tokens) = t
        .device("BUDGET-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut client = t.http2().await;
    // Two streams whose bodies start and never end hold the whole budget.
    let stalled = alert(&token, "");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (response, mut body) = client.start(&stalled, false).await.unwrap();
        body.send_data(Bytes::from_static(b"{\"aps\":"), false)
            .unwrap();
        held.push((response, body));
    }
    // The next stream is refused without being buffered.
    let answer = client
        .send(&alert(&token, &common::alert("over budget")))
        .await
        .unwrap();
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (503, Some("ServiceUnavailable")),
        "{answer}"
    );
    // The stalled ones get their deadline's answer, and give the budget back...
    for (response, _body) in held {
        let answer = tokio::time::timeout(TIMEOUT, read_response(response))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(
            (answer.status, answer.reason.as_deref()),
            (400, Some("IdleTimeout")),
            "{answer}"
        );
    }
    // ...so a well-behaved request is served.
    let answer = client
        .send(&alert(&token, &common::alert("within budget")))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    common::next_notification(&mut phone).await;
    t.stop().await;
}

/// `serve --state DIR` with a short shutdown deadline and a device that has stopped reading,
/// while notifications are pushed to it; before the SIGTERM, what must be durable: a token
/// unregistered with its feedback tuple (an uninstall), a notification stored for an offline
/// device (HTTP/2 200), and the registrations. The process exits, and the state file holds
/// all of it.
#[tokio::test]
async fn sigterm_ends_serve_while_a_device_has_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut sim = durable::serve_with(dir.path(), &state, "0", &["--shutdown-timeout", "1s"]).await;
    let mut h2 = durable::http2(&sim, dir.path()).await;
    let (gone, unregistered_at) =
        durable::uninstalled(&sim, dir.path(), &mut h2, "TERM-GONE").await;
    let away_stop = tokio_util::sync::CancellationToken::new();
    let (_away, away, apns_id) =
        durable::stored_for(&mut sim, dir.path(), &mut h2, "TERM-AWAY", &away_stop).await;

    let certs = CertsDir(dir.path().join("certs"));
    let provider = certs
        .provider_files("localhost")
        .client_config(Vec::new())
        .unwrap();
    let ca = std::fs::read(certs.ca()).unwrap();
    let device_tls = apns_sim::tls::client_config(&ca, None, Vec::new()).unwrap();
    // A device that says hello, registers, and never reads again.
    let (_stalled, _, token, _) = raw_device(
        sim.devices.parse().unwrap(),
        device_tls,
        "STALLED-PROCESS",
        Some(4096),
    )
    .await;
    // Enough notifications that the simulator's writes to it block.
    let mut gw = BinaryClient::connect(&sim.gateway, "localhost", provider)
        .await
        .unwrap();
    let expiry = u32::MAX - 1;
    let payload = common::alert(&"y".repeat(200));
    for id in 0..2000u32 {
        gw.send(&common::frame(token.as_bytes(), &payload, id, expiry, 10))
            .await
            .unwrap();
    }
    let status = sim.signal("TERM").await;
    assert!(status.success(), "{status:?}");
    away_stop.cancel();

    // Read only, as `sqlite3` would: every answer given as durable is in the file.
    let db = rusqlite::Connection::open_with_flags(
        state.join(apns_sim::store::STATE_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let token_row = |t: &DeviceToken| -> (String, bool, Option<i64>) {
        db.query_row(
            "SELECT serial, current, unregistered_at_ms FROM tokens WHERE token = ?1",
            [t.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    };
    assert_eq!(
        token_row(&gone),
        ("TERM-GONE".to_owned(), true, Some(unregistered_at as i64))
    );
    assert_eq!(token_row(&away), ("TERM-AWAY".to_owned(), true, None));
    assert_eq!(
        token_row(&token),
        ("STALLED-PROCESS".to_owned(), true, None)
    );
    let feedback: Vec<(Vec<u8>, u32)> = db
        .prepare("SELECT token, timestamp FROM feedback")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        feedback,
        [(gone.as_bytes().to_vec(), (unregistered_at / 1000) as u32)]
    );
    let stored: (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT token, apns_id FROM stored WHERE serial = 'TERM-AWAY'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        stored,
        (away.as_bytes().to_vec(), apns_id.as_bytes().to_vec())
    );
}

/// The next message the simulator sends on `read` (a raw device's read half), decoded from
/// `buf`; `None` once the simulator has closed the stream.
async fn next_message_on<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
) -> Option<ServerMessage> {
    let wait = async {
        loop {
            if let Some(m) = decode_server_message(buf).expect("valid frame") {
                return Some(m);
            }
            match read.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait).await.expect("in time")
}

#[tokio::test]
async fn a_device_dripping_a_message_is_cut_off_and_its_notifications_routed_again() {
    // The idle deadline (three heartbeats) stays far away: only the frame deadline can end
    // a drip that completes a Ping every 1.1 s.
    let t = common::start_with(|c| c.settings.frame_timeout = Duration::from_millis(300)).await;
    let mut events = t.sim.hub().subscribe();
    let devices = t.sim.addrs().devices;
    let tls = t.client_tls(None, Vec::new());
    let (dripper, mut read, token, _) =
        raw_device(devices, tls.clone(), "DRIP-DEVICE-1", None).await;
    // A notification it receives and never acknowledges.
    let mut gw = t.gateway().await;
    let expiry = common::in_an_hour(&t.clock);
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("pending"),
        41,
        expiry,
        10,
    ))
    .await
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(dripper);
    loop {
        match next_message_on(&mut rd, &mut read).await {
            Some(ServerMessage::Notification(n)) => {
                assert_eq!(n.identifier, 41u32.to_be_bytes());
                break;
            }
            Some(_) => {}
            None => panic!("closed before the notification"),
        }
    }
    // Then Pings, a byte at a time, for ever.
    let ping = {
        let mut b = BytesMut::new();
        encode_device_message(&DeviceMessage::Ping { nonce: 7 }, &mut b);
        b
    };
    let drip = async {
        for byte in ping.iter().cycle() {
            // The pacing is the attack itself, not a way to wait for the server.
            tokio::time::sleep(DRIP_EVERY).await;
            if wr.write_all(&[*byte]).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    // The simulator says why (Error IDLE, naming the frame deadline), then closes.
    let told = async {
        let mut error = None;
        while let Some(m) = next_message_on(&mut rd, &mut read).await {
            if let ServerMessage::Error { code, message } = m {
                error = Some((code, message));
            }
        }
        error
    };
    let told = tokio::select! {
        told = told => told,
        _ = drip => unreachable!("the drip never ends on its own"),
    };
    let (code, message) = told.expect("an Error frame before the close");
    assert_eq!(code, apns_sim::protocol::device::CloseCode::Idle);
    assert!(message.contains("not complete within 300ms"), "{message}");
    // Its notification was routed again: stored for the device.
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 41, apns_sim::hub::Outcome::Stored)
    })
    .await;
    drop((rd, wr));
    // The device, back, receives it.
    let (mut back, mut read, again, before) = raw_device(devices, tls, "DRIP-DEVICE-1", None).await;
    assert_eq!(again, token, "same device, same app: same token");
    let mut first = before.into_iter().find_map(|m| match m {
        ServerMessage::Notification(n) => Some(n),
        _ => None,
    });
    while first.is_none() {
        if let ServerMessage::Notification(n) = next_message(&mut back, &mut read).await {
            first = Some(n);
        }
    }
    assert_eq!(first.map(|n| n.identifier), Some(41u32.to_be_bytes()));
    // And a well-behaved device on the same server is served.
    let (mut phone, tokens) = t
        .device("WELL-DRIP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    gw.send(&common::frame(
        tokens[DEFAULT_TOPIC].as_bytes(),
        &common::alert("hello"),
        42,
        expiry,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut phone).await, 42);
    t.stop().await;
}

/// A control API client that sends `GET path` with a tiny receive buffer and never reads.
async fn control_client_that_never_reads(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Sends `GET path` on a kept-alive control connection and reads the answer (its status
/// and body; the body has a `content-length`).
async fn control_get_on(tcp: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("answered in time")
}

/// Logs a rejection with a `size`-byte reason: an event of that size in the delivery log
/// and on the event stream.
fn big_event(t: &common::TestSim, size: usize) {
    t.sim.hub().record_rejection(
        apns_sim::hub::Api::Http2,
        DEFAULT_TOPIC,
        [0; 4],
        uuid::Uuid::new_v4(),
        None,
        "z".repeat(size),
    );
}

#[tokio::test]
async fn control_clients_that_stop_reading_are_cut_off_by_the_write_deadline() {
    // Two connection slots: one for the client that stops reading, one for a well-behaved
    // client that keeps its connection; a third client is served only once the first is
    // cut off.
    let t = common::start_with(|c| {
        c.settings.max_control_connections = 2;
        c.settings.write_timeout = Duration::from_millis(300);
        c.settings.delivery_log_len = 1000;
    })
    .await;
    let control = t.sim.addrs().control;

    // 1. The event stream, with events far larger than every buffer on the way.
    let mut stalled = control_client_that_never_reads(control, "/v1/events").await;
    let mut kept = TcpStream::connect(control).await.unwrap();
    let (status, _) = control_get_on(&mut kept, "/v1/health").await;
    assert_eq!(
        status, 200,
        "served while the stalled stream holds its slot"
    );
    // Events until the third client is answered (or its request times out: a failure).
    let flood = async {
        loop {
            big_event(&t, 8 * 1024);
            tokio::task::yield_now().await;
        }
    };
    let served = tokio::select! {
        served = common::control_json(control, "GET", "/v1/health", None) => served,
        _ = flood => unreachable!("the flood never ends on its own"),
    };
    assert_eq!(served.0, 200);
    closed_by_server(&mut stalled, "event stream nobody reads").await;

    // 2. The delivery log: a page of 1,000 records of 8 KiB each.
    for _ in 0..1000 {
        big_event(&t, 8 * 1024);
    }
    let mut stalled =
        control_client_that_never_reads(control, "/v1/notifications?limit=1000").await;
    let (status, _) = control_get_on(&mut kept, "/v1/health").await;
    assert_eq!(status, 200, "served while the stalled log holds its slot");
    let (status, _) = common::control_json(control, "GET", "/v1/health", None).await;
    assert_eq!(status, 200);
    closed_by_server(&mut stalled, "delivery log nobody reads").await;
    t.stop().await;
}
