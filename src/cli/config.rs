//! `apns-sim config`: `serve`'s configuration file. `config init` prints one with every
//! setting at its default, each with its documentation, variable and flag as comments
//! (`apns_sim::config` makes it); `serve --config FILE` reads it back.

use anyhow::Result;
use apns_sim::config::ServeConfig;
use clap::{Args, Subcommand};

use super::Outcome;

/// Options of `apns-sim config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

/// What `config` does.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a configuration file with every setting at its default, documented (e.g.
    /// `apns-sim config init > apns-sim.toml`); `serve --print-config` prints the effective one.
    Init,
}

impl ConfigArgs {
    /// Prints the file.
    pub(crate) fn run(self) -> Result<Outcome> {
        match self.command {
            ConfigCommand::Init => print!("{}", ServeConfig::default().to_toml()),
        }
        Ok(Outcome::Done)
    }
}
