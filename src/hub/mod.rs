//! The routing core: device tokens, device sessions, store-and-forward, unregistered tokens,
//! feedback records and the delivery log.
//!
//! `Hub` is a cheap-to-clone handle (`Arc` inside) shared by every endpoint. All state sits
//! behind one `std::sync::Mutex`: every operation is a few map look-ups and never awaits, so
//! the lock is never held across an `.await` (mini-redis `db.rs` explains why a std mutex is
//! the right tool here). Delivery to a device goes through that device session's bounded
//! queue with `try_send`, so a slow device can never block a provider connection.
//!
//! # What happens to a notification
//!
//! Every notification the hub accepts ends in exactly one recorded outcome (see [`Outcome`]):
//!
//! ```text
//! push ──► token unknown / other environment / other app ──► Rejected (status 8 / 400)
//!   │────► token unregistered ─────────────────────────────► Unregistered (410; binary: silent)
//!   │────► device online, queue has room ──► Sent ──► Acknowledged
//!   │                                           └───► NotInstalled (app gone: feedback + 410)
//!   │                                           └───► device dropped before ack: routed again
//!   └────► device offline (or queue full) ──► expiry 0: Discarded
//!                                         ├──► expiry passed: Expired
//!                                         └──► Stored (newest per device and app; the older
//!                                              one is Superseded) ──► Sent on reconnect
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::RngCore;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::clock::Clock;
use crate::protocol::device::DeviceNotification;
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::token::DeviceToken;
use crate::protocol::Environment;
use crate::settings::RateLimit;

/// Capacity of each device session's delivery queue. A device that falls this far behind
/// gets further notifications through the store (newest per app), exactly as if it were
/// offline; this bounds memory per device and never blocks a provider.
pub const DEVICE_QUEUE: usize = 256;

/// Notifications sent to one session and not yet acknowledged. Past this, further
/// notifications are stored instead of sent, so a device that never acknowledges cannot
/// grow the pending table without bound.
pub const MAX_UNACKED_PER_SESSION: usize = 1024;

/// How many recent events the in-memory delivery log keeps for inspection.
pub const EVENT_LOG_LEN: usize = 10_000;

/// Capacity of the live event channel; a subscriber that lags this far behind misses events
/// (and is told so by `broadcast::error::RecvError::Lagged`).
pub const EVENT_CHANNEL: usize = 16_384;

/// Upper bound on device tokens minted by one simulator, so that a runaway registration loop
/// cannot exhaust memory. A million tokens costs roughly 200 MB.
pub const MAX_TOKENS: usize = 1_000_000;

/// Upper bound on unread feedback tuples per (topic, environment). Past it the oldest tuple is
/// dropped with a warning in the log: a provider that never reads feedback should not make
/// the simulator grow forever.
pub const MAX_FEEDBACK_PER_TOPIC: usize = 100_000;

/// Which provider API a notification came through (for the log and for per-API rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// The legacy binary gateway (commands 0, 1, 2).
    Binary,
    /// The HTTP/2 provider API.
    Http2,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Binary => "binary",
            Api::Http2 => "http2",
        }
    }

    /// The endpoint's name in a log line's path.
    fn gateway_name(self) -> &'static str {
        match self {
            Api::Binary => "gateway",
            Api::Http2 => "http2",
        }
    }
}

/// A notification that passed its API's own checks, handed to the hub for routing.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The API it arrived on.
    pub api: Api,
    /// Target device token.
    pub token: DeviceToken,
    /// The app (bundle id) the provider is allowed to push to: from the certificate on the
    /// binary API, from `apns-topic` with any push-type suffix removed on HTTP/2.
    pub topic: String,
    /// Environment of the provider connection.
    pub environment: Environment,
    /// Binary identifier (opaque 4 bytes); zero on HTTP/2.
    pub identifier: [u8; 4],
    /// The notification's UUID: `apns-id` on HTTP/2, generated for binary notifications.
    pub apns_id: Uuid,
    /// UNIX seconds after which it must not be delivered; 0 = deliver now or never.
    pub expiry: u32,
    /// 10, 5 or 1.
    pub priority: u8,
    /// `apns-push-type` (HTTP/2 only).
    pub push_type: Option<String>,
    /// `apns-collapse-id` (HTTP/2 only).
    pub collapse_id: Option<String>,
    /// The JSON payload, already checked.
    pub payload: Bytes,
}

/// Why the hub refused a notification. The APIs map these onto their own answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No device ever held this token (binary status 8, HTTP/2 `BadDeviceToken`).
    #[error("unknown device token")]
    UnknownToken,
    /// The token belongs to the other environment (binary status 8, HTTP/2 `BadDeviceToken`).
    #[error("device token belongs to the {token} environment, connection is {connection}")]
    WrongEnvironment {
        /// The token's environment.
        token: Environment,
        /// The provider connection's environment.
        connection: Environment,
    },
    /// The token belongs to another app (binary status 8, HTTP/2 `DeviceTokenNotForTopic`).
    #[error("device token belongs to app {token_app}, not topic {topic}")]
    WrongTopic {
        /// The app the token was minted for.
        token_app: String,
        /// The topic of the request.
        topic: String,
    },
    /// Over the configured per-token limit (HTTP/2: 429 `TooManyRequests`; binary: dropped
    /// silently, as Apple's throttling was).
    #[error("more than {pushes} pushes to this token within {per_secs} s")]
    TooManyRequests {
        /// The limit's pushes.
        pushes: u32,
        /// The limit's window, in seconds.
        per_secs: u64,
    },
    /// The app was uninstalled and the device reported it (HTTP/2: 410 `Unregistered`).
    #[error("device token is no longer active for the topic (since {at_ms} ms)")]
    Unregistered {
        /// When the device reported the app as not installed, in ms since the epoch.
        at_ms: u64,
    },
}

/// Where an accepted notification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued to the device's live session.
    Sent,
    /// Kept for an offline device.
    Stored,
    /// Not kept: the device is offline and the expiry was 0 or already past.
    Discarded,
}

/// What happened to a notification, as recorded in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written to the device's session queue; an `Acknowledged` or `NotInstalled` follows.
    Sent,
    /// The device acknowledged it.
    Acknowledged,
    /// Kept for an offline device.
    Stored,
    /// A stored notification replaced by a newer one for the same device and app.
    Superseded,
    /// Not stored or dropped from the store because its expiry passed.
    Expired,
    /// Not stored: expiry 0 and the device was offline.
    Discarded,
    /// The device reported that the app is not installed; the token is now unregistered.
    NotInstalled,
    /// Pushed to a token already unregistered.
    Unregistered,
    /// Refused by the gateway or the hub; the detail says why.
    Rejected,
    /// Over the per-token push limit; not delivered.
    Throttled,
    /// The device disconnected before acknowledging; the notification was routed again.
    Requeued,
}

/// One entry of the delivery log; also broadcast live to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device session came online.
    DeviceOnline {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Device serial number.
        serial: String,
        /// Environment of the session.
        environment: Environment,
    },
    /// A device session ended.
    DeviceOffline {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Device serial number.
        serial: String,
        /// Environment of the session.
        environment: Environment,
    },
    /// A device registered an app and got a token.
    Registered {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Device serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// Environment of the token.
        environment: Environment,
        /// The token.
        token: DeviceToken,
    },
    /// Something happened to a notification.
    Notification {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The notification's UUID (apns-id).
        apns_id: Uuid,
        /// Binary identifier as a big-endian number (0 on HTTP/2).
        identifier: u32,
        /// Target token, when the notification got far enough to have a valid one.
        token: Option<DeviceToken>,
        /// Topic of the provider connection or request.
        topic: String,
        /// The API it came through.
        api: Api,
        /// What happened.
        outcome: Outcome,
        /// Extra words (rejection reason, device serial, …).
        detail: String,
    },
}

/// A registration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The simulator holds [`MAX_TOKENS`] tokens already.
    #[error("token limit reached ({0} tokens)")]
    TooManyTokens(usize),
    /// The device has no live session (it must say hello first).
    #[error("device {0} is not connected")]
    NotConnected(String),
}

/// A live device session as the device endpoint holds it.
#[derive(Debug)]
pub struct DeviceSession {
    /// Unique per connection; distinguishes a replaced session from its successor.
    pub id: u64,
    /// Notifications to write to the device, in order. Boxed so that the queue's slots stay
    /// small: tokio allocates a block of slots per channel up front, and an idle session
    /// should cost little memory.
    pub rx: mpsc::Receiver<Box<DeviceNotification>>,
}

/// What the device answered about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceReply {
    /// Received and shown.
    Ack,
    /// The app for this token is not installed.
    NotInstalled,
}

/// The routing core. Clone it freely.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    clock: Clock,
    rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DeviceKey {
    serial: String,
    environment: Environment,
}

#[derive(Debug)]
struct TokenRecord {
    device: DeviceKey,
    app: String,
    /// Set when the device reported the app as not installed (ms since the epoch).
    unregistered_at_ms: Option<u64>,
}

#[derive(Debug)]
struct LiveSession {
    id: u64,
    tx: mpsc::Sender<Box<DeviceNotification>>,
    unacked: usize,
}

#[derive(Debug, Default)]
struct DeviceRecord {
    session: Option<LiveSession>,
    /// Store-and-forward: the newest notification per app while the device is away.
    stored: HashMap<String, Queued>,
}

/// A notification the hub holds: queued to a session, stored, or awaiting its ack.
#[derive(Debug, Clone)]
struct Queued {
    api: Api,
    token: DeviceToken,
    topic: String,
    identifier: [u8; 4],
    apns_id: Uuid,
    expiry: u32,
    priority: u8,
    push_type: Option<String>,
    collapse_id: Option<String>,
    payload: Bytes,
}

#[derive(Debug)]
struct Pending {
    device: DeviceKey,
    session: u64,
    queued: Queued,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<DeviceToken, TokenRecord>,
    /// Current token per (device, app): re-registering without a reinstall gets it again.
    registrations: HashMap<(DeviceKey, String), DeviceToken>,
    devices: HashMap<DeviceKey, DeviceRecord>,
    feedback: HashMap<(String, Environment), VecDeque<FeedbackTuple>>,
    pending: HashMap<u64, Pending>,
    next_delivery: u64,
    next_session: u64,
    log: VecDeque<Event>,
    /// Recent push times (ms) per token, kept only while a rate limit is set; at most
    /// `RateLimit::pushes` entries per token.
    recent_pushes: HashMap<DeviceToken, VecDeque<u64>>,
}

impl Hub {
    /// A hub reading time from `clock`, with no per-token push limit.
    pub fn new(clock: Clock) -> Self {
        Self::with_rate_limit(clock, None)
    }

    /// A hub that refuses pushes to one token beyond `rate_limit`.
    pub fn with_rate_limit(clock: Clock, rate_limit: Option<RateLimit>) -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        Hub {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                events,
                clock,
                rate_limit,
            }),
        }
    }

    /// The clock the hub reads (shared with the endpoints).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Live events from now on. Tests wait on these instead of sleeping.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The most recent events (up to [`EVENT_LOG_LEN`]), oldest first.
    pub fn recent_events(&self) -> Vec<Event> {
        self.lock().log.iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this file; the maps stay usable,
        // so keep serving rather than poisoning every connection.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records and broadcasts events after the lock is released.
    fn publish(&self, events: Vec<Event>) {
        Self::append_log(&mut self.lock(), &events);
        self.broadcast(events);
    }

    /// Appends events to the bounded log. Hot paths call this inside their own critical
    /// section, so that a push takes the lock once.
    fn append_log(st: &mut State, events: &[Event]) {
        for e in events {
            if st.log.len() == EVENT_LOG_LEN {
                st.log.pop_front();
            }
            st.log.push_back(e.clone());
        }
    }

    /// Sends events to live subscribers, after the lock is released.
    fn broadcast(&self, events: Vec<Event>) {
        for e in events {
            // No subscriber is fine: the log still has it.
            let _ = self.shared.events.send(e);
        }
    }

    // ----- devices -------------------------------------------------------------------

    /// A device said hello: open its session and send it anything stored for it.
    ///
    /// If the same serial already has a live session, that session's queue is closed (its
    /// task sees the end of its queue and tells the device it was replaced).
    pub fn connect_device(&self, serial: &str, environment: Environment) -> DeviceSession {
        let key = DeviceKey {
            serial: serial.to_owned(),
            environment,
        };
        let mut events = Vec::new();
        let now_ms = self.shared.clock.now_ms();
        let session = {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.next_session += 1;
            let id = st.next_session;
            let (tx, rx) = mpsc::channel(DEVICE_QUEUE);
            let record = st.devices.entry(key.clone()).or_default();
            // Dropping the old sender ends the old session's queue.
            record.session = Some(LiveSession { id, tx, unacked: 0 });
            events.push(Event::DeviceOnline {
                at_ms: now_ms,
                serial: serial.to_owned(),
                environment,
            });
            self.flush_stored(st, &key, now_ms, &mut events);
            Self::append_log(st, &events);
            DeviceSession { id, rx }
        };
        info!(serial, %environment, "device online");
        self.broadcast(events);
        session
    }

    /// Sends what is stored for a device to its live session (or back to the store if the
    /// session has no room). A stored notification whose expiry passed meanwhile is dropped,
    /// not delivered late. Caller holds the lock.
    fn flush_stored(&self, st: &mut State, key: &DeviceKey, now_ms: u64, events: &mut Vec<Event>) {
        let Some(record) = st.devices.get_mut(key) else {
            return;
        };
        if record.stored.is_empty() {
            return;
        }
        let stored: Vec<Queued> = record.stored.drain().map(|(_, q)| q).collect();
        for q in stored {
            if u64::from(q.expiry) <= now_ms / 1000 {
                events.push(notification_event(
                    now_ms,
                    &q,
                    Outcome::Expired,
                    format!("expiry {} passed while it was stored", q.expiry),
                ));
                continue;
            }
            self.route(st, key, q, events);
        }
    }

    /// A device session ended. Notifications it had not acknowledged are routed again
    /// (to a newer session of the same device, or to the store).
    pub fn disconnect_device(&self, serial: &str, environment: Environment, session: u64) {
        let key = DeviceKey {
            serial: serial.to_owned(),
            environment,
        };
        let mut events = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut ended = false;
            if let Some(record) = st.devices.get_mut(&key) {
                if record.session.as_ref().is_some_and(|s| s.id == session) {
                    record.session = None;
                    ended = true;
                }
            }
            let orphans: Vec<u64> = st
                .pending
                .iter()
                .filter(|(_, p)| p.session == session)
                .map(|(id, _)| *id)
                .collect();
            for id in orphans {
                if let Some(p) = st.pending.remove(&id) {
                    events.push(notification_event(
                        self.shared.clock.now_ms(),
                        &p.queued,
                        Outcome::Requeued,
                        format!("device {serial} disconnected before acknowledging"),
                    ));
                    self.route(st, &p.device, p.queued, &mut events);
                }
            }
            if ended {
                events.push(Event::DeviceOffline {
                    at_ms: self.shared.clock.now_ms(),
                    serial: serial.to_owned(),
                    environment,
                });
            }
            Self::append_log(st, &events);
        }
        info!(serial, %environment, "device offline");
        self.broadcast(events);
    }

    /// Registers `app` on a connected device and returns its token.
    ///
    /// The same (device, app, environment) keeps its token across reconnects; a fresh
    /// install, or a token that was reported as not installed, gets a new one.
    pub fn register(
        &self,
        serial: &str,
        environment: Environment,
        app: &str,
        fresh_install: bool,
    ) -> Result<DeviceToken, RegisterError> {
        let key = DeviceKey {
            serial: serial.to_owned(),
            environment,
        };
        let token = {
            let mut guard = self.lock();
            let st = &mut *guard;
            if !st.devices.get(&key).is_some_and(|d| d.session.is_some()) {
                return Err(RegisterError::NotConnected(serial.to_owned()));
            }
            let reg_key = (key.clone(), app.to_owned());
            let reusable = st.registrations.get(&reg_key).copied().filter(|t| {
                !fresh_install
                    && st
                        .tokens
                        .get(t)
                        .is_some_and(|r| r.unregistered_at_ms.is_none())
            });
            match reusable {
                Some(t) => t,
                None => {
                    if st.tokens.len() >= MAX_TOKENS {
                        return Err(RegisterError::TooManyTokens(MAX_TOKENS));
                    }
                    let token = loop {
                        let mut bytes = [0u8; DeviceToken::LEN];
                        rand::thread_rng().fill_bytes(&mut bytes);
                        let t = DeviceToken::from_bytes(bytes);
                        if !st.tokens.contains_key(&t) {
                            break t;
                        }
                    };
                    st.tokens.insert(
                        token,
                        TokenRecord {
                            device: key.clone(),
                            app: app.to_owned(),
                            unregistered_at_ms: None,
                        },
                    );
                    st.registrations.insert(reg_key, token);
                    token
                }
            }
        };
        info!(serial, app, %environment, %token, "registered");
        self.publish(vec![Event::Registered {
            at_ms: self.shared.clock.now_ms(),
            serial: serial.to_owned(),
            app: app.to_owned(),
            environment,
            token,
        }]);
        Ok(token)
    }

    /// The device answered a delivery. Returns false for a delivery id this session does not
    /// own (a confused or hostile device), which the caller reports.
    pub fn device_reply(&self, session: u64, delivery: u64, reply: DeviceReply) -> bool {
        let mut events = Vec::new();
        let now_ms = self.shared.clock.now_ms();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            match st.pending.get(&delivery) {
                Some(p) if p.session == session => {}
                _ => return false,
            }
            let Some(p) = st.pending.remove(&delivery) else {
                return false;
            };
            if let Some(s) = st
                .devices
                .get_mut(&p.device)
                .and_then(|d| d.session.as_mut())
                .filter(|s| s.id == session)
            {
                s.unacked = s.unacked.saturating_sub(1);
            }
            match reply {
                DeviceReply::Ack => {
                    debug!(apns_id = %p.queued.apns_id, serial = %p.device.serial, "acknowledged");
                    events.push(notification_event(
                        now_ms,
                        &p.queued,
                        Outcome::Acknowledged,
                        format!("device {}", p.device.serial),
                    ));
                }
                DeviceReply::NotInstalled => {
                    let at_ms = Self::unregister(st, p.queued.token, now_ms);
                    info!(
                        apns_id = %p.queued.apns_id,
                        token = %p.queued.token,
                        topic = %p.queued.topic,
                        "device -> app not installed: token unregistered, feedback recorded"
                    );
                    events.push(notification_event(
                        now_ms,
                        &p.queued,
                        Outcome::NotInstalled,
                        format!("device {} (unregistered at {at_ms} ms)", p.device.serial),
                    ));
                }
            }
            // A device that fell behind had further notifications stored; once its queue has
            // room again they are sent now rather than at its next reconnect.
            let caught_up = st
                .devices
                .get(&p.device)
                .and_then(|d| d.session.as_ref())
                .is_some_and(|s| {
                    s.id == session && s.tx.capacity() > 0 && s.unacked < MAX_UNACKED_PER_SESSION
                });
            if caught_up {
                self.flush_stored(st, &p.device, now_ms, &mut events);
            }
            Self::append_log(st, &events);
        }
        self.broadcast(events);
        true
    }

    /// Marks a token unregistered (once) and records a feedback tuple for its app. Returns
    /// the time the token became unregistered.
    fn unregister(st: &mut State, token: DeviceToken, now_ms: u64) -> u64 {
        let Some(record) = st.tokens.get_mut(&token) else {
            return now_ms;
        };
        let at_ms = *record.unregistered_at_ms.get_or_insert(now_ms);
        let key = (record.app.clone(), record.device.environment);
        let list = st.feedback.entry(key).or_default();
        if !list.iter().any(|t| t.token == token) {
            if list.len() >= MAX_FEEDBACK_PER_TOPIC {
                if let Some(old) = list.pop_front() {
                    warn!(token = %old.token, "feedback list full: oldest unread tuple dropped");
                }
            }
            list.push_back(FeedbackTuple {
                timestamp: (at_ms / 1000) as u32,
                token,
            });
        }
        at_ms
    }

    // ----- providers -----------------------------------------------------------------

    /// Routes a notification. Validation of the token against the request happens here,
    /// under the same lock as the routing decision, so the answer and the outcome agree.
    pub fn push(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let mut events = Vec::new();
        let now_ms = self.shared.clock.now_ms();
        let queued = Queued {
            api: req.api,
            token: req.token,
            topic: req.topic,
            identifier: req.identifier,
            apns_id: req.apns_id,
            expiry: req.expiry,
            priority: req.priority,
            push_type: req.push_type,
            collapse_id: req.collapse_id,
            // Copy out of the connection's read buffer (before taking the lock): a stored
            // slice would keep the whole buffer alive for as long as the notification waits.
            payload: Bytes::copy_from_slice(&req.payload),
        };
        let result = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let checked = Self::check_token(st, &queued, req.environment)
                .and_then(|device| self.check_rate(st, &queued.token, now_ms).map(|()| device));
            let result = match checked {
                Err(err) => {
                    let outcome = match err {
                        PushError::Unregistered { .. } => {
                            // Like Apple, a push to a gone app feeds the feedback service
                            // again (once per unread list).
                            Self::unregister(st, queued.token, now_ms);
                            Outcome::Unregistered
                        }
                        PushError::TooManyRequests { .. } => Outcome::Throttled,
                        _ => Outcome::Rejected,
                    };
                    let path = if outcome == Outcome::Rejected {
                        "rejected"
                    } else {
                        "dropped"
                    };
                    decided(&mut events, now_ms, &queued, outcome, path, err.to_string());
                    Err(err)
                }
                Ok(device) => Ok(self.route(st, &device, queued, &mut events)),
            };
            Self::append_log(st, &events);
            result
        };
        self.broadcast(events);
        result
    }

    fn check_token(
        st: &State,
        q: &Queued,
        environment: Environment,
    ) -> Result<DeviceKey, PushError> {
        let record = st.tokens.get(&q.token).ok_or(PushError::UnknownToken)?;
        if record.device.environment != environment {
            return Err(PushError::WrongEnvironment {
                token: record.device.environment,
                connection: environment,
            });
        }
        if record.app != q.topic {
            return Err(PushError::WrongTopic {
                token_app: record.app.clone(),
                topic: q.topic.clone(),
            });
        }
        if let Some(at_ms) = record.unregistered_at_ms {
            return Err(PushError::Unregistered { at_ms });
        }
        Ok(record.device.clone())
    }

    /// Counts a push against the per-token limit, if one is set.
    fn check_rate(
        &self,
        st: &mut State,
        token: &DeviceToken,
        now_ms: u64,
    ) -> Result<(), PushError> {
        let Some(limit) = self.shared.rate_limit else {
            return Ok(());
        };
        let window_ms = limit.per.as_millis() as u64;
        let times = st.recent_pushes.entry(*token).or_default();
        while times.front().is_some_and(|&t| t + window_ms <= now_ms) {
            times.pop_front();
        }
        if times.len() >= limit.pushes as usize {
            return Err(PushError::TooManyRequests {
                pushes: limit.pushes,
                per_secs: limit.per.as_secs(),
            });
        }
        times.push_back(now_ms);
        Ok(())
    }

    /// Records a notification that the gateway refused before it reached the hub (bad frame,
    /// bad header), so that the delivery log accounts for it too.
    pub fn record_rejection(
        &self,
        api: Api,
        topic: &str,
        identifier: [u8; 4],
        apns_id: Uuid,
        token: Option<DeviceToken>,
        reason: String,
    ) {
        info!(
            api = api.as_str(),
            %apns_id,
            identifier = u32::from_be_bytes(identifier),
            topic,
            path = %format_args!("provider -> {} -> rejected", api.gateway_name()),
            %reason,
        );
        self.publish(vec![Event::Notification {
            at_ms: self.shared.clock.now_ms(),
            apns_id,
            identifier: u32::from_be_bytes(identifier),
            token,
            topic: topic.to_owned(),
            api,
            outcome: Outcome::Rejected,
            detail: reason,
        }]);
    }

    /// Sends `q` to the device's live session, or stores it. Caller holds the lock.
    fn route(
        &self,
        st: &mut State,
        device: &DeviceKey,
        q: Queued,
        events: &mut Vec<Event>,
    ) -> PushOutcome {
        let now_ms = self.shared.clock.now_ms();
        let app = st
            .tokens
            .get(&q.token)
            .map(|r| r.app.clone())
            .unwrap_or_else(|| q.topic.clone());
        let delivery = st.next_delivery + 1;
        let record = st.devices.entry(device.clone()).or_default();

        // 1. Online with room: hand it to the session's queue without waiting.
        let mut queue_full = false;
        if let Some(session) = record.session.as_mut() {
            if session.unacked < MAX_UNACKED_PER_SESSION {
                let msg = Box::new(DeviceNotification {
                    delivery,
                    token: q.token,
                    identifier: q.identifier,
                    apns_id: *q.apns_id.as_bytes(),
                    expiry: q.expiry,
                    priority: q.priority,
                    push_type: q.push_type.clone(),
                    collapse_id: q.collapse_id.clone(),
                    payload: q.payload.clone(),
                });
                match session.tx.try_send(msg) {
                    Ok(()) => {
                        session.unacked += 1;
                        let session_id = session.id;
                        st.next_delivery = delivery;
                        let detail = format!("device {}", device.serial);
                        decided(events, now_ms, &q, Outcome::Sent, "device", detail);
                        st.pending.insert(
                            delivery,
                            Pending {
                                device: device.clone(),
                                session: session_id,
                                queued: q,
                            },
                        );
                        return PushOutcome::Sent;
                    }
                    Err(_) => queue_full = true,
                }
            } else {
                queue_full = true;
            }
        }

        // 2. Offline (or too far behind): store-and-forward, newest per app.
        let why = if queue_full {
            "device queue full"
        } else {
            "device offline"
        };
        if q.expiry == 0 {
            let detail = format!("{why}; expiry 0 means do not store");
            decided(events, now_ms, &q, Outcome::Discarded, "discarded", detail);
            return PushOutcome::Discarded;
        }
        if u64::from(q.expiry) <= now_ms / 1000 {
            let detail = format!("{why}; expiry {} has passed", q.expiry);
            decided(events, now_ms, &q, Outcome::Expired, "expired", detail);
            return PushOutcome::Discarded;
        }
        let detail = format!("{why}; kept until {}", q.expiry);
        decided(events, now_ms, &q, Outcome::Stored, "store", detail);
        if let Some(old) = record.stored.insert(app, q) {
            events.push(notification_event(
                now_ms,
                &old,
                Outcome::Superseded,
                "a newer notification for the same app replaced it".to_owned(),
            ));
        }
        PushOutcome::Stored
    }

    // ----- feedback ------------------------------------------------------------------

    /// Takes (and clears) the feedback tuples recorded for a topic and environment.
    pub fn take_feedback(&self, topic: &str, environment: Environment) -> Vec<FeedbackTuple> {
        let mut st = self.lock();
        st.feedback
            .remove(&(topic.to_owned(), environment))
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Puts back tuples whose delivery failed, ahead of any recorded since.
    pub fn restore_feedback(
        &self,
        topic: &str,
        environment: Environment,
        tuples: Vec<FeedbackTuple>,
    ) {
        let mut st = self.lock();
        let list = st
            .feedback
            .entry((topic.to_owned(), environment))
            .or_default();
        for t in tuples.into_iter().rev() {
            if !list.iter().any(|x| x.token == t.token) {
                list.push_front(t);
            }
        }
        while list.len() > MAX_FEEDBACK_PER_TOPIC {
            list.pop_front();
        }
    }

    /// When a token became unregistered, if it did (for tests and the control surface).
    pub fn unregistered_at(&self, token: &DeviceToken) -> Option<u64> {
        self.lock()
            .tokens
            .get(token)
            .and_then(|r| r.unregistered_at_ms)
    }
}

/// Logs a routing decision (the one info line per notification, naming its path) and
/// records its event.
fn decided(
    events: &mut Vec<Event>,
    now_ms: u64,
    q: &Queued,
    outcome: Outcome,
    to: &'static str,
    detail: String,
) {
    info!(
        api = q.api.as_str(),
        apns_id = %q.apns_id,
        id = u32::from_be_bytes(q.identifier),
        token = %q.token,
        topic = %q.topic,
        path = %format_args!("provider -> {} -> {to}", q.api.gateway_name()),
        %detail,
    );
    events.push(notification_event(now_ms, q, outcome, detail));
}

fn notification_event(at_ms: u64, q: &Queued, outcome: Outcome, detail: String) -> Event {
    Event::Notification {
        at_ms,
        apns_id: q.apns_id,
        identifier: u32::from_be_bytes(q.identifier),
        token: Some(q.token),
        topic: q.topic.clone(),
        api: q.api,
        outcome,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "com.example.app";

    fn request(token: DeviceToken, id: u32, expiry: u32) -> PushRequest {
        PushRequest {
            api: Api::Binary,
            token,
            topic: APP.to_owned(),
            environment: Environment::Sandbox,
            identifier: id.to_be_bytes(),
            apns_id: Uuid::new_v4(),
            expiry,
            priority: 10,
            push_type: None,
            collapse_id: None,
            payload: Bytes::from_static(b"{}"),
        }
    }

    fn hour_from_now(hub: &Hub) -> u32 {
        (hub.clock().now_secs() + 3600) as u32
    }

    /// A hub with one connected device holding APP; returns (hub, session, token).
    fn online() -> (Hub, DeviceSession, DeviceToken) {
        let hub = Hub::new(Clock::system());
        let session = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        (hub, session, token)
    }

    #[test]
    fn registering_needs_a_session_and_keeps_tokens_until_reinstall() {
        let hub = Hub::new(Clock::system());
        assert_eq!(
            hub.register("D1", Environment::Sandbox, APP, false),
            Err(RegisterError::NotConnected("D1".into()))
        );
        let _s = hub.connect_device("D1", Environment::Sandbox);
        let a = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        assert_eq!(hub.register("D1", Environment::Sandbox, APP, false), Ok(a));
        let other = hub
            .register("D1", Environment::Sandbox, "com.other", false)
            .unwrap();
        assert_ne!(a, other, "one token per app");
        let fresh = hub.register("D1", Environment::Sandbox, APP, true).unwrap();
        assert_ne!(a, fresh, "a reinstall gets a new token");
    }

    #[test]
    fn token_checks() {
        let (hub, _s, token) = online();
        assert_eq!(
            hub.push(request(DeviceToken::from_bytes([0; 32]), 1, 0)),
            Err(PushError::UnknownToken)
        );
        let mut wrong_env = request(token, 2, 0);
        wrong_env.environment = Environment::Production;
        assert!(matches!(
            hub.push(wrong_env),
            Err(PushError::WrongEnvironment { .. })
        ));
        let mut wrong_topic = request(token, 3, 0);
        wrong_topic.topic = "com.other".into();
        assert!(matches!(
            hub.push(wrong_topic),
            Err(PushError::WrongTopic { .. })
        ));
        let rejected = hub
            .recent_events()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Notification {
                        outcome: Outcome::Rejected,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(rejected, 3);
    }

    #[test]
    fn online_delivery_ack_and_not_installed() {
        let (hub, mut session, token) = online();
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap();
        assert_eq!(sent.identifier, 1u32.to_be_bytes());
        assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::Ack));
        // The same delivery cannot be answered twice, nor by another session.
        assert!(!hub.device_reply(session.id, sent.delivery, DeviceReply::Ack));

        assert_eq!(hub.push(request(token, 2, 0)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap();
        assert!(!hub.device_reply(session.id + 1, sent.delivery, DeviceReply::Ack));
        assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::NotInstalled));
        let at_ms = hub.unregistered_at(&token).unwrap();
        assert!(matches!(
            hub.push(request(token, 3, 0)),
            Err(PushError::Unregistered { at_ms: t }) if t == at_ms
        ));
        let tuples = hub.take_feedback(APP, Environment::Sandbox);
        assert_eq!(tuples.len(), 1, "recorded once, however often pushed");
        assert_eq!(tuples[0].token, token);
        assert_eq!(u64::from(tuples[0].timestamp), at_ms / 1000);
        assert!(hub.take_feedback(APP, Environment::Sandbox).is_empty());
    }

    #[test]
    fn offline_store_keeps_the_newest_and_honours_expiry() {
        let (hub, session, token) = online();
        hub.disconnect_device("D1", Environment::Sandbox, session.id);
        let later = hour_from_now(&hub);
        assert_eq!(hub.push(request(token, 1, later)), Ok(PushOutcome::Stored));
        assert_eq!(hub.push(request(token, 2, later)), Ok(PushOutcome::Stored));
        assert_eq!(hub.push(request(token, 3, 0)), Ok(PushOutcome::Discarded));
        let past = (hub.clock().now_secs() - 10) as u32;
        assert_eq!(
            hub.push(request(token, 4, past)),
            Ok(PushOutcome::Discarded)
        );
        let mut back = hub.connect_device("D1", Environment::Sandbox);
        let stored = back.rx.try_recv().unwrap();
        assert_eq!(stored.identifier, 2u32.to_be_bytes());
        assert!(back.rx.try_recv().is_err(), "only the newest is kept");
        let outcomes: Vec<(u32, Outcome)> = hub
            .recent_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Notification {
                    identifier,
                    outcome,
                    ..
                } => Some((identifier, outcome)),
                _ => None,
            })
            .collect();
        assert!(outcomes.contains(&(1, Outcome::Superseded)));
        assert!(outcomes.contains(&(3, Outcome::Discarded)));
        assert!(outcomes.contains(&(4, Outcome::Expired)));
    }

    #[test]
    fn stored_notification_that_expired_is_not_sent() {
        let (hub, session, token) = online();
        hub.disconnect_device("D1", Environment::Sandbox, session.id);
        let soon = (hub.clock().now_secs() + 60) as u32;
        assert_eq!(hub.push(request(token, 1, soon)), Ok(PushOutcome::Stored));
        hub.clock().advance(std::time::Duration::from_secs(120));
        let mut back = hub.connect_device("D1", Environment::Sandbox);
        assert!(back.rx.try_recv().is_err());
        assert!(hub.recent_events().iter().any(|e| matches!(
            e,
            Event::Notification {
                identifier: 1,
                outcome: Outcome::Expired,
                ..
            }
        )));
    }

    #[test]
    fn unacknowledged_deliveries_are_routed_again() {
        let (hub, mut session, token) = online();
        let later = hour_from_now(&hub);
        assert_eq!(hub.push(request(token, 1, later)), Ok(PushOutcome::Sent));
        assert!(session.rx.try_recv().is_ok());
        // The device drops before acknowledging: the notification goes to the store …
        hub.disconnect_device("D1", Environment::Sandbox, session.id);
        // … and reaches the device when it returns.
        let mut back = hub.connect_device("D1", Environment::Sandbox);
        assert_eq!(back.rx.try_recv().unwrap().identifier, 1u32.to_be_bytes());
    }

    #[test]
    fn a_replaced_session_hands_its_pending_deliveries_to_the_new_one() {
        let (hub, mut first, token) = online();
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        assert!(first.rx.try_recv().is_ok());
        let mut second = hub.connect_device("D1", Environment::Sandbox);
        // The first session's queue is closed …
        assert!(matches!(
            first.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // … and when its task ends, the unacknowledged one moves to the second.
        hub.disconnect_device("D1", Environment::Sandbox, first.id);
        assert_eq!(second.rx.try_recv().unwrap().identifier, 1u32.to_be_bytes());
    }

    #[test]
    fn a_device_that_never_acknowledges_is_bounded() {
        let (hub, _session, token) = online();
        let later = hour_from_now(&hub);
        let mut sent = 0;
        let mut stored = 0;
        for i in 0..(DEVICE_QUEUE as u32 + 10) {
            match hub.push(request(token, i, later)) {
                Ok(PushOutcome::Sent) => sent += 1,
                Ok(PushOutcome::Stored) => stored += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, DEVICE_QUEUE, "the session queue holds DEVICE_QUEUE");
        assert_eq!(stored, 10, "the rest goes to the store");
    }

    #[test]
    fn a_device_that_catches_up_gets_what_was_stored_meanwhile() {
        let (hub, mut session, token) = online();
        let later = hour_from_now(&hub);
        for i in 0..=(DEVICE_QUEUE as u32) {
            assert!(hub.push(request(token, i, later)).is_ok());
        }
        // The last one did not fit and was stored.
        let mut delivered = Vec::new();
        while let Ok(n) = session.rx.try_recv() {
            delivered.push(n);
        }
        assert_eq!(delivered.len(), DEVICE_QUEUE);
        // The device acknowledges the first: its queue has room, the stored one follows.
        assert!(hub.device_reply(session.id, delivered[0].delivery, DeviceReply::Ack));
        let next = session
            .rx
            .try_recv()
            .expect("stored notification sent on catch-up");
        assert_eq!(next.identifier, (DEVICE_QUEUE as u32).to_be_bytes());
    }

    #[test]
    fn per_token_rate_limit() {
        let limit = RateLimit {
            pushes: 2,
            per: std::time::Duration::from_secs(60),
        };
        let hub = Hub::with_rate_limit(Clock::system(), Some(limit));
        let _session = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        let other = hub
            .register("D1", Environment::Sandbox, "com.b", false)
            .unwrap();
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        assert_eq!(hub.push(request(token, 2, 0)), Ok(PushOutcome::Sent));
        assert_eq!(
            hub.push(request(token, 3, 0)),
            Err(PushError::TooManyRequests {
                pushes: 2,
                per_secs: 60
            })
        );
        // Other tokens are not affected.
        let mut to_other = request(other, 4, 0);
        to_other.topic = "com.b".into();
        assert_eq!(hub.push(to_other), Ok(PushOutcome::Sent));
        // The window slides.
        hub.clock().advance(std::time::Duration::from_secs(61));
        assert_eq!(hub.push(request(token, 5, 0)), Ok(PushOutcome::Sent));
        assert!(hub.recent_events().iter().any(|e| matches!(
            e,
            Event::Notification {
                identifier: 3,
                outcome: Outcome::Throttled,
                ..
            }
        )));
    }

    #[test]
    fn restored_feedback_comes_first_and_is_not_duplicated() {
        let (hub, mut session, token) = online();
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap();
        assert!(hub.device_reply(session.id, d.delivery, DeviceReply::NotInstalled));
        let taken = hub.take_feedback(APP, Environment::Sandbox);
        hub.restore_feedback(APP, Environment::Sandbox, taken.clone());
        hub.restore_feedback(APP, Environment::Sandbox, taken.clone());
        assert_eq!(hub.take_feedback(APP, Environment::Sandbox), taken);
    }
}
