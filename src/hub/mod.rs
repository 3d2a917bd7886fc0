//! The routing core: device tokens, device sessions, store-and-forward, unregistered tokens,
//! feedback records and the delivery log.
//!
//! `Hub` is a cheap-to-clone handle (`Arc` inside) shared by every endpoint. Delivery to a
//! device goes through that device session's bounded queue with `try_send`, so a slow device
//! can never block a provider connection.
//!
//! # Layout
//!
//! - `mod.rs` (this file): the handle, its lock, and publishing what an operation caused;
//! - `state.rs`: plain data and its rules (routing, store-and-forward, tokens, feedback),
//!   given the time and returning outcomes plus events, so they are tested without tokio;
//! - `events.rs`: [`Event`], [`Outcome`], the bounded log, the live broadcast and the one
//!   info line per notification;
//! - `metrics.rs`: the Prometheus metrics ([`Metrics`]), counted in `Hub::apply` from the
//!   events every rule returns, so each notification event is counted exactly once;
//! - `rate.rs`: the opt-in per-token push limit.
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
//!                                         ├──► expiry (no expiry: the storage policy,
//!                                         │    30 days; later ones capped by it) passed:
//!                                         │    Expired
//!                                         └──► Stored (newest per device and app; the older
//!                                              one is Superseded) ──► Sent on reconnect
//! ```
//!
//! # The lock, and publishing after it
//!
//! All state sits behind one `std::sync::Mutex`. Every operation is a few map look-ups and
//! never awaits (there is no `.await` anywhere in the hub), so the lock is never held across
//! an `.await`, and a std mutex is the right tool: cheaper than tokio's, and usable from
//! synchronous code (mini-redis `db.rs` explains the choice). Each operation runs in
//! `Hub::apply`:
//!
//! 1. read the clock, before taking the lock;
//! 2. take the lock, let the `State` rule change the state and collect its events;
//! 3. append those events to the delivery log in the same critical section, so that the log
//!    lists events in the order the state changed and an operation takes the lock once;
//! 4. release the lock;
//! 5. broadcast the events to live subscribers, so that waking subscribers never happens
//!    while the lock is held.

mod events;
mod metrics;
mod rate;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::info;
use uuid::Uuid;

use crate::clock::Clock;
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::token::{AppToken, DeviceToken};
use crate::protocol::Environment;
use crate::settings::{RateLimit, Settings, DEFAULT_DELIVERY_LOG_LEN};

pub use events::{Api, Event, Frame, LogRead, Logged, Outcome, ResetCounts, EVENT_CHANNEL};
pub use metrics::{Metrics, OpenConnection, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use state::{
    DeviceReply, DeviceSession, PushError, PushOutcome, PushRequest, RegisterError, DEVICE_QUEUE,
    MAX_FEEDBACK_PER_TOPIC, MAX_TOKENS, MAX_UNACKED_PER_SESSION,
};

use events::{Broadcast, EventLog, Subject};

/// The most bytes of a refused binary command the delivery log keeps
/// ([`Hub::record_refused_frame`]): a whole valid command 2 (header and the largest frame),
/// so any refusal of a well-sized one shows entire, while a 64 KiB garbage prefix does not
/// sit in the log 10,000 times.
pub const MAX_REFUSED_FRAME: usize = 5 + crate::protocol::notification::MAX_FRAME_LEN as usize;
use state::{Answered, Queued, State};

/// The routing core. Clone it freely.
#[derive(Debug, Clone)]
pub struct Hub {
    /// What every clone shares.
    shared: Arc<Shared>,
}

/// The one copy behind every [`Hub`] clone.
#[derive(Debug)]
struct Shared {
    /// The state and the delivery log, behind one lock (see the module docs).
    locked: Mutex<Locked>,
    /// Live events, sent to only after the lock is released.
    events: Broadcast,
    /// Where every rule's time comes from; shared with the endpoints, advanced by tests.
    clock: Clock,
    /// The Prometheus metrics, updated by every rule and by the endpoints.
    metrics: Metrics,
}

/// What the lock guards.
#[derive(Debug)]
struct Locked {
    /// Tokens, devices, sessions, stores and feedback, with their rules.
    state: State,
    /// The recent events, in the order the state changed.
    log: EventLog,
}

impl Hub {
    /// A hub reading time from `clock`, with no per-token push limit.
    pub fn new(clock: Clock) -> Self {
        Self::with_rate_limit(clock, None)
    }

    /// A hub that refuses pushes to one token beyond `rate_limit`, under Apple's storage
    /// policy ([`crate::settings::DEFAULT_STORAGE_DAYS`]).
    pub fn with_rate_limit(clock: Clock, rate_limit: Option<RateLimit>) -> Self {
        Self::with_policy(clock, rate_limit, Settings::default().storage())
    }

    /// A hub that refuses pushes to one token beyond `rate_limit` and keeps a notification
    /// for an offline device at most `storage`: that long when it has no expiry, and never
    /// past its expiry (0: not at all). The delivery log keeps the default length.
    pub fn with_policy(clock: Clock, rate_limit: Option<RateLimit>, storage: Duration) -> Self {
        Self::build(clock, rate_limit, storage, DEFAULT_DELIVERY_LOG_LEN)
    }

    /// The hub the simulator runs: the rate limit, storage policy and delivery log length
    /// of `settings` ([`Settings::token_rate_limit`], [`Settings::storage`],
    /// [`Settings::delivery_log_len`]).
    pub fn with_settings(clock: Clock, settings: &Settings) -> Self {
        Self::build(
            clock,
            settings.token_rate_limit,
            settings.storage(),
            settings.delivery_log_max(),
        )
    }

    fn build(
        clock: Clock,
        rate_limit: Option<RateLimit>,
        storage: Duration,
        log_len: usize,
    ) -> Self {
        Hub {
            shared: Arc::new(Shared {
                locked: Mutex::new(Locked {
                    state: State::new(rate_limit, storage),
                    log: EventLog::new(log_len),
                }),
                events: Broadcast::new(),
                clock,
                metrics: Metrics::new(),
            }),
        }
    }

    /// The clock the hub reads (shared with the endpoints).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The simulator's metrics: the hub counts what it decides, the endpoints count their
    /// connections and the feedback they deliver.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Live events from now on, each with its sequence number in the log. Tests wait on
    /// these instead of sleeping. Two operations racing may be heard out of order (they are
    /// broadcast after the lock is released); a reader that must see every event in order
    /// follows `seq` and reads the log ([`Hub::events_after`]) across a gap.
    pub fn subscribe(&self) -> broadcast::Receiver<Logged> {
        self.shared.events.subscribe()
    }

    /// The most recent events (up to [`Settings::delivery_log_len`]), oldest first.
    pub fn recent_events(&self) -> Vec<Event> {
        self.lock().log.recent()
    }

    /// The events logged after `cursor` (a sequence number; 0: from the start) that the ring
    /// still holds, and whether some after it already fell out. A reader that subscribes
    /// ([`Hub::subscribe`]) before calling this misses nothing: every event logged later is
    /// broadcast after it joined the log.
    pub fn events_after(&self, cursor: u64) -> LogRead {
        self.lock().log.after(cursor)
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding the lock would be a bug in the hub; the maps stay usable,
        // so keep serving rather than poisoning every connection.
        self.shared
            .locked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one state rule and publishes the events it returns: the five steps of the
    /// module docs.
    fn apply<T>(&self, rule: impl FnOnce(&mut State, u64) -> (T, Vec<Event>)) -> T {
        // 1. The time, read before the lock is taken.
        let now_ms = self.shared.clock.now_ms();
        let (outcome, events) = {
            // 2. Under the lock: the rule changes the state …
            let mut guard = self.lock();
            let (outcome, events) = rule(&mut guard.state, now_ms);
            // 3. … and its events join the log, numbered, before anyone else can change the
            //    state. The gauges are set here too, so they follow the state's order.
            let logged = guard.log.append(events);
            let metrics = &self.shared.metrics;
            metrics.holding(guard.state.sessions_open(), guard.state.stored_len());
            metrics.feedback_recorded(guard.state.take_feedback_recorded());
            (outcome, logged)
            // 4. The guard drops here, releasing the lock.
        };
        // 5. Every notification event is counted once (atomics, no lock), and subscribers
        //    hear of it, with the lock released.
        self.shared.metrics.observe(events.iter().map(|l| &l.event));
        self.shared.events.send(events);
        outcome
    }

    /// Back to an empty world without a restart (`POST /v1/reset`): stored notifications,
    /// feedback lists, unregistered tokens, the rate limit's history and offline devices
    /// with their tokens are cleared (online devices keep their sessions, their deliveries
    /// awaiting an answer and the tokens they registered; a forgotten token is unknown from
    /// then on: `BadDeviceToken`, binary status 8), and the
    /// delivery log is emptied, so the [`Event::Reset`] it returns is the log's first event.
    /// Sequence numbers keep growing across a reset: a cursor from before it reads on from
    /// the reset event, told `truncated` if it had not seen everything before it.
    pub fn reset(&self) -> ResetCounts {
        // Like `apply`, except that the log is emptied before the event joins it.
        let now_ms = self.shared.clock.now_ms();
        let (cleared, logged) = {
            let mut guard = self.lock();
            let mut cleared = guard.state.reset();
            cleared.events = guard.log.clear();
            let logged = guard.log.append(vec![Event::Reset {
                at_ms: now_ms,
                cleared,
            }]);
            let metrics = &self.shared.metrics;
            metrics.holding(guard.state.sessions_open(), guard.state.stored_len());
            (cleared, logged)
        };
        info!(?cleared, "reset");
        self.shared.events.send(logged);
        cleared
    }

    // ----- devices -------------------------------------------------------------------

    /// A device said hello: open its session and send it anything stored for it.
    ///
    /// If the same serial already has a live session, that session's queue is closed (its
    /// task sees the end of its queue and tells the device it was replaced).
    pub fn connect_device(&self, serial: &str, environment: Environment) -> DeviceSession {
        let session = self.apply(|st, now_ms| st.connect_device(serial, environment, now_ms));
        info!(serial, %environment, "device online");
        session
    }

    /// A device session ended. Notifications it had not acknowledged are routed again
    /// (to a newer session of the same device, or to the store), in the order they were
    /// sent. This costs what that session had, whatever other sessions hold.
    pub fn disconnect_device(&self, serial: &str, environment: Environment, session: u64) {
        self.apply(|st, now_ms| {
            let events = st.disconnect_device(serial, environment, session, now_ms);
            ((), events)
        });
        info!(serial, %environment, "device offline");
    }

    /// Registers `app`'s ordinary remote-notification token on a connected device, 32 bytes
    /// long, and returns it: [`Hub::register_token`] for that kind and the default length.
    pub fn register(
        &self,
        serial: &str,
        environment: Environment,
        app: &str,
        fresh_install: bool,
    ) -> Result<DeviceToken, RegisterError> {
        let wanted = AppToken::from(app);
        self.register_token(
            serial,
            environment,
            &wanted,
            fresh_install,
            DeviceToken::LEN,
        )
    }

    /// Registers one kind of token of an app (`wanted`) on a connected device and returns
    /// the token; a new token has `token_len` bytes (`Settings::token_len`, clamped to
    /// 1..=100).
    ///
    /// The same (device, app, environment, kind) keeps its token across reconnects; a fresh
    /// install, or a token that was reported as not installed, gets a new one.
    pub fn register_token(
        &self,
        serial: &str,
        environment: Environment,
        wanted: &AppToken,
        fresh_install: bool,
        token_len: usize,
    ) -> Result<DeviceToken, RegisterError> {
        let token = self.apply(|st, now_ms| {
            st.register(
                serial,
                environment,
                wanted,
                fresh_install,
                token_len,
                now_ms,
            )
        })?;
        info!(serial, app = %wanted.app, kind = %wanted.kind, %environment, %token, "registered");
        Ok(token)
    }

    /// The device answered a delivery. Returns false for a delivery id this session does not
    /// own (a confused or hostile device), which the caller reports.
    pub fn device_reply(&self, session: u64, delivery: u64, reply: DeviceReply) -> bool {
        self.apply(|st, now_ms| {
            let (answered, events) = st.device_reply(session, delivery, reply, now_ms);
            // Observed before the acknowledgement is broadcast, so whoever waits for it
            // finds the sample.
            if let Some(Answered {
                reply: DeviceReply::Ack,
                accepted,
            }) = answered
            {
                self.shared.metrics.delivered(accepted.elapsed());
            }
            (answered.is_some(), events)
        })
    }

    // ----- providers -----------------------------------------------------------------

    /// Routes a notification. Validation of the token against the request happens here,
    /// under the same lock as the routing decision, so the answer and the outcome agree.
    pub fn push(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let environment = req.environment;
        let api = req.api;
        // The hub's own copy of the payload is made before the lock is taken.
        let queued = Queued::from_request(req, Instant::now());
        self.apply(|st, now_ms| {
            let (result, events) = st.push(queued, environment, now_ms);
            // Counted before the event is broadcast, like every other metric.
            if let Err(err) = &result {
                self.shared.metrics.hub_rejected(api, err);
            }
            (result, events)
        })
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
        self.record_refusal(api, topic, identifier, apns_id, token, reason, None);
    }

    /// [`Hub::record_rejection`] for a binary command the gateway could not decode, with
    /// `frame`, what had arrived of its bytes in their own allocation (at most
    /// [`MAX_REFUSED_FRAME`] are kept), so the delivery log can show it labelled.
    pub fn record_refused_frame(
        &self,
        topic: &str,
        identifier: [u8; 4],
        apns_id: Uuid,
        reason: String,
        mut frame: bytes::Bytes,
    ) {
        frame.truncate(MAX_REFUSED_FRAME);
        self.record_refusal(
            Api::Binary,
            topic,
            identifier,
            apns_id,
            None,
            reason,
            Some(&frame),
        );
    }

    /// Logs and records a refusal from before the hub.
    #[allow(clippy::too_many_arguments)]
    fn record_refusal(
        &self,
        api: Api,
        topic: &str,
        identifier: [u8; 4],
        apns_id: Uuid,
        token: Option<DeviceToken>,
        reason: String,
        frame: Option<&bytes::Bytes>,
    ) {
        let serial = token.and_then(|t| self.token_serial(&t));
        let about = Subject {
            api,
            apns_id,
            identifier,
            token,
            topic,
            warning: None,
            fields: None,
            frame,
        };
        events::log_rejection(about, &reason);
        self.shared.metrics.gateway_rejected(api, &reason);
        // The state does not change; the event still goes through the log and the broadcast.
        self.apply(|_, now_ms| {
            let mut event = about.event(now_ms, Outcome::Rejected, reason);
            if let Event::Notification { serial: s, .. } = &mut event {
                *s = serial;
            }
            ((), vec![event])
        });
    }

    // ----- feedback ------------------------------------------------------------------

    /// Takes (and clears) the feedback tuples recorded for a topic and environment.
    pub fn take_feedback(&self, topic: &str, environment: Environment) -> Vec<FeedbackTuple> {
        self.lock().state.take_feedback(topic, environment)
    }

    /// The unread feedback tuples of a topic and environment, oldest first, left in place
    /// (the control API shows them; only the feedback service drains them).
    pub fn peek_feedback(&self, topic: &str, environment: Environment) -> Vec<FeedbackTuple> {
        self.lock().state.peek_feedback(topic, environment)
    }

    /// Puts back tuples whose delivery failed, ahead of any recorded since.
    pub fn restore_feedback(
        &self,
        topic: &str,
        environment: Environment,
        tuples: Vec<FeedbackTuple>,
    ) {
        self.lock()
            .state
            .restore_feedback(topic, environment, tuples);
    }

    /// The serial number of the device a token was minted for, if the hub minted it (the
    /// delivery log names tokens; the control API filters and labels them by device).
    pub fn token_serial(&self, token: &DeviceToken) -> Option<String> {
        self.lock().state.token_serial(token)
    }

    /// When a token became unregistered, if it did (for tests and the control surface).
    pub fn unregistered_at(&self, token: &DeviceToken) -> Option<u64> {
        self.lock().state.unregistered_at(token)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::state::tests::{request, APP};
    use super::*;

    /// What an event says, in a word: its outcome for a notification, its kind otherwise.
    fn kind(e: &Event) -> String {
        match e {
            Event::DeviceOnline { .. } => "DeviceOnline".to_owned(),
            Event::DeviceOffline { .. } => "DeviceOffline".to_owned(),
            Event::Registered { .. } => "Registered".to_owned(),
            Event::Notification { outcome, .. } => format!("{outcome:?}"),
            Event::Reset { .. } => "Reset".to_owned(),
        }
    }

    #[test]
    fn every_operation_is_logged_and_broadcast_in_the_same_order() {
        let hub = Hub::new(Clock::system());
        let mut live = hub.subscribe();
        let mut session = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap();
        assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::Ack));
        hub.record_rejection(
            Api::Http2,
            APP,
            [0; 4],
            Uuid::new_v4(),
            None,
            "BadPath".into(),
        );
        hub.disconnect_device("D1", Environment::Sandbox, session.id);

        let logged = hub.recent_events();
        let kinds: Vec<String> = logged.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "DeviceOnline",
                "Registered",
                "Sent",
                "Acknowledged",
                "Rejected",
                "DeviceOffline"
            ]
        );
        let heard: Vec<Logged> = std::iter::from_fn(|| live.try_recv().ok()).collect();
        assert_eq!(
            heard.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (1..=logged.len() as u64).collect::<Vec<_>>()
        );
        let heard: Vec<Event> = heard.into_iter().map(|l| l.event).collect();
        assert_eq!(heard, logged);
    }

    #[test]
    fn the_rules_are_given_the_hubs_clock() {
        let hub = Hub::new(Clock::system());
        let session = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        hub.disconnect_device("D1", Environment::Sandbox, session.id);
        let soon = (hub.clock().now_secs() + 60) as u32;
        assert_eq!(hub.push(request(token, 1, soon)), Ok(PushOutcome::Stored));
        hub.clock().advance(Duration::from_secs(120));
        let mut back = hub.connect_device("D1", Environment::Sandbox);
        assert!(back.rx.try_recv().is_err(), "expired while stored");
        assert!(hub.recent_events().iter().any(|e| kind(e) == "Expired"));
    }

    #[test]
    fn a_reset_keeps_online_devices_and_forgets_the_rest() {
        let hub = Hub::new(Clock::system());
        let mut d1 = hub.connect_device("D1", Environment::Sandbox);
        let kept = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        let gone = hub
            .register("D1", Environment::Sandbox, "com.example.gone", false)
            .unwrap();
        let d2 = hub.connect_device("D2", Environment::Sandbox);
        let offline = hub
            .register("D2", Environment::Sandbox, APP, false)
            .unwrap();
        hub.disconnect_device("D2", Environment::Sandbox, d2.id);
        let far = (hub.clock().now_secs() + 3600) as u32;
        assert_eq!(hub.push(request(offline, 1, far)), Ok(PushOutcome::Stored));
        let to_gone = PushRequest {
            topic: "com.example.gone".to_owned(),
            ..request(gone, 2, 0)
        };
        assert_eq!(hub.push(to_gone.clone()), Ok(PushOutcome::Sent));
        let sent = d1.rx.try_recv().unwrap();
        assert!(hub.device_reply(d1.id, sent.delivery, DeviceReply::NotInstalled));
        assert_eq!(
            hub.peek_feedback("com.example.gone", Environment::Sandbox)
                .len(),
            1
        );
        let before = hub.events_after(0).last_seq;

        let mut live = hub.subscribe();
        let cleared = hub.reset();
        assert_eq!(
            cleared,
            ResetCounts {
                events: before,
                stored: 1,
                feedback: 1,
                unregistered: 1,
                offline_devices: 1,
                tokens: 1,
                rate_limited: 0,
            }
        );
        let heard = live.try_recv().unwrap();
        assert_eq!(heard.seq, before + 1, "numbers keep growing");
        assert!(matches!(heard.event, Event::Reset { .. }));
        assert_eq!(
            hub.recent_events(),
            std::slice::from_ref(&heard.event),
            "the reset is the first event"
        );
        assert!(hub.events_after(0).truncated, "an old cursor is told");
        assert!(!hub.events_after(before).truncated);
        assert!(hub
            .peek_feedback("com.example.gone", Environment::Sandbox)
            .is_empty());
        // The online device and its token stay; the rest is unknown now.
        assert_eq!(hub.push(request(kept, 3, 0)), Ok(PushOutcome::Sent));
        assert_eq!(
            hub.push(request(offline, 4, 0)),
            Err(PushError::UnknownToken)
        );
        assert_eq!(hub.push(to_gone), Err(PushError::UnknownToken));
        // D2 comes back: it was forgotten, so nothing is stored for it and it registers anew.
        let mut back = hub.connect_device("D2", Environment::Sandbox);
        assert!(back.rx.try_recv().is_err());
        assert_ne!(
            hub.register("D2", Environment::Sandbox, APP, false)
                .unwrap(),
            offline
        );
    }

    #[test]
    fn clones_share_one_hub() {
        let hub = Hub::new(Clock::system());
        let other = hub.clone();
        let _session = hub.connect_device("D1", Environment::Sandbox);
        assert!(other
            .register("D1", Environment::Sandbox, APP, false)
            .is_ok());
        assert_eq!(other.recent_events(), hub.recent_events());
    }
}
