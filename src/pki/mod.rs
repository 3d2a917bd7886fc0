//! Identity: who a provider is and how it proves it.
//!
//! - [`certs`] (re-exported here): the simulator's private PKI, minted with rcgen and
//!   stored in `certs/` with its manifest, and Apple's provider-certificate profile.
//! - [`jwt`]: ES256 provider tokens for token-based auth on the HTTP/2 API.
//!
//! Nothing here does I/O on sockets or knows tokio; rustls configurations built from this
//! material live one layer up, in [`crate::tls`].

pub mod certs;
pub mod jwt;

pub use certs::*;
