//! The one info line per notification, written after the hub's lock is released, and the
//! summary it turns into when notifications come faster than a person can read.
//!
//! # Exactly one line, naming the final path
//!
//! A notification's info line (`path="provider -> gateway -> device"`) is written when its
//! fate is final, never before: when the device acknowledges it or reports the app gone,
//! when it is rejected, discarded or expires, or when a newer one supersedes it in the
//! store. Sending it, storing it and routing it again after a device dropped are
//! intermediate steps: a `debug` line each (with `step=`, never `path=`), so that even at
//! `debug` every notification has exactly one `path=` line. A notification stored and
//! later delivered says so (`provider -> gateway -> store -> device`); one routed again
//! says how often (`requeued=N`). One still held (queued, stored, awaiting its answer) has
//! no line yet: its line comes with its fate, after a restart too when the store is kept.
//!
//! # Formatted outside any lock
//!
//! The hub's rules only build compact records under the hub's lock (ids, enums and
//! reference counts); [`publish`] runs after the lock is released, and formats the lines
//! from those records. The writer (`src/main.rs`) is a background thread behind a buffer,
//! so that the lines of a busy second reach the terminal in a few large writes.
//!
//! # The summary mode
//!
//! A person watching sees every line of a small test; a load test must not spend its time
//! writing a line per notification. So [`Gate`] counts the final lines of each second
//! ([`crate::settings::Settings::log_lines_per_sec`], 1,000 by default). Past the limit the
//! rest of that second's lines are suppressed, and so is every line of each second that
//! follows one with more final lines than the limit; each second that suppressed any ends
//! in one summary line:
//!
//! ```text
//! 12,345 notifications: 12,300 delivered, 40 expired, 5 rejected: 3 BadDeviceToken, 2 Unregistered;
//! 11,900 lines suppressed, see the delivery log
//! ```
//!
//! The second after one at or below the limit (or after a quiet one) writes its lines again. Nothing is lost uncounted: each
//! suppressed line is counted in exactly one summary, under the gate's small lock. A second's
//! summary is written by the first line of a later second, by a ticker task that runs only
//! while summaries are owed, or when the hub goes away, whichever comes first.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, field, info, Level};

use super::events::{Api, Detail, Event, Note, Outcome, Record};
use super::state::PushError;

/// The target of every per-notification line and summary (what `RUST_LOG` filters on):
/// the delivery log's module, where these lines have always come from.
pub(super) const TARGET: &str = "apns_sim::hub::events";

/// Distinct rejection reasons a summary counts one by one; further ones are counted as
/// `other`, so that free-text reasons cannot grow a second's tally without bound.
pub(super) const MAX_SUMMARY_REASONS: usize = 16;

/// The longest reason key a summary shows, in bytes (a reason is its words up to the first
/// `:` or `(`, which names the rule; the details after it differ per notification).
const MAX_REASON_KEY: usize = 40;

/// How a notification went, as far as its log line is concerned: routed again how often,
/// and whether it waited in the store. Kept with the notification while the hub holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Trail {
    /// It was stored for an offline (or too busy) device at least once.
    pub(super) stored: bool,
    /// Times it was routed again because its device dropped before answering.
    pub(super) requeues: u16,
}

impl Trail {
    /// The trail after one more requeue.
    pub(super) fn requeued(self) -> Trail {
        Trail {
            requeues: self.requeues.saturating_add(1),
            ..self
        }
    }
}

/// Apple's reason name for a refusal by the hub: the word a summary counts it under.
pub(super) fn reason_name(err: &PushError) -> &'static str {
    match err {
        PushError::UnknownToken | PushError::WrongEnvironment { .. } => "BadDeviceToken",
        PushError::WrongTopic { .. } => "DeviceTokenNotForTopic",
        PushError::TooManyRequests { .. } => "TooManyRequests",
        PushError::Unregistered { .. } => "Unregistered",
    }
}

/// What a final line is counted as in a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    /// Acknowledged by its device, never stored.
    Delivered,
    /// Stored, then delivered and acknowledged.
    DeliveredFromStore,
    /// The device reported the app gone.
    NotInstalled,
    /// Replaced in the store by a newer notification.
    Superseded,
    /// Its expiry passed (on arrival, or while stored).
    Expired,
    /// Expiry 0 and its device could not take it.
    Discarded,
    /// Refused (by a gateway or the hub), with the reason's key.
    Rejected(String),
}

impl Fate {
    /// The fate of a notification event, or `None` if `outcome` is an intermediate step
    /// (sent, stored, requeued), whose line is a `debug` one. `reason`: the rejection's key.
    pub(super) fn of(
        outcome: Outcome,
        trail_stored: bool,
        reason: impl FnOnce() -> String,
    ) -> Option<Self> {
        Some(match outcome {
            Outcome::Sent | Outcome::Stored | Outcome::Requeued => return None,
            Outcome::Acknowledged if trail_stored => Fate::DeliveredFromStore,
            Outcome::Acknowledged => Fate::Delivered,
            Outcome::NotInstalled => Fate::NotInstalled,
            Outcome::Superseded => Fate::Superseded,
            Outcome::Expired => Fate::Expired,
            Outcome::Discarded => Fate::Discarded,
            Outcome::Rejected | Outcome::Unregistered | Outcome::Throttled => {
                Fate::Rejected(reason())
            }
        })
    }
}

/// The key a free-text rejection reason is counted under: its words up to the first `:` or
/// `(` (the rule it broke), at most [`MAX_REASON_KEY`] bytes.
fn reason_key(reason: &str) -> String {
    let head = reason.split([':', '(']).next().unwrap_or("").trim();
    let mut end = head.len().min(MAX_REASON_KEY);
    while !head.is_char_boundary(end) {
        end -= 1;
    }
    head[..end].to_owned()
}

/// The final lines of one second, counted by fate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Acknowledged, never stored.
    pub(super) delivered: u64,
    /// Stored, then acknowledged.
    pub(super) from_store: u64,
    /// Reported not installed.
    pub(super) not_installed: u64,
    /// Superseded in the store.
    pub(super) superseded: u64,
    /// Expired.
    pub(super) expired: u64,
    /// Discarded.
    pub(super) discarded: u64,
    /// Rejected, by reason key (at most [`MAX_SUMMARY_REASONS`] keys, then `other`).
    pub(super) rejected: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&mut self, fate: Fate) {
        match fate {
            Fate::Delivered => self.delivered += 1,
            Fate::DeliveredFromStore => self.from_store += 1,
            Fate::NotInstalled => self.not_installed += 1,
            Fate::Superseded => self.superseded += 1,
            Fate::Expired => self.expired += 1,
            Fate::Discarded => self.discarded += 1,
            Fate::Rejected(reason) => {
                let key = if self.rejected.contains_key(&reason)
                    || self.rejected.len() < MAX_SUMMARY_REASONS
                {
                    reason
                } else {
                    "other".to_owned()
                };
                *self.rejected.entry(key).or_default() += 1;
            }
        }
    }

    /// Every notification counted.
    pub(super) fn total(&self) -> u64 {
        self.delivered
            + self.from_store
            + self.not_installed
            + self.superseded
            + self.expired
            + self.discarded
            + self.rejected.values().sum::<u64>()
    }
}

/// One second's summary: what its final lines were, and how many of them were not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Summary {
    /// The second it covers, counted from the gate's start.
    pub(super) second: u64,
    /// Its final lines, written or not.
    pub(super) tally: Tally,
    /// How many of them were not written.
    pub(super) suppressed: u64,
}

/// `n` with a comma between thousands: `12,345`.
struct Thousands(u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Summary {
    /// `12,345 notifications: 12,300 delivered, 5 rejected: 3 BadDeviceToken, 2
    /// Unregistered; 11,900 lines suppressed, see the delivery log`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        write!(f, "{} notifications:", Thousands(t.total()))?;
        let parts = [
            (t.delivered, "delivered"),
            (t.from_store, "stored and later delivered"),
            (t.not_installed, "not installed"),
            (t.superseded, "superseded"),
            (t.expired, "expired"),
            (t.discarded, "discarded"),
        ];
        let mut first = true;
        for (n, words) in parts.iter().filter(|(n, _)| *n > 0) {
            let sep = if first { " " } else { ", " };
            write!(f, "{sep}{} {words}", Thousands(*n))?;
            first = false;
        }
        let rejected: u64 = t.rejected.values().sum();
        if rejected > 0 {
            let sep = if first { " " } else { ", " };
            write!(f, "{sep}{} rejected:", Thousands(rejected))?;
            let mut by_count: Vec<(&String, &u64)> = t.rejected.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (i, (reason, n)) in by_count.into_iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}{} {reason}", Thousands(*n))?;
            }
        }
        write!(
            f,
            "; {} lines suppressed, see the delivery log",
            Thousands(self.suppressed)
        )
    }
}

/// Whether a final line is written or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Write it.
    Write,
    /// Count it in this second's summary instead.
    Suppress,
}

/// The rate rule, as plain data given the time (milliseconds from any fixed start), so it is
/// tested with a hand-driven clock. See the module docs.
#[derive(Debug)]
pub(super) struct Gate {
    /// Final lines a second may write (0: no limit, never a summary).
    limit: u64,
    /// The second being counted.
    second: u64,
    /// Whether this second's lines are suppressed (from its start, or since it passed the
    /// limit).
    suppressing: bool,
    /// This second's final lines, written or not.
    tally: Tally,
    /// How many of them were suppressed.
    suppressed: u64,
    /// Whether a ticker task is running for this gate (so that at most one does).
    ticking: bool,
}

impl Gate {
    /// A gate writing at most `limit` final lines a second (0: every line, always).
    pub(super) fn new(limit: u32) -> Self {
        Gate {
            limit: u64::from(limit),
            second: 0,
            suppressing: false,
            tally: Tally::default(),
            suppressed: 0,
            ticking: false,
        }
    }

    /// Decides one final line at `now_ms`: written or counted. Returns the summary of an
    /// earlier second this closed, if that second owed one (write it first).
    pub(super) fn admit(&mut self, now_ms: u64, fate: Fate) -> (Admit, Option<Summary>) {
        let closed = self.roll(now_ms / 1000);
        self.tally.count(fate);
        if !self.suppressing && self.limit > 0 && self.tally.total() > self.limit {
            self.suppressing = true;
        }
        let admit = if self.suppressing {
            self.suppressed += 1;
            Admit::Suppress
        } else {
            Admit::Write
        };
        (admit, closed)
    }

    /// Closes the second being counted if `now_ms` lies past it, and returns its summary if
    /// it owed one.
    pub(super) fn tick(&mut self, now_ms: u64) -> Option<Summary> {
        self.roll(now_ms / 1000)
    }

    /// Whether a summary is owed or the gate is suppressing: someone must tick it.
    pub(super) fn busy(&self) -> bool {
        self.suppressing || self.suppressed > 0
    }

    /// The summary of the second being counted if it owes one, whatever the time (the hub
    /// is going away).
    pub(super) fn flush(&mut self) -> Option<Summary> {
        self.roll(u64::MAX)
    }

    /// Moves to `second` if it is later: the second left behind yields its summary if it
    /// suppressed anything; the new one starts suppressing if the last one had more final
    /// lines than the limit and was just before it (the rate is still high).
    fn roll(&mut self, second: u64) -> Option<Summary> {
        if second <= self.second {
            return None;
        }
        let tally = std::mem::take(&mut self.tally);
        let still_high = self.limit > 0 && second == self.second + 1 && tally.total() > self.limit;
        let summary = (self.suppressed > 0).then_some(Summary {
            second: self.second,
            tally,
            suppressed: self.suppressed,
        });
        self.second = second;
        self.suppressed = 0;
        self.suppressing = still_high;
        summary
    }
}

/// The hub's gate on the real clock (a monotonic one: the settable simulator clock must not
/// bend the rate), with the ticker that writes owed summaries when no line comes to do it.
#[derive(Debug, Clone)]
pub(super) struct Lines {
    /// Shared with the ticker, which holds it weakly.
    inner: Arc<LinesInner>,
}

#[derive(Debug)]
struct LinesInner {
    /// The rate rule, behind its own small lock: held to count a line, never to format one.
    gate: Mutex<Gate>,
    /// Time zero of the gate's seconds.
    start: Instant,
}

impl Lines {
    /// A gate writing at most `limit` final lines a second (0: no limit).
    pub(super) fn new(limit: u32) -> Self {
        Lines {
            inner: Arc::new(LinesInner {
                gate: Mutex::new(Gate::new(limit)),
                start: Instant::now(),
            }),
        }
    }
}

impl LinesInner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        // Counting cannot leave the gate half-changed in a way that matters: keep going.
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LinesInner {
    fn drop(&mut self) {
        // The hub is going away: what the last second suppressed is still counted.
        let summary = self.lock().flush();
        if let Some(summary) = summary {
            write_summary(&summary);
        }
    }
}

/// Writes a summary line.
fn write_summary(summary: &Summary) {
    info!(
        target: TARGET,
        notifications = summary.tally.total(),
        suppressed = summary.suppressed,
        "{summary}"
    );
}

/// Starts the ticker that writes owed summaries once a second, if a tokio runtime is there
/// to run it (without one, the next line or the hub's end writes them). It ends once the
/// gate owes nothing and suppresses nothing, and with the hub.
fn start_ticker(inner: &Arc<LinesInner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        inner.lock().ticking = false;
        return;
    };
    let weak: Weak<LinesInner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        loop {
            // 1. Sleep to just past the end of the second being counted.
            let Some(wait) = weak.upgrade().map(|i| 1001 - i.now_ms() % 1000) else {
                return;
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            // 2. Close it; stop once nothing is owed (decided under the gate's lock, so a
            //    line suppressed meanwhile starts a new ticker).
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let (summary, more) = {
                let mut gate = inner.lock();
                let summary = gate.tick(inner.now_ms());
                let more = gate.busy();
                gate.ticking = more;
                (summary, more)
            };
            if let Some(summary) = summary {
                write_summary(&summary);
            }
            if !more {
                return;
            }
        }
    });
}

/// Whether a record would write a line at the levels enabled now: what [`super::Hub`]
/// copies out from under its lock for [`publish`].
pub(super) fn wanted(record: &Record) -> bool {
    match record {
        Record::Note { outcome, .. } => match outcome {
            Outcome::Sent | Outcome::Stored | Outcome::Requeued => {
                tracing::enabled!(target: TARGET, Level::DEBUG)
            }
            _ => tracing::enabled!(target: TARGET, Level::INFO),
        },
        Record::Presence(_) | Record::Registered(_) => false,
        Record::Event(event) => {
            matches!(**event, Event::Notification { .. })
                && tracing::enabled!(target: TARGET, Level::INFO)
        }
    }
}

/// Writes the lines of `records` (the hub's lock released): a `debug` line for each
/// intermediate step, and each final line through the gate, written or counted.
pub(super) fn publish(lines: &Lines, records: &[Record]) {
    for record in records.iter().filter(|r| wanted(r)) {
        match record {
            Record::Note {
                note,
                outcome,
                detail,
                fault,
                trail,
                ..
            } => {
                let reason = || match detail {
                    Detail::Refused { reason, .. } => (*reason).to_owned(),
                    other => reason_key(&other.text()),
                };
                match Fate::of(*outcome, trail.stored, reason) {
                    None => step(note, *outcome, detail, *trail),
                    Some(fate) => {
                        if admit(lines, fate) {
                            final_line(note, fault.as_deref(), *outcome, detail, *trail);
                        }
                    }
                }
            }
            Record::Event(event) => {
                if let Event::Notification {
                    api,
                    apns_id,
                    identifier,
                    topic,
                    token,
                    detail,
                    fault,
                    ..
                } = &**event
                {
                    if admit(lines, Fate::Rejected(reason_key(detail))) {
                        info!(
                            target: TARGET,
                            api = api.as_str(),
                            %apns_id,
                            id = identifier,
                            token = token.as_ref().map(field::display),
                            %topic,
                            path = %format_args!("provider -> {} -> rejected", gateway(*api)),
                            fault = fault.as_deref(),
                            reason = %detail,
                        );
                    }
                }
            }
            // No line of their own (and `wanted` filtered them out).
            Record::Presence(_) | Record::Registered(_) => {}
        }
    }
}

/// Counts one final line; true if it is to be written.
fn admit(lines: &Lines, fate: Fate) -> bool {
    let inner = &lines.inner;
    let (admit, closed, start) = {
        let mut gate = inner.lock();
        let (admit, closed) = gate.admit(inner.now_ms(), fate);
        let start = gate.busy() && !gate.ticking;
        if start {
            gate.ticking = true;
        }
        (admit, closed, start)
    };
    if let Some(summary) = closed {
        write_summary(&summary);
    }
    if start {
        start_ticker(inner);
    }
    admit == Admit::Write
}

/// The endpoint's name in a path.
fn gateway(api: Api) -> &'static str {
    match api {
        Api::Binary => "gateway",
        Api::Http2 => "http2",
    }
}

/// Where a final path ends, after the gateway (and the store, if it was stored).
fn end(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Acknowledged => "device",
        Outcome::NotInstalled => "device -> not installed",
        Outcome::Superseded => "superseded",
        Outcome::Expired => "expired",
        Outcome::Discarded => "discarded",
        Outcome::Rejected => "rejected",
        Outcome::Unregistered => "unregistered",
        Outcome::Throttled => "throttled",
        Outcome::Sent | Outcome::Stored | Outcome::Requeued => "",
    }
}

/// The one info line of a notification the hub held, naming its final path.
fn final_line(note: &Note, fault: Option<&str>, outcome: Outcome, detail: &Detail, trail: Trail) {
    let about = note.subject(fault);
    let store = if trail.stored { " -> store" } else { "" };
    info!(
        target: TARGET,
        api = note.api.as_str(),
        apns_id = %note.apns_id,
        id = u32::from_be_bytes(note.identifier),
        token = %note.token,
        topic = %note.topic,
        path = %format_args!("provider -> {}{store} -> {}", gateway(note.api), end(outcome)),
        requeued = (trail.requeues > 0).then_some(trail.requeues),
        fault,
        detail = %about.annotate(detail.text()),
    );
}

/// The `debug` line of an intermediate step (sent, stored, routed again).
fn step(note: &Note, outcome: Outcome, detail: &Detail, trail: Trail) {
    debug!(
        target: TARGET,
        api = note.api.as_str(),
        apns_id = %note.apns_id,
        id = u32::from_be_bytes(note.identifier),
        token = %note.token,
        step = outcome.as_str(),
        requeued = (trail.requeues > 0).then_some(trail.requeues),
        detail = %detail.text(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(reason: &str) -> Fate {
        Fate::Rejected(reason.to_owned())
    }

    /// Feeds `n` fates at `now_ms` and returns how many were written and the summaries.
    fn feed(
        gate: &mut Gate,
        now_ms: u64,
        fates: impl IntoIterator<Item = Fate>,
    ) -> (u64, Vec<Summary>) {
        let mut written = 0;
        let mut summaries = Vec::new();
        for fate in fates {
            let (admit, closed) = gate.admit(now_ms, fate);
            written += u64::from(admit == Admit::Write);
            summaries.extend(closed);
        }
        (written, summaries)
    }

    fn delivered(n: usize) -> impl Iterator<Item = Fate> {
        std::iter::repeat_n(Fate::Delivered, n)
    }

    #[test]
    fn below_the_rate_every_line_is_written_and_nothing_is_summarised() {
        let mut gate = Gate::new(10);
        for second in 0..5 {
            let (written, summaries) = feed(&mut gate, second * 1000 + 500, delivered(10));
            assert_eq!((written, summaries.len()), (10, 0));
        }
        assert!(!gate.busy());
        assert_eq!(gate.flush(), None);
    }

    #[test]
    fn above_the_rate_it_summarises_each_second_exactly_and_comes_back() {
        let mut gate = Gate::new(10);
        // Second 0: 25 lines; the first 10 are written, 15 suppressed.
        let (written, summaries) = feed(
            &mut gate,
            100,
            delivered(20).chain([reject("BadDeviceToken")].into_iter().cycle().take(5)),
        );
        assert_eq!((written, summaries.len()), (10, 0));
        assert!(gate.busy());
        // Second 1: the rate stayed high, so all of its 12 lines are suppressed; its first
        // line closed second 0.
        let (written, summaries) = feed(&mut gate, 1_200, delivered(12));
        assert_eq!(written, 0);
        let mut expected = Tally {
            delivered: 20,
            ..Tally::default()
        };
        expected.rejected.insert("BadDeviceToken".to_owned(), 5);
        assert_eq!(
            summaries,
            [Summary {
                second: 0,
                tally: expected,
                suppressed: 15
            }]
        );
        // The ticker closes second 1 with nobody pushing.
        assert_eq!(gate.tick(1_999), None, "still in second 1");
        let summary = gate.tick(2_001).expect("second 1 owed a summary");
        assert_eq!(
            (summary.second, summary.suppressed, summary.tally.total()),
            (1, 12, 12)
        );
        // 12 > 10 in second 1, so second 2 starts suppressing; it sees only 3 lines.
        let (written, _) = feed(&mut gate, 2_500, delivered(3));
        assert_eq!(written, 0);
        // Second 3: back to lines, as second 2 was below the rate.
        let (written, summaries) = feed(&mut gate, 3_001, delivered(4));
        assert_eq!(written, 4);
        assert_eq!(
            summaries
                .iter()
                .map(|s| (s.second, s.suppressed))
                .collect::<Vec<_>>(),
            [(2, 3)]
        );
        assert!(!gate.busy());
        assert_eq!(gate.tick(10_000), None, "nothing owed");
    }

    #[test]
    fn every_line_is_written_or_counted_once() {
        // A bursty load over 20 s with a hand-driven clock: written + suppressed is exact.
        let mut gate = Gate::new(50);
        let (mut written, mut suppressed, mut total) = (0, 0, 0);
        for second in 0..20u64 {
            let n = [5, 80, 200, 49, 51, 0, 300][second as usize % 7];
            for i in 0..n {
                let (admit, closed) = gate.admit(second * 1000 + i % 1000, Fate::Expired);
                written += u64::from(admit == Admit::Write);
                if let Some(s) = closed {
                    suppressed += s.suppressed;
                    assert!(s.suppressed <= s.tally.total());
                }
                total += 1;
            }
            if let Some(s) = gate.tick(second * 1000 + 999) {
                suppressed += s.suppressed;
            }
        }
        if let Some(s) = gate.flush() {
            suppressed += s.suppressed;
        }
        assert_eq!(written + suppressed, total);
        assert!(suppressed > 0 && written > 0);
    }

    #[test]
    fn a_gap_brings_the_lines_back_and_zero_means_no_limit() {
        let mut gate = Gate::new(3);
        feed(&mut gate, 0, delivered(5));
        // Nothing for two seconds: the rate dropped, so second 2 writes again.
        let (written, summaries) = feed(&mut gate, 2_000, delivered(2));
        assert_eq!((written, summaries.len()), (2, 1));
        let mut open = Gate::new(0);
        let (written, summaries) = feed(&mut open, 0, delivered(100_000));
        assert_eq!((written, summaries.len(), open.busy()), (100_000, 0, false));
    }

    #[test]
    fn reasons_are_bounded_and_the_summary_reads_like_a_sentence() {
        let mut tally = Tally::default();
        for i in 0..MAX_SUMMARY_REASONS + 5 {
            tally.count(reject(&format!("R{i}")));
        }
        assert_eq!(tally.rejected.len(), MAX_SUMMARY_REASONS + 1);
        assert_eq!(tally.rejected["other"], 5);
        assert_eq!(tally.total(), (MAX_SUMMARY_REASONS + 5) as u64);

        let mut tally = Tally {
            delivered: 12_300,
            expired: 40,
            ..Tally::default()
        };
        tally.rejected.insert("Unregistered".into(), 2);
        tally.rejected.insert("BadDeviceToken".into(), 3);
        let summary = Summary {
            second: 7,
            tally,
            suppressed: 11_900,
        };
        assert_eq!(
            summary.to_string(),
            "12,345 notifications: 12,300 delivered, 40 expired, 5 rejected: 3 BadDeviceToken, \
             2 Unregistered; 11,900 lines suppressed, see the delivery log"
        );
        assert_eq!(Thousands(999).to_string(), "999");
        assert_eq!(Thousands(1_000_000).to_string(), "1,000,000");
        assert_eq!(
            reason_key("invalid token size (31 bytes)"),
            "invalid token size"
        );
        assert_eq!(
            reason_key("BadDeviceToken: the token is not hex"),
            "BadDeviceToken"
        );
        assert_eq!(reason_key(&"é".repeat(40)).len(), 40);
    }

    #[test]
    fn only_final_outcomes_have_a_fate() {
        let why = || "x".to_owned();
        for step in [Outcome::Sent, Outcome::Stored, Outcome::Requeued] {
            assert_eq!(Fate::of(step, true, why), None);
        }
        assert_eq!(
            Fate::of(Outcome::Acknowledged, false, why),
            Some(Fate::Delivered)
        );
        assert_eq!(
            Fate::of(Outcome::Acknowledged, true, why),
            Some(Fate::DeliveredFromStore)
        );
        assert_eq!(
            Fate::of(Outcome::Unregistered, false, why),
            Some(reject("x"))
        );
        assert_eq!(Trail::default().requeued().requeued().requeues, 2);
    }
}
