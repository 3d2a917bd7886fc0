//! The feedback service (Apple's `feedback.push.apple.com:2196`).
//!
//! A provider connects with the same client certificate as for the gateway and sends
//! nothing. The service writes every (timestamp, token) tuple recorded for the
//! certificate's topic and environment since the last read, clears them, and closes the
//! connection (Apple's behaviour is disputed here, see the spec's open question 6; closing
//! at once is what most clients expect and lets them read until EOF).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::hub::Hub;
use crate::server::accept::{self, Endpoint};
use crate::server::provider::identify;
use crate::settings::Settings;

/// Serves the feedback service on `listener` until `endpoint.shutdown` fires.
pub async fn run(listener: TcpListener, endpoint: Endpoint, hub: Hub, settings: Arc<Settings>) {
    accept::serve(listener, endpoint, move |stream, peer| {
        let hub = hub.clone();
        let settings = settings.clone();
        async move { handle(stream, peer, hub, settings).await }
    })
    .await;
}

async fn handle(
    mut stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
) {
    let provider = match identify(stream.get_ref().1, &settings) {
        Ok(p) => p,
        Err(reason) => {
            // The feedback protocol has no error message; closing is the only answer.
            warn!(%peer, %reason, "provider certificate refused");
            let _ = stream.shutdown().await;
            return;
        }
    };
    let tuples = hub.take_feedback(&provider.topic, provider.environment);
    let mut out = BytesMut::with_capacity(tuples.len() * crate::protocol::feedback::TUPLE_LEN);
    for t in &tuples {
        t.encode(&mut out);
    }
    let written = async {
        stream.write_all(&out).await?;
        stream.flush().await?;
        stream.shutdown().await
    }
    .await;
    match written {
        Ok(()) => {
            hub.metrics().feedback_read(tuples.len());
            info!(
            topic = %provider.topic,
            environment = %provider.environment,
                tuples = tuples.len(),
                "feedback delivered"
            );
        }
        Err(err) => {
            // The provider went away before reading: keep the tuples for its next visit.
            warn!(%err, tuples = tuples.len(), "feedback write failed; tuples kept");
            hub.restore_feedback(&provider.topic, provider.environment, tuples);
        }
    }
}
