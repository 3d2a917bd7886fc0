//! Tunable limits and defaults shared by the endpoints. Every bound the simulator enforces
//! on connections and time lives here, with the reason for its default.

use std::time::Duration;

use crate::protocol::Environment;

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
    /// A provider connection that sends nothing for this long is closed. Apple keeps
    /// connections for hours and suggests a PING after an hour idle; an hour it is.
    pub provider_idle_timeout: Duration,
    /// How often devices must ping. A device silent for three heartbeats is dropped.
    pub device_heartbeat: Duration,
    /// How long to keep reading (and discarding) after an error response, so the closing
    /// socket sends FIN rather than RST and the provider gets to read the 6 bytes.
    pub linger: Duration,
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
            device_heartbeat: Duration::from_secs(30),
            linger: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// A device that sends nothing (not even a ping) for this long is dropped.
    pub fn device_idle_timeout(&self) -> Duration {
        self.device_heartbeat * 3
    }
}
