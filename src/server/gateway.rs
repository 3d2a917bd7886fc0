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
use crate::server::accept::{self, Endpoint};
use crate::server::provider::{identify, Provider};
use crate::settings::Settings;

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

async fn handle(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let provider = identify(stream.get_ref().1, &settings);
    let mut conn = Connection::new(stream);
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            warn!(%peer, %reason, "provider certificate refused");
            refuse(&mut conn, reason.status(), [0; 4], &settings).await;
            return;
        }
    };
    info!(topic = %provider.topic, environment = %provider.environment, "provider connected");
    serve_provider(&mut conn, &provider, &hub, &settings, &shutdown).await;
}

/// The per-connection loop, generic over the stream so the tests below drive it over `duplex`.
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
                let refused = hub
                    .push(request(n, provider))
                    .err()
                    .and_then(|e| push_status(&e));
                match refused {
                    None => last_accepted = identifier,
                    Some(status) => {
                        refuse(conn, status, identifier, settings).await;
                        return;
                    }
                }
            }
        }
    }
}

/// The binary API's answer to a notification the hub refused: `None` when the binary API
/// accepts it silently.
fn push_status(error: &PushError) -> Option<Status> {
    match error {
        PushError::UnknownToken
        | PushError::WrongEnvironment { .. }
        | PushError::WrongTopic { .. } => Some(Status::InvalidToken),
        // An uninstalled app is not an error on the binary API: Apple accepted the
        // notification and reported the token through the feedback service. Throttling was
        // silent too (the hub logs it as throttled).
        PushError::Unregistered { .. } | PushError::TooManyRequests { .. } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use crate::clock::Clock;
    use crate::hub::DeviceSession;
    use crate::protocol::token::DeviceToken;
    use crate::protocol::Environment;

    /// Generous: a healthy test never waits this long.
    const TIMEOUT: Duration = Duration::from_secs(30);
    const TOPIC: &str = "com.example.app";
    const PAYLOAD: &str = r#"{"aps":{"alert":"hi"}}"#;

    fn frame(token: &[u8], id: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        notification::encode_frame_raw(
            token,
            PAYLOAD.as_bytes(),
            id.to_be_bytes(),
            0,
            10,
            &mut out,
        );
        out.to_vec()
    }

    /// A hub with one online device holding a token for [`TOPIC`], and a provider connection
    /// served over an 8-byte pipe, so every frame crosses it in pieces.
    struct Rig {
        session: DeviceSession,
        token: DeviceToken,
        provider: DuplexStream,
        shutdown: CancellationToken,
        served: tokio::task::JoinHandle<()>,
    }

    fn rig() -> Rig {
        let hub = Hub::new(Clock::system());
        let session = hub.connect_device("DUPLEX-1", Environment::Sandbox);
        let token = hub
            .register("DUPLEX-1", Environment::Sandbox, TOPIC, false)
            .unwrap();
        let (provider, server) = tokio::io::duplex(8);
        let shutdown = CancellationToken::new();
        let served = {
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            let settings = Settings {
                linger: Duration::from_secs(5),
                ..Settings::default()
            };
            let provider = Provider {
                topic: TOPIC.into(),
                environment: Environment::Sandbox,
            };
            tokio::spawn(async move {
                let mut conn = Connection::new(server);
                serve_provider(&mut conn, &provider, &hub, &settings, &shutdown).await;
            })
        };
        Rig {
            session,
            token,
            provider,
            shutdown,
            served,
        }
    }

    impl Rig {
        /// The binary identifier of the next notification the device session receives.
        async fn delivered(&mut self) -> u32 {
            let n = tokio::time::timeout(TIMEOUT, self.session.rx.recv())
                .await
                .expect("delivered in time")
                .expect("session open");
            u32::from_be_bytes(n.identifier)
        }

        /// Reads the error response, then expects the server to close its side.
        async fn error_response(&mut self) -> [u8; 6] {
            let mut answer = [0u8; 6];
            let mut rest = Vec::new();
            let read = async {
                self.provider.read_exact(&mut answer).await.unwrap();
                self.provider.read_to_end(&mut rest).await.unwrap();
            };
            tokio::time::timeout(TIMEOUT, read)
                .await
                .expect("answered in time");
            assert!(rest.is_empty(), "bytes after the error response: {rest:?}");
            answer
        }
    }

    #[tokio::test]
    async fn frames_across_a_tiny_pipe_are_routed_and_the_first_bad_one_answered() {
        let mut rig = rig();
        let good = rig.token;
        let bytes = [
            frame(good.as_bytes(), 1),
            frame(good.as_bytes(), 2),
            frame(&[7; 32], 3),        // a token no device holds: status 8
            frame(good.as_bytes(), 4), // after the error: discarded
        ]
        .concat();
        rig.provider.write_all(&bytes).await.unwrap();
        assert_eq!(rig.delivered().await, 1);
        assert_eq!(rig.delivered().await, 2);
        assert_eq!(
            rig.error_response().await,
            [
                0x08, // command 8
                0x08, // status 8, Invalid token
                0x00, 0x00, 0x00, 0x03, // identifier 3
            ]
        );
        drop(rig.provider);
        tokio::time::timeout(TIMEOUT, rig.served)
            .await
            .expect("connection task ends")
            .unwrap();
        assert!(rig.session.rx.try_recv().is_err(), "frame 4 was discarded");
    }

    #[tokio::test]
    async fn shutdown_over_a_tiny_pipe_names_the_last_accepted_identifier() {
        let mut rig = rig();
        let good = rig.token;
        rig.provider
            .write_all(&frame(good.as_bytes(), 0x0102_0304))
            .await
            .unwrap();
        assert_eq!(rig.delivered().await, 0x0102_0304);
        rig.shutdown.cancel();
        assert_eq!(
            rig.error_response().await,
            [
                0x08, // command 8
                0x0A, // status 10, Shutdown
                0x01, 0x02, 0x03, 0x04, // the last accepted identifier
            ]
        );
    }

    #[test]
    fn push_errors_map_to_binary_statuses() {
        let cases = [
            (PushError::UnknownToken, Some(Status::InvalidToken)),
            (
                PushError::WrongEnvironment {
                    token: Environment::Production,
                    connection: Environment::Sandbox,
                },
                Some(Status::InvalidToken),
            ),
            (
                PushError::WrongTopic {
                    token_app: "com.example.other".into(),
                    topic: TOPIC.into(),
                },
                Some(Status::InvalidToken),
            ),
            (PushError::Unregistered { at_ms: 1 }, None),
            (
                PushError::TooManyRequests {
                    pushes: 1,
                    per_secs: 60,
                },
                None,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(push_status(&error), status, "{error}");
        }
    }
}
