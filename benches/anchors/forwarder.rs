//! The minimal coalescing forwarder: the fastest thing that does the simulator's binary job
//! on this machine, as issue 10 describes it.
//!
//! - provider side: mutual-TLS connections (the simulator's gateway TLS configuration) read
//!   into 128 KiB buffers; each command-2 frame's header and items are walked to the token
//!   (and the few fields a device frame carries); one `HashMap<[u8; 32], Sender>` lookup per
//!   frame, all of one read under one read lock; each frame into its device's bounded mpsc;
//! - device side: the simulator's device protocol (Hello → Welcome, Register → Registered,
//!   Ping → Pong; acks are read and ignored), so the same simulated devices connect; per
//!   device a writer task that takes up to 256 frames with `recv_many`, yields once, drains
//!   what arrived meanwhile with `try_recv`, and writes them all with one `write_all`.
//!
//! No rules: no validation beyond framing, no store, no feedback, no log, no error responses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Result};
use apns_sim::pki::Pki;
use apns_sim::protocol::device::{
    decode_device_message, decode_server_message, encode_server_message, DeviceMessage,
    DeviceNotification, ServerMessage,
};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::tls;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Provider read buffer (the issue's 128 KiB).
const PROVIDER_BUFFER: usize = 128 * 1024;
/// Room kept free in the provider buffer before each read.
const MIN_READ_ROOM: usize = 16 * 1024;
/// Frames a device's queue holds before providers wait (the issue's 1,024).
const DEVICE_QUEUE: usize = 1024;
/// Frames a device writer takes with one `recv_many`, and again at most after its yield.
const WRITE_BATCH: usize = 256;
/// Largest command-2 frame body accepted (header's length field), so a bad length cannot
/// make the forwarder buffer without limit: items of at most 32 + 4096 + 4 + 4 + 1 bytes.
const MAX_FRAME: usize = 5 * 3 + 32 + 4096 + 4 + 4 + 1;
/// Device read buffer: devices send acks and pings.
const DEVICE_BUFFER: usize = 1024;
/// Heartbeat told to devices: long, the forwarder never drops idle ones.
const HEARTBEAT_SECS: u16 = 3600;
/// Notification frame bytes before the payload: type 1, length 2, delivery 8, token 33,
/// identifier 4, apns-id 16, expiry 4, priority 1, push type 1, collapse id 1, payload len 2.
const NOTIFICATION_HEAD: usize = 73;

/// Token → the queue of the device session holding it.
type Table = Arc<RwLock<HashMap<[u8; 32], mpsc::Sender<Bytes>>>>;

/// A bound forwarder.
pub(crate) struct Forwarder {
    /// Binary gateway address.
    pub(crate) gateway: SocketAddr,
    /// Device endpoint address.
    pub(crate) devices: SocketAddr,
    gateway_listener: TcpListener,
    device_listener: TcpListener,
    provider_tls: TlsAcceptor,
    device_tls: TlsAcceptor,
}

impl Forwarder {
    /// Binds both listeners on 127.0.0.1, and checks that this file's device frame encoding
    /// is the protocol's (so a protocol change cannot silently break the anchor).
    pub(crate) async fn bind(pki: &Pki) -> Result<Forwarder> {
        check_encoding()?;
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
        let device_listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Forwarder {
            gateway: gateway_listener.local_addr()?,
            devices: device_listener.local_addr()?,
            gateway_listener,
            device_listener,
            provider_tls: TlsAcceptor::from(tls::provider_server_config(pki, &[])?),
            device_tls: TlsAcceptor::from(tls::device_server_config(pki)?),
        })
    }

    /// Accepts providers and devices until a listener fails.
    pub(crate) async fn serve(self) -> Result<()> {
        let table: Table = Arc::default();
        tokio::try_join!(
            accept_devices(self.device_listener, self.device_tls, table.clone()),
            accept_providers(self.gateway_listener, self.provider_tls, table),
        )?;
        Ok(())
    }
}

/// The device endpoint's accept loop: one session task per device.
async fn accept_devices(listener: TcpListener, tls: TlsAcceptor, table: Table) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (tls, table) = (tls.clone(), table.clone());
        tokio::spawn(async move {
            if let Ok(stream) = tls.accept(tcp).await {
                device_session(stream, table).await;
            }
        });
    }
}

/// The gateway's accept loop: one task per provider connection.
async fn accept_providers(listener: TcpListener, tls: TlsAcceptor, table: Table) -> Result<()> {
    let mut index = 0u64;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (tls, table) = (tls.clone(), table.clone());
        index += 1;
        // Delivery numbers: unique per connection, no shared counter.
        let first = index << 40;
        tokio::spawn(async move {
            if let Ok(stream) = tls.accept(tcp).await {
                let _ = provider(stream, table, first).await;
            }
        });
    }
}

/// One provider connection: read, walk, route, until it closes or sends garbage.
async fn provider<S: AsyncRead + Unpin>(mut stream: S, table: Table, first: u64) -> Result<()> {
    let mut buf = BytesMut::with_capacity(PROVIDER_BUFFER);
    let mut delivery = first;
    let mut routed: Vec<([u8; 32], Bytes)> = Vec::new();
    let mut blocked: Vec<(mpsc::Sender<Bytes>, Bytes)> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < MIN_READ_ROOM {
            buf.reserve(PROVIDER_BUFFER);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        // 1. Walk every whole frame of this read, encoding its device frame into one buffer
        //    (each routed frame is a slice of it: one allocation per read).
        let mut out = BytesMut::with_capacity(buf.len() + buf.len() / 2);
        while buf.len() >= 5 {
            if buf[0] != 2 {
                bail!("not a command-2 frame");
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_FRAME {
                bail!("frame of {len} bytes");
            }
            if buf.len() < 5 + len {
                break;
            }
            if let Some(token) = encode_notification(&buf[5..5 + len], delivery, &mut out) {
                routed.push((token, out.split().freeze()));
                delivery += 1;
            }
            buf.advance(5 + len);
        }
        // 2. One read lock for the whole read; a full queue is waited on after it is
        //    released.
        {
            let table = table.read().unwrap_or_else(|p| p.into_inner());
            for (token, frame) in routed.drain(..) {
                if let Some(tx) = table.get(&token) {
                    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
                        blocked.push((tx.clone(), frame));
                    }
                }
            }
        }
        for (tx, frame) in blocked.drain(..) {
            let _ = tx.send(frame).await;
        }
    }
}

/// Walks one command-2 frame's items and appends the device's Notification frame to `out`;
/// returns the token, or `None` when the frame has no 32-byte token or no payload.
fn encode_notification(items: &[u8], delivery: u64, out: &mut BytesMut) -> Option<[u8; 32]> {
    let (mut token, mut payload, mut id, mut expiry, mut priority) = (None, None, [0; 4], 0, 10);
    let mut rest = items;
    while rest.len() >= 3 {
        let (item, len) = (rest[0], u16::from_be_bytes([rest[1], rest[2]]) as usize);
        let data = rest.get(3..3 + len)?;
        match (item, len) {
            (1, 32) => token = Some(<[u8; 32]>::try_from(data).ok()?),
            (2, _) => payload = Some(data),
            (3, 4) => id.copy_from_slice(data),
            (4, 4) => expiry = u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            (5, 1) => priority = data[0],
            _ => {}
        }
        rest = &rest[3 + len..];
    }
    let (token, payload) = (token?, payload?);
    let body = NOTIFICATION_HEAD - 3 + payload.len();
    out.reserve(3 + body);
    out.put_u8(0x83);
    out.put_u16(body as u16);
    out.put_u64(delivery);
    out.put_u8(32);
    out.put_slice(&token);
    out.put_slice(&id);
    out.put_slice(&[0; 16]);
    out.put_u32(expiry);
    out.put_u8(priority);
    out.put_u8(0);
    out.put_u8(0);
    out.put_u16(payload.len() as u16);
    out.put_slice(payload);
    Some(token)
}

/// The device frame this file writes is the one the protocol module writes and reads.
fn check_encoding() -> Result<()> {
    let token = [9u8; 32];
    let mut items = BytesMut::new();
    for (item, data) in [
        (1u8, &token[..]),
        (2, br#"{"aps":{}}"#),
        (3, &[0, 0, 0, 7]),
        (4, &[0, 0, 0, 0]),
        (5, &[10]),
    ] {
        items.put_u8(item);
        items.put_u16(data.len() as u16);
        items.put_slice(data);
    }
    let mut ours = BytesMut::new();
    encode_notification(&items, 5, &mut ours);
    let expected = ServerMessage::Notification(DeviceNotification {
        delivery: 5,
        token: DeviceToken::from_bytes(token),
        identifier: [0, 0, 0, 7],
        apns_id: [0; 16],
        expiry: 0,
        priority: 10,
        push_type: None,
        collapse_id: None,
        payload: Bytes::from_static(br#"{"aps":{}}"#),
    });
    let mut theirs = BytesMut::new();
    encode_server_message(&expected, &mut theirs);
    if ours != theirs || decode_server_message(&mut ours.clone()).ok().flatten() != Some(expected) {
        bail!("the forwarder's Notification encoding no longer matches src/protocol/device.rs");
    }
    Ok(())
}

/// One device session: answers Hello, Register and Ping through the writer's queue, and
/// removes its tokens when it ends.
async fn device_session<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, table: Table) {
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(DEVICE_QUEUE);
    let write_task = tokio::spawn(device_writer(writer, rx));
    let mut buf = BytesMut::with_capacity(DEVICE_BUFFER);
    let mut tokens = Vec::new();
    'session: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let reply = match decode_device_message(&mut buf) {
                Ok(None) => break,
                Err(_) => break 'session,
                Ok(Some(DeviceMessage::Hello { .. })) => ServerMessage::Welcome {
                    heartbeat_secs: HEARTBEAT_SECS,
                },
                Ok(Some(DeviceMessage::Register { app, kind, .. })) => {
                    let token: [u8; 32] = rand::random();
                    table
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(token, tx.clone());
                    tokens.push(token);
                    ServerMessage::Registered {
                        app,
                        kind,
                        token: DeviceToken::from_bytes(token),
                    }
                }
                Ok(Some(DeviceMessage::Ping { nonce })) => ServerMessage::Pong { nonce },
                // Acks and anything newer: the forwarder keeps no state per delivery.
                Ok(Some(_)) => continue,
            };
            let mut frame = BytesMut::new();
            encode_server_message(&reply, &mut frame);
            if tx.send(frame.freeze()).await.is_err() {
                break 'session;
            }
        }
    }
    {
        let mut table = table.write().unwrap_or_else(|p| p.into_inner());
        for t in &tokens {
            table.remove(t);
        }
    }
    drop(tx);
    let _ = write_task.await;
}

/// Writes a device's queued frames: up to [`WRITE_BATCH`] with `recv_many`, one yield so
/// that providers can add more, up to [`WRITE_BATCH`] more with `try_recv`, one `write_all`.
async fn device_writer<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut frames = Vec::with_capacity(2 * WRITE_BATCH);
    let mut out = BytesMut::new();
    loop {
        if rx.recv_many(&mut frames, WRITE_BATCH).await == 0 {
            return;
        }
        tokio::task::yield_now().await;
        while frames.len() < 2 * WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => frames.push(f),
                Err(_) => break,
            }
        }
        out.clear();
        for f in frames.drain(..) {
            out.extend_from_slice(&f);
        }
        if writer.write_all(&out).await.is_err() {
            return;
        }
    }
}
