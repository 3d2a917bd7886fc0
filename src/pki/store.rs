//! The simulator's PKI as a value and as a directory: [`Pki`], the layout of `certs/` and its
//! `manifest.json`.
//!
//! On first start the simulator mints (see [`super::mint`]) a root CA, a server certificate
//! covering `localhost` and Apple's push host names, a provider (client) certificate shaped
//! like the ones Apple issues, and a `.p8` ES256 auth key for token-based auth.
//! [`Pki::write`] puts them in a directory with a `manifest.json`; [`Pki::load_or_create`]
//! reuses that directory on later starts, so clients configured once keep working. Tests
//! use [`Pki::generate`], which never touches the disk.
//!
//! Every file is checked when it is loaded (PEM, the CA key against the CA certificate, each
//! `.p8` key), so a broken directory is reported at startup with the file at fault.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::mint::{self, Ca};
use super::profile::{CertEnvironment, TopicListError};

/// The topic (bundle id) of the provider certificate every PKI starts with, so that a demo
/// and the tests work without minting anything.
pub const DEFAULT_TOPIC: &str = "com.example.app";

/// The 10-character team id of the default provider certificate and auth key; Apple team
/// ids are 10 uppercase alphanumerics.
pub const DEFAULT_TEAM_ID: &str = "SIMTEAM001";

/// The bundles of the embedded demo fleet (`scenarios/demo.toml`), owned by
/// [`DEFAULT_TEAM_ID`] in every PKI: APNs ties each bundle id to the team that registered it,
/// so a token of another team may not push to them (see [`Pki::bundle_owners`]).
pub const DEMO_TOPICS: &[&str] = &[DEFAULT_TOPIC, "com.example.other"];

/// The 10-character key id of the default `.p8` auth key (its file is `AuthKey_SIMKEY0001.p8`).
pub const DEFAULT_KEY_ID: &str = "SIMKEY0001";

/// Version of `manifest.json` this code writes and understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Name of the manifest file inside a PKI directory.
pub const MANIFEST_FILE: &str = "manifest.json";

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
    /// A `.p8` file listed in the manifest is not a P-256 private key in PKCS#8 PEM form:
    /// replace it with the key Apple issued, or mint a new one.
    #[error("{}: auth key {key_id} is not a P-256 private key in PKCS#8 PEM form", path.display())]
    BadAuthKey {
        /// The key id the manifest gives the file.
        key_id: String,
        /// The `.p8` file.
        path: PathBuf,
    },
    /// A freshly generated auth key could not be written as PKCS#8 PEM (a bug in the
    /// crypto stack, never the user's input).
    #[error("a new auth key could not be encoded as PKCS#8 PEM")]
    EncodeAuthKey,
    /// A universal certificate's topic list could not be encoded (a topic beyond what DER
    /// lengths allow).
    #[error("topic list extension: {0}")]
    TopicList(#[from] TopicListError),
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
    /// Mints a provider certificate signed by `ca` that will live in `<file_stem>.pem`.
    fn mint(
        ca: &Ca,
        topic: &str,
        environment: CertEnvironment,
        team_id: &str,
        file_stem: String,
    ) -> Result<ProviderCert, CertError> {
        let minted = ca.mint_provider(topic, environment, team_id)?;
        Ok(ProviderCert {
            cert_pem: minted.cert_pem,
            key_pem: minted.key_pem,
            topic: topic.to_owned(),
            environment,
            team_id: team_id.to_owned(),
            file_stem,
        })
    }

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

/// What [`Pki::read_auth_keys`] reads from a PKI directory for token auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFolder {
    /// Every auth key the manifest lists, checked.
    pub auth_keys: Vec<AuthKey>,
    /// `(bundle, team)` pairs, as [`Pki::bundle_owners`] gives them.
    pub bundle_owners: Vec<(String, String)>,
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
        let ca = Ca::mint()?;
        let server = ca.mint_server()?;
        let default_provider = ProviderCert::mint(
            &ca,
            DEFAULT_TOPIC,
            CertEnvironment::Universal,
            DEFAULT_TEAM_ID,
            "provider".to_owned(),
        )?;
        let mut pki = Pki {
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            server_cert_der: server.cert_der,
            server_key_der: server.key_der,
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
        let manifest = read_manifest(dir)?;

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
                    let key = read_auth_key(entry, path, &auth_keys)?;
                    auth_keys.push(key);
                }
                // Derived files: rewritten from the others on every write.
                FileRole::CaBundle | FileRole::ProviderBundle => {}
            }
        }

        let (ca_cert_pem, ca_path) = ca_cert_pem.ok_or_else(|| missing_role("ca"))?;
        let (ca_key_pem, _) = ca_key_pem.ok_or_else(|| missing_role("ca-key"))?;
        let ca = Ca::from_pem(ca_cert_pem, ca_key_pem, &ca_path)?;
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

    /// Re-reads only what token auth needs from a PKI directory: `manifest.json` and the
    /// `.p8` files it lists, plus the team and topic of each provider certificate as the
    /// manifest records them (the certificates themselves are not read). The running
    /// simulator calls this when a token names a key it does not know, so keys minted by
    /// `apns-sim certs auth-key` while it runs work without a restart. Checks every `.p8`
    /// as [`Pki::load`] does.
    pub fn read_auth_keys(dir: &Path) -> Result<KeyFolder, CertError> {
        let manifest = read_manifest(dir)?;
        let mut auth_keys: Vec<AuthKey> = Vec::new();
        let mut providers = Vec::new();
        for entry in &manifest.files {
            match entry.role {
                FileRole::AuthKey => {
                    let path = manifest_file_path(dir, &entry.path)?;
                    let key = read_auth_key(entry, path, &auth_keys)?;
                    auth_keys.push(key);
                }
                FileRole::Provider => providers.push((
                    required(&entry.topic, "topic", entry)?,
                    required(&entry.team_id, "team_id", entry)?,
                )),
                _ => {}
            }
        }
        let bundle_owners = bundle_owners(
            providers
                .iter()
                .map(|(t, team)| (t.as_str(), team.as_str())),
            &auth_keys,
        );
        Ok(KeyFolder {
            auth_keys,
            bundle_owners,
        })
    }

    /// Which team owns which bundle, as `(bundle, team)` pairs: the topic of every provider
    /// certificate under its team (OU), every topic of a topic-specific auth key under the
    /// key's team, and the demo fleet's [`DEMO_TOPICS`] under [`DEFAULT_TEAM_ID`]. A bundle
    /// may have more than one owner (certificates for one topic minted for two teams).
    pub fn bundle_owners(&self) -> Vec<(String, String)> {
        bundle_owners(
            self.providers()
                .map(|p| (p.topic.as_str(), p.team_id.as_str())),
            &self.auth_keys,
        )
    }

    /// Writes every file and `manifest.json` into `dir` (created if missing). Private keys
    /// get mode 0600 on unix. Each file is written under a temporary name and renamed into
    /// place, and the manifest last, so a crash mid-write never leaves a manifest naming
    /// files that are not there, and a running simulator that re-reads the folder
    /// ([`Pki::read_auth_keys`]) never sees a half-written file.
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
        write_file(&dir.join(MANIFEST_FILE), json.as_bytes(), false)
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
                ProviderCert::mint(&self.ca, topic, environment, team_id, stem)?;
            return Ok(&self.default_provider);
        }
        let stem = format!("provider-{topic}-{environment}");
        let cert = ProviderCert::mint(&self.ca, topic, environment, team_id, stem)?;
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
                let id = mint::random_key_id();
                if self.auth_key(&id).is_none() {
                    break id;
                }
            },
        };
        let p8_pem = mint::mint_p8()?;
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

    /// Adds an auth key without checking its PEM, so tests of the layers above can hold a
    /// PKI whose key is broken (loading and minting never produce one).
    #[cfg(test)]
    pub(crate) fn insert_auth_key_unchecked(&mut self, key: AuthKey) {
        self.auth_keys.push(key);
    }
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

/// Reads and checks `dir/manifest.json`.
fn read_manifest(dir: &Path) -> Result<Manifest, CertError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = read_file(&manifest_path)?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| CertError::ManifestJson {
            path: manifest_path,
            source,
        })?;
    if manifest.version != MANIFEST_VERSION {
        return Err(CertError::ManifestVersion(manifest.version));
    }
    Ok(manifest)
}

/// The auth key of one manifest entry at `path`, checked against the keys read before it.
fn read_auth_key(
    entry: &ManifestEntry,
    path: PathBuf,
    earlier: &[AuthKey],
) -> Result<AuthKey, CertError> {
    let key_id = required(&entry.key_id, "key_id", entry)?;
    let team_id = required(&entry.team_id, "team_id", entry)?;
    validate_key_id(&key_id)?;
    validate_team_id(&team_id)?;
    if earlier.iter().any(|k| k.key_id == key_id) {
        return Err(CertError::DuplicateKeyId(key_id));
    }
    let p8_pem = read_text(&path)?;
    if !mint::is_p8(&p8_pem) {
        return Err(CertError::BadAuthKey { key_id, path });
    }
    Ok(AuthKey {
        key_id,
        team_id,
        topics: entry.topics.clone(),
        p8_pem,
    })
}

/// `(bundle, team)` pairs from provider certificates' `(topic, team)`, the topics of
/// topic-specific keys, and the demo topics under the default team; without repeats.
fn bundle_owners<'a>(
    providers: impl Iterator<Item = (&'a str, &'a str)>,
    keys: &'a [AuthKey],
) -> Vec<(String, String)> {
    let demo = DEMO_TOPICS.iter().map(|t| (*t, DEFAULT_TEAM_ID));
    let key_topics = keys
        .iter()
        .flat_map(|k| k.topics.iter().map(|t| (t.as_str(), k.team_id.as_str())));
    let pairs: BTreeSet<(String, String)> = demo
        .chain(providers)
        .chain(key_topics)
        .map(|(bundle, team)| (bundle.to_owned(), team.to_owned()))
        .collect();
    pairs.into_iter().collect()
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

/// Writes `contents` to `<path>.tmp`, then renames it to `path`, so readers see the old
/// file or the new one, never a truncated one.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let tmp_err = |source| CertError::Io {
        path: tmp.clone(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if secret {
            options.mode(0o600);
            // `mode` only applies to new files; tighten a stale one left by a crash.
            if tmp.exists() {
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(tmp_err)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(tmp_err)?;
    io::Write::write_all(&mut file, contents).map_err(tmp_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            mint::random_key_id()
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

    #[test]
    fn load_names_a_corrupt_auth_key_and_its_file() {
        let dir = temp_dir("p8");
        Pki::load_or_create(&dir).unwrap();
        let file = dir.join("AuthKey_SIMKEY0001.p8");
        fs::write(
            &file,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Pki::load(&dir).unwrap_err();
        assert!(
            matches!(&err, CertError::BadAuthKey { key_id, path } if key_id == DEFAULT_KEY_ID && *path == file),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: auth key SIMKEY0001 is not a P-256 private key in PKCS#8 PEM form",
                file.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
