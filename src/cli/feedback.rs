//! `apns-sim feedback`: reads the feedback service once and prints each tuple as
//! `<unix time> <token>` (the service forgets what it has sent), or with `--output json` as
//! one document: `{"tuples":[{"timestamp":…,"token":"…"}]}`.

use std::time::Duration;

use anyhow::Result;
use apns_sim::client;
use clap::Args;

use super::{Outcome, OutputFormat, ProviderTlsArgs};

/// How long the feedback service may take to send its tuples and close.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `apns-sim feedback`.
#[derive(Debug, Args)]
pub(crate) struct FeedbackArgs {
    /// Feedback service address.
    #[arg(long, default_value = "127.0.0.1:2196", env = "APNS_SIM_FEEDBACK")]
    feedback: String,
    /// How to print the tuples: text for a person, or one JSON document for scripts.
    #[arg(long, value_enum, default_value = "text", env = "APNS_SIM_OUTPUT")]
    output: OutputFormat,
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
        if self.output == OutputFormat::Json {
            let tuples: Vec<serde_json::Value> = tuples
                .iter()
                .map(
                    |t| serde_json::json!({"timestamp": t.timestamp, "token": t.token.to_string()}),
                )
                .collect();
            println!("{}", serde_json::json!({ "tuples": tuples }));
            return Ok(Outcome::Done);
        }
        if tuples.is_empty() {
            println!("no feedback: no app was reported uninstalled since the last read");
        }
        for t in tuples {
            println!("{} {}", t.timestamp, t.token);
        }
        Ok(Outcome::Done)
    }
}
