//! The `apns-sim` command line: parses arguments, sets up logging, and calls the library
//! (`apns_sim::commands`). Nothing else happens here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apns_sim::commands::{
    self, CertsAction, DeviceOptions, Format, Http2Auth, Http2PushOptions, ProviderTlsFiles,
    PushOptions, ServeOptions,
};
use apns_sim::pki::{CertEnvironment, DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::Environment;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// A full simulator of Apple Push Notification service: binary and HTTP/2 provider APIs,
/// simulated devices, and the feedback service.
#[derive(Debug, Parser)]
#[command(name = "apns-sim", version)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulator: gateway, feedback, HTTP/2 API, device endpoint, demo devices.
    Serve(ServeArgs),
    /// Create the certificates in certs/ (if missing) and list them; mint more.
    Certs(CertsArgs),
    /// Send notifications (binary gateway, or the HTTP/2 API with --http2) and print the outcome.
    Push(PushArgs),
    /// Read the feedback service: tokens of apps reported uninstalled since the last read.
    Feedback(FeedbackArgs),
    /// Run one or more simulated devices: JSON events on stdout, commands on stdin
    /// (install APP, uninstall APP, offline, online, quit).
    Device(DeviceArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Certificate folder (minted on first start, reused later).
    #[arg(long, default_value = "certs", env = "APNS_SIM_CERTS")]
    certs: PathBuf,
    /// Address every endpoint binds to.
    #[arg(long, default_value = "127.0.0.1", env = "APNS_SIM_BIND")]
    bind: IpAddr,
    /// Binary gateway port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_GATEWAY_PORT)]
    gateway_port: u16,
    /// Feedback service port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_FEEDBACK_PORT)]
    feedback_port: u16,
    /// HTTP/2 provider API port (0 = any free port; 443 works too, given the privilege).
    #[arg(long, default_value_t = apns_sim::DEFAULT_HTTP2_PORT)]
    http2_port: u16,
    /// Device endpoint port (0 = any free port).
    #[arg(long, default_value_t = apns_sim::DEFAULT_DEVICE_PORT)]
    device_port: u16,
    /// Start N plain demo devices (sandbox, com.example.app) instead of the demo fleet;
    /// 0 starts none.
    #[arg(long)]
    devices: Option<usize>,
    /// Start the demo fleet from this scenario file (default: scenarios/demo.toml, embedded).
    #[arg(long, conflicts_with = "devices")]
    scenario: Option<PathBuf>,
    /// Environment of universal certificates when the TLS server name is not an Apple host.
    #[arg(long, default_value = "sandbox")]
    default_environment: Environment,
    /// Throttle pushes per device token, as PUSHES/SECONDS (e.g. 10/60): beyond it HTTP/2
    /// answers 429 TooManyRequests and the binary API drops silently. Off by default.
    #[arg(long)]
    token_rate_limit: Option<apns_sim::settings::RateLimit>,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Certificate folder.
    #[arg(long, default_value = "certs", env = "APNS_SIM_CERTS", global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    action: Option<CertsCommand>,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Mint a provider (client) certificate that looks like Apple's.
    Provider {
        /// Bundle id (the certificate's UID and topic).
        #[arg(long)]
        topic: String,
        /// sandbox, production, or universal (both).
        #[arg(long, default_value = "universal")]
        environment: CertEnvironment,
        /// Team id (the certificate's OU).
        #[arg(long, default_value = DEFAULT_TEAM_ID)]
        team_id: String,
    },
    /// Mint a .p8 signing key for token (JWT) authentication on the HTTP/2 API.
    AuthKey {
        /// Team id (the JWT's iss).
        #[arg(long, default_value = DEFAULT_TEAM_ID)]
        team_id: String,
        /// Key id (the JWT's kid); 10 random characters when absent.
        #[arg(long)]
        key_id: Option<String>,
        /// Limit the key to these topics (repeatable; none = any topic).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

/// TLS files of a provider; defaults use certs/.
#[derive(Debug, Args)]
struct ProviderTlsArgs {
    /// Provider certificate (PEM).
    #[arg(long, default_value = "certs/provider.pem")]
    cert: PathBuf,
    /// Provider private key (PEM).
    #[arg(long, default_value = "certs/provider-key.pem")]
    key: PathBuf,
    /// CA certificate that signed the simulator's server certificate (PEM).
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// TLS server name to send and verify (an Apple host name selects its environment,
    /// e.g. gateway.push.apple.com for production).
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

impl ProviderTlsArgs {
    fn files(self) -> ProviderTlsFiles {
        ProviderTlsFiles {
            cert: self.cert,
            key: self.key,
            ca: self.ca,
            server_name: self.server_name,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Command 0: token and payload only (256-byte payloads).
    Simple,
    /// Command 1: adds identifier and expiry (256-byte payloads).
    Enhanced,
    /// Command 2: items, with priority (2048-byte payloads).
    Frame,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Device token in hex (repeatable: one notification per token).
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// Binary format.
    #[arg(long, value_enum, default_value = "frame")]
    format: FormatArg,
    /// JSON payload.
    #[arg(long, default_value = r#"{"aps":{"alert":"Hello from apns-sim"}}"#)]
    payload: String,
    /// Identifier of the first notification (the next ones count up).
    #[arg(long, default_value_t = 1)]
    id: u32,
    /// Expiry in UNIX seconds (0 = deliver now or never). Default: one hour from now.
    #[arg(long)]
    expiry: Option<u32>,
    /// Priority, 10 or 5 (frame format only).
    #[arg(long, default_value_t = 10)]
    priority: u8,
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:2195")]
    gateway: String,
    /// Milliseconds to wait for an error response (the binary API never confirms success).
    #[arg(long, default_value_t = 1000)]
    wait_ms: u64,
    #[command(flatten)]
    tls: ProviderTlsArgs,
    /// Boxed: the HTTP/2 options would otherwise make every `Command` as large as `push`.
    #[command(flatten)]
    http2: Box<Http2Args>,
}

/// `push --http2`: the HTTP/2 provider API instead of the binary gateway.
#[derive(Debug, Args)]
struct Http2Args {
    /// Send through the HTTP/2 provider API; prints status, reason and apns-id per token.
    #[arg(long = "http2")]
    enabled: bool,
    /// HTTP/2 authentication: the provider certificate, or a provider token (JWT).
    #[arg(long, value_enum, default_value = "cert")]
    auth: AuthArg,
    /// HTTP/2 API address.
    #[arg(long, default_value = "127.0.0.1:2197")]
    api: String,
    /// The .p8 signing key for --auth token.
    #[arg(long, default_value = "certs/AuthKey_SIMKEY0001.p8")]
    auth_key: PathBuf,
    /// Key id for --auth token (default: from the file name AuthKey_<KEYID>.p8).
    #[arg(long)]
    key_id: Option<String>,
    /// Team id for --auth token (the JWT's iss).
    #[arg(long, default_value = DEFAULT_TEAM_ID)]
    team_id: String,
    /// apns-topic (HTTP/2).
    #[arg(long, default_value = DEFAULT_TOPIC)]
    topic: String,
    /// apns-push-type (HTTP/2): alert, background, voip, …
    #[arg(long)]
    push_type: Option<String>,
    /// apns-collapse-id (HTTP/2).
    #[arg(long)]
    collapse_id: Option<String>,
    /// apns-id (HTTP/2), a lowercase UUID; the server generates one when absent.
    #[arg(long)]
    apns_id: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthArg {
    /// The provider certificate (--cert, --key).
    Cert,
    /// A provider token signed with --auth-key.
    Token,
}

#[derive(Debug, Args)]
struct FeedbackArgs {
    /// Feedback service address.
    #[arg(long, default_value = "127.0.0.1:2196")]
    feedback: String,
    #[command(flatten)]
    tls: ProviderTlsArgs,
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// Device endpoint address.
    #[arg(long, default_value = "127.0.0.1:5223")]
    server: String,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM).
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// Serial number (with -1, -2, … appended when --count > 1).
    #[arg(long)]
    serial: String,
    /// App bundle id installed at start (repeatable).
    #[arg(long = "app", default_value = DEFAULT_TOPIC)]
    apps: Vec<String>,
    /// Environment of the device's tokens.
    #[arg(long, default_value = "sandbox")]
    environment: Environment,
    /// Number of devices to run.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// POST each new token as JSON to this http:// URL (the provider's app server).
    #[arg(long)]
    register_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Log lines are written by a background thread, so a busy simulator's connection tasks
    // format their line and move on instead of each making a write system call. Not lossy:
    // when the writer falls behind, loggers wait. The guard flushes what is left at exit.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Serve(a) => commands::serve(ServeOptions {
            certs: a.certs,
            bind: a.bind,
            gateway_port: a.gateway_port,
            feedback_port: a.feedback_port,
            http2_port: a.http2_port,
            device_port: a.device_port,
            devices: a.devices,
            scenario: a.scenario,
            default_environment: a.default_environment,
            token_rate_limit: a.token_rate_limit,
        })
        .await
        .map(|()| true),
        Command::Certs(a) => {
            let action = match a.action {
                None => CertsAction::Show,
                Some(CertsCommand::Provider {
                    topic,
                    environment,
                    team_id,
                }) => CertsAction::Provider {
                    topic,
                    environment,
                    team_id,
                },
                Some(CertsCommand::AuthKey {
                    team_id,
                    key_id,
                    topics,
                }) => CertsAction::AuthKey {
                    team_id,
                    key_id,
                    topics,
                },
            };
            commands::certs(&a.dir, action).map(|()| true)
        }
        Command::Push(a) if a.http2.enabled => {
            let h = *a.http2;
            commands::push_http2(Http2PushOptions {
                tokens: a.tokens,
                payload: a.payload,
                api: h.api,
                tls: a.tls.files(),
                auth: match h.auth {
                    AuthArg::Cert => Http2Auth::Certificate,
                    AuthArg::Token => Http2Auth::Token {
                        key: h.auth_key,
                        key_id: h.key_id,
                        team_id: h.team_id,
                    },
                },
                topic: Some(h.topic),
                push_type: h.push_type,
                priority: Some(a.priority),
                expiration: a.expiry,
                collapse_id: h.collapse_id,
                apns_id: h.apns_id,
            })
            .await
        }
        Command::Push(a) => {
            commands::push(PushOptions {
                tokens: a.tokens,
                format: match a.format {
                    FormatArg::Simple => Format::Simple,
                    FormatArg::Enhanced => Format::Enhanced,
                    FormatArg::Frame => Format::Frame,
                },
                payload: a.payload,
                id: a.id,
                expiry: a.expiry,
                priority: a.priority,
                gateway: a.gateway,
                tls: a.tls.files(),
                wait: Duration::from_millis(a.wait_ms),
            })
            .await
        }
        Command::Feedback(a) => commands::feedback(&a.feedback, &a.tls.files())
            .await
            .map(|()| true),
        Command::Device(a) => commands::device(DeviceOptions {
            server: a.server,
            server_name: a.server_name,
            ca: a.ca,
            serial: a.serial,
            apps: a.apps,
            environment: a.environment,
            count: a.count,
            register_url: a.register_url,
        })
        .await
        .map(|()| true),
    }
}
