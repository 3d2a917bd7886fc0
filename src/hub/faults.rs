//! Fault injection: the table of faults the control API adds (`POST /v1/faults`), and the
//! pure rules that decide whether an event at an endpoint is hit by one.
//!
//! A fault acts on one endpoint (`on`: `http2`, `binary`, `devices`, `feedback`), may narrow
//! what it matches (`match`: a token, a topic, a provider connection, a device serial, every
//! Nth matching event, a rate), has exactly one effect (what the endpoint then does instead of
//! its ordinary answer) and ends after `count` hits or `for_ms` milliseconds of the hub's
//! clock, whichever comes first (neither: it stays until removed).
//!
//! The endpoints ask [`super::Hub::fault`] at each point where an effect can apply, with a
//! [`Probe`] saying what is happening; the hub answers from this table under its lock. The
//! hub keeps an "any faults" flag beside the lock, so with an empty table a probe costs one
//! relaxed atomic load and no lock.
//!
//! # `every` and `rate`, deterministically
//!
//! Each fault counts the events it matched (`seen`). With `every: N` only every Nth of them is
//! hit (the Nth, the 2Nth, …). With `rate: r` (0 to 1) the k-th matching event is hit when
//! `floor(k·r)` grows at k, so exactly `floor(k·r)` of the first k are hit, evenly spread: no
//! random numbers, so a test that says `rate: 0.5` knows the 2nd, 4th, 6th … are hit. Both
//! may be given; `every` is applied first.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::protocol::token::DeviceToken;

/// The most faults the table holds at once. Every probe walks the table under the hub's lock,
/// so it must stay short; a test suite needs a handful at a time, and a runaway script that
/// keeps adding faults gets a 400 instead of slowing every push.
pub const MAX_FAULTS: usize = 64;

/// The longest delay or hold a fault may ask for, in milliseconds: long enough to trip any
/// client timeout worth testing, short enough that a forgotten fault cannot pin a connection
/// (and a graceful shutdown) for hours. Shutdown ends a delay or hold at once anyway.
pub const MAX_DELAY_MS: u64 = 600_000;

/// The endpoint a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FaultOn {
    /// The HTTP/2 provider API.
    Http2,
    /// The legacy binary gateway.
    Binary,
    /// The device endpoint (the simulated devices' connections).
    Devices,
    /// The feedback service.
    Feedback,
}

impl FaultOn {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultOn::Http2 => "http2",
            FaultOn::Binary => "binary",
            FaultOn::Devices => "devices",
            FaultOn::Feedback => "feedback",
        }
    }
}

/// What a fault matches; every field given must match. Omitted: every event of its endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultMatch {
    /// Only notifications to this device token (hex). http2, binary, devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Only notifications of this topic (http2: `apns-topic` without its suffix; binary and
    /// feedback: the certificate's topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Only this provider connection (the number of its `provider_connected` event).
    /// http2, binary, feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// Only this device (its serial number). devices only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Only every Nth matching event (N ≥ 1): the Nth, the 2Nth, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub every: Option<u64>,
    /// Only this share of matching events, 0 to 1, spread evenly and deterministically (0.5:
    /// the 2nd, 4th, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub rate: Option<f64>,
}

// `rate` is checked to be a finite number in 0..=1 before a match is kept, so equality is
// total on every kept value (the log's events compare with `Eq`).
impl Eq for FaultMatch {}

/// `respond`: answer an HTTP/2 request with this status and reason instead of routing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// The HTTP status: one Apple answers with (400, 403, 404, 405, 410, 413, 429, 500, 503).
    pub status: u16,
    /// The reason, one Apple defines for that status (e.g. 500 `InternalServerError`, 503
    /// `ServiceUnavailable`, 429 `TooManyRequests`, 403 `Forbidden`, 410 `ExpiredToken` or
    /// `Unregistered`). Omitted: the status's usual reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 410 only: the body's `timestamp` in milliseconds. Omitted: the hub's clock now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
}

/// `goaway`: after answering the request it hits, close its HTTP/2 connection with GOAWAY.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Goaway {
    /// The reason in the GOAWAY's debug data (`{"reason":…}`). Omitted: `Shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `error`: refuse the binary notification it hits with this error-response status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BinaryError {
    /// The status byte: one Apple defines (1 to 8, 10, 128, 255; 1 processing error, 10
    /// shutdown, 255 unknown are the ones a healthy provider can meet).
    pub status: u8,
}

/// A fault as added: what it acts on, what it matches, its effect and when it ends. Exactly
/// one effect field is given, and it must be one the endpoint has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The endpoint it acts on.
    pub on: FaultOn,
    /// What it matches; omitted: everything on its endpoint.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<FaultMatch>,
    /// http2: answer with this status and reason instead of routing the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<Respond>,
    /// http2: route, then answer this many ms later; binary: wait this many ms before taking
    /// the notification (and so before reading on); devices: pass the device's
    /// acknowledgement on this many ms late. At most 600000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 600000)]
    pub delay_ms: Option<u64>,
    /// http2: answer the request, then close the connection with GOAWAY (after N streams:
    /// `"match": {"every": N}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goaway: Option<Goaway>,
    /// http2: close new connections right after the TLS handshake, before any HTTP/2 frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse: Option<bool>,
    /// binary: error response with this status for the notification, then Apple's close and
    /// discard of what follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<BinaryError>,
    /// binary: take the notification, then close the connection without a byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<bool>,
    /// devices: drop the device's connection instead of delivering the notification (it is
    /// routed again: stored, or sent on the device's next connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<bool>,
    /// devices: deliver, but never pass the device's acknowledgement on (the notification
    /// stays pending and is routed again when the connection ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withhold_ack: Option<bool>,
    /// feedback: when there are no tuples to send, hold the connection open this many ms (or
    /// until the provider closes) instead of closing at once (spec §9 item 6). At most 600000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 600000)]
    pub hold_ms: Option<u64>,
    /// Used up after this many hits (≥ 1). Omitted: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub count: Option<u64>,
    /// Expires this many ms (of the hub's clock) after it was added (≥ 1). Omitted: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub for_ms: Option<u64>,
}

/// A fault in the table: its spec, its id and how it has been used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Fault {
    /// Its id (`f1`, `f2`, …), never reused by this simulator.
    pub id: String,
    /// What was added.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// How many events it has hit.
    pub hits: u64,
    /// Hits left before it is used up (`null`: no `count`).
    pub remaining: Option<u64>,
    /// When it expires, in ms since the epoch on the hub's clock (`null`: no `for_ms`).
    pub expires_at_ms: Option<u64>,
}

/// What a hit endpoint does: the spec's one effect, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// http2: this status and reason (checked by the control API against Apple's list), with
    /// the 410 timestamp if given.
    Respond {
        /// The HTTP status.
        status: u16,
        /// The reason; `None`: the status's usual one.
        reason: Option<String>,
        /// The 410 timestamp, if given.
        timestamp_ms: Option<u64>,
    },
    /// http2, binary, devices: wait this long (see [`FaultSpec::delay_ms`]).
    Delay(u64),
    /// http2: GOAWAY with this reason (`None`: Shutdown) after the answer.
    Goaway(Option<String>),
    /// http2: close a new connection at once.
    Refuse,
    /// binary: error response with this status byte.
    Error(u8),
    /// binary: take the notification, then close.
    Close,
    /// devices: drop the connection instead of delivering.
    Drop,
    /// devices: never pass the acknowledgement on.
    WithholdAck,
    /// feedback: hold an empty connection open this long.
    Hold(u64),
}

impl Effect {
    /// When the effect applies: when a connection opens, or at each notification.
    fn phase(&self) -> Phase {
        match self {
            Effect::Refuse | Effect::Hold(_) => Phase::Connection,
            _ => Phase::Notification,
        }
    }
}

/// Where in an endpoint's work a probe is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A provider connection was accepted (http2: refuse; feedback: hold).
    Connection,
    /// A notification is being handled (pushed, delivered, answered).
    Notification,
}

/// What is happening at an endpoint, for the table to match against.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The endpoint.
    pub on: FaultOn,
    /// The point in its work.
    pub phase: Phase,
    /// The notification's token, if there is a notification.
    pub token: Option<&'a DeviceToken>,
    /// The topic of the request or connection, if known.
    pub topic: Option<&'a str>,
    /// The provider connection's number, if a provider connection.
    pub connection: Option<u64>,
    /// The device's serial, on the device endpoint.
    pub serial: Option<&'a str>,
}

/// A fault that hit: its id (for the delivery log) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The fault's id.
    pub id: String,
    /// Its effect.
    pub effect: Effect,
}

/// Why a fault left the table (the `fault_removed` event's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Removed {
    /// Removed through the control API (or a reset).
    Removed,
    /// Its `count` of hits is spent.
    UsedUp,
    /// Its `for_ms` passed.
    Expired,
}

/// A refused spec: the JSON field at fault (`match.rate`, `respond`, …) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct SpecError {
    /// The field, with its path (`match.token`).
    pub field: String,
    /// What is wrong, in words.
    pub error: String,
}

impl SpecError {
    fn new(field: &str, error: impl Into<String>) -> Self {
        SpecError {
            field: field.to_owned(),
            error: error.into(),
        }
    }
}

/// One fault in the table with what its rules need.
#[derive(Debug, Clone)]
struct Entry {
    /// What the API shows.
    fault: Fault,
    /// The checked effect.
    effect: Effect,
    /// `match.token`, parsed.
    token: Option<DeviceToken>,
    /// Matching events seen (for `every` and `rate`).
    seen: u64,
}

impl Entry {
    /// Whether the probe is about what this fault matches (before `every` and `rate`).
    fn matches(&self, probe: &Probe<'_>) -> bool {
        let spec = &self.fault.spec;
        if spec.on != probe.on || self.effect.phase() != probe.phase {
            return false;
        }
        let Some(m) = &spec.matches else {
            return true;
        };
        self.token.is_none_or(|t| probe.token == Some(&t))
            && m.topic.as_deref().is_none_or(|t| probe.topic == Some(t))
            && m.connection.is_none_or(|c| probe.connection == Some(c))
            && m.serial.as_deref().is_none_or(|s| probe.serial == Some(s))
    }

    /// Counts a matching event and says whether `every` and `rate` let it be hit.
    fn gate(&mut self) -> bool {
        self.seen += 1;
        let Some(m) = &self.fault.spec.matches else {
            return true;
        };
        let mut k = self.seen;
        if let Some(every) = m.every {
            if !k.is_multiple_of(every) {
                return false;
            }
            // Among the events `every` lets through, this is the k-th.
            k /= every;
        }
        match m.rate {
            None => true,
            Some(r) => (k as f64 * r).floor() > ((k - 1) as f64 * r).floor(),
        }
    }
}

/// The fault table: at most [`MAX_FAULTS`], in the order they were added (the first that
/// matches an event hits it).
#[derive(Debug, Default)]
pub(super) struct FaultTable {
    /// The faults, oldest first.
    entries: VecDeque<Entry>,
    /// The last id number handed out.
    next_id: u64,
}

/// Checks a spec and returns its one effect and its parsed token.
pub fn check(spec: &FaultSpec) -> Result<(Effect, Option<DeviceToken>), SpecError> {
    let limit = |field: &str, ms: u64| {
        if ms > MAX_DELAY_MS {
            Err(SpecError::new(
                field,
                format!("{ms} is over the limit of {MAX_DELAY_MS} ms"),
            ))
        } else {
            Ok(ms)
        }
    };
    let yes = |field: &str, v: bool| {
        if v {
            Ok(())
        } else {
            Err(SpecError::new(
                field,
                "false is not an effect: give true, or leave the field out",
            ))
        }
    };
    let mut effects: Vec<(&str, Effect)> = Vec::new();
    if let Some(r) = &spec.respond {
        effects.push((
            "respond",
            Effect::Respond {
                status: r.status,
                reason: r.reason.clone(),
                timestamp_ms: r.timestamp_ms,
            },
        ));
    }
    if let Some(ms) = spec.delay_ms {
        effects.push(("delay_ms", Effect::Delay(limit("delay_ms", ms)?)));
    }
    if let Some(g) = &spec.goaway {
        effects.push(("goaway", Effect::Goaway(g.reason.clone())));
    }
    if let Some(v) = spec.refuse {
        yes("refuse", v)?;
        effects.push(("refuse", Effect::Refuse));
    }
    if let Some(e) = &spec.error {
        effects.push(("error", Effect::Error(e.status)));
    }
    if let Some(v) = spec.close {
        yes("close", v)?;
        effects.push(("close", Effect::Close));
    }
    if let Some(v) = spec.drop {
        yes("drop", v)?;
        effects.push(("drop", Effect::Drop));
    }
    if let Some(v) = spec.withhold_ack {
        yes("withhold_ack", v)?;
        effects.push(("withhold_ack", Effect::WithholdAck));
    }
    if let Some(ms) = spec.hold_ms {
        effects.push(("hold_ms", Effect::Hold(limit("hold_ms", ms)?)));
    }
    let (field, effect) = match effects.len() {
        0 => {
            return Err(SpecError::new(
                "on",
                format!(
                    "no effect given; {} takes {}",
                    spec.on.as_str(),
                    effects_of(spec.on).join(", ")
                ),
            ))
        }
        1 => effects.remove(0),
        _ => {
            return Err(SpecError::new(
                effects[1].0,
                format!("a fault has one effect, and {} is given too", effects[0].0),
            ))
        }
    };
    if !effects_of(spec.on).contains(&field) {
        return Err(SpecError::new(
            field,
            format!(
                "not an effect of {}, which takes {}",
                spec.on.as_str(),
                effects_of(spec.on).join(", ")
            ),
        ));
    }
    if let Effect::Error(status) = effect {
        if !matches!(status, 1..=8 | 10 | 128 | 255) {
            return Err(SpecError::new(
                "error.status",
                format!(
                    "{status} is not an error-response status Apple defines (1 to 8, 10, 128, 255)"
                ),
            ));
        }
    }
    if spec.count == Some(0) {
        return Err(SpecError::new("count", "must be at least 1"));
    }
    if spec.for_ms == Some(0) {
        return Err(SpecError::new("for_ms", "must be at least 1"));
    }
    let mut token = None;
    if let Some(m) = &spec.matches {
        token = m
            .token
            .as_deref()
            .map(|t| {
                DeviceToken::from_hex(t)
                    .map_err(|e| SpecError::new("match.token", format!("not a device token: {e}")))
            })
            .transpose()?;
        if m.every == Some(0) {
            return Err(SpecError::new("match.every", "must be at least 1"));
        }
        if let Some(r) = m.rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(SpecError::new(
                    "match.rate",
                    format!("{r} is not within 0 to 1"),
                ));
            }
        }
        let applies = |field: &str, given: bool, endpoints: &[FaultOn]| {
            if given && !endpoints.contains(&spec.on) {
                let names: Vec<&str> = endpoints.iter().map(|e| e.as_str()).collect();
                Err(SpecError::new(
                    field,
                    format!(
                        "{} cannot match this; only {} can",
                        spec.on.as_str(),
                        names.join(", ")
                    ),
                ))
            } else {
                Ok(())
            }
        };
        use FaultOn::*;
        if m.token.is_some() && effect.phase() == Phase::Connection {
            return Err(SpecError::new(
                "match.token",
                format!(
                    "{field} acts on a connection as it opens, before any notification has a token"
                ),
            ));
        }
        applies("match.token", m.token.is_some(), &[Http2, Binary, Devices])?;
        applies("match.topic", m.topic.is_some(), &[Http2, Binary, Feedback])?;
        applies(
            "match.connection",
            m.connection.is_some(),
            &[Http2, Binary, Feedback],
        )?;
        applies("match.serial", m.serial.is_some(), &[Devices])?;
    }
    Ok((effect, token))
}

/// The effect fields an endpoint takes.
pub fn effects_of(on: FaultOn) -> &'static [&'static str] {
    match on {
        FaultOn::Http2 => &["respond", "delay_ms", "goaway", "refuse"],
        FaultOn::Binary => &["error", "close", "delay_ms"],
        FaultOn::Devices => &["drop", "withhold_ack", "delay_ms"],
        FaultOn::Feedback => &["hold_ms"],
    }
}

impl FaultTable {
    /// Whether it holds any fault.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a checked spec at `now_ms`: the fault as listed, or why it was refused.
    pub(super) fn add(&mut self, mut spec: FaultSpec, now_ms: u64) -> Result<Fault, SpecError> {
        let (effect, token) = check(&spec)?;
        // Listed as the log writes tokens: lowercase hex.
        if let (Some(m), Some(t)) = (spec.matches.as_mut(), token) {
            m.token = Some(t.to_hex());
        }
        if self.entries.len() >= MAX_FAULTS {
            return Err(SpecError::new(
                "on",
                format!("{MAX_FAULTS} faults are already set; remove one first"),
            ));
        }
        self.next_id += 1;
        let fault = Fault {
            id: format!("f{}", self.next_id),
            hits: 0,
            remaining: spec.count,
            expires_at_ms: spec.for_ms.map(|ms| now_ms.saturating_add(ms)),
            spec,
        };
        self.entries.push_back(Entry {
            fault: fault.clone(),
            effect,
            token,
            seen: 0,
        });
        Ok(fault)
    }

    /// Removes the fault `id`; false if there is none.
    pub(super) fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.fault.id != id);
        self.entries.len() != before
    }

    /// Removes every fault and returns their ids.
    pub(super) fn clear(&mut self) -> Vec<String> {
        self.entries.drain(..).map(|e| e.fault.id).collect()
    }

    /// Removes the faults whose deadline passed, and returns their ids.
    pub(super) fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.entries.retain(|e| {
            let keep = e.fault.expires_at_ms.is_none_or(|at| now_ms < at);
            if !keep {
                gone.push(e.fault.id.clone());
            }
            keep
        });
        gone
    }

    /// Every fault, oldest first.
    pub(super) fn list(&self) -> Vec<Fault> {
        self.entries.iter().map(|e| e.fault.clone()).collect()
    }

    /// The first fault that hits the probe's event, counted; and its id if that hit used it
    /// up (it has left the table). Expired faults must have been removed first
    /// ([`FaultTable::expire`]).
    pub(super) fn hit(&mut self, probe: &Probe<'_>) -> Option<(Hit, bool)> {
        let index = self
            .entries
            .iter_mut()
            .position(|e| e.matches(probe) && e.gate())?;
        let entry = &mut self.entries[index];
        entry.fault.hits += 1;
        let used_up = match &mut entry.fault.remaining {
            Some(left) => {
                *left -= 1;
                *left == 0
            }
            None => false,
        };
        let hit = Hit {
            id: entry.fault.id.clone(),
            effect: entry.effect.clone(),
        };
        if used_up {
            self.entries.remove(index);
        }
        Some((hit, used_up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FaultSpec {
        serde_json::from_value(json).expect("a spec")
    }

    fn probe(on: FaultOn, token: Option<&DeviceToken>) -> Probe<'_> {
        Probe {
            on,
            phase: Phase::Notification,
            token,
            topic: Some("com.example.app"),
            connection: Some(1),
            serial: None,
        }
    }

    const TOKEN: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn the_issues_example_is_a_fault_used_up_after_two_hits() {
        let mut table = FaultTable::default();
        let example = spec(serde_json::json!({"on": "http2", "match": {"token": TOKEN},
            "respond": {"status": 500, "reason": "InternalServerError"}, "count": 2}));
        let fault = table.add(example, 0).unwrap();
        assert_eq!(
            (fault.id.as_str(), fault.hits, fault.remaining),
            ("f1", 0, Some(2))
        );
        let token = DeviceToken::from_hex(TOKEN).unwrap();
        let other = DeviceToken::from_hex(&"02".repeat(32)).unwrap();
        assert!(
            table.hit(&probe(FaultOn::Http2, Some(&other))).is_none(),
            "another token"
        );
        assert!(
            table.hit(&probe(FaultOn::Binary, Some(&token))).is_none(),
            "another endpoint"
        );
        let (first, used_up) = table.hit(&probe(FaultOn::Http2, Some(&token))).unwrap();
        assert_eq!(first.id, "f1");
        assert!(!used_up);
        assert_eq!(table.list()[0].hits, 1);
        assert_eq!(table.list()[0].remaining, Some(1));
        assert!(
            table.hit(&probe(FaultOn::Http2, Some(&token))).unwrap().1,
            "used up"
        );
        assert!(table.is_empty());
        assert!(table.hit(&probe(FaultOn::Http2, Some(&token))).is_none());
        // Serialised back, the spec round-trips beside its id and counters.
        let json = serde_json::to_value(&fault).unwrap();
        assert_eq!(json["match"]["token"], TOKEN);
        let upper = spec(
            serde_json::json!({"on": "devices", "drop": true, "match": {"token": "AB".repeat(32)}}),
        );
        let listed = table.add(upper, 0).unwrap();
        assert_eq!(
            listed.spec.matches.unwrap().token.unwrap(),
            "ab".repeat(32),
            "tokens are listed in lowercase"
        );
        assert_eq!(json["respond"]["status"], 500);
        assert_eq!(json["id"], "f1");
        assert!(json.get("delay_ms").is_none());
    }

    #[test]
    fn every_and_rate_pick_events_deterministically() {
        let mut table = FaultTable::default();
        table
            .add(
                spec(serde_json::json!({"on": "binary", "match": {"every": 3}, "close": true})),
                0,
            )
            .unwrap();
        let hits: Vec<bool> = (0..9)
            .map(|_| table.hit(&probe(FaultOn::Binary, None)).is_some())
            .collect();
        assert_eq!(
            hits,
            [false, false, true, false, false, true, false, false, true]
        );

        let mut table = FaultTable::default();
        table
            .add(
                spec(serde_json::json!({"on": "binary", "match": {"rate": 0.5}, "close": true})),
                0,
            )
            .unwrap();
        let hits: Vec<bool> = (0..6)
            .map(|_| table.hit(&probe(FaultOn::Binary, None)).is_some())
            .collect();
        assert_eq!(hits, [false, true, false, true, false, true]);

        for (rate, want) in [(0.0, 0), (1.0, 10), (0.25, 2)] {
            let mut table = FaultTable::default();
            table
                .add(
                    spec(
                        serde_json::json!({"on": "binary", "match": {"rate": rate}, "close": true}),
                    ),
                    0,
                )
                .unwrap();
            let n = (0..10)
                .filter(|_| table.hit(&probe(FaultOn::Binary, None)).is_some())
                .count();
            assert_eq!(n, want, "rate {rate}");
        }
    }

    #[test]
    fn deadlines_expire_against_the_given_time_and_ids_are_not_reused() {
        let mut table = FaultTable::default();
        let a = table
            .add(
                spec(serde_json::json!({"on": "feedback", "hold_ms": 10, "for_ms": 1000})),
                5_000,
            )
            .unwrap();
        assert_eq!(a.expires_at_ms, Some(6_000));
        assert!(table.expire(5_999).is_empty());
        assert_eq!(table.expire(6_000), ["f1"]);
        let b = table
            .add(
                spec(serde_json::json!({"on": "feedback", "hold_ms": 10})),
                0,
            )
            .unwrap();
        assert_eq!(b.id, "f2");
        assert!(table.remove("f2"));
        assert!(!table.remove("f2"));
        table
            .add(spec(serde_json::json!({"on": "feedback", "hold_ms": 1})), 0)
            .unwrap();
        assert_eq!(table.clear(), ["f3"]);
    }

    #[test]
    fn phases_keep_connection_effects_apart() {
        let mut table = FaultTable::default();
        table
            .add(spec(serde_json::json!({"on": "http2", "refuse": true})), 0)
            .unwrap();
        assert!(
            table.hit(&probe(FaultOn::Http2, None)).is_none(),
            "not at a notification"
        );
        let at_connect = Probe {
            phase: Phase::Connection,
            ..probe(FaultOn::Http2, None)
        };
        assert_eq!(table.hit(&at_connect).unwrap().0.effect, Effect::Refuse);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = FaultTable::default();
        for _ in 0..MAX_FAULTS {
            table
                .add(spec(serde_json::json!({"on": "binary", "close": true})), 0)
                .unwrap();
        }
        let err = table
            .add(spec(serde_json::json!({"on": "binary", "close": true})), 0)
            .unwrap_err();
        assert!(err.error.contains("already set"), "{err}");
    }

    #[test]
    fn bad_specs_name_their_field() {
        let cases = [
            (serde_json::json!({"on": "http2"}), "on"),
            (serde_json::json!({"on": "http2", "close": true}), "close"),
            (
                serde_json::json!({"on": "binary", "error": {"status": 9}}),
                "error.status",
            ),
            (
                serde_json::json!({"on": "binary", "error": {"status": 1}, "close": true}),
                "close",
            ),
            (serde_json::json!({"on": "binary", "close": false}), "close"),
            (
                serde_json::json!({"on": "binary", "close": true, "count": 0}),
                "count",
            ),
            (
                serde_json::json!({"on": "binary", "close": true, "for_ms": 0}),
                "for_ms",
            ),
            (
                serde_json::json!({"on": "binary", "delay_ms": 600_001}),
                "delay_ms",
            ),
            (
                serde_json::json!({"on": "binary", "close": true, "match": {"token": "xyz"}}),
                "match.token",
            ),
            (
                serde_json::json!({"on": "binary", "close": true, "match": {"every": 0}}),
                "match.every",
            ),
            (
                serde_json::json!({"on": "binary", "close": true, "match": {"rate": 1.5}}),
                "match.rate",
            ),
            (
                serde_json::json!({"on": "binary", "close": true, "match": {"serial": "D"}}),
                "match.serial",
            ),
            (
                serde_json::json!({"on": "devices", "drop": true, "match": {"topic": "t"}}),
                "match.topic",
            ),
            (
                serde_json::json!({"on": "http2", "refuse": true, "match": {"token": TOKEN}}),
                "match.token",
            ),
        ];
        for (json, field) in cases {
            let err = check(&spec(json.clone())).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
        assert!(serde_json::from_value::<FaultSpec>(
            serde_json::json!({"on": "http2", "bogus": 1})
        )
        .is_err());
        assert!(serde_json::from_value::<FaultSpec>(
            serde_json::json!({"on": "http2", "match": {"bogus": 1}})
        )
        .is_err());
    }
}
