//! The subcommands of `apns-sim`, one file each. Every file holds a clap `Args` struct, which
//! is the command's whole interface (flags, `APNS_SIM_*` variables, help text), and its `run`,
//! which turns the parsed flags into the library's own types (`SimulatorConfig`, `Settings`,
//! `DeviceConfig`, the clients' options) and calls the library. Only this folder and
//! `main.rs` know clap.

use std::path::PathBuf;

use apns_sim::client::{CertsDir, ProviderTlsFiles};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};

mod bench;
mod certs;
mod completions;
mod config;
mod device;
mod feedback;
mod man;
mod push;
mod run;
mod scenario;
mod serve;
mod signal;
mod test;
mod tour;

/// Folder `serve` and `certs` write to, and the client commands read from, when neither
/// `--certs` nor `APNS_SIM_CERTS` says otherwise.
pub(crate) use apns_sim::config::DEFAULT_CERTS_DIR;

/// How `push` and `feedback` print what they got (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Sentences for a person.
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything worked (exit code 0).
    Done,
    /// A push was answered with an error (exit code 1): the command ran, the simulator said no.
    PushRefused,
    /// A scenario file is not valid, or an expectation of one does not hold (exit code 1).
    Failed,
    /// `test`'s own exit code: COMMAND's failure, or the verdict (`TestReport::exit_code`).
    Exit(u8),
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the simulator: gateway, feedback, HTTP/2 API, device endpoint, control API, demo devices.
    Serve(serve::ServeArgs),
    /// Create the certificates in certs/ (if missing) and list them; mint more; export them
    /// (PEM, .p12, the CA bundle, .p8).
    Certs(certs::CertsArgs),
    /// Send notifications (binary gateway, or the HTTP/2 API with --http2) and print the outcome.
    Push(push::PushArgs),
    /// Read the feedback service: tokens of apps reported uninstalled since the last read.
    Feedback(feedback::FeedbackArgs),
    /// Run one or more simulated devices: JSON events on stdout, commands on stdin
    /// (install APP, uninstall APP, offline, online, quit).
    Device(device::DeviceArgs),
    /// A guided tour of the push flow on a simulator of its own: each step narrated, with
    /// the bytes on the wire labelled.
    Tour(tour::TourArgs),
    /// Check or run scenario files: a world, a timeline and expectations with verdicts.
    Scenario(scenario::ScenarioArgs),
    /// Run your provider tests (COMMAND) against a fresh simulator with a scenario's world,
    /// then check its expectations. Exit status: COMMAND's failure, else the verdict (0/1).
    Test(test::TestArgs),
    /// Run COMMAND (your provider, unmodified) in a private network and mount namespace
    /// where Apple's push hosts and ports are the simulator and the system trusts its CA
    /// (Linux).
    Run(run::RunArgs),
    /// Load-test a simulator (or an anchor): throughput, push -> device latency, CPU and memory.
    Bench(bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff) of apns-sim or of one of its commands.
    Man(man::ManArgs),
    /// serve's configuration file: `config init` prints one with every setting at its default.
    Config(config::ConfigArgs),
}

impl Command {
    /// Checks what clap cannot express declaratively, where a flag typed on the command line
    /// and a value from an `APNS_SIM_*` variable must be told apart: `push` flags given for
    /// the other API, and `bench --smoke`'s defaults. (`serve`'s two ways of choosing the demo fleet are
    /// the library's to settle: `apns_sim::config`.) `cli` is the whole
    /// built command (for the error's usage line) and `matches` what it parsed.
    pub(crate) fn check(
        &mut self,
        cli: &mut clap::Command,
        matches: &ArgMatches,
    ) -> Result<(), clap::Error> {
        let Some((name, sub)) = matches.subcommand() else {
            return Ok(());
        };
        let sub_command = cli
            .find_subcommand_mut(name)
            .expect("the parsed subcommand exists");
        match self {
            Command::Push(args) => args.check(sub_command, sub),
            Command::Bench(args) => args.check(sub_command, sub),
            Command::Run(args) => args.check(sub_command, sub),
            _ => Ok(()),
        }
    }

    /// The log level when no `-v` is given: the tour's narration, a scenario command's
    /// report and a benchmark's summary are the output, so their simulators log only
    /// warnings (`-v` or `RUST_LOG` bring the info lines back); every other command logs at
    /// info.
    pub(crate) fn default_log_level(&self) -> &'static str {
        match self {
            Command::Tour(_) => "warn",
            // The report is the output; an in-process simulator's info lines (one per
            // notification) would bury it and cost what is being measured.
            Command::Bench(_) => "warn",
            Command::Scenario(args) if args.quiet() => "warn",
            Command::Test(_) | Command::Run(_) => "warn",
            _ => "info",
        }
    }

    /// Runs the command.
    pub(crate) async fn run(self) -> anyhow::Result<Outcome> {
        match self {
            Command::Serve(args) => args.run().await,
            Command::Certs(args) => args.run(),
            Command::Push(args) => args.run().await,
            Command::Feedback(args) => args.run().await,
            Command::Device(args) => args.run().await,
            Command::Tour(args) => args.run().await,
            Command::Scenario(args) => args.run().await,
            Command::Test(args) => args.run().await,
            Command::Bench(args) => args.run().await,
            Command::Run(args) => args.run().await,
            Command::Completions(args) => args.run(),
            Command::Man(args) => args.run(),
            Command::Config(args) => args.run(),
        }
    }

    /// What must happen while the process has one thread, before logging and the runtime
    /// start threads: `run` enters its namespaces (a user namespace cannot be entered by
    /// a process with several threads).
    pub(crate) fn before_threads(&mut self) -> anyhow::Result<()> {
        match self {
            Command::Run(args) => args.enter_sandbox(),
            _ => Ok(()),
        }
    }
}

/// Writes generated output (a completion script, a man page) to stdout. A reader that
/// stops early (`| head`) is not an error: what it read is what it wanted.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Whether `id` was typed on the command line (not a default, not an `APNS_SIM_*` variable).
/// Only those are refused when they do not apply: a variable may be set for both modes.
fn given_on_command_line(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// The TLS files of a provider command (`push`, `feedback`): one folder, with each file
/// overridable.
#[derive(Debug, Args)]
pub(crate) struct ProviderTlsArgs {
    /// Certificate folder (as `serve` or `certs` wrote it); the files below default to it.
    #[arg(long, default_value = DEFAULT_CERTS_DIR, env = "APNS_SIM_CERTS")]
    certs: PathBuf,
    /// Provider certificate (PEM). Default: provider.pem in --certs.
    #[arg(long, env = "APNS_SIM_CERT")]
    cert: Option<PathBuf>,
    /// Provider private key (PEM). Default: provider-key.pem in --certs.
    #[arg(long, env = "APNS_SIM_KEY")]
    key: Option<PathBuf>,
    /// CA certificate that signed the simulator's server certificate (PEM). Default: ca.pem
    /// in --certs.
    #[arg(long, env = "APNS_SIM_CA")]
    ca: Option<PathBuf>,
    /// TLS server name to send and verify (an Apple host name selects its environment,
    /// e.g. gateway.push.apple.com for production).
    #[arg(long, default_value = "localhost", env = "APNS_SIM_SERVER_NAME")]
    server_name: String,
}

impl ProviderTlsArgs {
    /// The folder the default files come from.
    fn certs_dir(&self) -> CertsDir {
        CertsDir(self.certs.clone())
    }

    /// The files to use: the folder's, except where a flag names another.
    fn files(&self) -> ProviderTlsFiles {
        let dir = self.certs_dir();
        ProviderTlsFiles {
            cert: self.cert.clone().unwrap_or_else(|| dir.provider_cert()),
            key: self.key.clone().unwrap_or_else(|| dir.provider_key()),
            ca: self.ca.clone().unwrap_or_else(|| dir.ca()),
            server_name: self.server_name.clone(),
        }
    }
}
