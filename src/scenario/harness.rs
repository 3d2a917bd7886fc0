//! `apns-sim test --scenario FILE -- COMMAND…`: a scenario's world on a fresh simulator
//! for the user's own provider tests. The simulator listens on 127.0.0.1 with ports the
//! system picks; the credentials are written to a temporary folder (removed afterwards);
//! COMMAND runs with every address, file and token in `APNS_SIM_*` variables and one JSON
//! file ([`Info`], `APNS_SIM_INFO`) that holds all of it and every device. The scenario's
//! timeline (device events, faults, the clock) runs alongside COMMAND, `at_ms` counted
//! from COMMAND's start. Once COMMAND has exited, the harness waits on the hub's events
//! (never a sleep, each wait bounded) until every provider connection has closed and every
//! accepted notification has settled, and then checks the expectations.
//!
//! The flow, step by step, is [`test()`]; [`TestReport::exit_code`] is the rule for the
//! exit code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use super::check::{check_for, Host};
use super::format::CertChoice;
use super::report::{FileReport, Verdict};
use super::run::{start, Runner};
use super::Scenario;
use crate::clock::Clock;
use crate::pki::{CertEnvironment, Pki, DEFAULT_KEY_ID};
use crate::progress::Draw;
use crate::server::control::devices::Device;
use crate::sim::{Addrs, Simulator};

/// The name of the JSON file in the temporary folder that `APNS_SIM_INFO` points at.
pub const INFO_FILE: &str = "apns-sim-info.json";

/// Where COMMAND's standard output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStdout {
    /// Where apns-sim's goes.
    Inherit,
    /// To apns-sim's standard error (when apns-sim's standard output carries a report).
    Stderr,
}

/// How COMMAND ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it (unix).
    Signalled(i32),
    /// The user stopped the test (Ctrl-C) before COMMAND and the timeline were done;
    /// COMMAND was killed.
    Interrupted,
    /// It could not be started; `not_found` when the program does not exist.
    NotStarted {
        /// Why, in words.
        error: String,
        /// The program was not found (a shell's 127) rather than not executable (126).
        not_found: bool,
    },
}

impl CommandEnd {
    /// Whether COMMAND succeeded.
    pub fn succeeded(&self) -> bool {
        *self == CommandEnd::Exited(0)
    }

    /// In words, for the output.
    pub fn describe(&self) -> String {
        match self {
            CommandEnd::Exited(code) => format!("exited with code {code}"),
            CommandEnd::Signalled(signal) => format!("was killed by signal {signal}"),
            CommandEnd::Interrupted => "was stopped by the user (Ctrl-C)".to_owned(),
            CommandEnd::NotStarted { error, .. } => format!("could not start: {error}"),
        }
    }
}

/// What a test found: how COMMAND ended and the scenario's report.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// How COMMAND ended.
    pub command: CommandEnd,
    /// The timeline and the verdicts.
    pub report: FileReport,
}

impl TestReport {
    /// The exit code of `apns-sim test`: COMMAND's own code when it failed (128 + the
    /// signal's number when a signal killed it, 127 or 126 when it could not start, as a
    /// shell says), otherwise 0 when every expectation holds and 1 when one does not.
    pub fn exit_code(&self) -> u8 {
        match &self.command {
            // Exit codes are one byte on unix; a code of 256 would read as 0, so it is
            // kept a failure.
            CommandEnd::Exited(0) => u8::from(!self.report.passed()),
            CommandEnd::Exited(code) => match u8::try_from(*code & 0xff) {
                Ok(0) | Err(_) => 1,
                Ok(code) => code,
            },
            CommandEnd::Signalled(signal) => {
                u8::try_from(128 + (*signal).clamp(1, 127)).unwrap_or(255)
            }
            // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
            CommandEnd::Interrupted => 130,
            CommandEnd::NotStarted { not_found, .. } => {
                if *not_found {
                    127
                } else {
                    126
                }
            }
        }
    }
}

/// The JSON file `APNS_SIM_INFO` names: every address, credential and device token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Info {
    /// The binary gateway, `host:port` (`APNS_SIM_GATEWAY`).
    pub gateway: String,
    /// The feedback service (`APNS_SIM_FEEDBACK`).
    pub feedback: String,
    /// The HTTP/2 provider API (`APNS_SIM_HTTP2`).
    pub http2: String,
    /// The device endpoint.
    pub devices_endpoint: String,
    /// The control API's base URL (`APNS_SIM_CONTROL_URL`).
    pub control_url: String,
    /// The first device's first token (`APNS_SIM_TOKEN`), if there is a device.
    pub token: Option<String>,
    /// The CA certificate the simulator's server certificates chain to (`APNS_SIM_CA_FILE`).
    pub ca_file: PathBuf,
    /// The provider certificate of the first `[[app]]` with one, else the default
    /// `com.example.app` one (`APNS_SIM_CERT_FILE`).
    pub cert_file: PathBuf,
    /// Its private key (`APNS_SIM_KEY_FILE`).
    pub key_file: PathBuf,
    /// The `.p8` key of the first `[[app]]` with a `key_id`, else the default one
    /// (`APNS_SIM_AUTH_KEY_FILE`).
    pub auth_key_file: PathBuf,
    /// Its key id (`APNS_SIM_KEY_ID`).
    pub key_id: String,
    /// Its team (`APNS_SIM_TEAM_ID`).
    pub team_id: String,
    /// Every `[[app]]` with its credentials.
    pub apps: Vec<InfoApp>,
    /// Every token of every device, in the scenario's order.
    pub devices: Vec<InfoDevice>,
}

/// One app of [`Info`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InfoApp {
    /// Its bundle id (the topic of its ordinary notifications).
    pub bundle: String,
    /// The topic to push to (the bundle id).
    pub topic: String,
    /// Its team.
    pub team_id: String,
    /// Its provider certificate (`None`: `certificate = "none"`).
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The certificate's environment: `universal`, `sandbox` or `production`.
    pub environment: Option<String>,
    /// Its `.p8` key, if it has one.
    pub auth_key_file: Option<PathBuf>,
    /// That key's id.
    pub key_id: Option<String>,
}

/// One device token of [`Info`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InfoDevice {
    /// The device's serial.
    pub serial: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// The app's bundle id.
    pub app: String,
    /// The kind of token: `remote`, `voip`, `liveactivity:ID`, …
    pub kind: String,
    /// The token, hex.
    pub token: String,
}

/// A folder that is removed when dropped: the credentials COMMAND reads live there only
/// as long as the test.
struct TempDir(PathBuf);

impl TempDir {
    /// A fresh folder under the system's temporary folder, readable by this user only.
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("apns-sim-test-{}", Uuid::new_v4()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds [`Info`] for a PKI written to `dir`.
fn info(scenario: &Scenario, pki: &Pki, dir: &Path, addrs: &Addrs, devices: &[Device]) -> Info {
    let apps: Vec<InfoApp> = scenario
        .apps
        .iter()
        .map(|app| {
            let env = match app.certificate {
                CertChoice::Universal => Some(CertEnvironment::Universal),
                CertChoice::Sandbox => Some(CertEnvironment::Sandbox),
                CertChoice::Production => Some(CertEnvironment::Production),
                CertChoice::None => None,
            };
            let cert = env.and_then(|env| pki.provider_for(&app.bundle, env));
            let key = app.key_id.as_deref().and_then(|id| pki.auth_key(id));
            InfoApp {
                bundle: app.bundle.clone(),
                topic: app.bundle.clone(),
                team_id: app.team.clone(),
                cert_file: cert.map(|c| dir.join(c.cert_file_name())),
                key_file: cert.map(|c| dir.join(c.key_file_name())),
                environment: cert.map(|c| c.environment.to_string()),
                auth_key_file: key.map(|k| dir.join(k.file_name())),
                key_id: key.map(|k| k.key_id.clone()),
            }
        })
        .collect();
    let default_cert = pki.default_provider();
    let (cert_file, key_file) = apps
        .iter()
        .find_map(|a| Some((a.cert_file.clone()?, a.key_file.clone()?)))
        .unwrap_or_else(|| {
            (
                dir.join(default_cert.cert_file_name()),
                dir.join(default_cert.key_file_name()),
            )
        });
    let auth_key = scenario
        .apps
        .iter()
        .find_map(|a| pki.auth_key(a.key_id.as_deref()?))
        .or_else(|| pki.auth_key(DEFAULT_KEY_ID))
        .or_else(|| pki.auth_keys().first());
    let devices: Vec<InfoDevice> = devices
        .iter()
        .flat_map(|d| {
            d.apps.iter().map(|a| InfoDevice {
                serial: d.serial.clone(),
                environment: d.environment.clone(),
                app: a.app.clone(),
                kind: a.kind.clone(),
                token: a.token.clone(),
            })
        })
        .collect();
    Info {
        gateway: addrs.gateway.to_string(),
        feedback: addrs.feedback.to_string(),
        http2: addrs.http2.to_string(),
        devices_endpoint: addrs.devices.to_string(),
        control_url: format!("http://{}", addrs.control),
        token: devices.first().map(|d| d.token.clone()),
        ca_file: dir.join("ca.pem"),
        cert_file,
        key_file,
        auth_key_file: auth_key.map_or_else(PathBuf::new, |k| dir.join(k.file_name())),
        key_id: auth_key.map(|k| k.key_id.clone()).unwrap_or_default(),
        team_id: auth_key.map(|k| k.team_id.clone()).unwrap_or_default(),
        apps,
        devices,
    }
}

/// The variables COMMAND gets (README, "apns-sim test").
fn environment(info: &Info, info_path: &Path) -> Vec<(&'static str, OsString)> {
    let mut vars: Vec<(&'static str, OsString)> = vec![
        ("APNS_SIM_CERT_FILE", info.cert_file.clone().into()),
        ("APNS_SIM_KEY_FILE", info.key_file.clone().into()),
        ("APNS_SIM_CA_FILE", info.ca_file.clone().into()),
        ("APNS_SIM_AUTH_KEY_FILE", info.auth_key_file.clone().into()),
        ("APNS_SIM_KEY_ID", info.key_id.clone().into()),
        ("APNS_SIM_TEAM_ID", info.team_id.clone().into()),
        ("APNS_SIM_GATEWAY", info.gateway.clone().into()),
        ("APNS_SIM_FEEDBACK", info.feedback.clone().into()),
        ("APNS_SIM_HTTP2", info.http2.clone().into()),
        ("APNS_SIM_CONTROL_URL", info.control_url.clone().into()),
        ("APNS_SIM_INFO", info_path.to_owned().into()),
    ];
    if let Some(token) = &info.token {
        vars.push(("APNS_SIM_TOKEN", token.clone().into()));
    }
    vars
}

/// Whether `scenario` can run with COMMAND as its provider (`apns-sim test`, `apns-sim
/// run`): `Err` holds one `FILE:LINE: field: why` line per problem.
pub fn check(scenario: &Scenario, file: &str) -> Result<(), String> {
    let problems = check_for(scenario, Host::Test);
    if problems.is_empty() {
        return Ok(());
    }
    Err(problems
        .iter()
        .map(|p| format!("{file}:{p}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Runs `command` (program and arguments) against `scenario`'s world and checks the
/// scenario's expectations; `print` gets the timeline and what the harness does. An `Err`
/// means the test could not be set up (the scenario cannot run under `test`, the simulator
/// did not start): COMMAND did not run, and the text says why (one `LINE: field: why` per
/// line for a scenario mistake, to be prefixed with the file's name).
///
/// `interrupt` is the user giving up (the CLI passes Ctrl-C): COMMAND is killed, nothing
/// more is waited for, and the verdicts are those of what was seen so far; the temporary
/// folder is removed as on any other end.
pub async fn test(
    scenario: &Scenario,
    file: &str,
    command: &[OsString],
    stdout: CommandStdout,
    interrupt: impl std::future::Future<Output = ()> + Send,
    print: &mut (dyn FnMut(&str) + Send),
) -> Result<TestReport, String> {
    // 1. The scenario must make sense with COMMAND as its provider.
    check(scenario, file)?;
    if command.is_empty() {
        return Err(NO_COMMAND.to_owned());
    }
    // 2. The world: a simulator with the scenario's credentials on 127.0.0.1, ports the
    //    system picks.
    let (sim, clock) = start(scenario)
        .await
        .map_err(|e| format!("the simulator did not start: {e}"))?;
    let world = World {
        sim,
        clock,
        extra_env: Vec::new(),
    };
    test_in(world, scenario, file, command, stdout, interrupt, print).await
}

/// What [`NO_COMMAND`] says: `command` was empty.
const NO_COMMAND: &str = "no COMMAND to run (give it after --)";

/// A started simulator for [`test_in`], and what COMMAND gets besides the `APNS_SIM_*`
/// variables.
#[derive(Debug)]
pub struct World {
    /// The simulator, serving `scenario`'s credentials (see [`super::run::mint`]); the
    /// harness shuts it down at the end.
    pub sim: Simulator,
    /// Its clock (the timeline's faults move it).
    pub clock: Clock,
    /// More variables for COMMAND (`apns-sim run`'s trust-store variables); they override
    /// the caller's own, and the `APNS_SIM_*` ones override them.
    pub extra_env: Vec<(String, OsString)>,
}

/// [`test()`] on a simulator the caller started (`apns-sim run` starts it on Apple's ports
/// inside its namespaces): creates `scenario`'s devices on it, writes the credentials and
/// the [`Info`] file to a temporary folder, runs COMMAND with the `APNS_SIM_*` variables
/// and `world.extra_env`, lets it settle and judges. The simulator is shut down before
/// this returns, whatever the outcome. `scenario` must pass [`check`]. The devices' start
/// is drawn on a progress bar on standard error when that is a terminal (the binary's
/// `apns-sim test` and `apns-sim run` are the callers; a pipe gets nothing).
pub async fn test_in(
    world: World,
    scenario: &Scenario,
    file: &str,
    command: &[OsString],
    stdout: CommandStdout,
    interrupt: impl std::future::Future<Output = ()> + Send,
    print: &mut (dyn FnMut(&str) + Send),
) -> Result<TestReport, String> {
    tokio::pin!(interrupt);
    let World {
        sim,
        clock,
        extra_env,
    } = world;
    let Some((program, args)) = command.split_first() else {
        sim.shutdown().await;
        return Err(NO_COMMAND.to_owned());
    };
    let name = scenario.name.clone().unwrap_or_else(|| file.to_owned());

    // 3. The world's devices online.
    let result = async {
        let mut runner = Runner::new(&sim, clock, scenario, Instant::now())
            .with_external_provider()
            .with_progress(Draw::Stderr);
        let devices = runner.create_devices().await?;
        runner.line(
            "world",
            format!("{} devices online", devices.len()),
            true,
            print,
        );

        // 4. The credentials and the info file, in a folder of their own.
        let dir = TempDir::new().map_err(|e| format!("a temporary folder: {e}"))?;
        sim.pki()
            .write(&dir.0)
            .map_err(|e| format!("writing the credentials: {e}"))?;
        let info = info(scenario, sim.pki(), &dir.0, sim.addrs(), &devices);
        let info_path = dir.0.join(INFO_FILE);
        let json = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
        std::fs::write(&info_path, json).map_err(|e| format!("writing {INFO_FILE}: {e}"))?;

        // 5. COMMAND, with the timeline alongside it. The timeline runs to its end even
        //    when COMMAND exits first; while one of the two is still going, the delivery log
        //    is read as it grows.
        let mut child = tokio::process::Command::new(program);
        child
            .args(args)
            .envs(extra_env)
            .envs(environment(&info, &info_path))
            .stdin(Stdio::inherit())
            .kill_on_drop(true);
        if info.token.is_none() {
            // No device, no token: a value the caller's own environment holds would mislead.
            child.env_remove("APNS_SIM_TOKEN");
        }
        if stdout == CommandStdout::Stderr {
            child.stdout(std::io::stderr());
        }
        let shown = command
            .iter()
            .map(|w| w.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut interrupted = false;
        let end = match child.spawn() {
            Err(e) => CommandEnd::NotStarted {
                not_found: e.kind() == std::io::ErrorKind::NotFound,
                error: e.to_string(),
            },
            Ok(mut child) => {
                runner.restart_timeline_clock();
                runner.line("command", format!("started: {shown}"), true, print);
                let mut status = None;
                {
                    let timeline = runner.timeline(print);
                    tokio::pin!(timeline);
                    loop {
                        tokio::select! {
                            s = child.wait(), if status.is_none() => status = Some(s),
                            () = &mut timeline => break,
                            () = &mut interrupt, if !interrupted => {
                                // Ctrl-C: the timeline stops here (dropped with this
                                // block) and COMMAND is killed if it has not exited.
                                interrupted = true;
                                break;
                            }
                        }
                    }
                }
                if interrupted && status.is_none() {
                    // `kill` also waits, so COMMAND is gone before its files are removed.
                    let _ = child.kill().await;
                }
                let status = match status {
                    Some(s) => s,
                    None if interrupted => child.wait().await,
                    None => {
                        tokio::select! {
                            s = child.wait() => s,
                            () = &mut interrupt => {
                                interrupted = true;
                                let _ = child.kill().await;
                                child.wait().await
                            }
                            () = runner.follow_log() => unreachable!("follow_log never returns"),
                        }
                    }
                };
                match status {
                    _ if interrupted => CommandEnd::Interrupted,
                    Ok(s) => exit_of(s),
                    Err(e) => CommandEnd::NotStarted {
                        error: format!("waiting for it: {e}"),
                        not_found: false,
                    },
                }
            }
        };
        let ok = end.succeeded();
        runner.line("command", end.describe(), ok, print);

        // 6. What COMMAND sent settles: its connections close (the gateway may still hold
        //    frames it wrote before exiting), then every notification sent to a device is
        //    answered by it and the inboxes show what was acknowledged.
        if interrupted {
            runner.line(
                "interrupted",
                "stopped by the user: COMMAND killed, nothing more waited for".to_owned(),
                false,
                print,
            );
        } else if !runner.providers_closed().await {
            runner.line(
                "settle",
                "a provider connection stayed open".to_owned(),
                false,
                print,
            );
        }
        if !interrupted {
            runner.settle().await;
        }
        let mut report = runner.report(file, &name, None);
        // COMMAND is a test case of its own in the reports (JUnit readers list it).
        report.verdicts.insert(
            0,
            Verdict {
                name: "COMMAND".to_owned(),
                line: 1,
                passed: ok,
                expected: format!("{shown} exits with code 0"),
                seen: end.describe(),
                closest: Vec::new(),
            },
        );
        drop(dir);
        Ok(TestReport {
            command: end,
            report,
        })
    }
    .await;
    sim.shutdown().await;
    result
}

/// How a finished child ended.
fn exit_of(status: std::process::ExitStatus) -> CommandEnd {
    if let Some(code) = status.code() {
        return CommandEnd::Exited(code);
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return CommandEnd::Signalled(signal);
    }
    CommandEnd::Exited(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(passed: bool) -> FileReport {
        let mut r = FileReport::failed("f.toml", "x".to_owned());
        if passed {
            r.error = None;
        }
        r
    }

    #[test]
    fn the_exit_code_is_the_commands_failure_then_the_verdict() {
        let code = |command, passed| {
            TestReport {
                command,
                report: report(passed),
            }
            .exit_code()
        };
        assert_eq!(code(CommandEnd::Exited(0), true), 0);
        assert_eq!(code(CommandEnd::Exited(0), false), 1);
        assert_eq!(code(CommandEnd::Exited(3), true), 3);
        assert_eq!(code(CommandEnd::Interrupted, true), 130);
        assert_eq!(code(CommandEnd::Exited(3), false), 3);
        assert_eq!(code(CommandEnd::Exited(256), true), 1);
        assert_eq!(code(CommandEnd::Signalled(9), true), 137);
        let not_started = |not_found| CommandEnd::NotStarted {
            error: String::new(),
            not_found,
        };
        assert_eq!(code(not_started(true), true), 127);
        assert_eq!(code(not_started(false), true), 126);
    }

    #[test]
    fn provider_steps_are_refused_under_test() {
        let text = "[[app]]\nbundle='com.a'\n[[device]]\nserial='A'\napps=['com.a']\n\
                    [[step]]\nname='p'\npush={device='A', app='com.a'}\n\
                    [[step]]\noffline='A'\n\
                    [[expect]]\nanswer={step='p', status=200}\n\
                    [[expect]]\nshows={device='A', count=1}\n";
        let scenario = Scenario::parse(text).unwrap();
        let problems = check_for(&scenario, Host::Test);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["step[1].push", "expect[1].answer"], "{problems:?}");
        assert_eq!(problems[0].line, 6);
        assert!(check_for(&scenario, Host::Serve).is_empty());
    }
}
