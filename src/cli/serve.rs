//! `apns-sim serve`: binds the five endpoints, starts the simulator and its demo fleet, prints
//! where everything is and a push command ready to paste, and runs until Ctrl-C or SIGTERM.
//! With `--scenario FILE` the fleet is the file's world: its `[[app]]` credentials are minted
//! into the certificate folder, its timeline runs, and each expectation's verdict is printed
//! when the timeline has settled; serving goes on.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apns_sim::client::device::DeviceEvent;
use apns_sim::pki::{Pki, DEFAULT_TOPIC};
use apns_sim::protocol::payload::{MAX_PAYLOAD_FRAME, MAX_PAYLOAD_LEGACY};
use apns_sim::protocol::token::{AppToken, DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use apns_sim::scenario::check::{check_for, Host};
use apns_sim::scenario::run::{mint, Runner};
use apns_sim::scenario::{self, Scenario};
use apns_sim::settings::{
    RateLimit, Settings, UnknownCommand, DEFAULT_DELIVERY_LOG_LEN, DEFAULT_STORAGE_DAYS,
    DEFAULT_TOKEN_LEN, MAX_DELIVERY_LOG_LEN, MAX_STORAGE_DAYS, TOKEN_LEN_RANGE,
};
use apns_sim::sim::{Addrs, Listeners, Simulator, SimulatorConfig, StartError};
use clap::error::ErrorKind;
use clap::{ArgMatches, Args, ValueEnum};
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

/// Options of `apns-sim serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Certificate folder (minted on first start, reused later).
    #[arg(long, default_value = DEFAULT_CERTS_DIR, env = "APNS_SIM_CERTS")]
    pub(crate) certs: PathBuf,
    /// State directory: devices, tokens, unregistered tokens, unread feedback and stored
    /// notifications survive restarts there (SQLite). Default: state/ beside --certs.
    #[arg(
        long,
        value_name = "DIR",
        env = "APNS_SIM_STATE",
        conflicts_with = "in_memory"
    )]
    state: Option<PathBuf>,
    /// Keep all state in memory: a restart forgets every device and token.
    #[arg(long, env = "APNS_SIM_IN_MEMORY")]
    in_memory: bool,
    /// Address every endpoint binds to.
    #[arg(long, default_value = "127.0.0.1", env = "APNS_SIM_BIND")]
    bind: IpAddr,
    /// Binary gateway port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_GATEWAY_PORT, env = "APNS_SIM_GATEWAY_PORT")]
    gateway_port: u16,
    /// Feedback service port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_FEEDBACK_PORT, env = "APNS_SIM_FEEDBACK_PORT")]
    feedback_port: u16,
    /// HTTP/2 provider API port (0 = any free port; 443 works too, given the privilege).
    #[arg(long, default_value_t = apns_sim::DEFAULT_HTTP2_PORT, env = "APNS_SIM_HTTP2_PORT")]
    http2_port: u16,
    /// Device endpoint port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_DEVICE_PORT, env = "APNS_SIM_DEVICE_PORT")]
    pub(crate) device_port: u16,
    /// Control API port (HTTP and JSON; 0 = any free port). Without --control-token,
    /// `--bind` must be a loopback address.
    #[arg(long, default_value_t = apns_sim::DEFAULT_CONTROL_PORT, env = "APNS_SIM_CONTROL_PORT")]
    pub(crate) control_port: u16,
    /// Require this bearer token on every control API request (Authorization: Bearer T;
    /// the dashboard and /v1/events also take ?access_token=T). Needed to bind off loopback.
    #[arg(long, env = "APNS_SIM_CONTROL_TOKEN", hide_env_values = true)]
    pub(crate) control_token: Option<String>,
    /// Events the delivery log keeps (GET /v1/notifications, /v1/events replay from it);
    /// a cursor older than that is told it missed some.
    #[arg(long, default_value_t = DEFAULT_DELIVERY_LOG_LEN, env = "APNS_SIM_DELIVERY_LOG_LEN",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=MAX_DELIVERY_LOG_LEN as u64))]
    delivery_log_len: usize,
    /// Start N plain demo devices (sandbox, com.example.app) instead of the demo fleet;
    /// 0 starts none.
    #[arg(long, env = "APNS_SIM_DEVICES")]
    devices: Option<usize>,
    /// Serve this scenario file's world: its apps' credentials (minted into --certs), its
    /// devices, its timeline, and its expectations' verdicts once the timeline has settled
    /// (default: scenarios/demo.toml, embedded).
    #[arg(long, env = "APNS_SIM_SCENARIO")]
    pub(crate) scenario: Option<PathBuf>,
    /// Environment of universal certificates when the TLS server name is not an Apple host.
    #[arg(long, default_value = "sandbox", env = "APNS_SIM_DEFAULT_ENVIRONMENT")]
    default_environment: Environment,
    /// Throttle pushes per device token, as PUSHES/SECONDS (e.g. 10/60): beyond it HTTP/2
    /// answers 429 TooManyRequests and the binary API drops silently. Off by default.
    #[arg(long, env = "APNS_SIM_TOKEN_RATE_LIMIT")]
    token_rate_limit: Option<RateLimit>,
    /// Length in bytes of the device tokens minted, 1 to 100: Apple promises no size, and
    /// e.g. 80 catches a provider that hard-codes 64 hex digits (the binary API keeps 32).
    #[arg(long, default_value_t = DEFAULT_TOKEN_LEN, env = "APNS_SIM_TOKEN_LEN",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(*TOKEN_LEN_RANGE.start() as u64..=*TOKEN_LEN_RANGE.end() as u64))]
    token_len: usize,
    /// Days a notification for an offline device is kept when the provider gave no expiry,
    /// and the most any expiry keeps it (Apple: "up to 30 days").
    #[arg(long, default_value_t = DEFAULT_STORAGE_DAYS, env = "APNS_SIM_STORAGE_DAYS",
          help_heading = "Where Apple's sources disagree (README, Protocol)",
          value_parser = clap::builder::RangedU64ValueParser::<u32>::new()
              .range(1..=u64::from(MAX_STORAGE_DAYS)))]
    storage_days: u32,
    /// Largest payload of binary commands 0 and 1 in bytes: 256 as Apple's legacy-format
    /// text says; 2048 for the reading that the iOS 8 limit applied to them too.
    #[arg(long, default_value_t = MAX_PAYLOAD_LEGACY, env = "APNS_SIM_LEGACY_PAYLOAD_LIMIT",
          help_heading = "Where Apple's sources disagree (README, Protocol)",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(MAX_PAYLOAD_LEGACY as u64..=MAX_PAYLOAD_FRAME as u64))]
    legacy_payload_limit: usize,
    /// What the binary gateway answers to a command byte other than 0, 1 or 2.
    #[arg(
        long,
        value_enum,
        default_value = "close",
        env = "APNS_SIM_UNKNOWN_COMMAND",
        help_heading = "Where Apple's sources disagree (README, Protocol)"
    )]
    unknown_command: UnknownCommandArg,
    /// Refuse an apns-id with uppercase hex digits (400 BadMessageId), as Apple's
    /// documentation reads, instead of accepting and echoing it as APNs has been seen to.
    #[arg(
        long,
        env = "APNS_SIM_STRICT_APNS_ID",
        help_heading = "Where Apple's sources disagree (README, Protocol)"
    )]
    strict_apns_id: bool,
    /// How far ahead of the simulator's clock a provider token's iat may be, in seconds,
    /// before it is answered ExpiredProviderToken.
    #[arg(
        long,
        default_value_t = 3600,
        env = "APNS_SIM_MAX_IAT_AHEAD_SECS",
        help_heading = "Where Apple's sources disagree (README, Protocol)"
    )]
    max_iat_ahead_secs: u64,
    /// Seconds shutdown (Ctrl-C, SIGTERM) lets connections say goodbye and close before it
    /// aborts the rest; the process always exits.
    #[arg(long, default_value_t = 10, env = "APNS_SIM_SHUTDOWN_TIMEOUT_SECS")]
    shutdown_timeout_secs: u64,
}

/// `--unknown-command`: the CLI's names for [`UnknownCommand`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UnknownCommandArg {
    /// Close the connection without a byte (TN2265).
    Close,
    /// Send status 128 (Protocol error) with identifier 0, then close.
    ProtocolError,
}

impl From<UnknownCommandArg> for UnknownCommand {
    fn from(arg: UnknownCommandArg) -> Self {
        match arg {
            UnknownCommandArg::Close => UnknownCommand::Close,
            UnknownCommandArg::ProtocolError => UnknownCommand::ProtocolError,
        }
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
    /// `--devices` and `--scenario` both choose the demo fleet. One typed on the command line
    /// wins over the other's `APNS_SIM_*` variable; two from the same source are refused.
    pub(crate) fn check(
        &mut self,
        command: &mut clap::Command,
        matches: &ArgMatches,
    ) -> Result<(), clap::Error> {
        if self.devices.is_none() || self.scenario.is_none() {
            return Ok(());
        }
        match (
            given_on_command_line(matches, "devices"),
            given_on_command_line(matches, "scenario"),
        ) {
            (true, false) => self.scenario = None,
            (false, true) => self.devices = None,
            _ => {
                return Err(command.error(
                    ErrorKind::ArgumentConflict,
                    "--devices and --scenario both choose the demo fleet: give one of them",
                ))
            }
        }
        Ok(())
    }

    /// Where the durable state lives: `--state`, else `state/` beside the certificate
    /// folder; `None` with `--in-memory`.
    fn state_dir(&self) -> Option<PathBuf> {
        if self.in_memory {
            return None;
        }
        Some(self.state.clone().unwrap_or_else(|| {
            let beside = self.certs.parent().unwrap_or(Path::new(""));
            beside.join("state")
        }))
    }

    /// The simulator's limits and defaults: the library's, with what the flags set.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            default_environment: self.default_environment,
            token_rate_limit: self.token_rate_limit,
            token_len: self.token_len,
            default_storage_days: self.storage_days,
            legacy_payload_limit: self.legacy_payload_limit,
            unknown_command: self.unknown_command.into(),
            accept_uppercase_apns_id: !self.strict_apns_id,
            max_iat_ahead: Duration::from_secs(self.max_iat_ahead_secs),
            delivery_log_len: self.delivery_log_len,
            ..Settings::default()
        }
    }

    /// The demo fleet: `--devices N` plain devices, a scenario file, or the embedded demo.
    /// A scenario file runs whole (see [`run_timeline`]), except what cannot run under a
    /// simulator that keeps serving (a `shutdown` step), which is refused at its line.
    pub(crate) fn fleet(&self) -> Result<Scenario> {
        Ok(match (self.devices, &self.scenario) {
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
            let addr = SocketAddr::new(self.bind, port);
            async move {
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))
            }
        };
        Ok(Listeners {
            gateway: bind(self.gateway_port).await?,
            feedback: bind(self.feedback_port).await?,
            http2: bind(self.http2_port).await?,
            devices: bind(self.device_port).await?,
            control: bind(self.control_port).await?,
        })
    }

    /// Runs the simulator until Ctrl-C or SIGTERM.
    pub(crate) async fn run(self) -> Result<Outcome> {
        // Refused before anything is minted or bound: without a token the control API is
        // open to whoever reaches it.
        match &self.control_token {
            Some(token) if !apns_sim::sim::valid_control_token(token) => {
                return Err(StartError::BadControlToken.into());
            }
            None if !self.bind.is_loopback() => {
                let addr = SocketAddr::new(self.bind, self.control_port);
                return Err(StartError::ControlNotLoopback(addr).into());
            }
            _ => {}
        }
        let mut pki = Pki::load_or_create(&self.certs)
            .with_context(|| format!("certificates in {}", self.certs.display()))?;
        let fleet = self.fleet()?;
        // The scenario's [[app]] credentials join the folder, as `certs --mint` adds them,
        // so a provider outside reads them from the same place as the others.
        if mint(&fleet, &mut pki).map_err(anyhow::Error::msg)? {
            pki.write(&self.certs)
                .with_context(|| format!("writing {}", self.certs.display()))?;
        }
        let mut config = SimulatorConfig::new(pki);
        config.settings = self.settings();
        config.pki_dir = Some(self.certs.clone());
        config.bundle_owners = fleet.bundle_owners();
        config.control_token = self.control_token.clone();
        config.state_dir = self.state_dir();
        let sim = Simulator::start(config, self.listeners().await?)?;
        let addrs = *sim.addrs();

        println!("apns-sim is running (Ctrl-C to stop)");
        println!("  binary gateway   {}", addrs.gateway);
        println!("  feedback service {}", addrs.feedback);
        println!("  HTTP/2 API       {}", addrs.http2);
        println!("  device endpoint  {}", addrs.devices);
        let token_note = if self.control_token.is_some() {
            " (bearer token required)"
        } else {
            ""
        };
        println!("  control API      {}{token_note}", addrs.control);
        println!("  certificates     {}", self.certs.display());

        let mut runner = Runner::new(&sim, sim.hub().clock().clone(), &fleet, Instant::now());
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
                print_push_commands(&addrs, &self.certs, &first.token);
            }
            if let Some(voip) = sandbox(&TokenKind::Voip) {
                print_voip_command(&addrs, &self.certs, &voip.serial, &voip.token);
            }
        }
        if fleet.steps.is_empty() && fleet.expects.is_empty() {
            stop_signal().await?;
        } else {
            let name = self
                .scenario
                .as_ref()
                .map_or_else(|| "scenario".to_owned(), |p| p.display().to_string());
            // The timeline runs while the simulator serves; its verdicts are printed once
            // it has settled, and serving goes on until Ctrl-C or SIGTERM.
            tokio::select! {
                () = run_timeline(&mut runner, &name) => unreachable!("run_timeline never returns"),
                stopped = stop_signal() => stopped?,
            }
        }
        drop(runner);
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

/// Waits for Ctrl-C, or SIGTERM (what service managers and CI runners send), so that either
/// one shuts down gracefully: providers get status 10 and devices an Error frame.
async fn stop_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
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

    fn settings(argv: &[&str]) -> Settings {
        let matches = <Serve as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
            .expect("flags parse");
        Serve::from_arg_matches(&matches)
            .expect("flags")
            .args
            .settings()
    }

    #[test]
    fn the_fidelity_choices_reach_the_settings() {
        let default = Settings::default();
        let plain = settings(&[]);
        assert_eq!(plain.default_storage_days, default.default_storage_days);
        assert_eq!(plain.legacy_payload_limit, default.legacy_payload_limit);
        assert_eq!(plain.unknown_command, default.unknown_command);
        assert_eq!(
            plain.accept_uppercase_apns_id,
            default.accept_uppercase_apns_id
        );
        assert_eq!(plain.max_iat_ahead, default.max_iat_ahead);
        assert_eq!(plain.delivery_log_len, default.delivery_log_len);
        assert_eq!(settings(&["--delivery-log-len", "50"]).delivery_log_len, 50);
        let chosen = settings(&[
            "--storage-days",
            "7",
            "--legacy-payload-limit",
            "2048",
            "--unknown-command",
            "protocol-error",
            "--strict-apns-id",
            "--max-iat-ahead-secs",
            "60",
        ]);
        assert_eq!(chosen.default_storage_days, 7);
        assert_eq!(chosen.legacy_payload_limit, 2048);
        assert_eq!(chosen.unknown_command, UnknownCommand::ProtocolError);
        assert!(!chosen.accept_uppercase_apns_id);
        assert_eq!(chosen.max_iat_ahead, Duration::from_secs(60));
    }

    #[test]
    fn out_of_range_choices_are_refused() {
        let parse = |argv: &[&str]| {
            <Serve as clap::CommandFactory>::command()
                .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
                .is_err()
        };
        assert!(parse(&["--storage-days", "0"]));
        assert!(parse(&["--storage-days", "3651"]));
        assert!(parse(&["--legacy-payload-limit", "255"]));
        assert!(parse(&["--legacy-payload-limit", "2049"]));
        assert!(parse(&["--unknown-command", "shrug"]));
        assert!(parse(&["--delivery-log-len", "0"]));
        assert!(parse(&["--delivery-log-len", "1000001"]));
    }

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/tmp/certs-1"), "/tmp/certs-1");
        assert_eq!(shell_quote("my certs"), "'my certs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
