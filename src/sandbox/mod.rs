//! `apns-sim run` (Linux): the simulator and an unmodified provider (COMMAND) in a network
//! and mount namespace of their own, where Apple's host names are the simulator, on
//! Apple's ports, with a certificate the system's trust store accepts. A provider that
//! hard-codes `api.push.apple.com:443` and trusts only the system's roots reaches the
//! simulator without a changed line.
//!
//! The flow, step by step:
//!
//! 1. [`enter`] (called by `main` while the process has one thread, see
//!    [`namespace`]'s docs): unshare the network and mount namespaces (and a user namespace
//!    when not root), map the ids, make the mounts private, set `lo` up.
//! 2. [`run`], on the runtime, in those namespaces: load (or mint) the certificate folder
//!    and the scenario's credentials, as `serve` does;
//! 3. bind-mount a hosts file (Apple's names on 127.0.0.1) and combined CA bundles over
//!    the system's ([`files`]);
//! 4. bind Apple's ports on 127.0.0.1 — 443 (HTTP/2), 2195 (binary gateway), 2196
//!    (feedback) — and relay 2197, Apple's other HTTP/2 port, to 443 (`relay.rs`);
//! 5. start the simulator, and hand it to the `apns-sim test` harness
//!    ([`harness::test_in`]), which creates the world's devices, runs COMMAND with the
//!    `APNS_SIM_*` variables and the trust-store ones, lets what it sent settle and judges
//!    the scenario's expectations.
//!
//! Nothing is undone by hand: the namespaces, the mounts and the listeners end with the
//! process, and the host never sees them.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::pki::Pki;
use crate::scenario::harness::{self, CommandStdout, TestReport, World};
use crate::scenario::run::mint;
use crate::scenario::Scenario;
use crate::settings::Settings;
use crate::sim::{Listeners, Simulator, SimulatorConfig};

pub mod files;
pub mod namespace;
mod netlink;
mod relay;

pub use namespace::{diagnose, enter, Entered, Probe, SandboxError, Step, UserNamespace};

// Apple's own ports (reference/apns-spec.md), which a provider that hard-codes Apple's
// hosts also hard-codes; they are Apple's, not settings, so they are fixed here.

/// Apple's HTTP/2 provider API port.
pub const HTTP2_PORT: u16 = 443;
/// Apple's other HTTP/2 port ("if port 443 is blocked"), relayed to [`HTTP2_PORT`].
pub const HTTP2_ALT_PORT: u16 = 2197;
/// The binary gateway's port (`gateway.push.apple.com:2195`).
pub const GATEWAY_PORT: u16 = 2195;
/// The feedback service's port (`feedback.push.apple.com:2196`).
pub const FEEDBACK_PORT: u16 = 2196;

/// What `run` needs besides the scenario and COMMAND: `serve`'s options that apply.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The certificate folder, loaded or minted as `serve` does, so a provider configured
    /// with its files (`certs/provider.pem`) works unchanged.
    pub certs_dir: PathBuf,
    /// The simulator's limits and defaults.
    pub settings: Settings,
    /// The control API's bearer token, if any.
    pub control_token: Option<String>,
    /// The device endpoint's port inside the namespace.
    pub device_port: u16,
    /// The control API's port inside the namespace.
    pub control_port: u16,
    /// Where COMMAND's standard output goes: apns-sim's own, or its standard error when
    /// that carries a report (`run --json -`).
    pub command_stdout: CommandStdout,
}

/// Runs COMMAND against `scenario`'s world on a simulator listening on Apple's ports, in
/// the namespaces `entered` proves this process is in (see the module's flow). `print`
/// gets what the harness says. An `Err` means nothing ran: the text says why.
pub async fn run(
    entered: Entered,
    config: RunConfig,
    scenario: &Scenario,
    file: &str,
    command: &[OsString],
    interrupt: impl std::future::Future<Output = ()> + Send,
    print: &mut (dyn FnMut(&str) + Send),
) -> Result<TestReport, String> {
    harness::check(scenario, file)?;
    // 2. The credentials: the folder's, with the scenario's apps minted into it.
    let dir = &config.certs_dir;
    let mut pki =
        Pki::load_or_create(dir).map_err(|e| format!("certificates in {}: {e}", dir.display()))?;
    if mint(scenario, &mut pki)? {
        pki.write(dir)
            .map_err(|e| format!("writing {}: {e}", dir.display()))?;
    }

    // 3. The hosts file and the trust store, from a private folder that lives as long as
    //    COMMAND does.
    let files_dir = tempfile::Builder::new()
        .prefix("apns-sim-run-")
        .tempdir()
        .map_err(|e| format!("a temporary folder: {e}"))?;
    let installed = files::install(files_dir.path(), pki.ca_cert_pem())?;

    // 4. Apple's ports on loopback (the namespace's only interface).
    let bind = |port: u16| async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))
    };
    let listeners = Listeners {
        gateway: bind(GATEWAY_PORT).await?,
        feedback: bind(FEEDBACK_PORT).await?,
        http2: bind(HTTP2_PORT).await?,
        devices: bind(config.device_port).await?,
        control: bind(config.control_port).await?,
    };
    let alt = bind(HTTP2_ALT_PORT).await?;

    // 5. The simulator, the relay beside it, and the harness.
    let bundle_owners = scenario.bundle_owners();
    let clock = Clock::system();
    let mut sim_config = SimulatorConfig::new(pki);
    sim_config.settings = config.settings;
    sim_config.clock = clock.clone();
    sim_config.pki_dir = Some(config.certs_dir.clone());
    sim_config.bundle_owners = bundle_owners;
    sim_config.control_token = config.control_token;
    let sim = Simulator::start(sim_config, listeners)
        .map_err(|e| format!("the simulator did not start: {e}"))?;
    let relay = tokio::spawn(relay::run(
        alt,
        SocketAddr::from((Ipv4Addr::LOCALHOST, HTTP2_PORT)),
    ));
    print(&format!(
        "{} in {} namespaces: Apple's push hosts are 127.0.0.1 (HTTP/2 on {HTTP2_PORT} and \
         {HTTP2_ALT_PORT}, binary gateway on {GATEWAY_PORT}, feedback on {FEEDBACK_PORT}); \
         the simulator's CA joins {}",
        command
            .first()
            .map_or_else(String::new, |p| p.to_string_lossy().into_owned()),
        if entered.user_namespace() {
            "user, network and mount"
        } else {
            "network and mount"
        },
        if installed.bundles.is_empty() {
            "SSL_CERT_FILE (no system bundle found)".to_owned()
        } else {
            installed
                .bundles
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let world = World {
        sim,
        clock,
        extra_env: installed.env,
    };
    let result = harness::test_in(
        world,
        scenario,
        file,
        command,
        config.command_stdout,
        interrupt,
        print,
    )
    .await;
    relay.abort();
    drop(files_dir);
    result
}
