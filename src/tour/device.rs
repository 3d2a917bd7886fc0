//! The tour's device: one device-protocol session driven by hand, frame by frame, so that the
//! tour can show the exact bytes each side wrote.
//!
//! `client::device` runs a device on its own (registering, acknowledging, reconnecting), which
//! is right for fleets and tests but hides the frames. The tour wants to stop after each one
//! and say what it was, so it speaks the protocol here with the same codecs
//! (`protocol::device`) over the same kind of TLS connection. The simulator cannot tell the
//! difference.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client;
use crate::connection::{Connection, ReadError};
use crate::protocol::device::{
    decode_server_message, encode_device_message, DeviceMessage, DeviceProtocolError, ServerMessage,
};

use super::TourError;

/// How long the tour waits for the simulator's next frame to the device.
pub(super) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// One open device session.
pub(super) struct TourDevice {
    conn: Connection<TlsStream<TcpStream>>,
}

impl TourDevice {
    /// Opens the TLS connection to the device endpoint (nothing is said yet).
    pub(super) async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<ClientConfig>,
    ) -> Result<Self, TourError> {
        let stream = client::connect_tls(addr, server_name, tls)
            .await
            .map_err(|e| TourError::Failed(format!("the device could not connect: {e}")))?;
        Ok(TourDevice {
            conn: Connection::new(stream),
        })
    }

    /// Writes one message and returns its bytes exactly as written.
    pub(super) async fn send(&mut self, message: &DeviceMessage) -> Result<Bytes, TourError> {
        let mut bytes = BytesMut::new();
        encode_device_message(message, &mut bytes);
        let bytes = bytes.freeze();
        self.conn
            .write_all(&bytes)
            .await
            .map_err(|e| TourError::Failed(format!("the device could not write: {e}")))?;
        Ok(bytes)
    }

    /// Reads the simulator's next message, with its bytes exactly as they arrived.
    pub(super) async fn recv(&mut self) -> Result<(ServerMessage, Bytes), TourError> {
        let read = self.conn.read_frame(|buf: &mut BytesMut| {
            let before = buf.len();
            let mut copy = buf.clone();
            let message = decode_server_message(buf)?;
            let framed: Option<(ServerMessage, Bytes)> = message.map(|m| {
                let used = before.saturating_sub(buf.len());
                (m, copy.split_to(used.min(copy.len())).freeze())
            });
            Ok::<_, DeviceProtocolError>(framed)
        });
        match tokio::time::timeout(FRAME_TIMEOUT, read).await {
            Err(_) => Err(TourError::Failed(format!(
                "the simulator sent the device nothing within {FRAME_TIMEOUT:?}"
            ))),
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(TourError::Failed(
                "the simulator closed the device's connection".to_owned(),
            )),
            Ok(Err(ReadError::Decode(e))) => Err(TourError::Failed(format!(
                "the simulator sent the device a frame it cannot read: {e}"
            ))),
            Ok(Err(e)) => Err(TourError::Failed(format!(
                "reading the device's connection: {e}"
            ))),
        }
    }

    /// Closes the connection the way a phone losing its network would not: cleanly, so the
    /// simulator notices at once instead of after missed heartbeats.
    pub(super) async fn close(mut self) -> Result<(), TourError> {
        self.conn
            .shutdown()
            .await
            .map_err(|e| TourError::Failed(format!("closing the device's connection: {e}")))
    }
}
