//! rustls configurations for every endpoint, built once at startup, and the mapping from a
//! provider's client certificate to its topics and environment.
//!
//! Each endpoint gets an `Arc<ServerConfig>` from this module and clones a `TlsAcceptor`
//! per connection; the handshake itself runs inside the connection task with a deadline.
//! Every config is built with the `ring` provider explicitly, so nothing depends on a
//! process-wide default provider having been installed.
//!
//! After the handshake, [`peer_identity`] turns `peer_certificates()` into a
//! [`ProviderIdentity`] (topic, topic list, environment, team) following §1.8 of the APNs
//! reference, and [`connection_environment`] decides which environment the connection is
//! talking to, from the certificate and the SNI host name.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::{
    CertEnvironment, Pki, ProviderCert, CN_PREFIX_PRODUCTION, CN_PREFIX_SANDBOX,
    CN_PREFIX_UNIVERSAL, OID_APNS_DEVELOPMENT, OID_APNS_PRODUCTION, OID_APNS_TOPICS, OID_UID,
    TAG_SEQUENCE,
};
use crate::protocol::Environment;

/// ALPN protocol id of HTTP/2, the only protocol the HTTP/2 provider API speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Apple extension that also lists allowed topics (VoIP services certificates).
const OID_APNS_VOIP_TOPICS: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 4];

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

/// Why a client certificate cannot serve as a provider identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate is not valid X.509 DER.
    #[error("client certificate is not parsable X.509")]
    Unparsable,
    /// Neither the subject UID, a known CN prefix nor a topic extension names a topic.
    #[error("client certificate names no topic (no UID, no known CN prefix, no topic list)")]
    NoTopic,
    /// Neither Apple's environment OIDs nor a known CN prefix says which environment.
    #[error("client certificate names no APNs environment (no Apple OID, no known CN prefix)")]
    NoEnvironment,
    /// A topic-list extension (…6.3.6 or …6.3.4) is not the DER Apple uses.
    #[error("client certificate topic extension is malformed: {0}")]
    BadTopicExtension(&'static str),
}

/// What a topic in a certificate's topic list is for (the `kind` string in extension …6.3.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Regular app notifications (kind `app`).
    App,
    /// VoIP pushes, topic `<bundle id>.voip` (kind `voip`).
    Voip,
    /// watchOS complication pushes, topic `<bundle id>.complication` (kind `complication`).
    Complication,
    /// Any other kind string, kept so nothing a real certificate says is lost.
    Other(String),
}

impl TopicKind {
    /// Maps Apple's kind string to a kind.
    pub fn from_kind(kind: &str) -> TopicKind {
        match kind {
            "app" => TopicKind::App,
            "voip" => TopicKind::Voip,
            "complication" => TopicKind::Complication,
            other => TopicKind::Other(other.to_owned()),
        }
    }

    /// Guesses the kind from a topic's suffix, for list entries that carry no kind.
    fn from_topic_suffix(topic: &str) -> TopicKind {
        if topic.ends_with(".voip") {
            TopicKind::Voip
        } else if topic.ends_with(".complication") {
            TopicKind::Complication
        } else {
            TopicKind::App
        }
    }
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicKind::App => f.write_str("app"),
            TopicKind::Voip => f.write_str("voip"),
            TopicKind::Complication => f.write_str("complication"),
            TopicKind::Other(kind) => f.write_str(kind),
        }
    }
}

/// Who a provider is, as read from its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// The certificate's own topic: the subject UID, else the text after the CN prefix,
    /// else the first listed topic. The default `apns-topic` on HTTP/2 and the only topic on
    /// the binary API.
    pub topic: String,
    /// Every topic the certificate may push to, from extensions …6.3.6 and …6.3.4; just
    /// `[(topic, App)]` when it has neither.
    pub topics: Vec<(String, TopicKind)>,
    /// Environments the certificate is valid for: from Apple's OIDs …6.3.1/…6.3.2 (both
    /// means universal), else from the CN prefix.
    pub environment: CertEnvironment,
    /// The team id in the subject OU, when present.
    pub team_id: Option<String>,
    /// The subject CN, for logs (empty if absent).
    pub common_name: String,
}

impl ProviderIdentity {
    /// Whether the certificate may push to `topic`.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|(t, _)| t == topic)
    }
}

/// A provider certificate used in the wrong environment: Apple's `BadCertificateEnvironment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {certificate} certificate cannot connect to the {requested} environment")]
pub struct EnvMismatch {
    /// What the certificate is valid for.
    pub certificate: CertEnvironment,
    /// The environment the client asked for through its SNI host name.
    pub requested: Environment,
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

/// Reads topic, topic list, environment and team from a provider certificate. The
/// certificate comes from the network: any malformation is an error, never a panic.
pub fn provider_identity(cert: &CertificateDer<'_>) -> Result<ProviderIdentity, IdentityError> {
    let (_, x509) = X509Certificate::from_der(cert).map_err(|_| IdentityError::Unparsable)?;
    let subject = x509.subject();

    let uid_oid = oid_string(OID_UID);
    let uid = subject
        .iter()
        .flat_map(|rdn| rdn.iter())
        .find(|attr| attr.attr_type().to_id_string() == uid_oid)
        .and_then(|attr| attr.as_str().ok())
        .map(str::to_owned);
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|attr| attr.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let team_id = subject
        .iter_organizational_unit()
        .next()
        .and_then(|attr| attr.as_str().ok())
        .map(str::to_owned);

    let development = oid_string(OID_APNS_DEVELOPMENT);
    let production = oid_string(OID_APNS_PRODUCTION);
    let topic_lists = [
        oid_string(OID_APNS_TOPICS),
        oid_string(OID_APNS_VOIP_TOPICS),
    ];
    let (mut has_development, mut has_production) = (false, false);
    let mut listed: Vec<(String, TopicKind)> = Vec::new();
    for ext in x509.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == development {
            has_development = true;
        } else if oid == production {
            has_production = true;
        } else if topic_lists.contains(&oid) {
            for (topic, kind) in parse_topic_list(ext.value)? {
                if !listed.iter().any(|(t, _)| *t == topic) {
                    listed.push((topic, kind));
                }
            }
        }
    }

    let prefix = known_cn_prefix(&common_name);
    let environment = match (has_development, has_production) {
        (true, true) => CertEnvironment::Universal,
        (true, false) => CertEnvironment::Sandbox,
        (false, true) => CertEnvironment::Production,
        (false, false) => prefix
            .map(|(_, env)| env)
            .ok_or(IdentityError::NoEnvironment)?,
    };

    let topic = uid
        .filter(|t| !t.is_empty())
        .or_else(|| {
            prefix
                .map(|(p, _)| common_name[p.len()..].to_owned())
                .filter(|t| !t.is_empty())
        })
        .or_else(|| listed.first().map(|(t, _)| t.clone()))
        .ok_or(IdentityError::NoTopic)?;
    let topics = if listed.is_empty() {
        vec![(topic.clone(), TopicKind::App)]
    } else {
        listed
    };

    Ok(ProviderIdentity {
        topic,
        topics,
        environment,
        team_id,
        common_name,
    })
}

/// The known CN prefixes (§1.8) and the environment each implies.
const CN_PREFIXES: &[(&str, CertEnvironment)] = &[
    (CN_PREFIX_SANDBOX, CertEnvironment::Sandbox),
    (CN_PREFIX_PRODUCTION, CertEnvironment::Production),
    (
        "Apple Development Mac Push Services: ",
        CertEnvironment::Sandbox,
    ),
    (
        "Apple Production Mac Push Services: ",
        CertEnvironment::Production,
    ),
    (CN_PREFIX_UNIVERSAL, CertEnvironment::Universal),
    ("VoIP Services: ", CertEnvironment::Universal),
    ("WatchKit Services: ", CertEnvironment::Universal),
    ("Website Push ID: ", CertEnvironment::Universal),
    ("Pass Type ID: ", CertEnvironment::Universal),
];

fn known_cn_prefix(common_name: &str) -> Option<(&'static str, CertEnvironment)> {
    CN_PREFIXES
        .iter()
        .find(|(prefix, _)| common_name.starts_with(prefix))
        .copied()
}

/// Dotted form of an OID, for comparison with x509-parser's `to_id_string`.
fn oid_string(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Reads one DER TLV: `(tag, contents, rest)`. Only definite lengths up to 4 bytes of
/// length; `None` on anything truncated or malformed.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// Whether a DER tag is a string type a topic could be written in (UTF8String,
/// PrintableString, IA5String).
fn is_string_tag(tag: u8) -> bool {
    matches!(tag, 0x0C | 0x13 | 0x16)
}

/// Parses a topic-list extension value: a `SEQUENCE` in which each string is a topic and a
/// following `SEQUENCE { string }` gives its kind (absent: guessed from the suffix). Like
/// Pushy's mock, every string directly inside the outer sequence is a topic.
fn parse_topic_list(value: &[u8]) -> Result<Vec<(String, TopicKind)>, IdentityError> {
    let bad = IdentityError::BadTopicExtension;
    let (tag, mut body, rest) = read_tlv(value).ok_or(bad("truncated DER"))?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return Err(bad("value is not a single SEQUENCE"));
    }
    let mut topics: Vec<(String, TopicKind)> = Vec::new();
    let mut last_has_kind = true;
    while !body.is_empty() {
        let (tag, contents, rest) = read_tlv(body).ok_or(bad("truncated DER element"))?;
        body = rest;
        if is_string_tag(tag) {
            let topic = std::str::from_utf8(contents).map_err(|_| bad("topic is not UTF-8"))?;
            if topic.is_empty() {
                return Err(bad("empty topic"));
            }
            topics.push((topic.to_owned(), TopicKind::from_topic_suffix(topic)));
            last_has_kind = false;
        } else if tag == TAG_SEQUENCE {
            let (kind_tag, kind, _) = read_tlv(contents).ok_or(bad("truncated kind"))?;
            if !is_string_tag(kind_tag) {
                return Err(bad("kind is not a string"));
            }
            let kind = std::str::from_utf8(kind).map_err(|_| bad("kind is not UTF-8"))?;
            match topics.last_mut() {
                Some(last) if !last_has_kind => last.1 = TopicKind::from_kind(kind),
                _ => return Err(bad("kind without a preceding topic")),
            }
            last_has_kind = true;
        }
    }
    if topics.is_empty() {
        return Err(bad("no topics listed"));
    }
    Ok(topics)
}

/// Apple host names for the sandbox environment.
const SANDBOX_HOSTS: &[&str] = &[
    "gateway.sandbox.push.apple.com",
    "feedback.sandbox.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
];

/// Apple host names for the production environment.
const PRODUCTION_HOSTS: &[&str] = &[
    "gateway.push.apple.com",
    "feedback.push.apple.com",
    "api.push.apple.com",
];

/// The environment an SNI host name selects: Apple's sandbox/development hosts → sandbox,
/// its production hosts → production, anything else (localhost, an IP, no SNI) → `None`.
pub fn environment_for_server_name(sni: Option<&str>) -> Option<Environment> {
    let name = sni?.trim_end_matches('.');
    let is = |hosts: &[&str]| hosts.iter().any(|h| h.eq_ignore_ascii_case(name));
    if is(SANDBOX_HOSTS) {
        Some(Environment::Sandbox)
    } else if is(PRODUCTION_HOSTS) {
        Some(Environment::Production)
    } else {
        None
    }
}

/// The environment a certificate-authenticated connection talks to. A sandbox-only or
/// production-only certificate fixes it, and an SNI naming the other environment is an
/// [`EnvMismatch`] (`BadCertificateEnvironment`); a universal certificate follows the SNI,
/// else `default` (the endpoint's configured environment).
pub fn connection_environment(
    identity: &ProviderIdentity,
    sni: Option<&str>,
    default: Environment,
) -> Result<Environment, EnvMismatch> {
    let requested = environment_for_server_name(sni);
    match identity.environment.fixed_environment() {
        Some(fixed) => match requested {
            Some(requested) if requested != fixed => Err(EnvMismatch {
                certificate: identity.environment,
                requested,
            }),
            _ => Ok(fixed),
        },
        None => Ok(requested.unwrap_or(default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{topic_list_der, DEFAULT_TEAM_ID, DEFAULT_TOPIC};

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn der_of(provider: &ProviderCert) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(provider.cert_pem.as_bytes()).unwrap()
    }

    #[test]
    fn universal_identity() {
        let pki = Pki::generate().unwrap();
        let id = provider_identity(&der_of(pki.default_provider())).unwrap();
        assert_eq!(id.topic, DEFAULT_TOPIC);
        assert_eq!(id.environment, CertEnvironment::Universal);
        assert_eq!(id.team_id.as_deref(), Some(DEFAULT_TEAM_ID));
        assert_eq!(
            id.common_name,
            format!("Apple Push Services: {DEFAULT_TOPIC}")
        );
        assert_eq!(
            id.topics,
            vec![
                (DEFAULT_TOPIC.to_owned(), TopicKind::App),
                (format!("{DEFAULT_TOPIC}.voip"), TopicKind::Voip),
                (
                    format!("{DEFAULT_TOPIC}.complication"),
                    TopicKind::Complication
                ),
            ]
        );
        assert!(id.allows_topic("com.example.app.voip"));
        assert!(!id.allows_topic("com.other"));
    }

    #[test]
    fn sandbox_and_production_identities() {
        let mut pki = Pki::generate().unwrap();
        for env in [CertEnvironment::Sandbox, CertEnvironment::Production] {
            let provider = pki.mint_provider("com.single", env, "TEAM000002").unwrap();
            let id = provider_identity(&der_of(provider)).unwrap();
            assert_eq!(id.topic, "com.single");
            assert_eq!(id.environment, env);
            assert_eq!(id.team_id.as_deref(), Some("TEAM000002"));
            assert_eq!(id.topics, vec![("com.single".to_owned(), TopicKind::App)]);
            assert!(id.common_name.starts_with(env.cn_prefix()));
        }
    }

    /// A certificate built by hand, to exercise the fallbacks real certificates need.
    fn custom_cert(
        dn: &[(rcgen::DnType, &str)],
        extensions: Vec<rcgen::CustomExtension>,
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            name.push(ty.clone(), *value);
        }
        params.distinguished_name = name;
        params.custom_extensions = extensions;
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn identity_fallbacks() {
        // No UID, no OIDs: topic and environment from the CN prefix.
        let der = custom_cert(
            &[(
                rcgen::DnType::CommonName,
                "Apple Production IOS Push Services: com.cn",
            )],
            vec![],
        );
        let id = provider_identity(&der).unwrap();
        assert_eq!(id.topic, "com.cn");
        assert_eq!(id.environment, CertEnvironment::Production);
        assert_eq!(id.team_id, None);

        // Unknown CN, no OIDs: no environment.
        let der = custom_cert(&[(rcgen::DnType::CommonName, "someone")], vec![]);
        assert_eq!(provider_identity(&der), Err(IdentityError::NoEnvironment));

        // OID but no topic anywhere.
        let dev = || rcgen::CustomExtension::from_oid_content(OID_APNS_DEVELOPMENT, vec![5, 0]);
        let der = custom_cert(&[(rcgen::DnType::CommonName, "someone")], vec![dev()]);
        assert_eq!(provider_identity(&der), Err(IdentityError::NoTopic));

        // Topic only in the .3.4 list, without kinds.
        let list = {
            let mut body = crate::pki::der_tlv(0x0C, b"com.v.voip");
            body.extend(crate::pki::der_tlv(0x0C, b"com.v"));
            crate::pki::der_tlv(0x30, &body)
        };
        let der = custom_cert(
            &[(rcgen::DnType::CommonName, "someone")],
            vec![
                dev(),
                rcgen::CustomExtension::from_oid_content(OID_APNS_VOIP_TOPICS, list),
            ],
        );
        let id = provider_identity(&der).unwrap();
        assert_eq!(id.topic, "com.v.voip");
        assert_eq!(id.environment, CertEnvironment::Sandbox);
        assert_eq!(
            id.topics,
            vec![
                ("com.v.voip".to_owned(), TopicKind::Voip),
                ("com.v".to_owned(), TopicKind::App)
            ]
        );

        // A malformed topic list is an error.
        let der = custom_cert(
            &[(rcgen::DnType::CommonName, "Apple Push Services: com.x")],
            vec![rcgen::CustomExtension::from_oid_content(
                OID_APNS_TOPICS,
                vec![0x30, 0x05, 0x0C],
            )],
        );
        assert!(matches!(
            provider_identity(&der),
            Err(IdentityError::BadTopicExtension(_))
        ));
    }

    #[test]
    fn topic_list_parser() {
        let der = topic_list_der(&[("a", "app"), ("a.w", "widget")]);
        assert_eq!(
            parse_topic_list(&der).unwrap(),
            vec![
                ("a".to_owned(), TopicKind::App),
                ("a.w".to_owned(), TopicKind::Other("widget".to_owned()))
            ]
        );
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x00],
            &[0x04, 0x00],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x30, 0x04, 0x30, 0x02, 0x0C, 0x00],
            &[0x30, 0x03, 0x0C, 0x01, 0xff],
            &[0x30, 0x02, 0x0C, 0x00, 0x00],
        ] {
            assert!(parse_topic_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_certificates_never_panic() {
        let pki = Pki::generate().unwrap();
        let good = der_of(pki.default_provider()).to_vec();
        assert_eq!(
            provider_identity(&CertificateDer::from(Vec::new())),
            Err(IdentityError::Unparsable)
        );
        // Every truncation and a spread of single-byte corruptions.
        for len in 0..good.len() {
            let _ = provider_identity(&CertificateDer::from(good[..len].to_vec()));
        }
        for i in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[i] ^= 0xA5;
            let _ = provider_identity(&CertificateDer::from(bad));
        }
    }

    #[test]
    fn server_names_select_environment() {
        assert_eq!(
            environment_for_server_name(Some("api.sandbox.push.apple.com")),
            Some(Environment::Sandbox)
        );
        assert_eq!(
            environment_for_server_name(Some("API.Development.push.apple.com.")),
            Some(Environment::Sandbox)
        );
        assert_eq!(
            environment_for_server_name(Some("gateway.push.apple.com")),
            Some(Environment::Production)
        );
        assert_eq!(environment_for_server_name(Some("localhost")), None);
        assert_eq!(environment_for_server_name(None), None);
    }

    #[test]
    fn connection_environment_rules() {
        let pki = Pki::generate().unwrap();
        let universal = provider_identity(&der_of(pki.default_provider())).unwrap();
        let sandbox = ProviderIdentity {
            environment: CertEnvironment::Sandbox,
            ..universal.clone()
        };
        let production = ProviderIdentity {
            environment: CertEnvironment::Production,
            ..universal.clone()
        };
        let prod_host = Some("api.push.apple.com");
        let dev_host = Some("api.sandbox.push.apple.com");
        assert_eq!(
            connection_environment(&universal, prod_host, Environment::Sandbox),
            Ok(Environment::Production)
        );
        assert_eq!(
            connection_environment(&universal, None, Environment::Sandbox),
            Ok(Environment::Sandbox)
        );
        assert_eq!(
            connection_environment(&sandbox, Some("localhost"), Environment::Production),
            Ok(Environment::Sandbox)
        );
        assert_eq!(
            connection_environment(&sandbox, prod_host, Environment::Sandbox),
            Err(EnvMismatch {
                certificate: CertEnvironment::Sandbox,
                requested: Environment::Production
            })
        );
        assert!(connection_environment(&production, dev_host, Environment::Production).is_err());
        assert_eq!(
            connection_environment(&production, prod_host, Environment::Sandbox),
            Ok(Environment::Production)
        );
    }

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
