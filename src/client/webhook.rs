//! Step 3 of the registration flow: a simulated device hands its new token to the
//! provider's app server by POSTing JSON to a URL the user configures (`--register-url`).
//!
//! Plain `http://` only: the app server under test runs on the same machine.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The whole POST (connect, send, read the status) must finish within this, so a hung app
/// server cannot stall a device.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a POST failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an `http://host:port/path` URL.
    #[error("bad register URL {url:?}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// Connecting, sending or reading failed.
    #[error("POST {url} failed: {why}")]
    Failed {
        /// The URL.
        url: String,
        /// The error.
        why: String,
    },
    /// No answer within [`WEBHOOK_TIMEOUT`].
    #[error("POST {0} timed out")]
    Timeout(String),
}

/// Checks a register URL up front, so a typo is reported at start rather than per token.
pub fn check_url(url: &str) -> Result<http::Uri, WebhookError> {
    let bad = |why: &str| WebhookError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// URLs are supported"));
    }
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// POSTs `body` as JSON to `url` and returns the HTTP status code.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<u16, WebhookError> {
    let uri = check_url(url)?;
    let failed = |why: String| WebhookError::Failed {
        url: url.to_owned(),
        why,
    };
    let host = uri.host().unwrap_or("localhost").to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let request = http::Request::post(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| failed(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        // Read the body so the server sees a complete exchange.
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(WEBHOOK_TIMEOUT, work)
        .await
        .map_err(|_| WebhookError::Timeout(url.to_owned()))?
}
