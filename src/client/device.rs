//! A simulated device: the client side of the device protocol.
//!
//! A device holds one persistent TLS connection to the simulator's device endpoint, says
//! hello with its serial number and environment, registers its installed apps (getting one
//! token per app and kind of token: the ordinary one, PushKit, Live Activity, … see
//! [`TokenKind`]), shows the notifications it receives and acknowledges them. A notification
//! for an app it no longer has (an uninstalled app, or a token from before a reinstall) is
//! reported back as "not installed": that is how the simulator, like APNs, learns that a
//! token is dead.
//!
//! The same code runs the `apns-sim device` command (one process per device, JSON lines on
//! stdout, commands on stdin), the demo fleet inside `apns-sim serve`, and the tests.
//!
//! Concurrency: one task per device owns all of its state; the outside world talks to it
//! through a bounded command queue and reads a bounded event queue (the device waits when
//! nobody reads its events, rather than buffering without limit).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use uuid::Uuid;

use crate::client::webhook;
use crate::connection::{Connection, ReadError};
use crate::protocol::device::{
    decode_server_message, encode_device_message, CloseCode, DeviceMessage, DeviceNotification,
    DeviceProtocolError, ServerMessage, PROTOCOL_VERSION,
};
use crate::protocol::token::{AppToken, DeviceToken, TokenKind};
use crate::protocol::Environment;

/// Capacity of a device's event queue.
pub const EVENT_QUEUE: usize = 1024;
/// Capacity of a device's command queue.
pub const COMMAND_QUEUE: usize = 64;
/// Deadline for connecting, the TLS handshake and the welcome.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts (the wait doubles from 100 ms up to this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How many collapse ids a device remembers per app for "replaces the one shown".
pub const SHOWN_PER_APP: usize = 64;

/// Why a device could not get online (reported as [`DeviceEvent::Disconnected`], then the
/// device retries after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TCP connection to the device endpoint: is the simulator running, and is
    /// [`DeviceConfig::server`] its device address?
    #[error("connect {server}: {source}")]
    Connect {
        /// The address dialled.
        server: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// [`DeviceConfig::server_name`] is not a DNS name or IP address.
    #[error("bad server name {name:?}: {source}")]
    ServerName {
        /// The name as configured.
        name: String,
        /// Why rustls refused it.
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed: usually a CA that is not the simulator's, or a server name
    /// its certificate does not cover.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// Sending Hello failed.
    #[error("hello: {0}")]
    Hello(std::io::Error),
    /// The simulator refused the Hello and said why.
    #[error("refused with close code {code}: {message}")]
    Refused {
        /// The simulator's close code.
        code: CloseCode,
        /// The simulator's explanation.
        message: String,
    },
    /// The simulator answered Hello with something other than Welcome.
    #[error("expected Welcome, got {0:?}")]
    NotWelcome(Box<ServerMessage>),
    /// The simulator closed the connection without answering Hello.
    #[error("closed before Welcome")]
    Closed,
    /// The answer to Hello was not a device-protocol frame, or the connection failed.
    #[error("reading Welcome: {0}")]
    Read(ReadError<DeviceProtocolError>),
    /// Nothing came back within [`CONNECT_TIMEOUT`].
    #[error("no Welcome within {CONNECT_TIMEOUT:?}")]
    Timeout,
}

impl ConnectError {
    /// The simulator's close code, when it refused the device itself.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ConnectError::Refused { code, .. } => Some(*code),
            ConnectError::Connect { .. }
            | ConnectError::ServerName { .. }
            | ConnectError::Tls(_)
            | ConnectError::Hello(_)
            | ConnectError::NotWelcome(_)
            | ConnectError::Closed
            | ConnectError::Read(_)
            | ConnectError::Timeout => None,
        }
    }
}

/// How to run one device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// `host:port` of the simulator's device endpoint.
    pub server: String,
    /// Name to verify the server certificate against (`localhost` by default).
    pub server_name: String,
    /// TLS client configuration trusting the simulator's CA.
    pub tls: Arc<ClientConfig>,
    /// The device's serial number (its identity on the device endpoint).
    pub serial: String,
    /// Which environment's tokens it gets.
    pub environment: Environment,
    /// Tokens registered at start: each app's ordinary token (`"com.x.app".into()`) and any
    /// other kinds (`"com.x.app:voip".parse()?`).
    pub apps: Vec<AppToken>,
    /// Where to POST each new token (the provider's app server), if anywhere.
    pub register_url: Option<String>,
}

/// Something the device did or saw. Serialised as one JSON object per line by
/// `apns-sim device`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// Connected and welcomed by the simulator.
    Online {
        /// Serial number.
        serial: String,
        /// Environment.
        environment: Environment,
    },
    /// The connection ended; the device will reconnect unless told to stay offline.
    Disconnected {
        /// Serial number.
        serial: String,
        /// Why.
        reason: String,
    },
    /// Went offline on command.
    Offline {
        /// Serial number.
        serial: String,
    },
    /// An app got one of its tokens.
    Registered {
        /// Serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// Which of the app's tokens (`remote`, `voip`, `liveactivity:ID`, …).
        kind: TokenKind,
        /// Device token, hex.
        token: DeviceToken,
        /// Environment of the token.
        environment: Environment,
    },
    /// The token was POSTed to the register URL.
    TokenPosted {
        /// Serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// HTTP status of the app server's answer.
        status: u16,
    },
    /// POSTing the token failed.
    TokenPostFailed {
        /// Serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// What went wrong.
        error: String,
    },
    /// A notification was received, shown and acknowledged.
    Notification {
        /// Serial number.
        serial: String,
        /// Bundle id it was for.
        app: String,
        /// The kind of the token it was sent to.
        kind: TokenKind,
        /// Token it was sent to.
        token: DeviceToken,
        /// Binary identifier (big-endian number; 0 on HTTP/2).
        id: u32,
        /// The notification's UUID (`apns-id`).
        apns_id: Uuid,
        /// Priority (10, 5 or 1).
        priority: u8,
        /// Expiry, UNIX seconds (0 = none).
        expiry: u32,
        /// `apns-push-type`, when sent over HTTP/2.
        #[serde(skip_serializing_if = "Option::is_none")]
        push_type: Option<String>,
        /// `apns-collapse-id`, when given.
        #[serde(skip_serializing_if = "Option::is_none")]
        collapse_id: Option<String>,
        /// True when it replaced a shown notification with the same collapse id.
        replaced: bool,
        /// The JSON payload.
        payload: serde_json::Value,
    },
    /// A notification arrived for an app this device does not have; reported back.
    NotInstalled {
        /// Serial number.
        serial: String,
        /// The app the token used to belong to, when the device remembers it.
        #[serde(skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// The kind of that token, when the device remembers it.
        #[serde(skip_serializing_if = "Option::is_none")]
        kind: Option<TokenKind>,
        /// The dead token.
        token: DeviceToken,
        /// The notification's UUID.
        apns_id: Uuid,
    },
    /// An app, or one more kind of token of it, was installed (it registers for new tokens).
    Installed {
        /// Serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// The kind named by the command.
        kind: TokenKind,
    },
    /// An app, or one kind of token of it, was removed (the simulator learns of it only when
    /// a push arrives).
    Uninstalled {
        /// Serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// The one kind removed; absent when the whole app was.
        #[serde(skip_serializing_if = "Option::is_none")]
        kind: Option<TokenKind>,
    },
    /// A command line could not be understood.
    BadCommand {
        /// Serial number.
        serial: String,
        /// Why.
        error: String,
    },
    /// The device stopped.
    Stopped {
        /// Serial number.
        serial: String,
    },
}

/// What the device can be told to do (the stdin commands of `apns-sim device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// `install APP[:KIND]`: add this kind of token to the app (installing the app if it is
    /// not there); if the app already holds it, reinstall the app, which gets fresh tokens
    /// of every kind it holds.
    Install(AppToken),
    /// `uninstall APP`: remove the app and all its tokens; `uninstall APP:KIND`: remove only
    /// that token (an ended Live Activity, a released PushKit registry). Later pushes to a
    /// removed token are reported as not installed.
    Uninstall(AppToken),
    /// Drop the connection and stay away (notifications are stored meanwhile).
    Offline,
    /// Come back.
    Online,
    /// Stop the device.
    Quit,
}

/// A line on the device's stdin that is not a [`DeviceCommand`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommand {
    /// More words than any command takes.
    #[error("too many words in {0:?}")]
    TooManyWords(String),
    /// `install` or `uninstall` without the app's bundle id.
    #[error("{0} needs an app bundle id")]
    MissingApp(&'static str),
    /// `install` or `uninstall` with an `APP[:KIND]` that is not one.
    #[error("{0}")]
    BadApp(crate::protocol::token::AppTokenError),
    /// A verb the device does not know.
    #[error("unknown command {0:?}; expected install APP[:KIND], uninstall APP[:KIND], offline, online or quit")]
    Unknown(String),
}

impl FromStr for DeviceCommand {
    type Err = BadCommand;

    fn from_str(line: &str) -> Result<Self, BadCommand> {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        if words.next().is_some() {
            return Err(BadCommand::TooManyWords(line.to_owned()));
        }
        match (verb, arg) {
            ("install", Some(app)) => Ok(DeviceCommand::Install(
                app.parse().map_err(BadCommand::BadApp)?,
            )),
            ("uninstall", Some(app)) => Ok(DeviceCommand::Uninstall(
                app.parse().map_err(BadCommand::BadApp)?,
            )),
            ("offline", None) => Ok(DeviceCommand::Offline),
            ("online", None) => Ok(DeviceCommand::Online),
            ("quit", None) => Ok(DeviceCommand::Quit),
            ("install", None) => Err(BadCommand::MissingApp("install")),
            ("uninstall", None) => Err(BadCommand::MissingApp("uninstall")),
            _ => Err(BadCommand::Unknown(line.to_owned())),
        }
    }
}

/// A running device: send it commands, read its events.
#[derive(Debug)]
pub struct DeviceHandle {
    /// Commands to the device.
    pub commands: mpsc::Sender<DeviceCommand>,
    /// Events from the device.
    pub events: mpsc::Receiver<DeviceEvent>,
    /// The device's task; it ends after `Quit` or shutdown.
    pub task: JoinHandle<()>,
}

/// Starts a device task.
pub fn spawn(config: DeviceConfig, shutdown: CancellationToken) -> DeviceHandle {
    spawn_from(config, shutdown, None)
}

/// Source addresses a program holding many devices spreads them over when the simulator is
/// on this machine's IPv4 loopback (`127.0.0.2` onwards, [`loopback_source`]): each has the
/// whole ephemeral port range, so 19,000 connections use few ports of each and connecting
/// stays cheap.
pub const LOOPBACK_SOURCES: usize = 32;

/// The source address for the `i`-th of many devices connecting to `server` (`host:port`):
/// one of [`LOOPBACK_SOURCES`] addresses from `127.0.0.2` when `server` is an IPv4 loopback
/// address, otherwise `None` (the system's choice). For [`spawn_from`].
pub fn loopback_source(server: &str, i: usize) -> Option<IpAddr> {
    let loopback = server
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback() && a.is_ipv4());
    loopback.then(|| {
        // Below LOOPBACK_SOURCES (32), so 2 + it fits a byte.
        let host = 2 + u8::try_from(i % LOOPBACK_SOURCES).unwrap_or(0);
        IpAddr::from([127, 0, 0, host])
    })
}

/// Starts a device task whose connections leave from `source`, an address of this machine
/// (the port is the system's choice), or from wherever the system routes them (`None`,
/// [`spawn`]). A load generator holding thousands of devices on the simulator's machine
/// spreads them over addresses of `127.0.0.0/8`: each source address has the whole
/// ephemeral port range to itself, where from one address the kernel's search for a free
/// port on every connect grows with the connections already open (past 15,000 it took most
/// of the load generator's time). A `source` this machine does not have (macOS's loopback
/// holds 127.0.0.1 only) is left to the system's choice.
pub fn spawn_from(
    config: DeviceConfig,
    shutdown: CancellationToken,
    source: Option<IpAddr>,
) -> DeviceHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let apps = config
        .apps
        .iter()
        .map(|a| (a.clone(), AppState::default()))
        .collect();
    let device = Device {
        config,
        source,
        apps,
        retired: HashMap::new(),
        shown: HashMap::new(),
        ack_through: None,
        events: ev_tx,
        commands: cmd_rx,
        shutdown,
    };
    let task = tokio::spawn(device.run());
    DeviceHandle {
        commands: cmd_tx,
        events: ev_rx,
        task,
    }
}

/// One kind of token of an installed app.
#[derive(Debug, Default)]
struct AppState {
    installed_token: Option<DeviceToken>,
    /// Installed since the last registration: ask for a new token.
    fresh: bool,
}

struct Device {
    config: DeviceConfig,
    /// Where its connections leave from ([`spawn_from`]); `None`: the system's choice.
    source: Option<IpAddr>,
    /// Installed apps, one entry per app and kind of token.
    apps: BTreeMap<AppToken, AppState>,
    /// Tokens this device had, to name the app and kind when reporting "not installed".
    retired: HashMap<DeviceToken, AppToken>,
    /// Collapse ids currently shown, per app (bounded).
    shown: HashMap<String, VecDeque<String>>,
    /// The highest delivery shown in the read being answered: acknowledged, with every one
    /// shown before it, by one AckThrough when the read's answers are written.
    ack_through: Option<u64>,
    events: mpsc::Sender<DeviceEvent>,
    commands: mpsc::Receiver<DeviceCommand>,
    shutdown: CancellationToken,
}

/// How a connected session ended.
enum SessionEnd {
    /// Told to go offline.
    Offline,
    /// Told to quit, or the simulator shut us down for good.
    Quit,
    /// The connection was lost: reconnect.
    Lost(String),
    /// Another connection with our serial replaced us: stay offline.
    Replaced(String),
}

type Conn = Connection<TlsStream<TcpStream>>;

/// A TCP connection to `server` (`host:port`), from `source` when given: the first of the
/// server's addresses of the source's family that answers. A source this machine does not
/// have is left to the system.
async fn connect_from(source: Option<IpAddr>, server: &str) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(server).await;
    };
    let mut failed = None;
    for addr in tokio::net::lookup_host(server).await? {
        if addr.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Err(err) = socket.bind(SocketAddr::new(source, 0)) {
            // An address this machine does not have (macOS's loopback holds 127.0.0.1 only):
            // the system's choice, as without a source.
            debug!(%source, %err, "cannot connect from this address: the system chooses");
            return TcpStream::connect(addr).await;
        }
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(err) => failed = Some(err),
        }
    }
    Err(failed.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{server} has no address of the family of {source}"),
        )
    }))
}

impl Device {
    fn serial(&self) -> String {
        self.config.serial.clone()
    }

    async fn emit(&self, event: DeviceEvent) {
        // A closed receiver means nobody listens any more; the device carries on.
        let _ = self.events.send(event).await;
    }

    async fn run(mut self) {
        let mut online = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            if !online {
                // Offline: only commands (or shutdown) can change anything.
                let cmd = tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    cmd = self.commands.recv() => cmd,
                };
                match cmd {
                    None | Some(DeviceCommand::Quit) => break,
                    Some(DeviceCommand::Online) => online = true,
                    Some(DeviceCommand::Offline) => {}
                    Some(other) => self.apply_offline(other).await,
                }
                continue;
            }
            match self.connect().await {
                Ok((mut conn, heartbeat)) => {
                    backoff = Duration::from_millis(100);
                    match self.session(&mut conn, heartbeat).await {
                        SessionEnd::Quit => {
                            let _ = conn.shutdown().await;
                            break;
                        }
                        SessionEnd::Offline => {
                            let _ = conn.shutdown().await;
                            online = false;
                            let serial = self.serial();
                            self.emit(DeviceEvent::Offline { serial }).await;
                        }
                        SessionEnd::Replaced(reason) => {
                            online = false;
                            let serial = self.serial();
                            self.emit(DeviceEvent::Disconnected { serial, reason })
                                .await;
                        }
                        SessionEnd::Lost(reason) => {
                            let serial = self.serial();
                            self.emit(DeviceEvent::Disconnected { serial, reason })
                                .await;
                        }
                    }
                }
                Err(error) => {
                    let serial = self.serial();
                    let reason = error.to_string();
                    self.emit(DeviceEvent::Disconnected { serial, reason })
                        .await;
                    // Wait before retrying, still obeying commands.
                    let wait = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return self.stopped().await,
                            _ = &mut wait => break,
                            cmd = self.commands.recv() => match cmd {
                                None | Some(DeviceCommand::Quit) => return self.stopped().await,
                                Some(DeviceCommand::Offline) => { online = false; break }
                                Some(DeviceCommand::Online) => {}
                                Some(other) => self.apply_offline(other).await,
                            },
                        }
                    }
                }
            }
        }
        self.stopped().await;
    }

    async fn stopped(&self) {
        let serial = self.serial();
        self.emit(DeviceEvent::Stopped { serial }).await;
    }

    /// Install/uninstall while offline: only local state changes.
    async fn apply_offline(&mut self, cmd: DeviceCommand) {
        match cmd {
            DeviceCommand::Install(wanted) => {
                self.install(wanted).await;
            }
            DeviceCommand::Uninstall(app) => self.uninstall(app).await,
            _ => {}
        }
    }

    /// Adds a kind of token, or reinstalls the app when it already holds that kind; returns
    /// the tokens to register afresh.
    async fn install(&mut self, wanted: AppToken) -> Vec<AppToken> {
        let targets: Vec<AppToken> = if self.apps.contains_key(&wanted) {
            self.apps
                .keys()
                .filter(|t| t.app == wanted.app)
                .cloned()
                .collect()
        } else {
            vec![wanted.clone()]
        };
        for target in &targets {
            let state = self.apps.entry(target.clone()).or_default();
            if let Some(old) = state.installed_token.take() {
                self.retired.insert(old, target.clone());
            }
            state.fresh = true;
        }
        let serial = self.serial();
        let AppToken { app, kind } = wanted;
        self.emit(DeviceEvent::Installed { serial, app, kind })
            .await;
        targets
    }

    /// Removes the app (for its ordinary kind) or just the one kind of token.
    async fn uninstall(&mut self, gone: AppToken) {
        let whole_app = gone.kind == TokenKind::Remote;
        let removed: Vec<AppToken> = self
            .apps
            .keys()
            .filter(|t| t.app == gone.app && (whole_app || **t == gone))
            .cloned()
            .collect();
        for target in removed {
            if let Some(token) = self.apps.remove(&target).and_then(|s| s.installed_token) {
                self.retired.insert(token, target);
            }
        }
        if whole_app {
            self.shown.remove(&gone.app);
        }
        let serial = self.serial();
        let AppToken { app, kind } = gone;
        let kind = (!whole_app).then_some(kind);
        self.emit(DeviceEvent::Uninstalled { serial, app, kind })
            .await;
    }

    /// Connect, TLS, hello, welcome.
    async fn connect(&self) -> Result<(Conn, Duration), ConnectError> {
        let work = async {
            let tcp = connect_from(self.source, &self.config.server)
                .await
                .map_err(|source| ConnectError::Connect {
                    server: self.config.server.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(self.config.server_name.clone()).map_err(|source| {
                ConnectError::ServerName {
                    name: self.config.server_name.clone(),
                    source,
                }
            })?;
            let tls = TlsConnector::from(self.config.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            let mut conn = Connection::new(tls);
            conn.buffer(|b| {
                encode_device_message(
                    &DeviceMessage::Hello {
                        version: PROTOCOL_VERSION,
                        environment: self.config.environment,
                        serial: self.config.serial.clone(),
                    },
                    b,
                )
            });
            conn.flush().await.map_err(ConnectError::Hello)?;
            match conn.read_frame(decode_server_message).await {
                Ok(Some(ServerMessage::Welcome { heartbeat_secs })) => {
                    Ok((conn, Duration::from_secs(u64::from(heartbeat_secs.max(1)))))
                }
                Ok(Some(ServerMessage::Error { code, message })) => {
                    Err(ConnectError::Refused { code, message })
                }
                Ok(Some(other)) => Err(ConnectError::NotWelcome(Box::new(other))),
                Ok(None) => Err(ConnectError::Closed),
                Err(e) => Err(ConnectError::Read(e)),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    fn register_all(&mut self, conn: &mut Conn) {
        for (wanted, state) in &self.apps {
            let msg = DeviceMessage::Register {
                fresh_install: state.fresh,
                app: wanted.app.clone(),
                kind: wanted.kind.clone(),
            };
            conn.buffer(|b| encode_device_message(&msg, b));
        }
    }

    async fn session(&mut self, conn: &mut Conn, heartbeat: Duration) -> SessionEnd {
        // Delivery numbers belong to a session: nothing shown on an earlier one is answered
        // on this one (the simulator routed it again).
        self.ack_through = None;
        let serial = self.serial();
        self.emit(DeviceEvent::Online {
            serial,
            environment: self.config.environment,
        })
        .await;
        self.register_all(conn);
        if let Err(e) = conn.flush().await {
            return SessionEnd::Lost(format!("register: {e}"));
        }
        // Ping every heartbeat (the server drops a device silent for three of them).
        let mut ping = tokio::time::interval(heartbeat);
        ping.tick().await;
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return SessionEnd::Quit,
                _ = ping.tick() => {
                    nonce += 1;
                    conn.buffer(|b| encode_device_message(&DeviceMessage::Ping { nonce }, b));
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(DeviceCommand::Quit) => return SessionEnd::Quit,
                    Some(DeviceCommand::Offline) => return SessionEnd::Offline,
                    Some(DeviceCommand::Online) => {}
                    Some(DeviceCommand::Install(wanted)) => {
                        for AppToken { app, kind } in self.install(wanted).await {
                            let msg = DeviceMessage::Register { fresh_install: true, app, kind };
                            conn.buffer(|b| encode_device_message(&msg, b));
                        }
                    }
                    Some(DeviceCommand::Uninstall(app)) => self.uninstall(app).await,
                },
                read = conn.read_frame(decode_server_message) => match read {
                    Ok(Some(msg)) => {
                        if let Some(end) = self.on_message(conn, msg).await {
                            return end;
                        }
                        // Answer every frame that arrived in the same read, then write the
                        // answers together: one AckThrough for every notification shown (the
                        // session's notifications arrive in delivery order), after any
                        // NotInstalled, which it then passes over.
                        loop {
                            match conn.buffered_frame(decode_server_message) {
                                Ok(Some(msg)) => {
                                    if let Some(end) = self.on_message(conn, msg).await {
                                        return end;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => return SessionEnd::Lost(format!("protocol error: {e}")),
                            }
                        }
                        if let Some(delivery) = self.ack_through.take() {
                            conn.buffer(|b| {
                                encode_device_message(&DeviceMessage::AckThrough { delivery }, b)
                            });
                        }
                    }
                    Ok(None) => return SessionEnd::Lost("simulator closed the connection".to_owned()),
                    Err(ReadError::Decode(e)) => return SessionEnd::Lost(format!("protocol error: {e}")),
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
            }
            if let Err(e) = conn.flush().await {
                return SessionEnd::Lost(format!("write: {e}"));
            }
        }
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: ServerMessage) -> Option<SessionEnd> {
        match msg {
            ServerMessage::Registered { app, kind, token } => {
                let key = AppToken { app, kind };
                let Some(state) = self.apps.get_mut(&key) else {
                    // Uninstalled while the registration was in flight.
                    self.retired.insert(token, key);
                    return None;
                };
                if let Some(old) = state.installed_token.replace(token) {
                    if old != token {
                        self.retired.insert(old, key.clone());
                    }
                }
                state.fresh = false;
                let serial = self.serial();
                self.emit(DeviceEvent::Registered {
                    serial,
                    app: key.app.clone(),
                    kind: key.kind.clone(),
                    token,
                    environment: self.config.environment,
                })
                .await;
                if let Some(url) = self.config.register_url.clone() {
                    self.post_token(url, key, token);
                }
            }
            ServerMessage::Notification(n) => self.on_notification(conn, n).await,
            ServerMessage::Pong { .. } | ServerMessage::Welcome { .. } => {}
            ServerMessage::Error { code, message } => {
                let reason =
                    format!("simulator closed the session with close code {code}: {message}");
                return Some(match code {
                    // A newer connection has our serial: reconnecting would only fight it.
                    CloseCode::Replaced => SessionEnd::Replaced(reason),
                    CloseCode::BadHello
                    | CloseCode::Protocol
                    | CloseCode::Shutdown
                    | CloseCode::Idle
                    | CloseCode::Limit => SessionEnd::Lost(reason),
                });
            }
        }
        None
    }

    async fn on_notification(&mut self, conn: &mut Conn, n: DeviceNotification) {
        let serial = self.serial();
        let apns_id = Uuid::from_bytes(n.apns_id);
        let held = self
            .apps
            .iter()
            .find(|(_, s)| s.installed_token == Some(n.token))
            .map(|(a, _)| a.clone());
        let Some(AppToken { app, kind }) = held else {
            // Not an installed app's current token: tell the simulator.
            debug!(token = %n.token, "notification for an app not installed");
            conn.buffer(|b| {
                encode_device_message(
                    &DeviceMessage::NotInstalled {
                        delivery: n.delivery,
                    },
                    b,
                )
            });
            let (app, kind) = self
                .retired
                .get(&n.token)
                .cloned()
                .map(|t| (t.app, t.kind))
                .unzip();
            self.emit(DeviceEvent::NotInstalled {
                serial,
                app,
                kind,
                token: n.token,
                apns_id,
            })
            .await;
            return;
        };
        // Collapse: a notification with a collapse id already shown replaces it.
        let replaced = match &n.collapse_id {
            Some(id) => {
                let shown = self.shown.entry(app.clone()).or_default();
                let seen = shown.iter().any(|s| s == id);
                if !seen {
                    if shown.len() == SHOWN_PER_APP {
                        shown.pop_front();
                    }
                    shown.push_back(id.clone());
                }
                seen
            }
            None => false,
        };
        let payload = serde_json::from_slice(&n.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&n.payload).into_owned())
        });
        self.ack_through = Some(n.delivery);
        self.emit(DeviceEvent::Notification {
            serial,
            app,
            kind,
            token: n.token,
            id: u32::from_be_bytes(n.identifier),
            apns_id,
            priority: n.priority,
            expiry: n.expiry,
            push_type: n.push_type,
            collapse_id: n.collapse_id,
            replaced,
            payload,
        })
        .await;
    }

    /// POSTs the token in the background; the outcome arrives as an event.
    fn post_token(&self, url: String, held: AppToken, token: DeviceToken) {
        let events = self.events.clone();
        let serial = self.serial();
        let AppToken { app, kind } = held;
        let body = serde_json::json!({
            "token": token.to_hex(),
            "app": app,
            "kind": kind,
            "environment": self.config.environment,
            "serial": serial,
        });
        tokio::spawn(async move {
            let event = match webhook::post_json(&url, &body).await {
                Ok(status) => DeviceEvent::TokenPosted {
                    serial,
                    app,
                    status,
                },
                Err(e) => DeviceEvent::TokenPostFailed {
                    serial,
                    app,
                    error: e.to_string(),
                },
            };
            let _ = events.send(event).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many devices to an IPv4 loopback server cycle through 32 addresses from 127.0.0.2
    /// (never 127.0.0.1); any other server is left to the system's choice.
    #[test]
    fn loopback_sources_cycle_from_127_0_0_2() {
        let server = "127.0.0.1:2195";
        let sources: Vec<_> = (0..LOOPBACK_SOURCES * 2)
            .map(|i| loopback_source(server, i).unwrap())
            .collect();
        assert_eq!(sources[0], IpAddr::from([127, 0, 0, 2]));
        assert_eq!(sources[LOOPBACK_SOURCES - 1], IpAddr::from([127, 0, 0, 33]));
        assert_eq!(sources[LOOPBACK_SOURCES], sources[0]);
        let distinct: std::collections::HashSet<_> = sources.iter().collect();
        assert_eq!(distinct.len(), LOOPBACK_SOURCES);
        assert!(!distinct.contains(&IpAddr::from([127, 0, 0, 1])));
        for other in ["[::1]:2195", "192.0.2.1:2195", "localhost:2195", "nonsense"] {
            assert_eq!(loopback_source(other, 5), None, "{other}");
        }
    }

    /// A connection from a given source address leaves from it (the server sees it as the
    /// peer); without one, or from an address this machine does not have, it leaves from the
    /// loopback address the system picks; a source of the other family than every server
    /// address is refused in words.
    #[tokio::test]
    async fn connections_leave_from_the_source_address_given() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap().to_string();
        let from = IpAddr::from([127, 0, 0, 7]);
        let (tcp, accepted) = tokio::join!(connect_from(Some(from), &server), listener.accept());
        assert_eq!(tcp.unwrap().local_addr().unwrap().ip(), from);
        assert_eq!(accepted.unwrap().1.ip(), from);
        let (tcp, accepted) = tokio::join!(connect_from(None, &server), listener.accept());
        let system = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(tcp.unwrap().local_addr().unwrap().ip(), system);
        assert_eq!(accepted.unwrap().1.ip(), system);
        // An address this machine does not have (TEST-NET-1): the system's choice instead.
        let elsewhere = IpAddr::from([192, 0, 2, 1]);
        let (tcp, accepted) =
            tokio::join!(connect_from(Some(elsewhere), &server), listener.accept());
        assert_eq!(tcp.unwrap().local_addr().unwrap().ip(), system);
        assert_eq!(accepted.unwrap().1.ip(), system);
        let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let err = connect_from(Some(v6), &server).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable);
        assert!(
            err.to_string().contains("no address of the family"),
            "{err}"
        );
    }

    #[test]
    fn connect_errors_name_the_problem_and_carry_the_close_code() {
        let refused = ConnectError::Refused {
            code: CloseCode::BadHello,
            message: "unsupported device protocol version 2 (this simulator speaks 1)".into(),
        };
        assert_eq!(refused.close_code(), Some(CloseCode::BadHello));
        assert_eq!(
            refused.to_string(),
            "refused with close code 1 (bad hello): unsupported device protocol version 2 (this simulator speaks 1)"
        );
        let others = [
            ConnectError::Connect {
                server: "127.0.0.1:5223".into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            },
            ConnectError::Tls(std::io::ErrorKind::UnexpectedEof.into()),
            ConnectError::Hello(std::io::ErrorKind::BrokenPipe.into()),
            ConnectError::NotWelcome(Box::new(ServerMessage::Pong { nonce: 1 })),
            ConnectError::Closed,
            ConnectError::Read(ReadError::Truncated(2)),
            ConnectError::Timeout,
        ];
        let texts = [
            "connect 127.0.0.1:5223",
            "TLS: ",
            "hello: ",
            "expected Welcome, got Pong",
            "closed before Welcome",
            "reading Welcome: connection closed in the middle of a frame",
            "no Welcome within 10s",
        ];
        for (error, text) in others.iter().zip(texts) {
            assert_eq!(error.close_code(), None, "{error}");
            assert!(error.to_string().starts_with(text), "{error}");
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            "install com.a".parse::<DeviceCommand>(),
            Ok(DeviceCommand::Install("com.a".into()))
        );
        assert_eq!(
            "install com.a:voip".parse::<DeviceCommand>(),
            Ok(DeviceCommand::Install(AppToken::new(
                "com.a",
                TokenKind::Voip
            )))
        );
        assert_eq!(
            "  uninstall   com.a ".parse::<DeviceCommand>(),
            Ok(DeviceCommand::Uninstall("com.a".into()))
        );
        assert_eq!(
            "uninstall com.a:liveactivity:ride".parse::<DeviceCommand>(),
            Ok(DeviceCommand::Uninstall(AppToken::new(
                "com.a",
                TokenKind::LiveActivity("ride".into())
            )))
        );
        let bad = "install com.a:bogus".parse::<DeviceCommand>().unwrap_err();
        assert!(bad.to_string().contains("bogus"), "{bad}");
        assert_eq!("offline".parse(), Ok(DeviceCommand::Offline));
        assert_eq!("online".parse(), Ok(DeviceCommand::Online));
        assert_eq!("quit".parse(), Ok(DeviceCommand::Quit));
        let err = |line: &str| line.parse::<DeviceCommand>().unwrap_err();
        assert_eq!(err("install"), BadCommand::MissingApp("install"));
        assert_eq!(err("install").to_string(), "install needs an app bundle id");
        assert!(err("dance")
            .to_string()
            .starts_with("unknown command \"dance\""));
        assert_eq!(err("quit now"), BadCommand::Unknown("quit now".into()));
        assert_eq!(
            err("install a b"),
            BadCommand::TooManyWords("install a b".into())
        );
    }
}
