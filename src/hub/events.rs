//! What the hub tells the world: the [`Event`]s of the delivery log, the bounded ring that
//! keeps the recent ones, the broadcast channel that streams them live, and the one info line
//! per notification that names its path (`path="provider -> gateway -> device"`).
//!
//! Nothing here decides anything; [`super::state`] decides and hands its events over, and
//! [`super::Hub`] appends them to the ring under the lock and broadcasts them after it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{field, info};
use uuid::Uuid;

use super::faults::{Fault, Removed};
use crate::protocol::token::{DeviceToken, TokenKind};
use crate::protocol::Environment;

/// How many recent events the in-memory delivery log keeps for inspection.
pub const EVENT_LOG_LEN: usize = 10_000;

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

    /// The endpoint's name in a log line's path.
    fn gateway_name(self) -> &'static str {
        match self {
            Api::Binary => "gateway",
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
}

impl Subject<'_> {
    /// `detail`, followed by the notification's warning if it has one.
    fn annotate(&self, detail: String) -> String {
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
        Event::Notification {
            at_ms,
            apns_id: self.apns_id,
            identifier: u32::from_be_bytes(self.identifier),
            token: self.token,
            topic: self.topic.to_owned(),
            api: self.api,
            outcome,
            detail,
            fault: self.fault.map(str::to_owned),
        }
    }
}

/// Logs a routing decision (the one info line per notification, naming its path, `to` being
/// where it went) and records its event.
pub(super) fn decided(
    events: &mut Vec<Event>,
    now_ms: u64,
    about: Subject<'_>,
    outcome: Outcome,
    to: &'static str,
    detail: String,
) {
    let detail = about.annotate(detail);
    info!(
        api = about.api.as_str(),
        apns_id = %about.apns_id,
        id = u32::from_be_bytes(about.identifier),
        token = about.token.map(field::display),
        topic = %about.topic,
        path = %format_args!("provider -> {} -> {to}", about.api.gateway_name()),
        %detail,
    );
    events.push(about.entry(now_ms, outcome, detail));
}

/// Logs the one info line of a notification a gateway refused before it reached the hub.
pub(super) fn log_rejection(about: Subject<'_>, reason: &str) {
    info!(
        api = about.api.as_str(),
        apns_id = %about.apns_id,
        identifier = u32::from_be_bytes(about.identifier),
        topic = about.topic,
        path = %format_args!("provider -> {} -> rejected", about.api.gateway_name()),
        %reason,
    );
}

/// The delivery log: the most recent [`EVENT_LOG_LEN`] events, oldest first, each with its
/// sequence number. It lives under the hub's lock beside the state, so that the log's order is
/// the order the state changed in.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    /// The events, oldest at the front; never longer than [`EVENT_LOG_LEN`]. The one at the
    /// back has sequence number `last_seq`, the one before it `last_seq - 1`, and so on.
    ring: VecDeque<Event>,
    /// The sequence number of the newest event ever appended (0: none yet). Numbers start at
    /// 1 and only grow, so a reader's cursor survives events falling out of the ring.
    last_seq: u64,
}

/// One event of the delivery log with its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Its sequence number: 1 for the first event the hub ever logged, one more for each
    /// after it. A cursor is the number of the last event a reader has seen.
    pub seq: u64,
    /// The event.
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
    /// True when events after the cursor have already fallen out of the ring, so the reader
    /// missed some: the ring keeps [`EVENT_LOG_LEN`].
    pub truncated: bool,
}

impl EventLog {
    /// Appends events, dropping the oldest ones past [`EVENT_LOG_LEN`].
    pub(super) fn append(&mut self, events: &[Event]) {
        for e in events {
            if self.ring.len() == EVENT_LOG_LEN {
                self.ring.pop_front();
            }
            self.ring.push_back(e.clone());
            self.last_seq += 1;
        }
    }

    /// A copy of the events kept, oldest first.
    pub(super) fn recent(&self) -> Vec<Event> {
        self.ring.iter().cloned().collect()
    }

    /// The events with a sequence number above `cursor`, oldest first; copies only those.
    pub(super) fn after(&self, cursor: u64) -> LogRead {
        // The oldest kept event's number; the ring is never longer than `last_seq`, so it is
        // at least 1.
        let first_seq = self.last_seq + 1 - self.ring.len() as u64;
        let skip = cursor
            .saturating_sub(first_seq - 1)
            .min(self.ring.len() as u64);
        let start = usize::try_from(skip).unwrap_or(self.ring.len());
        let events = self
            .ring
            .range(start..)
            .zip(first_seq + skip..)
            .map(|(event, seq)| Logged {
                seq,
                event: event.clone(),
            })
            .collect();
        LogRead {
            events,
            last_seq: self.last_seq,
            truncated: cursor < first_seq - 1,
        }
    }
}

/// The live event stream. Sending never waits: a subscriber that lags more than
/// [`EVENT_CHANNEL`] events behind is told it missed some, and the log still has them.
#[derive(Debug)]
pub(super) struct Broadcast {
    /// The sending half; receivers come from [`Broadcast::subscribe`].
    tx: broadcast::Sender<Event>,
}

impl Broadcast {
    /// A stream with room for [`EVENT_CHANNEL`] events per subscriber.
    pub(super) fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_CHANNEL);
        Broadcast { tx }
    }

    /// Live events from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Sends events to every live subscriber, in order.
    pub(super) fn send(&self, events: Vec<Event>) {
        for e in events {
            // No subscriber is fine: the log still has it.
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

    #[test]
    fn the_log_keeps_the_newest_events_in_order() {
        let mut log = EventLog::default();
        let events: Vec<Event> = (0..EVENT_LOG_LEN as u64 + 5).map(online).collect();
        log.append(&events);
        let kept = log.recent();
        assert_eq!(kept.len(), EVENT_LOG_LEN);
        assert_eq!(kept.first(), Some(&online(5)), "the oldest are dropped");
        assert_eq!(kept.last(), events.last());
    }

    #[test]
    fn a_cursor_reads_what_came_after_it_and_hears_what_it_missed() {
        let mut log = EventLog::default();
        let empty = log.after(0);
        assert_eq!(
            (empty.events.len(), empty.last_seq, empty.truncated),
            (0, 0, false)
        );
        log.append(&[online(1), online(2), online(3)]);
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

        let more: Vec<Event> = (4..EVENT_LOG_LEN as u64 + 6).map(online).collect();
        log.append(&more);
        // Events 1..=5 fell out of the ring: a cursor before 5 missed some.
        let old = log.after(3);
        assert!(old.truncated);
        assert_eq!(old.events.first().map(|l| l.seq), Some(6));
        assert_eq!(old.last_seq, EVENT_LOG_LEN as u64 + 5);
        let exact = log.after(5);
        assert!(!exact.truncated, "the cursor's next event is still kept");
        assert_eq!(exact.events.len(), EVENT_LOG_LEN);
    }

    #[test]
    fn broadcast_reaches_subscribers_and_needs_none() {
        let broadcast = Broadcast::new();
        broadcast.send(vec![online(1)]);
        let mut rx = broadcast.subscribe();
        broadcast.send(vec![online(2), online(3)]);
        assert_eq!(
            rx.try_recv(),
            Ok(online(2)),
            "only events from subscribing on"
        );
        assert_eq!(rx.try_recv(), Ok(online(3)));
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
            fault: None,
        };
        let mut events = Vec::new();
        decided(
            &mut events,
            42,
            about,
            Outcome::Rejected,
            "rejected",
            "bad".into(),
        );
        assert_eq!(
            events,
            [Event::Notification {
                at_ms: 42,
                apns_id,
                identifier: 7,
                token: None,
                topic: "com.example.app".to_owned(),
                api: Api::Http2,
                outcome: Outcome::Rejected,
                detail: "bad".to_owned(),
                fault: None,
            }]
        );
        // A warning follows the detail in every event of the notification.
        let warned = Subject {
            warning: Some("warning: w"),
            ..about
        };
        decided(
            &mut events,
            43,
            warned,
            Outcome::Sent,
            "device",
            "device D1".into(),
        );
        let later = warned.event(44, Outcome::Acknowledged, String::new());
        for (event, want) in events[1..]
            .iter()
            .chain([&later])
            .zip(["device D1; warning: w", "warning: w"])
        {
            assert!(
                matches!(event, Event::Notification { detail, .. } if detail == want),
                "{event:?}"
            );
        }
    }
}
