//! What the hub tells the world: the [`Event`]s of the delivery log, the bounded ring that
//! keeps the recent ones, and the broadcast channel that streams them live. (The one info
//! line per notification is written from these records too, after the lock:
//! [`super::logline`].)
//!
//! Nothing here decides anything; [`super::state`] decides and hands its events over, and
//! [`super::Hub`] appends them to the ring under the lock and broadcasts them after it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::faults::{Fault, Removed};
use super::logline::Trail;
use crate::protocol::token::{DeviceToken, TokenKind};
use crate::protocol::Environment;

/// Capacity of the live event channel; a subscriber that lags this far behind misses events
/// (and is told so by `broadcast::error::RecvError::Lagged`).
pub const EVENT_CHANNEL: usize = 16_384;

/// Which provider API a notification came through (for the log and for per-API rules).
/// Also the control API's name for it (`ToSchema` documents it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// The legacy binary gateway (commands 0, 1, 2).
    Binary,
    /// The HTTP/2 provider API.
    Http2,
}

impl Api {
    /// The API's name in a log line's `api` field and a metric's `api` label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Api::Binary => "binary",
            Api::Http2 => "http2",
        }
    }
}

/// What happened to a notification, as recorded in the delivery log. Also the control API's
/// name for it (`ToSchema` documents it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

impl Outcome {
    /// Its name as serialised, and as a metric's `outcome` label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Acknowledged => "acknowledged",
            Outcome::Stored => "stored",
            Outcome::Superseded => "superseded",
            Outcome::Expired => "expired",
            Outcome::Discarded => "discarded",
            Outcome::NotInstalled => "not_installed",
            Outcome::Unregistered => "unregistered",
            Outcome::Rejected => "rejected",
            Outcome::Throttled => "throttled",
            Outcome::Requeued => "requeued",
        }
    }
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
    /// A device registered a kind of token of an app and got the token.
    Registered {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Device serial number.
        serial: String,
        /// Bundle id.
        app: String,
        /// Which of the app's tokens (serialised as `remote`, `voip`, `liveactivity:ID`, …).
        kind: TokenKind,
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
        /// `apns-push-type` (HTTP/2), when the request named one.
        push_type: Option<String>,
        /// The priority (10, 5 or 1), when the notification got far enough to have one.
        priority: Option<u8>,
        /// The expiry as the provider gave it, UNIX seconds (0: now or never; `None`: none
        /// given, or refused before it was read).
        expiry: Option<u32>,
        /// `apns-collapse-id` (HTTP/2), when given.
        collapse_id: Option<String>,
        /// The JSON payload as sent, when it got far enough to have a checked one; serialised
        /// as the JSON object itself. Shared with the hub's copy (a reference count, not a
        /// copy per event).
        #[serde(serialize_with = "json_payload")]
        payload: Option<Bytes>,
        /// The serial of the device the token was minted for, when the hub knows it.
        serial: Option<String>,
        /// Binary API: the command's bytes exactly as received (for a refused one, what had
        /// arrived). Shared like `payload`. Serialised as two keys: `frame` (hex) and
        /// `frame_fields` (each field labelled by
        /// [`crate::protocol::notification::annotate`], computed only when serialised).
        #[serde(flatten)]
        frame: Frame,
        /// The id of the fault that hit it (`POST /v1/faults`), if one did.
        fault: Option<String>,
    },
    /// A provider connection (binary gateway, HTTP/2 API, feedback service) was accepted and
    /// identified.
    ProviderConnected {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Its number, unique in this simulator: faults can match it (`match.connection`).
        connection: u64,
        /// Which endpoint.
        endpoint: ProviderEndpoint,
        /// The provider's address.
        peer: String,
        /// Who it is: the certificate's topics, or `token auth` / `no certificate`.
        identity: String,
    },
    /// A provider connection ended.
    ProviderDisconnected {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Its number (as in its `ProviderConnected`).
        connection: u64,
        /// Which endpoint.
        endpoint: ProviderEndpoint,
    },
    /// A fault was added to the table.
    FaultAdded {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The fault as listed.
        fault: Fault,
    },
    /// A fault left the table.
    FaultRemoved {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// Its id.
        id: String,
        /// Why: removed, used up, expired.
        reason: Removed,
    },
    /// The world was reset (`POST /v1/reset`): the log was cleared, so this is its first
    /// event, and the counts say what went.
    Reset {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// What the hub cleared.
        cleared: ResetCounts,
    },
}

/// The provider endpoints, as `ProviderConnected` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderEndpoint {
    /// The binary gateway.
    Gateway,
    /// The HTTP/2 provider API.
    Http2,
    /// The feedback service.
    Feedback,
}

impl ProviderEndpoint {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderEndpoint::Gateway => "gateway",
            ProviderEndpoint::Http2 => "http2",
            ProviderEndpoint::Feedback => "feedback",
        }
    }
}

/// What [`super::Hub::reset`] cleared, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResetCounts {
    /// Events dropped from the delivery log (the reset event is the first after them).
    pub events: u64,
    /// Notifications that were stored for offline devices.
    pub stored: u64,
    /// Unread feedback tuples.
    pub feedback: u64,
    /// Unregistered tokens forgotten: a push to one is now refused as unknown
    /// (`BadDeviceToken`, binary status 8), as for a token no device ever held.
    pub unregistered: u64,
    /// Devices forgotten because they were offline, with their tokens (an online device
    /// keeps its session and its registered tokens).
    pub offline_devices: u64,
    /// Tokens forgotten with those offline devices.
    pub tokens: u64,
    /// Tokens whose per-token rate-limit history was cleared.
    pub rate_limited: u64,
    /// Faults removed (`POST /v1/faults`): a reset leaves none.
    pub faults: u64,
}

/// Serialises a checked payload as the JSON value it is (a payload that somehow is not JSON
/// is shown as a string rather than failing the whole event).
fn json_payload<S: Serializer>(payload: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
    match payload {
        None => s.serialize_none(),
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => s.serialize_some(&value),
            Err(_) => s.serialize_some(&String::from_utf8_lossy(bytes)),
        },
    }
}

/// A binary command's bytes as received, or none (HTTP/2). Serialised as `"frame"` (hex, or
/// null) and `"frame_fields"` (`[{"offset","length","name","value"}]`, or null).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame(pub Option<Bytes>);

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        match &self.0 {
            None => {
                map.serialize_entry("frame", &None::<String>)?;
                map.serialize_entry("frame_fields", &None::<Vec<()>>)?;
            }
            Some(bytes) => {
                map.serialize_entry("frame", &hex::encode(bytes))?;
                let labelled = crate::protocol::notification::annotate(bytes);
                let fields: Vec<FieldJson<'_>> = labelled.iter().map(FieldJson::from).collect();
                map.serialize_entry("frame_fields", &fields)?;
            }
        }
        map.end()
    }
}

/// A labelled field as serialised in `frame_fields`.
#[derive(Serialize)]
struct FieldJson<'a> {
    /// Offset of its first byte in the frame.
    offset: usize,
    /// Its length in bytes.
    length: usize,
    /// What it is (`command`, `payload`, …).
    name: &'a str,
    /// Its value in words.
    value: &'a str,
}

impl<'a> From<&'a crate::protocol::notification::Field> for FieldJson<'a> {
    fn from(f: &'a crate::protocol::notification::Field) -> Self {
        FieldJson {
            offset: f.offset,
            length: f.length,
            name: f.name,
            value: &f.value,
        }
    }
}

impl Event {
    /// The event's tag as serialised (`"event"`): `notification`, `device_online`, …; the
    /// event stream's `event:` name.
    pub fn tag(&self) -> &'static str {
        match self {
            Event::DeviceOnline { .. } => "device_online",
            Event::DeviceOffline { .. } => "device_offline",
            Event::Registered { .. } => "registered",
            Event::Notification { .. } => "notification",
            Event::Reset { .. } => "reset",
            Event::ProviderConnected { .. } => "provider_connected",
            Event::ProviderDisconnected { .. } => "provider_disconnected",
            Event::FaultAdded { .. } => "fault_added",
            Event::FaultRemoved { .. } => "fault_removed",
        }
    }
}

/// The notification an event or a log line is about: borrowed from the hub's copy of it, or
/// made from what a gateway knew when it refused one before it reached the hub.
#[derive(Debug, Clone, Copy)]
pub(super) struct Subject<'a> {
    /// The API it came through.
    pub(super) api: Api,
    /// Its UUID (apns-id).
    pub(super) apns_id: Uuid,
    /// The binary identifier, as sent (zero on HTTP/2).
    pub(super) identifier: [u8; 4],
    /// Its device token, when it got far enough to have a valid one.
    pub(super) token: Option<DeviceToken>,
    /// The topic of the provider connection or request.
    pub(super) topic: &'a str,
    /// A warning every event and log line of the notification carries (e.g. a background
    /// push with priority 10: [`crate::protocol::http2::priority_warning`]).
    pub(super) warning: Option<&'static str>,
    /// The id of the fault that hit it, if one did.
    pub(super) fault: Option<&'a str>,
    /// What the notification carries, for its events; `None` for one refused before the
    /// hub read it.
    pub(super) fields: Option<Fields<'a>>,
    /// Binary API: the command's bytes, as received (for a refused one, what had arrived).
    pub(super) frame: Option<&'a Bytes>,
}

/// The fields of a notification the hub holds, borrowed for its events.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields<'a> {
    /// `apns-push-type`, if any.
    pub(super) push_type: Option<&'a str>,
    /// The priority as sent.
    pub(super) priority: u8,
    /// The expiry as given.
    pub(super) expiry: Option<u32>,
    /// `apns-collapse-id`, if any.
    pub(super) collapse_id: Option<&'a str>,
    /// The payload (made a shared slice for an event: a reference count).
    pub(super) payload: PayloadRef<'a>,
    /// The serial of the token's device, when the hub knows it.
    pub(super) serial: Option<&'a str>,
}

/// Where a held notification's payload lies.
#[derive(Debug)]
pub(super) enum Payload {
    /// In its notification's `frame` (the binary API's command, as received), at
    /// `start..end`: one copy serves both. It stays a range rather than a slice of the frame,
    /// since the first slice of a `Bytes` allocates its shared header, and only an event
    /// needs one.
    InFrame {
        /// Where it starts in the frame.
        start: usize,
        /// Where it ends in the frame.
        end: usize,
    },
    /// In its own allocation (HTTP/2, the control API, a notification restored from the
    /// state file).
    Own(Bytes),
}

/// An empty payload, for a range whose frame is missing (which the hub never makes).
static EMPTY: Bytes = Bytes::new();

/// A payload borrowed where it lies: `within[start..end]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PayloadRef<'a> {
    /// The bytes it lies in.
    within: &'a Bytes,
    /// Where it starts in them.
    start: usize,
    /// Where it ends in them.
    end: usize,
}

impl<'a> PayloadRef<'a> {
    /// All of `bytes`.
    pub(super) fn whole(bytes: &'a Bytes) -> Self {
        PayloadRef {
            within: bytes,
            start: 0,
            end: bytes.len(),
        }
    }

    /// The payload's bytes.
    pub(super) fn bytes(self) -> &'a [u8] {
        self.within.get(self.start..self.end).unwrap_or_default()
    }

    /// The payload as shared bytes (a reference count; the first of a frame's allocates its
    /// shared header).
    pub(super) fn shared(self) -> Bytes {
        // `bytes` already bounds the range (empty when out of it), and an empty or whole
        // subset is what `slice_ref` handles itself.
        self.within.slice_ref(self.bytes())
    }
}

/// The facts of a notification the hub accepted that never change while it holds it: one
/// allocation shared (a reference count each) by its queue entry, its store entry and every
/// record of it in the delivery log, so that logging an outcome copies no string.
#[derive(Debug)]
pub(super) struct Note {
    /// The API it came through.
    pub(super) api: Api,
    /// Its UUID (apns-id).
    pub(super) apns_id: Uuid,
    /// The binary identifier, as sent (zero on HTTP/2).
    pub(super) identifier: [u8; 4],
    /// Its device token.
    pub(super) token: DeviceToken,
    /// The topic it was pushed to.
    pub(super) topic: Arc<str>,
    /// `apns-push-type`, if any.
    pub(super) push_type: Option<String>,
    /// The priority, as sent.
    pub(super) priority: u8,
    /// The expiry as the provider gave it (`None`: none given).
    pub(super) expiry: Option<u32>,
    /// `apns-collapse-id`, if any.
    pub(super) collapse_id: Option<String>,
    /// Where the payload is: a range of `frame` when there is one, its own bytes otherwise.
    pub(super) payload: Payload,
    /// Binary API: the command's bytes as received, in their own allocation.
    pub(super) frame: Option<Bytes>,
    /// The serial of the token's device (the hub's interned copy), once the hub looked the
    /// token up.
    pub(super) serial: Option<Arc<str>>,
}

impl Note {
    /// The payload's bytes.
    pub(super) fn payload(&self) -> &[u8] {
        self.payload_ref().bytes()
    }

    /// The payload, borrowed where it lies.
    pub(super) fn payload_ref(&self) -> PayloadRef<'_> {
        match (&self.payload, &self.frame) {
            (Payload::Own(bytes), _) => PayloadRef::whole(bytes),
            (&Payload::InFrame { start, end }, Some(frame)) => PayloadRef {
                within: frame,
                start,
                end,
            },
            // Not made by `Queued::from_request`, which gives a frame to every range.
            (Payload::InFrame { .. }, None) => PayloadRef::whole(&EMPTY),
        }
    }

    /// What its events and log lines name; `fault`: the fault that hit it, if one did.
    pub(super) fn subject<'a>(&'a self, fault: Option<&'a str>) -> Subject<'a> {
        Subject {
            api: self.api,
            apns_id: self.apns_id,
            identifier: self.identifier,
            token: Some(self.token),
            topic: &self.topic,
            warning: crate::protocol::http2::priority_warning(
                self.push_type.as_deref(),
                self.priority,
            ),
            fields: Some(Fields {
                push_type: self.push_type.as_deref(),
                priority: self.priority,
                expiry: self.expiry,
                collapse_id: self.collapse_id.as_deref(),
                payload: self.payload_ref(),
                serial: self.serial.as_deref(),
            }),
            frame: self.frame.as_ref(),
            fault,
        }
    }
}

/// The words of a notification record, kept compact for the two outcomes every delivered
/// notification has (`sent`, `acknowledged`: "device SERIAL") and spelled out for the rest.
/// The notification's warning is added when the record is read ([`Record::event`]).
#[derive(Debug, Clone)]
pub(super) enum Detail {
    /// "device SERIAL", the serial being the hub's interned copy.
    Device(Arc<str>),
    /// Any other words, as written.
    Text(String),
    /// A refusal by the hub: Apple's reason name (what a log summary counts it under) and
    /// the words.
    Refused {
        /// The reason's name (`BadDeviceToken`, `Unregistered`, …).
        reason: &'static str,
        /// The words, as written.
        text: String,
    },
}

impl Detail {
    /// The words as the event shows them (before the warning).
    pub(super) fn text(&self) -> String {
        match self {
            Detail::Device(serial) => format!("device {serial}"),
            Detail::Text(text) | Detail::Refused { text, .. } => text.clone(),
        }
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Detail::Text(text)
    }
}

/// One entry of the delivery log as the hub keeps it: for a notification the hub holds, ids
/// and enums and reference counts (no string is copied); anything else (devices, providers,
/// faults, refusals before the hub) as its [`Event`], boxed so that every record stays small.
/// The [`Event`] a reader sees is built from it when read ([`Record::event`]).
#[derive(Debug, Clone)]
pub(super) enum Record {
    /// Something happened to a notification the hub holds.
    Note {
        /// Milliseconds since the epoch.
        at_ms: u64,
        /// The notification.
        note: Arc<Note>,
        /// What happened.
        outcome: Outcome,
        /// Its words.
        detail: Detail,
        /// The id of the fault that hit it, if one did (set after it was sent, so not in
        /// `note`).
        fault: Option<Arc<str>>,
        /// Whether it was stored and how often it was routed again, so far (for its log
        /// line's path).
        trail: Trail,
    },
    /// A device came online or left, boxed at its own size: as a boxed [`Event`] (the
    /// size of its largest variant, a notification's) every connected device would keep
    /// 350 bytes in the log for what these 40 hold.
    Presence(Box<Presence>),
    /// A device registered a token, boxed at its own size (as [`Record::Presence`]).
    Registered(Box<Registered>),
    /// Any other event, as it is shown.
    Event(Box<Event>),
}

/// What a [`Record::Presence`] holds: an [`Event::DeviceOnline`] or [`Event::DeviceOffline`].
#[derive(Debug, Clone)]
pub(super) struct Presence {
    at_ms: u64,
    serial: String,
    environment: Environment,
    online: bool,
}

/// What a [`Record::Registered`] holds: an [`Event::Registered`].
#[derive(Debug, Clone)]
pub(super) struct Registered {
    at_ms: u64,
    serial: String,
    app: String,
    kind: TokenKind,
    environment: Environment,
    token: DeviceToken,
}

impl Record {
    /// The event as readers see it.
    pub(super) fn event(&self) -> Event {
        match self {
            Record::Note {
                at_ms,
                note,
                outcome,
                detail,
                fault,
                ..
            } => note
                .subject(fault.as_deref())
                .event(*at_ms, *outcome, detail.text()),
            Record::Presence(p) => {
                let Presence {
                    at_ms,
                    ref serial,
                    environment,
                    online,
                } = **p;
                let serial = serial.clone();
                if online {
                    Event::DeviceOnline {
                        at_ms,
                        serial,
                        environment,
                    }
                } else {
                    Event::DeviceOffline {
                        at_ms,
                        serial,
                        environment,
                    }
                }
            }
            Record::Registered(r) => {
                let Registered {
                    at_ms,
                    serial,
                    app,
                    kind,
                    environment,
                    token,
                } = (**r).clone();
                Event::Registered {
                    at_ms,
                    serial,
                    app,
                    kind,
                    environment,
                    token,
                }
            }
            Record::Event(event) => (**event).clone(),
        }
    }

    /// The API and outcome, when it is a notification's (what the metrics count).
    pub(super) fn notification(&self) -> Option<(Api, Outcome)> {
        match self {
            Record::Note { note, outcome, .. } => Some((note.api, *outcome)),
            Record::Presence(_) | Record::Registered(_) => None,
            Record::Event(event) => match &**event {
                Event::Notification { api, outcome, .. } => Some((*api, *outcome)),
                _ => None,
            },
        }
    }
}

impl From<Event> for Record {
    /// Device events in their own small boxes (one of each stays in the log per connected
    /// device), any other in a box of its own.
    fn from(event: Event) -> Self {
        match event {
            Event::DeviceOnline {
                at_ms,
                serial,
                environment,
            } => Record::Presence(Box::new(Presence {
                at_ms,
                serial,
                environment,
                online: true,
            })),
            Event::DeviceOffline {
                at_ms,
                serial,
                environment,
            } => Record::Presence(Box::new(Presence {
                at_ms,
                serial,
                environment,
                online: false,
            })),
            Event::Registered {
                at_ms,
                serial,
                app,
                kind,
                environment,
                token,
            } => Record::Registered(Box::new(Registered {
                at_ms,
                serial,
                app,
                kind,
                environment,
                token,
            })),
            other => Record::Event(Box::new(other)),
        }
    }
}

impl Subject<'_> {
    /// `detail`, followed by the notification's warning if it has one.
    pub(super) fn annotate(&self, detail: String) -> String {
        match self.warning {
            None => detail,
            Some(warning) if detail.is_empty() => warning.to_owned(),
            Some(warning) => format!("{detail}; {warning}"),
        }
    }

    /// The notification's entry in the delivery log, its warning added to `detail`.
    pub(super) fn event(&self, at_ms: u64, outcome: Outcome, detail: String) -> Event {
        self.entry(at_ms, outcome, self.annotate(detail))
    }

    /// The entry with `detail` as given.
    fn entry(&self, at_ms: u64, outcome: Outcome, detail: String) -> Event {
        let f = self.fields;
        Event::Notification {
            at_ms,
            apns_id: self.apns_id,
            identifier: u32::from_be_bytes(self.identifier),
            token: self.token,
            topic: self.topic.to_owned(),
            api: self.api,
            outcome,
            detail,
            push_type: f.and_then(|f| f.push_type).map(str::to_owned),
            priority: f.map(|f| f.priority),
            expiry: f.and_then(|f| f.expiry),
            collapse_id: f.and_then(|f| f.collapse_id).map(str::to_owned),
            payload: f.map(|f| f.payload.shared()),
            serial: f.and_then(|f| f.serial).map(str::to_owned),
            frame: Frame(self.frame.cloned()),
            fault: self.fault.map(str::to_owned),
        }
    }
}

/// The delivery log: the most recent events, at most its capacity
/// ([`crate::settings::Settings::delivery_log_len`]), oldest first, each with its sequence
/// number. It lives under the hub's lock beside the state, so that the log's order is the
/// order the state changed in. It keeps compact [`Record`]s and builds the [`Event`]s a
/// reader asks for, so appending copies no string.
#[derive(Debug)]
pub(super) struct EventLog {
    /// The records, oldest at the front; never longer than `capacity`. The one at the back
    /// has sequence number `last_seq`, the one before it `last_seq - 1`, and so on.
    ring: VecDeque<Record>,
    /// How many events the ring keeps (at least 1).
    capacity: usize,
    /// The sequence number of the newest event ever appended (0: none yet). Numbers start at
    /// 1 and only grow, across resets too, so a reader's cursor survives events falling out
    /// of the ring or being cleared.
    last_seq: u64,
}

/// One event of the delivery log with its place in it; what the broadcast carries too, so a
/// live reader knows exactly where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logged {
    /// Its sequence number: 1 for the first event the hub ever logged, one more for each
    /// after it. A cursor is the number of the last event a reader has seen.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// What the log holds after a cursor: [`super::Hub::events_after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The events after the cursor that the ring still holds, oldest first.
    pub events: Vec<Logged>,
    /// The sequence number of the newest event ever logged (0: none yet): the cursor to
    /// read on from once `events` are handled.
    pub last_seq: u64,
    /// True when events after the cursor have already left the ring (it keeps
    /// `Settings::delivery_log_len`, and a reset clears it), so the reader missed some.
    pub truncated: bool,
}

impl EventLog {
    /// An empty log keeping the newest `capacity` events (at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        EventLog {
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            last_seq: 0,
        }
    }

    /// Appends records, taking the oldest ones out past the capacity, and returns the
    /// sequence number of the first (the others follow it one by one) and the records that
    /// left the ring, in `records`' own allocation. The hub drops those after its lock is
    /// released: the last reference to a notification frees its payload and strings, work
    /// that no other push or ack needs to wait for.
    pub(super) fn append(&mut self, mut records: Vec<Record>) -> (u64, Vec<Record>) {
        let first = self.last_seq + 1;
        self.last_seq += records.len() as u64;
        let room = self.capacity.saturating_sub(self.ring.len());
        let fit = room.min(records.len());
        self.ring.extend(records.drain(..fit));
        // The rest each take the place of the oldest, which takes theirs in `records`.
        for slot in &mut records {
            if let Some(oldest) = self.ring.pop_front() {
                let record = std::mem::replace(slot, oldest);
                self.ring.push_back(record);
            }
        }
        (first, records)
    }

    /// Drops every event kept, and says how many; numbering goes on from the last.
    pub(super) fn clear(&mut self) -> u64 {
        let dropped = self.ring.len() as u64;
        self.ring.clear();
        dropped
    }

    /// The events kept, oldest first.
    pub(super) fn recent(&self) -> Vec<Event> {
        self.ring.iter().map(Record::event).collect()
    }

    /// The events with a sequence number above `cursor`, oldest first; copies only those.
    pub(super) fn after(&self, cursor: u64) -> LogRead {
        // The oldest kept event's number (one past the last when the ring is empty); the
        // ring is never longer than `last_seq`, so it is at least 1.
        let first_seq = self.last_seq + 1 - self.ring.len() as u64;
        let skip = cursor
            .saturating_sub(first_seq - 1)
            .min(self.ring.len() as u64);
        let start = usize::try_from(skip).unwrap_or(self.ring.len());
        let events = self
            .ring
            .range(start..)
            .zip(first_seq + skip..)
            .map(|(record, seq)| Logged {
                seq,
                event: record.event(),
            })
            .collect();
        LogRead {
            events,
            last_seq: self.last_seq,
            truncated: cursor < first_seq - 1,
        }
    }
}

/// The live event stream, each event with its sequence number. Sending never waits: a
/// subscriber that lags more than [`EVENT_CHANNEL`] events behind is told it missed some,
/// and the log still has them. Events are sent after the hub's lock is released, so two
/// operations racing may be heard out of order; a reader that tracks `seq` re-reads the log
/// when it sees a gap.
#[derive(Debug)]
pub(super) struct Broadcast {
    /// The sending half; receivers come from [`Broadcast::subscribe`].
    tx: broadcast::Sender<Logged>,
}

impl Broadcast {
    /// A stream with room for [`EVENT_CHANNEL`] events per subscriber.
    pub(super) fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_CHANNEL);
        Broadcast { tx }
    }

    /// Live events from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Logged> {
        self.tx.subscribe()
    }

    /// Whether anyone listens: events are built for the broadcast only then.
    pub(super) fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends events to every live subscriber, in order.
    pub(super) fn send(&self, events: Vec<Logged>) {
        for e in events {
            // A subscriber leaving meanwhile is fine: the log still has it.
            let _ = self.tx.send(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(at_ms: u64) -> Event {
        Event::DeviceOnline {
            at_ms,
            serial: "D1".to_owned(),
            environment: Environment::Sandbox,
        }
    }

    /// The capacity the tests give the log.
    const LEN: usize = 100;

    #[test]
    fn the_log_keeps_the_newest_events_in_order() {
        let mut log = EventLog::new(LEN);
        let events: Vec<Event> = (0..LEN as u64 + 5).map(online).collect();
        assert_eq!(
            log.append(events.iter().cloned().map(Record::from).collect())
                .0,
            1
        );
        assert_eq!(log.after(0).last_seq, LEN as u64 + 5);
        let kept = log.recent();
        assert_eq!(kept.len(), LEN);
        assert_eq!(kept.first(), Some(&online(5)), "the oldest are dropped");
        assert_eq!(kept.last(), events.last());
    }

    #[test]
    fn a_cursor_reads_what_came_after_it_and_hears_what_it_missed() {
        let mut log = EventLog::new(LEN);
        let empty = log.after(0);
        assert_eq!(
            (empty.events.len(), empty.last_seq, empty.truncated),
            (0, 0, false)
        );
        log.append([online(1), online(2), online(3)].map(Record::from).into());
        let all = log.after(0);
        assert_eq!(
            all.events.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(all.events[2].event, online(3));
        assert!(!all.truncated);
        let tail = log.after(2);
        assert_eq!(
            tail.events,
            [Logged {
                seq: 3,
                event: online(3)
            }]
        );
        assert!(log.after(3).events.is_empty());
        assert!(
            log.after(u64::MAX).events.is_empty(),
            "a cursor from the future reads nothing"
        );

        let more: Vec<Event> = (4..LEN as u64 + 6).map(online).collect();
        let gone = log.append(more.into_iter().map(Record::from).collect()).1;
        assert_eq!(
            gone.iter().map(Record::event).collect::<Vec<_>>(),
            (1..=5).map(online).collect::<Vec<_>>(),
            "the records that left the ring are handed back, oldest first"
        );
        // Events 1..=5 fell out of the ring: a cursor before 5 missed some.
        let old = log.after(3);
        assert!(old.truncated);
        assert_eq!(old.events.first().map(|l| l.seq), Some(6));
        assert_eq!(old.last_seq, LEN as u64 + 5);
        let exact = log.after(5);
        assert!(!exact.truncated, "the cursor's next event is still kept");
        assert_eq!(exact.events.len(), LEN);
    }

    #[test]
    fn a_cleared_log_numbers_on_and_tells_old_cursors() {
        let mut log = EventLog::new(LEN);
        log.append([online(1), online(2)].map(Record::from).into());
        assert_eq!(log.clear(), 2);
        let read = log.after(0);
        assert!(read.truncated && read.events.is_empty() && read.last_seq == 2);
        assert!(
            !log.after(2).truncated,
            "an up-to-date cursor missed nothing"
        );
        assert_eq!(
            log.append(vec![Record::from(online(3))]).0,
            3,
            "numbers keep growing"
        );
        let read = log.after(1);
        assert!(read.truncated);
        assert_eq!(read.events.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(
            EventLog::new(0).capacity,
            1,
            "a log keeps one event at least"
        );
    }

    #[test]
    fn broadcast_reaches_subscribers_and_needs_none() {
        let broadcast = Broadcast::new();
        let logged = |seq: u64| Logged {
            seq,
            event: online(seq),
        };
        assert!(!broadcast.listened());
        broadcast.send(vec![logged(1)]);
        let mut rx = broadcast.subscribe();
        assert!(broadcast.listened());
        broadcast.send(vec![logged(2), logged(3)]);
        let heard = rx.try_recv().unwrap();
        assert_eq!(
            (heard.seq, heard.event),
            (2, online(2)),
            "only events from subscribing on"
        );
        assert_eq!(rx.try_recv().map(|l| l.seq), Ok(3));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_subject_makes_its_notification_event() {
        let apns_id = Uuid::new_v4();
        let about = Subject {
            api: Api::Http2,
            apns_id,
            identifier: 7u32.to_be_bytes(),
            token: None,
            topic: "com.example.app",
            warning: None,
            fields: None,
            frame: None,
            fault: None,
        };
        assert_eq!(
            [about.event(42, Outcome::Rejected, "bad".into())],
            [Event::Notification {
                at_ms: 42,
                apns_id,
                identifier: 7,
                token: None,
                topic: "com.example.app".to_owned(),
                api: Api::Http2,
                outcome: Outcome::Rejected,
                detail: "bad".to_owned(),
                push_type: None,
                priority: None,
                expiry: None,
                collapse_id: None,
                payload: None,
                serial: None,
                frame: Frame(None),
                fault: None,
            }]
        );
        // The event's JSON: its tag, and the payload as the JSON object it is.
        let payload = Bytes::from_static(br#"{"aps":{"alert":"hi"}}"#);
        let frame = Bytes::from_static(&[0x02, 0x00]);
        let full = Subject {
            fields: Some(Fields {
                push_type: Some("alert"),
                priority: 5,
                expiry: Some(0),
                collapse_id: Some("c1"),
                payload: PayloadRef::whole(&payload),
                serial: Some("D1"),
            }),
            frame: Some(&frame),
            ..about
        };
        let json = serde_json::to_value(Logged {
            seq: 9,
            event: full.event(1, Outcome::Sent, String::new()),
        })
        .unwrap();
        assert_eq!(json["seq"], 9);
        assert_eq!(json["event"], "notification");
        assert_eq!(json["payload"]["aps"]["alert"], "hi");
        assert_eq!(json["frame"], "0200");
        assert_eq!(json["frame_fields"][0]["name"], "command");
        assert_eq!(
            json["frame_fields"][1]["value"],
            "cut short: 1 of 4 bytes (00)"
        );
        assert_eq!(
            (
                &json["push_type"],
                &json["priority"],
                &json["expiry"],
                &json["collapse_id"],
                &json["serial"]
            ),
            (
                &"alert".into(),
                &5.into(),
                &0.into(),
                &"c1".into(),
                &"D1".into()
            )
        );
        // A warning follows the detail in every event of a notification the hub holds, its
        // compact records shown with it when read.
        let note = Arc::new(Note {
            api: Api::Http2,
            apns_id,
            identifier: [0; 4],
            token: DeviceToken::new(&[7; 32]).unwrap(),
            topic: Arc::from("com.example.app"),
            push_type: Some("background".to_owned()),
            priority: 10,
            expiry: None,
            collapse_id: None,
            payload: Payload::Own(payload.clone()),
            frame: None,
            serial: Some(Arc::from("D1")),
        });
        let warning = crate::protocol::http2::priority_warning(Some("background"), 10).unwrap();
        let fault: Arc<str> = Arc::from("f1");
        let records = [
            Record::Note {
                at_ms: 43,
                note: note.clone(),
                outcome: Outcome::Sent,
                detail: Detail::Device(Arc::from("D1")),
                fault: None,
                trail: Trail::default(),
            },
            Record::Note {
                at_ms: 44,
                note: note.clone(),
                outcome: Outcome::Acknowledged,
                detail: Detail::Text(String::new()),
                fault: Some(fault.clone()),
                trail: Trail::default(),
            },
        ];
        let shown: Vec<Event> = records.iter().map(Record::event).collect();
        let sent = format!("device D1; {warning}");
        for (event, (want, want_fault)) in shown
            .iter()
            .zip([(sent.as_str(), None), (warning, Some("f1"))])
        {
            assert!(
                matches!(event, Event::Notification { detail, fault, serial, topic, payload: Some(p), .. }
                    if detail == want && fault.as_deref() == want_fault
                        && serial.as_deref() == Some("D1") && topic == "com.example.app"
                        && p == &payload),
                "{event:?}"
            );
        }
        assert!(
            matches!(&records[0], Record::Note { note: shared, .. } if Arc::ptr_eq(shared, &note)),
            "a record shares the notification, it does not copy it"
        );
    }
}
