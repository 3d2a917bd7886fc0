//! `apns-sim feedback`: reads the feedback service once and prints each tuple as
//! `<unix time> <token>` (the service forgets what it has sent).

use std::time::Duration;

use anyhow::Result;
use apns_sim::client;
use clap::Args;

use super::{Outcome, ProviderTlsArgs};

/// How long the feedback service may take to send its tuples and close.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `apns-sim feedback`.
#[derive(Debug, Args)]
pub(crate) struct FeedbackArgs {
    /// Feedback service address.
    #[arg(long, default_value = "127.0.0.1:2196", env = "APNS_SIM_FEEDBACK")]
    feedback: String,
    #[command(flatten)]
    tls: ProviderTlsArgs,
}

impl FeedbackArgs {
    /// Reads and prints the feedback tuples for the certificate's topic.
    pub(crate) async fn run(self) -> Result<Outcome> {
        let files = self.tls.files();
        let config = files.client_config(Vec::new())?;
        let tuples =
            client::read_feedback(&self.feedback, &files.server_name, config, READ_TIMEOUT).await?;
        if tuples.is_empty() {
            println!("no feedback: no app was reported uninstalled since the last read");
        }
        for t in tuples {
            println!("{} {}", t.timestamp, t.token);
        }
        Ok(Outcome::Done)
    }
}
