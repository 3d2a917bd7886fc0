//! Identity: who a provider is and how it proves it.
//!
//! - `store` (re-exported here): the simulator's private PKI as a value, [`Pki`], and as
//!   the `certs/` directory with its `manifest.json`; [`Pki::read_auth_keys`] re-reads just
//!   the keys (and which team owns which bundle) while the simulator runs.
//! - `mint` (its constants re-exported here): minting the CA, the server certificate,
//!   provider certificates and `.p8` auth keys with rcgen.
//! - [`profile`]: Apple's provider certificate profile (OIDs, CN prefixes, the topic-list
//!   extension, topic suffixes) and the provider identity read from a certificate.
//! - [`jwt`]: ES256 provider tokens for token-based auth on the HTTP/2 API.
//! - [`export`]: the store's credentials as provider libraries load them (PEM, `.p12`,
//!   the CA bundle, the `.p8` with its ids), encoded in memory.
//!
//! `profile` uses nothing else here; `mint` shapes certificates from `profile` (and reports
//! through the store's [`CertError`], the one error of minting and storing); `store` keeps
//! what `mint` makes; `jwt` signs with the store's keys. Nothing here does I/O on sockets
//! or knows tokio or rustls configurations; those live one layer up, in [`crate::tls`].

pub mod export;
pub mod jwt;
mod mint;
pub mod profile;
mod store;

pub use mint::{CA_COMMON_NAME, SERVER_NAMES};
pub use profile::{
    CertEnvironment, UnknownEnvironment, CN_PREFIX_PRODUCTION, CN_PREFIX_SANDBOX,
    CN_PREFIX_UNIVERSAL,
};
pub use store::{
    AuthKey, CertError, FileRole, KeyFolder, Manifest, ManifestEntry, Pki, ProviderCert,
    DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC, DEMO_TOPICS, MANIFEST_FILE, MANIFEST_VERSION,
};
