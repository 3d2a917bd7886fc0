//! Virtual fleets: devices that live inside the hub as a few bytes of state each, with no
//! socket and no session, so that a load test needing a million tokens (but not a million
//! connections) runs on one box (issue 10).
//!
//! # What a virtual device is
//!
//! Device `i` of a fleet of `count` holds every kind of token ([`TokenKind::every`]) of each
//! of the fleet's apps, in the fleet's one environment. Per device the fleet keeps one bit
//! (offline or not) and one byte per token (installed, uninstalled but not yet reported, or
//! reported and unregistered), in flat vectors indexed by the device number: 1 app is 10
//! bytes and a bit, [`MAX_VIRTUAL_APPS`] apps 160 bytes, all under the 300-byte target.
//!
//! # Tokens are derived, not stored
//!
//! A virtual token is 32 bytes: the device number (4 bytes, big-endian), the token's slot
//! (app and kind, 2 bytes) and 26 bytes of HMAC-SHA256 over the environment and those six
//! bytes under a per-fleet random key ([`fleet_key`]). A push's token maps back to its
//! device in O(1) with one MAC, and a token a client makes up (or a real device's random
//! one) is not in the fleet: it fails the MAC (a forgery succeeds with probability
//! 2^-208). The key lives in the state directory (`virtual-fleet.key`) when the simulator
//! keeps durable state, so tokens survive a restart; in memory each start draws a new one.
//!
//! # The push path
//!
//! The hub consults the fleet only for a token its ordinary table does not hold (one hook
//! in [`State::push`]); from there a virtual device follows the real rules:
//! - online, app installed: `Sent`, then `Acknowledged` at once (the device "acknowledges"
//!   in the same step, so a push costs the hub path alone), with the same records, metrics
//!   and log line as a real device's;
//! - online, app uninstalled: `Sent`, then `NotInstalled`: the token joins the hub's token
//!   table as unregistered at that moment, with its feedback tuple, exactly as a real
//!   device's report does, so the next push is answered 410 with that timestamp by the
//!   ordinary path (and the row is durable like a real one);
//! - offline: store-and-forward with the real rules (expiry 0 discarded, a passed expiry
//!   expired, otherwise stored, newest per device and app, the older `Superseded`), sent
//!   when the device comes back.
//!
//! # Churn
//!
//! [`Hub::virtual_tick`], which the simulator calls every [`crate::settings::VIRTUAL_TICK`] on its clock,
//! uninstalls apps and takes devices offline at the configured rates (per second across
//! the fleet) and brings devices back once their time offline is up; each kind of work is
//! at most [`VIRTUAL_CHURN_PER_TICK`] per tick, so a tick never holds the lock long (a clock
//! moved far ahead does not make up for the time skipped). The control API forces the same
//! changes on one device (`/v1/virtual/…`).
//!
//! The module is a child of `state.rs` so that it reuses the state's own rules (token
//! checks, the store policy, unregistering and feedback) rather than copies of them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use ring::hmac;
use tracing::info;

use super::{DeviceKey, FastMap, Keep, PushError, PushOutcome, Queued, State, TokenRecord};
use crate::hub::events::{Detail, Outcome, Record};
use crate::hub::logline::reason_name;
use crate::hub::Hub;
use crate::protocol::token::{AppToken, DeviceToken, TokenKind};
use crate::protocol::Environment;
use crate::settings::{Settings, MAX_VIRTUAL_APPS, MAX_VIRTUAL_DEVICES, VIRTUAL_CHURN_PER_TICK};

/// The activity id of every virtual device's Live Activity update token.
pub const VIRTUAL_ACTIVITY: &str = "virtual";

/// The serial prefix of virtual devices: device 42 is `virtual-42` in the delivery log.
pub const VIRTUAL_SERIAL_PREFIX: &str = "virtual-";

/// The name of the fleet key's file in the state directory.
pub const KEY_FILE: &str = "virtual-fleet.key";

/// Bytes of a virtual token before its MAC: the device number (4) and the slot (2).
const INDEX_LEN: usize = 6;

/// What the MAC is computed over besides the environment and the index bytes, so that the
/// key can never produce a tag that means something elsewhere.
const DOMAIN: &[u8] = b"apns-sim virtual fleet v1";

/// A slot's state: the app is installed and the token live.
const INSTALLED: u8 = 0;
/// The app was uninstalled; the device reports it at the next notification.
const UNINSTALLED: u8 = 1;
/// The device reported it: the token is unregistered in the hub's token table.
const UNREGISTERED: u8 = 2;

/// A virtual fleet as the settings or a scenario ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSpec {
    /// How many devices (at most [`MAX_VIRTUAL_DEVICES`]).
    pub count: u32,
    /// The environment of every token.
    pub environment: Environment,
    /// The apps each device holds every kind of token of (1 to [`MAX_VIRTUAL_APPS`]).
    pub apps: Vec<String>,
    /// Apps uninstalled per second across the fleet.
    pub uninstall_per_sec: u32,
    /// Devices going offline per second across the fleet.
    pub offline_per_sec: u32,
    /// How long a device the churn took offline stays away.
    pub offline_for: Duration,
}

impl VirtualSpec {
    /// The fleet `settings` ask for ([`Settings::virtual_devices`] and the rest of its
    /// block), `None` for none; an app list that is empty or too long is an error in words.
    pub fn from_settings(settings: &Settings) -> Result<Option<VirtualSpec>, String> {
        if settings.virtual_devices == 0 {
            return Ok(None);
        }
        let apps: Vec<String> = settings
            .virtual_apps
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let spec = VirtualSpec {
            count: settings.virtual_devices,
            environment: settings.virtual_environment,
            apps,
            uninstall_per_sec: settings.virtual_uninstall_rate,
            offline_per_sec: settings.virtual_offline_rate,
            offline_for: settings.virtual_offline_for,
        };
        spec.check()?;
        Ok(Some(spec))
    }

    /// Whether the spec is within bounds; why not, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.count > MAX_VIRTUAL_DEVICES {
            return Err(format!(
                "{} virtual devices; at most {MAX_VIRTUAL_DEVICES}",
                self.count
            ));
        }
        if self.apps.is_empty() || self.apps.len() > MAX_VIRTUAL_APPS {
            return Err(format!(
                "a virtual fleet holds 1 to {MAX_VIRTUAL_APPS} apps, not {}",
                self.apps.len()
            ));
        }
        if let Some(bad) = self
            .apps
            .iter()
            .find(|a| a.len() > 255 || a.contains(':') || !a.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "virtual app {bad:?} is not a bundle id (1 to 255 printable ASCII characters \
                 without spaces or ':')"
            ));
        }
        Ok(())
    }
}

/// The fleet key: read from `dir`'s [`KEY_FILE`] if it holds one, else drawn at random and
/// (with a `dir`) written there first, readable by the owner only. Without a directory the
/// key lives as long as the process.
pub fn fleet_key(dir: Option<&Path>) -> std::io::Result<[u8; 32]> {
    let Some(dir) = dir else {
        return Ok(rand::thread_rng().gen());
    };
    let path = dir.join(KEY_FILE);
    let mut key = [0u8; 32];
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            file.read_exact(&mut key).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("{}: not a fleet key: {e}", path.display()),
                )
            })?;
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    key = rand::thread_rng().gen();
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(&key)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

/// Where a virtual token points: its device and slot (app and kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub) struct Slot {
    /// The device number.
    device: u32,
    /// The slot: app index × kinds + kind index.
    slot: u16,
}

/// What one app token of a virtual device is doing (for the control API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Installed: pushes are acknowledged.
    Installed,
    /// Uninstalled; the device reports it at the next notification.
    Uninstalled,
    /// Reported as not installed: pushes are answered 410 with the time.
    Unregistered,
}

impl AppState {
    /// Its name in the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Installed => "installed",
            AppState::Uninstalled => "uninstalled",
            AppState::Unregistered => "unregistered",
        }
    }
}

/// A virtual fleet at a glance (`GET /v1/virtual`, `GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSummary {
    /// Devices in the fleet.
    pub count: u32,
    /// Their environment.
    pub environment: Environment,
    /// Their apps.
    pub apps: Vec<String>,
    /// Tokens each device holds (every kind of each app).
    pub tokens_per_device: usize,
    /// Devices online now.
    pub online: u64,
    /// App tokens uninstalled and not yet reported.
    pub uninstalled: u64,
    /// App tokens reported as not installed (answered 410).
    pub unregistered: u64,
    /// Notifications stored for offline virtual devices.
    pub stored: u64,
}

/// One virtual device and its tokens (`GET /v1/virtual/devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDevice {
    /// Its number in the fleet.
    pub index: u32,
    /// Its serial in the delivery log (`virtual-N`).
    pub serial: String,
    /// Whether it is online.
    pub online: bool,
    /// Every token, by app and kind, with what the app is doing.
    pub tokens: Vec<(AppToken, DeviceToken, AppState)>,
}

/// Why a control request about a virtual device was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtualError {
    /// The simulator runs no virtual fleet.
    #[error("this simulator runs no virtual fleet (start it with --virtual-devices N)")]
    NoFleet,
    /// No device has this number.
    #[error("no virtual device {0}; the fleet has {1}")]
    NoDevice(u64, u32),
    /// The fleet holds no such app.
    #[error("the virtual fleet holds no app {0:?}; it holds {1}")]
    NoApp(String, String),
}

/// The fleet's state: a few bytes per device in flat vectors, plus what only some devices
/// need (stored notifications, return times) in small side tables.
pub(in crate::hub) struct VirtualFleet {
    /// The MAC key of its tokens.
    key: hmac::Key,
    /// The environment of every token.
    environment: Environment,
    /// Devices.
    count: u32,
    /// The apps, in slot order.
    apps: Vec<String>,
    /// The kinds of token each app holds, in slot order.
    kinds: [TokenKind; 10],
    /// One bit per device, set while it is offline (so a new fleet is all zeros: online).
    offline_bits: Vec<u64>,
    /// One byte per device and slot ([`INSTALLED`], [`UNINSTALLED`], [`UNREGISTERED`]).
    slots: Vec<u8>,
    /// When offline devices come back (ms, device), soonest first. A device brought back
    /// early leaves its entry, which does nothing when it comes up (the device is online).
    returns: BinaryHeap<Reverse<(u64, u32)>>,
    /// Store-and-forward: the newest notification per offline device and app.
    stored: FastMap<(u32, u16), Queued>,
    /// Devices offline now.
    offline: u64,
    /// Slots uninstalled and not yet reported.
    uninstalled: u64,
    /// Slots reported as not installed.
    unregistered: u64,
    /// The churn's rates and where it left off.
    churn: Churn,
}

impl std::fmt::Debug for VirtualFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualFleet")
            .field("count", &self.count)
            .field("environment", &self.environment)
            .field("apps", &self.apps)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

/// The churn's rates and what is carried from one tick to the next.
#[derive(Debug, Clone, Copy)]
struct Churn {
    /// Apps uninstalled per second across the fleet.
    uninstall_per_sec: u32,
    /// Devices going offline per second across the fleet.
    offline_per_sec: u32,
    /// How long a device the churn took offline stays away, in ms.
    offline_for_ms: u64,
    /// When the last tick ran (0: never).
    last_ms: u64,
    /// Fractions of an uninstall and of an offline carried to the next tick.
    carry: (f64, f64),
}

impl VirtualFleet {
    /// A fleet of `spec` under `key`, every device online with every app installed.
    pub(in crate::hub) fn new(spec: &VirtualSpec, key: &[u8; 32]) -> Self {
        let count = spec.count.min(MAX_VIRTUAL_DEVICES);
        let kinds = TokenKind::every(VIRTUAL_ACTIVITY);
        let per_device = spec.apps.len() * kinds.len();
        VirtualFleet {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            environment: spec.environment,
            count,
            apps: spec.apps.clone(),
            kinds,
            offline_bits: vec![0; (count as usize).div_ceil(64)],
            slots: vec![INSTALLED; count as usize * per_device],
            returns: BinaryHeap::new(),
            stored: FastMap::default(),
            offline: 0,
            uninstalled: 0,
            unregistered: 0,
            churn: Churn {
                uninstall_per_sec: spec.uninstall_per_sec,
                offline_per_sec: spec.offline_per_sec,
                offline_for_ms: u64::try_from(spec.offline_for.as_millis()).unwrap_or(u64::MAX),
                last_ms: 0,
                carry: (0.0, 0.0),
            },
        }
    }

    /// Tokens each device holds.
    fn per_device(&self) -> usize {
        self.apps.len() * self.kinds.len()
    }

    /// The bytes the fleet holds per device, from its vectors' sizes (side tables, which
    /// only offline or churned devices use, are not counted).
    pub(in crate::hub) fn bytes_per_device(&self) -> f64 {
        let held = self.offline_bits.capacity() * std::mem::size_of::<u64>()
            + self.slots.capacity() * std::mem::size_of::<u8>();
        held as f64 / f64::from(self.count.max(1))
    }

    /// The MAC of a token's index bytes.
    fn tag(&self, index: &[u8; INDEX_LEN]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(&[self.environment as u8]);
        ctx.update(index);
        ctx.sign()
    }

    /// The token of device `device`'s slot `slot`.
    fn token(&self, at: Slot) -> DeviceToken {
        let mut bytes = [0u8; DeviceToken::LEN];
        let mut index = [0u8; INDEX_LEN];
        index[..4].copy_from_slice(&at.device.to_be_bytes());
        index[4..].copy_from_slice(&at.slot.to_be_bytes());
        bytes[..INDEX_LEN].copy_from_slice(&index);
        let tag = self.tag(&index);
        bytes[INDEX_LEN..].copy_from_slice(&tag.as_ref()[..DeviceToken::LEN - INDEX_LEN]);
        DeviceToken::from_bytes(bytes)
    }

    /// The device and slot a token is of, if it is one of the fleet's: the right length, a
    /// device and slot that exist, and the MAC (compared in constant time).
    pub(in crate::hub) fn locate(&self, token: &DeviceToken) -> Option<Slot> {
        let bytes = token.as_bytes();
        if bytes.len() != DeviceToken::LEN {
            return None;
        }
        let mut index = [0u8; INDEX_LEN];
        index.copy_from_slice(&bytes[..INDEX_LEN]);
        let device = u32::from_be_bytes([index[0], index[1], index[2], index[3]]);
        let slot = u16::from_be_bytes([index[4], index[5]]);
        if device >= self.count || usize::from(slot) >= self.per_device() {
            return None;
        }
        let tag = self.tag(&index);
        let want = &tag.as_ref()[..DeviceToken::LEN - INDEX_LEN];
        let diff = want
            .iter()
            .zip(&bytes[INDEX_LEN..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(Slot { device, slot })
    }

    /// The app and kind of a slot.
    fn held(&self, slot: u16) -> (&str, &TokenKind) {
        let kinds = self.kinds.len();
        let slot = usize::from(slot);
        (&self.apps[slot / kinds], &self.kinds[slot % kinds])
    }

    /// The ordinary token table's record for slot `slot` of the device `serial`: what the
    /// shared rules read (the token checks) and what an unregistered token becomes.
    fn record(&self, serial: &Arc<str>, slot: u16) -> TokenRecord {
        let (app, kind) = self.held(slot);
        TokenRecord {
            device: DeviceKey {
                serial: serial.clone(),
                environment: self.environment,
            },
            app: app.to_owned(),
            kind: kind.clone(),
            unregistered_at_ms: None,
        }
    }

    /// The app index of a slot.
    fn app_of(&self, slot: u16) -> u16 {
        slot / self.kinds.len() as u16
    }

    /// The state byte of a slot.
    fn state(&self, at: Slot) -> u8 {
        self.slots[at.device as usize * self.per_device() + usize::from(at.slot)]
    }

    /// Sets a slot's state byte, keeping the counts.
    fn set_state(&mut self, at: Slot, to: u8) {
        let i = at.device as usize * self.per_device() + usize::from(at.slot);
        let from = std::mem::replace(&mut self.slots[i], to);
        for (state, delta) in [(from, -1i64), (to, 1)] {
            match state {
                UNINSTALLED => self.uninstalled = self.uninstalled.saturating_add_signed(delta),
                UNREGISTERED => self.unregistered = self.unregistered.saturating_add_signed(delta),
                _ => {}
            }
        }
    }

    /// Whether device `device` is online.
    fn is_online(&self, device: u32) -> bool {
        self.offline_bits[device as usize / 64] & (1 << (device % 64)) == 0
    }

    /// Marks a device online or offline; whether that changed anything.
    fn set_online(&mut self, device: u32, online: bool) -> bool {
        if self.is_online(device) == online {
            return false;
        }
        self.offline_bits[device as usize / 64] ^= 1 << (device % 64);
        if online {
            self.offline -= 1;
        } else {
            self.offline += 1;
        }
        true
    }

    /// The serial of a device, interned for its records.
    fn serial(device: u32) -> Arc<str> {
        Arc::from(format!("{VIRTUAL_SERIAL_PREFIX}{device}"))
    }

    /// Uninstalls app `app` (every kind of it) on `device`: the installed slots become
    /// uninstalled; those already reported stay as they are.
    fn uninstall(&mut self, device: u32, app: u16) {
        let kinds = self.kinds.len() as u16;
        for slot in app * kinds..(app + 1) * kinds {
            let at = Slot { device, slot };
            if self.state(at) == INSTALLED {
                self.set_state(at, UNINSTALLED);
            }
        }
    }

    /// The fleet at a glance.
    fn summary(&self) -> VirtualSummary {
        VirtualSummary {
            count: self.count,
            environment: self.environment,
            apps: self.apps.clone(),
            tokens_per_device: self.per_device(),
            online: u64::from(self.count) - self.offline,
            uninstalled: self.uninstalled,
            unregistered: self.unregistered,
            stored: self.stored.len() as u64,
        }
    }

    /// Device `device` as the control API lists it.
    fn device(&self, device: u32) -> VirtualDevice {
        let tokens = (0..self.per_device() as u16)
            .map(|slot| {
                let at = Slot { device, slot };
                let (app, kind) = self.held(slot);
                let state = match self.state(at) {
                    INSTALLED => AppState::Installed,
                    UNINSTALLED => AppState::Uninstalled,
                    _ => AppState::Unregistered,
                };
                (AppToken::new(app, kind.clone()), self.token(at), state)
            })
            .collect();
        VirtualDevice {
            index: device,
            serial: format!("{VIRTUAL_SERIAL_PREFIX}{device}"),
            online: self.is_online(device),
            tokens,
        }
    }

    /// The device number of `index`, or why there is none.
    fn check_device(&self, index: u64) -> Result<u32, VirtualError> {
        u32::try_from(index)
            .ok()
            .filter(|d| *d < self.count)
            .ok_or(VirtualError::NoDevice(index, self.count))
    }

    /// The app index of `app`, or why there is none.
    fn check_app(&self, app: &str) -> Result<u16, VirtualError> {
        self.apps
            .iter()
            .position(|a| a == app)
            .map(|i| i as u16)
            .ok_or_else(|| VirtualError::NoApp(app.to_owned(), self.apps.join(", ")))
    }
}

// ----- the rules, on the hub's state -------------------------------------------------------

impl State {
    /// Starts a virtual fleet in this state (replacing any), every device online.
    pub(in crate::hub) fn start_fleet(&mut self, spec: &VirtualSpec, key: &[u8; 32]) {
        self.fleet = Some(Box::new(VirtualFleet::new(spec, key)));
    }

    /// Where a token of the fleet points, if the state runs one and the token is its.
    pub(super) fn locate_virtual(&self, token: &DeviceToken) -> Option<Slot> {
        self.fleet.as_ref().and_then(|f| f.locate(token))
    }

    /// [`State::push`] for a token of the virtual fleet (`at`): the same checks and
    /// outcomes as for a real device.
    pub(super) fn push_virtual(
        &mut self,
        mut q: Queued,
        at: Slot,
        environment: Environment,
        now_ms: u64,
    ) -> (Result<PushOutcome, PushError>, Vec<Record>) {
        let mut events = Vec::new();
        let Some(fleet) = self.fleet.as_deref() else {
            return (Err(PushError::UnknownToken), events);
        };
        let serial = VirtualFleet::serial(at.device);
        if let Some(note) = Arc::get_mut(&mut q.note) {
            note.serial = Some(serial.clone());
        }
        let (app, kind) = fleet.held(at.slot);
        let (want_app, push_type) = q.intent();
        let fits = fleet.environment == environment && app == want_app && kind.accepts(push_type);
        let checked = if fits {
            Ok(())
        } else {
            // The ordinary rule, for its exact words.
            let record = fleet.record(&serial, at.slot);
            State::check_token(Some(&record), &q, environment).map(|_| ())
        };
        let checked = checked.and_then(|()| self.rate.check(&q.note.token, now_ms));
        let result = match checked {
            Err(err) => {
                let outcome = match err {
                    PushError::TooManyRequests { .. } => Outcome::Throttled,
                    _ => Outcome::Rejected,
                };
                let detail = Detail::Refused {
                    reason: reason_name(&err),
                    text: err.to_string(),
                };
                q.decided(&mut events, now_ms, outcome, detail);
                Err(err)
            }
            Ok(()) => Ok(self.route_virtual(at, serial, q, now_ms, &mut events)),
        };
        (result, events)
    }

    /// Sends `q` to an online virtual device, which answers at once, or stores it for an
    /// offline one.
    fn route_virtual(
        &mut self,
        at: Slot,
        serial: Arc<str>,
        mut q: Queued,
        now_ms: u64,
        events: &mut Vec<Record>,
    ) -> PushOutcome {
        let Some(fleet) = self.fleet.as_deref_mut() else {
            return PushOutcome::Discarded;
        };
        if fleet.is_online(at.device) {
            q.decided(
                events,
                now_ms,
                Outcome::Sent,
                Detail::Device(serial.clone()),
            );
            if fleet.state(at) == INSTALLED {
                events.push(q.record(now_ms, Outcome::Acknowledged, Detail::Device(serial)));
            } else {
                let at_ms = self.unregister_virtual(at, &serial, q.note.token, now_ms);
                let detail = format!("device {serial} (unregistered at {at_ms} ms)");
                events.push(q.record(now_ms, Outcome::NotInstalled, detail.into()));
            }
            return PushOutcome::Sent;
        }
        // Offline: the store-and-forward rules of a real device.
        let why = "device offline";
        if q.store_or_drop(events, now_ms, why).is_none() {
            return PushOutcome::Discarded;
        }
        let app = fleet.app_of(at.slot);
        if let Some(old) = fleet.stored.insert((at.device, app), q) {
            let detail = "a newer notification for the same app replaced it".to_owned();
            events.push(old.record(now_ms, Outcome::Superseded, detail.into()));
        }
        PushOutcome::Stored
    }

    /// A virtual device reported a token as not installed: the token joins the hub's token
    /// table as a real device's token, and is unregistered there by the ordinary rule
    /// (once, with its feedback tuple and its row in the state file). Returns the time it
    /// became unregistered.
    fn unregister_virtual(
        &mut self,
        at: Slot,
        serial: &Arc<str>,
        token: DeviceToken,
        now_ms: u64,
    ) -> u64 {
        let Some(fleet) = self.fleet.as_deref_mut() else {
            return now_ms;
        };
        let record = fleet.record(serial, at.slot);
        fleet.set_state(at, UNREGISTERED);
        self.tokens.entry(token).or_insert(record);
        self.unregister(token, now_ms)
    }

    /// Brings virtual device `device` online (if it was not) and sends it what was stored
    /// for it, dropping what expired meanwhile.
    fn virtual_back(&mut self, device: u32, now_ms: u64, events: &mut Vec<Record>) {
        let Some(fleet) = self.fleet.as_deref_mut() else {
            return;
        };
        if !fleet.set_online(device, true) {
            return;
        }
        let apps = fleet.apps.len() as u16;
        let kinds = fleet.kinds.len() as u16;
        let serial = VirtualFleet::serial(device);
        for app in 0..apps {
            let Some(fleet) = self.fleet.as_deref_mut() else {
                return;
            };
            let Some(q) = fleet.stored.remove(&(device, app)) else {
                continue;
            };
            if let Keep::Until(until) = q.keep {
                if until <= now_ms / 1000 {
                    let detail = format!("kept until {until}, which passed while it was stored");
                    events.push(q.record(now_ms, Outcome::Expired, detail.into()));
                    continue;
                }
            }
            // Its slot is read back from its token (the same app, whichever kind).
            let slot = fleet.locate(&q.note.token).map_or(app * kinds, |s| s.slot);
            let at = Slot { device, slot };
            self.route_virtual(at, serial.clone(), q, now_ms, events);
        }
    }

    /// Takes virtual device `device` offline until `until_ms` (the churn's tick brings it
    /// back then).
    fn virtual_away(&mut self, device: u32, until_ms: u64) {
        if let Some(fleet) = self.fleet.as_deref_mut() {
            if fleet.set_online(device, false) {
                fleet.returns.push(Reverse((until_ms, device)));
            }
        }
    }

    /// One churn tick at `now_ms`: the uninstalls and departures due since the last tick at
    /// the fleet's rates, and the returns due now, each at most
    /// [`VIRTUAL_CHURN_PER_TICK`].
    pub(in crate::hub) fn virtual_tick(&mut self, now_ms: u64) -> Vec<Record> {
        let mut events = Vec::new();
        let Some(fleet) = self.fleet.as_deref_mut() else {
            return events;
        };
        let churn = &mut fleet.churn;
        let elapsed_ms = if churn.last_ms == 0 {
            0
        } else {
            now_ms.saturating_sub(churn.last_ms)
        };
        churn.last_ms = now_ms;
        let secs = elapsed_ms as f64 / 1000.0;
        let cap = f64::from(VIRTUAL_CHURN_PER_TICK);
        let due = |carry: &mut f64, rate: u32| {
            let total = (*carry + f64::from(rate) * secs).min(cap);
            let whole = total.floor();
            *carry = total - whole;
            whole as u32
        };
        let uninstalls = due(&mut churn.carry.0, churn.uninstall_per_sec);
        let departures = due(&mut churn.carry.1, churn.offline_per_sec);
        let away_ms = churn.offline_for_ms;
        let count = fleet.count;
        let apps = fleet.apps.len() as u16;
        if count > 0 {
            let mut rng = rand::thread_rng();
            for _ in 0..uninstalls {
                fleet.uninstall(rng.gen_range(0..count), rng.gen_range(0..apps));
            }
            let mut gone = Vec::new();
            for _ in 0..departures {
                gone.push(rng.gen_range(0..count));
            }
            for device in gone {
                self.virtual_away(device, now_ms.saturating_add(away_ms));
            }
        }
        let mut back = Vec::new();
        if let Some(fleet) = self.fleet.as_deref_mut() {
            while back.len() < VIRTUAL_CHURN_PER_TICK as usize {
                match fleet.returns.peek() {
                    Some(Reverse((at, _))) if *at <= now_ms => {}
                    _ => break,
                }
                if let Some(Reverse((_, device))) = fleet.returns.pop() {
                    back.push(device);
                }
            }
        }
        for device in back {
            self.virtual_back(device, now_ms, &mut events);
        }
        events
    }

    /// How many notifications the virtual fleet holds for offline devices.
    pub(super) fn virtual_stored(&self) -> usize {
        self.fleet.as_ref().map_or(0, |f| f.stored.len())
    }

    /// Back to the fleet's start (a reset): every device online, every app installed,
    /// nothing stored. Returns how many notifications were stored.
    pub(super) fn reset_virtual(&mut self) -> u64 {
        let Some(fleet) = self.fleet.as_deref_mut() else {
            return 0;
        };
        let stored = fleet.stored.len() as u64;
        fleet.stored.clear();
        fleet.returns.clear();
        fleet.offline_bits.fill(0);
        fleet.slots.fill(INSTALLED);
        fleet.offline = 0;
        fleet.uninstalled = 0;
        fleet.unregistered = 0;
        stored
    }

    /// Who holds a virtual token (for the control API's test push), if it is one.
    pub(super) fn virtual_owner(&self, token: &DeviceToken) -> Option<super::TokenOwner> {
        let fleet = self.fleet.as_deref()?;
        let at = fleet.locate(token)?;
        let (app, kind) = fleet.held(at.slot);
        Some(super::TokenOwner {
            serial: format!("{VIRTUAL_SERIAL_PREFIX}{}", at.device),
            environment: fleet.environment,
            held: AppToken::new(app, kind.clone()),
            unregistered: fleet.state(at) == UNREGISTERED,
        })
    }
}

// ----- the handle's side ---------------------------------------------------------------------

impl Hub {
    /// Starts a virtual fleet of `spec` whose tokens are derived under `key`
    /// ([`fleet_key`]): every device online, every app installed, in the time it takes to
    /// allocate its vectors. Logged as one line, not one event per device.
    pub fn start_virtual_fleet(&self, spec: &VirtualSpec, key: &[u8; 32]) {
        let started = std::time::Instant::now();
        let per_device = self.apply(|st, _| {
            st.start_fleet(spec, key);
            let bytes = st.fleet.as_ref().map_or(0.0, |f| f.bytes_per_device());
            (bytes, Vec::new())
        });
        info!(
            devices = spec.count,
            environment = %spec.environment,
            apps = %spec.apps.join(","),
            tokens = u64::from(spec.count) * (spec.apps.len() as u64) * 10,
            bytes_per_device = format!("{per_device:.1}"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "virtual fleet registered"
        );
    }

    /// Whether the hub runs a virtual fleet.
    pub fn has_virtual_fleet(&self) -> bool {
        self.lock().state.fleet.is_some()
    }

    /// One churn tick on the hub's clock: the uninstalls and departures due since the last
    /// one at the fleet's rates, and the devices whose time offline is up brought back.
    pub fn virtual_tick(&self) {
        self.apply(|st, now_ms| ((), st.virtual_tick(now_ms)));
    }

    /// The virtual fleet at a glance, if there is one.
    pub fn virtual_summary(&self) -> Option<VirtualSummary> {
        self.lock().state.fleet.as_ref().map(|f| f.summary())
    }

    /// Devices `from..from + limit` of the fleet (fewer past its end), with their tokens.
    pub fn virtual_devices(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<VirtualDevice>, VirtualError> {
        let guard = self.lock();
        let fleet = guard.state.fleet.as_ref().ok_or(VirtualError::NoFleet)?;
        let end = from
            .saturating_add(limit as u64)
            .min(u64::from(fleet.count));
        Ok((from..end).map(|d| fleet.device(d as u32)).collect())
    }

    /// Uninstalls `app` (every kind of it) on virtual device `index`: its next notification
    /// is reported as not installed, as a real device's would be.
    pub fn virtual_uninstall(&self, index: u64, app: &str) -> Result<VirtualDevice, VirtualError> {
        self.apply(|st, _| {
            let result = st
                .fleet
                .as_deref_mut()
                .ok_or(VirtualError::NoFleet)
                .and_then(|fleet| {
                    let device = fleet.check_device(index)?;
                    let app = fleet.check_app(app)?;
                    fleet.uninstall(device, app);
                    Ok(fleet.device(device))
                });
            (result, Vec::new())
        })
    }

    /// Takes virtual device `index` offline (for `away`, or until told otherwise when
    /// `None`), or brings it back and sends it what was stored for it.
    pub fn virtual_set_online(
        &self,
        index: u64,
        online: bool,
        away: Option<Duration>,
    ) -> Result<VirtualDevice, VirtualError> {
        self.apply(|st, now_ms| {
            let mut events = Vec::new();
            let device = match st.fleet.as_deref().ok_or(VirtualError::NoFleet) {
                Ok(fleet) => match fleet.check_device(index) {
                    Ok(device) => device,
                    Err(e) => return (Err(e), events),
                },
                Err(e) => return (Err(e), events),
            };
            if online {
                st.virtual_back(device, now_ms, &mut events);
            } else {
                let until = away.map_or(u64::MAX, |d| {
                    now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                });
                st.virtual_away(device, until);
            }
            let listed = st.fleet.as_deref().map(|f| f.device(device));
            (listed.ok_or(VirtualError::NoFleet), events)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::hub::state::tests::request;

    const APP: &str = "com.example.app";

    fn spec(count: u32) -> VirtualSpec {
        VirtualSpec {
            count,
            environment: Environment::Sandbox,
            apps: vec![APP.to_owned()],
            uninstall_per_sec: 0,
            offline_per_sec: 0,
            offline_for: Duration::from_secs(60),
        }
    }

    fn state(count: u32) -> State {
        let mut st = State::new(None, Duration::from_secs(30 * 86_400));
        st.start_fleet(&spec(count), &[7; 32]);
        st
    }

    fn fleet(st: &State) -> &VirtualFleet {
        st.fleet.as_deref().unwrap()
    }

    fn outcomes(records: &[Record]) -> Vec<Outcome> {
        records
            .iter()
            .filter_map(|r| r.notification().map(|(_, o)| o))
            .collect()
    }

    fn push(
        st: &mut State,
        token: DeviceToken,
        now_ms: u64,
    ) -> (Result<PushOutcome, PushError>, Vec<Outcome>) {
        let q = Queued::from_request(request(token, 1, 0), Instant::now());
        let (result, records) = st.push(q, Environment::Sandbox, now_ms);
        (result, outcomes(&records))
    }

    #[test]
    fn every_token_maps_back_to_its_device_and_slot() {
        let st = state(1_000);
        let f = fleet(&st);
        for device in [0, 1, 63, 64, 999] {
            for slot in 0..f.per_device() as u16 {
                let at = Slot { device, slot };
                let token = f.token(at);
                assert_eq!(f.locate(&token), Some(at));
            }
        }
        // Another key, another environment: other tokens.
        let other = VirtualFleet::new(&spec(1_000), &[8; 32]);
        let token = f.token(Slot { device: 5, slot: 0 });
        assert_eq!(other.locate(&token), None);
        let production = VirtualFleet::new(
            &VirtualSpec {
                environment: Environment::Production,
                ..spec(1_000)
            },
            &[7; 32],
        );
        assert_eq!(production.locate(&token), None);
    }

    #[test]
    fn a_forged_or_random_token_is_not_in_the_fleet() {
        let st = state(1_000);
        let f = fleet(&st);
        let real = f.token(Slot { device: 3, slot: 0 });
        // One bit flipped anywhere: refused.
        for byte in 0..DeviceToken::LEN {
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(real.as_bytes());
            bytes[byte] ^= 1;
            assert_eq!(
                f.locate(&DeviceToken::from_bytes(bytes)),
                None,
                "byte {byte}"
            );
        }
        // Random tokens, including ones whose index is valid.
        for _ in 0..10_000 {
            let mut bytes: [u8; 32] = rand::random();
            bytes[..4].copy_from_slice(&rand::thread_rng().gen_range(0u32..1_000).to_be_bytes());
            bytes[4..6].copy_from_slice(&0u16.to_be_bytes());
            assert_eq!(f.locate(&DeviceToken::from_bytes(bytes)), None);
        }
        // Other lengths and an index past the fleet.
        assert_eq!(
            f.locate(&DeviceToken::new(&real.as_bytes()[..31]).unwrap()),
            None
        );
        let past = VirtualFleet::new(&spec(2_000), &[7; 32]).token(Slot {
            device: 1_500,
            slot: 0,
        });
        assert_eq!(f.locate(&past), None);
    }

    #[test]
    fn a_device_costs_at_most_300_bytes() {
        // Per device: one bit, and one byte per token.
        let one_app = (10 * std::mem::size_of::<u8>()) as f64 + 1.0 / 8.0;
        assert!(one_app <= 300.0);
        let most_apps = (MAX_VIRTUAL_APPS * 10) as f64 + 1.0 / 8.0;
        assert!(most_apps <= 300.0, "{most_apps}");
        let st = state(100_000);
        let measured = fleet(&st).bytes_per_device();
        assert!(measured <= 11.0, "{measured} bytes per device");
        let big = VirtualFleet::new(
            &VirtualSpec {
                apps: (0..MAX_VIRTUAL_APPS)
                    .map(|i| format!("com.example.app{i}"))
                    .collect(),
                ..spec(10_000)
            },
            &[1; 32],
        );
        assert!(
            big.bytes_per_device() <= 300.0,
            "{}",
            big.bytes_per_device()
        );
    }

    #[test]
    fn pushes_are_acknowledged_uninstalls_reported_then_410_and_feedback() {
        let mut st = state(100);
        let token = fleet(&st).token(Slot { device: 7, slot: 0 });
        let now = 1_700_000_000_000;
        assert_eq!(
            push(&mut st, token, now),
            (
                Ok(PushOutcome::Sent),
                vec![Outcome::Sent, Outcome::Acknowledged]
            )
        );
        st.fleet.as_deref_mut().unwrap().uninstall(7, 0);
        assert_eq!(
            push(&mut st, token, now + 5),
            (
                Ok(PushOutcome::Sent),
                vec![Outcome::Sent, Outcome::NotInstalled]
            )
        );
        let tuples = st.peek_feedback(APP, Environment::Sandbox);
        assert_eq!(tuples.len(), 1);
        assert_eq!(tuples[0].token, token);
        assert_eq!(u64::from(tuples[0].timestamp), (now + 5) / 1000);
        assert_eq!(
            push(&mut st, token, now + 10),
            (
                Err(PushError::Unregistered { at_ms: now + 5 }),
                vec![Outcome::Unregistered]
            )
        );
        assert_eq!(st.unregistered_at(&token), Some(now + 5));
        assert_eq!(fleet(&st).summary().unregistered, 1);
        // The other kinds of the app were uninstalled too, not yet reported.
        assert_eq!(fleet(&st).summary().uninstalled, 9);
    }

    #[test]
    fn wrong_environment_or_topic_is_refused_like_a_real_token() {
        let mut st = state(10);
        let voip = fleet(&st).token(Slot { device: 1, slot: 1 });
        let (result, seen) = push(&mut st, voip, 1_000);
        assert!(
            matches!(result, Err(PushError::WrongTopic { .. })),
            "{result:?}"
        );
        assert_eq!(seen, [Outcome::Rejected]);
        let token = fleet(&st).token(Slot { device: 1, slot: 0 });
        let q = Queued::from_request(request(token, 1, 0), Instant::now());
        let (result, _) = st.push(q, Environment::Production, 1_000);
        assert!(matches!(result, Err(PushError::WrongEnvironment { .. })));
        let (result, _) = push(&mut st, DeviceToken::from_bytes([9; 32]), 1_000);
        assert_eq!(result, Err(PushError::UnknownToken));
    }

    #[test]
    fn an_offline_device_stores_the_newest_and_gets_it_back() {
        let mut st = state(10);
        let token = fleet(&st).token(Slot { device: 2, slot: 0 });
        let now = 1_700_000_000_000;
        st.virtual_away(2, now + 60_000);
        let later = (now / 1000 + 3_600) as u32;
        let stored = |st: &mut State, at_ms| {
            let q = Queued::from_request(request(token, 1, later), Instant::now());
            let (result, records) = st.push(q, Environment::Sandbox, at_ms);
            (result, outcomes(&records))
        };
        assert_eq!(
            stored(&mut st, now),
            (Ok(PushOutcome::Stored), vec![Outcome::Stored])
        );
        assert_eq!(
            push(&mut st, token, now),
            (Ok(PushOutcome::Discarded), vec![Outcome::Discarded]),
            "expiry 0"
        );
        assert_eq!(
            stored(&mut st, now + 1),
            (
                Ok(PushOutcome::Stored),
                vec![Outcome::Stored, Outcome::Superseded]
            )
        );
        assert_eq!(st.stored_len(), 1);
        assert!(
            outcomes(&st.virtual_tick(now + 30_000)).is_empty(),
            "not yet"
        );
        let back = st.virtual_tick(now + 60_000);
        assert_eq!(outcomes(&back), [Outcome::Sent, Outcome::Acknowledged]);
        assert_eq!(st.stored_len(), 0);
        assert!(fleet(&st).is_online(2));
    }

    #[test]
    fn the_churn_follows_its_rates_and_its_bound() {
        let mut st = State::new(None, Duration::from_secs(86_400));
        st.start_fleet(
            &VirtualSpec {
                uninstall_per_sec: 100,
                offline_per_sec: 1_000_000,
                offline_for: Duration::from_secs(10),
                ..spec(1_000_000)
            },
            &[3; 32],
        );
        let now = 1_700_000_000_000;
        st.virtual_tick(now);
        st.virtual_tick(now + 1_000);
        let s = fleet(&st).summary();
        // 100 uninstalls of one app: up to 10 tokens each (two may hit the same device).
        assert!(s.uninstalled > 900 && s.uninstalled <= 1_000, "{s:?}");
        let away = u64::from(s.count) - s.online;
        assert!(
            away > 9_000 && away <= u64::from(VIRTUAL_CHURN_PER_TICK),
            "{s:?}"
        );
        st.virtual_tick(now + 11_000);
        let s = fleet(&st).summary();
        assert!(u64::from(s.count) - s.online <= u64::from(VIRTUAL_CHURN_PER_TICK));
    }

    #[test]
    fn a_reset_brings_the_fleet_back_to_its_start() {
        let mut st = state(10);
        let token = fleet(&st).token(Slot { device: 1, slot: 0 });
        st.fleet.as_deref_mut().unwrap().uninstall(1, 0);
        let _ = push(&mut st, token, 1_000);
        st.virtual_away(3, u64::MAX);
        st.reset();
        let s = fleet(&st).summary();
        assert_eq!((s.online, s.uninstalled, s.unregistered), (10, 0, 0));
        assert_eq!(
            push(&mut st, token, 2_000),
            (
                Ok(PushOutcome::Sent),
                vec![Outcome::Sent, Outcome::Acknowledged]
            )
        );
    }

    #[test]
    fn the_key_is_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = fleet_key(Some(dir.path())).unwrap();
        assert_eq!(fleet_key(Some(dir.path())).unwrap(), first);
        assert_ne!(fleet_key(None).unwrap(), first);
    }

    #[test]
    fn settings_make_a_spec_or_say_why_not() {
        assert_eq!(VirtualSpec::from_settings(&Settings::default()), Ok(None));
        let settings = Settings {
            virtual_devices: 5,
            virtual_apps: "com.a, com.b".to_owned(),
            ..Settings::default()
        };
        let spec = VirtualSpec::from_settings(&settings).unwrap().unwrap();
        assert_eq!(spec.apps, ["com.a", "com.b"]);
        let bad = Settings {
            virtual_devices: 5,
            virtual_apps: " , ".to_owned(),
            ..Settings::default()
        };
        assert!(VirtualSpec::from_settings(&bad).is_err());
    }
}
