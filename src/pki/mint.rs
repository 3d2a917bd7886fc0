//! Minting with rcgen: the root CA, the server certificate, provider certificates shaped
//! like Apple's, and `.p8` ES256 auth keys.
//!
//! Nothing here knows about files: each function returns PEM and DER that
//! [`Pki`](super::Pki) keeps and writes. What a provider certificate must look like (subject
//! layout, Apple's OIDs, the topic list) comes from [`super::profile`].
//!
//! Minting is not on any hot path: everything here runs at startup or from the CLI.

use std::path::Path;

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PrintableString, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use super::profile::{
    encode_topic_list, universal_topics, CertEnvironment, OID_APNS_DEVELOPMENT,
    OID_APNS_PRODUCTION, OID_APNS_TOPICS, OID_UID,
};
use super::store::CertError;

/// Common name of the simulator's root CA, so users recognise it in trust stores.
pub const CA_COMMON_NAME: &str = "apns-sim Root CA";

/// Host names the server certificate covers: loopback, plus every Apple push host so that a
/// hosts-file alias (`127.0.0.1 api.push.apple.com`) works with unmodified clients.
pub const SERVER_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "gateway.push.apple.com",
    "gateway.sandbox.push.apple.com",
    "feedback.push.apple.com",
    "feedback.sandbox.push.apple.com",
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
];

/// Validity of provider certificates: Apple issues them for one year.
const PROVIDER_VALIDITY: Duration = Duration::days(365);
/// Validity of the server certificate: 825 days is the longest Apple platforms accept for a
/// TLS server certificate, even from a private CA.
const SERVER_VALIDITY: Duration = Duration::days(825);
/// Validity of the root CA: long enough that a `certs/` directory outlives its users.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Certificates start a little in the past so a client whose clock lags still accepts them.
const BACKDATE: Duration = Duration::hours(1);

/// A DER `NULL`, the value Apple's marker extensions carry.
const DER_NULL: [u8; 2] = [0x05, 0x00];

/// The CA as a signer: the rcgen certificate (its subject and key identifier go into every
/// child) and its key pair, with the encodings the store writes and rustls trusts.
pub(crate) struct Ca {
    /// The issuer rcgen signs children with.
    cert: rcgen::Certificate,
    /// The CA's key pair.
    key: KeyPair,
    /// `ca.pem`.
    pub(crate) cert_pem: String,
    /// `ca-key.pem`.
    pub(crate) key_pem: String,
    /// The certificate as rustls trust anchors want it.
    pub(crate) der: CertificateDer<'static>,
}

/// A freshly minted certificate and its private key.
pub(crate) struct Minted {
    /// The certificate, PEM.
    pub(crate) cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub(crate) key_pem: String,
    /// The certificate, DER, as rustls wants it.
    pub(crate) cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER, as rustls wants it.
    pub(crate) key_der: PrivateKeyDer<'static>,
}

impl Minted {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Minted {
        Minted {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

impl Ca {
    /// Mints a fresh self-signed root CA.
    pub(crate) fn mint() -> Result<Ca, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, "apns-sim");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            cert,
            key,
        })
    }

    /// Rebuilds a signing CA from its PEM files (`path` is `ca.pem`, for error messages).
    /// rcgen needs an issuer `Certificate`; re-signing the parsed parameters yields one with
    /// the same subject and key, so children verify against the original `ca.pem`.
    pub(crate) fn from_pem(
        cert_pem: String,
        key_pem: String,
        path: &Path,
    ) -> Result<Ca, CertError> {
        let bad_cert = || CertError::Pem {
            path: path.to_owned(),
            what: "CA certificate",
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| bad_cert())?;
        // rcgen's parser assumes single-attribute RDNs (it panics otherwise); check first.
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|_| bad_cert())?;
        if parsed.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(bad_cert());
        }
        let spki = parsed.public_key().raw.to_vec();
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CertError::Pem {
            path: path.with_file_name("ca-key.pem"),
            what: "CA private key",
        })?;
        if key.public_key_der() != spki {
            return Err(CertError::CaKeyMismatch);
        }
        let params = CertificateParams::from_ca_cert_der(&der)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            key,
            cert_pem,
            key_pem,
            der,
        })
    }

    /// Mints the server certificate: every name in [`SERVER_NAMES`], server auth only.
    pub(crate) fn mint_server(&self) -> Result<Minted, CertError> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "apns-sim server");
        dn.push(DnType::OrganizationName, "apns-sim");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVER_VALIDITY);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Minted::new(&cert, &key))
    }

    /// Mints a provider certificate as Apple issues them (§1.8): subject
    /// `UID=<topic>, CN=<prefix><topic>, OU=<team id>, O=apns-sim, C=US`, the development
    /// and/or production OID, and for universal certificates the topic list (app, `.voip`,
    /// `.complication`). The caller has validated `topic` and `team_id`.
    pub(crate) fn mint_provider(
        &self,
        topic: &str,
        environment: CertEnvironment,
        team_id: &str,
    ) -> Result<Minted, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CustomDnType(OID_UID.to_vec()), topic);
        dn.push(
            DnType::CommonName,
            format!("{}{topic}", environment.cn_prefix()),
        );
        dn.push(DnType::OrganizationalUnitName, team_id);
        dn.push(DnType::OrganizationName, "apns-sim");
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString(PrintableString::try_from("US")?),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        if environment != CertEnvironment::Production {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OID_APNS_DEVELOPMENT,
                    DER_NULL.to_vec(),
                ));
        }
        if environment != CertEnvironment::Sandbox {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OID_APNS_PRODUCTION,
                    DER_NULL.to_vec(),
                ));
        }
        if environment == CertEnvironment::Universal {
            let value = encode_topic_list(&universal_topics(topic))?;
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(OID_APNS_TOPICS, value));
        }
        set_validity(&mut params, PROVIDER_VALIDITY);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Minted::new(&cert, &key))
    }
}

/// Sets a random positive serial and a validity window starting [`BACKDATE`] ago.
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let mut serial = [0u8; 16];
    rand::thread_rng().fill(&mut serial);
    // Positive and without a leading zero byte, as RFC 5280 wants.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

/// A fresh P-256 key in PKCS#8 PEM, the format of Apple's `.p8` downloads.
pub(crate) fn mint_p8() -> Result<String, CertError> {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| CertError::EncodeAuthKey)?;
    Ok(pem.to_string())
}

/// Whether `pem` is a P-256 private key in PKCS#8 PEM form, the only `.p8` Apple issues (and
/// the only key ES256 tokens can be signed with).
pub(crate) fn is_p8(pem: &str) -> bool {
    use p256::pkcs8::DecodePrivateKey;
    p256::SecretKey::from_pkcs8_pem(pem).is_ok()
}

/// A random key id in Apple's form: 10 characters from A-Z and 0-9.
pub(crate) fn random_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::profile::{PRODUCTION_HOSTS, SANDBOX_HOSTS};
    use crate::pki::Pki;

    #[test]
    fn server_cert_names() {
        let pki = Pki::generate().unwrap();
        let der = pki.server_chain().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                    _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                },
                other => format!("{other:?}"),
            })
            .collect();
        let expected: Vec<String> = SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(names, expected);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
    }

    #[test]
    fn server_cert_covers_every_host_that_selects_an_environment() {
        for host in SANDBOX_HOSTS.iter().chain(PRODUCTION_HOSTS) {
            assert!(SERVER_NAMES.contains(host), "{host}");
        }
    }

    #[test]
    fn ca_is_a_ca() {
        let pki = Pki::generate().unwrap();
        let der = pki.ca_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            CA_COMMON_NAME
        );
    }

    #[test]
    fn minted_p8_keys_check_out() {
        let pem = mint_p8().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(is_p8(&pem));
        assert!(!is_p8(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        ));
        let id = random_key_id();
        assert_eq!(id.len(), 10);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    }
}
