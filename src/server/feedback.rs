//! The feedback service (Apple's `feedback.push.apple.com:2196`).
//!
//! A provider connects with the same client certificate as for the gateway and sends
//! nothing. The service writes every (timestamp, token) tuple recorded for the
//! certificate's topic and environment since the last read, clears them, and closes the
//! connection (Apple's behaviour is disputed here, see the spec's open question 6; closing
//! at once is what most clients expect and lets them read until EOF). A fault with `hold_ms`
//! (`POST /v1/faults`) makes an empty read hold the connection open instead, the other
//! reading of that question.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::{Effect, FaultOn, Hit, Hub, Phase, Probe, ProviderEndpoint};
use crate::server::accept::{self, Endpoint, Transport};
use crate::server::provider::{identify, Connected, IdentifyError};
use crate::settings::Settings;

/// Serves the feedback service on `listener` until `endpoint.shutdown` fires.
pub async fn run(listener: TcpListener, endpoint: Endpoint, hub: Hub, settings: Arc<Settings>) {
    let shutdown = endpoint.shutdown.clone();
    // A certificate is required, so every peer is authenticated at the handshake. Writes
    // have the accept loop's deadline: a provider that stops reading is cut off and its
    // tuples kept for its next visit.
    accept::serve(listener, endpoint, move |stream, peer, _admission| {
        // Out of its box here, outside the future, so that the box is freed now.
        let stream = *stream;
        let hub = hub.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        async move { handle(stream, peer, hub, settings, shutdown).await }
    })
    .await;
}

async fn handle(
    mut stream: TlsStream<Transport>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    let provider = identify(stream.get_ref().1, &settings);
    let identity = match &provider {
        Ok(p) => p.topic.to_string(),
        Err(IdentifyError::NoCertificate) => "no certificate".to_owned(),
        Err(_) => "unreadable certificate".to_owned(),
    };
    // Logs `provider_connected` now and `provider_disconnected` on every way out.
    let connected = Connected::new(&hub, ProviderEndpoint::Feedback, peer, identity);
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            // The feedback protocol has no error message; closing is the only answer.
            warn!(%peer, %reason, "provider certificate refused");
            let _ = stream.shutdown().await;
            return;
        }
    };
    let tuples = hub.take_feedback(&provider.topic, provider.environment);
    if tuples.is_empty() {
        let hit = hub.fault(&Probe {
            on: FaultOn::Feedback,
            phase: Phase::Connection,
            token: None,
            topic: Some(&provider.topic),
            connection: Some(connected.id),
            serial: None,
        });
        if let Some(Hit {
            id,
            effect: Effect::Hold(ms),
        }) = hit
        {
            info!(fault = %id, ms, "fault: nothing to send, connection held open");
            hold(&mut stream, Duration::from_millis(ms), &shutdown).await;
        }
    }
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

/// Most bytes read and thrown away while a connection is held: a feedback client sends
/// nothing, so one that does is not waited on further.
const HOLD_MAX_BYTES: usize = 64 * 1024;

/// Holds a connection with nothing to send open (a fault's `hold_ms`, spec §9 item 6):
/// until `limit` passes, the provider closes (or sends too much), or the simulator shuts
/// down.
async fn hold(stream: &mut TlsStream<Transport>, limit: Duration, shutdown: &CancellationToken) {
    let read = async {
        let mut sink = [0u8; 4096];
        let mut discarded = 0usize;
        while discarded < HOLD_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::timeout(limit, read) => {}
    }
}
