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
//! - `faults.rs`: the fault table the control API fills and the endpoints probe;
//! - `state.rs`: plain data and its rules (routing, store-and-forward, tokens, feedback),
//!   given the time and returning outcomes plus events, so they are tested without tokio;
//! - `events.rs`: [`Event`], [`Outcome`], the bounded log and the live broadcast;
//! - `logline.rs`: the one info line per notification, naming its final path, written after
//!   the lock, and the per-second summary it turns into under load;
//! - `metrics.rs`: the Prometheus metrics ([`Metrics`]), counted in `Hub::apply` from the
//!   events every rule returns, so each notification event is counted exactly once;
//! - `queue.rs`: a device session's bounded queue (smaller than tokio's `mpsc` when idle);
//! - `rate.rs`: the opt-in per-token push limit;
//! - `virtual.rs`: virtual fleets, devices held as a few bytes of state with derived
//!   tokens, consulted for a token the ordinary table does not hold.
//!
//! # Durable state
//!
//! A hub built with [`Hub::with_store`] starts from the state file's rows and keeps it up to
//! date: each rule describes the rows it changed, and `Hub::apply` hands them to the store
//! under the lock (so the file sees changes in the order the state made them), without
//! waiting for the disk. An answer that must be durable first (an HTTP/2 200 for a stored
//! notification, a registration) awaits [`Hub::synced`] after the rule ran; the store
//! commits many changes at once (`store/`). An in-memory hub describes nothing and its
//! `synced` is ready at once.
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
//! 5. drop the records that left the log (freeing a notification's payload and strings),
//!    write the log lines of the records (formatting happens here, never under the lock),
//!    and broadcast the events to live subscribers, so that waking subscribers never
//!    happens while the lock is held.

mod events;
mod faults;
mod logline;
mod metrics;
mod queue;
mod rate;
mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::{info, warn};
use uuid::Uuid;

use crate::clock::Clock;
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::token::{AppToken, DeviceToken};
use crate::protocol::Environment;
use crate::settings::{RateLimit, Settings, DEFAULT_DELIVERY_LOG_LEN, DEFAULT_LOG_LINES_PER_SEC};
use crate::store::{NotSaved, Snapshot, Store, StoreError};

pub use events::{
    Api, Event, Frame, LogRead, Logged, Outcome, ProviderEndpoint, ResetCounts, EVENT_CHANNEL,
};
pub use faults::{
    check as check_fault, effects_of, BinaryError, Effect, Fault, FaultMatch, FaultOn, FaultSpec,
    Goaway, Hit, Phase, Probe, Removed, Respond, SpecError, MAX_DELAY_MS, MAX_FAULTS,
};
pub use metrics::{Metrics, OpenConnection, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use state::{
    DeviceAnswer, DeviceReply, DeviceSession, KnownDevice, Outgoing, PushError, PushOutcome,
    PushRequest, RegisterError, TokenOwner, DEVICE_QUEUE, MAX_FEEDBACK_PER_TOPIC, MAX_TOKENS,
    MAX_UNACKED_PER_SESSION,
};

pub use state::fleet::{
    fleet_key, AppState, VirtualDevice, VirtualError, VirtualSpec, VirtualSummary,
    KEY_FILE as VIRTUAL_KEY_FILE, VIRTUAL_ACTIVITY, VIRTUAL_SERIAL_PREFIX,
};

use events::{Broadcast, EventLog, Record, Subject};

/// The most bytes of a refused binary command the delivery log keeps
/// ([`Hub::record_refused_frame`]): a whole valid command 2 (header and the largest frame),
/// so any refusal of a well-sized one shows entire, while a 64 KiB garbage prefix does not
/// sit in the log 10,000 times.
pub const MAX_REFUSED_FRAME: usize = 5 + crate::protocol::notification::MAX_FRAME_LEN as usize;
use state::{Bounds, Queued, State};

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
    /// The per-notification log lines' rate gate, used after the lock is released.
    lines: logline::Lines,
    /// Where every rule's time comes from; shared with the endpoints, advanced by tests.
    clock: Clock,
    /// The Prometheus metrics, updated by every rule and by the endpoints.
    metrics: Metrics,
    /// Whether the fault table holds any fault: set and cleared under the lock with the
    /// table, read without it, so that a probe with no faults costs one load.
    faults_any: AtomicBool,
    /// The last provider connection number handed out.
    next_connection: AtomicU64,
    /// The durable state, if the hub has one ([`Hub::with_store`]).
    store: Option<Store>,
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
        let state = State::new(rate_limit, storage);
        Self::build(
            clock,
            state,
            DEFAULT_DELIVERY_LOG_LEN,
            DEFAULT_LOG_LINES_PER_SEC,
            None,
        )
    }

    /// The hub the simulator runs: the rate limit, storage policy, delivery log length and
    /// log line rate of `settings` ([`Settings::token_rate_limit`], [`Settings::storage`],
    /// [`Settings::delivery_log_len`], [`Settings::log_lines_per_sec`]).
    pub fn with_settings(clock: Clock, settings: &Settings) -> Self {
        let state = Self::state_for(settings);
        Self::build(
            clock,
            state,
            settings.delivery_log_max(),
            settings.log_lines_per_sec,
            None,
        )
    }

    /// [`Hub::with_settings`], starting from what a state file held (`snapshot`) and keeping
    /// `store` up to date from then on. A row that does not read is reported as a corrupt
    /// file, naming it.
    pub fn with_store(
        clock: Clock,
        settings: &Settings,
        store: Store,
        snapshot: Snapshot,
    ) -> Result<Self, StoreError> {
        let mut state = Self::state_for(settings).durable();
        state
            .restore(snapshot, clock.now_ms())
            .map_err(|detail| StoreError::Corrupt {
                path: store.path().to_owned(),
                detail,
            })?;
        let hub = Self::build(
            clock,
            state,
            settings.delivery_log_max(),
            settings.log_lines_per_sec,
            Some(store),
        );
        let guard = hub.lock();
        hub.shared
            .metrics
            .holding(guard.state.sessions_open(), guard.state.stored_len());
        drop(guard);
        Ok(hub)
    }

    /// An empty state under `settings`' rate limit, storage policy and registration bounds.
    fn state_for(settings: &Settings) -> State {
        State::new(settings.token_rate_limit, settings.storage()).with_bounds(Bounds::of(settings))
    }

    fn build(
        clock: Clock,
        state: State,
        log_len: usize,
        log_lines_per_sec: u32,
        store: Option<Store>,
    ) -> Self {
        Hub {
            shared: Arc::new(Shared {
                locked: Mutex::new(Locked {
                    state,
                    log: EventLog::new(log_len),
                }),
                events: Broadcast::new(),
                lines: logline::Lines::new(log_lines_per_sec),
                clock,
                metrics: Metrics::new(),
                faults_any: AtomicBool::new(false),
                next_connection: AtomicU64::new(0),
                store,
            }),
        }
    }

    /// Resolves once every change the hub made before this call is on disk: at once for an
    /// in-memory hub. Answers that must be durable (an HTTP/2 200 for a stored notification,
    /// a registration, a 410) await it before they are written; a failure means the state
    /// file cannot be written now, and the answer says so instead.
    pub fn synced(&self) -> impl std::future::Future<Output = Result<(), NotSaved>> + Send {
        let pending = self.shared.store.as_ref().map(Store::synced);
        async move {
            match pending {
                Some(pending) => pending.await,
                None => Ok(()),
            }
        }
    }

    /// Whether the hub keeps durable state (answers may wait for [`Hub::synced`]).
    pub fn is_durable(&self) -> bool {
        self.shared.store.is_some()
    }

    /// Writes what is left to the state file and stops its writer (the simulator's
    /// shutdown, after the endpoints stopped). Nothing for an in-memory hub.
    pub async fn close_store(&self) {
        if let Some(store) = &self.shared.store {
            store.close().await;
        }
    }

    /// Hands the rows the last rule changed to the store, under the lock (see the module
    /// docs); nothing in memory.
    fn journal(&self, state: &mut State) {
        if let Some(store) = &self.shared.store {
            let changes = state.take_changes();
            if !changes.is_empty() {
                store.submit(changes);
            }
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
    fn apply<T>(&self, rule: impl FnOnce(&mut State, u64) -> (T, Vec<Record>)) -> T {
        // 1. The time, read before the lock is taken.
        let now_ms = self.shared.clock.now_ms();
        let (outcome, live) = {
            // 2. Under the lock: the rule changes the state …
            let mut guard = self.lock();
            let (outcome, records) = rule(&mut guard.state, now_ms);
            //    … the rows it changed go to the store, in the order the state changed …
            self.journal(&mut guard.state);
            // 3. … every notification record is counted once (atomics), before anyone can
            //    hear of it; the gauges are set here too, so they follow the state's order …
            let metrics = &self.shared.metrics;
            metrics.observe(&records);
            metrics.holding(guard.state.sessions_open(), guard.state.stored_len());
            metrics.feedback_recorded(guard.state.take_feedback_recorded());
            self.shared
                .faults_any
                .store(!guard.state.faults.is_empty(), Ordering::Relaxed);
            // … and the records join the log, numbered, before anyone else can change the
            //    state. Copies for the broadcast (reference counts) are kept only when someone
            //    listens (asked under the lock, so a subscriber that joins later finds these
            //    records in the log); otherwise only those that write a log line at the
            //    levels enabled, none at all at `warn`.
            let listened = self.shared.events.listened();
            let copies: Vec<Record> = if listened {
                records.clone()
            } else {
                records
                    .iter()
                    .filter(|r| logline::wanted(r))
                    .cloned()
                    .collect()
            };
            let (first, evicted) = guard.log.append(records);
            (outcome, (listened, first, copies, evicted))
            // 4. The guard drops here, releasing the lock.
        };
        // 5. The log lines are formatted and written with the lock released, and subscribers
        //    hear of it: the events they see are built from the records only now. The records
        //    that left the log are freed here too, outside the lock.
        let (listened, first, copies, evicted) = live;
        drop(evicted);
        if !copies.is_empty() {
            logline::publish(&self.shared.lines, &copies);
            if listened {
                self.shared.events.send(logged(first, &copies));
            }
        }
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
            self.journal(&mut guard.state);
            cleared.events = guard.log.clear();
            self.shared
                .faults_any
                .store(!guard.state.faults.is_empty(), Ordering::Relaxed);
            let reset = Record::from(Event::Reset {
                at_ms: now_ms,
                cleared,
            });
            let live = self.shared.events.listened().then(|| reset.clone());
            // The log was just cleared, so nothing leaves it.
            let (first, _) = guard.log.append(vec![reset]);
            let metrics = &self.shared.metrics;
            metrics.holding(guard.state.sessions_open(), guard.state.stored_len());
            (cleared, live.map(|r| logged(first, &[r])))
        };
        info!(?cleared, "reset");
        if let Some(logged) = logged {
            self.shared.events.send(logged);
        }
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
        let token = self
            .apply(|st, now_ms| {
                st.register(
                    serial,
                    environment,
                    wanted,
                    fresh_install,
                    token_len,
                    now_ms,
                )
            })
            .inspect_err(|err| {
                if matches!(err, RegisterError::Limited(_)) {
                    warn!(serial, app = %wanted.app, kind = %wanted.kind, %environment, %err, "registration refused");
                }
            })?;
        info!(serial, app = %wanted.app, kind = %wanted.kind, %environment, %token, "registered");
        Ok(token)
    }

    /// The device answered a delivery. Returns false for a delivery id this session does not
    /// own (a confused or hostile device), which the caller reports.
    pub fn device_reply(&self, session: u64, delivery: u64, reply: DeviceReply) -> bool {
        self.device_answers(session, &[DeviceAnswer::One { delivery, reply }])
            .is_ok()
    }

    /// The device answered deliveries: every answer of one read, in order, under one lock
    /// (see [`DeviceAnswer`]; the cumulative [`DeviceAnswer::Through`] answers many at once).
    /// Returns the first single answer (delivery and reply) naming a delivery this session
    /// does not owe an answer for (a confused or hostile device), which the caller reports;
    /// those before it stand.
    pub fn device_answers(
        &self,
        session: u64,
        answers: &[DeviceAnswer],
    ) -> Result<(), (u64, DeviceReply)> {
        let metrics = &self.shared.metrics;
        self.apply(|st, now_ms| {
            // Latencies are observed before the acknowledgements are broadcast, so whoever
            // waits for one finds its sample.
            st.device_reply(session, answers, now_ms, |accepted| {
                metrics.delivered(accepted.elapsed());
            })
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

    /// Routes the notifications of one read of a provider connection, in the order they came,
    /// under one lock: one critical section, one hand-off to the store and one append to the
    /// delivery log for all of them, each decided exactly as [`Hub::push`] decides it alone
    /// (the binary gateway's hot path). The hub's copies of the payloads are made before the
    /// lock is taken.
    ///
    /// `stops` says which refusal ends the read: the binary API answers the first bad
    /// notification with an error response and closes, and whatever the provider sent after
    /// it is discarded, so those after it are not routed. `Err((i, err))` names the request
    /// at index `i` that stopped the batch (every one before it was taken, none after it was
    /// looked at); `Ok(())` when all were taken (accepted, or refused in a way `stops` lets
    /// pass, such as the binary API's silent ones).
    pub fn push_batch(
        &self,
        requests: Vec<PushRequest>,
        stops: impl Fn(&PushError) -> bool,
    ) -> Result<(), (usize, PushError)> {
        if requests.is_empty() {
            return Ok(());
        }
        let accepted = Instant::now();
        let queued: Vec<(Queued, Environment, Api)> = requests
            .into_iter()
            .map(|req| {
                let (environment, api) = (req.environment, req.api);
                (Queued::from_request(req, accepted), environment, api)
            })
            .collect();
        let metrics = &self.shared.metrics;
        self.apply(|st, now_ms| {
            let mut events = Vec::with_capacity(queued.len());
            for (i, (q, environment, api)) in queued.into_iter().enumerate() {
                if let Err(err) = st.push_into(q, environment, now_ms, &mut events) {
                    // Counted before the event is broadcast, like every other metric.
                    metrics.hub_rejected(api, &err);
                    if stops(&err) {
                        return (Err((i, err)), events);
                    }
                }
            }
            (Ok(()), events)
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
        self.record_refusal(api, topic, identifier, apns_id, token, reason, None, None);
    }

    /// Records a notification a fault (`fault`, its id) refused in place of the endpoint's
    /// ordinary answer: `rejected`, with the fault's words as the detail.
    #[allow(clippy::too_many_arguments)]
    pub fn record_faulted(
        &self,
        api: Api,
        topic: &str,
        identifier: [u8; 4],
        apns_id: Uuid,
        token: Option<DeviceToken>,
        detail: String,
        fault: &str,
    ) {
        self.record_refusal(
            api,
            topic,
            identifier,
            apns_id,
            token,
            detail,
            Some(fault),
            None,
        );
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
            None,
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
        fault: Option<&str>,
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
            fault,
            fields: None,
            frame,
        };
        self.shared.metrics.gateway_rejected(api, &reason);
        // The state does not change; the event still goes through the log and the broadcast.
        self.apply(|_, now_ms| {
            let mut event = about.event(now_ms, Outcome::Rejected, reason);
            if let Event::Notification { serial: s, .. } = &mut event {
                *s = serial;
            }
            ((), vec![event.into()])
        });
    }

    // ----- feedback ------------------------------------------------------------------

    /// Takes (and clears) the feedback tuples recorded for a topic and environment.
    pub fn take_feedback(&self, topic: &str, environment: Environment) -> Vec<FeedbackTuple> {
        let mut guard = self.lock();
        let taken = guard.state.take_feedback(topic, environment);
        self.journal(&mut guard.state);
        taken
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
        let mut guard = self.lock();
        guard.state.restore_feedback(topic, environment, tuples);
        self.journal(&mut guard.state);
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

    /// Whether any device with one of these serials is online (`POST /v1/reset` waits for
    /// the devices it removed to leave).
    pub fn any_online(&self, serials: &std::collections::HashSet<String>) -> bool {
        self.lock().state.any_online(serials)
    }

    /// Who holds a token the hub minted: device, environment, app and kind (the control
    /// API's test push picks its topic and credentials from it).
    pub fn token_owner(&self, token: &DeviceToken) -> Option<TokenOwner> {
        self.lock().state.token_owner(token)
    }

    /// Every device that ever said hello (kept after it leaves, for store-and-forward),
    /// sorted by serial, at most `max`: online or not, and its live tokens (for
    /// `GET /v1/devices`). One walk over the devices and registrations under the lock.
    pub fn devices(&self, max: usize) -> Vec<KnownDevice> {
        self.lock().state.devices(max)
    }
    // ----- provider connections ------------------------------------------------------

    /// A provider connection was accepted and identified: its number (never reused), logged
    /// as `ProviderConnected`. Every number handed out gets its
    /// [`Hub::provider_disconnected`] when the connection ends.
    pub fn provider_connected(
        &self,
        endpoint: ProviderEndpoint,
        peer: SocketAddr,
        identity: String,
    ) -> u64 {
        let connection = self.shared.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        self.apply(|_, at_ms| {
            let event = Event::ProviderConnected {
                at_ms,
                connection,
                endpoint,
                peer: peer.to_string(),
                identity,
            };
            ((), vec![event.into()])
        });
        connection
    }

    /// A provider connection ended.
    pub fn provider_disconnected(&self, connection: u64, endpoint: ProviderEndpoint) {
        self.apply(|_, at_ms| {
            let event = Event::ProviderDisconnected {
                at_ms,
                connection,
                endpoint,
            };
            ((), vec![event.into()])
        });
    }

    // ----- faults --------------------------------------------------------------------

    /// Adds a fault (the control API's `POST /v1/faults`), logged as `FaultAdded`; or why
    /// the spec is refused, naming its field.
    pub fn add_fault(&self, spec: FaultSpec) -> Result<Fault, SpecError> {
        self.apply(|st, at_ms| match st.faults.add(spec, at_ms) {
            Ok(fault) => {
                let event = Event::FaultAdded {
                    at_ms,
                    fault: fault.clone(),
                };
                (Ok(fault), vec![event.into()])
            }
            Err(err) => (Err(err), Vec::new()),
        })
    }

    /// Removes the fault `id`, logged as `FaultRemoved`; false if there is none.
    pub fn remove_fault(&self, id: &str) -> bool {
        self.apply(|st, at_ms| {
            let mut events = expired(st, at_ms);
            let removed = st.faults.remove(id);
            if removed {
                events.push(
                    Event::FaultRemoved {
                        at_ms,
                        id: id.to_owned(),
                        reason: Removed::Removed,
                    }
                    .into(),
                );
            }
            (removed, events)
        })
    }

    /// Removes every fault (`DELETE /v1/faults`, `POST /v1/reset`), each logged as
    /// `FaultRemoved`.
    pub fn clear_faults(&self) {
        self.apply(|st, at_ms| {
            let events = st
                .faults
                .clear()
                .into_iter()
                .map(|id| {
                    Record::from(Event::FaultRemoved {
                        at_ms,
                        id,
                        reason: Removed::Removed,
                    })
                })
                .collect();
            ((), events)
        });
    }

    /// Every fault, oldest first (those whose deadline passed are removed first, logged as
    /// expired).
    pub fn faults(&self) -> Vec<Fault> {
        self.apply(|st, at_ms| {
            let events = expired(st, at_ms);
            (st.faults.list(), events)
        })
    }

    /// The fault that hits what `probe` describes, if one does: counted, and logged as
    /// `FaultRemoved` when the hit used it up. With no fault set this is one atomic load.
    pub fn fault(&self, probe: &Probe<'_>) -> Option<Hit> {
        if !self.shared.faults_any.load(Ordering::Relaxed) {
            return None;
        }
        self.apply(|st, at_ms| {
            let mut events = expired(st, at_ms);
            let hit = st.faults.hit(probe).map(|(hit, used_up)| {
                if used_up {
                    events.push(
                        Event::FaultRemoved {
                            at_ms,
                            id: hit.id.clone(),
                            reason: Removed::UsedUp,
                        }
                        .into(),
                    );
                }
                // Counted before the events are broadcast, like every other metric.
                self.shared.metrics.fault_hit(probe.on);
                hit
            });
            (hit, events)
        })
        .inspect(|hit| {
            info!(fault = %hit.id, on = probe.on.as_str(), effect = ?hit.effect, "fault hit");
        })
    }

    /// Marks a delivery that session `session` has not answered yet as hit by fault `id`:
    /// its later events (acknowledged, requeued, stored) name the fault.
    pub fn mark_delivery_fault(&self, session: u64, delivery: u64, id: &str) -> bool {
        self.apply(|st, _| (st.mark_fault(session, delivery, id), Vec::new()))
    }
}

/// Removes the faults whose deadline passed and returns their `FaultRemoved` events.
fn expired(st: &mut State, at_ms: u64) -> Vec<Record> {
    st.faults
        .expire(at_ms)
        .into_iter()
        .map(|id| {
            Record::from(Event::FaultRemoved {
                at_ms,
                id,
                reason: Removed::Expired,
            })
        })
        .collect()
}

/// The events of `records`, numbered from `first`, for the broadcast.
fn logged(first: u64, records: &[Record]) -> Vec<Logged> {
    records
        .iter()
        .zip(first..)
        .map(|(record, seq)| Logged {
            seq,
            event: record.event(),
        })
        .collect()
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
            other => format!("{other:?}"),
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
    fn a_batch_is_routed_in_order_and_ends_at_the_first_refusal_that_stops_it() {
        let hub = Hub::new(Clock::system());
        let mut session = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D1", Environment::Sandbox, APP, false)
            .unwrap();
        // A token whose app is gone: the binary API refuses a push to it silently.
        let gone = hub
            .register("D1", Environment::Sandbox, "com.example.gone", false)
            .unwrap();
        let to_gone = |id| PushRequest {
            topic: "com.example.gone".into(),
            ..request(gone, id, 0)
        };
        assert_eq!(hub.push(to_gone(100)), Ok(PushOutcome::Sent));
        let sent = session.rx.try_recv().unwrap();
        assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::NotInstalled));
        let before = hub.recent_events().len();

        let unknown = DeviceToken::new(&[7; 32]).unwrap();
        let batch = vec![
            request(token, 1, 0),
            request(token, 2, 0),
            to_gone(3),
            request(unknown, 4, 0),
            request(token, 5, 0),
        ];
        let stops = |e: &PushError| matches!(e, PushError::UnknownToken);
        assert_eq!(
            hub.push_batch(batch, stops),
            Err((3, PushError::UnknownToken)),
            "the unknown token stops the read; the silent refusal before it does not"
        );
        let delivered: Vec<[u8; 4]> = std::iter::from_fn(|| session.rx.try_recv().ok())
            .map(|n| n.to_message().identifier)
            .collect();
        assert_eq!(
            delivered,
            [1u32.to_be_bytes(), 2u32.to_be_bytes()],
            "those before it are delivered, the one after it is discarded"
        );
        let logged = hub.recent_events();
        assert_eq!(
            state::tests::notification_outcomes(&logged[before..]),
            [
                (1, Outcome::Sent),
                (2, Outcome::Sent),
                (3, Outcome::Unregistered),
                (4, Outcome::Rejected),
            ],
            "one record each, in order, none for the discarded one"
        );
        // With nothing that stops it, every one is taken.
        assert_eq!(
            hub.push_batch(vec![request(token, 6, 0), request(unknown, 7, 0)], |_| {
                false
            }),
            Ok(())
        );
        assert_eq!(
            session.rx.try_recv().unwrap().to_message().identifier,
            6u32.to_be_bytes()
        );
        assert_eq!(hub.push_batch(Vec::new(), |_| true), Ok(()));
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
    fn devices_and_token_owners_are_read_back() {
        let hub = Hub::new(Clock::system());
        let session = hub.connect_device("D2", Environment::Production);
        let _other = hub.connect_device("D1", Environment::Sandbox);
        let token = hub
            .register("D2", Environment::Production, APP, false)
            .unwrap();
        let listed = hub.devices(10);
        let serials: Vec<&str> = listed.iter().map(|d| d.serial.as_str()).collect();
        assert_eq!(serials, ["D1", "D2"]);
        assert!(listed[1].online);
        assert_eq!(listed[1].tokens, [(AppToken::from(APP), token)]);
        assert_eq!(hub.devices(1).len(), 1, "bounded");
        let owner = hub.token_owner(&token).unwrap();
        assert_eq!(
            (owner.serial.as_str(), owner.environment, owner.unregistered),
            ("D2", Environment::Production, false)
        );
        hub.disconnect_device("D2", Environment::Production, session.id);
        assert!(!hub.devices(10)[1].online, "kept, offline");
    }

    #[test]
    fn faults_are_added_hit_used_up_and_logged_and_cost_nothing_when_none_is_set() {
        let hub = Hub::new(Clock::system());
        let probe = Probe {
            on: FaultOn::Binary,
            phase: Phase::Notification,
            token: None,
            topic: Some(APP),
            connection: Some(1),
            serial: None,
        };
        assert_eq!(hub.fault(&probe), None);
        assert!(
            hub.recent_events().is_empty(),
            "a probe with no faults logs nothing"
        );
        let spec: FaultSpec =
            serde_json::from_value(serde_json::json!({"on": "binary", "close": true, "count": 1}))
                .unwrap();
        let fault = hub.add_fault(spec).unwrap();
        assert!(hub.shared.faults_any.load(Ordering::Relaxed));
        let hit = hub.fault(&probe).expect("hit");
        assert_eq!((hit.id.as_str(), hit.effect), ("f1", Effect::Close));
        assert!(
            !hub.shared.faults_any.load(Ordering::Relaxed),
            "used up: the table is empty"
        );
        assert_eq!(hub.fault(&probe), None);
        let logged = hub.recent_events();
        assert_eq!(
            logged,
            [
                Event::FaultAdded {
                    at_ms: logged_at(&logged[0]),
                    fault
                },
                Event::FaultRemoved {
                    at_ms: logged_at(&logged[1]),
                    id: "f1".to_owned(),
                    reason: Removed::UsedUp
                }
            ]
        );
        // As the event stream and the log serialise them.
        let json = serde_json::to_value(&logged[0]).unwrap();
        assert_eq!(json["event"], "fault_added");
        assert_eq!(json["fault"]["id"], "f1");
        assert_eq!(json["fault"]["on"], "binary");
        assert_eq!(json["fault"]["close"], true);
        let json = serde_json::to_value(&logged[1]).unwrap();
        assert_eq!(
            (json["event"].as_str(), json["reason"].as_str()),
            (Some("fault_removed"), Some("used_up"))
        );

        assert!(!hub.remove_fault("f1"));
        hub.add_fault(
            serde_json::from_value(serde_json::json!({"on": "feedback", "hold_ms": 1})).unwrap(),
        )
        .unwrap();
        hub.clear_faults();
        assert!(hub.faults().is_empty());
        assert!(!hub.shared.faults_any.load(Ordering::Relaxed));
    }

    fn logged_at(e: &Event) -> u64 {
        match e {
            Event::FaultAdded { at_ms, .. } | Event::FaultRemoved { at_ms, .. } => *at_ms,
            _ => 0,
        }
    }

    #[test]
    fn provider_connections_are_numbered_and_logged_in_and_out() {
        let hub = Hub::new(Clock::system());
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let one = hub.provider_connected(ProviderEndpoint::Gateway, peer, APP.to_owned());
        let two = hub.provider_connected(ProviderEndpoint::Http2, peer, "token auth".to_owned());
        assert_eq!((one, two), (1, 2));
        hub.provider_disconnected(one, ProviderEndpoint::Gateway);
        let json: Vec<serde_json::Value> = hub
            .recent_events()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(json[0]["event"], "provider_connected");
        assert_eq!(json[0]["peer"], "127.0.0.1:9");
        assert_eq!(json[1]["identity"], "token auth");
        assert_eq!(json[1]["endpoint"], "http2");
        assert_eq!(json[2]["event"], "provider_disconnected");
        assert_eq!(json[2]["connection"], 1);
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
            topic: "com.example.gone".into(),
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
        hub.add_fault(
            serde_json::from_value(serde_json::json!({"on": "feedback", "hold_ms": 1})).unwrap(),
        )
        .unwrap();
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
                faults: 1,
            }
        );
        assert!(hub.faults().is_empty(), "a reset leaves no fault");
        assert!(!hub.shared.faults_any.load(Ordering::Relaxed));
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
