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
//! The folders are the layers; each knows only the ones below it (a test,
//! `tests/layering.rs`, reads every `use crate::…` and keeps it so):
//!
//! ```text
//! protocol/   pure codecs, no I/O: binary frames, error responses, feedback tuples, the
//!             device protocol, payload checks, device tokens, the raw HTTP/2 frames we write
//! clock, settings   the simulator's clock (tests advance it); plain configuration values
//! progress    progress bars for long work (a fleet's start, the load generator), drawn
//!             only on a terminal
//! config      `serve`'s settings from a TOML file, `APNS_SIM_*` variables and flags
//! pki/        identity: minting and storing certificates and keys, Apple's certificate
//!             profile, ES256 provider tokens (JWT)
//! tls         rustls configurations built from the PKI
//! connection  a framed connection over any async stream (used by servers and clients)
//! store/      durable state: one SQLite file (WAL) of rows, written by one thread in group
//!             commits; knows nothing of the hub's rules
//! hub/        the routing core: tokens, sessions, store-and-forward, feedback, delivery log
//! server/     everything that accepts connections: the accept loop, gateway, feedback,
//!             HTTP/2 API, device endpoint, control API (`server/control/`: HTTP and JSON
//!             over the hub for test suites)
//! client/     the other side of every endpoint: binary, feedback and HTTP/2 providers, the
//!             simulated device, the webhook; depends only on the layers below the hub
//! sim         [`sim::Simulator`]: builds the hub and starts the endpoints on given listeners
//! scenario/   scenario files: the world, a timeline and expectations; their check (file,
//!             line, field), a self-contained run with verdicts, JSON and JUnit reports
//! sandbox/    `apns-sim run` (Linux): the simulator and COMMAND in namespaces of their own
//!             where Apple's host names, ports and trust are the simulator's
//! tour        `apns-sim tour`: the push flow narrated step by step on its own simulator
//! loadgen/    `apns-sim bench`: the load generator (providers, device fleets, HDR latency,
//!             the simulator's CPU and memory) against a simulator or the anchors
//! ```
//!
//! The command line lives in the binary (`src/main.rs` and `src/cli/`), which parses
//! arguments into this library's settings types and calls it.

#![forbid(unsafe_code)]

pub mod actors;
pub mod client;
pub mod clock;
pub mod config;
pub mod connection;
pub mod hub;
pub mod loadgen;
pub mod pki;
pub mod progress;
pub mod protocol;
#[cfg(target_os = "linux")]
pub mod sandbox;
pub mod scenario;
pub mod server;
pub mod settings;
pub mod sim;
pub mod store;
pub mod tls;
pub mod tour;

// The default ports live with the rest of `serve`'s defaults, in the configuration layer.
pub use config::{
    DEFAULT_CONTROL_PORT, DEFAULT_DEVICE_PORT, DEFAULT_FEEDBACK_PORT, DEFAULT_GATEWAY_PORT,
    DEFAULT_HTTP2_PORT,
};
