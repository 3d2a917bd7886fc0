//! Provider-side clients for the binary gateway and the feedback service, used by the
//! `push` and `feedback` commands and by the tests.
//!
//! The binary API never acknowledges success, so "accepted" can only mean "no error
//! response arrived within a wait": [`BinaryClient::finish`] makes that explicit.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::connection::{Connection, ReadError};
use crate::protocol::error_response::{self, ErrorResponse};
use crate::protocol::feedback::{self, FeedbackTuple};

/// Deadline for connecting and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect or complete TLS (includes a refused client certificate).
    #[error("connecting to {addr}: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        why: String,
    },
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid answer.
    #[error("unexpected bytes from the server: {0}")]
    Protocol(String),
}

/// Opens a TLS connection.
pub async fn connect_tls(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let err = |why: String| ClientError::Connect {
        addr: addr.to_owned(),
        why,
    };
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| err(format!("bad server name {server_name:?}: {e}")))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {e}")))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| err(format!("timed out after {CONNECT_TIMEOUT:?}")))?
}

/// What the gateway said after a batch of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayAnswer {
    /// An error response: the named notification failed, everything after it was dropped.
    Error(ErrorResponse),
    /// The gateway closed the connection without an error response.
    Closed,
    /// Nothing within the wait: every notification was accepted.
    Silent,
}

/// A connection to the binary gateway.
#[derive(Debug)]
pub struct BinaryClient {
    conn: Connection<TlsStream<TcpStream>>,
}

impl BinaryClient {
    /// Connects with the provider certificate in `config`.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Self, ClientError> {
        let stream = connect_tls(addr, server_name, config).await?;
        Ok(BinaryClient {
            conn: Connection::new(stream),
        })
    }

    /// Writes raw bytes (one or many encoded notifications, or deliberate garbage).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.conn.write_all(bytes).await?;
        Ok(())
    }

    /// Encodes with `encode` and writes.
    pub async fn send_with(
        &mut self,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ClientError> {
        self.conn.buffer(encode);
        self.conn.flush().await?;
        Ok(())
    }

    /// Waits up to `wait` for the gateway's answer.
    pub async fn finish(&mut self, wait: Duration) -> Result<GatewayAnswer, ClientError> {
        match tokio::time::timeout(wait, self.conn.read_frame(decode_error_response)).await {
            Err(_) => Ok(GatewayAnswer::Silent),
            Ok(Ok(Some(resp))) => Ok(GatewayAnswer::Error(resp)),
            Ok(Ok(None)) => Ok(GatewayAnswer::Closed),
            Ok(Err(ReadError::Decode(e))) => Err(ClientError::Protocol(e.to_string())),
            // A reset after the server closed is still "closed without a response".
            Ok(Err(ReadError::Io(_))) => Ok(GatewayAnswer::Closed),
            Ok(Err(ReadError::Truncated(n))) => Err(ClientError::Protocol(format!(
                "connection closed after {n} bytes of an error response"
            ))),
        }
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.conn.shutdown().await?;
        Ok(())
    }
}

/// Adapts [`ErrorResponse::decode`] to the framed connection (consumes what it decodes).
fn decode_error_response(
    buf: &mut BytesMut,
) -> Result<Option<ErrorResponse>, error_response::ErrorResponseError> {
    match ErrorResponse::decode(buf)? {
        Some((response, used)) => {
            buf.advance(used);
            Ok(Some(response))
        }
        None => Ok(None),
    }
}

/// Reads every tuple the feedback service has for this certificate's topic, until the
/// service closes the connection.
pub async fn read_feedback(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    wait: Duration,
) -> Result<Vec<FeedbackTuple>, ClientError> {
    let stream = connect_tls(addr, server_name, config).await?;
    let mut conn = Connection::new(stream);
    let mut tuples = Vec::new();
    let read_all = async {
        loop {
            match conn.read_frame(feedback::FeedbackTuple::decode).await {
                Ok(Some(t)) => tuples.push(t),
                Ok(None) => return Ok(()),
                Err(ReadError::Decode(e)) => return Err(ClientError::Protocol(e.to_string())),
                Err(ReadError::Truncated(n)) => {
                    return Err(ClientError::Protocol(format!(
                        "feedback closed in the middle of a tuple ({n} bytes)"
                    )))
                }
                Err(ReadError::Io(e)) => return Err(ClientError::Io(e)),
            }
        }
    };
    match tokio::time::timeout(wait, read_all).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ClientError::Protocol(format!(
                "feedback service did not close within {wait:?}"
            )))
        }
    }
    let _ = conn.get_mut().shutdown().await;
    Ok(tuples)
}
