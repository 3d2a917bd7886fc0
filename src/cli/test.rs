//! `apns-sim test --scenario FILE [--json PATH|-] [--junit PATH] -- COMMAND…`: parse the
//! flags, read the file, call `apns_sim::scenario::harness::test`, print the verdicts and
//! write the reports as `scenario run` does. The exit code is the harness's
//! (`TestReport::exit_code`); 2 when the test could not be set up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use apns_sim::scenario::harness::{self, CommandStdout, TestReport};
use apns_sim::scenario::{report, Scenario};
use clap::Args;

use super::scenario::read;
use super::Outcome;

/// Options of `apns-sim test`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: COMMAND's own code when it fails (128 + N when signal N killed it; 127 or 126
when it could not start); otherwise 0 when every expectation holds, 1 when one does not;
2 when the test could not be set up (an unreadable or unfit scenario, a simulator that did
not start), COMMAND then not run; 130 when Ctrl-C or SIGTERM stopped it (COMMAND killed,
the temporary folder removed).

COMMAND's environment: APNS_SIM_TOKEN (the first device's token), APNS_SIM_CERT_FILE,
APNS_SIM_KEY_FILE, APNS_SIM_CA_FILE, APNS_SIM_AUTH_KEY_FILE, APNS_SIM_KEY_ID,
APNS_SIM_TEAM_ID, APNS_SIM_GATEWAY, APNS_SIM_FEEDBACK, APNS_SIM_HTTP2 (host:port),
APNS_SIM_CONTROL_URL, APNS_SIM_INFO (a JSON file with all of it, every app and every
device token).")]
pub(crate) struct TestArgs {
    /// The scenario whose world COMMAND runs against and whose expectations are checked
    /// (see scenarios/README.md; its timeline runs alongside COMMAND).
    #[arg(long, value_name = "FILE")]
    scenario: PathBuf,
    /// Also write a JSON report to this file (- for standard output; COMMAND's own
    /// standard output then goes to standard error).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write a JUnit XML report to this file.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// The provider tests to run, with their arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

impl TestArgs {
    /// Runs the test.
    pub(crate) async fn run(self) -> Result<Outcome> {
        // Ctrl-C and SIGTERM are caught from here on, so that one arriving while COMMAND
        // starts still kills it and removes its folder.
        let interrupt = super::signal::stop_requested()?;
        let to_stdout = self.json.as_deref() == Some(Path::new("-"));
        let mut print = |line: &str| {
            if to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        };
        let name = self.scenario.display().to_string();
        let text = read(&self.scenario).with_context(|| format!("reading {name}"))?;
        let scenario = match Scenario::parse(&text) {
            Ok(s) => s,
            Err(e) => {
                for problem in e.problems() {
                    print(&format!("{name}:{problem}"));
                }
                anyhow::bail!("{name} is not a valid scenario");
            }
        };
        print(&format!("== {name}"));
        let stdout = if to_stdout {
            CommandStdout::Stderr
        } else {
            CommandStdout::Inherit
        };
        let test = match harness::test(
            &scenario,
            &name,
            &self.command,
            stdout,
            interrupt,
            &mut print,
        )
        .await
        {
            Ok(test) => test,
            Err(e) => {
                print(&e);
                anyhow::bail!("the test could not be set up");
            }
        };
        for verdict in &test.report.verdicts {
            print(&verdict.text());
        }
        let held = test.report.verdicts.iter().filter(|v| v.passed).count();
        print(&format!(
            "{name}: {} ({held} of {} expectations hold; COMMAND {})",
            if test.report.passed() {
                "PASSED"
            } else {
                "FAILED"
            },
            test.report.verdicts.len(),
            test.command.describe()
        ));
        write_reports(&test, self.json.as_deref(), self.junit.as_deref())?;
        Ok(Outcome::Exit(test.exit_code()))
    }
}

/// Writes `test`'s reports where `--json PATH|-` (`-`: standard output) and `--junit PATH`
/// say: `scenario run`'s JSON with COMMAND's end and the exit code added, and its JUnit XML.
/// `apns-sim test` and `apns-sim run` share it, so their reports are the same.
pub(super) fn write_reports(
    test: &TestReport,
    json: Option<&Path>,
    junit: Option<&Path>,
) -> Result<()> {
    let reports = [test.report.clone()];
    if let Some(path) = json {
        let mut json = report::json(&reports);
        json["command"] = serde_json::to_value(&test.command)?;
        json["exit_code"] = test.exit_code().into();
        let text = serde_json::to_string_pretty(&json)?;
        if path == Path::new("-") {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = junit {
        let xml = report::junit(&reports).context("writing the JUnit report")?;
        std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
