//! A provider's files on disk: where a certificate folder (as `apns-sim certs` and `serve`
//! write it) keeps the default provider identity, the CA and the default `.p8` key, and how
//! to turn those files into TLS client configurations and a signing key.
//!
//! The CLI's `push`, `feedback` and `device` commands derive every file from one folder
//! ([`CertsDir`]), so the installed binary works from any working directory; tests use the
//! same types to connect to a `serve` process.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;

use crate::pki::{AuthKey, DEFAULT_KEY_ID};
use crate::tls::{self, ClientIdentity, TlsError};

/// File name of the default provider certificate in a certificate folder.
pub const PROVIDER_CERT_FILE: &str = "provider.pem";
/// File name of the default provider certificate's private key.
pub const PROVIDER_KEY_FILE: &str = "provider-key.pem";
/// File name of the CA certificate that signed the simulator's server certificate.
pub const CA_FILE: &str = "ca.pem";
/// Prefix of Apple's `.p8` file names, `AuthKey_<KEYID>.p8`; the key id follows it.
const AUTH_KEY_PREFIX: &str = "AuthKey_";

/// Why a provider's files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// A file could not be read (missing, unreadable).
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The certificate and key files are not a PEM certificate chain and private key.
    #[error("{} and {} are not a PEM certificate and private key", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What the PEM reader said.
        #[source]
        source: TlsError,
    },
    /// rustls refused the material: a CA file without a usable certificate, or a key that
    /// does not belong to its certificate.
    #[error("{files} cannot be used as a TLS client configuration")]
    Config {
        /// The files involved, as the user named them.
        files: FileList,
        /// What the TLS layer said.
        #[source]
        source: TlsError,
    },
    /// No key id was given and the `.p8` file name does not carry one.
    #[error("{} is not named AuthKey_<KEYID>.p8, so its key id must be given", path.display())]
    NoKeyId {
        /// The `.p8` file.
        path: PathBuf,
    },
}

/// The files a [`FilesError::Config`] was built from, for its message.
#[derive(Debug, Clone)]
pub struct FileList(pub Vec<PathBuf>);

impl fmt::Display for FileList {
    /// `a, b and c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(|p| p.display().to_string()).collect();
        match names.split_last() {
            None => Ok(()),
            Some((last, [])) => f.write_str(last),
            Some((last, rest)) => write!(f, "{} and {last}", rest.join(", ")),
        }
    }
}

/// A certificate folder as [`crate::pki::Pki::write`] lays it out: the default provider
/// identity, the CA and the default auth key live under fixed names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsDir(pub PathBuf);

impl CertsDir {
    /// The default provider certificate, `provider.pem`.
    pub fn provider_cert(&self) -> PathBuf {
        self.0.join(PROVIDER_CERT_FILE)
    }

    /// Its private key, `provider-key.pem`.
    pub fn provider_key(&self) -> PathBuf {
        self.0.join(PROVIDER_KEY_FILE)
    }

    /// The CA certificate, `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.0.join(CA_FILE)
    }

    /// The default `.p8` signing key, `AuthKey_SIMKEY0001.p8`.
    pub fn default_auth_key(&self) -> PathBuf {
        self.0.join(format!("{AUTH_KEY_PREFIX}{DEFAULT_KEY_ID}.p8"))
    }

    /// The default provider identity and CA of this folder, verified against `server_name`.
    pub fn provider_files(&self, server_name: impl Into<String>) -> ProviderTlsFiles {
        ProviderTlsFiles {
            cert: self.provider_cert(),
            key: self.provider_key(),
            ca: self.ca(),
            server_name: server_name.into(),
        }
    }
}

/// TLS material of a provider, as files: what a provider library is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTlsFiles {
    /// Provider certificate (PEM), presented as the TLS client certificate.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that signed the simulator's server certificate (PEM), the only trust anchor.
    pub ca: PathBuf,
    /// Name to send (SNI) and verify the server certificate against; an Apple host name
    /// selects that host's environment.
    pub server_name: String,
}

impl ProviderTlsFiles {
    /// A configuration that presents the provider certificate (certificate auth), naming
    /// the file at fault on error.
    pub fn client_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, FilesError> {
        let identity =
            ClientIdentity::from_pem(&read(&self.cert)?, &read(&self.key)?).map_err(|source| {
                FilesError::Identity {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                    source,
                }
            })?;
        tls::client_config(&read(&self.ca)?, Some(identity), alpn).map_err(|source| {
            FilesError::Config {
                files: FileList(vec![self.ca.clone(), self.cert.clone(), self.key.clone()]),
                source,
            }
        })
    }

    /// A configuration that only trusts the CA and presents no certificate (token auth).
    pub fn trust_only_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, FilesError> {
        trust_config(&self.ca, alpn)
    }
}

/// A configuration that trusts the CA in `ca` and presents no certificate: what a simulated
/// device or a token-authenticated provider uses.
pub fn trust_config(ca: &Path, alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, FilesError> {
    tls::client_config(&read(ca)?, None, alpn).map_err(|source| FilesError::Config {
        files: FileList(vec![ca.to_owned()]),
        source,
    })
}

/// Loads a `.p8` signing key for `team_id`. Without `key_id`, the key id comes from Apple's
/// file name `AuthKey_<KEYID>.p8`, as providers usually keep it.
pub fn load_auth_key(
    path: &Path,
    key_id: Option<String>,
    team_id: String,
) -> Result<AuthKey, FilesError> {
    let key_id = match key_id {
        Some(id) => id,
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix(AUTH_KEY_PREFIX))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| FilesError::NoKeyId {
                path: path.to_owned(),
            })?,
    };
    let p8_pem = String::from_utf8(read(path)?).map_err(|e| FilesError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(AuthKey {
        key_id,
        team_id,
        topics: Vec::new(),
        p8_pem,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, FilesError> {
    std::fs::read(path).map_err(|source| FilesError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Pki, DEFAULT_TEAM_ID};

    /// The fixed names here are the ones the PKI writes, so the CLI finds its files.
    #[test]
    fn certs_dir_names_the_files_the_pki_writes() {
        let tmp = tempfile::tempdir().unwrap();
        Pki::generate().unwrap().write(tmp.path()).unwrap();
        let dir = CertsDir(tmp.path().to_owned());
        let files = dir.provider_files("localhost");
        files.client_config(Vec::new()).unwrap();
        files.trust_only_config(Vec::new()).unwrap();
        let key = load_auth_key(&dir.default_auth_key(), None, DEFAULT_TEAM_ID.into()).unwrap();
        assert_eq!(key.key_id, DEFAULT_KEY_ID);
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let files = CertsDir(tmp.path().to_owned()).provider_files("localhost");
        let err = files.client_config(Vec::new()).unwrap_err();
        assert!(err.to_string().contains(PROVIDER_CERT_FILE), "{err}");

        std::fs::write(tmp.path().join("key.p8"), "x").unwrap();
        let err = load_auth_key(&tmp.path().join("key.p8"), None, "T".into()).unwrap_err();
        assert!(matches!(err, FilesError::NoKeyId { .. }), "{err}");
        assert!(err.to_string().contains("key.p8"), "{err}");
    }
}
