//! The device endpoint (port 5223, like the real devices' APNs port): one persistent TLS
//! connection per simulated device.
//!
//! Per connection:
//!
//! 1. the device says `Hello` (serial, environment) within the hello deadline;
//! 2. the hub opens its session (sending anything stored for it) and we answer `Welcome`
//!    with the heartbeat interval;
//! 3. then one `select!` loop serves three sources until one ends the session:
//!    - shutdown: tell the device (`Error` SHUTDOWN) and close;
//!    - the session queue: write the notification, plus any others already queued, in one
//!      TLS write; a closed queue means a newer connection with the same serial replaced us;
//!    - the socket: `Register` → `Registered`, `Ack` / `NotInstalled` → the hub, `Ping` →
//!      `Pong`; silence for three heartbeats ends the session;
//! 4. the hub routes anything still unacknowledged again (to the store or a newer session).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Connection, ReadError};
use crate::hub::{DeviceReply, Hub};
use crate::protocol::device::{
    decode_device_message, encode_server_message, DeviceMessage, ServerMessage, ERR_BAD_HELLO,
    ERR_IDLE, ERR_LIMIT, ERR_PROTOCOL, ERR_REPLACED, ERR_SHUTDOWN, PROTOCOL_VERSION,
};
use crate::protocol::Environment;
use crate::server::accept::{self, Endpoint};
use crate::settings::Settings;

/// Initial read buffer of a device session: device messages are a few bytes (acks, pings),
/// and thousands of idle sessions should stay small. It grows if a device sends more.
const DEVICE_READ_BUFFER: usize = 1024;

/// Most notifications written in one TLS write: enough to amortise the write, small enough
/// that acknowledgements keep flowing during a burst.
const MAX_BATCH: usize = 64;

/// Serves the device endpoint on `listener` until `endpoint.shutdown` fires.
pub async fn run(listener: TcpListener, endpoint: Endpoint, hub: Hub, settings: Arc<Settings>) {
    let shutdown = endpoint.shutdown.clone();
    accept::serve(listener, endpoint, move |stream, peer| {
        let hub = hub.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        async move { handle(stream, peer, hub, settings, shutdown).await }
    })
    .await;
}

async fn handle(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    let mut conn = Connection::with_capacity(stream, DEVICE_READ_BUFFER);
    serve_device(&mut conn, peer, &hub, &settings, &shutdown).await;
}

/// Sends an `Error` frame and closes. Best effort: the device may already be gone.
async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    code: u8,
    message: String,
) {
    conn.buffer(|b| encode_server_message(&ServerMessage::Error { code, message }, b));
    let _ = conn.flush().await;
    let _ = conn.shutdown().await;
}

/// One device session, generic over the stream for tests.
pub(crate) async fn serve_device<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    hub: &Hub,
    settings: &Settings,
    shutdown: &CancellationToken,
) {
    // 1. Hello, within its deadline.
    let hello = tokio::time::timeout(
        settings.hello_timeout,
        conn.read_frame(decode_device_message),
    )
    .await;
    let (serial, environment) = match hello {
        Ok(Ok(Some(DeviceMessage::Hello {
            version,
            environment,
            serial,
        }))) if version == PROTOCOL_VERSION => (serial, environment),
        Ok(Ok(Some(DeviceMessage::Hello { version, .. }))) => {
            let msg =
                format!("unsupported protocol version {version}, expected {PROTOCOL_VERSION}");
            return close_with(conn, ERR_BAD_HELLO, msg).await;
        }
        Ok(Ok(Some(other))) => {
            let msg = format!("expected Hello first, got {other:?}");
            return close_with(conn, ERR_BAD_HELLO, msg).await;
        }
        Ok(Err(ReadError::Decode(e))) => {
            return close_with(conn, ERR_PROTOCOL, e.to_string()).await;
        }
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            let msg = format!("no Hello within {:?}", settings.hello_timeout);
            return close_with(conn, ERR_IDLE, msg).await;
        }
    };
    debug!(%peer, %serial, %environment, "hello");

    // 2. Session and welcome.
    let mut session = hub.connect_device(&serial, environment);
    let heartbeat_secs = settings
        .device_heartbeat
        .as_secs()
        .clamp(1, u16::MAX as u64) as u16;
    conn.buffer(|b| encode_server_message(&ServerMessage::Welcome { heartbeat_secs }, b));
    if conn.flush().await.is_err() {
        hub.disconnect_device(&serial, environment, session.id);
        return;
    }

    // 3. Serve until something ends the session.
    let idle = settings.device_idle_timeout();
    let mut deadline = Instant::now() + idle;
    let ended: Option<(u8, String)> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                break Some((ERR_SHUTDOWN, "simulator shutting down".to_owned()));
            }
            next = session.rx.recv() => {
                let Some(first) = next else {
                    break Some((ERR_REPLACED, format!("another connection for serial {serial} replaced this one")));
                };
                conn.buffer(|b| encode_server_message(&ServerMessage::Notification(*first), b));
                for _ in 1..MAX_BATCH {
                    match session.rx.try_recv() {
                        Ok(n) => conn.buffer(|b| encode_server_message(&ServerMessage::Notification(*n), b)),
                        Err(_) => break,
                    }
                }
                if let Err(err) = conn.flush().await {
                    debug!(%err, "device write failed");
                    break None;
                }
            }
            read = tokio::time::timeout_at(deadline, conn.read_frame(decode_device_message)) => {
                let msg = match read {
                    Err(_) => break Some((ERR_IDLE, format!("nothing received for {idle:?}"))),
                    Ok(Ok(None)) => break None,
                    Ok(Err(ReadError::Decode(e))) => break Some((ERR_PROTOCOL, e.to_string())),
                    Ok(Err(err)) => {
                        debug!(%err, "device connection ended");
                        break None;
                    }
                    Ok(Ok(Some(msg))) => msg,
                };
                deadline = Instant::now() + idle;
                if let Err(problem) = answer(conn, hub, &serial, environment, session.id, msg).await {
                    break Some(problem);
                }
            }
        }
    };
    if let Some((code, message)) = ended {
        if code == ERR_PROTOCOL {
            warn!(%serial, %message, "device protocol error");
        }
        close_with(conn, code, message).await;
    }
    // 4. Hand back what was not acknowledged.
    hub.disconnect_device(&serial, environment, session.id);
}

/// Handles one message from the device. An `Err` ends the session with that error.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    hub: &Hub,
    serial: &str,
    environment: Environment,
    session: u64,
    msg: DeviceMessage,
) -> Result<(), (u8, String)> {
    match msg {
        DeviceMessage::Hello { .. } => {
            return Err((ERR_PROTOCOL, "Hello sent twice".to_owned()));
        }
        DeviceMessage::Register { fresh_install, app } => {
            let token = hub
                .register(serial, environment, &app, fresh_install)
                .map_err(|e| (ERR_LIMIT, e.to_string()))?;
            conn.buffer(|b| encode_server_message(&ServerMessage::Registered { app, token }, b));
        }
        DeviceMessage::Ack { delivery } => {
            if !hub.device_reply(session, delivery, DeviceReply::Ack) {
                return Err((ERR_PROTOCOL, format!("Ack for unknown delivery {delivery}")));
            }
        }
        DeviceMessage::NotInstalled { delivery } => {
            if !hub.device_reply(session, delivery, DeviceReply::NotInstalled) {
                return Err((
                    ERR_PROTOCOL,
                    format!("NotInstalled for unknown delivery {delivery}"),
                ));
            }
            info!(serial, delivery, "device reported app not installed");
        }
        DeviceMessage::Ping { nonce } => {
            conn.buffer(|b| encode_server_message(&ServerMessage::Pong { nonce }, b));
        }
    }
    conn.flush()
        .await
        .map_err(|e| (ERR_PROTOCOL, format!("write failed: {e}")))
}
