//! `apns-sim scenario check FILE…` and `apns-sim scenario run FILE… [--json PATH|-]
//! [--junit PATH]`: parse the flags, read the files, call `apns_sim::scenario`, print and
//! write what it reports. Exit 0 only when every file is valid (check) or every
//! expectation of every file holds (run); 1 otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use apns_sim::scenario::{self, report, Scenario};
use clap::{Args, Subcommand};

use super::Outcome;

/// Largest scenario file read: a thousand steps and expectations fit in far less, and a
/// bound keeps a wrong path (a log, a binary) from being read whole.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Options of `apns-sim scenario`.
#[derive(Debug, Args)]
pub(crate) struct ScenarioArgs {
    #[command(subcommand)]
    command: ScenarioCommand,
}

/// What to do with the files.
#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Check scenario files without running them; each mistake as FILE:LINE: field: why.
    Check {
        /// Scenario files (TOML, see scenarios/README.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run scenario files, each against a fresh in-process simulator; print the timeline
    /// and a verdict per expectation.
    Run {
        /// Scenario files (TOML, see scenarios/README.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also write a JSON report to this file (- for standard output).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Also write a JUnit XML report to this file (one testsuite per file, one testcase
        /// per expectation).
        #[arg(long, value_name = "PATH")]
        junit: Option<PathBuf>,
    },
}

impl ScenarioArgs {
    /// Whether the simulator's own info lines would drown the output (they go to stderr
    /// unless RUST_LOG or -v asks for them).
    pub(crate) fn quiet(&self) -> bool {
        true
    }

    /// Runs the subcommand.
    pub(crate) async fn run(self) -> Result<Outcome> {
        match self.command {
            ScenarioCommand::Check { files } => Ok(check(&files)),
            ScenarioCommand::Run { files, json, junit } => run(&files, json, junit).await,
        }
    }
}

/// Reads a file, bounded.
pub(super) fn read(path: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes; a scenario file is at most {MAX_FILE_BYTES}"
        )));
    }
    std::fs::read_to_string(path)
}

/// `scenario check`.
fn check(files: &[PathBuf]) -> Outcome {
    let mut valid = true;
    for path in files {
        let name = path.display();
        match read(path) {
            Err(e) => {
                println!("{name}:1: (file): cannot read it: {e}");
                valid = false;
            }
            Ok(text) => match Scenario::parse(&text) {
                Ok(s) => println!(
                    "{name}: valid ({} devices, {} steps, {} expectations)",
                    s.devices.len(),
                    s.steps.len(),
                    s.expects.len()
                ),
                Err(e) => {
                    valid = false;
                    for problem in e.problems() {
                        println!("{name}:{problem}");
                    }
                }
            },
        }
    }
    if valid {
        Outcome::Done
    } else {
        Outcome::Failed
    }
}

/// `scenario run`.
async fn run(files: &[PathBuf], json: Option<PathBuf>, junit: Option<PathBuf>) -> Result<Outcome> {
    let to_stdout = json.as_deref() == Some(Path::new("-"));
    let mut print = |line: &str| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut reports = Vec::new();
    for path in files {
        let name = path.display().to_string();
        print(&format!("== {name}"));
        let report = match read(path) {
            Ok(text) => scenario::run::run_file(&name, &text, &mut print).await,
            Err(e) => report::FileReport::failed(&name, format!("{name}: cannot read it: {e}")),
        };
        if let Some(error) = &report.error {
            print(&format!("  ERROR {error}"));
        }
        for verdict in &report.verdicts {
            print(&verdict.text());
        }
        let held = report.verdicts.iter().filter(|v| v.passed).count();
        print(&format!(
            "{name}: {} ({held} of {} expectations hold, {} ms)",
            if report.passed() { "PASSED" } else { "FAILED" },
            report.verdicts.len(),
            report.duration_ms
        ));
        reports.push(report);
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    print(&format!(
        "{passed} passed, {} failed",
        reports.len() - passed
    ));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report::json(&reports))?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = junit {
        let xml = report::junit(&reports).context("writing the JUnit report")?;
        std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if passed == reports.len() {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}
