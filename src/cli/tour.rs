//! `apns-sim tour`: parses its three flags and runs the library's guided tour
//! (`apns_sim::tour`), writing to stdout.

use std::io::IsTerminal;

use anyhow::Result;
use apns_sim::tour::{self, Pacing, TourConfig};
use clap::Args;

use super::Outcome;

/// Options of `apns-sim tour`.
#[derive(Debug, Args)]
pub(crate) struct TourArgs {
    /// Go straight through, without waiting for Enter between steps (also when stdin is not
    /// a terminal)
    #[arg(long)]
    fast: bool,
    /// Port of the control API and its dashboard on 127.0.0.1, which show the tour's steps
    /// live (0: any free port; the URL is printed first)
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// After the last step, keep the simulator and its dashboard up until Enter or the end
    /// of stdin (at a terminal without --fast, the tour offers this by itself)
    #[arg(long)]
    linger: bool,
}

impl TourArgs {
    /// Runs the tour; an error names the step that did not happen as described.
    pub(crate) async fn run(self) -> Result<Outcome> {
        let pacing = if self.fast || !std::io::stdin().is_terminal() {
            Pacing::Straight
        } else {
            Pacing::Enter
        };
        let config = TourConfig {
            control_port: self.control_port,
            pacing,
            // A person paced through the steps is offered a look at the dashboard at the end.
            linger: self.linger || pacing == Pacing::Enter,
        };
        let mut out = std::io::stdout();
        tour::run(config, &mut out).await?;
        Ok(Outcome::Done)
    }
}
