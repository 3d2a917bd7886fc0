//! What each `apns-sim` subcommand does. `main.rs` parses the command line into these
//! option structs and calls one function; everything observable lives here so that it can
//! be tested and reused.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rustls::ClientConfig;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::client::device::{self as simdevice, DeviceCommand, DeviceConfig, DeviceEvent};
use crate::client::http2 as client_http2;
use crate::client::{self, BinaryClient, GatewayAnswer};
use crate::pki::{CertEnvironment, Pki};
use crate::protocol::notification;
use crate::protocol::token::DeviceToken;
use crate::protocol::Environment;
use crate::scenario::Scenario;
use crate::settings::Settings;
use crate::sim::{Listeners, Simulator, SimulatorConfig};
use crate::tls;

/// How long `serve` waits for its demo fleet to register before printing the summary.
const DEMO_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of `apns-sim serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Folder of certificates (created on first start).
    pub certs: PathBuf,
    /// Address every endpoint binds to.
    pub bind: IpAddr,
    /// Binary gateway port.
    pub gateway_port: u16,
    /// Feedback service port.
    pub feedback_port: u16,
    /// HTTP/2 API port.
    pub http2_port: u16,
    /// Device endpoint port.
    pub device_port: u16,
    /// Replace the demo fleet with this many plain devices (0 = none).
    pub devices: Option<usize>,
    /// Load the demo fleet from this scenario file instead of the embedded one.
    pub scenario: Option<PathBuf>,
    /// Environment for universal certificates on non-Apple host names.
    pub default_environment: Environment,
    /// Per-token push limit, if any.
    pub token_rate_limit: Option<crate::settings::RateLimit>,
}

/// Runs the simulator until Ctrl-C.
pub async fn serve(opts: ServeOptions) -> Result<()> {
    let pki = Pki::load_or_create(&opts.certs)
        .with_context(|| format!("certificates in {}", opts.certs.display()))?;
    let fleet = match (opts.devices, &opts.scenario) {
        (Some(n), _) => Scenario::uniform(n, crate::pki::DEFAULT_TOPIC)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Scenario::parse(&text).with_context(|| path.display().to_string())?
        }
        (None, None) => Scenario::parse(crate::scenario::DEMO)?,
    };
    let bind = |port: u16| {
        let addr = SocketAddr::new(opts.bind, port);
        async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))
        }
    };
    let listeners = Listeners {
        gateway: bind(opts.gateway_port).await?,
        feedback: bind(opts.feedback_port).await?,
        http2: bind(opts.http2_port).await?,
        devices: bind(opts.device_port).await?,
    };
    let mut config = SimulatorConfig::new(pki);
    config.settings = Settings {
        default_environment: opts.default_environment,
        token_rate_limit: opts.token_rate_limit,
        ..Settings::default()
    };
    let sim = Simulator::start(config, listeners)?;
    let addrs = *sim.addrs();

    println!("apns-sim is running (Ctrl-C to stop)");
    println!("  binary gateway   {}", addrs.gateway);
    println!("  feedback service {}", addrs.feedback);
    println!("  HTTP/2 API       {}", addrs.http2);
    println!("  device endpoint  {}", addrs.devices);
    println!("  certificates     {}", opts.certs.display());

    let fleet_stop = sim.shutdown_token();
    let tokens = start_fleet(&sim, &fleet, fleet_stop).await?;
    if !tokens.is_empty() {
        println!("demo devices:");
        for (serial, app, env, token) in &tokens {
            println!("  {serial:<14} {:<10} {app:<20} {token}", env.as_str());
        }
        if let Some((_, _, _, token)) = tokens.iter().find(|(_, app, env, _)| {
            app == crate::pki::DEFAULT_TOPIC && *env == Environment::Sandbox
        }) {
            // Only what differs from the push command's defaults is spelled out.
            let gateway = if addrs.gateway.port() == crate::DEFAULT_GATEWAY_PORT {
                String::new()
            } else {
                format!(" --gateway {}", addrs.gateway)
            };
            let api = if addrs.http2.port() == crate::DEFAULT_HTTP2_PORT {
                String::new()
            } else {
                format!(" --api {}", addrs.http2)
            };
            let certs = if opts.certs == Path::new("certs") {
                String::new()
            } else {
                let dir = opts.certs.display();
                format!(" --cert {dir}/provider.pem --key {dir}/provider-key.pem --ca {dir}/ca.pem")
            };
            let payload = r#"--payload '{"aps":{"alert":"Hello"}}'"#;
            println!("push to the first one (in another terminal):");
            println!("  cargo run -- push --token {token}{gateway}{certs} {payload}");
            println!("or through the HTTP/2 API:");
            println!("  cargo run -- push --http2 --token {token}{api}{certs} {payload}");
        }
    }
    stop_signal().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
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

/// Starts the fleet's devices in-process, waits until each has registered its apps, and
/// prints what they receive from then on. Returns (serial, app, environment, token).
async fn start_fleet(
    sim: &Simulator,
    fleet: &Scenario,
    stop: CancellationToken,
) -> Result<Vec<(String, String, Environment, DeviceToken)>> {
    let tls = tls::client_config(sim.pki().ca_cert_pem().as_bytes(), None, Vec::new())?;
    let mut tokens = Vec::new();
    for spec in &fleet.devices {
        let mut handle = simdevice::spawn(
            DeviceConfig {
                server: sim.addrs().devices.to_string(),
                server_name: "localhost".to_owned(),
                tls: tls.clone(),
                serial: spec.serial.clone(),
                environment: spec.environment,
                apps: spec.apps.clone(),
                register_url: None,
            },
            stop.clone(),
        );
        let mut missing = spec.apps.len();
        let deadline = tokio::time::Instant::now() + DEMO_READY_TIMEOUT;
        while missing > 0 {
            match tokio::time::timeout_at(deadline, handle.events.recv()).await {
                Ok(Some(DeviceEvent::Registered {
                    serial,
                    app,
                    token,
                    environment,
                })) => {
                    tokens.push((serial, app, environment, token));
                    missing -= 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("demo device {} stopped", spec.serial),
                Err(_) => bail!("demo device {} did not register in time", spec.serial),
            }
        }
        // From now on, show what the device sees.
        tokio::spawn(async move {
            let _commands = handle.commands;
            while let Some(event) = handle.events.recv().await {
                if let DeviceEvent::Notification {
                    serial,
                    app,
                    payload,
                    ..
                } = &event
                {
                    println!("device {serial} shows a notification for {app}: {payload}");
                }
                info!(target: "apns_sim::demo", event = %serde_json::to_string(&event).unwrap_or_default());
            }
        });
    }
    Ok(tokens)
}

/// Options of `apns-sim certs` and its subcommands.
#[derive(Debug, Clone)]
pub enum CertsAction {
    /// Make sure the folder holds a PKI and list it.
    Show,
    /// Mint another provider certificate.
    Provider {
        /// Bundle id.
        topic: String,
        /// Environment(s) it is valid for.
        environment: CertEnvironment,
        /// Team id (OU).
        team_id: String,
    },
    /// Mint another `.p8` auth key for token-based HTTP/2 auth.
    AuthKey {
        /// Team id (`iss`).
        team_id: String,
        /// Key id (`kid`); random when absent.
        key_id: Option<String>,
        /// Topics the key is limited to (none = every topic of the team).
        topics: Vec<String>,
    },
}

/// Runs `apns-sim certs`.
pub fn certs(dir: &Path, action: CertsAction) -> Result<()> {
    let mut pki =
        Pki::load_or_create(dir).with_context(|| format!("certificates in {}", dir.display()))?;
    match action {
        CertsAction::Show => {}
        CertsAction::Provider {
            topic,
            environment,
            team_id,
        } => {
            let cert = pki.mint_provider(&topic, environment, &team_id)?;
            println!(
                "minted provider certificate for {} ({}): {}",
                cert.topic,
                cert.environment,
                cert.cert_file_name()
            );
            pki.write(dir)?;
        }
        CertsAction::AuthKey {
            team_id,
            key_id,
            topics,
        } => {
            let key = pki.mint_auth_key(&team_id, key_id, topics)?;
            println!("minted auth key {} for team {}", key.key_id, key.team_id);
            pki.write(dir)?;
        }
    }
    let manifest = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("reading {}/manifest.json", dir.display()))?;
    println!("{manifest}");
    Ok(())
}

/// TLS material for a provider command, from files.
#[derive(Debug, Clone)]
pub struct ProviderTlsFiles {
    /// Provider certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that signed the simulator's server certificate (PEM).
    pub ca: PathBuf,
    /// Name to verify the server certificate against.
    pub server_name: String,
}

impl ProviderTlsFiles {
    /// Builds the client configuration, naming the file at fault on error.
    pub fn client_config(&self, alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let identity = tls::ClientIdentity::from_pem(&read(&self.cert)?, &read(&self.key)?)
            .with_context(|| {
                format!("loading {} and {}", self.cert.display(), self.key.display())
            })?;
        Ok(tls::client_config(&read(&self.ca)?, Some(identity), alpn)?)
    }
}

/// Binary notification format for `push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Command 0.
    Simple,
    /// Command 1.
    Enhanced,
    /// Command 2.
    Frame,
}

/// Options of `apns-sim push` (binary gateway).
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Target tokens, one notification each, identifiers counting up from `id`.
    pub tokens: Vec<String>,
    /// Which command to send.
    pub format: Format,
    /// JSON payload.
    pub payload: String,
    /// Identifier of the first notification.
    pub id: u32,
    /// Expiry (UNIX seconds; 0 = do not store); `None` = one hour from now.
    pub expiry: Option<u32>,
    /// Priority (command 2 only).
    pub priority: u8,
    /// `host:port` of the gateway.
    pub gateway: String,
    /// TLS files.
    pub tls: ProviderTlsFiles,
    /// How long to wait for an error response (success is silent).
    pub wait: Duration,
}

/// Sends notifications over the binary API and prints the outcome. Returns false when the
/// gateway answered with an error.
pub async fn push(opts: PushOptions) -> Result<bool> {
    let config = opts.tls.client_config(Vec::new())?;
    let expiry = opts.expiry.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_secs() + 3600) as u32
    });
    let mut out = bytes::BytesMut::new();
    for (i, token) in opts.tokens.iter().enumerate() {
        let token = hex::decode(token.trim())
            .with_context(|| format!("--token {token:?} is not hexadecimal"))?;
        let id = opts.id.wrapping_add(i as u32).to_be_bytes();
        let payload = opts.payload.as_bytes();
        match opts.format {
            Format::Simple => notification::encode_simple_raw(&token, payload, &mut out),
            Format::Enhanced => {
                notification::encode_enhanced_raw(id, expiry, &token, payload, &mut out)
            }
            Format::Frame => {
                notification::encode_frame_raw(&token, payload, id, expiry, opts.priority, &mut out)
            }
        }
    }
    let mut client = BinaryClient::connect(&opts.gateway, &opts.tls.server_name, config).await?;
    client.send(&out).await?;
    let n = opts.tokens.len();
    match client.finish(opts.wait).await? {
        GatewayAnswer::Silent => {
            println!(
                "sent {n} notification(s) to {}: no error response within {} ms, so the gateway accepted them",
                opts.gateway,
                opts.wait.as_millis()
            );
            let _ = client.close().await;
            Ok(true)
        }
        GatewayAnswer::Error(resp) => {
            let id = u32::from_be_bytes(resp.identifier);
            println!(
                "error response: status {} for notification id {id}; the gateway closed the connection and dropped everything sent after it",
                resp.status
            );
            Ok(false)
        }
        GatewayAnswer::Closed => {
            println!("the gateway closed the connection without an error response");
            Ok(false)
        }
    }
}

/// How `push --http2` authenticates.
#[derive(Debug, Clone)]
pub enum Http2Auth {
    /// The provider certificate of the TLS files.
    Certificate,
    /// A provider token (JWT) signed now with a `.p8` key; no client certificate.
    Token {
        /// The `.p8` file.
        key: PathBuf,
        /// Key id (`kid`); taken from the file name `AuthKey_<KEYID>.p8` when absent.
        key_id: Option<String>,
        /// Team id (`iss`).
        team_id: String,
    },
}

/// Options of `apns-sim push --http2`.
#[derive(Debug, Clone)]
pub struct Http2PushOptions {
    /// Target tokens, one request each, on one connection.
    pub tokens: Vec<String>,
    /// JSON payload.
    pub payload: String,
    /// `host:port` of the HTTP/2 API.
    pub api: String,
    /// TLS files (the CA always; certificate and key for certificate auth).
    pub tls: ProviderTlsFiles,
    /// Certificate or token auth.
    pub auth: Http2Auth,
    /// `apns-topic`.
    pub topic: Option<String>,
    /// `apns-push-type`.
    pub push_type: Option<String>,
    /// `apns-priority`.
    pub priority: Option<u8>,
    /// `apns-expiration` (UNIX seconds).
    pub expiration: Option<u32>,
    /// `apns-collapse-id`.
    pub collapse_id: Option<String>,
    /// `apns-id` (a lowercase UUID); the server generates one when absent.
    pub apns_id: Option<String>,
}

/// Sends notifications over the HTTP/2 API and prints each answer (status, reason,
/// apns-id). Returns false unless every answer was 200.
pub async fn push_http2(opts: Http2PushOptions) -> Result<bool> {
    let h2 = vec![tls::ALPN_H2.to_vec()];
    let (config, auth) = match &opts.auth {
        Http2Auth::Certificate => (
            opts.tls.client_config(h2)?,
            client_http2::PushAuth::Certificate,
        ),
        Http2Auth::Token {
            key,
            key_id,
            team_id,
        } => {
            let ca = std::fs::read(&opts.tls.ca)
                .with_context(|| format!("reading {}", opts.tls.ca.display()))?;
            let p8_pem = std::fs::read_to_string(key)
                .with_context(|| format!("reading {}", key.display()))?;
            let key_id = match key_id {
                Some(id) => id.clone(),
                None => key
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.strip_prefix("AuthKey_"))
                    .map(str::to_owned)
                    .with_context(|| {
                        format!(
                            "--key-id is needed: {} is not named AuthKey_<KEYID>.p8",
                            key.display()
                        )
                    })?,
            };
            let key = crate::pki::AuthKey {
                key_id,
                team_id: team_id.clone(),
                topics: Vec::new(),
                p8_pem,
            };
            (
                tls::client_config(&ca, None, h2)?,
                client_http2::PushAuth::Token(key),
            )
        }
    };
    let apns_id = match &opts.apns_id {
        Some(id) => Some(
            uuid::Uuid::parse_str(id).with_context(|| format!("--apns-id {id:?} is not a UUID"))?,
        ),
        None => None,
    };
    let answers = client_http2::push(&client_http2::PushOptions {
        addr: opts.api.clone(),
        server_name: opts.tls.server_name.clone(),
        tls: config,
        auth,
        tokens: opts.tokens.clone(),
        topic: opts.topic.clone(),
        push_type: opts.push_type.clone(),
        priority: opts.priority,
        expiration: opts.expiration,
        collapse_id: opts.collapse_id.clone(),
        apns_id,
        payload: Bytes::from(opts.payload.clone()),
    })
    .await?;
    let mut all_ok = true;
    for (token, answer) in opts.tokens.iter().zip(&answers) {
        println!("{}: {answer}", token.trim());
        all_ok &= answer.status == 200;
    }
    Ok(all_ok)
}

/// Reads and prints the feedback tuples for the certificate's topic.
pub async fn feedback(addr: &str, tls_files: &ProviderTlsFiles) -> Result<()> {
    let config = tls_files.client_config(Vec::new())?;
    let tuples = client::read_feedback(
        addr,
        &tls_files.server_name,
        config,
        Duration::from_secs(30),
    )
    .await?;
    if tuples.is_empty() {
        println!("no feedback: no app was reported uninstalled since the last read");
    }
    for t in tuples {
        println!("{} {}", t.timestamp, t.token);
    }
    Ok(())
}

/// Options of `apns-sim device`.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// `host:port` of the device endpoint.
    pub server: String,
    /// Name to verify the server certificate against.
    pub server_name: String,
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// Serial number (with `-N` appended per device when `count` > 1).
    pub serial: String,
    /// Apps installed at start.
    pub apps: Vec<String>,
    /// Environment.
    pub environment: Environment,
    /// How many devices.
    pub count: usize,
    /// Where to POST new tokens.
    pub register_url: Option<String>,
}

/// Runs devices until `quit` or end of input: JSON events on stdout, commands on stdin
/// (sent to every device).
pub async fn device(opts: DeviceOptions) -> Result<()> {
    if let Some(url) = &opts.register_url {
        crate::client::webhook::check_url(url)?;
    }
    if opts.count == 0 || opts.count > crate::scenario::MAX_DEVICES {
        bail!("--count must be 1 to {}", crate::scenario::MAX_DEVICES);
    }
    let ca = std::fs::read(&opts.ca).with_context(|| format!("reading {}", opts.ca.display()))?;
    let tls = tls::client_config(&ca, None, Vec::new())?;
    let stop = CancellationToken::new();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<DeviceEvent>(1024);
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    for i in 1..=opts.count {
        let serial = if opts.count == 1 {
            opts.serial.clone()
        } else {
            format!("{}-{i}", opts.serial)
        };
        let mut handle = simdevice::spawn(
            DeviceConfig {
                server: opts.server.clone(),
                server_name: opts.server_name.clone(),
                tls: tls.clone(),
                serial,
                environment: opts.environment,
                apps: opts.apps.clone(),
                register_url: opts.register_url.clone(),
            },
            stop.clone(),
        );
        commands.push(handle.commands);
        let tx = events_tx.clone();
        tasks.push(handle.task);
        tokio::spawn(async move {
            while let Some(e) = handle.events.recv().await {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(events_tx);

    let printer = tokio::spawn(async move {
        while let Some(e) = events_rx.recv().await {
            match serde_json::to_string(&e) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("cannot print event: {err}"),
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            // End of input: quit, as if told to.
            Ok(None) | Err(_) => "quit".to_owned(),
        };
        if line.trim().is_empty() {
            continue;
        }
        match line.parse::<DeviceCommand>() {
            Ok(cmd) => {
                let quit = cmd == DeviceCommand::Quit;
                for c in &commands {
                    let _ = c.send(cmd.clone()).await;
                }
                if quit {
                    break;
                }
            }
            Err(error) => {
                let event = DeviceEvent::BadCommand {
                    serial: opts.serial.clone(),
                    error,
                };
                println!("{}", serde_json::to_string(&event)?);
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(commands);
    let _ = printer.await;
    Ok(())
}
