//! The other side of every endpoint: provider clients (binary gateway, feedback service,
//! HTTP/2 API), the simulated device, and the webhook a device posts its tokens to. Used by
//! the CLI's `push`, `feedback` and `device` commands and by the tests.
//!
//! Clients depend only on `protocol`, `pki`, `tls`, `connection` and `clock`, never on the
//! hub or the endpoints: they speak to the simulator over sockets exactly as an outside
//! program would (the layering test in `tests/layering.rs` keeps it so).

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub mod binary;
pub mod device;
pub mod feedback;
pub mod files;
pub mod http2;
pub mod webhook;

pub use binary::{BinaryClient, GatewayAnswer};
pub use feedback::read_feedback;
pub use files::{CertsDir, ProviderTlsFiles};

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
