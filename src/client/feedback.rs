//! A provider connection to the feedback service: read every tuple until the service closes.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;

use super::{connect_tls, ClientError};
use crate::connection::{Connection, ReadError};
use crate::protocol::feedback::{self, FeedbackTuple};

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
