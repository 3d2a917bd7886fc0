//! Apple's provider certificate profile (§1.8 of the APNs reference): what makes a client
//! certificate a push certificate, and who a provider is according to one.
//!
//! - The subject: `UID=<bundle id>`, `CN=<prefix><bundle id>`, `OU=<team id>`; the CN
//!   prefixes say which environments the certificate serves ([`CertEnvironment`]).
//! - Apple's extension OIDs: `1.2.840.113635.100.6.3.1` (development), `.3.2` (production),
//!   and the topic lists `.3.6` (universal certificates) and `.3.4` (VoIP services).
//! - The topic-list value, a DER `SEQUENCE` alternating `UTF8String topic` and
//!   `SEQUENCE { UTF8String kind }`, written by [`encode_topic_list`] and read by
//!   [`decode_topic_list`] with the `der` crate.
//! - The topic suffixes ([`TOPIC_SUFFIXES`]): one table that names the topics a universal
//!   certificate lists, guesses the kind of a listed topic, and maps an HTTP/2 push type to
//!   the topic it must carry.
//! - [`provider_identity`] reads topic, topic list, environment and team from a certificate,
//!   and [`connection_environment`] decides which environment a connection talks to.
//!
//! Everything here is a pure function of bytes and strings: minting uses it to shape
//! certificates, the endpoints use it (through [`crate::tls::peer_identity`]) to read them.
//! Certificates come from the network, so every malformation is an error, never a panic.

use std::fmt;
use std::str::FromStr;

use der::asn1::{AnyRef, Utf8StringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::protocol::Environment;

/// Subject attribute `UID` (userId, RFC 4519), where Apple puts the bundle id.
pub(crate) const OID_UID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
/// Apple extension marking an APNs development (sandbox) client certificate.
pub(crate) const OID_APNS_DEVELOPMENT: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 1];
/// Apple extension marking an APNs production client certificate.
pub(crate) const OID_APNS_PRODUCTION: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 2];
/// Apple extension listing the topics of a universal certificate.
pub(crate) const OID_APNS_TOPICS: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 6];
/// Apple extension that also lists allowed topics (VoIP services certificates).
pub(crate) const OID_APNS_VOIP_TOPICS: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 4];

/// CN prefix of a sandbox-only iOS push certificate.
pub const CN_PREFIX_SANDBOX: &str = "Apple Development IOS Push Services: ";
/// CN prefix of a production-only iOS push certificate.
pub const CN_PREFIX_PRODUCTION: &str = "Apple Production IOS Push Services: ";
/// CN prefix of a universal ("Sandbox & Production") push certificate.
pub const CN_PREFIX_UNIVERSAL: &str = "Apple Push Services: ";

/// Every CN prefix seen in the wild (§1.8) and the environment each implies, for
/// certificates that carry no Apple environment OID.
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

/// The topic-suffix table and its two look-ups live with the token kinds they also
/// describe (`protocol::token`); re-exported here, where certificates use them.
pub use crate::protocol::token::{push_type_of_topic, topic_suffix, TOPIC_SUFFIXES};

/// The name a certificate environment was given that is none of `sandbox`, `production`,
/// `universal` (from the CLI or a manifest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown certificate environment {0:?}: expected sandbox, production or universal")]
pub struct UnknownEnvironment(pub String);

/// Which APNs environments a provider certificate may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertEnvironment {
    /// "Apple Development IOS Push Services": sandbox only.
    Sandbox,
    /// "Apple Production IOS Push Services": production only.
    Production,
    /// "Apple Push Services" (Dec 2015+): both environments.
    Universal,
}

impl CertEnvironment {
    /// Whether a certificate of this kind may be used against `env`; a `false` answer is
    /// Apple's `BadCertificateEnvironment`.
    pub fn allows(self, env: Environment) -> bool {
        match self {
            CertEnvironment::Universal => true,
            CertEnvironment::Sandbox => env == Environment::Sandbox,
            CertEnvironment::Production => env == Environment::Production,
        }
    }

    /// The single environment a sandbox-only or production-only certificate is bound to;
    /// `None` for universal certificates, whose environment comes from the connection.
    pub fn fixed_environment(self) -> Option<Environment> {
        match self {
            CertEnvironment::Sandbox => Some(Environment::Sandbox),
            CertEnvironment::Production => Some(Environment::Production),
            CertEnvironment::Universal => None,
        }
    }

    /// The lowercase name used in file names, the manifest and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CertEnvironment::Sandbox => "sandbox",
            CertEnvironment::Production => "production",
            CertEnvironment::Universal => "universal",
        }
    }

    /// The common-name prefix Apple uses for this kind of certificate.
    pub fn cn_prefix(self) -> &'static str {
        match self {
            CertEnvironment::Sandbox => CN_PREFIX_SANDBOX,
            CertEnvironment::Production => CN_PREFIX_PRODUCTION,
            CertEnvironment::Universal => CN_PREFIX_UNIVERSAL,
        }
    }
}

impl fmt::Display for CertEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertEnvironment {
    type Err = UnknownEnvironment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sandbox" => Ok(CertEnvironment::Sandbox),
            "production" => Ok(CertEnvironment::Production),
            "universal" => Ok(CertEnvironment::Universal),
            other => Err(UnknownEnvironment(other.to_owned())),
        }
    }
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

    /// Apple's kind string, as the topic list spells it.
    pub fn as_str(&self) -> &str {
        match self {
            TopicKind::App => "app",
            TopicKind::Voip => "voip",
            TopicKind::Complication => "complication",
            TopicKind::Other(kind) => kind,
        }
    }

    /// Guesses the kind from a topic's suffix ([`TOPIC_SUFFIXES`]), for list entries that
    /// carry no kind: no known suffix means an app topic.
    pub fn for_topic(topic: &str) -> TopicKind {
        push_type_of_topic(topic).map_or(TopicKind::App, TopicKind::from_kind)
    }

    /// The topic of this kind for a bundle id: the bundle id plus the kind's suffix from
    /// [`TOPIC_SUFFIXES`] (an app topic, or a kind with no suffix, is the bundle id itself).
    pub fn topic_for(&self, bundle_id: &str) -> String {
        format!("{bundle_id}{}", topic_suffix(self.as_str()).unwrap_or(""))
    }
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The topics a universal certificate minted for `bundle_id` lists, as Apple's example does:
/// the app, its `.voip` topic and its `.complication` topic.
pub fn universal_topics(bundle_id: &str) -> Vec<(String, TopicKind)> {
    [TopicKind::App, TopicKind::Voip, TopicKind::Complication]
        .into_iter()
        .map(|kind| (kind.topic_for(bundle_id), kind))
        .collect()
}

/// Why a topic-list extension value (…6.3.6 or …6.3.4) is not the DER Apple writes, or why a
/// list cannot be written as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicListError {
    /// The bytes are not well-formed DER: truncated, a length longer than what follows or
    /// than 256 MiB, a length not in its shortest form, an unknown tag, trailing bytes.
    #[error(transparent)]
    Der(#[from] der::Error),
    /// The value is one DER element, but not the `SEQUENCE` Apple's format starts with.
    #[error("the value is {0}, not a SEQUENCE")]
    NotASequence(Tag),
    /// A listed topic is an empty string, which names no app.
    #[error("a listed topic is empty")]
    EmptyTopic,
    /// A listed topic's bytes are not UTF-8.
    #[error("a listed topic is not UTF-8")]
    TopicNotUtf8,
    /// A `SEQUENCE { kind }` does not start with a string.
    #[error("a topic kind is {0}, not a string")]
    KindNotAString(Tag),
    /// A kind's bytes are not UTF-8.
    #[error("a topic kind is not UTF-8")]
    KindNotUtf8,
    /// A `SEQUENCE { kind }` follows no topic, or follows one that already has a kind.
    #[error("a topic kind follows no topic")]
    KindWithoutTopic,
    /// The list holds no topic at all.
    #[error("the list holds no topic")]
    NoTopics,
}

/// Whether a DER tag is a string type a topic or kind could be written in (UTF8String,
/// PrintableString, IA5String).
fn is_string_tag(tag: Tag) -> bool {
    matches!(tag, Tag::Utf8String | Tag::PrintableString | Tag::Ia5String)
}

/// Encodes Apple's topic-list extension value (OID …6.3.6): a `SEQUENCE` alternating
/// `UTF8String topic` and `SEQUENCE { UTF8String kind }`, the layout of Apple's example and
/// of Pushy's test certificates. Refuses what [`decode_topic_list`] would refuse (no topic,
/// an empty topic), so a minted certificate always reads back.
pub fn encode_topic_list(topics: &[(String, TopicKind)]) -> Result<Vec<u8>, TopicListError> {
    if topics.is_empty() {
        return Err(TopicListError::NoTopics);
    }
    let mut body = Vec::new();
    for (topic, kind) in topics {
        if topic.is_empty() {
            return Err(TopicListError::EmptyTopic);
        }
        Utf8StringRef::new(topic)?.encode_to_vec(&mut body)?;
        let kind = Utf8StringRef::new(kind.as_str())?.to_der()?;
        AnyRef::new(Tag::Sequence, &kind)?.encode_to_vec(&mut body)?;
    }
    Ok(AnyRef::new(Tag::Sequence, &body)?.to_der()?)
}

/// Decodes a topic-list extension value: one `SEQUENCE` in which each string is a topic and
/// a following `SEQUENCE { string }` gives its kind (absent: guessed from the suffix). Like
/// Pushy's mock, every string directly inside the outer sequence is a topic; elements of
/// other types are skipped, and a kind sequence is read up to its first element.
pub fn decode_topic_list(value: &[u8]) -> Result<Vec<(String, TopicKind)>, TopicListError> {
    // `from_der` reads exactly one element: trailing bytes are an error.
    let list = AnyRef::from_der(value)?;
    if list.tag() != Tag::Sequence {
        return Err(TopicListError::NotASequence(list.tag()));
    }
    let mut reader = SliceReader::new(list.value())?;
    let mut topics: Vec<(String, TopicKind)> = Vec::new();
    let mut last_has_kind = true;
    while !reader.is_finished() {
        let element: AnyRef<'_> = reader.decode()?;
        if is_string_tag(element.tag()) {
            let topic =
                std::str::from_utf8(element.value()).map_err(|_| TopicListError::TopicNotUtf8)?;
            if topic.is_empty() {
                return Err(TopicListError::EmptyTopic);
            }
            topics.push((topic.to_owned(), TopicKind::for_topic(topic)));
            last_has_kind = false;
        } else if element.tag() == Tag::Sequence {
            let kind: AnyRef<'_> = SliceReader::new(element.value())?.decode()?;
            if !is_string_tag(kind.tag()) {
                return Err(TopicListError::KindNotAString(kind.tag()));
            }
            let kind =
                std::str::from_utf8(kind.value()).map_err(|_| TopicListError::KindNotUtf8)?;
            match topics.last_mut() {
                Some(last) if !last_has_kind => last.1 = TopicKind::from_kind(kind),
                _ => return Err(TopicListError::KindWithoutTopic),
            }
            last_has_kind = true;
        }
    }
    if topics.is_empty() {
        return Err(TopicListError::NoTopics);
    }
    Ok(topics)
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
    BadTopicExtension(TopicListError),
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

/// Reads topic, topic list, environment and team from a provider certificate (X.509 DER).
/// The certificate comes from the network: any malformation is an error, never a panic.
pub fn provider_identity(cert_der: &[u8]) -> Result<ProviderIdentity, IdentityError> {
    let (_, x509) = X509Certificate::from_der(cert_der).map_err(|_| IdentityError::Unparsable)?;
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
            let topics = decode_topic_list(ext.value).map_err(IdentityError::BadTopicExtension)?;
            for (topic, kind) in topics {
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

/// Apple host names for the sandbox environment.
pub(crate) const SANDBOX_HOSTS: &[&str] = &[
    "gateway.sandbox.push.apple.com",
    "feedback.sandbox.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
];

/// Apple host names for the production environment.
pub(crate) const PRODUCTION_HOSTS: &[&str] = &[
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

/// A provider certificate used in the wrong environment: Apple's `BadCertificateEnvironment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {certificate} certificate cannot connect to the {requested} environment")]
pub struct EnvMismatch {
    /// What the certificate is valid for.
    pub certificate: CertEnvironment,
    /// The environment the client asked for through its SNI host name.
    pub requested: Environment,
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
    use crate::pki::{Pki, ProviderCert, DEFAULT_TEAM_ID, DEFAULT_TOPIC};

    use der::ErrorKind;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn der_of(provider: &ProviderCert) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(provider.cert_pem.as_bytes()).unwrap()
    }

    fn list(entries: &[(&str, &str)]) -> Vec<(String, TopicKind)> {
        entries
            .iter()
            .map(|(topic, kind)| ((*topic).to_owned(), TopicKind::from_kind(kind)))
            .collect()
    }

    #[test]
    fn topic_list_bytes() {
        let der = encode_topic_list(&list(&[("a.b", "app"), ("a.b.voip", "voip")])).unwrap();
        #[rustfmt::skip]
        let expected = vec![
            0x30, 0x1E,                               // SEQUENCE, 30 bytes
            0x0C, 0x03, b'a', b'.', b'b',             //   UTF8String "a.b"
            0x30, 0x05,                               //   SEQUENCE, 5 bytes
            0x0C, 0x03, b'a', b'p', b'p',             //     UTF8String "app"
            0x0C, 0x08, b'a', b'.', b'b', b'.',       //   UTF8String "a.b.voip"
                  b'v', b'o', b'i', b'p',
            0x30, 0x06,                               //   SEQUENCE, 6 bytes
            0x0C, 0x04, b'v', b'o', b'i', b'p',       //     UTF8String "voip"
        ];
        assert_eq!(der, expected);
    }

    #[test]
    fn topic_list_short_and_long_lengths() {
        // 200 content bytes: one length byte after 0x81; 300: two after 0x82.
        let topic = "a".repeat(200);
        let der = encode_topic_list(&[(topic.clone(), TopicKind::App)]).unwrap();
        #[rustfmt::skip]
        let head = [
            0x30, 0x81, 210,         // SEQUENCE, 210 bytes
            0x0C, 0x81, 200,         //   UTF8String, 200 bytes
        ];
        assert_eq!(&der[..6], &head);
        assert_eq!(der.len(), 213);
        assert_eq!(&der[206..], &[0x30, 0x05, 0x0C, 0x03, b'a', b'p', b'p'][..]);
        let topic = "a".repeat(300);
        let der = encode_topic_list(&[(topic, TopicKind::App)]).unwrap();
        #[rustfmt::skip]
        let head = [
            0x30, 0x82, 0x01, 0x37,  // SEQUENCE, 311 bytes
            0x0C, 0x82, 0x01, 0x2C,  //   UTF8String, 300 bytes
        ];
        assert_eq!(&der[..8], &head);
    }

    #[test]
    fn topic_list_round_trips() {
        let lists = [
            universal_topics(DEFAULT_TOPIC),
            list(&[("a", "app")]),
            list(&[("a", "app"), ("a.w", "widget"), ("a.v", "")]),
            vec![("é.topic".to_owned(), TopicKind::App)],
            vec![("x".repeat(70_000), TopicKind::Voip)],
        ];
        for topics in lists {
            let der = encode_topic_list(&topics).unwrap();
            assert_eq!(decode_topic_list(&der).unwrap(), topics);
        }
        assert_eq!(encode_topic_list(&[]), Err(TopicListError::NoTopics));
        assert_eq!(
            encode_topic_list(&list(&[("", "app")])),
            Err(TopicListError::EmptyTopic)
        );
    }

    #[test]
    fn topic_list_parser() {
        let der = encode_topic_list(&list(&[("a", "app"), ("a.w", "widget")])).unwrap();
        assert_eq!(
            decode_topic_list(&der).unwrap(),
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
            assert!(decode_topic_list(bad).is_err(), "{bad:?}");
        }
    }

    /// The kind of DER error a malformed value gets.
    fn der_error(value: &[u8]) -> ErrorKind {
        match decode_topic_list(value) {
            Err(TopicListError::Der(err)) => err.kind(),
            other => panic!("{value:?}: expected a DER error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_topic_lists_get_clear_errors() {
        let good = encode_topic_list(&universal_topics("com.x")).unwrap();

        // Truncated anywhere: an error (never a panic, never a partial list).
        for len in 0..good.len() {
            assert!(decode_topic_list(&good[..len]).is_err(), "length {len}");
        }
        assert!(matches!(
            der_error(&good[..good.len() - 1]),
            ErrorKind::Incomplete { .. }
        ));
        assert!(matches!(der_error(&[]), ErrorKind::Incomplete { .. }));

        // Wrong tags: the outer value, a kind, and an unknown tag byte.
        assert_eq!(
            decode_topic_list(&[0x04, 0x01, 0x00]),
            Err(TopicListError::NotASequence(Tag::OctetString))
        );
        assert!(matches!(
            der_error(&[0x30, 0x06, 0x0C, 0x01, b'a', 0x30, 0x01, 0x05]),
            ErrorKind::Incomplete { .. }
        ));
        assert_eq!(
            decode_topic_list(&[0x30, 0x07, 0x0C, 0x01, b'a', 0x30, 0x02, 0x05, 0x00]),
            Err(TopicListError::KindNotAString(Tag::Null))
        );
        assert!(matches!(
            der_error(&[0x30, 0x02, 0x07, 0x00]),
            ErrorKind::TagUnknown { byte: 0x07 }
        ));

        // Lengths: longer than the input (also when it claims 256 MiB: nothing is
        // allocated for it), beyond der's 256 MiB, longer than four bytes, not in the
        // shortest form, indefinite.
        assert!(matches!(
            der_error(&[0x30, 0x05, 0x0C, 0x01, b'a']),
            ErrorKind::Incomplete { .. }
        ));
        assert!(matches!(
            der_error(&[0x30, 0x84, 0x0f, 0xff, 0xff, 0x00, 0x0C]),
            ErrorKind::Incomplete { .. }
        ));
        assert!(matches!(
            der_error(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            ErrorKind::Overflow
        ));
        assert_eq!(
            der_error(&[0x30, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ErrorKind::Length { tag: Tag::Sequence }
        );
        assert_eq!(
            der_error(&[0x30, 0x81, 0x03, 0x0C, 0x01, b'a']),
            ErrorKind::Length { tag: Tag::Sequence }
        );
        assert!(matches!(
            der_error(&[0x30, 0x80, 0x0C, 0x01, b'a', 0x00, 0x00]),
            ErrorKind::IndefiniteLength
        ));

        // Trailing bytes after the list.
        let mut trailing = good.clone();
        trailing.push(0x00);
        assert!(matches!(
            der_error(&trailing),
            ErrorKind::TrailingData { .. }
        ));

        // Well-formed DER that is not a topic list.
        assert_eq!(
            decode_topic_list(&[0x30, 0x00]),
            Err(TopicListError::NoTopics)
        );
        assert_eq!(
            decode_topic_list(&[0x30, 0x02, 0x0C, 0x00]),
            Err(TopicListError::EmptyTopic)
        );
        assert_eq!(
            decode_topic_list(&[0x30, 0x03, 0x0C, 0x01, 0xff]),
            Err(TopicListError::TopicNotUtf8)
        );
        assert_eq!(
            decode_topic_list(&[0x30, 0x07, 0x0C, 0x01, b'a', 0x30, 0x02, 0x0C, 0x00]),
            Ok(vec![("a".to_owned(), TopicKind::Other(String::new()))])
        );
        assert_eq!(
            decode_topic_list(&[0x30, 0x04, 0x30, 0x02, 0x0C, 0x00]),
            Err(TopicListError::KindWithoutTopic)
        );

        // Every error reads as a sentence naming the problem.
        let err = IdentityError::BadTopicExtension(decode_topic_list(&good[..5]).unwrap_err());
        assert!(
            err.to_string().starts_with(
                "client certificate topic extension is malformed: ASN.1 DER message is incomplete"
            ),
            "{err}"
        );
    }

    #[test]
    fn suffix_table_serves_both_directions() {
        // No suffix ends another, so the lookup order never matters.
        for (a, sa) in TOPIC_SUFFIXES {
            for (b, sb) in TOPIC_SUFFIXES {
                assert!(a == b || !sa.ends_with(sb), "{sa} ends with {sb}");
            }
        }
        // kind → topic (minting) and topic → kind (reading a kind-less list).
        for kind in [TopicKind::Voip, TopicKind::Complication] {
            let topic = kind.topic_for("com.x");
            assert_eq!(Some(&topic[5..]), topic_suffix(kind.as_str()));
            assert_eq!(TopicKind::for_topic(&topic), kind);
        }
        assert_eq!(TopicKind::App.topic_for("com.x"), "com.x");
        assert_eq!(TopicKind::for_topic("com.x"), TopicKind::App);
        assert_eq!(TopicKind::for_topic(".voip"), TopicKind::App);
        assert_eq!(
            TopicKind::for_topic("com.x.voip-ptt"),
            TopicKind::Other("pushtotalk".to_owned())
        );
        assert_eq!(
            push_type_of_topic("com.x.push-type.widgets"),
            Some("widgets")
        );
        assert_eq!(topic_suffix("alert"), None);
        assert_eq!(
            universal_topics("com.x"),
            list(&[
                ("com.x", "app"),
                ("com.x.voip", "voip"),
                ("com.x.complication", "complication")
            ])
        );
    }

    #[test]
    fn cert_environment_names_and_rules() {
        for env in [
            CertEnvironment::Sandbox,
            CertEnvironment::Production,
            CertEnvironment::Universal,
        ] {
            assert_eq!(env.to_string().parse::<CertEnvironment>().unwrap(), env);
            let json = serde_json::to_string(&env).unwrap();
            assert_eq!(json, format!("\"{env}\""));
        }
        assert_eq!(
            "Sandbox".parse::<CertEnvironment>(),
            Err(UnknownEnvironment("Sandbox".to_owned()))
        );
        assert!(CertEnvironment::Universal.allows(Environment::Sandbox));
        assert!(CertEnvironment::Universal.allows(Environment::Production));
        assert!(CertEnvironment::Sandbox.allows(Environment::Sandbox));
        assert!(!CertEnvironment::Sandbox.allows(Environment::Production));
        assert!(!CertEnvironment::Production.allows(Environment::Sandbox));
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
        #[rustfmt::skip]
        let list = vec![
            0x30, 0x13,                                 // SEQUENCE, 19 bytes
            0x0C, 0x0A, b'c', b'o', b'm', b'.', b'v',   //   UTF8String "com.v.voip"
                  b'.', b'v', b'o', b'i', b'p',
            0x0C, 0x05, b'c', b'o', b'm', b'.', b'v',   //   UTF8String "com.v"
        ];
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
    fn garbage_certificates_never_panic() {
        let pki = Pki::generate().unwrap();
        let good = der_of(pki.default_provider()).to_vec();
        assert_eq!(provider_identity(&[]), Err(IdentityError::Unparsable));
        // Every truncation and a spread of single-byte corruptions.
        for len in 0..good.len() {
            let _ = provider_identity(&good[..len]);
        }
        for i in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[i] ^= 0xA5;
            let _ = provider_identity(&bad);
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
}
