//! `apns-sim serve`: binds the five endpoints, starts the simulator and its demo fleet, prints
//! where everything is and a push command ready to paste, and runs until Ctrl-C or SIGTERM.
//! With `--scenario FILE` the fleet is the file's world: its `[[app]]` credentials are minted
//! into the certificate folder, its timeline runs, and each expectation's verdict is printed
//! when the timeline has settled; serving goes on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apns_sim::client::device::DeviceEvent;
use apns_sim::config::{self, Entry, ServeConfig};
use apns_sim::pki::{Pki, DEFAULT_TOPIC};
use apns_sim::progress::Draw;
use apns_sim::protocol::token::{AppToken, DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use apns_sim::scenario::check::{check_for, Host};
use apns_sim::scenario::run::{mint, Runner};
use apns_sim::scenario::{self, Scenario};
use apns_sim::sim::{Addrs, Listeners, Simulator, SimulatorConfig, StartError};
use clap::{Arg, ArgMatches, Args, FromArgMatches};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tracing::info;

use super::{given_on_command_line, Outcome, DEFAULT_CERTS_DIR};

/// How long `serve` waits for its demo fleet to register before printing the summary (at
/// least; a large fleet gets [`fleet_ready_timeout`]).
const DEMO_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The time a fleet of `devices` may take to register: 20 ms each, far more than a device
/// takes on loopback (a few ms, started many at once), so only a stuck start trips it.
fn fleet_ready_timeout(devices: usize) -> Duration {
    Duration::from_millis(20).saturating_mul(u32::try_from(devices).unwrap_or(u32::MAX))
}

/// Options of `apns-sim serve`: the configuration file, and a flag for every setting of
/// [`config::ENTRIES`] (see [`SettingFlags`]).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read the settings from this TOML file (`apns-sim config init` prints one with every
    /// default); APNS_SIM_* variables override it, and flags override both.
    #[arg(long, value_name = "FILE", env = "APNS_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the configuration the file, the variables and the flags make, as a TOML file
    /// `--config` reads, and exit without starting anything.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: SettingFlags,
}

/// The flags of `serve`'s settings, made from [`config::ENTRIES`]: `--KEY-WITH-DASHES`,
/// with the entry's variable, default and documentation shown in the help. Only values
/// typed on the command line are kept: the variables and the defaults are the library's
/// to apply ([`ServeConfig::resolve`]), under the precedence it documents.
#[derive(Debug, Clone, Default)]
pub(crate) struct SettingFlags(Vec<(&'static str, String)>);

impl SettingFlags {
    /// The clap argument of one entry.
    fn arg(entry: &Entry) -> Arg {
        let mut arg = Arg::new(entry.key)
            .long(entry.flag())
            .value_name(entry.shape)
            .env(entry.env())
            // Values are not shown: a control token is a secret.
            .hide_env_values(true)
            .help(entry.summary())
            .long_help(entry.doc());
        if let Some(default) = entry.default_value() {
            arg = arg.default_value(default);
        }
        if entry.is_switch() {
            // `--accept-uppercase-apns-id` alone means true; `… false` turns it off.
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        if let Some(heading) = entry.heading {
            arg = arg.help_heading(heading);
        }
        arg
    }
}

impl Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        config::ENTRIES
            .iter()
            .fold(cmd, |cmd, entry| cmd.arg(Self::arg(entry)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let typed = config::ENTRIES
            .iter()
            .filter(|entry| given_on_command_line(matches, entry.key))
            .filter_map(|entry| Some((entry.key, matches.get_one::<String>(entry.key)?.clone())))
            .collect();
        Ok(SettingFlags(typed))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A demo device's registration, as the banner lists it.
struct Registered {
    serial: String,
    /// The app and the kind of token, printed `APP` or `APP:KIND`.
    held: AppToken,
    environment: Environment,
    token: DeviceToken,
}

impl ServeArgs {
    /// The configuration: the file (if any), the process's `APNS_SIM_*` variables and the
    /// flags typed, resolved by the library.
    pub(crate) fn resolve(&self) -> Result<ServeConfig> {
        self.resolve_with(&|name| std::env::var(name).ok())
    }

    /// [`ServeArgs::resolve`] with the variables `env` looks up.
    fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<ServeConfig> {
        let text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        let file = self.config.as_deref().zip(text.as_deref());
        Ok(ServeConfig::resolve(file, env, &self.settings.0)?)
    }

    /// Runs the simulator until Ctrl-C or SIGTERM (or prints the configuration).
    pub(crate) async fn run(self) -> Result<Outcome> {
        let config = self.resolve()?;
        if self.print_config {
            print!("{}", config.to_toml());
            return Ok(Outcome::Done);
        }
        Serve(config).run().await
    }
}

/// `serve` with its configuration resolved.
pub(crate) struct Serve(pub(crate) ServeConfig);

impl Serve {
    /// The demo fleet: `--devices N` plain devices, a scenario file, or the embedded demo.
    /// A scenario file runs whole (see [`run_timeline`]), except what cannot run under a
    /// simulator that keeps serving (a `shutdown` step), which is refused at its line.
    pub(crate) fn fleet(&self) -> Result<Scenario> {
        Ok(match (self.0.devices, &self.0.scenario) {
            (Some(n), _) => Scenario::uniform(n, DEFAULT_TOPIC)?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let scenario =
                    Scenario::parse(&text).with_context(|| path.display().to_string())?;
                let problems = check_for(&scenario, Host::Serve);
                if !problems.is_empty() {
                    let list: Vec<String> = problems
                        .iter()
                        .map(|p| format!("{}:{p}", path.display()))
                        .collect();
                    anyhow::bail!("{}", list.join("\n"));
                }
                scenario
            }
            (None, None) => Scenario::parse(scenario::DEMO)?,
        })
    }

    /// Binds the five endpoints on `--bind`.
    async fn listeners(&self) -> Result<Listeners> {
        let bind = |port: u16| {
            let addr = SocketAddr::new(self.0.bind, port);
            async move {
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))
            }
        };
        let c = &self.0;
        Ok(Listeners {
            gateway: bind(c.gateway_port).await?,
            feedback: bind(c.feedback_port).await?,
            http2: bind(c.http2_port).await?,
            devices: bind(c.device_port).await?,
            control: bind(c.control_port).await?,
        })
    }

    /// Runs the simulator until Ctrl-C or SIGTERM.
    async fn run(self) -> Result<Outcome> {
        // Ctrl-C or SIGTERM (what service managers and CI runners send) shut down
        // gracefully, providers getting status 10 and devices an Error frame, from the
        // first moment: a signal that comes before the banner is printed still does.
        let stop = super::signal::stop_requested()?;
        let serve = &self.0;
        // Refused before anything is minted or bound: without a token the control API is
        // open to whoever reaches it.
        match &serve.control_token {
            Some(token) if !apns_sim::sim::valid_control_token(token) => {
                return Err(StartError::BadControlToken.into());
            }
            None if !serve.bind.is_loopback() => {
                let addr = SocketAddr::new(serve.bind, serve.control_port);
                return Err(StartError::ControlNotLoopback(addr).into());
            }
            _ => {}
        }
        let mut pki = Pki::load_or_create(&serve.certs)
            .with_context(|| format!("certificates in {}", serve.certs.display()))?;
        let fleet = self.fleet()?;
        // The scenario's [[app]] credentials join the folder, as `certs --mint` adds them,
        // so a provider outside reads them from the same place as the others.
        if mint(&fleet, &mut pki).map_err(anyhow::Error::msg)? {
            pki.write(&serve.certs)
                .with_context(|| format!("writing {}", serve.certs.display()))?;
        }
        let mut config = SimulatorConfig::new(pki);
        config.settings = serve.settings.clone();
        fleet.virtual_settings(&mut config.settings);
        config.pki_dir = Some(serve.certs.clone());
        config.bundle_owners = fleet.bundle_owners();
        config.control_token = serve.control_token.clone();
        config.state_dir = serve.state_dir();
        let sim = Simulator::start(config, self.listeners().await?)?;
        let addrs = *sim.addrs();

        println!("apns-sim is running (Ctrl-C to stop)");
        println!("  binary gateway   {}", addrs.gateway);
        println!("  feedback service {}", addrs.feedback);
        println!("  HTTP/2 API       {}", addrs.http2);
        println!("  device endpoint  {}", addrs.devices);
        let token_note = if serve.control_token.is_some() {
            " (bearer token required)"
        } else {
            ""
        };
        println!("  control API      {}{token_note}", addrs.control);
        println!("  certificates     {}", serve.certs.display());
        if let Some(v) = sim.hub().virtual_summary() {
            println!(
                "  virtual fleet    {} devices ({}, {}; {} tokens each): \
                 GET http://{}/v1/virtual/devices lists their tokens",
                v.count,
                v.environment.as_str(),
                v.apps.join(", "),
                v.tokens_per_device,
                addrs.control
            );
        }

        let mut runner = Runner::new(&sim, sim.hub().clock().clone(), &fleet, Instant::now())
            .with_progress(Draw::Stderr);
        let registered = start_fleet(&sim, &fleet, &mut runner).await?;
        if !registered.is_empty() {
            println!("demo devices:");
            let width = registered
                .iter()
                .map(|r| r.held.to_string().len())
                .max()
                .unwrap_or(0)
                .max(20);
            for r in &registered {
                println!(
                    "  {:<14} {:<10} {:<width$} {}",
                    r.serial,
                    r.environment.as_str(),
                    r.held.to_string(),
                    r.token
                );
            }
            let sandbox = |kind: &TokenKind| {
                registered.iter().find(|r| {
                    r.held.app == DEFAULT_TOPIC
                        && r.held.kind == *kind
                        && r.environment == Environment::Sandbox
                })
            };
            if let Some(first) = sandbox(&TokenKind::Remote) {
                print_push_commands(&addrs, &serve.certs, &first.token);
            }
            if let Some(voip) = sandbox(&TokenKind::Voip) {
                print_voip_command(&addrs, &serve.certs, &voip.serial, &voip.token);
            }
        }
        if fleet.steps.is_empty() && fleet.expects.is_empty() {
            // No timeline to follow: let the runner go now. It follows the delivery log
            // through the hub's broadcast, and while anyone listens the hub builds every
            // event it logs for the broadcast (strings, the payload as JSON): at load-test
            // rates a large share of the simulator's time, for a reader that never reads.
            drop(runner);
            stop.await;
        } else {
            let name = serve
                .scenario
                .as_ref()
                .map_or_else(|| "scenario".to_owned(), |p| p.display().to_string());
            // The timeline runs while the simulator serves; its verdicts are printed once
            // it has settled, and serving goes on until Ctrl-C or SIGTERM.
            tokio::select! {
                () = run_timeline(&mut runner, &name) => unreachable!("run_timeline never returns"),
                () = stop => {}
            }
            drop(runner);
        }
        println!("shutting down");
        sim.shutdown().await;
        Ok(Outcome::Done)
    }
}

/// The `--api` flag for the HTTP/2 address, when it is not the push command's default.
fn api_flag(addrs: &Addrs) -> String {
    if addrs.http2.port() == apns_sim::DEFAULT_HTTP2_PORT {
        String::new()
    } else {
        format!(" --api {}", addrs.http2)
    }
}

/// The `--certs` flag for the certificate folder, when it is not the default one.
fn certs_flag(certs: &Path) -> String {
    if certs == Path::new(DEFAULT_CERTS_DIR) {
        String::new()
    } else {
        format!(" --certs {}", shell_quote(&certs.display().to_string()))
    }
}

/// Prints the HTTP/2 VoIP push that reaches a demo device's PushKit token: push type
/// `voip`, topic `<bundle id>.voip` (the default certificate lists it).
fn print_voip_command(addrs: &Addrs, certs: &Path, serial: &str, token: &DeviceToken) {
    let (api, certs) = (api_flag(addrs), certs_flag(certs));
    let topic = TokenKind::Voip.topic(DEFAULT_TOPIC);
    println!(
        "a VoIP push to {serial}'s PushKit token (to an ordinary token: DeviceTokenNotForTopic):"
    );
    println!(
        "  cargo run -- push --http2 --push-type voip --topic {topic} --token {token}{api}{certs} --payload '{{\"call\":\"demo\"}}'"
    );
}

/// Prints the push commands that reach `token`, spelling out only what differs from the
/// push command's defaults.
fn print_push_commands(addrs: &Addrs, certs: &Path, token: &DeviceToken) {
    let gateway = if addrs.gateway.port() == apns_sim::DEFAULT_GATEWAY_PORT {
        String::new()
    } else {
        format!(" --gateway {}", addrs.gateway)
    };
    let (api, certs) = (api_flag(addrs), certs_flag(certs));
    let payload = r#"--payload '{"aps":{"alert":"Hello"}}'"#;
    println!("push to the first one (in another terminal):");
    println!("  cargo run -- push --token {token}{gateway}{certs} {payload}");
    println!("or through the HTTP/2 API:");
    println!("  cargo run -- push --http2 --token {token}{api}{certs} {payload}");
}

/// `word` as one shell word: unchanged when it holds nothing a shell treats specially,
/// otherwise single-quoted.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs a scenario's timeline on the serving simulator, prints each step and then each
/// expectation's verdict, and keeps reading the delivery log (never returns).
async fn run_timeline(runner: &mut Runner<'_>, name: &str) {
    let mut print = |line: &str| println!("scenario {line}");
    runner.restart_timeline_clock();
    runner.timeline(&mut print).await;
    runner.settle().await;
    let report = runner.report(name, name, None);
    for verdict in &report.verdicts {
        println!("{}", verdict.text());
    }
    let held = report.verdicts.iter().filter(|v| v.passed).count();
    println!(
        "{name}: {} ({held} of {} expectations hold); still serving (Ctrl-C to stop)",
        if report.passed() { "PASSED" } else { "FAILED" },
        report.verdicts.len()
    );
    runner.follow_log().await;
}

/// Starts the fleet's devices in-process through the simulator's actors (so the control
/// API and the dashboard can drive them), waits until each has registered its apps, and
/// prints what they receive from then on. `runner` creates them and learns their tokens
/// for the scenario's timeline.
async fn start_fleet(
    sim: &Simulator,
    fleet: &Scenario,
    runner: &mut Runner<'_>,
) -> Result<Vec<Registered>> {
    let actors = sim.actors();
    // Subscribed before the first device starts, so nothing it shows is missed.
    let mut events = actors.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if let DeviceEvent::Notification {
                serial,
                app,
                kind,
                payload,
                ..
            } = &event
            {
                match kind {
                    TokenKind::Remote => {
                        println!("device {serial} shows a notification for {app}: {payload}")
                    }
                    other => println!(
                        "device {serial} receives a push to {app}'s {}: {payload}",
                        other.describe()
                    ),
                }
            }
            info!(target: "apns_sim::demo", event = %serde_json::to_string(&event).unwrap_or_default());
        }
    });
    let created = tokio::time::timeout(
        DEMO_READY_TIMEOUT.max(fleet_ready_timeout(fleet.devices.len())),
        runner.create_devices(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the demo devices did not register in time"))?
    .map_err(|e| anyhow::anyhow!("demo devices: {e}"))?;
    let mut registered = Vec::new();
    for (spec, created) in fleet.devices.iter().zip(created) {
        for app in created.apps {
            registered.push(Registered {
                serial: created.serial.clone(),
                held: AppToken {
                    app: app.app,
                    kind: app.kind.parse().context("a token kind")?,
                },
                environment: spec.environment,
                token: DeviceToken::from_hex(&app.token).context("a device token")?,
            });
        }
    }
    Ok(registered)
}

#[cfg(test)]
mod tests {
    use super::{shell_quote, ServeArgs};
    use apns_sim::settings::{Settings, UnknownCommand};
    use clap::{FromArgMatches, Parser};
    use std::time::Duration;

    /// `apns-sim serve` alone, for parsing its flags.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The settings `serve ARGV` runs with, in an environment with no variables.
    fn resolved(argv: &[&str]) -> anyhow::Result<Settings> {
        let matches = <Serve as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
            .expect("flags parse");
        let args = Serve::from_arg_matches(&matches).expect("flags").args;
        Ok(args.resolve_with(&|_| None)?.settings)
    }

    fn settings(argv: &[&str]) -> Settings {
        resolved(argv).expect("valid settings")
    }

    #[test]
    fn the_fidelity_choices_reach_the_settings() {
        let default = Settings::default();
        let plain = settings(&[]);
        assert_eq!(format!("{plain:?}"), format!("{default:?}"));
        assert_eq!(settings(&["--delivery-log-len", "50"]).delivery_log_len, 50);
        let chosen = settings(&[
            "--default-storage-days",
            "7",
            "--legacy-payload-limit",
            "2048",
            "--unknown-command",
            "protocol-error",
            "--accept-uppercase-apns-id",
            "false",
            "--max-iat-ahead",
            "60s",
            "--handshake-timeout",
            "500ms",
        ]);
        assert_eq!(chosen.default_storage_days, 7);
        assert_eq!(chosen.legacy_payload_limit, 2048);
        assert_eq!(chosen.unknown_command, UnknownCommand::ProtocolError);
        assert!(!chosen.accept_uppercase_apns_id);
        assert_eq!(chosen.max_iat_ahead, Duration::from_secs(60));
        assert_eq!(chosen.handshake_timeout, Duration::from_millis(500));
        let switched = settings(&["--accept-uppercase-apns-id", "--token-len", "80"]);
        assert!(switched.accept_uppercase_apns_id);
        assert_eq!(switched.token_len, 80);
    }

    #[test]
    fn out_of_range_choices_are_refused() {
        for argv in [
            &["--default-storage-days", "0"][..],
            &["--default-storage-days", "3651"],
            &["--legacy-payload-limit", "255"],
            &["--legacy-payload-limit", "2049"],
            &["--unknown-command", "shrug"],
            &["--delivery-log-len", "0"],
            &["--delivery-log-len", "1000001"],
            &["--hello-timeout", "0s"],
        ] {
            let err = resolved(argv).expect_err("refused").to_string();
            assert!(err.starts_with(argv[0]), "{argv:?}: {err}");
        }
    }

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/tmp/certs-1"), "/tmp/certs-1");
        assert_eq!(shell_quote("my certs"), "'my certs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
