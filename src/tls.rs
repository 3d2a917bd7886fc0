//! rustls configurations for every endpoint, built once at startup.
//!
//! Each endpoint gets an `Arc<ServerConfig>` from this module and clones a `TlsAcceptor`
//! per connection; the handshake itself runs inside the connection task with a deadline.
//! Every config is built with the `ring` provider explicitly, so nothing depends on a
//! process-wide default provider having been installed. Clients get a `ClientConfig` from
//! [`client_config`], optionally presenting a [`ClientIdentity`].
//!
//! After the handshake, [`peer_identity`] hands the peer's leaf certificate to
//! [`crate::pki::profile`], which reads who the provider is (§1.8 of the APNs reference).

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::profile::{provider_identity, IdentityError, ProviderIdentity};
use crate::pki::{Pki, ProviderCert};

/// ALPN protocol id of HTTP/2, the only protocol the HTTP/2 provider API speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors building a TLS configuration or reading PEM material for one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls rejected the configuration (e.g. a key that does not match its certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no usable trust anchor).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// PEM input was malformed or held no object of the wanted kind.
    #[error("PEM input: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// PEM input held no certificate where at least one is needed.
    #[error("PEM input holds no certificate")]
    NoCertificate,
}

/// A client certificate chain and key, for [`client_config`].
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads a certificate chain (one or more `CERTIFICATE` blocks) and a private key
    /// (PKCS#8, PKCS#1 or SEC1) from PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientIdentity, TlsError> {
        let chain = certs_from_pem(cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)?;
        Ok(ClientIdentity { chain, key })
    }

    /// The identity of a provider certificate minted by [`Pki`].
    pub fn from_provider(provider: &ProviderCert) -> Result<ClientIdentity, TlsError> {
        ClientIdentity::from_pem(provider.cert_pem.as_bytes(), provider.key_pem.as_bytes())
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The crypto provider every config is built with.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding only the simulator's CA.
fn pki_roots(pki: &Pki) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der())?;
    Ok(roots)
}

/// Every certificate in a PEM input; at least one.
fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// Settings shared by every server config.
fn finish_server(mut config: ServerConfig, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Several old APNs clients mishandle TLS 1.3 session tickets, and a simulator gains
    // nothing from resumption.
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// Config for the binary gateway and feedback ports: a client certificate signed by the
/// simulator's CA is REQUIRED (the binary API has no other auth); TLS 1.2 and 1.3.
pub fn provider_server_config(pki: &Pki, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ring_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(pki_roots(pki)?), provider.clone())
            .build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())?;
    Ok(finish_server(config, alpn))
}

/// Config for the HTTP/2 provider API: a client certificate is OPTIONAL (providers using
/// JWT auth present none, but one that is presented must chain to the CA); ALPN `h2`, and
/// clients offering no ALPN at all are still accepted; TLS 1.2+.
pub fn http2_server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ring_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(pki_roots(pki)?), provider.clone())
            .allow_unauthenticated()
            .build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())?;
    Ok(finish_server(config, &[ALPN_H2]))
}

/// Config for the simulated-device port: server authentication only.
pub fn device_server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pki.server_chain(), pki.server_key())?;
    Ok(finish_server(config, &[]))
}

/// Client config trusting the CA certificate(s) in `ca_pem`, optionally presenting a
/// client certificate, offering `alpn` (empty: no ALPN extension).
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<ClientIdentity>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        roots.add(cert)?;
    }
    client_config_with_roots(roots, identity, alpn)
}

/// [`client_config`] with a ready-made root store.
pub fn client_config_with_roots(
    roots: RootCertStore,
    identity: Option<ClientIdentity>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// The identity of a connected peer from `peer_certificates()`: `Ok(None)` when the peer
/// presented no certificate (JWT auth on HTTP/2), else the leaf's identity.
pub fn peer_identity(
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<Option<ProviderIdentity>, IdentityError> {
    match peer_certificates.and_then(|chain| chain.first()) {
        Some(leaf) => provider_identity(leaf).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertEnvironment, DEFAULT_TEAM_ID, DEFAULT_TOPIC};

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    #[test]
    fn no_tls13_tickets() {
        let pki = Pki::generate().unwrap();
        assert_eq!(
            provider_server_config(&pki, &[])
                .unwrap()
                .send_tls13_tickets,
            0
        );
        let h2 = http2_server_config(&pki).unwrap();
        assert_eq!(h2.send_tls13_tickets, 0);
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(device_server_config(&pki).is_ok());
    }

    #[test]
    fn client_identity_from_pem_errors() {
        assert!(matches!(
            ClientIdentity::from_pem(b"", b""),
            Err(TlsError::NoCertificate)
        ));
        let pki = Pki::generate().unwrap();
        let cert = pki.default_provider().cert_pem.as_bytes();
        assert!(matches!(
            ClientIdentity::from_pem(cert, b"nope"),
            Err(TlsError::Pem(_))
        ));
        assert!(client_config(b"not pem", None, vec![]).is_err());
    }

    /// Runs one handshake over an in-memory pipe and a byte exchange; returns the server's
    /// view of the client's identity, or the first error.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        sni: &str,
    ) -> Result<(Option<ProviderIdentity>, Option<Vec<u8>>), String> {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let server_task = async move {
            let mut stream = TlsAcceptor::from(server)
                .accept(server_io)
                .await
                .map_err(|e| format!("server: {e}"))?;
            let (_, conn) = stream.get_ref();
            let identity = peer_identity(conn.peer_certificates()).map_err(|e| e.to_string())?;
            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
            assert_eq!(conn.server_name(), Some(sni));
            stream.write_all(b"ok").await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((identity, alpn))
        };
        let server_name = ServerName::try_from(sni.to_owned()).unwrap();
        let client_task = async move {
            let mut stream = TlsConnector::from(client)
                .connect(server_name, client_io)
                .await
                .map_err(|e| format!("client: {e}"))?;
            let mut buf = [0u8; 2];
            stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| format!("client read: {e}"))?;
            Ok::<_, String>(buf)
        };
        let (server_result, client_result) = tokio::join!(server_task, client_task);
        let (identity, alpn) = server_result?;
        assert_eq!(&client_result?, b"ok");
        Ok((identity, alpn))
    }

    fn provider_client(pki: &Pki, identity: Option<ClientIdentity>) -> Arc<ClientConfig> {
        client_config(pki.ca_cert_pem().as_bytes(), identity, vec![]).unwrap()
    }

    #[tokio::test]
    async fn provider_handshake_yields_identity() {
        let pki = Pki::generate().unwrap();
        let server = provider_server_config(&pki, &[]).unwrap();
        let identity = ClientIdentity::from_provider(pki.default_provider()).unwrap();
        let client = provider_client(&pki, Some(identity));
        let (peer, _) = handshake(server, client, "gateway.push.apple.com")
            .await
            .unwrap();
        let peer = peer.expect("client certificate");
        assert_eq!(peer.topic, DEFAULT_TOPIC);
        assert_eq!(peer.environment, CertEnvironment::Universal);
        assert_eq!(peer.topics.len(), 3);
    }

    #[tokio::test]
    async fn provider_handshake_over_tls12() {
        let pki = Pki::generate().unwrap();
        let server = provider_server_config(&pki, &[]).unwrap();
        let identity = ClientIdentity::from_provider(pki.default_provider()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der()).unwrap();
        let client = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.chain, identity.key)
            .unwrap();
        let (peer, _) = handshake(server, Arc::new(client), "localhost")
            .await
            .unwrap();
        assert_eq!(peer.unwrap().topic, DEFAULT_TOPIC);
    }

    #[tokio::test]
    async fn provider_handshake_requires_a_certificate() {
        let pki = Pki::generate().unwrap();
        let server = provider_server_config(&pki, &[]).unwrap();
        let client = provider_client(&pki, None);
        let err = handshake(server, client, "localhost").await.unwrap_err();
        assert!(err.starts_with("server:"), "{err}");
    }

    #[tokio::test]
    async fn provider_handshake_refuses_foreign_ca() {
        let pki = Pki::generate().unwrap();
        let other = Pki::generate().unwrap();
        let server = provider_server_config(&pki, &[]).unwrap();
        let foreign = ClientIdentity::from_provider(other.default_provider()).unwrap();
        let client = provider_client(&pki, Some(foreign));
        let err = handshake(server, client, "localhost").await.unwrap_err();
        assert!(err.starts_with("server:"), "{err}");
    }

    #[tokio::test]
    async fn http2_accepts_jwt_clients_and_certificates() {
        let pki = Pki::generate().unwrap();
        let server = http2_server_config(&pki).unwrap();
        let jwt_client =
            client_config(pki.ca_cert_pem().as_bytes(), None, vec![ALPN_H2.to_vec()]).unwrap();
        let (peer, alpn) = handshake(server.clone(), jwt_client, "api.push.apple.com")
            .await
            .unwrap();
        assert_eq!(peer, None);
        assert_eq!(alpn.as_deref(), Some(ALPN_H2));

        let identity = ClientIdentity::from_provider(pki.default_provider()).unwrap();
        let cert_client = provider_client(&pki, Some(identity));
        let (peer, alpn) = handshake(server, cert_client, "api.sandbox.push.apple.com")
            .await
            .unwrap();
        assert_eq!(peer.unwrap().topic, DEFAULT_TOPIC);
        assert_eq!(alpn, None);
    }

    #[tokio::test]
    async fn reloaded_ca_still_signs_verifiable_providers() {
        let dir = std::env::temp_dir().join(format!(
            "apns-sim-tls-reload-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Pki::load_or_create(&dir).unwrap();
        let mut reloaded = Pki::load_or_create(&dir).unwrap();
        assert_eq!(first.ca_cert_pem(), reloaded.ca_cert_pem());
        let minted = reloaded
            .mint_provider("com.later", CertEnvironment::Sandbox, DEFAULT_TEAM_ID)
            .unwrap()
            .clone();

        // Verified by a server built from the ORIGINAL in-memory PKI's CA.
        let server = provider_server_config(&first, &[]).unwrap();
        let client = provider_client(
            &first,
            Some(ClientIdentity::from_provider(&minted).unwrap()),
        );
        let (peer, _) = handshake(server, client, "localhost").await.unwrap();
        let peer = peer.unwrap();
        assert_eq!(peer.topic, "com.later");
        assert_eq!(peer.environment, CertEnvironment::Sandbox);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
