//! A provider connection to the binary gateway (commands 0, 1, 2 out; error response 8 in).
//!
//! The binary API never acknowledges success, so "accepted" can only mean "no error
//! response arrived within a wait": [`BinaryClient::finish`] makes that explicit.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{connect_tls, ClientError};
use crate::connection::{Connection, ReadError};
use crate::protocol::error_response::{self, ErrorResponse};

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
