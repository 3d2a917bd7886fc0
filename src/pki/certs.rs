//! The simulator's private PKI: minting with rcgen and the on-disk layout in `certs/`.
//!
//! On first start the simulator mints a root CA, a server certificate covering `localhost`
//! and Apple's push host names, a provider (client) certificate shaped like the ones Apple
//! issues, and a `.p8` ES256 auth key for token-based auth. [`Pki::write`] puts them in a
//! directory with a `manifest.json`; [`Pki::load_or_create`] reuses that directory on later
//! starts, so clients configured once keep working. Tests use [`Pki::generate`], which never
//! touches the disk.
//!
//! Provider certificates follow §1.8 of the APNs reference: subject
//! `UID=<topic>, CN=<prefix><topic>, OU=<team id>, O=apns-sim, C=US`, the Apple extension
//! OIDs `1.2.840.113635.100.6.3.1` (development) and `.3.2` (production), and for universal
//! certificates the topic list `.3.6` (app, `.voip` and `.complication` topics).
//!
//! Minting is not on any hot path: everything here runs at startup or from the CLI.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PrintableString, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::protocol::Environment;

/// The topic (bundle id) of the provider certificate every PKI starts with, so that a demo
/// and the tests work without minting anything.
pub const DEFAULT_TOPIC: &str = "com.example.app";

/// The 10-character team id of the default provider certificate and auth key; Apple team
/// ids are 10 uppercase alphanumerics.
pub const DEFAULT_TEAM_ID: &str = "SIMTEAM001";

/// The 10-character key id of the default `.p8` auth key (its file is `AuthKey_SIMKEY0001.p8`).
pub const DEFAULT_KEY_ID: &str = "SIMKEY0001";

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

/// Version of `manifest.json` this code writes and understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Name of the manifest file inside a PKI directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Subject attribute `UID` (userId, RFC 4519), where Apple puts the bundle id.
pub(crate) const OID_UID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
/// Apple extension marking an APNs development (sandbox) client certificate.
pub(crate) const OID_APNS_DEVELOPMENT: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 1];
/// Apple extension marking an APNs production client certificate.
pub(crate) const OID_APNS_PRODUCTION: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 2];
/// Apple extension listing the topics of a universal certificate.
pub(crate) const OID_APNS_TOPICS: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 6];

/// CN prefix of a sandbox-only iOS push certificate.
pub const CN_PREFIX_SANDBOX: &str = "Apple Development IOS Push Services: ";
/// CN prefix of a production-only iOS push certificate.
pub const CN_PREFIX_PRODUCTION: &str = "Apple Production IOS Push Services: ";
/// CN prefix of a universal ("Sandbox & Production") push certificate.
pub const CN_PREFIX_UNIVERSAL: &str = "Apple Push Services: ";

/// Validity of provider certificates: Apple issues them for one year.
const PROVIDER_VALIDITY: Duration = Duration::days(365);
/// Validity of the server certificate: 825 days is the longest Apple platforms accept for a
/// TLS server certificate, even from a private CA.
const SERVER_VALIDITY: Duration = Duration::days(825);
/// Validity of the root CA: long enough that a `certs/` directory outlives its users.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Certificates start a little in the past so a client whose clock lags still accepts them.
const BACKDATE: Duration = Duration::hours(1);
/// Longest topic accepted when minting; bundle ids are far shorter, and topics become file
/// names.
const MAX_TOPIC_LEN: usize = 200;

/// Everything that can go wrong minting, writing or loading the PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `manifest.json` is not the JSON this code writes.
    #[error("{}: invalid manifest: {source}", path.display())]
    ManifestJson {
        /// The manifest file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest was written by a newer (or unknown) version.
    #[error("manifest version {0} is not supported (expected {MANIFEST_VERSION})")]
    ManifestVersion(u32),
    /// The manifest is well-formed JSON but lists something inconsistent or is missing a file.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A file listed in the manifest does not hold the PEM object its role promises.
    #[error("{}: expected {what} in PEM form", path.display())]
    Pem {
        /// The file that failed to parse.
        path: PathBuf,
        /// What the file should contain ("certificate", "private key", ...).
        what: &'static str,
    },
    /// `ca-key.pem` is not the key of `ca.pem`, so nothing it signs would verify.
    #[error("the CA private key does not belong to the CA certificate")]
    CaKeyMismatch,
    /// A topic is empty, too long or holds characters outside `[A-Za-z0-9._-]`.
    #[error("invalid topic {0:?}: expected 1-200 characters from A-Z a-z 0-9 . _ - starting with a letter or digit")]
    InvalidTopic(String),
    /// A team id is not 10 uppercase letters or digits.
    #[error("invalid team id {0:?}: expected 10 characters from A-Z 0-9")]
    InvalidTeamId(String),
    /// A key id is not 10 uppercase letters or digits.
    #[error("invalid key id {0:?}: expected 10 characters from A-Z 0-9")]
    InvalidKeyId(String),
    /// An auth key with this key id already exists; key ids must identify one key.
    #[error("an auth key with key id {0:?} already exists")]
    DuplicateKeyId(String),
    /// A `.p8` file is not a P-256 private key in PKCS#8 PEM form.
    #[error("auth key {0}: not a P-256 private key in PKCS#8 PEM form")]
    BadAuthKey(String),
    /// A certificate environment name other than sandbox, production or universal.
    #[error("unknown certificate environment {0:?}: expected sandbox, production or universal")]
    UnknownEnvironment(String),
}

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
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sandbox" => Ok(CertEnvironment::Sandbox),
            "production" => Ok(CertEnvironment::Production),
            "universal" => Ok(CertEnvironment::Universal),
            other => Err(CertError::UnknownEnvironment(other.to_owned())),
        }
    }
}

/// A provider (client) certificate and its key, as a provider library would load them.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderCert {
    /// The certificate, PEM-encoded, signed by the simulator's CA.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The bundle id in the subject's UID (and CN); the topic the certificate pushes to.
    pub topic: String,
    /// Which environments the certificate is valid for.
    pub environment: CertEnvironment,
    /// The team id in the subject's OU.
    pub team_id: String,
    /// File name without extension: the certificate lives in `<stem>.pem`, the key in
    /// `<stem>-key.pem`.
    pub file_stem: String,
}

impl ProviderCert {
    /// The certificate's file name inside the PKI directory.
    pub fn cert_file_name(&self) -> String {
        format!("{}.pem", self.file_stem)
    }

    /// The private key's file name inside the PKI directory.
    pub fn key_file_name(&self) -> String {
        format!("{}-key.pem", self.file_stem)
    }
}

impl fmt::Debug for ProviderCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderCert")
            .field("topic", &self.topic)
            .field("environment", &self.environment)
            .field("team_id", &self.team_id)
            .field("file_stem", &self.file_stem)
            .finish_non_exhaustive()
    }
}

/// A `.p8` signing key for token-based (JWT) auth, as Apple's developer portal issues it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// The 10-character key id providers put in the JWT header's `kid`.
    pub key_id: String,
    /// The 10-character team id providers put in the JWT claim `iss`.
    pub team_id: String,
    /// Topics the key may push to; empty for a team-scoped key that may push to any topic.
    pub topics: Vec<String>,
    /// The P-256 private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub p8_pem: String,
}

impl AuthKey {
    /// Apple's file name for the key: `AuthKey_<KEYID>.p8`.
    pub fn file_name(&self) -> String {
        format!("AuthKey_{}.p8", self.key_id)
    }

    /// Whether the key may sign for `topic` (team-scoped keys may sign for any topic).
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// What a file in a PKI directory is, as recorded in `manifest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// `ca.pem`: the root CA certificate.
    Ca,
    /// `ca-key.pem`: the root CA's private key, needed to mint more certificates later.
    CaKey,
    /// `server.pem`: the server certificate the simulator presents.
    Server,
    /// `server-key.pem`: its private key.
    ServerKey,
    /// A provider certificate (`provider.pem` or `provider-<topic>-<env>.pem`).
    Provider,
    /// A provider certificate's private key.
    ProviderKey,
    /// `provider-bundle.pem`: the default provider certificate and key in one file, which
    /// some clients (e.g. Python aioapns) load.
    ProviderBundle,
    /// `ca-bundle.pem`: the CA certificate alone, for `SSL_CERT_FILE` / `NODE_EXTRA_CA_CERTS`.
    CaBundle,
    /// `AuthKey_<KEYID>.p8`: a JWT signing key.
    AuthKey,
}

/// One file listed in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name relative to the PKI directory.
    pub path: String,
    /// What the file holds.
    pub role: FileRole,
    /// Topic of a provider certificate or its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Environment of a provider certificate or its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<CertEnvironment>,
    /// Team id of a provider certificate or an auth key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Key id of an auth key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Topics an auth key is limited to (absent for team-scoped keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

impl ManifestEntry {
    fn new(path: impl Into<String>, role: FileRole) -> Self {
        ManifestEntry {
            path: path.into(),
            role,
            topic: None,
            environment: None,
            team_id: None,
            key_id: None,
            topics: Vec::new(),
        }
    }

    fn for_provider(path: String, role: FileRole, provider: &ProviderCert) -> Self {
        ManifestEntry {
            topic: Some(provider.topic.clone()),
            environment: Some(provider.environment),
            team_id: Some(provider.team_id.clone()),
            ..ManifestEntry::new(path, role)
        }
    }
}

/// The contents of `manifest.json`: which file is what, so a later start can reload the PKI
/// and tools can find the files without guessing names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`MANIFEST_VERSION`].
    pub version: u32,
    /// Every file of the PKI directory.
    pub files: Vec<ManifestEntry>,
}

/// The CA as a signer: the rcgen certificate (its subject and key identifier go into every
/// child) and its key pair.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

/// The simulator's whole PKI: CA, server certificate, provider certificates and auth keys.
///
/// Invariants: the CA key signs certificates that chain to the CA certificate, and there is
/// always a default provider certificate.
pub struct Pki {
    /// The root CA, kept able to sign more certificates.
    ca: Ca,
    /// Server certificate, PEM.
    server_cert_pem: String,
    /// Server private key, PEM.
    server_key_pem: String,
    /// Server certificate, DER, as rustls wants it.
    server_cert_der: CertificateDer<'static>,
    /// Server private key, DER, as rustls wants it.
    server_key_der: PrivateKeyDer<'static>,
    /// The default provider certificate (files `provider.pem` / `provider-key.pem`).
    default_provider: ProviderCert,
    /// Further provider certificates, in minting order.
    other_providers: Vec<ProviderCert>,
    /// JWT signing keys, in minting order.
    auth_keys: Vec<AuthKey>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("default_provider", &self.default_provider)
            .field("other_providers", &self.other_providers)
            .field("auth_keys", &self.auth_keys)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Mints a fresh PKI in memory: CA, server certificate, the default universal provider
    /// certificate for [`DEFAULT_TOPIC`] and the default auth key [`DEFAULT_KEY_ID`].
    pub fn generate() -> Result<Pki, CertError> {
        let ca = mint_ca()?;
        let (server_cert, server_key) = mint_server(&ca)?;
        let default_provider = mint_provider_cert(
            &ca,
            DEFAULT_TOPIC,
            CertEnvironment::Universal,
            DEFAULT_TEAM_ID,
            "provider".to_owned(),
        )?;
        let mut pki = Pki {
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_cert_der: server_cert.der().clone(),
            server_key_der: PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            ca,
            default_provider,
            other_providers: Vec::new(),
            auth_keys: Vec::new(),
        };
        pki.mint_auth_key(DEFAULT_TEAM_ID, Some(DEFAULT_KEY_ID.to_owned()), Vec::new())?;
        Ok(pki)
    }

    /// Loads the PKI from `dir` if it holds a `manifest.json`; otherwise mints a fresh one
    /// and writes it there (creating the directory).
    pub fn load_or_create(dir: &Path) -> Result<Pki, CertError> {
        if dir.join(MANIFEST_FILE).exists() {
            Pki::load(dir)
        } else {
            let pki = Pki::generate()?;
            pki.write(dir)?;
            Ok(pki)
        }
    }

    /// Loads every file listed in `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Pki, CertError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = read_file(&manifest_path)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| CertError::ManifestJson {
                path: manifest_path.clone(),
                source,
            })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(CertError::ManifestVersion(manifest.version));
        }

        let mut ca_cert_pem = None;
        let mut ca_key_pem = None;
        let mut server_cert_pem = None;
        let mut server_key_pem = None;
        let mut provider_entries = Vec::new();
        let mut provider_keys = Vec::new();
        let mut auth_keys: Vec<AuthKey> = Vec::new();

        for entry in &manifest.files {
            let path = manifest_file_path(dir, &entry.path)?;
            match entry.role {
                FileRole::Ca => ca_cert_pem = Some((read_text(&path)?, path)),
                FileRole::CaKey => ca_key_pem = Some((read_text(&path)?, path)),
                FileRole::Server => server_cert_pem = Some((read_text(&path)?, path)),
                FileRole::ServerKey => server_key_pem = Some((read_text(&path)?, path)),
                FileRole::Provider => provider_entries.push((entry, read_text(&path)?)),
                FileRole::ProviderKey => provider_keys.push((entry, read_text(&path)?)),
                FileRole::AuthKey => {
                    let key_id = required(&entry.key_id, "key_id", entry)?;
                    let team_id = required(&entry.team_id, "team_id", entry)?;
                    validate_key_id(&key_id)?;
                    validate_team_id(&team_id)?;
                    if auth_keys.iter().any(|k| k.key_id == key_id) {
                        return Err(CertError::DuplicateKeyId(key_id));
                    }
                    let p8_pem = read_text(&path)?;
                    check_p8(&p8_pem, &key_id)?;
                    auth_keys.push(AuthKey {
                        key_id,
                        team_id,
                        topics: entry.topics.clone(),
                        p8_pem,
                    });
                }
                // Derived files: rewritten from the others on every write.
                FileRole::CaBundle | FileRole::ProviderBundle => {}
            }
        }

        let (ca_cert_pem, ca_path) = ca_cert_pem.ok_or_else(|| missing_role("ca"))?;
        let (ca_key_pem, _) = ca_key_pem.ok_or_else(|| missing_role("ca-key"))?;
        let ca = load_ca(ca_cert_pem, ca_key_pem, &ca_path)?;
        let (server_cert_pem, server_path) =
            server_cert_pem.ok_or_else(|| missing_role("server"))?;
        let (server_key_pem, server_key_path) =
            server_key_pem.ok_or_else(|| missing_role("server-key"))?;
        let server_cert_der =
            CertificateDer::from_pem_slice(server_cert_pem.as_bytes()).map_err(|_| {
                CertError::Pem {
                    path: server_path,
                    what: "certificate",
                }
            })?;
        let server_key_der =
            PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes()).map_err(|_| {
                CertError::Pem {
                    path: server_key_path,
                    what: "private key",
                }
            })?;

        let mut default_provider = None;
        let mut other_providers = Vec::new();
        for (entry, cert_pem) in provider_entries {
            let topic = required(&entry.topic, "topic", entry)?;
            let environment = entry.environment.ok_or_else(|| {
                CertError::Manifest(format!("{} lacks \"environment\"", entry.path))
            })?;
            let team_id = required(&entry.team_id, "team_id", entry)?;
            let file_stem = entry
                .path
                .strip_suffix(".pem")
                .ok_or_else(|| {
                    CertError::Manifest(format!("provider file {} must end in .pem", entry.path))
                })?
                .to_owned();
            let key_pem = provider_keys
                .iter()
                .find(|(k, _)| {
                    k.topic.as_deref() == Some(topic.as_str()) && k.environment == Some(environment)
                })
                .map(|(_, pem)| pem.clone())
                .ok_or_else(|| {
                    CertError::Manifest(format!("no provider-key listed for {}", entry.path))
                })?;
            let provider = ProviderCert {
                cert_pem,
                key_pem,
                topic,
                environment,
                team_id,
                file_stem,
            };
            if provider.file_stem == "provider" && default_provider.is_none() {
                default_provider = Some(provider);
            } else {
                other_providers.push(provider);
            }
        }
        let default_provider = match default_provider {
            Some(p) => p,
            None if !other_providers.is_empty() => other_providers.remove(0),
            None => return Err(missing_role("provider")),
        };

        Ok(Pki {
            ca,
            server_cert_pem,
            server_key_pem,
            server_cert_der,
            server_key_der,
            default_provider,
            other_providers,
            auth_keys,
        })
    }

    /// Writes every file and `manifest.json` into `dir` (created if missing). Private keys
    /// get mode 0600 on unix. The manifest is written last, through a rename, so a crash
    /// mid-write never leaves a manifest naming files that are not there.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let manifest = self.manifest();
        for entry in &manifest.files {
            let contents = self.file_contents(entry);
            let secret = matches!(
                entry.role,
                FileRole::CaKey
                    | FileRole::ServerKey
                    | FileRole::ProviderKey
                    | FileRole::ProviderBundle
                    | FileRole::AuthKey
            );
            write_file(&dir.join(&entry.path), contents.as_bytes(), secret)?;
        }
        let mut json =
            serde_json::to_string_pretty(&manifest).map_err(|source| CertError::ManifestJson {
                path: dir.join(MANIFEST_FILE),
                source,
            })?;
        json.push('\n');
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        write_file(&tmp, json.as_bytes(), false)?;
        let target = dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &target).map_err(|source| CertError::Io {
            path: target,
            source,
        })
    }

    /// The manifest [`Pki::write`] would write: every file, its role and metadata.
    pub fn manifest(&self) -> Manifest {
        let mut files = vec![
            ManifestEntry::new("ca.pem", FileRole::Ca),
            ManifestEntry::new("ca-key.pem", FileRole::CaKey),
            ManifestEntry::new("ca-bundle.pem", FileRole::CaBundle),
            ManifestEntry::new("server.pem", FileRole::Server),
            ManifestEntry::new("server-key.pem", FileRole::ServerKey),
        ];
        for provider in self.providers() {
            files.push(ManifestEntry::for_provider(
                provider.cert_file_name(),
                FileRole::Provider,
                provider,
            ));
            files.push(ManifestEntry::for_provider(
                provider.key_file_name(),
                FileRole::ProviderKey,
                provider,
            ));
        }
        files.push(ManifestEntry::for_provider(
            "provider-bundle.pem".to_owned(),
            FileRole::ProviderBundle,
            &self.default_provider,
        ));
        for key in &self.auth_keys {
            files.push(ManifestEntry {
                team_id: Some(key.team_id.clone()),
                key_id: Some(key.key_id.clone()),
                topics: key.topics.clone(),
                ..ManifestEntry::new(key.file_name(), FileRole::AuthKey)
            });
        }
        Manifest {
            version: MANIFEST_VERSION,
            files,
        }
    }

    /// The text of the file a manifest entry of this PKI names.
    fn file_contents(&self, entry: &ManifestEntry) -> String {
        let provider = || {
            self.providers()
                .find(|p| entry.path == p.cert_file_name() || entry.path == p.key_file_name())
                .unwrap_or(&self.default_provider)
        };
        let auth_key = || {
            self.auth_keys
                .iter()
                .find(|k| Some(&k.key_id) == entry.key_id.as_ref())
                .map(|k| k.p8_pem.clone())
                .unwrap_or_default()
        };
        match entry.role {
            FileRole::Ca | FileRole::CaBundle => self.ca.cert_pem.clone(),
            FileRole::CaKey => self.ca.key_pem.clone(),
            FileRole::Server => self.server_cert_pem.clone(),
            FileRole::ServerKey => self.server_key_pem.clone(),
            FileRole::Provider => provider().cert_pem.clone(),
            FileRole::ProviderKey => provider().key_pem.clone(),
            FileRole::ProviderBundle => format!(
                "{}{}",
                self.default_provider.cert_pem, self.default_provider.key_pem
            ),
            FileRole::AuthKey => auth_key(),
        }
    }

    /// Mints a provider certificate for `topic`, signed by the CA, and keeps it. A
    /// certificate with the same topic and environment is replaced (it would share files).
    pub fn mint_provider(
        &mut self,
        topic: &str,
        environment: CertEnvironment,
        team_id: &str,
    ) -> Result<&ProviderCert, CertError> {
        validate_topic(topic)?;
        validate_team_id(team_id)?;
        let same = |p: &ProviderCert| p.topic == topic && p.environment == environment;
        if same(&self.default_provider) {
            let stem = self.default_provider.file_stem.clone();
            self.default_provider =
                mint_provider_cert(&self.ca, topic, environment, team_id, stem)?;
            return Ok(&self.default_provider);
        }
        let stem = format!("provider-{topic}-{environment}");
        let cert = mint_provider_cert(&self.ca, topic, environment, team_id, stem)?;
        let index = match self.other_providers.iter().position(same) {
            Some(i) => {
                self.other_providers[i] = cert;
                i
            }
            None => {
                self.other_providers.push(cert);
                self.other_providers.len() - 1
            }
        };
        Ok(&self.other_providers[index])
    }

    /// Mints a `.p8` auth key. `key_id` must be 10 characters A-Z/0-9 and unused; `None`
    /// picks a random one. Empty `topics` makes a team-scoped key.
    pub fn mint_auth_key(
        &mut self,
        team_id: &str,
        key_id: Option<String>,
        topics: Vec<String>,
    ) -> Result<&AuthKey, CertError> {
        validate_team_id(team_id)?;
        for topic in &topics {
            validate_topic(topic)?;
        }
        let key_id = match key_id {
            Some(id) => {
                validate_key_id(&id)?;
                if self.auth_key(&id).is_some() {
                    return Err(CertError::DuplicateKeyId(id));
                }
                id
            }
            None => loop {
                let id = random_key_id();
                if self.auth_key(&id).is_none() {
                    break id;
                }
            },
        };
        let p8_pem = generate_p8()?;
        let index = self.auth_keys.len();
        self.auth_keys.push(AuthKey {
            key_id,
            team_id: team_id.to_owned(),
            topics,
            p8_pem,
        });
        Ok(&self.auth_keys[index])
    }

    /// The CA certificate, DER, for a rustls `RootCertStore` or client-cert verifier.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der.clone()
    }

    /// The CA certificate, PEM, for clients' trust stores.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA private key, PEM, for exporting a PKI that another tool will extend.
    pub fn ca_key_pem(&self) -> &str {
        &self.ca.key_pem
    }

    /// The server certificate chain (leaf only; clients trust the CA directly).
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.server_cert_der.clone()]
    }

    /// The server's private key, for `ServerConfig::with_single_cert`.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        self.server_key_der.clone_key()
    }

    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server private key, PEM.
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// Every provider certificate, the default one first.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderCert> {
        std::iter::once(&self.default_provider).chain(self.other_providers.iter())
    }

    /// The first provider certificate for `topic`, default first.
    pub fn provider(&self, topic: &str) -> Option<&ProviderCert> {
        self.providers().find(|p| p.topic == topic)
    }

    /// The provider certificate for `topic` that is valid for exactly `environment`.
    pub fn provider_for(&self, topic: &str, environment: CertEnvironment) -> Option<&ProviderCert> {
        self.providers()
            .find(|p| p.topic == topic && p.environment == environment)
    }

    /// The default provider certificate (`provider.pem`), used by demos and most tests.
    pub fn default_provider(&self) -> &ProviderCert {
        &self.default_provider
    }

    /// Every auth key, in minting order.
    pub fn auth_keys(&self) -> &[AuthKey] {
        &self.auth_keys
    }

    /// The auth key with this key id.
    pub fn auth_key(&self, key_id: &str) -> Option<&AuthKey> {
        self.auth_keys.iter().find(|k| k.key_id == key_id)
    }
}

/// Encodes a DER tag-length-value with a definite length (short or long form).
pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// DER tag of `UTF8String`.
pub(crate) const TAG_UTF8_STRING: u8 = 0x0C;
/// DER tag of a constructed `SEQUENCE`.
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// Encodes Apple's topic-list extension value (OID …6.3.6): a `SEQUENCE` alternating
/// `UTF8String topic` and `SEQUENCE { UTF8String kind }`.
pub(crate) fn topic_list_der(topics: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (topic, kind) in topics {
        body.extend(der_tlv(TAG_UTF8_STRING, topic.as_bytes()));
        body.extend(der_tlv(
            TAG_SEQUENCE,
            &der_tlv(TAG_UTF8_STRING, kind.as_bytes()),
        ));
    }
    der_tlv(TAG_SEQUENCE, &body)
}

/// A DER `NULL`, the value Apple's marker extensions carry.
const DER_NULL: [u8; 2] = [0x05, 0x00];

fn mint_ca() -> Result<Ca, CertError> {
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

/// Rebuilds a signing CA from its PEM files. rcgen needs an issuer `Certificate`; re-signing
/// the parsed parameters yields one with the same subject and key, so children verify
/// against the original `ca.pem`.
fn load_ca(cert_pem: String, key_pem: String, path: &Path) -> Result<Ca, CertError> {
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

fn mint_server(ca: &Ca) -> Result<(rcgen::Certificate, KeyPair), CertError> {
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
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert, key))
}

fn mint_provider_cert(
    ca: &Ca,
    topic: &str,
    environment: CertEnvironment,
    team_id: &str,
    file_stem: String,
) -> Result<ProviderCert, CertError> {
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
        let voip = format!("{topic}.voip");
        let complication = format!("{topic}.complication");
        let value = topic_list_der(&[
            (topic, "app"),
            (&voip, "voip"),
            (&complication, "complication"),
        ]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(OID_APNS_TOPICS, value));
    }
    set_validity(&mut params, PROVIDER_VALIDITY);
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok(ProviderCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        topic: topic.to_owned(),
        environment,
        team_id: team_id.to_owned(),
        file_stem,
    })
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
fn generate_p8() -> Result<String, CertError> {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| CertError::BadAuthKey("(new key)".to_owned()))?;
    Ok(pem.to_string())
}

/// Checks that a loaded `.p8` is a P-256 PKCS#8 key, so errors surface at startup.
fn check_p8(pem: &str, key_id: &str) -> Result<(), CertError> {
    use p256::pkcs8::DecodePrivateKey;
    p256::SecretKey::from_pkcs8_pem(pem)
        .map(|_| ())
        .map_err(|_| CertError::BadAuthKey(key_id.to_owned()))
}

fn random_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn is_apple_id(s: &str) -> bool {
    s.len() == 10
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn validate_team_id(team_id: &str) -> Result<(), CertError> {
    if is_apple_id(team_id) {
        Ok(())
    } else {
        Err(CertError::InvalidTeamId(team_id.to_owned()))
    }
}

fn validate_key_id(key_id: &str) -> Result<(), CertError> {
    if is_apple_id(key_id) {
        Ok(())
    } else {
        Err(CertError::InvalidKeyId(key_id.to_owned()))
    }
}

/// Topics become file names, so only bundle-id characters are allowed.
fn validate_topic(topic: &str) -> Result<(), CertError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidTopic(topic.to_owned()))
    }
}

/// Resolves a manifest path, refusing anything but a plain file name in the directory.
fn manifest_file_path(dir: &Path, name: &str) -> Result<PathBuf, CertError> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && Path::new(name).components().count() == 1;
    if plain {
        Ok(dir.join(name))
    } else {
        Err(CertError::Manifest(format!(
            "{name:?} is not a plain file name"
        )))
    }
}

fn required(
    value: &Option<String>,
    field: &str,
    entry: &ManifestEntry,
) -> Result<String, CertError> {
    value
        .clone()
        .ok_or_else(|| CertError::Manifest(format!("{} lacks {field:?}", entry.path)))
}

fn missing_role(role: &str) -> CertError {
    CertError::Manifest(format!("no file with role {role:?}"))
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if secret {
            options.mode(0o600);
            // `mode` only applies to new files; tighten one that already exists.
            if path.exists() {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_err)?;
    io::Write::write_all(&mut file, contents).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_tlv_short_and_long_lengths() {
        assert_eq!(der_tlv(0x0C, b"ab"), vec![0x0C, 0x02, b'a', b'b']);
        let long = vec![0x41; 200];
        let enc = der_tlv(0x04, &long);
        assert_eq!(&enc[..3], &[0x04, 0x81, 200]);
        assert_eq!(enc.len(), 203);
        let longer = vec![0x41; 300];
        let enc = der_tlv(0x04, &longer);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2C]);
    }

    #[test]
    fn topic_list_bytes() {
        let der = topic_list_der(&[("a.b", "app"), ("a.b.voip", "voip")]);
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
        assert!("Sandbox".parse::<CertEnvironment>().is_err());
        assert!(CertEnvironment::Universal.allows(Environment::Sandbox));
        assert!(CertEnvironment::Universal.allows(Environment::Production));
        assert!(CertEnvironment::Sandbox.allows(Environment::Sandbox));
        assert!(!CertEnvironment::Sandbox.allows(Environment::Production));
        assert!(!CertEnvironment::Production.allows(Environment::Sandbox));
    }

    #[test]
    fn generate_has_defaults() {
        let pki = Pki::generate().unwrap();
        let provider = pki.default_provider();
        assert_eq!(provider.topic, DEFAULT_TOPIC);
        assert_eq!(provider.environment, CertEnvironment::Universal);
        assert_eq!(provider.team_id, DEFAULT_TEAM_ID);
        assert_eq!(provider.cert_file_name(), "provider.pem");
        assert_eq!(pki.provider(DEFAULT_TOPIC), Some(provider));
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        assert_eq!(key.team_id, DEFAULT_TEAM_ID);
        assert!(key.p8_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(key.file_name(), "AuthKey_SIMKEY0001.p8");
        assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pki.server_chain().len(), 1);
    }

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
    fn mint_validates_inputs() {
        let mut pki = Pki::generate().unwrap();
        for bad in ["", "../etc", "a/b", ".hidden", "a b"] {
            assert!(matches!(
                pki.mint_provider(bad, CertEnvironment::Sandbox, DEFAULT_TEAM_ID),
                Err(CertError::InvalidTopic(_))
            ));
        }
        assert!(matches!(
            pki.mint_provider("com.x", CertEnvironment::Sandbox, "short"),
            Err(CertError::InvalidTeamId(_))
        ));
        assert!(matches!(
            pki.mint_auth_key(DEFAULT_TEAM_ID, Some("lowercase1".into()), vec![]),
            Err(CertError::InvalidKeyId(_))
        ));
        assert!(matches!(
            pki.mint_auth_key(DEFAULT_TEAM_ID, Some(DEFAULT_KEY_ID.into()), vec![]),
            Err(CertError::DuplicateKeyId(_))
        ));
        let key = pki
            .mint_auth_key("TEAM000002", None, vec!["com.x".into()])
            .unwrap();
        assert!(is_apple_id(&key.key_id));
        assert!(key.allows_topic("com.x") && !key.allows_topic("com.y"));
    }

    #[test]
    fn mint_provider_replaces_same_topic_and_environment() {
        let mut pki = Pki::generate().unwrap();
        let first = pki
            .mint_provider("com.other", CertEnvironment::Sandbox, DEFAULT_TEAM_ID)
            .unwrap()
            .clone();
        assert_eq!(first.file_stem, "provider-com.other-sandbox");
        let second = pki
            .mint_provider("com.other", CertEnvironment::Sandbox, "TEAM000002")
            .unwrap()
            .clone();
        assert_ne!(first.cert_pem, second.cert_pem);
        assert_eq!(pki.providers().count(), 2);
        let again = pki
            .mint_provider(DEFAULT_TOPIC, CertEnvironment::Universal, "TEAM000002")
            .unwrap()
            .clone();
        assert_eq!(again.file_stem, "provider");
        assert_eq!(pki.default_provider().team_id, "TEAM000002");
        assert_eq!(pki.providers().count(), 2);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "apns-sim-certs-{name}-{}-{}",
            std::process::id(),
            random_key_id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn write_then_reload_same_pki() {
        let dir = temp_dir("reload");
        let mut pki = Pki::load_or_create(&dir).unwrap();
        pki.mint_provider("com.second", CertEnvironment::Production, DEFAULT_TEAM_ID)
            .unwrap();
        pki.mint_auth_key(
            "TEAM000002",
            Some("KEY0000002".into()),
            vec!["com.second".into()],
        )
        .unwrap();
        pki.write(&dir).unwrap();

        for file in [
            "ca.pem",
            "ca-key.pem",
            "ca-bundle.pem",
            "server.pem",
            "server-key.pem",
            "provider.pem",
            "provider-key.pem",
            "provider-bundle.pem",
            "provider-com.second-production.pem",
            "provider-com.second-production-key.pem",
            "AuthKey_SIMKEY0001.p8",
            "AuthKey_KEY0000002.p8",
            MANIFEST_FILE,
        ] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca-key.pem", "server-key.pem", "AuthKey_SIMKEY0001.p8"] {
                let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        let bundle = fs::read_to_string(dir.join("provider-bundle.pem")).unwrap();
        assert!(bundle.contains("BEGIN CERTIFICATE") && bundle.contains("BEGIN PRIVATE KEY"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(manifest["version"], 1);
        assert_eq!(
            manifest["files"][0],
            serde_json::json!({"path": "ca.pem", "role": "ca"})
        );

        let reloaded = Pki::load_or_create(&dir).unwrap();
        assert_eq!(reloaded.ca_cert_pem(), pki.ca_cert_pem());
        assert_eq!(reloaded.server_cert_pem(), pki.server_cert_pem());
        assert_eq!(reloaded.default_provider(), pki.default_provider());
        assert_eq!(reloaded.provider("com.second"), pki.provider("com.second"));
        assert_eq!(reloaded.auth_keys(), pki.auth_keys());
        assert_eq!(
            reloaded.auth_key("KEY0000002").unwrap().topics,
            vec!["com.second".to_owned()]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_rejects_bad_manifests() {
        let dir = temp_dir("bad");
        let pki = Pki::load_or_create(&dir).unwrap();
        let manifest_path = dir.join(MANIFEST_FILE);

        fs::write(&manifest_path, "{not json").unwrap();
        assert!(matches!(
            Pki::load(&dir),
            Err(CertError::ManifestJson { .. })
        ));

        let mut manifest = pki.manifest();
        manifest.version = 2;
        fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert!(matches!(
            Pki::load(&dir),
            Err(CertError::ManifestVersion(2))
        ));

        let mut manifest = pki.manifest();
        manifest.files[0].path = "../ca.pem".into();
        fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert!(matches!(Pki::load(&dir), Err(CertError::Manifest(_))));

        let mut manifest = pki.manifest();
        manifest.files.retain(|f| f.role != FileRole::CaKey);
        fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert!(matches!(Pki::load(&dir), Err(CertError::Manifest(_))));

        // A CA key that is not the CA's.
        fs::write(&manifest_path, serde_json::to_vec(&pki.manifest()).unwrap()).unwrap();
        let other = Pki::generate().unwrap();
        fs::write(dir.join("ca-key.pem"), other.ca_key_pem()).unwrap();
        assert!(matches!(Pki::load(&dir), Err(CertError::CaKeyMismatch)));

        fs::write(dir.join("ca.pem"), "garbage").unwrap();
        assert!(matches!(Pki::load(&dir), Err(CertError::Pem { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
