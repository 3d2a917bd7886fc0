//! Step 3 of the registration flow: a simulated device hands its new token to the
//! provider's app server by POSTing JSON to a URL the user configures (`--register-url`).
//!
//! Plain `http://` only: the app server under test runs on the same machine. The request
//! goes through hyper-util's client, which resolves the host, connects (IPv4, IPv6 literals
//! such as `http://[::1]:8080/` and names alike) and writes the `Host` header from the URL.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
    // One connection per POST, closed after it: tokens are posted rarely, and an idle
    // pooled connection would outlive the device that opened it.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new());
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| failed(e.to_string()))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = response.status().as_u16();
        // Read the body so the server sees a complete exchange.
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(WEBHOOK_TIMEOUT, work)
        .await
        .map_err(|_| WebhookError::Timeout(url.to_owned()))?
}

/// An error with its causes (`client error (Connect): tcp connect error: Connection
/// refused`): hyper-util's top-level message alone does not say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_url_accepts_http_with_a_host() {
        for url in [
            "http://127.0.0.1:8080/register",
            "http://[::1]:8080/path",
            "http://localhost/",
            "http://[::1]/",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn check_url_names_what_is_wrong() {
        let cases = [
            ("https://127.0.0.1/", "only http:// URLs are supported"),
            ("127.0.0.1:8080", "only http:// URLs are supported"),
            ("/register", "only http:// URLs are supported"),
            ("http://[::1/", "invalid"),
        ];
        for (url, why) in cases {
            let err = check_url(url).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("bad register URL {url:?}: ")),
                "{text}"
            );
            assert!(text.contains(why), "{text}");
        }
    }
}
