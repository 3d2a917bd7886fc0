//! `apns-sim certs`: makes sure a certificate folder holds a PKI (minting one if not), mints
//! more provider certificates and `.p8` keys on request, and prints the folder's manifest.

use std::path::PathBuf;

use anyhow::{Context, Result};
use apns_sim::pki::{CertEnvironment, Pki, MANIFEST_FILE};
use clap::{Args, Subcommand};

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
    #[command(subcommand)]
    action: Option<CertsCommand>,
}

/// What to mint; without one, `certs` only creates and lists.
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
}

impl CertsArgs {
    /// Creates or loads the folder, mints what was asked, and prints the manifest.
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
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        println!("{manifest}");
        Ok(Outcome::Done)
    }
}
