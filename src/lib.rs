//! apns-sim: a full simulator of Apple Push Notification service.
//!
//! It runs Apple's provider-facing services — the legacy binary gateway (commands 0, 1, 2
//! and error response 8), the feedback service and the HTTP/2 provider API — beside a device
//! endpoint where simulated devices hold persistent TLS connections, register apps, receive
//! notifications and report uninstalled apps. Everything a provider can observe from Apple
//! (status codes, reason strings, feedback tuples, 410 timestamps) is reproduced so that
//! provider code can be tested offline.
//!
//! # Layout
//!
//! - [`protocol`]: pure codecs (no I/O): binary frames, error responses, feedback tuples,
//!   the device protocol, payload checks, device tokens.
//! - [`certs`], [`tls`], [`jwt`]: minting and loading certificates and keys; rustls
//!   configurations; the provider identity in a client certificate; ES256 provider tokens.
//! - [`connection`]: a framed connection over any async stream, owning its buffers.
//! - [`server`]: the accept loop every endpoint shares (connection limit, handshake deadline).
//! - [`gateway`], [`feedback`], [`http2`], [`devices`]: one module per endpoint.
//! - [`hub`]: the routing core (tokens, sessions, store-and-forward, feedback, delivery log).
//! - [`sim`]: [`sim::Simulator`], which starts everything on given listeners.
//! - [`simdevice`], [`client`], [`client_http2`], [`webhook`]: the device and provider sides,
//!   used by the CLI and the tests.
//! - [`scenario`]: declarative device fleets (the demo fleet of `apns-sim serve`).
//! - [`commands`]: what each CLI subcommand does (`main.rs` only parses arguments).

#![forbid(unsafe_code)]

pub mod certs;
pub mod client;
pub mod client_http2;
pub mod clock;
pub mod commands;
pub mod connection;
pub mod devices;
pub mod feedback;
pub mod gateway;
pub mod http2;
pub mod hub;
pub mod jwt;
pub mod protocol;
pub mod scenario;
pub mod server;
pub mod settings;
pub mod sim;
pub mod simdevice;
pub mod tls;
pub mod webhook;

/// Default port of the binary gateway (Apple's `gateway.push.apple.com:2195`).
pub const DEFAULT_GATEWAY_PORT: u16 = 2195;
/// Default port of the feedback service (Apple's `feedback.push.apple.com:2196`).
pub const DEFAULT_FEEDBACK_PORT: u16 = 2196;
/// Default port of the HTTP/2 provider API (Apple's alternative port 2197).
pub const DEFAULT_HTTP2_PORT: u16 = 2197;
/// Default port of the device endpoint (5223, the port real devices use for APNs).
pub const DEFAULT_DEVICE_PORT: u16 = 5223;
