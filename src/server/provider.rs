//! Who a provider connection is: the topic and environment the binary gateway and the
//! feedback service both read from the client certificate and the TLS server name.
//!
//! Both endpoints need the same answer, so it lives here rather than in either of them
//! (the HTTP/2 API reads the same certificate fields but also serves token auth, so it
//! keeps its own rules in [`crate::server::http2`]).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConnection;

use crate::hub::{Hub, ProviderEndpoint};

use crate::pki::profile::{self, EnvMismatch, IdentityError};
use crate::protocol::error_response::Status;
use crate::protocol::Environment;
use crate::settings::Settings;

/// Topic and environment of an authenticated provider connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Provider {
    /// The certificate's topic (bundle id): the only topic a binary provider may push to.
    /// Shared, so that each notification of the connection names it by a reference count
    /// rather than a copy (issue 10: topics interned end to end).
    pub(crate) topic: Arc<str>,
    /// The environment whose tokens this connection may reach.
    pub(crate) environment: Environment,
}

/// Why a provider connection cannot be identified. The text goes into the log line that
/// refuses the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdentifyError {
    /// The provider presented no client certificate: it must connect with the one the
    /// simulator minted for its app.
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate names no topic or environment, or does not parse.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A sandbox-only or production-only certificate reached the other environment's host
    /// name.
    #[error(transparent)]
    Environment(#[from] EnvMismatch),
}

impl IdentifyError {
    /// The binary gateway's answer. Apple derives the topic from the certificate, so a
    /// certificate it cannot read (or one for the other environment's host) gets status 3,
    /// Missing topic.
    pub(crate) fn status(&self) -> Status {
        match self {
            IdentifyError::NoCertificate
            | IdentifyError::Identity(_)
            | IdentifyError::Environment(_) => Status::MissingTopic,
        }
    }
}

/// Reads the provider's identity from its certificate and the TLS server name; a universal
/// certificate on a host that names no environment gets `settings.default_environment`.
pub(crate) fn identify(
    session: &ServerConnection,
    settings: &Settings,
) -> Result<Provider, IdentifyError> {
    let cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(IdentifyError::NoCertificate)?;
    let identity = profile::provider_identity(cert)?;
    let environment = profile::connection_environment(
        &identity,
        session.server_name(),
        settings.default_environment,
    )?;
    Ok(Provider {
        topic: Arc::from(identity.topic),
        environment,
    })
}

/// A provider connection the hub knows of: created when the connection is accepted (the
/// hub logs `provider_connected` and hands out its number), dropped on every way out of the
/// connection task (the hub logs `provider_disconnected`).
#[derive(Debug)]
pub(crate) struct Connected {
    /// The hub that numbered it.
    hub: Hub,
    /// Its number: faults match it (`match.connection`).
    pub(crate) id: u64,
    /// Its endpoint.
    endpoint: ProviderEndpoint,
}

impl Connected {
    /// Tells the hub of a new connection from `peer`, identified as `identity`.
    pub(crate) fn new(
        hub: &Hub,
        endpoint: ProviderEndpoint,
        peer: SocketAddr,
        identity: String,
    ) -> Self {
        Connected {
            hub: hub.clone(),
            id: hub.provider_connected(endpoint, peer, identity),
            endpoint,
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.hub.provider_disconnected(self.id, self.endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertEnvironment;

    #[test]
    fn every_refusal_is_missing_topic_and_names_the_problem() {
        let cases = [
            (IdentifyError::NoCertificate, "no client certificate"),
            (
                IdentifyError::Identity(IdentityError::NoTopic),
                "names no topic",
            ),
            (
                IdentifyError::Environment(EnvMismatch {
                    certificate: CertEnvironment::Sandbox,
                    requested: Environment::Production,
                }),
                "cannot connect to the production environment",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.status(), Status::MissingTopic);
            assert!(error.to_string().contains(text), "{error}");
        }
    }
}
