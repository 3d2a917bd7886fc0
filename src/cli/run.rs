//! `apns-sim run [serve options] -- COMMAND…` (Linux): parse the flags, enter the namespaces
//! while the process has one thread ([`RunArgs::enter_sandbox`], called by `main`), then
//! call `apns_sim::sandbox::run`, print its verdicts and write the reports `--json` and
//! `--junit` ask for (as `apns-sim test` writes them). The flow is the library's
//! (`src/sandbox/mod.rs`); the exit code is the `apns-sim test` harness's.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{ArgMatches, Args, ValueEnum};

use super::serve::{Serve, ServeArgs};
use super::{given_on_command_line, Outcome};

/// Options of `apns-sim run`.
#[derive(Debug, Args)]
// `serve`'s listening flags are kept (so they can be refused by name) but not shown.
#[command(
    mut_arg("bind", |a| a.hide(true)),
    mut_arg("gateway_port", |a| a.hide(true)),
    mut_arg("feedback_port", |a| a.hide(true)),
    mut_arg("http2_port", |a| a.hide(true))
)]
#[command(after_help = "\
Inside the namespace Apple's push hosts (api[.sandbox|.development].push.apple.com,
gateway[.sandbox].push.apple.com, feedback[.sandbox].push.apple.com) resolve to 127.0.0.1,
where the simulator listens on Apple's ports: 443 and 2197 (HTTP/2), 2195 (binary gateway),
2196 (feedback). The system's CA bundle holds the simulator's CA, and SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and NODE_EXTRA_CA_CERTS are set. --bind and the three
provider ports do not apply. COMMAND also gets apns-sim test's variables (APNS_SIM_TOKEN,
APNS_SIM_CERT_FILE, …, APNS_SIM_INFO); the world is the demo fleet unless --scenario or
--devices says otherwise, and a scenario's expectations are judged after COMMAND; --json
and --junit write the verdicts as apns-sim test's do.

Exit status: as apns-sim test: COMMAND's own code when it fails (128 + N for signal N, 127
or 126 when it could not start), otherwise 0, or 1 when an expectation does not hold; 2
when the namespaces or the simulator could not be set up (the message says which privilege
is missing).")]
pub(crate) struct RunArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// When to create a user namespace: auto (when not root, or when root lacks
    /// CAP_SYS_ADMIN), always, or never (the process needs CAP_SYS_ADMIN).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "APNS_SIM_USER_NAMESPACE"
    )]
    user_namespace: UserNamespaceArg,
    /// Also write a JSON report of the verdicts (COMMAND's and the scenario's expectations)
    /// to this file, as apns-sim test does (- for standard output; COMMAND's own standard
    /// output then goes to standard error).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write a JUnit XML report of the verdicts to this file, as apns-sim test does.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// The provider to run, with its arguments, unmodified.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
    /// The namespaces entered, set by `enter_sandbox`.
    #[cfg(target_os = "linux")]
    #[arg(skip)]
    entered: Option<apns_sim::sandbox::Entered>,
}

/// `--user-namespace`: the CLI's names for `sandbox::UserNamespace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UserNamespaceArg {
    /// When not root, or when root lacks CAP_SYS_ADMIN.
    Auto,
    /// Always, even as root.
    Always,
    /// Never.
    Never,
}

/// The `serve` flags `run` refuses: inside its namespace it listens on loopback, on Apple's
/// own ports.
const NOT_FOR_RUN: &[(&str, &str)] = &[
    ("bind", "--bind"),
    ("gateway_port", "--gateway-port"),
    ("feedback_port", "--feedback-port"),
    ("http2_port", "--http2-port"),
];

impl RunArgs {
    /// Refuses the `serve` flags that do not apply, then checks the rest as `serve` does.
    pub(crate) fn check(
        &mut self,
        command: &mut clap::Command,
        matches: &ArgMatches,
    ) -> Result<(), clap::Error> {
        for (id, flag) in NOT_FOR_RUN {
            if given_on_command_line(matches, id) {
                return Err(command.error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "{flag} does not apply to run: inside its namespace the simulator \
                         listens on 127.0.0.1, on Apple's ports (443, 2197, 2195, 2196)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Enters the namespaces. `main` calls this before logging and the runtime start any
    /// thread (see `apns_sim::sandbox::namespace`).
    pub(crate) fn enter_sandbox(&mut self) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            use apns_sim::sandbox::UserNamespace;
            let mode = match self.user_namespace {
                UserNamespaceArg::Auto => UserNamespace::Auto,
                UserNamespaceArg::Always => UserNamespace::Always,
                UserNamespaceArg::Never => UserNamespace::Never,
            };
            self.entered = Some(apns_sim::sandbox::enter(mode)?);
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        anyhow::bail!("apns-sim run needs Linux namespaces; use apns-sim test instead")
    }

    /// Runs COMMAND in the namespaces and prints the verdicts.
    #[cfg(target_os = "linux")]
    pub(crate) async fn run(self) -> Result<Outcome> {
        use apns_sim::sandbox::{self, RunConfig};
        use apns_sim::scenario::harness::CommandStdout;
        // Ctrl-C and SIGTERM are caught from here on (see `signal`).
        let interrupt = super::signal::stop_requested()?;
        let entered = self
            .entered
            .ok_or_else(|| anyhow::anyhow!("the namespaces were not entered"))?;
        let serve = Serve(self.serve.resolve()?);
        let file = serve
            .0
            .scenario
            .as_ref()
            .map_or_else(|| "the demo fleet".to_owned(), |p| p.display().to_string());
        let fleet = serve.fleet()?;
        let config = RunConfig {
            certs_dir: serve.0.certs.clone(),
            settings: serve.0.settings.clone(),
            control_token: serve.0.control_token.clone(),
            device_port: serve.0.device_port,
            control_port: serve.0.control_port,
            command_stdout: if self.json.as_deref() == Some(std::path::Path::new("-")) {
                CommandStdout::Stderr
            } else {
                CommandStdout::Inherit
            },
        };
        // COMMAND's standard output is the command's own; what apns-sim says goes to
        // standard error.
        let mut print = |line: &str| eprintln!("apns-sim run: {line}");
        let test = match sandbox::run(
            entered,
            config,
            &fleet,
            &file,
            &self.command,
            interrupt,
            &mut print,
        )
        .await
        {
            Ok(test) => test,
            Err(e) => {
                print(&e);
                anyhow::bail!("the run could not be set up");
            }
        };
        // The first verdict is COMMAND's own (the harness has printed how it ended); the
        // others are the scenario's expectations.
        let verdicts = &test.report.verdicts;
        if verdicts.len() > 1 {
            for verdict in verdicts {
                print(&verdict.text());
            }
            let held = verdicts.iter().filter(|v| v.passed).count();
            print(&format!(
                "{file}: {} ({held} of {} expectations hold; COMMAND {})",
                if test.report.passed() {
                    "PASSED"
                } else {
                    "FAILED"
                },
                verdicts.len(),
                test.command.describe()
            ));
        }
        super::test::write_reports(&test, self.json.as_deref(), self.junit.as_deref())?;
        Ok(Outcome::Exit(test.exit_code()))
    }

    /// Not on this system.
    #[cfg(not(target_os = "linux"))]
    pub(crate) async fn run(self) -> Result<Outcome> {
        anyhow::bail!("apns-sim run needs Linux namespaces; use apns-sim test instead")
    }
}
