//! The hub's state as plain data, and the rules that change it: token registration, routing,
//! store-and-forward, acknowledgements, unregistered tokens and feedback.
//!
//! Nothing here locks, awaits or reads a clock. Every rule is a method on [`State`] that is
//! given the time (`now_ms`) and returns its outcome plus the [`Event`]s it caused;
//! [`super::Hub`] runs it under its lock and publishes the events. So the rules are tested
//! with plain `#[test]`s: the one piece that wakes a task is each session's queue
//! ([`super::queue`]), whose `try_send` and `try_recv` need no runtime.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use tracing::{info, warn};
use uuid::Uuid;

use crate::protocol::device::{DeviceNotification, NotificationFields};
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::token::{push_type_of_topic, topic_suffix, AppToken, DeviceToken, TokenKind};
use crate::protocol::Environment;
use crate::settings::{RateLimit, Settings};
use crate::store::{Change, DeviceRow, FeedbackRow, Key, Row, Snapshot, StoredRow, TokenRow};

use super::events::{Api, Detail, Event, Note, Outcome, Payload, Record, ResetCounts};
use super::faults::FaultTable;
use super::logline::{reason_name, Trail};
use super::queue;
use super::rate::RateLimiter;

#[path = "virtual.rs"]
pub(super) mod fleet;

/// Capacity of each device session's delivery queue. A device that falls this far behind
/// gets further notifications through the store (newest per app), exactly as if it were
/// offline; this bounds memory per device and never blocks a provider.
pub const DEVICE_QUEUE: usize = 256;

/// Notifications sent to one session and not yet acknowledged. Past this, further
/// notifications are stored instead of sent, so a device that never acknowledges cannot
/// grow the pending table without bound.
pub const MAX_UNACKED_PER_SESSION: usize = 1024;

/// Upper bound on device tokens minted by one simulator, so that a runaway registration loop
/// cannot exhaust memory. A token is 101 bytes inline whatever its length, and each sits in
/// two maps with its device key: a million tokens costs roughly 400 MB.
pub const MAX_TOKENS: usize = 1_000_000;

/// Upper bound on unread feedback tuples per (topic, environment). Past it the oldest tuple is
/// dropped with a warning in the log: a provider that never reads feedback should not make
/// the simulator grow forever.
pub const MAX_FEEDBACK_PER_TOPIC: usize = 100_000;

/// A notification that passed its API's own checks, handed to the hub for routing.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The API it arrived on.
    pub api: Api,
    /// Target device token.
    pub token: DeviceToken,
    /// The app (bundle id) the provider is allowed to push to: from the certificate on the
    /// binary API, from `apns-topic` with any push-type suffix removed on HTTP/2. Shared: a
    /// binary connection hands every notification its certificate's one copy, and the hub's
    /// records keep it as it comes, with no copy per notification.
    pub topic: Arc<str>,
    /// Environment of the provider connection.
    pub environment: Environment,
    /// Binary identifier (opaque 4 bytes); zero on HTTP/2.
    pub identifier: [u8; 4],
    /// The notification's UUID: `apns-id` on HTTP/2, generated for binary notifications.
    pub apns_id: Uuid,
    /// UNIX seconds after which it must not be delivered, as the provider gave it:
    /// `Some(0)` = deliver now or never; `None` = no expiry given (HTTP/2 without
    /// `apns-expiration`, command 2 without item 4, command 0), which is not 0: the hub keeps
    /// it for an offline device under the default storage policy. Either way the hub keeps
    /// nothing longer than that policy (Apple: "up to 30 days", spec §3).
    pub expiry: Option<u32>,
    /// 10, 5 or 1.
    pub priority: u8,
    /// `apns-push-type` (HTTP/2 only).
    pub push_type: Option<String>,
    /// `apns-collapse-id` (HTTP/2 only).
    pub collapse_id: Option<String>,
    /// The JSON payload, already checked.
    pub payload: Bytes,
    /// Binary API: the command's bytes exactly as received, for the delivery log (which
    /// shows them labelled); `None` on HTTP/2. The hub copies them once, with the payload.
    pub frame: Option<Bytes>,
    /// The id of the fault that hit it on its way in (a delayed answer, …), if one did: its
    /// events in the delivery log name it.
    pub fault: Option<String>,
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
    /// The token is not for the push: it belongs to another app, or it is another kind of
    /// token of the app than the push type needs, e.g. a VoIP push to the ordinary token
    /// (binary status 8, HTTP/2 `DeviceTokenNotForTopic`).
    #[error("device token is {token_app}; the push is for {topic}")]
    WrongTopic {
        /// What the token is: its app and kind (`com.b's remote-notification token`).
        token_app: String,
        /// What the push is for: its app, its push type and the kind of token that needs
        /// (`com.a (alert, which needs the app's remote-notification token)`).
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

/// A registration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The simulator holds [`MAX_TOKENS`] tokens already.
    #[error("token limit reached ({0} tokens)")]
    TooManyTokens(usize),
    /// The device has no live session (it must say hello first).
    #[error("device {0} is not connected")]
    NotConnected(String),
    /// A registration bound of the settings was hit (per connection or per device, rate or
    /// count: [`Settings::max_registrations_per_connection`] and the rest of that block),
    /// said in words: the device is told `Limit` with them and its connection closes.
    #[error("registration refused: {0}")]
    Limited(String),
    /// The token was registered but the state file could not be written, so the device is
    /// not told a token that a restart might not know (the device is told `Shutdown`).
    #[error("registration not saved: {0}")]
    NotSaved(String),
}

/// A live device session as the device endpoint holds it.
#[derive(Debug)]
pub struct DeviceSession {
    /// Unique per connection; distinguishes a replaced session from its successor.
    pub id: u64,
    /// Notifications to write to the device, in order. Boxed so that the queue's slots stay
    /// small (a pointer each): an idle session should cost little memory.
    pub rx: queue::Receiver<Box<Outgoing>>,
}

/// What the device answered about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceReply {
    /// Received and shown.
    Ack,
    /// The app for this token is not installed.
    NotInstalled,
}

/// One answer of a device about the deliveries of its session, as read from it
/// ([`super::Hub::device_answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAnswer {
    /// About one delivery (the device protocol's Ack or NotInstalled).
    One {
        /// The delivery number.
        delivery: u64,
        /// What the device said.
        reply: DeviceReply,
    },
    /// Every delivery the session owes an answer for, numbered up to and including
    /// `delivery`, was received and shown (the cumulative AckThrough). Never refused: it
    /// answers what is owed, possibly nothing. Deliveries whose answer a device fault
    /// withholds or delays are passed over.
    Through {
        /// The highest delivery number answered.
        delivery: u64,
    },
}

/// The hash maps every push looks into (tokens, devices, sessions). Their keys come from
/// clients (a token in a request), so the hasher is seeded at random per process; foldhash
/// rather than std's SipHash because it costs a fraction on these short keys (Cargo.toml
/// says why this crate).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything the hub knows. Plain data: the handle in [`super`] puts it behind a mutex, and
/// every method here runs inside one critical section, so each rule sees and leaves a
/// consistent whole.
#[derive(Debug)]
pub(super) struct State {
    /// Every token ever minted and who holds it. A token reported as not installed stays,
    /// marked, so that later pushes to it are answered 410 with the time. At most
    /// [`MAX_TOKENS`] entries: registration refuses past it.
    tokens: FastMap<DeviceToken, TokenRecord>,
    /// Every device that said hello: its live session, if any, its tokens and what is
    /// stored for it. Kept after the device leaves, so that store-and-forward works; one
    /// entry per (serial, environment) seen, at most [`Settings::max_device_records`] (the
    /// one offline longest gives way) and forgotten after [`Settings::device_record_ttl`]
    /// offline.
    devices: FastMap<DeviceKey, DeviceRecord>,
    /// Every session opened and not yet ended, whether still live or already replaced by a
    /// newer connection of the same device, with the deliveries sent to it that it has not
    /// answered. Indexed by session so that a disconnect walks only what that session had,
    /// and an answer is looked up through the session that gives it. One entry per device
    /// connection the device endpoint holds (its connection limit bounds them), each with at
    /// most [`MAX_UNACKED_PER_SESSION`] deliveries: only a live session is sent more, and
    /// only below that.
    sessions: FastMap<u64, SessionRecord>,
    /// Unread feedback tuples per (topic, environment), oldest first, one per token; at most
    /// [`MAX_FEEDBACK_PER_TOPIC`] each.
    feedback: HashMap<(String, Environment), VecDeque<FeedbackTuple>>,
    /// How many notifications `devices` hold in their stores, kept with every insert and
    /// drain so that the stored gauge costs no walk over the devices.
    stored_len: usize,
    /// Feedback tuples appended since the hub last collected the count
    /// ([`State::take_feedback_recorded`]) for its metrics.
    feedback_recorded: u64,
    /// The last delivery number handed out. Numbers only grow, so a session's pending
    /// deliveries in number order are in the order they were sent.
    next_delivery: u64,
    /// The last session id handed out; ids are never reused, so a late answer or disconnect
    /// from a replaced session cannot be mistaken for its successor's.
    next_session: u64,
    /// The opt-in per-token push limit and the recent push times it counts.
    rate: RateLimiter,
    /// How long a notification may wait for its device, in seconds: the default for one
    /// without an expiry and the cap on any expiry (`Settings::storage`).
    storage_secs: u64,
    /// The faults the control API added (`hub/faults.rs`).
    pub(super) faults: FaultTable,
    /// The registration bounds and device record limits of the settings.
    bounds: Bounds,
    /// With durable state: the changes of rows the rules made since the hub last took them
    /// ([`State::take_changes`]), for the store. `None` in memory, where rules skip the
    /// work of describing rows.
    journal: Option<Vec<Change>>,
    /// When the device records were last swept for expired ones.
    last_sweep_ms: u64,
    /// The virtual fleet, if one was started (`virtual.rs`): consulted for a token this
    /// table does not hold.
    fleet: Option<Box<fleet::VirtualFleet>>,
}

/// How often the device records are swept for those offline longer than
/// [`Settings::device_record_ttl`]: a sweep walks every record, so not at every hello, and
/// an hour is nothing against a TTL of days.
const SWEEP_EVERY_MS: u64 = 3_600_000;

/// The registration bounds and device record limits, from the settings block of the same
/// names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// [`Settings::max_registrations_per_connection`].
    per_connection: u32,
    /// [`Settings::connection_registration_rate`].
    connection_rate: RateLimit,
    /// [`Settings::device_token_rate`].
    device_rate: RateLimit,
    /// [`Settings::max_apps_per_device`].
    apps_per_device: usize,
    /// [`Settings::max_unregistered_per_device`].
    unregistered_per_device: usize,
    /// [`Settings::device_record_ttl`], in ms.
    device_ttl_ms: u64,
    /// [`Settings::max_device_records`], at least 1.
    max_devices: usize,
}

impl Bounds {
    /// The bounds `settings` set.
    pub(super) fn of(settings: &Settings) -> Self {
        Bounds {
            per_connection: settings.max_registrations_per_connection,
            connection_rate: settings.connection_registration_rate,
            device_rate: settings.device_token_rate,
            apps_per_device: settings.max_apps_per_device,
            unregistered_per_device: settings.max_unregistered_per_device,
            device_ttl_ms: u64::try_from(settings.device_record_ttl.as_millis())
                .unwrap_or(u64::MAX),
            max_devices: settings.max_device_records.max(1),
        }
    }
}

/// What is left of a rate within its current window: a fixed window, restarted by the
/// first use after it ends. Two numbers, whatever the rate, so every device and connection
/// can have one.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    /// Uses left in the window.
    left: u32,
    /// When the window started (ms); 0: never used.
    since_ms: u64,
}

impl Budget {
    /// Takes one use of `limit` at `now_ms`; false when the window has none left.
    fn take(&mut self, limit: RateLimit, now_ms: u64) -> bool {
        let per_ms = u64::try_from(limit.per.as_millis()).unwrap_or(u64::MAX);
        if self.since_ms == 0 || now_ms.saturating_sub(self.since_ms) >= per_ms {
            self.since_ms = now_ms.max(1);
            self.left = limit.pushes;
        }
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

/// How long the hub may hold a notification its device cannot take now, decided once when
/// the notification arrives ([`State::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Explicit expiry 0: now or never.
    Never,
    /// Deliverable while the time (UNIX seconds) is before this.
    Until(u64),
}

impl Keep {
    /// The rule: an explicit 0 is "now or never"; no expiry is the storage policy from the
    /// arrival; any other expiry stands, capped by the policy.
    fn decide(expiry: Option<u32>, now_secs: u64, storage_secs: u64) -> Keep {
        let limit = now_secs.saturating_add(storage_secs);
        match expiry {
            Some(0) => Keep::Never,
            None => Keep::Until(limit),
            Some(at) => Keep::Until(u64::from(at).min(limit)),
        }
    }
}

/// A device is its serial number within one environment: the same serial in sandbox and
/// production is two devices with separate tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DeviceKey {
    /// The serial number the device said hello with, interned: every clone of the key and
    /// every record naming the device shares it.
    serial: Arc<str>,
    /// The environment of its connection.
    environment: Environment,
}

impl DeviceKey {
    fn new(serial: &str, environment: Environment) -> Self {
        DeviceKey {
            serial: Arc::from(serial),
            environment,
        }
    }
}

/// Who holds a token.
#[derive(Debug)]
struct TokenRecord {
    /// The device it was minted for.
    device: DeviceKey,
    /// The app (bundle id) it was minted for; a push must name it as its topic.
    app: String,
    /// Which of the app's tokens it is; a push's type must fit it.
    kind: TokenKind,
    /// Set when the device reported the app as not installed (ms since the epoch).
    unregistered_at_ms: Option<u64>,
}

/// One device's routing entry.
#[derive(Debug, Default)]
struct DeviceRecord {
    /// The live session, `None` while the device is offline. Replacing it drops the old
    /// session's sender, which ends that session's queue.
    session: Option<LiveSession>,
    /// Store-and-forward: the newest notification per app while the device is away (or too
    /// far behind). One per app the device registered.
    stored: HashMap<String, Queued>,
    /// Its current token per (app, kind): re-registering without a reinstall gets it again.
    /// At most [`Settings::max_apps_per_device`] entries.
    registered: AppTokens,
    /// Its tokens that a reinstall replaced, oldest first, kept in `tokens` so that a push
    /// to one is reported not installed and then answered 410; at most
    /// [`Settings::max_unregistered_per_device`].
    retired: VecDeque<DeviceToken>,
    /// When it last connected or left (ms): a device offline past
    /// [`Settings::device_record_ttl`] is forgotten.
    last_seen_ms: u64,
    /// The tokens it may still be minted in the current window
    /// ([`Settings::device_token_rate`]).
    mints: Budget,
}

/// A device's current token per (app, kind), in registration order. A vector searched in
/// order rather than a hash map: most devices register one or two apps, a `HashMap` takes
/// four slots (over 600 bytes) for the first, and a registration is rare next to a push
/// (which finds the token through `State::tokens`, not here). At most
/// [`Settings::max_apps_per_device`] entries, so a search is bounded.
#[derive(Debug, Default)]
struct AppTokens(Vec<(AppToken, DeviceToken)>);

impl AppTokens {
    /// Slots grown one at a time up to here (a device's first few apps cost what they
    /// hold, not the four slots a vector's first push takes), amortised beyond.
    const EXACT_UP_TO: usize = 4;

    fn get(&self, app: &AppToken) -> Option<&DeviceToken> {
        self.0.iter().find(|(a, _)| a == app).map(|(_, t)| t)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets `app`'s token, replacing the one it had.
    fn insert(&mut self, app: AppToken, token: DeviceToken) {
        if let Some(entry) = self.0.iter_mut().find(|(a, _)| *a == app) {
            entry.1 = token;
            return;
        }
        if self.0.len() < Self::EXACT_UP_TO {
            self.0.reserve_exact(1);
        }
        self.0.push((app, token));
    }

    fn retain(&mut self, mut keep: impl FnMut(&AppToken, &DeviceToken) -> bool) {
        self.0.retain(|(a, t)| keep(a, t));
    }

    fn iter(&self) -> impl Iterator<Item = (&AppToken, &DeviceToken)> {
        self.0.iter().map(|(a, t)| (a, t))
    }

    fn into_values(self) -> impl Iterator<Item = DeviceToken> {
        self.0.into_iter().map(|(_, t)| t)
    }
}

/// The sending end of a device's live session.
#[derive(Debug)]
struct LiveSession {
    /// The session's id, the key of its [`SessionRecord`].
    id: u64,
    /// Its queue, bounded by [`DEVICE_QUEUE`]; sent to with `try_send` only, never waited on.
    tx: queue::Sender<Box<Outgoing>>,
}

/// A session that has not ended yet, and what it owes an answer for.
#[derive(Debug)]
struct SessionRecord {
    /// The device it belongs to: where its unanswered deliveries go when it ends.
    device: DeviceKey,
    /// Deliveries sent to it and not yet answered, by delivery number (so in sending order).
    pending: Pending,
    /// Registrations it sent ([`Settings::max_registrations_per_connection`]).
    registrations: u32,
    /// What is left of [`Settings::connection_registration_rate`].
    budget: Budget,
}

impl SessionRecord {
    fn new(device: DeviceKey) -> Self {
        SessionRecord {
            device,
            pending: Pending::default(),
            registrations: 0,
            budget: Budget::default(),
        }
    }
}

/// The deliveries a session owes an answer for, in delivery number order. Numbers only
/// grow, so a new delivery always goes at the back, and devices answer mostly in the order
/// they were sent, at the front: a ring costs a push and a pop where a search tree paid a
/// node walk and its allocations per delivery (the hub's profile, perf-hub). An answer out
/// of order is found by binary search.
#[derive(Debug, Default)]
struct Pending {
    /// (delivery number, notification), numbers strictly increasing.
    ring: VecDeque<(u64, Queued)>,
}

impl Pending {
    /// Notes `q` as sent with `delivery`, a number above every one already here.
    fn push(&mut self, delivery: u64, q: Queued) {
        debug_assert!(self.ring.back().is_none_or(|(last, _)| *last < delivery));
        self.ring.push_back((delivery, q));
    }

    /// The index of `delivery`, if it is owed.
    fn find(&self, delivery: u64) -> Option<usize> {
        self.ring.binary_search_by_key(&delivery, |(n, _)| *n).ok()
    }

    /// Takes `delivery` out, if it is owed.
    fn remove(&mut self, delivery: u64) -> Option<Queued> {
        let at = self.find(delivery)?;
        self.ring.remove(at).map(|(_, q)| q)
    }

    /// The notification sent as `delivery`, if it is owed.
    fn get_mut(&mut self, delivery: u64) -> Option<&mut Queued> {
        let at = self.find(delivery)?;
        self.ring.get_mut(at).map(|(_, q)| q)
    }

    /// Takes out every delivery numbered up to `delivery` that `keep` does not hold back,
    /// in order, handing each to `taken`; those held back stay, in order.
    fn take_through(
        &mut self,
        delivery: u64,
        keep: impl Fn(&Queued) -> bool,
        mut taken: impl FnMut(Queued),
    ) {
        let mut held = Vec::new();
        while self.ring.front().is_some_and(|(n, _)| *n <= delivery) {
            let Some((n, q)) = self.ring.pop_front() else {
                break;
            };
            if keep(&q) {
                held.push((n, q));
            } else {
                taken(q);
            }
        }
        for entry in held.into_iter().rev() {
            self.ring.push_front(entry);
        }
    }

    fn len(&self) -> usize {
        self.ring.len()
    }

    /// How many deliveries numbered up to `delivery` are owed.
    fn owed_through(&self, delivery: u64) -> usize {
        self.ring.partition_point(|(n, _)| *n <= delivery)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The numbers owed, in order.
    #[cfg(test)]
    fn keys(&self) -> impl Iterator<Item = &u64> {
        self.ring.iter().map(|(n, _)| n)
    }

    /// The notifications owed, in sending order.
    fn into_values(self) -> impl Iterator<Item = Queued> {
        self.ring.into_iter().map(|(_, q)| q)
    }
}

/// A notification the hub holds: queued to a session, stored, or awaiting its answer. What
/// never changes is in its [`Note`], shared with its records in the delivery log.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    /// The notification itself, shared with the log.
    note: Arc<Note>,
    /// What its expiry means here: decided by [`State::push`] on arrival (until then
    /// `Never`, which nothing reads).
    keep: Keep,
    /// The id of the fault that hit it, if one did: every later event of it names the fault.
    fault: Option<Arc<str>>,
    /// Set while a device fault decides its answer (withheld, delayed: [`State::mark_fault`]):
    /// a cumulative acknowledgement ([`DeviceAnswer::Through`]) passes over it, so only its
    /// own answer, late or never, settles it. Cleared when it is routed again.
    held: bool,
    /// When the hub was handed it (a monotonic instant, not the settable clock): the start of
    /// its delivery latency, measured when the device acknowledges.
    accepted: Instant,
    /// Stored or routed again so far: its final log line's path says so.
    trail: Trail,
}

impl Queued {
    /// The hub's own copy of a request. The payload is copied out of the connection's read
    /// buffer: a stored slice would keep the whole buffer alive for as long as the
    /// notification waits.
    pub(super) fn from_request(req: PushRequest, accepted: Instant) -> Self {
        // One copy for both when the payload lies inside the frame (as the gateway's does):
        // the payload is then a range of the frame's copy.
        let (frame, payload) = match req.frame {
            Some(frame) => {
                let copy = Bytes::copy_from_slice(&frame);
                let start = (req.payload.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
                let payload = match start.checked_add(req.payload.len()) {
                    Some(end) if end <= frame.len() => Payload::InFrame { start, end },
                    _ => Payload::Own(Bytes::copy_from_slice(&req.payload)),
                };
                (Some(copy), payload)
            }
            None => (None, Payload::Own(Bytes::copy_from_slice(&req.payload))),
        };
        Queued {
            note: Arc::new(Note {
                api: req.api,
                token: req.token,
                topic: req.topic,
                identifier: req.identifier,
                apns_id: req.apns_id,
                expiry: req.expiry,
                priority: req.priority,
                push_type: req.push_type,
                collapse_id: req.collapse_id,
                payload,
                frame,
                serial: None,
            }),
            keep: Keep::Never,
            fault: req.fault.map(Arc::from),
            held: false,
            accepted,
            trail: Trail::default(),
        }
    }

    /// The app it is for and the push type that picks the kind of token. HTTP/2 names its
    /// push type (and the topic's suffix is already removed); the binary API has none, so the
    /// certificate's topic decides: `com.x.app.voip` is a VoIP push to `com.x.app`, a bare
    /// bundle id is for the ordinary remote-notification token (`alert`).
    fn intent(&self) -> (&str, &str) {
        let topic = &*self.note.topic;
        if let Some(push_type) = self.note.push_type.as_deref() {
            return (topic, push_type);
        }
        match push_type_of_topic(topic) {
            Some(push_type) => {
                let suffix = topic_suffix(push_type).map_or(0, str::len);
                let app = topic.get(..topic.len() - suffix).unwrap_or("");
                (app, push_type)
            }
            None => (topic, "alert"),
        }
    }

    /// Its record in the delivery log (its log line, if any, is written after the lock).
    fn record(&self, at_ms: u64, outcome: Outcome, detail: Detail) -> Record {
        Record::Note {
            at_ms,
            note: self.note.clone(),
            outcome,
            detail,
            fault: self.fault.clone(),
            trail: self.trail,
        }
    }

    /// Its last record: an answered notification's, moving what it shares with the log
    /// instead of counting one more reference and dropping this one.
    fn into_record(self, at_ms: u64, outcome: Outcome, detail: Detail) -> Record {
        Record::Note {
            at_ms,
            note: self.note,
            outcome,
            detail,
            fault: self.fault,
            trail: self.trail,
        }
    }

    /// Records a routing decision; its log line is written after the lock
    /// ([`super::logline`]).
    fn decided(&self, records: &mut Vec<Record>, now_ms: u64, outcome: Outcome, detail: Detail) {
        records.push(self.record(now_ms, outcome, detail));
    }

    /// Store-and-forward for a notification its device cannot take now (`why`): records
    /// `Stored` and returns the deadline it is kept until, or records `Discarded` (expiry 0)
    /// or `Expired` (the deadline has passed) and returns `None`. Real and virtual devices
    /// share it, so both store by the same rules.
    fn store_or_drop(&mut self, records: &mut Vec<Record>, now_ms: u64, why: &str) -> Option<u64> {
        let until = match self.keep {
            Keep::Never => {
                let detail = format!("{why}; expiry 0 means do not store");
                self.decided(records, now_ms, Outcome::Discarded, detail.into());
                return None;
            }
            Keep::Until(until) if until <= now_ms / 1000 => {
                let detail = format!("{why}; expiry {until} has passed");
                self.decided(records, now_ms, Outcome::Expired, detail.into());
                return None;
            }
            Keep::Until(until) => until,
        };
        let detail = format!("{why}; {}", self.storage_note(until));
        self.decided(records, now_ms, Outcome::Stored, detail.into());
        self.trail.stored = true;
        Some(until)
    }

    /// The expiry a device is shown: the deadline the hub applies (the provider's, the
    /// policy's when none was given, or the policy's cap), 0 for "now or never".
    fn device_expiry(&self) -> u32 {
        match self.keep {
            Keep::Never => 0,
            Keep::Until(at) => u32::try_from(at).unwrap_or(u32::MAX),
        }
    }

    /// How the deadline it is kept until came about, for the `stored` line.
    fn storage_note(&self, until: u64) -> String {
        match self.note.expiry {
            None => format!(
                "kept until {until}: no expiry given, so the default storage policy applies"
            ),
            Some(at) if u64::from(at) > until => {
                format!("kept until {until}: expiry {at} is capped by the storage policy")
            }
            Some(_) => format!("kept until {until}"),
        }
    }

    /// What a device session receives for it: the shared note and this delivery's number
    /// and expiry. Boxed so that the session queue's slots stay a pointer each.
    fn to_device(&self, delivery: u64) -> Box<Outgoing> {
        Box::new(Outgoing {
            delivery,
            expiry: self.device_expiry(),
            note: Arc::clone(&self.note),
        })
    }
}

/// A notification on its way to a device session: the hub's shared copy of it (a reference
/// count, so that queuing one copies neither its strings nor its payload) and what this
/// delivery of it adds.
#[derive(Debug)]
pub struct Outgoing {
    /// Simulator-wide delivery number; the device echoes it in its answer.
    pub delivery: u64,
    /// The expiry the device is told (0: now or never).
    expiry: u32,
    /// The notification.
    note: Arc<Note>,
}

impl Outgoing {
    /// The token it is for.
    pub fn token(&self) -> &DeviceToken {
        &self.note.token
    }

    /// Its Notification frame's fields, borrowed, for [`encode_notification`](crate::protocol::device::encode_notification).
    pub fn fields(&self) -> NotificationFields<'_> {
        let note = &*self.note;
        NotificationFields {
            delivery: self.delivery,
            token: &note.token,
            identifier: note.identifier,
            apns_id: *note.apns_id.as_bytes(),
            expiry: self.expiry,
            priority: note.priority,
            push_type: note.push_type.as_deref(),
            collapse_id: note.collapse_id.as_deref(),
            payload: note.payload(),
        }
    }

    /// The message a device reads for it (the frame [`Outgoing::fields`] encodes, decoded).
    pub fn to_message(&self) -> DeviceNotification {
        let f = self.fields();
        DeviceNotification {
            delivery: f.delivery,
            token: *f.token,
            identifier: f.identifier,
            apns_id: f.apns_id,
            expiry: f.expiry,
            priority: f.priority,
            push_type: f.push_type.map(str::to_owned),
            collapse_id: f.collapse_id.map(str::to_owned),
            payload: self.note.payload_ref().shared(),
        }
    }
}

impl State {
    /// An empty state, enforcing `rate_limit` per token if one is given, and keeping
    /// notifications for offline devices at most `storage` (the default for those without
    /// an expiry).
    pub(super) fn new(rate_limit: Option<RateLimit>, storage: Duration) -> Self {
        State {
            tokens: FastMap::default(),
            devices: FastMap::default(),
            sessions: FastMap::default(),
            feedback: HashMap::new(),
            stored_len: 0,
            feedback_recorded: 0,
            next_delivery: 0,
            next_session: 0,
            rate: RateLimiter::new(rate_limit),
            storage_secs: storage.as_secs(),
            faults: FaultTable::default(),
            bounds: Bounds::of(&Settings::default()),
            journal: None,
            last_sweep_ms: 0,
            fleet: None,
        }
    }

    /// The same state under the registration bounds and device record limits `bounds`.
    pub(super) fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    // ----- devices -------------------------------------------------------------------

    /// A device said hello: open its session and send it anything stored for it.
    ///
    /// If the same serial already has a live session, that session's queue is closed (its
    /// task sees the end of its queue and tells the device it was replaced). What it had not
    /// answered stays with it until its task reports the end with
    /// [`State::disconnect_device`], and then moves to this session.
    pub(super) fn connect_device(
        &mut self,
        serial: &str,
        environment: Environment,
        now_ms: u64,
    ) -> (DeviceSession, Vec<Record>) {
        let key = DeviceKey::new(serial, environment);
        self.next_session += 1;
        let id = self.next_session;
        let (tx, rx) = queue::channel(DEVICE_QUEUE);
        let mut events = Vec::new();
        // A new device makes room first: records gone for long expire, and with the table
        // full the one offline longest gives way.
        if !self.devices.contains_key(&key) {
            self.make_room(now_ms, &mut events);
        }
        let record = self.devices.entry(key.clone()).or_default();
        // Dropping the old sender ends the old session's queue.
        record.session = Some(LiveSession { id, tx });
        record.last_seen_ms = now_ms;
        self.sessions.insert(id, SessionRecord::new(key.clone()));
        self.save_device(&key, now_ms);
        events.push(Record::from(Event::DeviceOnline {
            at_ms: now_ms,
            serial: serial.to_owned(),
            environment,
        }));
        self.flush_stored(&key, now_ms, &mut events);
        (DeviceSession { id, rx }, events)
    }

    /// Sends what is stored for a device to its live session (or back to the store if the
    /// session has no room). A stored notification whose expiry passed meanwhile is dropped,
    /// not delivered late.
    fn flush_stored(&mut self, key: &DeviceKey, now_ms: u64, events: &mut Vec<Record>) {
        let Some(record) = self.devices.get_mut(key) else {
            return;
        };
        if record.stored.is_empty() {
            return;
        }
        let stored: Vec<(String, Queued)> = record.stored.drain().collect();
        self.stored_len -= stored.len();
        for (app, q) in stored {
            // Off the disk too; routing it again stores it again if the device has no room.
            self.forget_stored(key, app);
            if let Keep::Until(until) = q.keep {
                if until <= now_ms / 1000 {
                    let detail = format!("kept until {until}, which passed while it was stored");
                    events.push(q.record(now_ms, Outcome::Expired, detail.into()));
                    continue;
                }
            }
            self.route(key, q, now_ms, events);
        }
    }

    /// A device session ended. Notifications it had not acknowledged are routed again, in the
    /// order they were sent (to a newer session of the same device, or to the store). Only
    /// that session's deliveries are looked at; every other session's stay as they are.
    pub(super) fn disconnect_device(
        &mut self,
        serial: &str,
        environment: Environment,
        session: u64,
        now_ms: u64,
    ) -> Vec<Record> {
        let key = DeviceKey::new(serial, environment);
        let mut events = Vec::new();
        // 1. If it is still the device's live session, the device is offline now. (A replaced
        //    session ending leaves its successor alone.)
        let ended = match self.devices.get_mut(&key) {
            Some(record) if record.session.as_ref().is_some_and(|s| s.id == session) => {
                record.session = None;
                record.last_seen_ms = now_ms;
                true
            }
            _ => false,
        };
        if ended {
            self.save_device(&key, now_ms);
        }
        // 2. Its unanswered deliveries are routed again; the session is forgotten.
        if let Some(gone) = self.sessions.remove(&session) {
            for mut q in gone.pending.into_values() {
                q.held = false;
                q.trail = q.trail.requeued();
                let detail = format!("device {serial} disconnected before acknowledging");
                events.push(q.record(now_ms, Outcome::Requeued, detail.into()));
                self.route(&gone.device, q, now_ms, &mut events);
            }
        }
        if ended {
            events.push(
                Event::DeviceOffline {
                    at_ms: now_ms,
                    serial: serial.to_owned(),
                    environment,
                }
                .into(),
            );
        }
        events
    }

    /// Registers one kind of token of an app on a connected device and returns the token, of
    /// `token_len` bytes (clamped to 1..=[`DeviceToken::MAX_LEN`]) when one is minted.
    ///
    /// The same (device, app, environment, kind) keeps its token across reconnects; a fresh
    /// install, or a token that was reported as not installed, gets a new one. Each kind of
    /// an app gets its own token.
    pub(super) fn register(
        &mut self,
        serial: &str,
        environment: Environment,
        wanted: &AppToken,
        fresh_install: bool,
        token_len: usize,
        now_ms: u64,
    ) -> (Result<DeviceToken, RegisterError>, Vec<Record>) {
        let key = DeviceKey::new(serial, environment);
        let refused = |why: RegisterError| (Err(why), Vec::new());
        let Some(record) = self.devices.get_mut(&key) else {
            return refused(RegisterError::NotConnected(serial.to_owned()));
        };
        let Some(live) = record.session.as_ref() else {
            return refused(RegisterError::NotConnected(serial.to_owned()));
        };
        let bounds = self.bounds;
        // 1. The connection's bounds: every Register counts, whatever it asks for.
        if let Some(connection) = self.sessions.get_mut(&live.id) {
            if connection.registrations >= bounds.per_connection {
                return refused(RegisterError::Limited(format!(
                    "{} registrations on one connection (max_registrations_per_connection)",
                    bounds.per_connection
                )));
            }
            if !connection.budget.take(bounds.connection_rate, now_ms) {
                return refused(RegisterError::Limited(format!(
                    "more than {} registrations within {} s on one connection \
                     (connection_registration_rate)",
                    bounds.connection_rate.pushes,
                    bounds.connection_rate.per.as_secs()
                )));
            }
            connection.registrations += 1;
        }
        // 2. The same token again, unless the app was reinstalled or reported gone.
        let current = record.registered.get(wanted).copied();
        let reusable = current.filter(|t| {
            !fresh_install
                && self
                    .tokens
                    .get(t)
                    .is_some_and(|r| r.unregistered_at_ms.is_none())
        });
        let token = match reusable {
            Some(t) => t,
            None => {
                // 3. A new token: the device's bounds, then the simulator's.
                if current.is_none() && record.registered.len() >= bounds.apps_per_device {
                    return refused(RegisterError::Limited(format!(
                        "device {serial} holds tokens for {} apps and kinds \
                         (max_apps_per_device)",
                        bounds.apps_per_device
                    )));
                }
                if !record.mints.take(bounds.device_rate, now_ms) {
                    return refused(RegisterError::Limited(format!(
                        "more than {} new tokens within {} s for device {serial} \
                         (device_token_rate)",
                        bounds.device_rate.pushes,
                        bounds.device_rate.per.as_secs()
                    )));
                }
                if self.tokens.len() >= MAX_TOKENS {
                    return refused(RegisterError::TooManyTokens(MAX_TOKENS));
                }
                let token = self.mint_token(token_len);
                self.tokens.insert(
                    token,
                    TokenRecord {
                        device: key.clone(),
                        app: wanted.app.clone(),
                        kind: wanted.kind.clone(),
                        unregistered_at_ms: None,
                    },
                );
                if let Some(record) = self.devices.get_mut(&key) {
                    record.registered.insert(wanted.clone(), token);
                }
                self.save_token(token, true);
                // 4. The token it replaces no longer routes.
                if let Some(old) = current {
                    self.retire(&key, old, now_ms);
                }
                token
            }
        };
        let events = vec![Record::from(Event::Registered {
            at_ms: now_ms,
            serial: serial.to_owned(),
            app: wanted.app.clone(),
            kind: wanted.kind.clone(),
            environment,
            token,
        })];
        (Ok(token), events)
    }

    /// A token a newer one replaced for its (device, app, kind): a reinstall, or a
    /// registration after the app was reported gone. It no longer routes: it is unregistered
    /// from `now_ms` (a token already reported gone keeps its first time), so a push to it is
    /// answered at once, HTTP/2 410 `Unregistered` with that timestamp, the binary API
    /// silently, and records a feedback tuple (once per unread list) instead of reaching the
    /// device. The evidence (apns-spec.md): a new token is issued on install and the app must
    /// fetch it at every launch (§6), so after a reinstall the old one is inactive for the
    /// topic, which is what 410 `Unregistered` means; its timestamp is when APNs confirmed
    /// the token invalid, "stop pushing until the device registers a token later than that"
    /// (§4.5), which the new token is. Feedback entries are added when a notification could
    /// not be delivered because the app is gone (§2), so the tuple comes with the first
    /// failed push, not with the reinstall; its time is the reinstall's, later than the old
    /// token's registration and not later than the new one's, as providers compare them.
    /// The device keeps at most [`Settings::max_unregistered_per_device`] replaced tokens;
    /// past it the oldest is forgotten (a push to it: `BadDeviceToken`), so reinstalling in
    /// a loop cannot grow the token table.
    fn retire(&mut self, key: &DeviceKey, old: DeviceToken, now_ms: u64) {
        if let Some(record) = self.tokens.get_mut(&old) {
            record.unregistered_at_ms.get_or_insert(now_ms);
        }
        self.save_token(old, false);
        let Some(record) = self.devices.get_mut(key) else {
            return;
        };
        record.retired.push_back(old);
        let mut dropped = Vec::new();
        while record.retired.len() > self.bounds.unregistered_per_device {
            dropped.extend(record.retired.pop_front());
        }
        for token in dropped {
            self.tokens.remove(&token);
            self.forget_token(token);
        }
    }

    /// A random token of `len` bytes (clamped to 1..=[`DeviceToken::MAX_LEN`]) that no
    /// device holds yet.
    fn mint_token(&self, len: usize) -> DeviceToken {
        let len = len.clamp(1, DeviceToken::MAX_LEN);
        loop {
            let mut bytes = [0u8; DeviceToken::MAX_LEN];
            rand::thread_rng().fill_bytes(&mut bytes[..len]);
            let Ok(t) = DeviceToken::new(&bytes[..len]) else {
                continue;
            };
            if !self.tokens.contains_key(&t) {
                return t;
            }
        }
    }

    /// The device answered deliveries: `answers`, in the order it sent them (all those of one
    /// read, handled in one step). `acked` is told when each acknowledged notification reached
    /// the hub (its delivery latency). Returns the first single answer (delivery and reply)
    /// naming a delivery this session does not owe an answer for (another session's, one already answered, or a made-up
    /// number: a confused or hostile device), which the caller reports; the answers before it
    /// stand, those after it are not applied.
    pub(super) fn device_reply(
        &mut self,
        session: u64,
        answers: &[DeviceAnswer],
        now_ms: u64,
        mut acked: impl FnMut(Instant),
    ) -> (Result<(), (u64, DeviceReply)>, Vec<Record>) {
        let mut events = Vec::new();
        // 1. Take the answered deliveries out of the session that answers, in answer order.
        let Some(owner) = self.sessions.get_mut(&session) else {
            let refused = answers.iter().find_map(|a| match *a {
                DeviceAnswer::One { delivery, reply } => Some((delivery, reply)),
                DeviceAnswer::Through { .. } => None,
            });
            return (refused.map_or(Ok(()), Err), events);
        };
        let device = owner.device.clone();
        let mut result = Ok(());
        // Sized once, so that it does not grow under the lock: at most what the answers name,
        // and never more than is owed (each delivery is answered once).
        let most = answers
            .iter()
            .map(|a| match *a {
                DeviceAnswer::One { .. } => 1,
                DeviceAnswer::Through { delivery } => owner.pending.owed_through(delivery),
            })
            .fold(0usize, usize::saturating_add)
            .min(owner.pending.len());
        let mut answered: Vec<(Queued, DeviceReply)> = Vec::with_capacity(most);
        events.reserve(most);
        for answer in answers {
            match *answer {
                DeviceAnswer::One { delivery, reply } => match owner.pending.remove(delivery) {
                    Some(q) => answered.push((q, reply)),
                    None => {
                        result = Err((delivery, reply));
                        break;
                    }
                },
                DeviceAnswer::Through { delivery } => {
                    // Everything up to `delivery` (in sending order), except what a device
                    // fault holds: that one is answered on its own, late or never.
                    owner.pending.take_through(
                        delivery,
                        |q| q.held,
                        |q| answered.push((q, DeviceReply::Ack)),
                    );
                }
            }
        }
        // 2. Record each answer.
        for (q, reply) in answered {
            match reply {
                DeviceReply::Ack => {
                    acked(q.accepted);
                    let detail = Detail::Device(device.serial.clone());
                    events.push(q.into_record(now_ms, Outcome::Acknowledged, detail));
                }
                DeviceReply::NotInstalled => {
                    let at_ms = self.unregister(q.note.token, now_ms);
                    let detail = format!("device {} (unregistered at {at_ms} ms)", device.serial);
                    events.push(q.into_record(now_ms, Outcome::NotInstalled, detail.into()));
                }
            }
        }
        // 3. A device that fell behind had further notifications stored; once its queue has
        //    room again they are sent now rather than at its next reconnect.
        if self.has_room(&device, session) {
            self.flush_stored(&device, now_ms, &mut events);
        }
        (result, events)
    }

    /// Marks a delivery a session has not answered yet as hit by fault `id`, so that its later
    /// events (acknowledged, requeued, stored …) name the fault. False if the session owes no
    /// answer for it.
    pub(super) fn mark_fault(&mut self, session: u64, delivery: u64, id: &str) -> bool {
        let Some(q) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.pending.get_mut(delivery))
        else {
            return false;
        };
        q.fault = Some(Arc::from(id));
        q.held = true;
        true
    }

    /// How many device sessions are open (not yet ended, live or replaced).
    pub(super) fn sessions_open(&self) -> usize {
        self.sessions.len()
    }

    /// How many notifications are stored for devices now.
    pub(super) fn stored_len(&self) -> usize {
        self.stored_len + self.virtual_stored()
    }

    /// The feedback tuples appended since the last call, and the count reset.
    pub(super) fn take_feedback_recorded(&mut self) -> u64 {
        std::mem::take(&mut self.feedback_recorded)
    }

    /// Whether `session` is the device's live session and could take one more delivery.
    fn has_room(&self, device: &DeviceKey, session: u64) -> bool {
        let live = self.devices.get(device).and_then(|d| d.session.as_ref());
        let unanswered = self.sessions.get(&session).map_or(0, |s| s.pending.len());
        live.is_some_and(|s| {
            s.id == session && s.tx.capacity() > 0 && unanswered < MAX_UNACKED_PER_SESSION
        })
    }

    /// Marks a token unregistered (once) and records a feedback tuple for its topic (the
    /// app's bundle id for its ordinary token, `com.x.app.voip` for its VoIP token, …), the
    /// topic of the certificate whose feedback connection reports it. Returns the time the
    /// token became unregistered.
    fn unregister(&mut self, token: DeviceToken, now_ms: u64) -> u64 {
        let Some(record) = self.tokens.get_mut(&token) else {
            return now_ms;
        };
        let first = record.unregistered_at_ms.is_none();
        let at_ms = *record.unregistered_at_ms.get_or_insert(now_ms);
        let key = (record.kind.topic(&record.app), record.device.environment);
        let list = self.feedback.entry(key.clone()).or_default();
        let mut dropped = None;
        let mut added = None;
        if !list.iter().any(|t| t.token == token) {
            if list.len() >= MAX_FEEDBACK_PER_TOPIC {
                if let Some(old) = list.pop_front() {
                    warn!(token = %old.token, "feedback list full: oldest unread tuple dropped");
                    dropped = Some(old.token);
                }
            }
            let tuple = FeedbackTuple {
                timestamp: (at_ms / 1000) as u32,
                token,
            };
            added = Some(tuple);
            list.push_back(tuple);
            self.feedback_recorded += 1;
        }
        if first {
            let current = self.is_current(&token);
            self.save_token(token, current);
        }
        if let Some(old) = dropped {
            self.forget_feedback(&key, old);
        }
        if let Some(tuple) = added {
            self.save_feedback(&key, &tuple);
        }
        at_ms
    }

    // ----- providers -----------------------------------------------------------------

    /// Routes a notification from a provider connection in `environment`. The token is
    /// checked against the request here, with the routing decision, so the answer and the
    /// outcome agree.
    pub(super) fn push(
        &mut self,
        q: Queued,
        environment: Environment,
        now_ms: u64,
    ) -> (Result<PushOutcome, PushError>, Vec<Record>) {
        let mut events = Vec::new();
        let result = self.push_into(q, environment, now_ms, &mut events);
        (result, events)
    }

    /// [`State::push`], its records appended to `events`: the notifications of one read
    /// ([`super::Hub::push_batch`]) share one list.
    pub(super) fn push_into(
        &mut self,
        mut q: Queued,
        environment: Environment,
        now_ms: u64,
        events: &mut Vec<Record>,
    ) -> Result<PushOutcome, PushError> {
        q.keep = Keep::decide(q.note.expiry, now_ms / 1000, self.storage_secs);
        // One look-up of the token for everything: its device (whose interned serial its
        // events name) and the checks.
        let record = self.tokens.get(&q.note.token);
        // A token no device registered may be one of the virtual fleet's.
        if record.is_none() {
            if let Some(at) = self.locate_virtual(&q.note.token) {
                let (result, mut more) = self.push_virtual(q, at, environment, now_ms);
                events.append(&mut more);
                return result;
            }
        }
        if let Some(note) = Arc::get_mut(&mut q.note) {
            // `from_request` made it and nothing shares it yet, so this always happens.
            note.serial = record.map(|r| r.device.serial.clone());
        }
        let checked = State::check_token(record, &q, environment)
            .and_then(|device| self.rate.check(&q.note.token, now_ms).map(|()| device));
        match checked {
            Err(err) => {
                let outcome = match err {
                    PushError::Unregistered { .. } => {
                        // Like Apple, a push to a gone app feeds the feedback service again
                        // (once per unread list).
                        self.unregister(q.note.token, now_ms);
                        Outcome::Unregistered
                    }
                    PushError::TooManyRequests { .. } => Outcome::Throttled,
                    PushError::UnknownToken
                    | PushError::WrongEnvironment { .. }
                    | PushError::WrongTopic { .. } => Outcome::Rejected,
                };
                let detail = Detail::Refused {
                    reason: reason_name(&err),
                    text: err.to_string(),
                };
                q.decided(events, now_ms, outcome, detail);
                Err(err)
            }
            Ok(device) => Ok(self.route(&device, q, now_ms, events)),
        }
    }

    /// The device a push may go to, or why it may not; `record`: who holds its token, if anyone.
    fn check_token(
        record: Option<&TokenRecord>,
        q: &Queued,
        environment: Environment,
    ) -> Result<DeviceKey, PushError> {
        let record = record.ok_or(PushError::UnknownToken)?;
        if record.device.environment != environment {
            return Err(PushError::WrongEnvironment {
                token: record.device.environment,
                connection: environment,
            });
        }
        let (app, push_type) = q.intent();
        if record.app != app || !record.kind.accepts(push_type) {
            let needs = TokenKind::needed_by(push_type).unwrap_or("token");
            return Err(PushError::WrongTopic {
                token_app: format!("{}'s {}", record.app, record.kind.describe()),
                topic: format!("{app} ({push_type}, which needs the app's {needs})"),
            });
        }
        if let Some(at_ms) = record.unregistered_at_ms {
            return Err(PushError::Unregistered { at_ms });
        }
        Ok(record.device.clone())
    }

    /// Sends `q` to the device's live session, or stores it.
    fn route(
        &mut self,
        device: &DeviceKey,
        mut q: Queued,
        now_ms: u64,
        events: &mut Vec<Record>,
    ) -> PushOutcome {
        let record = match self.devices.get_mut(device) {
            Some(record) => record,
            None => self.devices.entry(device.clone()).or_default(),
        };

        // 1. Online with room: hand it to the session's queue without waiting, and note it
        //    with the session as owed an answer.
        let mut queue_full = false;
        if let Some(live) = record.session.as_ref() {
            let session = self
                .sessions
                .entry(live.id)
                .or_insert_with(|| SessionRecord::new(device.clone()));
            if session.pending.len() < MAX_UNACKED_PER_SESSION {
                let delivery = self.next_delivery + 1;
                match live.tx.try_send(q.to_device(delivery)) {
                    Ok(()) => {
                        self.next_delivery = delivery;
                        let detail = Detail::Device(device.serial.clone());
                        q.decided(events, now_ms, Outcome::Sent, detail);
                        session.pending.push(delivery, q);
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
        let Some(until) = q.store_or_drop(events, now_ms, why) else {
            return PushOutcome::Discarded;
        };
        let app = self
            .tokens
            .get(&q.note.token)
            .map_or_else(|| q.note.topic.to_string(), |r| r.app.clone());
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Put(Row::Stored(Box::new(stored_row(
                device, &app, &q, until,
            )))));
        }
        match record.stored.insert(app, q) {
            Some(old) => {
                let detail = "a newer notification for the same app replaced it".to_owned();
                events.push(old.record(now_ms, Outcome::Superseded, detail.into()));
            }
            None => self.stored_len += 1,
        }
        PushOutcome::Stored
    }

    // ----- feedback ------------------------------------------------------------------

    /// Takes (and clears) the feedback tuples recorded for a topic and environment.
    pub(super) fn take_feedback(
        &mut self,
        topic: &str,
        environment: Environment,
    ) -> Vec<FeedbackTuple> {
        let key = (topic.to_owned(), environment);
        let taken: Vec<FeedbackTuple> = self
            .feedback
            .remove(&key)
            .map(Vec::from)
            .unwrap_or_default();
        for tuple in &taken {
            self.forget_feedback(&key, tuple.token);
        }
        taken
    }

    /// Puts back tuples whose delivery failed, ahead of any recorded since.
    pub(super) fn restore_feedback(
        &mut self,
        topic: &str,
        environment: Environment,
        tuples: Vec<FeedbackTuple>,
    ) {
        let key = (topic.to_owned(), environment);
        let list = self.feedback.entry(key.clone()).or_default();
        let mut put = Vec::new();
        for t in tuples.into_iter().rev() {
            if !list.iter().any(|x| x.token == t.token) {
                put.push(t);
                list.push_front(t);
            }
        }
        let mut dropped = Vec::new();
        while list.len() > MAX_FEEDBACK_PER_TOPIC {
            dropped.extend(list.pop_front().map(|t| t.token));
        }
        for tuple in &put {
            self.save_feedback(&key, tuple);
        }
        for token in dropped {
            self.forget_feedback(&key, token);
        }
    }

    /// The unread tuples of a topic and environment, oldest first, not cleared.
    pub(super) fn peek_feedback(
        &self,
        topic: &str,
        environment: Environment,
    ) -> Vec<FeedbackTuple> {
        self.feedback
            .get(&(topic.to_owned(), environment))
            .map(|tuples| tuples.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Back to an empty world, except for the devices online now: stored notifications,
    /// feedback lists, unregistered tokens and the rate limit's history are cleared, and
    /// devices that are offline are forgotten with their tokens. An online device keeps its
    /// session, its deliveries awaiting an answer, and the tokens it registered (those not
    /// unregistered). A forgotten token is unknown from now on: a push to it is refused like
    /// one to a token no device ever held (`BadDeviceToken`, binary status 8). The caller
    /// clears the log.
    pub(super) fn reset(&mut self) -> ResetCounts {
        let mut counts = ResetCounts {
            stored: self.stored_len as u64 + self.reset_virtual(),
            feedback: self.feedback.values().map(|l| l.len() as u64).sum(),
            rate_limited: self.rate.clear(),
            faults: self.faults.clear().len() as u64,
            ..ResetCounts::default()
        };
        // What leaves the disk with it, described before the maps are cleared.
        if let Some(journal) = self.journal.as_mut() {
            for ((topic, environment), list) in &self.feedback {
                for tuple in list {
                    let key = feedback_key(topic, *environment, tuple.token);
                    journal.push(Change::Delete(key));
                }
            }
            for (device, record) in &self.devices {
                for app in record.stored.keys() {
                    journal.push(Change::Delete(stored_key(device, app)));
                }
                if record.session.is_none() {
                    journal.push(Change::Delete(device_key(device)));
                }
            }
        }
        self.feedback.clear();
        self.stored_len = 0;
        let before = self.devices.len();
        self.devices.retain(|_, d| d.session.is_some());
        for record in self.devices.values_mut() {
            record.stored.clear();
        }
        counts.offline_devices = (before - self.devices.len()) as u64;
        let devices = &self.devices;
        let mut unregistered = 0;
        let tokens_before = self.tokens.len();
        let mut forgotten = Vec::new();
        self.tokens.retain(|token, r| {
            let keep = if r.unregistered_at_ms.is_some() {
                unregistered += 1;
                false
            } else {
                devices.contains_key(&r.device)
            };
            if !keep {
                forgotten.push(*token);
            }
            keep
        });
        counts.unregistered = unregistered;
        counts.tokens = (tokens_before - self.tokens.len()) as u64 - unregistered;
        let tokens = &self.tokens;
        for record in self.devices.values_mut() {
            record.registered.retain(|_, t| tokens.contains_key(t));
            record.retired.retain(|t| tokens.contains_key(t));
        }
        for token in forgotten {
            self.forget_token(token);
        }
        counts
    }

    /// The serial of the device `token` was minted for.
    pub(super) fn token_serial(&self, token: &DeviceToken) -> Option<String> {
        self.tokens
            .get(token)
            .map(|r| r.device.serial.to_string())
            .or_else(|| self.virtual_owner(token).map(|o| o.serial))
    }

    /// When a token became unregistered, if it did.
    pub(super) fn unregistered_at(&self, token: &DeviceToken) -> Option<u64> {
        self.tokens.get(token).and_then(|r| r.unregistered_at_ms)
    }

    /// Who holds `token`: its device, app and kind, and whether it is still registered.
    /// Whether any device with one of these serials has a live session.
    pub(super) fn any_online(&self, serials: &std::collections::HashSet<String>) -> bool {
        self.devices
            .iter()
            .any(|(key, d)| d.session.is_some() && serials.contains(&*key.serial))
    }

    pub(super) fn token_owner(&self, token: &DeviceToken) -> Option<TokenOwner> {
        self.tokens
            .get(token)
            .map(|r| TokenOwner {
                serial: r.device.serial.to_string(),
                environment: r.device.environment,
                held: AppToken::new(r.app.clone(), r.kind.clone()),
                unregistered: r.unregistered_at_ms.is_some(),
            })
            .or_else(|| self.virtual_owner(token))
    }

    /// Every device that said hello, sorted by serial then environment, at most `max`:
    /// whether it is online and its current tokens that were not reported as not installed.
    pub(super) fn devices(&self, max: usize) -> Vec<KnownDevice> {
        let mut keys: Vec<&DeviceKey> = self.devices.keys().collect();
        keys.sort_by(|a, b| {
            (&a.serial, a.environment.as_str()).cmp(&(&b.serial, b.environment.as_str()))
        });
        keys.truncate(max);
        let mut out: Vec<KnownDevice> = keys
            .iter()
            .map(|key| KnownDevice {
                serial: key.serial.to_string(),
                environment: key.environment,
                online: self.devices[*key].session.is_some(),
                tokens: Vec::new(),
            })
            .collect();
        for (key, device) in keys.iter().zip(&mut out) {
            for (held, token) in self.devices[*key].registered.iter() {
                let live = self
                    .tokens
                    .get(token)
                    .is_some_and(|r| r.unregistered_at_ms.is_none());
                if live {
                    device.tokens.push((held.clone(), *token));
                }
            }
        }
        for device in &mut out {
            device.tokens.sort();
        }
        out
    }
}

// ----- device records, and durable state ---------------------------------------------------

impl State {
    /// Makes room for a new device record: every so often ([`SWEEP_EVERY_MS`]) the records
    /// offline longer than [`Settings::device_record_ttl`] are forgotten, and with the table
    /// full the oldest offline hundredth of it is, in one walk (so a flood of new serials
    /// costs one walk per hundred of them, not one each).
    fn make_room(&mut self, now_ms: u64, events: &mut Vec<Record>) {
        let full = self.devices.len() >= self.bounds.max_devices;
        if !full && now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        if now_ms.saturating_sub(self.last_sweep_ms) >= SWEEP_EVERY_MS {
            self.last_sweep_ms = now_ms;
            let ttl = self.bounds.device_ttl_ms;
            let expired: Vec<DeviceKey> = self
                .devices
                .iter()
                .filter(|(_, d)| {
                    d.session.is_none() && now_ms.saturating_sub(d.last_seen_ms) >= ttl
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !expired.is_empty() {
                info!(
                    devices = expired.len(),
                    "device records offline longer than device_record_ttl forgotten"
                );
            }
            for key in expired {
                self.forget_device(
                    &key,
                    now_ms,
                    "offline longer than device_record_ttl",
                    events,
                );
            }
        }
        if self.devices.len() >= self.bounds.max_devices {
            let mut offline: Vec<(u64, DeviceKey)> = self
                .devices
                .iter()
                .filter(|(_, d)| d.session.is_none())
                .map(|(k, d)| (d.last_seen_ms, k.clone()))
                .collect();
            if offline.is_empty() {
                // Every record is online: the connection limit bounds them.
                return;
            }
            let evict = (self.bounds.max_devices / 100).clamp(1, offline.len());
            if offline.len() > evict {
                offline.select_nth_unstable_by_key(evict - 1, |(seen, _)| *seen);
                offline.truncate(evict);
            }
            warn!(
                devices = offline.len(),
                max_device_records = self.bounds.max_device_records(),
                "device table full: the records offline longest are forgotten"
            );
            for (_, key) in offline {
                let why = "the device table was full (max_device_records), it was offline longest";
                self.forget_device(&key, now_ms, why, events);
            }
        }
    }

    /// Forgets an offline device: its record, its tokens (a push to one is refused like one
    /// to a token no device holds) and what is stored for it (recorded as expired, `why`).
    fn forget_device(&mut self, key: &DeviceKey, now_ms: u64, why: &str, events: &mut Vec<Record>) {
        let Some(record) = self.devices.remove(key) else {
            return;
        };
        for (app, q) in record.stored {
            self.stored_len -= 1;
            let detail = format!("device {} forgotten: {why}", key.serial);
            events.push(q.record(now_ms, Outcome::Expired, detail.into()));
            self.forget_stored(key, app);
        }
        for token in record.registered.into_values().chain(record.retired) {
            self.tokens.remove(&token);
            self.forget_token(token);
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Delete(device_key(key)));
        }
    }

    /// From now on, rules describe the rows they change, for the store
    /// ([`State::take_changes`]).
    pub(super) fn durable(mut self) -> Self {
        self.journal = Some(Vec::new());
        self
    }

    /// The row changes since the last call (none in memory).
    pub(super) fn take_changes(&mut self) -> Vec<Change> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Fills an empty state from what the state file held, `now_ms` being the time of the
    /// restart: devices (all offline now), tokens with their unregistration times, unread
    /// feedback and stored notifications. A row that does not read (an unknown environment,
    /// a token of a bad length) is an error naming it: the file is corrupt, and guessing
    /// would route to the wrong device.
    pub(super) fn restore(&mut self, snapshot: Snapshot, now_ms: u64) -> Result<(), String> {
        let env = |text: &str| {
            Environment::from_str(text).map_err(|_| format!("unknown environment {text:?}"))
        };
        let token_of = |bytes: &[u8]| {
            DeviceToken::new(bytes).map_err(|e| format!("token {}: {e}", hex::encode(bytes)))
        };
        for row in snapshot.devices {
            let key = DeviceKey::new(&row.serial, env(&row.environment)?);
            let record = self.devices.entry(key).or_default();
            record.last_seen_ms = row.last_seen_ms;
        }
        let mut retired: Vec<(u64, DeviceKey, DeviceToken)> = Vec::new();
        for row in snapshot.tokens {
            let token = token_of(&row.token)?;
            let kind = TokenKind::from_str(&row.kind)
                .map_err(|e| format!("token {token}: kind {:?}: {e}", row.kind))?;
            let key = DeviceKey::new(&row.serial, env(&row.environment)?);
            let record = self
                .devices
                .entry(key.clone())
                .or_insert_with(|| DeviceRecord {
                    last_seen_ms: now_ms,
                    ..DeviceRecord::default()
                });
            if row.current {
                record
                    .registered
                    .insert(AppToken::new(row.app.clone(), kind.clone()), token);
            } else {
                // Replaced: kept in the order it was reported gone (never reported: first).
                retired.push((row.unregistered_at_ms.unwrap_or(0), key.clone(), token));
            }
            self.tokens.insert(
                token,
                TokenRecord {
                    device: key,
                    app: row.app,
                    kind,
                    unregistered_at_ms: row.unregistered_at_ms,
                },
            );
        }
        retired.sort_by_key(|(at, _, _)| *at);
        for (_, key, token) in retired {
            if let Some(record) = self.devices.get_mut(&key) {
                record.retired.push_back(token);
            }
        }
        for row in snapshot.feedback {
            let tuple = FeedbackTuple {
                timestamp: row.timestamp,
                token: token_of(&row.token)?,
            };
            let list = self
                .feedback
                .entry((row.topic, env(&row.environment)?))
                .or_default();
            if list.len() < MAX_FEEDBACK_PER_TOPIC {
                list.push_back(tuple);
            }
        }
        for row in snapshot.stored {
            let key = DeviceKey::new(&row.serial, env(&row.environment)?);
            let api = match row.api.as_str() {
                "binary" => Api::Binary,
                "http2" => Api::Http2,
                other => return Err(format!("stored notification: unknown api {other:?}")),
            };
            let record = self
                .devices
                .entry(key.clone())
                .or_insert_with(|| DeviceRecord {
                    last_seen_ms: now_ms,
                    ..DeviceRecord::default()
                });
            let q = Queued {
                note: Arc::new(Note {
                    api,
                    token: token_of(&row.token)?,
                    topic: Arc::from(row.topic),
                    identifier: row.identifier,
                    apns_id: Uuid::from_bytes(row.apns_id),
                    expiry: row.expiry,
                    priority: row.priority,
                    push_type: row.push_type,
                    collapse_id: row.collapse_id,
                    payload: Payload::Own(Bytes::from(row.payload)),
                    frame: row.frame.map(Bytes::from),
                    serial: Some(key.serial.clone()),
                }),
                keep: Keep::Until(row.keep_until),
                fault: row.fault.map(Arc::from),
                held: false,
                accepted: Instant::now(),
                // Restored from the store: its line will say it waited there.
                trail: Trail {
                    stored: true,
                    ..Trail::default()
                },
            };
            if record.stored.insert(row.app, q).is_none() {
                self.stored_len += 1;
            }
        }
        Ok(())
    }

    /// Whether `token` is its (device, app, kind)'s current token.
    fn is_current(&self, token: &DeviceToken) -> bool {
        self.tokens.get(token).is_some_and(|r| {
            self.devices.get(&r.device).is_some_and(|d| {
                d.registered
                    .get(&AppToken::new(r.app.clone(), r.kind.clone()))
                    .is_some_and(|t| t == token)
            })
        })
    }

    /// Journals a device's row.
    fn save_device(&mut self, key: &DeviceKey, now_ms: u64) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Put(Row::Device(DeviceRow {
                serial: key.serial.to_string(),
                environment: key.environment.as_str().to_owned(),
                last_seen_ms: now_ms,
            })));
        }
    }

    /// Journals a token's row as it is now in `tokens`.
    fn save_token(&mut self, token: DeviceToken, current: bool) {
        let (Some(journal), Some(r)) = (self.journal.as_mut(), self.tokens.get(&token)) else {
            return;
        };
        journal.push(Change::Put(Row::Token(TokenRow {
            token: token.as_bytes().to_vec(),
            serial: r.device.serial.to_string(),
            environment: r.device.environment.as_str().to_owned(),
            app: r.app.clone(),
            kind: r.kind.to_string(),
            current,
            unregistered_at_ms: r.unregistered_at_ms,
        })));
    }

    /// Journals that a token is forgotten.
    fn forget_token(&mut self, token: DeviceToken) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Delete(Key::Token(token.as_bytes().to_vec())));
        }
    }

    /// Journals that nothing is stored for a device's app any more.
    fn forget_stored(&mut self, device: &DeviceKey, app: String) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Delete(stored_key(device, &app)));
        }
    }

    /// Journals an unread feedback tuple of a (topic, environment).
    fn save_feedback(&mut self, key: &(String, Environment), tuple: &FeedbackTuple) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Put(Row::Feedback(FeedbackRow {
                topic: key.0.clone(),
                environment: key.1.as_str().to_owned(),
                token: tuple.token.as_bytes().to_vec(),
                timestamp: tuple.timestamp,
            })));
        }
    }

    /// Journals that a feedback tuple was read or dropped.
    fn forget_feedback(&mut self, key: &(String, Environment), token: DeviceToken) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Change::Delete(feedback_key(&key.0, key.1, token)));
        }
    }
}

impl Bounds {
    /// [`Settings::max_device_records`], for log lines.
    fn max_device_records(&self) -> usize {
        self.max_devices
    }
}

/// The store's key of a device's row.
fn device_key(device: &DeviceKey) -> Key {
    Key::Device(
        device.serial.to_string(),
        device.environment.as_str().to_owned(),
    )
}

/// The store's key of what is stored for a device's app.
fn stored_key(device: &DeviceKey, app: &str) -> Key {
    Key::Stored(
        device.serial.to_string(),
        device.environment.as_str().to_owned(),
        app.to_owned(),
    )
}

/// The store's key of a feedback tuple.
fn feedback_key(topic: &str, environment: Environment, token: DeviceToken) -> Key {
    Key::Feedback(
        topic.to_owned(),
        environment.as_str().to_owned(),
        token.as_bytes().to_vec(),
    )
}

/// The store's row of a notification stored for `device`'s `app`, kept until `until`.
fn stored_row(device: &DeviceKey, app: &str, q: &Queued, until: u64) -> StoredRow {
    let note = &*q.note;
    StoredRow {
        serial: device.serial.to_string(),
        environment: device.environment.as_str().to_owned(),
        app: app.to_owned(),
        api: note.api.as_str().to_owned(),
        token: note.token.as_bytes().to_vec(),
        topic: note.topic.to_string(),
        identifier: note.identifier,
        apns_id: *note.apns_id.as_bytes(),
        expiry: note.expiry,
        keep_until: until,
        priority: note.priority,
        push_type: note.push_type.clone(),
        collapse_id: note.collapse_id.clone(),
        payload: note.payload().to_vec(),
        frame: note.frame.as_ref().map(|f| f.to_vec()),
        fault: q.fault.as_deref().map(str::to_owned),
    }
}

/// Who holds a token, as `Hub::token_owner` reads it (for the control API's test push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The serial of the device it was minted for.
    pub serial: String,
    /// Its environment.
    pub environment: Environment,
    /// The app and kind it was minted for.
    pub held: AppToken,
    /// True once the device reported the app as not installed.
    pub unregistered: bool,
}

/// A device the hub knows, as `Hub::devices` lists it (for `GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    /// The serial it said hello with.
    pub serial: String,
    /// The environment of its connection.
    pub environment: Environment,
    /// Whether it has a live session now.
    pub online: bool,
    /// Its current tokens, by app and kind, minus those reported as not installed.
    pub tokens: Vec<(AppToken, DeviceToken)>,
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    /// The app every test device registers.
    pub(in crate::hub) const APP: &str = "com.example.app";
    const SANDBOX: Environment = Environment::Sandbox;
    /// Apple's policy: 30 days.
    const STORAGE: Duration = Duration::from_secs(30 * 86_400);

    /// The state plus what the handle would add: a time to give each rule, and the log.
    struct World {
        st: State,
        now_ms: u64,
        log: Vec<Event>,
    }

    impl World {
        fn new(rate_limit: Option<RateLimit>) -> Self {
            World {
                st: State::new(rate_limit, STORAGE),
                now_ms: 1_700_000_000_000,
                log: Vec::new(),
            }
        }

        fn now_secs(&self) -> u32 {
            (self.now_ms / 1000) as u32
        }

        fn hour_from_now(&self) -> u32 {
            self.now_secs() + 3600
        }

        fn connect(&mut self, serial: &str) -> DeviceSession {
            let (session, events) = self.st.connect_device(serial, SANDBOX, self.now_ms);
            self.log.extend(events.iter().map(Record::event));
            session
        }

        /// The events of this disconnect alone.
        fn disconnect(&mut self, serial: &str, session: u64) -> Vec<Event> {
            let events = self
                .st
                .disconnect_device(serial, SANDBOX, session, self.now_ms);
            let events: Vec<Event> = events.iter().map(Record::event).collect();
            self.log.extend(events.iter().cloned());
            events
        }

        fn register(
            &mut self,
            serial: &str,
            app: &str,
            fresh: bool,
        ) -> Result<DeviceToken, RegisterError> {
            self.register_kind(serial, &AppToken::from(app), fresh)
        }

        /// Registers APP's PushKit VoIP token on a connected device.
        fn register_voip(&mut self, serial: &str) -> DeviceToken {
            self.register_kind(serial, &AppToken::new(APP, TokenKind::Voip), false)
                .unwrap()
        }

        fn register_kind(
            &mut self,
            serial: &str,
            wanted: &AppToken,
            fresh: bool,
        ) -> Result<DeviceToken, RegisterError> {
            let (token, events) = self.st.register(
                serial,
                SANDBOX,
                wanted,
                fresh,
                DeviceToken::LEN,
                self.now_ms,
            );
            self.log.extend(events.iter().map(Record::event));
            token
        }

        fn push(&mut self, req: PushRequest) -> Result<PushOutcome, PushError> {
            let environment = req.environment;
            let queued = Queued::from_request(req, Instant::now());
            let (outcome, events) = self.st.push(queued, environment, self.now_ms);
            self.log.extend(events.iter().map(Record::event));
            outcome
        }

        fn reply(&mut self, session: u64, delivery: u64, reply: DeviceReply) -> bool {
            let answer = DeviceAnswer::One { delivery, reply };
            let (owned, events) = self
                .st
                .device_reply(session, &[answer], self.now_ms, |_| {});
            self.log.extend(events.iter().map(Record::event));
            owned.is_ok()
        }

        /// (identifier, outcome) of every notification event logged so far.
        fn outcomes(&self) -> Vec<(u32, Outcome)> {
            notification_outcomes(&self.log)
        }
    }

    pub(in crate::hub) fn notification_outcomes(events: &[Event]) -> Vec<(u32, Outcome)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Notification {
                    identifier,
                    outcome,
                    ..
                } => Some((*identifier, *outcome)),
                _ => None,
            })
            .collect()
    }

    /// A sandbox push of `{}` to APP.
    pub(in crate::hub) fn request(token: DeviceToken, id: u32, expiry: u32) -> PushRequest {
        PushRequest {
            api: Api::Binary,
            token,
            topic: APP.into(),
            environment: SANDBOX,
            identifier: id.to_be_bytes(),
            apns_id: Uuid::new_v4(),
            expiry: Some(expiry),
            priority: 10,
            push_type: None,
            collapse_id: None,
            payload: Bytes::from_static(b"{}"),
            frame: None,
            fault: None,
        }
    }

    /// A world with one connected device holding APP; returns (world, session, token).
    fn online() -> (World, DeviceSession, DeviceToken) {
        let mut w = World::new(None);
        let session = w.connect("D1");
        let token = w.register("D1", APP, false).unwrap();
        (w, session, token)
    }

    /// Everything queued to a session so far.
    fn drain(session: &mut DeviceSession) -> Vec<DeviceNotification> {
        std::iter::from_fn(|| session.rx.try_recv().ok().map(|n| n.to_message())).collect()
    }

    #[test]
    fn a_payload_inside_its_frame_is_held_as_a_range_of_the_one_copy_and_reads_whole() {
        let payload = br#"{"aps":{"alert":"hi"}}"#;
        // A frame with the payload in its middle, as the binary gateway hands them over.
        let frame = Bytes::from([&[2u8, 0, 0, 0, 9][..], payload, &[7, 7]].concat());
        let inside = frame.slice(5..5 + payload.len());
        let q = Queued::from_request(
            PushRequest {
                payload: inside,
                frame: Some(frame.clone()),
                ..request(DeviceToken::from_bytes([1; 32]), 1, 0)
            },
            Instant::now(),
        );
        let within = 5..5 + payload.len();
        assert!(
            matches!(q.note.payload, Payload::InFrame { start, end } if (start..end) == within),
            "{:?}",
            q.note.payload
        );
        assert_eq!(
            q.note.frame.as_deref(),
            Some(&frame[..]),
            "the frame is copied whole"
        );
        assert_eq!(q.note.payload(), payload);
        let out = q.to_device(3);
        assert_eq!(out.fields().payload, payload, "the device frame carries it");
        assert_eq!(out.to_message().payload, &payload[..]);
        assert_eq!(out.to_message().delivery, 3);
        // An event shares it as the payload alone.
        let event = q
            .record(0, Outcome::Sent, Detail::Text(String::new()))
            .event();
        let Event::Notification {
            payload: Some(shared),
            ..
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(shared, &payload[..]);

        // A payload that is not a part of the frame gets its own copy.
        let q = Queued::from_request(
            PushRequest {
                payload: Bytes::from_static(b"{}"),
                frame: Some(frame),
                ..request(DeviceToken::from_bytes([1; 32]), 2, 0)
            },
            Instant::now(),
        );
        assert!(
            matches!(q.note.payload, Payload::Own(_)),
            "{:?}",
            q.note.payload
        );
        assert_eq!(q.note.payload(), b"{}");
        assert_eq!(q.to_device(4).fields().payload, b"{}");
    }

    #[test]
    fn one_read_of_answers_mixes_cumulative_and_single_ones_in_order_and_stops_at_an_unowed_one() {
        let (mut w, mut session, token) = online();
        for id in 1..=6 {
            assert_eq!(w.push(request(token, id, 0)), Ok(PushOutcome::Sent));
        }
        let d: Vec<u64> = drain(&mut session).iter().map(|n| n.delivery).collect();
        assert_eq!(d.len(), 6);
        let sent = w.outcomes();
        let answers = [
            // 4 answered on its own before the cumulative answer that passes it.
            DeviceAnswer::One {
                delivery: d[3],
                reply: DeviceReply::Ack,
            },
            // 1 and 2 (4 is answered already, 3 is not owed by "through 2").
            DeviceAnswer::Through { delivery: d[1] },
            DeviceAnswer::One {
                delivery: d[4],
                reply: DeviceReply::NotInstalled,
            },
            // 2 again: not owed any more, so refused, and what follows is not applied.
            DeviceAnswer::One {
                delivery: d[1],
                reply: DeviceReply::Ack,
            },
            DeviceAnswer::Through { delivery: d[5] },
        ];
        let mut latencies = 0;
        let (result, events) =
            w.st.device_reply(session.id, &answers, w.now_ms, |_| latencies += 1);
        assert_eq!(result, Err((d[1], DeviceReply::Ack)));
        assert_eq!(latencies, 3, "one latency per acknowledgement");
        let answered = notification_outcomes(&events.iter().map(Record::event).collect::<Vec<_>>());
        assert_eq!(
            answered,
            [
                (4, Outcome::Acknowledged),
                (1, Outcome::Acknowledged),
                (2, Outcome::Acknowledged),
                (5, Outcome::NotInstalled),
            ]
        );
        assert_eq!(sent.len(), 6);
        let owed: Vec<u64> = w.st.sessions[&session.id].pending.keys().copied().collect();
        assert_eq!(owed, [d[2], d[5]], "3 and 6 are still owed");
        // The next read's cumulative answer takes what is left.
        let through = [DeviceAnswer::Through { delivery: d[5] }];
        let (result, events) = w.st.device_reply(session.id, &through, w.now_ms, |_| {});
        assert_eq!(result, Ok(()));
        let answered = notification_outcomes(&events.iter().map(Record::event).collect::<Vec<_>>());
        assert_eq!(
            answered,
            [(3, Outcome::Acknowledged), (6, Outcome::Acknowledged)]
        );
        assert!(w.st.sessions[&session.id].pending.is_empty());
    }

    #[test]
    fn registering_needs_a_session_and_keeps_tokens_until_reinstall() {
        let mut w = World::new(None);
        assert_eq!(
            w.register("D1", APP, false),
            Err(RegisterError::NotConnected("D1".into()))
        );
        let _s = w.connect("D1");
        let a = w.register("D1", APP, false).unwrap();
        assert_eq!(w.register("D1", APP, false), Ok(a));
        let other = w.register("D1", "com.other", false).unwrap();
        assert_ne!(a, other, "one token per app");
        let fresh = w.register("D1", APP, true).unwrap();
        assert_ne!(a, fresh, "a reinstall gets a new token");
    }

    #[test]
    fn each_kind_gets_its_own_token_and_takes_only_its_push_types() {
        let mut w = World::new(None);
        let mut session = w.connect("D1");
        let remote = w.register("D1", APP, false).unwrap();
        let voip = w.register_voip("D1");
        let start = w
            .register_kind(
                "D1",
                &AppToken::new(APP, TokenKind::LiveActivityStart),
                false,
            )
            .unwrap();
        let ride = AppToken::new(APP, TokenKind::LiveActivity("ride".into()));
        let update = w.register_kind("D1", &ride, false).unwrap();
        let all = [remote, voip, start, update];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a), "one token per kind");
        }
        assert_eq!(w.register_kind("D1", &ride, false), Ok(update), "kept");

        let typed = |token, id, push_type: &str| PushRequest {
            push_type: Some(push_type.to_owned()),
            api: Api::Http2,
            ..request(token, id, 0)
        };
        for (id, token, push_type) in [
            (1, remote, "alert"),
            (2, remote, "background"),
            (3, voip, "voip"),
            (4, start, "liveactivity"),
            (5, update, "liveactivity"),
        ] {
            assert_eq!(w.push(typed(token, id, push_type)), Ok(PushOutcome::Sent));
        }
        assert_eq!(drain(&mut session).len(), 5);
        for (id, token, push_type) in [
            (6, remote, "voip"),
            (7, voip, "alert"),
            (8, start, "alert"),
            (9, remote, "liveactivity"),
        ] {
            let refused = w.push(typed(token, id, push_type));
            assert!(
                matches!(&refused, Err(PushError::WrongTopic { .. })),
                "{refused:?}"
            );
        }
        let err = w.push(typed(remote, 10, "voip")).unwrap_err().to_string();
        assert_eq!(
            err,
            "device token is com.example.app's remote-notification token; the push is for \
             com.example.app (voip, which needs the app's PushKit VoIP token)"
        );
        let rejected: Vec<String> = w
            .log
            .iter()
            .filter_map(|e| match e {
                Event::Notification {
                    outcome: Outcome::Rejected,
                    detail,
                    ..
                } => Some(detail.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(rejected.len(), 5);
        assert!(rejected[0].contains("needs the app's PushKit VoIP token"));
    }

    #[test]
    fn the_binary_api_takes_the_kind_from_the_certificates_topic() {
        let (mut w, mut session, remote) = online();
        let voip = w.register_voip("D1");
        let with_topic = |token, id, topic: &str| PushRequest {
            topic: topic.into(),
            ..request(token, id, 0)
        };
        let voip_topic = format!("{APP}.voip");
        assert_eq!(
            w.push(with_topic(voip, 1, &voip_topic)),
            Ok(PushOutcome::Sent)
        );
        assert_eq!(w.push(with_topic(remote, 2, APP)), Ok(PushOutcome::Sent));
        assert_eq!(drain(&mut session).len(), 2);
        assert!(matches!(
            w.push(with_topic(remote, 3, &voip_topic)),
            Err(PushError::WrongTopic { .. })
        ));
        assert!(matches!(
            w.push(with_topic(voip, 4, APP)),
            Err(PushError::WrongTopic { .. })
        ));
    }

    #[test]
    fn longer_tokens_are_minted_when_asked() {
        let mut w = World::new(None);
        let _s = w.connect("D1");
        let (token, _) =
            w.st.register("D1", SANDBOX, &AppToken::from(APP), false, 80, w.now_ms);
        assert_eq!(token.unwrap().len(), 80);
        let (token, _) =
            w.st.register("D1", SANDBOX, &AppToken::from("com.b"), false, 0, w.now_ms);
        assert_eq!(token.unwrap().len(), 1, "clamped to 1..=100");
        let (token, _) = w.st.register(
            "D1",
            SANDBOX,
            &AppToken::from("com.c"),
            false,
            500,
            w.now_ms,
        );
        assert_eq!(token.unwrap().len(), DeviceToken::MAX_LEN);
    }

    #[test]
    fn feedback_is_kept_under_the_tokens_topic() {
        let (mut w, mut session, _remote) = online();
        let voip = w.register_voip("D1");
        let voip_topic = format!("{APP}.voip");
        let req = PushRequest {
            topic: voip_topic.as_str().into(),
            ..request(voip, 1, 0)
        };
        assert_eq!(w.push(req), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap().to_message();
        assert!(w.reply(session.id, d.delivery, DeviceReply::NotInstalled));
        assert!(w.st.take_feedback(APP, SANDBOX).is_empty());
        let tuples = w.st.take_feedback(&voip_topic, SANDBOX);
        assert_eq!(tuples.len(), 1);
        assert_eq!(tuples[0].token, voip);
    }

    #[test]
    fn token_checks() {
        let (mut w, _s, token) = online();
        assert_eq!(
            w.push(request(DeviceToken::from_bytes([0; 32]), 1, 0)),
            Err(PushError::UnknownToken)
        );
        let mut wrong_env = request(token, 2, 0);
        wrong_env.environment = Environment::Production;
        assert!(matches!(
            w.push(wrong_env),
            Err(PushError::WrongEnvironment { .. })
        ));
        let mut wrong_topic = request(token, 3, 0);
        wrong_topic.topic = "com.other".into();
        assert!(matches!(
            w.push(wrong_topic),
            Err(PushError::WrongTopic { .. })
        ));
        let rejected = w
            .outcomes()
            .iter()
            .filter(|(_, outcome)| *outcome == Outcome::Rejected)
            .count();
        assert_eq!(rejected, 3);
    }

    #[test]
    fn online_delivery_ack_and_not_installed() {
        let (mut w, mut session, token) = online();
        assert_eq!(w.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap().to_message();
        assert_eq!(sent.identifier, 1u32.to_be_bytes());
        assert!(w.reply(session.id, sent.delivery, DeviceReply::Ack));
        // The same delivery cannot be answered twice, nor by another session.
        assert!(!w.reply(session.id, sent.delivery, DeviceReply::Ack));

        assert_eq!(w.push(request(token, 2, 0)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap().to_message();
        assert!(!w.reply(session.id + 1, sent.delivery, DeviceReply::Ack));
        assert!(w.reply(session.id, sent.delivery, DeviceReply::NotInstalled));
        let at_ms = w.st.unregistered_at(&token).unwrap();
        assert!(matches!(
            w.push(request(token, 3, 0)),
            Err(PushError::Unregistered { at_ms: t }) if t == at_ms
        ));
        let peeked = w.st.peek_feedback(APP, SANDBOX);
        assert_eq!(
            w.st.peek_feedback(APP, SANDBOX),
            peeked,
            "a peek leaves them"
        );
        assert_eq!(w.st.token_serial(&token).as_deref(), Some("D1"));
        let tuples = w.st.take_feedback(APP, SANDBOX);
        assert_eq!(tuples, peeked);
        assert_eq!(tuples.len(), 1, "recorded once, however often pushed");
        assert_eq!(tuples[0].token, token);
        assert_eq!(u64::from(tuples[0].timestamp), at_ms / 1000);
        assert!(w.st.take_feedback(APP, SANDBOX).is_empty());
    }

    #[test]
    fn offline_store_keeps_the_newest_and_honours_expiry() {
        let (mut w, session, token) = online();
        w.disconnect("D1", session.id);
        let later = w.hour_from_now();
        assert_eq!(w.push(request(token, 1, later)), Ok(PushOutcome::Stored));
        assert_eq!(w.push(request(token, 2, later)), Ok(PushOutcome::Stored));
        assert_eq!(w.push(request(token, 3, 0)), Ok(PushOutcome::Discarded));
        let past = w.now_secs() - 10;
        assert_eq!(w.push(request(token, 4, past)), Ok(PushOutcome::Discarded));
        let mut back = w.connect("D1");
        let stored = back.rx.try_recv().unwrap().to_message();
        assert_eq!(stored.identifier, 2u32.to_be_bytes());
        assert!(back.rx.try_recv().is_err(), "only the newest is kept");
        let outcomes = w.outcomes();
        assert!(outcomes.contains(&(1, Outcome::Superseded)));
        assert!(outcomes.contains(&(3, Outcome::Discarded)));
        assert!(outcomes.contains(&(4, Outcome::Expired)));
    }

    #[test]
    fn no_expiry_is_kept_under_the_storage_policy_and_only_0_is_now_or_never() {
        let (mut w, session, token) = online();
        w.disconnect("D1", session.id);
        let policy_end = w.now_secs() + STORAGE.as_secs() as u32;
        let mut absent = request(token, 1, 0);
        absent.expiry = None;
        assert_eq!(w.push(absent), Ok(PushOutcome::Stored));
        let stored = w.log.last().cloned();
        assert!(
            matches!(&stored, Some(Event::Notification { detail, .. }) if detail.contains("default storage policy")),
            "{stored:?}"
        );
        // Just before the policy ends, the device gets it, told when it would have expired.
        w.now_ms += (STORAGE.as_millis() as u64) - 1000;
        let mut back = w.connect("D1");
        let n = back.rx.try_recv().unwrap().to_message();
        assert_eq!((n.identifier, n.expiry), (1u32.to_be_bytes(), policy_end));
        assert_eq!(w.push(request(token, 2, 0)), Ok(PushOutcome::Sent));
        assert_eq!(
            back.rx.try_recv().unwrap().to_message().expiry,
            0,
            "now or never"
        );
    }

    #[test]
    fn the_storage_policy_ends_what_has_no_expiry_and_caps_what_has_a_later_one() {
        let (mut w, session, token) = online();
        let second = w.register("D1", "com.example.second", false).unwrap();
        w.disconnect("D1", session.id);
        let mut absent = request(token, 1, 0);
        absent.expiry = None;
        assert_eq!(w.push(absent), Ok(PushOutcome::Stored));
        let mut other_app = request(second, 2, 0);
        other_app.topic = "com.example.second".into();
        other_app.expiry = Some(w.now_secs() + 60 * 86_400);
        assert_eq!(w.push(other_app), Ok(PushOutcome::Stored));
        assert!(w.log.iter().any(|e| matches!(e,
            Event::Notification { identifier: 2, detail, .. } if detail.contains("capped by the storage policy"))));
        // One second past the policy, both are gone.
        w.now_ms += STORAGE.as_millis() as u64 + 1000;
        let mut back = w.connect("D1");
        assert!(back.rx.try_recv().is_err());
        let outcomes = w.outcomes();
        assert!(outcomes.contains(&(1, Outcome::Expired)), "{outcomes:?}");
        assert!(outcomes.contains(&(2, Outcome::Expired)), "{outcomes:?}");
    }

    #[test]
    fn keep_decides_once_from_the_expiry() {
        let now = 1_700_000_000;
        let days30 = STORAGE.as_secs();
        assert_eq!(Keep::decide(Some(0), now, days30), Keep::Never);
        assert_eq!(Keep::decide(None, now, days30), Keep::Until(now + days30));
        assert_eq!(
            Keep::decide(Some(now as u32 + 60), now, days30),
            Keep::Until(now + 60)
        );
        assert_eq!(
            Keep::decide(Some(u32::MAX), now, days30),
            Keep::Until(now + days30)
        );
        assert_eq!(Keep::decide(None, u64::MAX, days30), Keep::Until(u64::MAX));
    }

    #[test]
    fn stored_notification_that_expired_is_not_sent() {
        let (mut w, session, token) = online();
        w.disconnect("D1", session.id);
        let soon = w.now_secs() + 60;
        assert_eq!(w.push(request(token, 1, soon)), Ok(PushOutcome::Stored));
        w.now_ms += Duration::from_secs(120).as_millis() as u64;
        let mut back = w.connect("D1");
        assert!(back.rx.try_recv().is_err());
        assert!(w.outcomes().contains(&(1, Outcome::Expired)));
    }

    #[test]
    fn unacknowledged_deliveries_are_routed_again() {
        let (mut w, mut session, token) = online();
        let later = w.hour_from_now();
        assert_eq!(w.push(request(token, 1, later)), Ok(PushOutcome::Sent));
        assert!(session.rx.try_recv().is_ok());
        // The device drops before acknowledging: the notification goes to the store …
        w.disconnect("D1", session.id);
        // … and reaches the device when it returns.
        let mut back = w.connect("D1");
        assert_eq!(
            back.rx.try_recv().unwrap().to_message().identifier,
            1u32.to_be_bytes()
        );
    }

    #[test]
    fn a_replaced_session_hands_its_pending_deliveries_to_the_new_one() {
        let (mut w, mut first, token) = online();
        assert_eq!(w.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        assert!(first.rx.try_recv().is_ok());
        let mut second = w.connect("D1");
        // The first session's queue is closed …
        assert!(matches!(
            first.rx.try_recv(),
            Err(queue::TryRecvError::Disconnected)
        ));
        // … and when its task ends, the unacknowledged one moves to the second.
        w.disconnect("D1", first.id);
        assert_eq!(
            second.rx.try_recv().unwrap().to_message().identifier,
            1u32.to_be_bytes()
        );
    }

    #[test]
    fn a_device_that_never_acknowledges_is_bounded() {
        let (mut w, _session, token) = online();
        let later = w.hour_from_now();
        let mut sent = 0;
        let mut stored = 0;
        for i in 0..(DEVICE_QUEUE as u32 + 10) {
            match w.push(request(token, i, later)) {
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
        let (mut w, mut session, token) = online();
        let later = w.hour_from_now();
        for i in 0..=(DEVICE_QUEUE as u32) {
            assert!(w.push(request(token, i, later)).is_ok());
        }
        // The last one did not fit and was stored.
        let delivered = drain(&mut session);
        assert_eq!(delivered.len(), DEVICE_QUEUE);
        // The device acknowledges the first: its queue has room, the stored one follows.
        assert!(w.reply(session.id, delivered[0].delivery, DeviceReply::Ack));
        let next = session
            .rx
            .try_recv()
            .expect("stored notification sent on catch-up");
        assert_eq!(
            next.to_message().identifier,
            (DEVICE_QUEUE as u32).to_be_bytes()
        );
    }

    #[test]
    fn per_token_rate_limit() {
        let limit = RateLimit {
            pushes: 2,
            per: Duration::from_secs(60),
        };
        let mut w = World::new(Some(limit));
        let _session = w.connect("D1");
        let token = w.register("D1", APP, false).unwrap();
        let other = w.register("D1", "com.b", false).unwrap();
        assert_eq!(w.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        assert_eq!(w.push(request(token, 2, 0)), Ok(PushOutcome::Sent));
        assert_eq!(
            w.push(request(token, 3, 0)),
            Err(PushError::TooManyRequests {
                pushes: 2,
                per_secs: 60
            })
        );
        // Other tokens are not affected.
        let mut to_other = request(other, 4, 0);
        to_other.topic = "com.b".into();
        assert_eq!(w.push(to_other), Ok(PushOutcome::Sent));
        // The window slides.
        w.now_ms += Duration::from_secs(61).as_millis() as u64;
        assert_eq!(w.push(request(token, 5, 0)), Ok(PushOutcome::Sent));
        assert!(w.outcomes().contains(&(3, Outcome::Throttled)));
    }

    #[test]
    fn restored_feedback_comes_first_and_is_not_duplicated() {
        let (mut w, mut session, token) = online();
        assert_eq!(w.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap().to_message();
        assert!(w.reply(session.id, d.delivery, DeviceReply::NotInstalled));
        let taken = w.st.take_feedback(APP, SANDBOX);
        w.st.restore_feedback(APP, SANDBOX, taken.clone());
        w.st.restore_feedback(APP, SANDBOX, taken.clone());
        assert_eq!(w.st.take_feedback(APP, SANDBOX), taken);
    }

    #[test]
    fn a_disconnect_requeues_only_that_sessions_deliveries() {
        let mut w = World::new(None);
        let mut s1 = w.connect("D1");
        let mut s2 = w.connect("D2");
        let t1 = w.register("D1", APP, false).unwrap();
        let t2 = w.register("D2", APP, false).unwrap();
        let later = w.hour_from_now();
        for id in [1, 2] {
            assert_eq!(w.push(request(t1, id, later)), Ok(PushOutcome::Sent));
        }
        for id in [3, 4] {
            assert_eq!(w.push(request(t2, id, later)), Ok(PushOutcome::Sent));
        }
        let d1 = drain(&mut s1);
        let d2 = drain(&mut s2);
        assert_eq!((d1.len(), d2.len()), (2, 2));

        // An answer naming another session's delivery is refused and changes nothing.
        assert!(!w.reply(s2.id, d1[0].delivery, DeviceReply::Ack));
        assert!(!w.reply(s1.id, d2[0].delivery, DeviceReply::Ack));

        // D1 drops: exactly its two deliveries are routed again (to the store, in order).
        let events = w.disconnect("D1", s1.id);
        assert_eq!(
            notification_outcomes(&events),
            [
                (1, Outcome::Requeued),
                (1, Outcome::Stored),
                (2, Outcome::Requeued),
                (2, Outcome::Stored),
                (1, Outcome::Superseded),
            ]
        );
        assert!(
            !w.st.sessions.contains_key(&s1.id),
            "the ended session is gone"
        );

        // D2's deliveries are untouched, still owed by D2 and still acknowledgeable by it.
        let owed: Vec<u64> = w.st.sessions[&s2.id].pending.keys().copied().collect();
        assert_eq!(owed, [d2[0].delivery, d2[1].delivery]);
        assert!(
            !w.reply(s2.id, d1[1].delivery, DeviceReply::Ack),
            "not D2's"
        );
        assert!(
            !w.reply(s1.id, d1[1].delivery, DeviceReply::Ack),
            "D1 has ended"
        );
        for d in &d2 {
            assert!(w.reply(s2.id, d.delivery, DeviceReply::Ack));
        }
        assert!(w.st.sessions[&s2.id].pending.is_empty());
        let acked = w
            .outcomes()
            .into_iter()
            .filter(|(_, outcome)| *outcome == Outcome::Acknowledged)
            .collect::<Vec<_>>();
        assert_eq!(
            acked,
            [(3, Outcome::Acknowledged), (4, Outcome::Acknowledged)]
        );
    }

    #[test]
    fn requeued_deliveries_keep_the_order_they_were_sent_in() {
        let (mut w, mut first, token) = online();
        let later = w.hour_from_now();
        for id in 1..=5 {
            assert_eq!(w.push(request(token, id, later)), Ok(PushOutcome::Sent));
        }
        assert_eq!(drain(&mut first).len(), 5);
        // Replaced: the new session gets them in the order they were first sent.
        let mut second = w.connect("D1");
        w.disconnect("D1", first.id);
        let ids: Vec<[u8; 4]> = drain(&mut second).iter().map(|n| n.identifier).collect();
        let expected: Vec<[u8; 4]> = (1..=5u32).map(u32::to_be_bytes).collect();
        assert_eq!(ids, expected);
        // Offline: the store keeps the newest of them.
        w.disconnect("D1", second.id);
        let mut third = w.connect("D1");
        let kept: Vec<[u8; 4]> = drain(&mut third).iter().map(|n| n.identifier).collect();
        assert_eq!(kept, [5u32.to_be_bytes()]);
    }

    /// A world under `settings`' registration bounds.
    fn bounded(settings: &Settings) -> World {
        let mut w = World::new(None);
        w.st = State::new(None, STORAGE).with_bounds(Bounds::of(settings));
        w
    }

    #[test]
    fn fresh_installs_in_a_loop_are_held_to_the_device_rate_and_other_devices_still_register() {
        let settings = Settings {
            device_token_rate: RateLimit {
                pushes: 5,
                per: Duration::from_secs(60),
            },
            max_unregistered_per_device: 2,
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let _d1 = w.connect("D1");
        let _d2 = w.connect("D2");
        let minted: Vec<_> = (0..10).map(|_| w.register("D1", APP, true)).collect();
        assert_eq!(minted.iter().filter(|r| r.is_ok()).count(), 5);
        let refused = minted.last().unwrap().clone().unwrap_err();
        assert!(
            matches!(&refused, RegisterError::Limited(why) if why.contains("device_token_rate")),
            "{refused:?}"
        );
        // The tokens reinstalls replaced are bounded: the current one and two kept.
        assert_eq!(w.st.tokens.len(), 3);
        // Re-registering without a reinstall mints nothing, so it is not held.
        assert!(w.register("D1", APP, false).is_ok());
        assert!(w.register("D2", APP, true).is_ok(), "another device");
        // The window passes and D1 may mint again.
        w.now_ms += 60_000;
        assert!(w.register("D1", APP, true).is_ok());
    }

    #[test]
    fn a_connection_is_held_to_its_registration_count_and_rate() {
        let settings = Settings {
            max_registrations_per_connection: 3,
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let first = w.connect("D1");
        for _ in 0..3 {
            assert!(w.register("D1", APP, false).is_ok());
        }
        let err = w.register("D1", APP, false).unwrap_err();
        assert!(
            matches!(&err, RegisterError::Limited(why) if why.contains("max_registrations_per_connection")),
            "{err:?}"
        );
        // A new connection of the same device starts afresh.
        w.disconnect("D1", first.id);
        let _second = w.connect("D1");
        assert!(w.register("D1", APP, false).is_ok());

        let settings = Settings {
            connection_registration_rate: RateLimit {
                pushes: 2,
                per: Duration::from_secs(10),
            },
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let _s = w.connect("D1");
        assert!(w.register("D1", APP, false).is_ok());
        assert!(w.register("D1", "com.b", false).is_ok());
        let err = w.register("D1", "com.c", false).unwrap_err();
        assert!(
            matches!(&err, RegisterError::Limited(why) if why.contains("connection_registration_rate")),
            "{err:?}"
        );
        w.now_ms += 10_000;
        assert!(w.register("D1", "com.c", false).is_ok());
    }

    #[test]
    fn a_device_holds_tokens_for_at_most_its_apps() {
        let settings = Settings {
            max_apps_per_device: 2,
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let _s = w.connect("D1");
        assert!(w.register("D1", "com.a", false).is_ok());
        assert!(w.register("D1", "com.b", false).is_ok());
        let err = w.register("D1", "com.c", false).unwrap_err();
        assert!(
            matches!(&err, RegisterError::Limited(why) if why.contains("max_apps_per_device")),
            "{err:?}"
        );
        assert!(
            w.register("D1", "com.a", true).is_ok(),
            "a reinstall of one it holds"
        );
    }

    #[test]
    fn a_reinstall_keeps_a_bounded_record_of_the_tokens_it_replaced() {
        let settings = Settings {
            max_unregistered_per_device: 2,
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let mut session = w.connect("D1");
        let mut tokens = vec![w.register("D1", APP, false).unwrap()];
        for _ in 0..3 {
            tokens.push(w.register("D1", APP, true).unwrap());
        }
        // The replaced ones kept answer 410 (the reinstall's unregistered_at rule is tested
        // at the end of this module).
        for (id, old) in [(1, tokens[1]), (2, tokens[2])] {
            let refused = w.push(request(old, id, 0));
            assert!(
                matches!(refused, Err(PushError::Unregistered { .. })),
                "{refused:?}"
            );
        }
        assert_eq!(w.st.peek_feedback(APP, SANDBOX).len(), 2);
        // Three replaced, two kept: the oldest is forgotten.
        assert_eq!(
            w.push(request(tokens[0], 3, 0)),
            Err(PushError::UnknownToken)
        );
        assert_eq!(w.push(request(tokens[3], 5, 0)), Ok(PushOutcome::Sent));
        assert_eq!(
            drain(&mut session).len(),
            1,
            "only the current token routes"
        );
        assert_eq!(w.st.tokens.len(), 3, "two kept, one current");
        // Registering again without a reinstall returns the current one.
        assert_eq!(w.register("D1", APP, false), Ok(tokens[3]));
    }

    #[test]
    fn devices_gone_for_long_expire_and_the_table_is_bounded() {
        let settings = Settings {
            max_device_records: 200,
            device_record_ttl: Duration::from_secs(3600 * 24),
            ..Settings::default()
        };
        let mut w = bounded(&settings);
        let old = w.connect("OLD");
        let token = w.register("OLD", APP, false).unwrap();
        w.disconnect("OLD", old.id);
        let later = w.now_secs() + 40 * 86_400;
        assert_eq!(w.push(request(token, 1, later)), Ok(PushOutcome::Stored));
        // Two days on, a new device's hello sweeps the record away, with what it stored.
        w.now_ms += 2 * 86_400_000;
        let _new = w.connect("NEW");
        assert!(!w.st.devices.contains_key(&DeviceKey::new("OLD", SANDBOX)));
        assert_eq!(w.push(request(token, 2, 0)), Err(PushError::UnknownToken));
        assert!(w.outcomes().contains(&(1, Outcome::Expired)));
        assert_eq!(w.st.stored_len(), 0);
        // Serials made up in a loop: the table never grows past its bound.
        for i in 0..1_000 {
            let s = w.connect(&format!("S{i}"));
            w.disconnect(&format!("S{i}"), s.id);
            assert!(w.st.devices.len() <= 200);
        }
        assert!(
            w.st.devices.contains_key(&DeviceKey::new("NEW", SANDBOX)),
            "an online device is never the one forgotten"
        );
    }

    /// Applies changes to rows as the store would, last change of a row winning.
    fn apply_changes(rows: &mut HashMap<Key, Row>, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Put(row) => {
                    rows.insert(row.key(), row);
                }
                Change::Delete(key) => {
                    rows.remove(&key);
                }
            }
        }
    }

    fn snapshot_of(rows: &HashMap<Key, Row>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for row in rows.values() {
            match row.clone() {
                Row::Device(d) => snapshot.devices.push(d),
                Row::Token(t) => snapshot.tokens.push(t),
                Row::Feedback(f) => snapshot.feedback.push(f),
                Row::Stored(s) => snapshot.stored.push(*s),
            }
        }
        snapshot.feedback.sort_by_key(|f| f.timestamp);
        snapshot
    }

    #[test]
    fn what_the_journal_describes_restores_the_same_state() {
        let mut w = World::new(None);
        w.st = State::new(None, STORAGE).durable();
        let mut rows = HashMap::new();
        let mut session = w.connect("D1");
        let kept = w.register("D1", APP, false).unwrap();
        let voip = w.register_voip("D1");
        let gone = w.register("D1", "com.gone", false).unwrap();
        let mut to_gone = request(gone, 1, 0);
        to_gone.topic = "com.gone".into();
        assert_eq!(w.push(to_gone), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap().to_message();
        assert!(w.reply(session.id, d.delivery, DeviceReply::NotInstalled));
        let at_ms = w.st.unregistered_at(&gone).unwrap();
        w.disconnect("D1", session.id);
        let later = w.hour_from_now();
        assert_eq!(w.push(request(kept, 2, later)), Ok(PushOutcome::Stored));
        assert_eq!(w.push(request(kept, 3, later)), Ok(PushOutcome::Stored));
        apply_changes(&mut rows, w.st.take_changes());
        assert!(w.st.take_changes().is_empty(), "taken once");

        let mut back = World::new(None);
        back.now_ms = w.now_ms + 1000;
        back.st = State::new(None, STORAGE).durable();
        back.st.restore(snapshot_of(&rows), back.now_ms).unwrap();
        assert_eq!(back.st.unregistered_at(&gone), Some(at_ms));
        assert_eq!(
            back.push(request(gone, 4, 0))
                .map_err(|e| matches!(e, PushError::WrongTopic { .. })),
            Err(true),
            "the unregistered token is still known (its app is com.gone)"
        );
        let feedback = back.st.peek_feedback("com.gone", SANDBOX);
        assert_eq!(feedback.len(), 1);
        assert_eq!(feedback[0].token, gone);
        // The device comes back: its stored notification (the newest), its tokens again.
        let mut again = back.connect("D1");
        let n = again.rx.try_recv().unwrap().to_message();
        assert_eq!(n.identifier, 3u32.to_be_bytes());
        assert_eq!(n.expiry, later);
        assert_eq!(back.register("D1", APP, false), Ok(kept));
        assert_eq!(back.register_voip("D1"), voip);
        // Reading the feedback is journaled too: a second restart has none.
        back.st.take_feedback("com.gone", SANDBOX);
        apply_changes(&mut rows, back.st.take_changes());
        assert!(snapshot_of(&rows).feedback.is_empty());
        assert!(
            snapshot_of(&rows).stored.is_empty(),
            "delivered, so no longer stored"
        );
    }

    #[test]
    fn a_row_that_does_not_read_is_an_error_not_a_guess() {
        let mut st = State::new(None, STORAGE);
        let snapshot = Snapshot {
            tokens: vec![TokenRow {
                token: vec![1; 32],
                serial: "D1".into(),
                environment: "staging".into(),
                app: APP.into(),
                kind: "remote".into(),
                current: true,
                unregistered_at_ms: None,
            }],
            ..Snapshot::default()
        };
        let err = st.restore(snapshot, 0).unwrap_err();
        assert!(err.contains("staging"), "{err}");
    }

    #[test]
    fn every_kind_of_token_reads_back_as_written() {
        for kind in TokenKind::every("ride-42") {
            assert_eq!(TokenKind::from_str(&kind.to_string()), Ok(kind));
        }
    }

    #[test]
    fn a_reinstall_unregisters_the_old_token_at_once_and_a_push_to_it_feeds_feedback_once() {
        let (mut w, mut session, old) = online();
        w.now_ms += 5_000;
        let reinstalled_at = w.now_ms;
        let new = w.register("D1", APP, true).unwrap();
        assert_ne!(new, old);
        assert_eq!(w.st.unregistered_at(&old), Some(reinstalled_at));
        assert!(
            w.st.peek_feedback(APP, SANDBOX).is_empty(),
            "feedback comes with a failed push, not with the reinstall"
        );
        // Later pushes to the old token: 410 with the reinstall's time, never delivered.
        w.now_ms += 5_000;
        for id in 1..=3 {
            assert_eq!(
                w.push(request(old, id, 0)),
                Err(PushError::Unregistered {
                    at_ms: reinstalled_at
                })
            );
        }
        assert!(
            drain(&mut session).is_empty(),
            "the old token routes nowhere"
        );
        assert_eq!(
            w.outcomes(),
            [
                (1, Outcome::Unregistered),
                (2, Outcome::Unregistered),
                (3, Outcome::Unregistered)
            ]
        );
        let feedback = w.st.peek_feedback(APP, SANDBOX);
        assert_eq!(feedback.len(), 1, "listed once: {feedback:?}");
        assert_eq!(feedback[0].token, old);
        assert_eq!(u64::from(feedback[0].timestamp), reinstalled_at / 1000);
        // The new token routes; re-registering without a reinstall keeps it.
        assert_eq!(w.push(request(new, 4, 0)), Ok(PushOutcome::Sent));
        assert_eq!(drain(&mut session).len(), 1);
        assert_eq!(w.register("D1", APP, false), Ok(new));
        // A token already reported gone keeps its first time when a registration replaces it.
        let gone = w.register("D1", "com.gone", false).unwrap();
        let mut to_gone = request(gone, 5, 0);
        to_gone.topic = "com.gone".into();
        assert_eq!(w.push(to_gone), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap().to_message();
        assert!(w.reply(session.id, d.delivery, DeviceReply::NotInstalled));
        let reported = w.st.unregistered_at(&gone).unwrap();
        w.now_ms += 5_000;
        assert_ne!(w.register("D1", "com.gone", false).unwrap(), gone);
        assert_eq!(w.st.unregistered_at(&gone), Some(reported));
    }
}
