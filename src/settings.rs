//! Tunable limits and defaults shared by the endpoints. Every bound the simulator enforces
//! on connections and time lives here, with the reason for its default.

use std::str::FromStr;
use std::time::Duration;

use crate::protocol::Environment;

/// A per-token push limit: at most `pushes` notifications to one device token within `per`.
///
/// Apple throttles providers that push too often to the same token (HTTP/2 answers 429
/// `TooManyRequests`; the binary API dropped them silently) without publishing the numbers, so
/// the simulator leaves it off unless asked, for testing a provider's handling of 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Pushes allowed within the window.
    pub pushes: u32,
    /// The sliding window.
    pub per: Duration,
}

/// A `--token-rate-limit` value that is not `PUSHES/SECONDS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not PUSHES/SECONDS with both above 0 and PUSHES at most {MAX_RATE_LIMIT_PUSHES}, e.g. 10/60")]
pub struct BadRateLimit(pub String);

impl FromStr for RateLimit {
    type Err = BadRateLimit;

    /// Parses `PUSHES/SECONDS`, e.g. `10/60`.
    fn from_str(text: &str) -> Result<Self, BadRateLimit> {
        let bad = || BadRateLimit(text.to_owned());
        let (pushes, secs) = text.split_once('/').ok_or_else(bad)?;
        let pushes: u32 = pushes.trim().parse().map_err(|_| bad())?;
        let secs: u64 = secs.trim().parse().map_err(|_| bad())?;
        if pushes == 0 || secs == 0 || pushes > MAX_RATE_LIMIT_PUSHES {
            return Err(bad());
        }
        Ok(RateLimit {
            pushes,
            per: Duration::from_secs(secs),
        })
    }
}

/// Largest `pushes` a [`RateLimit`] may allow: the hub remembers that many push times per
/// token, so this bounds the memory the limit itself costs.
pub const MAX_RATE_LIMIT_PUSHES: u32 = 10_000;

/// Limits and defaults for one simulator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environment for universal certificates when the TLS server name names no Apple host
    /// (Apple's hosts pin it; `localhost` does not). Sandbox, like a developer's first test.
    pub default_environment: Environment,
    /// Provider connections per endpoint (gateway, feedback, HTTP/2). Providers are told to
    /// keep few long-lived connections; 1,000 leaves room for load tests and stays far below
    /// the 20,000 file descriptors a process may hold here.
    pub max_provider_connections: usize,
    /// Device connections. Each costs one file descriptor and ~12 KB; 15,000 keeps the whole
    /// simulator under the 20,000 descriptors a process may hold on these machines.
    pub max_device_connections: usize,
    /// Deadline for the TLS handshake (slow-loris defence).
    pub handshake_timeout: Duration,
    /// Deadline for a device's hello after the handshake.
    pub hello_timeout: Duration,
    /// A binary provider connection that sends nothing for this long is closed. Apple keeps
    /// connections for hours; an hour it is.
    pub provider_idle_timeout: Duration,
    /// An HTTP/2 provider connection that sends nothing (not even a PING) for this long gets
    /// `GOAWAY {"reason":"IdleTimeout"}`. Apple suggests a PING after an hour idle (spec §4.2),
    /// so the deadline must lie well past one hour: at exactly one hour a client that follows
    /// the advice races the deadline and loses whenever its timer fires a moment late. Two
    /// hours leaves a full hour for late timers (a suspended VM, a busy event loop) and still
    /// frees an abandoned connection's slot the same afternoon.
    pub http2_idle_timeout: Duration,
    /// An HTTP/2 `apns-id` with uppercase hex digits is accepted and echoed as sent (on), or
    /// refused with `BadMessageId` (off). Apple documents the lowercase form but itself
    /// answers with uppercase ids, and Swift's `UUID().uuidString` is uppercase; the evidence
    /// is in the docs of `server/http2/request.rs`. On, so that a correct Swift provider passes.
    pub accept_uppercase_apns_id: bool,
    /// How often devices must ping. A device silent for three heartbeats is dropped.
    pub device_heartbeat: Duration,
    /// How long to keep reading (and discarding) after an error response, so the closing
    /// socket sends FIN rather than RST and the provider gets to read the 6 bytes.
    pub linger: Duration,
    /// An HTTP/2 request whose body has not fully arrived this long after its headers gets
    /// 400 `IdleTimeout`, so a stalled stream cannot hold its slot and buffer for ever. A
    /// notification body is at most 5 KiB: ten seconds is generous on any link.
    pub request_body_timeout: Duration,
    /// Per-token push limit (HTTP/2: 429 `TooManyRequests`); off by default.
    pub token_rate_limit: Option<RateLimit>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_environment: Environment::Sandbox,
            max_provider_connections: 1_000,
            max_device_connections: 15_000,
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            provider_idle_timeout: Duration::from_secs(3600),
            http2_idle_timeout: Duration::from_secs(2 * 3600),
            accept_uppercase_apns_id: true,
            device_heartbeat: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            request_body_timeout: Duration::from_secs(10),
            token_rate_limit: None,
        }
    }
}

impl Settings {
    /// A device that sends nothing (not even a ping) for this long is dropped.
    pub fn device_idle_timeout(&self) -> Duration {
        self.device_heartbeat * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_parses_and_names_bad_input() {
        assert_eq!(
            "10/60".parse(),
            Ok(RateLimit {
                pushes: 10,
                per: Duration::from_secs(60)
            })
        );
        for bad in ["10", "0/60", "10/0", "x/60", "10/y", "99999999/1"] {
            let err = bad.parse::<RateLimit>().unwrap_err();
            assert_eq!(err, BadRateLimit(bad.to_owned()));
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
