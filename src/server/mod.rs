//! Everything that accepts connections: one module per endpoint, all built on the same
//! accept loop.
//!
//! - [`accept`]: the accept loop every TLS endpoint shares (admission: the handshake budget,
//!   the connection limit and the unauthenticated share; the handshake deadline inside the
//!   connection's task, a span per connection, shutdown and its abort).
//! - [`write_deadline`]: the deadline on every write to a peer.
//! - [`gateway`]: the legacy binary provider API (commands 0, 1, 2; error response 8).
//! - [`feedback`]: the feedback service (tuples of uninstalled apps, once).
//! - [`http2`]: the HTTP/2 provider API (certificate and token auth).
//! - [`devices`]: the endpoint simulated devices hold their persistent connections to.
//! - [`control`]: the control API (HTTP/1.1 and JSON, plain TCP, loopback only): health,
//!   the delivery log and waiting on it, the feedback lists.
//! - `provider` (crate-internal): who a provider connection is (topic and environment from
//!   its certificate), shared by the gateway and the feedback service.
//!
//! Each endpoint's `run` takes an already-bound listener, the shared [`crate::hub::Hub`]
//! and a shutdown token; [`crate::sim::Simulator`] wires them together.

pub mod accept;
pub mod control;
pub mod devices;
pub mod feedback;
pub mod gateway;
pub mod http2;
mod provider;
pub mod write_deadline;
