//! The simulator's own actors: in-process devices the control API creates and drives, and a
//! test provider that pushes to them.
//!
//! A managed device is an ordinary [`client::device`](crate::client::device) task: it
//! connects to the device endpoint over TLS and speaks the device protocol like an
//! `apns-sim device` process, so what it sees is what any device sees. [`Actors`] keeps one
//! per serial (at most [`MAX_DEVICES`]), reads its [`DeviceEvent`]s into its state (online,
//! tokens, the [`inbox::Inbox`]) and lets callers wait on that state with a deadline
//! ([`READY_TIMEOUT`]) instead of sleeping. The test provider ([`provider`]) connects to the
//! binary gateway or the HTTP/2 endpoint with the PKI's credentials, as a provider would.
//!
//! The control API reaches the actors through the `server::control::devices::Actors` trait
//! (the server layer cannot import this one); `sim` builds them and hands them over. The
//! demo fleet of `apns-sim serve` is created through them too, so the API and the dashboard
//! can drive it.

pub mod inbox;
pub mod provider;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::client::device::{self, DeviceCommand, DeviceConfig, DeviceEvent};
use crate::hub::Hub;
use crate::pki::Pki;
use crate::protocol::token::{AppToken, DeviceToken, TokenKind};
use crate::protocol::Environment;
use crate::server::control::devices::{
    self as api, App, BoxFuture, Device, DeviceSpec, PushAnswer, Refusal, Shown, TestPush,
};

use inbox::Inbox;

/// Most in-process devices at once: the scenario files' limit (each device holds a
/// connection and two tasks), which the demo fleet of `serve` may reach.
pub const MAX_DEVICES: usize = 10_000;

/// How long creating a device, installing an app or coming online may take before the call
/// is answered with the failure: a connection, a handshake and a few registrations on
/// loopback take milliseconds, so this only fires when something is wrong.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Capacity of the broadcast of every managed device's events ([`Actors::subscribe`]); a
/// subscriber that falls further behind misses events (and is told so by tokio).
pub const EVENT_BROADCAST: usize = 1024;

/// How long [`Actors::remove`] waits for a device task to end after telling it to quit.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the actors connect, and with what.
#[derive(Debug, Clone)]
pub struct ActorsConfig {
    /// The device endpoint.
    pub devices: SocketAddr,
    /// The binary gateway.
    pub gateway: SocketAddr,
    /// The HTTP/2 provider API.
    pub http2: SocketAddr,
    /// The simulator's certificates: the CA the devices trust, and the provider
    /// credentials of the test provider.
    pub pki: Arc<Pki>,
    /// The hub, read (never written) by the test provider to find a token's owner and the
    /// binary API's outcome.
    pub hub: Hub,
    /// The simulator's shutdown: every device stops with it.
    pub shutdown: CancellationToken,
}

/// The in-process devices, by serial, and the test provider. Clone it freely.
#[derive(Debug, Clone)]
pub struct Actors {
    /// What every clone shares.
    inner: Arc<Inner>,
}

/// The one copy behind every [`Actors`] clone.
#[derive(Debug)]
struct Inner {
    /// Where and with what.
    config: ActorsConfig,
    /// TLS for the devices: trusts the simulator's CA.
    device_tls: Arc<ClientConfig>,
    /// The managed devices by serial; at most [`MAX_DEVICES`]. A std mutex: held for map
    /// look-ups only, never across an `.await`.
    devices: Mutex<BTreeMap<String, Managed>>,
    /// Every managed device's events, for whoever prints or watches them.
    events: broadcast::Sender<DeviceEvent>,
    /// The binary identifier of the test provider's next push.
    next_identifier: AtomicU32,
}

/// One managed device.
#[derive(Debug)]
struct Managed {
    /// Its command queue.
    commands: mpsc::Sender<DeviceCommand>,
    /// What its events say, updated by its pump task.
    state: Arc<Mutex<DeviceState>>,
    /// Bumped after every event the pump applied: waiters re-check the state.
    changed: watch::Receiver<u64>,
    /// The device task.
    task: JoinHandle<()>,
    /// The pump task (ends when the device's event queue closes).
    pump: JoinHandle<()>,
    /// Stops this device alone (a child of the simulator's shutdown).
    stop: CancellationToken,
}

/// A managed device as its events describe it.
#[derive(Debug, Clone)]
struct DeviceState {
    /// Its serial.
    serial: String,
    /// Its environment.
    environment: Environment,
    /// Online (between its `online` event and the next `offline`/`disconnected`).
    online: bool,
    /// Told to stay offline (`POST …/offline`): unlike a lost connection, the device does
    /// not reconnect by itself.
    parked: bool,
    /// Installed apps and kinds, with the current token once registered.
    apps: BTreeMap<AppToken, Option<DeviceToken>>,
    /// Why it last lost or failed its connection, cleared when a caller starts waiting.
    last_error: Option<String>,
    /// The device task ended.
    stopped: bool,
    /// What it shows.
    inbox: Inbox,
}

impl DeviceState {
    /// The API's view.
    fn device(&self) -> Device {
        Device {
            serial: self.serial.clone(),
            environment: self.environment.as_str().to_owned(),
            online: self.online,
            managed: true,
            apps: self
                .apps
                .iter()
                .filter_map(|(held, token)| token.as_ref().map(|t| App::new(held, t)))
                .collect(),
        }
    }

    /// Online with every app's token.
    fn ready(&self) -> bool {
        self.online && self.apps.values().all(Option::is_some)
    }

    /// Applies one event (mirroring the device's own bookkeeping in `client::device`).
    fn apply(&mut self, event: &DeviceEvent, now_ms: u64) {
        match event {
            DeviceEvent::Online { .. } => {
                self.online = true;
                self.parked = false;
            }
            DeviceEvent::Offline { .. } => {
                self.online = false;
                self.parked = true;
            }
            DeviceEvent::Disconnected { reason, .. } => {
                self.online = false;
                self.last_error = Some(reason.clone());
            }
            DeviceEvent::Registered {
                app, kind, token, ..
            } => {
                let key = AppToken::new(app.clone(), kind.clone());
                if let Some(slot) = self.apps.get_mut(&key) {
                    *slot = Some(*token);
                }
            }
            DeviceEvent::Installed { app, kind, .. } => {
                let key = AppToken::new(app.clone(), kind.clone());
                let reinstall = self.apps.contains_key(&key);
                // A reinstall: every kind of the app gets a fresh token.
                for (held, token) in self.apps.iter_mut() {
                    if reinstall && held.app == *app {
                        *token = None;
                    }
                }
                self.apps.entry(key).or_insert(None);
            }
            DeviceEvent::Uninstalled { app, kind, .. } => match kind {
                None => self.apps.retain(|held, _| held.app != *app),
                Some(kind) => {
                    self.apps.remove(&AppToken::new(app.clone(), kind.clone()));
                }
            },
            DeviceEvent::Stopped { .. } => {
                self.online = false;
                self.stopped = true;
            }
            DeviceEvent::Notification { .. }
            | DeviceEvent::NotInstalled { .. }
            | DeviceEvent::TokenPosted { .. }
            | DeviceEvent::TokenPostFailed { .. }
            | DeviceEvent::BadCommand { .. } => {}
        }
        self.inbox.apply(event, now_ms);
    }
}

/// A handle on one managed device, taken out of the map for the length of a call.
struct Held {
    commands: mpsc::Sender<DeviceCommand>,
    state: Arc<Mutex<DeviceState>>,
    changed: watch::Receiver<u64>,
}

/// Locks a mutex, carrying on after a panic elsewhere (the data stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Actors {
    /// Actors connecting where `config` says; fails only when the PKI's CA certificate
    /// cannot be trusted by rustls. Devices are tokio tasks, so create them inside a runtime.
    pub fn new(config: ActorsConfig) -> Result<Self, crate::tls::TlsError> {
        let device_tls =
            crate::tls::client_config(config.pki.ca_cert_pem().as_bytes(), None, Vec::new())?;
        let (events, _) = broadcast::channel(EVENT_BROADCAST);
        Ok(Actors {
            inner: Arc::new(Inner {
                config,
                device_tls,
                devices: Mutex::new(BTreeMap::new()),
                events,
                next_identifier: AtomicU32::new(0xA5_00_00_01),
            }),
        })
    }

    /// Every managed device's events from now on (the demo fleet's printing uses it).
    pub fn subscribe(&self) -> broadcast::Receiver<DeviceEvent> {
        self.inner.events.subscribe()
    }

    /// Every managed device.
    pub fn list(&self) -> Vec<Device> {
        let devices = lock(&self.inner.devices);
        devices.values().map(|m| lock(&m.state).device()).collect()
    }

    /// Whether `serial` is a managed device that will be online again by itself: not told to
    /// stay offline and not stopped (a device whose connection was lost reconnects). What
    /// is stored for such a device is on its way, so a caller waiting for deliveries to
    /// settle waits for it too.
    pub fn coming_back(&self, serial: &str) -> bool {
        let devices = lock(&self.inner.devices);
        devices.get(serial).is_some_and(|m| {
            let s = lock(&m.state);
            !s.parked && !s.stopped
        })
    }

    /// Starts a device and waits until it is online with every app's token (at most
    /// [`READY_TIMEOUT`]); on failure the device is removed and the reason returned.
    pub async fn create(&self, spec: DeviceSpec) -> Result<Device, Refusal> {
        let serial = spec.serial.clone();
        let held = {
            let mut devices = lock(&self.inner.devices);
            if devices.contains_key(&serial) {
                return Err(Refusal::Exists(format!(
                    "device {serial} exists; DELETE /v1/devices/{serial} first"
                )));
            }
            if devices.len() >= MAX_DEVICES {
                return Err(Refusal::Full(format!(
                    "{MAX_DEVICES} in-process devices exist already; remove some first"
                )));
            }
            let managed = self.spawn(spec);
            let held = Held {
                commands: managed.commands.clone(),
                state: managed.state.clone(),
                changed: managed.changed.clone(),
            };
            devices.insert(serial.clone(), managed);
            held
        };
        let ready = wait(&held, |s| {
            if s.ready() {
                Some(Ok(s.device()))
            } else if let Some(reason) = &s.last_error {
                Some(Err(reason.clone()))
            } else if s.stopped {
                Some(Err("the device stopped".to_owned()))
            } else {
                None
            }
        })
        .await;
        match ready {
            Ok(device) => {
                info!(%serial, "managed device online");
                Ok(device)
            }
            Err(reason) => {
                let _ = self.remove(&serial).await;
                Err(Refusal::Device(format!(
                    "device {serial} did not get online with its apps: {reason}"
                )))
            }
        }
    }

    /// Spawns the device task and its pump.
    fn spawn(&self, spec: DeviceSpec) -> Managed {
        let config = &self.inner.config;
        let stop = config.shutdown.child_token();
        let mut handle = device::spawn(
            DeviceConfig {
                server: config.devices.to_string(),
                server_name: "localhost".to_owned(),
                tls: self.inner.device_tls.clone(),
                serial: spec.serial.clone(),
                environment: spec.environment,
                apps: spec.apps.clone(),
                register_url: None,
            },
            stop.clone(),
        );
        let state = Arc::new(Mutex::new(DeviceState {
            serial: spec.serial,
            environment: spec.environment,
            online: false,
            parked: false,
            apps: spec.apps.into_iter().map(|a| (a, None)).collect(),
            last_error: None,
            stopped: false,
            inbox: Inbox::default(),
        }));
        let (bump, changed) = watch::channel(0u64);
        let pump = {
            let state = state.clone();
            let events = self.inner.events.clone();
            let clock = config.hub.clock().clone();
            tokio::spawn(async move {
                let mut seen = 0u64;
                while let Some(event) = handle.events.recv().await {
                    lock(&state).apply(&event, clock.now_ms());
                    seen += 1;
                    bump.send_replace(seen);
                    // Nobody listening is fine.
                    let _ = events.send(event);
                }
                lock(&state).stopped = true;
                bump.send_replace(seen + 1);
            })
        };
        Managed {
            commands: handle.commands,
            state,
            changed,
            task: handle.task,
            pump,
            stop,
        }
    }

    /// The device's handle, or [`Refusal::NotManaged`].
    fn held(&self, serial: &str) -> Result<Held, Refusal> {
        let devices = lock(&self.inner.devices);
        let m = devices
            .get(serial)
            .ok_or_else(|| Refusal::NotManaged(serial.to_owned()))?;
        Ok(Held {
            commands: m.commands.clone(),
            state: m.state.clone(),
            changed: m.changed.clone(),
        })
    }

    /// Stops a device and forgets it.
    pub async fn remove(&self, serial: &str) -> Result<(), Refusal> {
        let managed = lock(&self.inner.devices)
            .remove(serial)
            .ok_or_else(|| Refusal::NotManaged(serial.to_owned()))?;
        stop(managed).await;
        info!(serial, "managed device removed");
        Ok(())
    }

    /// Stops and forgets every managed device, the demo fleet's too: what `POST /v1/reset`
    /// with `"devices": "remove"` does to the in-process devices (the hub's own records of
    /// them are the reset's to clear). Returns their serials.
    pub async fn remove_all(&self) -> Vec<String> {
        let all = std::mem::take(&mut *lock(&self.inner.devices));
        let serials: Vec<String> = all.keys().cloned().collect();
        for managed in all.into_values() {
            stop(managed).await;
        }
        info!(removed = serials.len(), "every managed device removed");
        serials
    }

    /// Installs `app` (or reinstalls it) and waits for its new token.
    pub async fn install(&self, serial: &str, app: AppToken) -> Result<App, Refusal> {
        let held = self.held(serial)?;
        let old = {
            let mut state = lock(&held.state);
            if !state.online {
                return Err(Refusal::Exists(format!(
                    "device {serial} is offline, and an app gets its token only online: \
                     POST /v1/devices/{serial}/online first"
                )));
            }
            state.last_error = None;
            state.apps.get(&app).copied().flatten()
        };
        send(&held, serial, DeviceCommand::Install(app.clone())).await?;
        let key = app.clone();
        wait(&held, move |s| match s.apps.get(&key) {
            Some(Some(token)) if Some(*token) != old => Some(Ok(App::new(&key, token))),
            _ if s.stopped => Some(Err("the device stopped".to_owned())),
            _ => s.last_error.clone().map(Err),
        })
        .await
        .map_err(|reason| {
            Refusal::Device(format!("device {serial} got no token for {app}: {reason}"))
        })
    }

    /// Uninstalls an app (its ordinary kind: the whole app) or one kind of token of it.
    pub async fn uninstall(&self, serial: &str, app: AppToken) -> Result<(), Refusal> {
        let held = self.held(serial)?;
        let whole = app.kind == TokenKind::Remote;
        let installed = lock(&held.state)
            .apps
            .keys()
            .any(|h| h.app == app.app && (whole || *h == app));
        if !installed {
            return Err(Refusal::Missing(format!(
                "device {serial} has no {app} installed"
            )));
        }
        send(&held, serial, DeviceCommand::Uninstall(app.clone())).await?;
        wait(&held, move |s| {
            let left = s
                .apps
                .keys()
                .any(|h| h.app == app.app && (whole || *h == app));
            if !left {
                Some(Ok(()))
            } else if s.stopped {
                Some(Err("the device stopped".to_owned()))
            } else {
                None
            }
        })
        .await
        .map_err(Refusal::Device)
    }

    /// Takes the device offline, or brings it back and waits until it is online with
    /// every token.
    pub async fn set_online(&self, serial: &str, online: bool) -> Result<Device, Refusal> {
        let held = self.held(serial)?;
        {
            let mut state = lock(&held.state);
            let done = if online {
                state.ready() && !state.parked
            } else {
                state.parked && !state.online
            };
            if done {
                return Ok(state.device());
            }
            state.last_error = None;
            // Set before the command goes: a device whose connection was lost and that is
            // retrying stops retrying on `Offline` without an `offline` event.
            state.parked = !online;
        }
        let command = if online {
            DeviceCommand::Online
        } else {
            DeviceCommand::Offline
        };
        send(&held, serial, command).await?;
        wait(&held, move |s| {
            if online && s.ready() || !online && !s.online {
                Some(Ok(s.device()))
            } else if s.stopped {
                Some(Err("the device stopped".to_owned()))
            } else if online {
                s.last_error.clone().map(Err)
            } else {
                None
            }
        })
        .await
        .map_err(|reason| Refusal::Device(format!("device {serial}: {reason}")))
    }

    /// What the device shows.
    pub fn inbox(&self, serial: &str) -> Result<Vec<Shown>, Refusal> {
        let held = self.held(serial)?;
        let list = lock(&held.state).inbox.list();
        Ok(list)
    }

    /// The current token of `app` on a managed device: `Ok(None)` when the serial is not
    /// managed, `Err` when it is but has no such token.
    fn token_of(&self, serial: &str, app: &AppToken) -> Result<Option<DeviceToken>, Refusal> {
        let Ok(held) = self.held(serial) else {
            return Ok(None);
        };
        let state = lock(&held.state);
        match state.apps.get(app) {
            Some(Some(token)) => Ok(Some(*token)),
            _ => Err(Refusal::Missing(format!(
                "device {serial} holds no {app} token"
            ))),
        }
    }
}

/// Sends a command to a device, or says it stopped.
async fn send(held: &Held, serial: &str, command: DeviceCommand) -> Result<(), Refusal> {
    held.commands
        .send(command)
        .await
        .map_err(|_| Refusal::Device(format!("device {serial} has stopped")))
}

/// Waits until `check` on the device's state answers, re-checking after every event, for at
/// most [`READY_TIMEOUT`].
async fn wait<T>(
    held: &Held,
    check: impl Fn(&DeviceState) -> Option<Result<T, String>>,
) -> Result<T, String> {
    let mut changed = held.changed.clone();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        changed.borrow_and_update();
        if let Some(answer) = check(&lock(&held.state)) {
            return answer;
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            // The pump ended: one last look.
            Ok(Err(_)) => {
                return check(&lock(&held.state))
                    .unwrap_or_else(|| Err("the device stopped".to_owned()))
            }
            Err(_) => return Err(format!("no answer within {READY_TIMEOUT:?}")),
        }
    }
}

/// Tells a device to quit and waits (bounded) for its tasks.
async fn stop(managed: Managed) {
    let _ = managed.commands.try_send(DeviceCommand::Quit);
    managed.stop.cancel();
    let serial = lock(&managed.state).serial.clone();
    if tokio::time::timeout(STOP_TIMEOUT, managed.task)
        .await
        .is_err()
    {
        debug!(%serial, "device task did not stop in time");
    }
    if tokio::time::timeout(STOP_TIMEOUT, managed.pump)
        .await
        .is_err()
    {
        debug!(%serial, "device pump did not stop in time");
    }
}

impl api::Actors for Actors {
    fn list(&self) -> Vec<Device> {
        Actors::list(self)
    }

    fn create(&self, spec: DeviceSpec) -> BoxFuture<'_, Result<Device, Refusal>> {
        Box::pin(Actors::create(self, spec))
    }

    fn remove(&self, serial: String) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move { Actors::remove(self, &serial).await })
    }

    fn install(&self, serial: String, app: AppToken) -> BoxFuture<'_, Result<App, Refusal>> {
        Box::pin(async move { Actors::install(self, &serial, app).await })
    }

    fn uninstall(&self, serial: String, app: AppToken) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move { Actors::uninstall(self, &serial, app).await })
    }

    fn set_online(&self, serial: String, online: bool) -> BoxFuture<'_, Result<Device, Refusal>> {
        Box::pin(async move { Actors::set_online(self, &serial, online).await })
    }

    fn inbox(&self, serial: &str) -> Result<Vec<Shown>, Refusal> {
        Actors::inbox(self, serial)
    }

    fn push(&self, push: TestPush) -> BoxFuture<'_, Result<PushAnswer, Refusal>> {
        Box::pin(provider::push(self, push))
    }

    fn remove_all(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(Actors::remove_all(self))
    }
}

impl Inner {
    /// The binary identifier of the next test push (counting from a recognisable value so
    /// the log tells them apart from a provider's own 1, 2, 3…).
    fn identifier(&self) -> u32 {
        self.next_identifier.fetch_add(1, Ordering::Relaxed)
    }
}
