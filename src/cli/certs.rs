//! `apns-sim certs`: makes sure a certificate folder holds a PKI (minting one if not), mints
//! more provider certificates and `.p8` keys on request, exports credentials in the forms
//! provider libraries load (`certs export`, encoded by `apns_sim::pki::export`), and lists
//! the folder's files as a table (`--json`: the manifest as it is, for scripts).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use apns_sim::pki::export::{self, ExportFile, ExportFormat, ExportRequest, P12Encryption};
use apns_sim::pki::{CertEnvironment, FileRole, Manifest, Pki, MANIFEST_FILE};
use clap::{Args, Subcommand, ValueEnum};

use super::{Outcome, DEFAULT_CERTS_DIR};

/// Options of `apns-sim certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// Certificate folder.
    #[arg(
        long,
        visible_alias = "certs",
        default_value = DEFAULT_CERTS_DIR,
        env = "APNS_SIM_CERTS",
        global = true
    )]
    dir: PathBuf,
    /// Print the folder's manifest.json (every file with its role, topic, environment, team
    /// id and key id) instead of the table, for scripts.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<CertsCommand>,
}

/// What to mint or export; without one, `certs` only creates and lists.
#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Mint a provider (client) certificate that looks like Apple's.
    Provider {
        /// Bundle id (the certificate's UID and topic).
        #[arg(long)]
        topic: String,
        /// sandbox, production, or universal (both).
        #[arg(long, default_value = "universal")]
        environment: CertEnvironment,
        /// Team id (the certificate's OU).
        #[arg(long, default_value = apns_sim::pki::DEFAULT_TEAM_ID, env = "APNS_SIM_TEAM_ID")]
        team_id: String,
    },
    /// Mint a .p8 signing key for token (JWT) authentication on the HTTP/2 API.
    AuthKey {
        /// Team id (the JWT's iss).
        #[arg(long, default_value = apns_sim::pki::DEFAULT_TEAM_ID, env = "APNS_SIM_TEAM_ID")]
        team_id: String,
        /// Key id (the JWT's kid); 10 random characters when absent.
        #[arg(long)]
        key_id: Option<String>,
        /// Limit the key to these topics (repeatable; none = any topic).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Write credentials in the form a provider library loads: a provider certificate as PEM
    /// (apart and combined) or PKCS#12, the CA bundle, or a .p8 key with its ids.
    Export(ExportArgs),
}

/// Options of `apns-sim certs export`.
#[derive(Debug, Args)]
struct ExportArgs {
    /// pem: <stem>.pem, <stem>-key.pem and both in <stem>-combined.pem; p12: <stem>.p12 (key,
    /// certificate and CA); bundle: ca-bundle.pem (the CA, to trust); p8: AuthKey_<KEYID>.p8
    /// and AuthKey_<KEYID>.json (key id, team id, topics).
    #[arg(long, value_enum)]
    format: Format,
    /// The .p12's password (empty: a store "without a password", which keytool opens with
    /// -storepass "" and OpenSSL with -passin pass:).
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        env = "APNS_SIM_P12_PASSWORD",
        hide_env_values = true
    )]
    password: String,
    /// Encrypt the .p12 with pbeWithSHAAnd3-KeyTripleDES-CBC and a SHA-1 MAC, for Java before
    /// 8u301 and node on OpenSSL 1.x, instead of AES-256-CBC/PBKDF2 with a SHA-256 MAC.
    #[arg(long)]
    legacy: bool,
    /// Folder to write to (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Topic of the provider certificate to export (pem, p12). Default: provider.pem's.
    #[arg(long)]
    topic: Option<String>,
    /// Environment of the provider certificate, when its topic has several.
    #[arg(long)]
    environment: Option<CertEnvironment>,
    /// Key id of the .p8 to export (p8). Default: the first key minted.
    #[arg(long)]
    key_id: Option<String>,
}

/// The forms `certs export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A provider certificate and its key as PEM.
    Pem,
    /// A provider certificate, its key and the CA as PKCS#12.
    P12,
    /// The CA certificate.
    Bundle,
    /// A .p8 auth key and its ids.
    P8,
}

impl CertsArgs {
    /// Creates or loads the folder, mints or exports what was asked, and lists the folder.
    pub(crate) fn run(self) -> Result<Outcome> {
        let dir = &self.dir;
        let mut pki = Pki::load_or_create(dir)
            .with_context(|| format!("certificates in {}", dir.display()))?;
        match self.action {
            None => {}
            Some(CertsCommand::Provider {
                topic,
                environment,
                team_id,
            }) => {
                let cert = pki.mint_provider(&topic, environment, &team_id)?;
                println!(
                    "minted provider certificate for {} ({}): {}",
                    cert.topic,
                    cert.environment,
                    cert.cert_file_name()
                );
                pki.write(dir)?;
            }
            Some(CertsCommand::AuthKey {
                team_id,
                key_id,
                topics,
            }) => {
                let key = pki.mint_auth_key(&team_id, key_id, topics)?;
                println!("minted auth key {} for team {}", key.key_id, key.team_id);
                pki.write(dir)?;
            }
            // An export lists what it wrote, not the folder.
            Some(CertsCommand::Export(args)) => return args.run(&pki),
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_text = fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        if self.json {
            println!("{manifest_text}");
        } else {
            let manifest: Manifest = serde_json::from_str(&manifest_text)
                .with_context(|| format!("reading {}", manifest_path.display()))?;
            print!("{}", table(dir, &manifest));
        }
        Ok(Outcome::Done)
    }
}

impl ExportArgs {
    /// Encodes the files and writes them into `--out`, one line each on stdout.
    fn run(self, pki: &Pki) -> Result<Outcome> {
        let for_provider = matches!(self.format, Format::Pem | Format::P12);
        if self.format != Format::P12 && (self.legacy || !self.password.is_empty()) {
            bail!("--password and --legacy are for --format p12");
        }
        if !for_provider && (self.topic.is_some() || self.environment.is_some()) {
            bail!(
                "--topic and --environment choose a provider certificate: for --format pem or p12"
            );
        }
        if self.format != Format::P8 && self.key_id.is_some() {
            bail!("--key-id chooses a .p8 key: for --format p8");
        }
        let encryption = if self.legacy {
            P12Encryption::Legacy
        } else {
            P12Encryption::Modern
        };
        let format = match self.format {
            Format::Pem => ExportFormat::Pem,
            Format::P12 => ExportFormat::P12 {
                password: self.password.clone(),
                encryption,
            },
            Format::Bundle => ExportFormat::Bundle,
            Format::P8 => ExportFormat::P8,
        };
        let request = ExportRequest {
            format,
            topic: self.topic,
            environment: self.environment,
            key_id: self.key_id.clone(),
        };
        let files = export::export(pki, &request)?;
        fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        for file in &files {
            let path = self.out.join(&file.name);
            write_file(&path, file)?;
            println!("wrote {}{}", path.display(), describe(file, &request, pki));
        }
        Ok(Outcome::Done)
    }
}

/// What an exported file is, for its line on stdout.
fn describe(file: &ExportFile, request: &ExportRequest, pki: &Pki) -> String {
    match &request.format {
        ExportFormat::P12 {
            password,
            encryption,
        } => {
            let algorithms = match encryption {
                P12Encryption::Modern => "AES-256-CBC/PBKDF2-SHA256, SHA-256 MAC",
                P12Encryption::Legacy => "legacy 3DES, SHA-1 MAC",
            };
            let password = if password.is_empty() {
                "empty password"
            } else {
                "with --password"
            };
            format!(" (PKCS#12, {algorithms}, {password})")
        }
        ExportFormat::P8 if file.name.ends_with(".p8") => {
            let key = request
                .key_id
                .as_deref()
                .and_then(|id| pki.auth_key(id))
                .or_else(|| pki.auth_keys().first());
            key.map_or_else(String::new, |k| {
                format!(" (key id {}, team id {})", k.key_id, k.team_id)
            })
        }
        _ => String::new(),
    }
}

/// Writes an exported file; one holding a private key is readable by its owner only (unix).
fn write_file(path: &Path, file: &ExportFile) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if file.secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only to a file created now; an older export keeps its mode otherwise.
    #[cfg(unix)]
    if file.secret {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    out.write_all(&file.contents)
        .with_context(|| format!("writing {}", path.display()))
}

/// The manifest as a table: one row per file, with the columns that say which credential it
/// is (topic and environment of a certificate, team and key id of a `.p8`) and its path.
fn table(dir: &Path, manifest: &Manifest) -> String {
    const HEADER: [&str; 6] = ["ROLE", "TOPIC", "ENVIRONMENT", "TEAM", "KEY ID", "PATH"];
    let rows: Vec<[String; 6]> = manifest
        .files
        .iter()
        .map(|entry| {
            let topic = match (&entry.topic, entry.role) {
                (Some(topic), _) => topic.clone(),
                // A team-scoped key may push to any of its team's topics.
                (None, FileRole::AuthKey) if entry.topics.is_empty() => "(any)".to_owned(),
                (None, _) if !entry.topics.is_empty() => entry.topics.join(","),
                (None, _) => "-".to_owned(),
            };
            [
                role_name(entry.role).to_owned(),
                topic,
                entry
                    .environment
                    .map_or_else(|| "-".to_owned(), |e| e.to_string()),
                entry.team_id.clone().unwrap_or_else(|| "-".to_owned()),
                entry.key_id.clone().unwrap_or_else(|| "-".to_owned()),
                dir.join(&entry.path).display().to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The manifest's name of a role (`provider-key`, `auth-key`, …).
fn role_name(role: FileRole) -> &'static str {
    match role {
        FileRole::Ca => "ca",
        FileRole::CaKey => "ca-key",
        FileRole::Server => "server",
        FileRole::ServerKey => "server-key",
        FileRole::Provider => "provider",
        FileRole::ProviderKey => "provider-key",
        FileRole::ProviderBundle => "provider-bundle",
        FileRole::CaBundle => "ca-bundle",
        FileRole::AuthKey => "auth-key",
    }
}
