//! Credentials in the forms provider libraries load: the pure encoding behind
//! `apns-sim certs export`. [`export`] turns a [`Pki`] and an [`ExportRequest`] into named
//! files in memory ([`ExportFile`]); writing them is the caller's (the CLI's) job.
//!
//! | format | files | who loads it |
//! |---|---|---|
//! | [`ExportFormat::Pem`] | `<stem>.pem`, `<stem>-key.pem`, `<stem>-combined.pem` | curl, Python `ssl`, Go, node's `cert`/`key` |
//! | [`ExportFormat::P12`] | `<stem>.p12` (key, certificate, CA) | Java, node's `pfx`, .NET, keychains |
//! | [`ExportFormat::Bundle`] | `ca-bundle.pem` | `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `--cacert` |
//! | [`ExportFormat::P8`] | `AuthKey_<KEYID>.p8`, `AuthKey_<KEYID>.json` | token (JWT) auth: the key, its key id and team id |
//!
//! A `.p12` is always encrypted and MAC-protected with its password; "no password" is the
//! empty password, which is what `openssl pkcs12 -passin pass:` and `keytool -storepass ""`
//! read. (A store with no encryption at all holds its key in a plain `keyBag`, which Java's
//! PKCS12 keystore skips: it would list no key.) [`P12Encryption`] picks between the modern
//! algorithms and the legacy ones old Java (before 8u301) and node on OpenSSL 1.x need.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::Serialize;

use super::profile::CertEnvironment;
use super::store::{AuthKey, Pki, ProviderCert};

/// PBKDF2 and MAC iterations of a modern `.p12`: Java 17's and p12-keystore's default, the
/// work a guess at the password costs; more only slows every load down.
pub const MODERN_P12_ITERATIONS: u32 = 10_000;

/// Key derivation and MAC iterations of a legacy `.p12`: OpenSSL 1.x's `PKCS12_DEFAULT_ITER`,
/// the count the old readers this form exists for wrote themselves.
pub const LEGACY_P12_ITERATIONS: u32 = 2048;

/// File name of the CA bundle ([`ExportFormat::Bundle`]).
pub const CA_BUNDLE_FILE: &str = "ca-bundle.pem";

/// How a `.p12` is encrypted and protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P12Encryption {
    /// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key and the certificates, an
    /// HMAC-SHA256 MAC: what OpenSSL 3 and Java 17 write, and read without options.
    Modern,
    /// `pbeWithSHAAnd3-KeyTripleDES-CBC` (RFC 7292 appendix C) for the key and the
    /// certificates, an HMAC-SHA1 MAC: what Java before 8u301 and OpenSSL 1.x (node before
    /// 17) can read; they do not know PBES2.
    Legacy,
}

/// Which form to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFormat {
    /// A provider certificate and its key as PEM, apart and combined in one file.
    Pem,
    /// A provider certificate, its key and the CA in one PKCS#12 file.
    P12 {
        /// The store's password; empty for a store "without a password".
        password: String,
        /// Modern or legacy algorithms.
        encryption: P12Encryption,
    },
    /// The simulator's CA certificate, for clients' trust stores.
    Bundle,
    /// A `.p8` auth key and a JSON file with its key id, team id and topics.
    P8,
}

/// What to export and which credential it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The form.
    pub format: ExportFormat,
    /// Provider certificate to export (pem, p12), by topic: `None` is the default one
    /// (`provider.pem`). A topic with certificates for several environments needs
    /// [`ExportRequest::environment`].
    pub topic: Option<String>,
    /// The environment of the provider certificate, when the topic has several.
    pub environment: Option<CertEnvironment>,
    /// Auth key to export (p8), by key id: `None` is the first one minted.
    pub key_id: Option<String>,
}

/// One exported file, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// File name, no folder.
    pub name: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Whether it holds a private key (the caller writes it readable by its owner only).
    pub secret: bool,
}

/// What `AuthKey_<KEYID>.json` holds next to the `.p8`: what a provider needs besides the
/// key to build its JWT.
#[derive(Debug, Serialize)]
struct AuthKeyInfo<'a> {
    /// The JWT header's `kid`.
    key_id: &'a str,
    /// The JWT claim `iss`.
    team_id: &'a str,
    /// Topics the key is limited to; empty for a team-scoped key.
    topics: &'a [String],
    /// The `.p8` file.
    file: String,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// No provider certificate has this topic (and environment).
    #[error("no provider certificate for topic {topic:?}{}; `apns-sim certs` lists them", env_suffix(*.environment))]
    NoProvider {
        /// The topic asked for.
        topic: String,
        /// The environment asked for, if any.
        environment: Option<CertEnvironment>,
    },
    /// The topic has certificates for several environments and none was named.
    #[error("topic {topic:?} has certificates for {}: name one with --environment", environments.join(", "))]
    AmbiguousProvider {
        /// The topic asked for.
        topic: String,
        /// The environments it has certificates for.
        environments: Vec<String>,
    },
    /// No auth key has this key id (or the PKI has none).
    #[error("no auth key {0:?}; `apns-sim certs` lists them")]
    NoAuthKey(String),
    /// A certificate or key of the PKI is not the PEM it should be (a damaged folder).
    #[error("the {0} is not valid PEM")]
    Pem(&'static str),
    /// The PKCS#12 encoder refused (a bug, never the user's input).
    #[error("PKCS#12 encoding failed: {0}")]
    P12(#[from] p12_keystore::error::Error),
}

fn env_suffix(environment: Option<CertEnvironment>) -> String {
    environment.map_or_else(String::new, |e| format!(" ({e})"))
}

/// The files of `request` for the credentials in `pki`.
pub fn export(pki: &Pki, request: &ExportRequest) -> Result<Vec<ExportFile>, ExportError> {
    match &request.format {
        ExportFormat::Pem => {
            let provider = select_provider(pki, request)?;
            Ok(pem_files(provider))
        }
        ExportFormat::P12 {
            password,
            encryption,
        } => {
            let provider = select_provider(pki, request)?;
            Ok(vec![ExportFile {
                name: format!("{}.p12", provider.file_stem),
                contents: provider_p12(provider, pki.ca_cert_pem(), password, *encryption)?,
                secret: true,
            }])
        }
        ExportFormat::Bundle => Ok(vec![ExportFile {
            name: CA_BUNDLE_FILE.to_owned(),
            contents: pki.ca_cert_pem().as_bytes().to_vec(),
            secret: false,
        }]),
        ExportFormat::P8 => {
            let key = select_auth_key(pki, request.key_id.as_deref())?;
            Ok(p8_files(key))
        }
    }
}

/// The provider certificate a request names: by topic (and environment), or the default.
fn select_provider<'a>(
    pki: &'a Pki,
    request: &ExportRequest,
) -> Result<&'a ProviderCert, ExportError> {
    let Some(topic) = &request.topic else {
        return match request.environment {
            None => Ok(pki.default_provider()),
            Some(environment) => {
                let topic = &pki.default_provider().topic;
                pki.provider_for(topic, environment)
                    .ok_or_else(|| ExportError::NoProvider {
                        topic: topic.clone(),
                        environment: Some(environment),
                    })
            }
        };
    };
    if let Some(environment) = request.environment {
        return pki
            .provider_for(topic, environment)
            .ok_or_else(|| ExportError::NoProvider {
                topic: topic.clone(),
                environment: Some(environment),
            });
    }
    let matching: Vec<&ProviderCert> = pki.providers().filter(|p| &p.topic == topic).collect();
    match matching.as_slice() {
        [] => Err(ExportError::NoProvider {
            topic: topic.clone(),
            environment: None,
        }),
        [one] => Ok(one),
        several => Err(ExportError::AmbiguousProvider {
            topic: topic.clone(),
            environments: several.iter().map(|p| p.environment.to_string()).collect(),
        }),
    }
}

/// The auth key with `key_id`, or the first one.
fn select_auth_key<'a>(pki: &'a Pki, key_id: Option<&str>) -> Result<&'a AuthKey, ExportError> {
    match key_id {
        Some(id) => pki
            .auth_key(id)
            .ok_or_else(|| ExportError::NoAuthKey(id.to_owned())),
        None => pki
            .auth_keys()
            .first()
            .ok_or_else(|| ExportError::NoAuthKey(String::new())),
    }
}

/// The certificate, the key, and both in one file (certificate first, as curl's `--cert`
/// and Python's `load_cert_chain` read a combined file).
fn pem_files(provider: &ProviderCert) -> Vec<ExportFile> {
    vec![
        ExportFile {
            name: provider.cert_file_name(),
            contents: provider.cert_pem.as_bytes().to_vec(),
            secret: false,
        },
        ExportFile {
            name: provider.key_file_name(),
            contents: provider.key_pem.as_bytes().to_vec(),
            secret: true,
        },
        ExportFile {
            name: format!("{}-combined.pem", provider.file_stem),
            contents: provider_pem_combined(provider).into_bytes(),
            secret: true,
        },
    ]
}

/// A provider certificate and its key in one PEM file, certificate first.
pub fn provider_pem_combined(provider: &ProviderCert) -> String {
    let mut combined = provider.cert_pem.clone();
    if !combined.ends_with('\n') {
        combined.push('\n');
    }
    combined.push_str(&provider.key_pem);
    combined
}

/// The `.p8` and its `AuthKey_<KEYID>.json`.
fn p8_files(key: &AuthKey) -> Vec<ExportFile> {
    let info = AuthKeyInfo {
        key_id: &key.key_id,
        team_id: &key.team_id,
        topics: &key.topics,
        file: key.file_name(),
    };
    let mut json = serde_json::to_string_pretty(&info).expect("plain strings serialise");
    json.push('\n');
    vec![
        ExportFile {
            name: key.file_name(),
            contents: key.p8_pem.as_bytes().to_vec(),
            secret: true,
        },
        ExportFile {
            name: format!("AuthKey_{}.json", key.key_id),
            contents: json.into_bytes(),
            secret: false,
        },
    ]
}

/// A PKCS#12 store holding `provider`'s key with the chain [certificate, CA], under the
/// alias (friendly name) of its topic, encrypted and MAC-protected with `password`.
pub fn provider_p12(
    provider: &ProviderCert,
    ca_pem: &str,
    password: &str,
    encryption: P12Encryption,
) -> Result<Vec<u8>, ExportError> {
    let cert = CertificateDer::from_pem_slice(provider.cert_pem.as_bytes())
        .map_err(|_| ExportError::Pem("provider certificate"))?;
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|_| ExportError::Pem("CA certificate"))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(provider.key_pem.as_bytes())
        .map_err(|_| ExportError::Pem("provider key (PKCS#8)"))?;
    let chain = PrivateKeyChain::new(
        // The local key id ties the key bag to its certificate bag; any bytes unique in
        // the store will do, and the topic names it for a person reading the dump.
        provider.topic.as_str(),
        PrivateKey::from_der(key.secret_pkcs8_der())?,
        [
            Certificate::from_der(cert.as_ref())?,
            Certificate::from_der(ca.as_ref())?,
        ],
    );
    let mut store = KeyStore::new();
    store.add_entry(&provider.topic, KeyStoreEntry::PrivateKeyChain(chain));
    let (algorithm, mac, iterations) = match encryption {
        P12Encryption::Modern => (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
            MODERN_P12_ITERATIONS,
        ),
        P12Encryption::Legacy => (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
            LEGACY_P12_ITERATIONS,
        ),
    };
    Ok(store
        .writer(password)
        .encryption_algorithm(algorithm)
        .encryption_iterations(iterations)
        .mac_algorithm(mac)
        .mac_iterations(iterations)
        .write()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p12_keystore::Pkcs12ImportPolicy;

    fn pki() -> Pki {
        Pki::generate().expect("mint")
    }

    fn request(format: ExportFormat) -> ExportRequest {
        ExportRequest {
            format,
            topic: None,
            environment: None,
            key_id: None,
        }
    }

    /// Whether a store's DER holds these bytes (an encoded OID below).
    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
    // The DER-encoded OIDs (tag 06, length, value) of the algorithms a store names: PBES2
    // (1.2.840.113549.1.5.13) and pbeWithSHAAnd3-KeyTripleDES-CBC (1.2.840.113549.1.12.1.3)
    // as ciphers; SHA-256 (2.16.840.1.101.3.4.2.1) and SHA-1 (1.3.14.3.2.26) as the MAC's
    // digest.
    const PBES2: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d,
    ];
    const PBE_3DES: &[u8] = &[
        0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03,
    ];
    const SHA256: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    const SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];

    #[test]
    fn p12_round_trips_with_its_password_in_both_encryptions() {
        let pki = pki();
        let provider = pki.default_provider();
        for (encryption, cipher, digest, other_cipher) in [
            (P12Encryption::Modern, PBES2, SHA256, PBE_3DES),
            (P12Encryption::Legacy, PBE_3DES, SHA1, PBES2),
        ] {
            for password in ["s3cret", ""] {
                let der = provider_p12(provider, pki.ca_cert_pem(), password, encryption).unwrap();
                assert!(contains(&der, cipher), "{encryption:?}: cipher OID");
                assert!(contains(&der, digest), "{encryption:?}: MAC digest OID");
                assert!(
                    !contains(&der, other_cipher),
                    "{encryption:?}: only one cipher"
                );
                let store =
                    KeyStore::from_pkcs12(&der, password, Pkcs12ImportPolicy::Strict).unwrap();
                let (alias, chain) = store.private_key_chain().expect("a key entry");
                assert_eq!(alias, provider.topic);
                let key = PrivatePkcs8KeyDer::from_pem_slice(provider.key_pem.as_bytes()).unwrap();
                assert_eq!(chain.key().as_der(), key.secret_pkcs8_der());
                let cert = CertificateDer::from_pem_slice(provider.cert_pem.as_bytes()).unwrap();
                let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
                assert_eq!(certs, [cert.as_ref(), pki.ca_der().as_ref()]);
                assert!(
                    KeyStore::from_pkcs12(&der, "wrong", Pkcs12ImportPolicy::Strict).is_err(),
                    "{encryption:?}/{password:?}: a wrong password is refused"
                );
            }
        }
    }

    #[test]
    fn pem_export_is_the_pair_and_the_combined_file() {
        let pki = pki();
        let files = export(&pki, &request(ExportFormat::Pem)).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["provider.pem", "provider-key.pem", "provider-combined.pem"]
        );
        let provider = pki.default_provider();
        assert_eq!(files[0].contents, provider.cert_pem.as_bytes());
        assert!(!files[0].secret);
        assert_eq!(files[1].contents, provider.key_pem.as_bytes());
        assert!(files[1].secret && files[2].secret);
        let combined = String::from_utf8(files[2].contents.clone()).unwrap();
        let cert_at = combined.find("BEGIN CERTIFICATE").unwrap();
        let key_at = combined.find("BEGIN PRIVATE KEY").unwrap();
        assert!(cert_at < key_at, "certificate first");
        assert!(CertificateDer::from_pem_slice(combined.as_bytes()).is_ok());
        assert!(PrivatePkcs8KeyDer::from_pem_slice(combined.as_bytes()).is_ok());
    }

    #[test]
    fn a_provider_is_chosen_by_topic_and_environment() {
        let mut pki = pki();
        pki.mint_provider("com.acme.news", CertEnvironment::Sandbox, "SIMTEAM001")
            .unwrap();
        pki.mint_provider("com.acme.news", CertEnvironment::Production, "SIMTEAM001")
            .unwrap();
        let mut req = request(ExportFormat::Pem);
        req.topic = Some("com.acme.news".into());
        let err = export(&pki, &req).unwrap_err();
        assert!(
            matches!(&err, ExportError::AmbiguousProvider { environments, .. }
                if environments == &["sandbox", "production"]),
            "{err}"
        );
        req.environment = Some(CertEnvironment::Production);
        let files = export(&pki, &req).unwrap();
        assert_eq!(files[0].name, "provider-com.acme.news-production.pem");
        req.topic = Some("com.nobody".into());
        assert!(matches!(
            export(&pki, &req),
            Err(ExportError::NoProvider { .. })
        ));
    }

    #[test]
    fn bundle_is_the_ca() {
        let pki = pki();
        let files = export(&pki, &request(ExportFormat::Bundle)).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, CA_BUNDLE_FILE);
        assert_eq!(files[0].contents, pki.ca_cert_pem().as_bytes());
    }

    #[test]
    fn p8_export_names_key_and_team() {
        let mut pki = pki();
        pki.mint_auth_key(
            "TEAM000002",
            Some("KEY0000002".into()),
            vec!["com.a".into()],
        )
        .unwrap();
        let mut req = request(ExportFormat::P8);
        req.key_id = Some("KEY0000002".into());
        let files = export(&pki, &req).unwrap();
        assert_eq!(files[0].name, "AuthKey_KEY0000002.p8");
        assert!(files[0].secret);
        assert_eq!(
            files[0].contents,
            pki.auth_key("KEY0000002").unwrap().p8_pem.as_bytes()
        );
        let info: serde_json::Value = serde_json::from_slice(&files[1].contents).unwrap();
        assert_eq!(info["key_id"], "KEY0000002");
        assert_eq!(info["team_id"], "TEAM000002");
        assert_eq!(info["topics"], serde_json::json!(["com.a"]));
        assert_eq!(info["file"], "AuthKey_KEY0000002.p8");
        // Without a key id: the first key, the default one.
        let files = export(&pki, &request(ExportFormat::P8)).unwrap();
        assert_eq!(files[0].name, "AuthKey_SIMKEY0001.p8");
        req.key_id = Some("NOSUCHKEY0".into());
        assert!(matches!(export(&pki, &req), Err(ExportError::NoAuthKey(_))));
    }
}
