//! The legacy binary provider API (Apple's `gateway.push.apple.com:2195`).
//!
//! One task per provider connection:
//!
//! 1. the accept loop ([`crate::server`]) has completed mutual TLS; the provider certificate
//!    gives the topic (its bundle id) and, with the TLS server name, the environment;
//! 2. frames are decoded one by one from the read buffer (commands 0, 1, 2);
//! 3. each valid notification goes to the hub, which checks the token and routes it;
//!    success is silent, as on Apple's gateway;
//! 4. the first bad notification gets the 6-byte error response (command 8, status, its
//!    identifier); the connection then closes and everything written after it is discarded;
//! 5. on shutdown the provider gets status 10 (Shutdown) with the identifier of the last
//!    notification accepted, then the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::connection::{Connection, ReadError};
use crate::hub::{Api, Hub, PushError, PushRequest};
use crate::protocol::error_response::{ErrorResponse, Status};
use crate::protocol::notification::{self, Notification};
use crate::protocol::Environment;
use crate::server::accept::{self, Endpoint};
use crate::settings::Settings;
use crate::tls;

/// Most bytes read and thrown away after an error response before the socket is closed.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Serves the binary gateway on `listener` until `endpoint.shutdown` fires.
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

/// Topic and environment of an authenticated provider connection.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    pub(crate) topic: String,
    pub(crate) environment: Environment,
}

/// Reads the provider's identity from its certificate and the TLS server name.
pub(crate) fn identify(
    stream: &TlsStream<TcpStream>,
    settings: &Settings,
) -> Result<Provider, String> {
    let (_, conn) = stream.get_ref();
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| "no client certificate".to_owned())?;
    let identity = tls::provider_identity(cert).map_err(|e| e.to_string())?;
    let environment =
        tls::connection_environment(&identity, conn.server_name(), settings.default_environment)
            .map_err(|e| e.to_string())?;
    Ok(Provider {
        topic: identity.topic,
        environment,
    })
}

async fn handle(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let provider = identify(&stream, &settings);
    let mut conn = Connection::new(stream);
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            // Apple derives the topic from the certificate; a certificate it cannot read
            // (or one for the other environment's host) gets status 3, Missing topic.
            warn!(%peer, %reason, "provider certificate refused");
            refuse(&mut conn, Status::MissingTopic, [0; 4], &settings).await;
            return;
        }
    };
    info!(topic = %provider.topic, environment = %provider.environment, "provider connected");
    serve_provider(&mut conn, &provider, &hub, &settings, &shutdown).await;
}

/// The per-connection loop, generic over the stream so tests can drive it over `duplex`.
pub(crate) async fn serve_provider<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    provider: &Provider,
    hub: &Hub,
    settings: &Settings,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    // Identifier of the last notification accepted, for status 10 on shutdown.
    let mut last_accepted = [0u8; 4];
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => {
                info!(last = u32::from_be_bytes(last_accepted), "shutdown: status 10");
                refuse(conn, Status::Shutdown, last_accepted, settings).await;
                return;
            }
            r = tokio::time::timeout(settings.provider_idle_timeout, conn.read_frame(notification::decode)) => r,
        };
        match frame {
            Err(_) => {
                debug!("idle timeout: closing");
                let _ = conn.shutdown().await;
                return;
            }
            Ok(Ok(None)) => {
                debug!("provider closed the connection");
                return;
            }
            Ok(Err(ReadError::Decode(rejection))) => {
                hub.record_rejection(
                    Api::Binary,
                    &provider.topic,
                    rejection.identifier,
                    Uuid::new_v4(),
                    None,
                    rejection.reason.to_string(),
                );
                refuse(conn, rejection.status, rejection.identifier, settings).await;
                return;
            }
            Ok(Err(err)) => {
                debug!(%err, "connection ended");
                return;
            }
            Ok(Ok(Some(n))) => {
                let identifier = n.identifier;
                match hub.push(request(n, provider)) {
                    // An uninstalled app is not an error on the binary API: Apple accepted
                    // the notification and reported the token through the feedback service.
                    // Throttling was silent too (the hub logs it as throttled).
                    Ok(_)
                    | Err(PushError::Unregistered { .. } | PushError::TooManyRequests { .. }) => {
                        last_accepted = identifier
                    }
                    Err(_) => {
                        refuse(conn, Status::InvalidToken, identifier, settings).await;
                        return;
                    }
                }
            }
        }
    }
}

fn request(n: Notification, provider: &Provider) -> PushRequest {
    PushRequest {
        api: Api::Binary,
        token: n.token,
        topic: provider.topic.clone(),
        environment: provider.environment,
        identifier: n.identifier,
        apns_id: Uuid::new_v4(),
        expiry: n.expiry,
        priority: n.priority,
        push_type: None,
        collapse_id: None,
        payload: Bytes::clone(&n.payload),
    }
}

/// Writes an error response, closes the write side, then reads and discards whatever the
/// provider still sends (bounded in time and bytes) so the close is a FIN and not an RST
/// that could destroy the 6 bytes in flight.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    status: Status,
    identifier: [u8; 4],
    settings: &Settings,
) {
    let response = ErrorResponse { status, identifier }.encode();
    if conn.write_all(&response).await.is_err() {
        return;
    }
    let _ = conn.shutdown().await;
    linger(conn, settings.linger).await;
}

async fn linger<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>, limit: Duration) {
    let drain = async {
        let mut discarded = 0usize;
        let mut sink = [0u8; 16 * 1024];
        let stream = conn.get_mut();
        while discarded < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}
