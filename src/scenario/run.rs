//! A self-contained run of a checked [`Scenario`]: a fresh [`Simulator`] on 127.0.0.1 with
//! ports the system picks, the scenario's credentials minted into an in-memory PKI, its
//! devices created through the simulator's actors (in-process devices that connect over
//! TLS like any other), and a scripted provider that reaches the real endpoints over TLS
//! with the client layer: commands 0, 1 and 2 on the binary gateway, HTTP/2 with a
//! certificate or a provider token, the feedback service.
//!
//! Nothing waits by sleeping: a step that must wait for another's milestone waits on the
//! hub's events (the delivery log, read across any gap with [`Hub::events_after`]), the
//! end of the run waits until every notification sent to a device has been answered by it
//! and the devices' inboxes show every acknowledged one. `at_ms` paces the timeline itself
//! (the only sleep), and `advance_clock_ms` moves the simulator's clock instead of waiting.
//! Every wait is bounded by [`MAX_WAIT_PER_STEP`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::format::{Auth, CertChoice, PushDecl, Via};
use super::report::{FileReport, TimelineLine, Verdict, MAX_CLOSEST};
use super::{outcome_name, Action, ExpectKind, Expectation, Milestone, Scenario};
use crate::client::device::DeviceEvent;
use crate::client::http2::{Http2Client, Http2ClientError, Http2Request};
use crate::client::{read_feedback, BinaryClient, GatewayAnswer};
use crate::clock::Clock;
use crate::hub::{Api, Event, Hub, Logged, Outcome};
use crate::pki::{jwt, CertEnvironment, Pki};
use crate::progress::{Draw, FleetProgress};
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::notification;
use crate::protocol::token::{AppToken, DeviceToken};
use crate::protocol::Environment;
use crate::server::control::devices::{Device, DeviceSpec as ActorSpec, Shown};
use crate::settings::Settings;
use crate::sim::{Listeners, Simulator, SimulatorConfig};
use crate::tls::{self, ClientIdentity};

/// The longest any one wait of a run may take: an `after` milestone, a device event, the
/// gateway's answer, the end's settling. On loopback each takes milliseconds; this only
/// fires when the milestone never comes, and the verdict says so.
pub const MAX_WAIT_PER_STEP: Duration = Duration::from_secs(30);

/// How long the feedback service may take to send its tuples and close.
const FEEDBACK_WAIT: Duration = Duration::from_secs(10);

/// How many devices are created (or driven) at once: enough to start a fleet of thousands in
/// seconds, few enough not to starve the simulator's own tasks on a small machine.
const DEVICE_CONCURRENCY: usize = 32;

/// The delivery log's length in a run: a fleet of [`super::MAX_DEVICES`] devices logs a few
/// events each at start and a few per notification; the runner reads the log as it goes, so
/// this only has to hold what arrives between two reads.
const RUN_LOG_LEN: usize = 200_000;

/// The first binary identifier the runner gives (distinct from the actors' test pushes).
const FIRST_IDENTIFIER: u32 = 1;

/// The expiry of a binary push (commands 1 and 2) that gives none: an hour ahead on the
/// simulator's clock, as `apns-sim push` and the control API's test push do; the frame must
/// carry one, and 0 would mean "do not store", which a scenario should say outright.
pub const DEFAULT_BINARY_EXPIRY: Duration = crate::actors::provider::DEFAULT_BINARY_EXPIRY;

/// The HTTP statuses a `retry` retries on by default: Apple's "try again later" answers.
const DEFAULT_RETRY_ON: [u16; 3] = [429, 500, 503];

/// Checks and runs one file; `print` gets each timeline line as it happens.
pub async fn run_file(file: &str, text: &str, print: &mut (dyn FnMut(&str) + Send)) -> FileReport {
    match Scenario::parse(text) {
        Ok(scenario) => run(&scenario, file, print).await,
        Err(e) => FileReport::failed(
            file,
            e.problems()
                .iter()
                .map(|p| format!("{file}:{p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// Runs a checked scenario; `file` names it in the report.
pub async fn run(
    scenario: &Scenario,
    file: &str,
    print: &mut (dyn FnMut(&str) + Send),
) -> FileReport {
    let started = Instant::now();
    let name = scenario.name.clone().unwrap_or_else(|| file.to_owned());
    if let Err(e) = consistent(scenario) {
        return FileReport::failed(file, e);
    }
    let (sim, clock) = match start(scenario).await {
        Ok(started) => started,
        Err(e) => return FileReport::failed(file, format!("the simulator did not start: {e}")),
    };
    let mut runner = Runner::new(&sim, clock, scenario, started);
    let mut error = None;
    match runner.create_devices().await {
        Ok(created) => runner.line(
            "world",
            format!("{} devices online", created.len()),
            true,
            print,
        ),
        Err(e) => error = Some(e),
    }
    if error.is_none() {
        runner.timeline(print).await;
        runner.settle().await;
    }
    let report = runner.report(file, &name, error);
    sim.shutdown().await;
    report
}

/// The next event of `events`, or never when there is no receiver (it closed).
async fn next_event(
    events: &mut Option<broadcast::Receiver<DeviceEvent>>,
) -> Result<DeviceEvent, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Checks that every index a [`Scenario`] holds points at one of its steps (true of every
/// scenario [`Scenario::parse`] made; its fields are public, so one built by hand may not
/// be), so the run can index without a panic.
fn consistent(scenario: &Scenario) -> Result<(), String> {
    let n = scenario.steps.len();
    let bad = |what: String| Err(format!("the scenario is inconsistent: {what}"));
    if let Some(i) = scenario.order.iter().find(|i| **i >= n) {
        return bad(format!("order names step {i} of {n}"));
    }
    for step in &scenario.steps {
        if step.after.is_some_and(|a| a.step >= n) {
            return bad(format!(
                "{} waits for a step that does not exist",
                step.name
            ));
        }
        if matches!(step.action, Action::FaultOff(i) if i >= n) {
            return bad(format!(
                "{} switches off a step that does not exist",
                step.name
            ));
        }
    }
    for e in &scenario.expects {
        let step = match &e.kind {
            ExpectKind::Answer { step, .. }
            | ExpectKind::Feedback { step, .. }
            | ExpectKind::Outcome { step, .. } => Some(*step),
            ExpectKind::Shows { .. } | ExpectKind::NothingElse => None,
        };
        let also = match &e.kind {
            ExpectKind::Feedback { as_410_of, .. } => *as_410_of,
            _ => None,
        };
        if step.is_some_and(|s| s >= n) || also.is_some_and(|s| s >= n) {
            return bad(format!("{} names a step that does not exist", e.name));
        }
    }
    Ok(())
}

/// Mints the scenario's credentials and starts a simulator with them on 127.0.0.1, every
/// port chosen by the system.
pub(super) async fn start(scenario: &Scenario) -> Result<(Simulator, Clock), String> {
    let mut pki = Pki::generate().map_err(|e| e.to_string())?;
    mint(scenario, &mut pki)?;
    let clock = Clock::system();
    let mut config = SimulatorConfig::new(pki);
    config.clock = clock.clone();
    config.settings = Settings {
        delivery_log_len: RUN_LOG_LEN,
        ..Settings::default()
    };
    config.bundle_owners = scenario.bundle_owners();
    scenario.virtual_settings(&mut config.settings);
    let listeners = Listeners::bind_local().await.map_err(|e| e.to_string())?;
    let sim = Simulator::start(config, listeners).map_err(|e| e.to_string())?;
    Ok((sim, clock))
}

/// Mints each `[[app]]`'s certificate and auth key into `pki`. What `pki` already holds is
/// kept (a certificate of the same bundle, environment and team; an auth key of the same
/// id and team), so a certificate folder `serve --scenario` loads again keeps its files;
/// a key id the folder holds for another team is refused.
/// Returns whether anything was minted (the folder then needs writing).
pub fn mint(scenario: &Scenario, pki: &mut Pki) -> Result<bool, String> {
    let mut minted = false;
    for app in &scenario.apps {
        let env = match app.certificate {
            CertChoice::Universal => Some(CertEnvironment::Universal),
            CertChoice::Sandbox => Some(CertEnvironment::Sandbox),
            CertChoice::Production => Some(CertEnvironment::Production),
            CertChoice::None => None,
        };
        if let Some(env) = env {
            let held = pki
                .provider_for(&app.bundle, env)
                .is_some_and(|c| c.environment == env && c.team_id == app.team);
            if !held {
                pki.mint_provider(&app.bundle, env, &app.team)
                    .map_err(|e| format!("minting a certificate for {}: {e}", app.bundle))?;
                minted = true;
            }
        }
        if let Some(key_id) = &app.key_id {
            match pki.auth_key(key_id) {
                Some(key) if key.team_id == app.team => {}
                Some(key) => {
                    return Err(format!(
                        "key {key_id} is already team {}'s, not {}'s",
                        key.team_id, app.team
                    ))
                }
                None => {
                    pki.mint_auth_key(&app.team, Some(key_id.clone()), vec![app.bundle.clone()])
                        .map_err(|e| format!("minting key {key_id}: {e}"))?;
                    minted = true;
                }
            }
        }
    }
    Ok(minted)
}

/// The delivery log as the runner reads it: every event since the run started, in order.
struct Log {
    hub: Hub,
    /// Wakes the runner when the hub logs something (its content is read from the ring).
    rx: broadcast::Receiver<Logged>,
    /// The last sequence number read.
    cursor: u64,
    /// Every event read.
    events: Vec<Event>,
    /// Events left the ring before they were read (the run's verdicts may miss them).
    truncated: bool,
}

impl Log {
    fn new(hub: Hub) -> Self {
        Log {
            rx: hub.subscribe(),
            hub,
            cursor: 0,
            events: Vec::new(),
            truncated: false,
        }
    }

    /// Reads what the ring holds past the cursor.
    fn refresh(&mut self) {
        while !matches!(
            self.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
        let read = self.hub.events_after(self.cursor);
        self.truncated |= read.truncated;
        for logged in read.events {
            self.cursor = logged.seq;
            self.events.push(logged.event);
        }
    }

    /// Waits for the hub to log something, then reads it.
    async fn next(&mut self) {
        if let Err(broadcast::error::RecvError::Closed) = self.rx.recv().await {
            // The hub is gone: nothing more will come.
            std::future::pending::<()>().await;
        }
        self.refresh();
    }

    /// Sleeps until `deadline`, reading the log whenever the hub logs something.
    async fn sleep_until(&mut self, deadline: tokio::time::Instant) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.next() => {}
            }
        }
    }

    /// Waits until `done` holds over the events, at most [`MAX_WAIT_PER_STEP`].
    async fn wait_for(&mut self, done: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + MAX_WAIT_PER_STEP;
        loop {
            self.refresh();
            if done(&self.events) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => {
                    self.refresh();
                    return done(&self.events);
                }
                Ok(_) => {}
            }
        }
    }
}

/// How a push was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    /// HTTP status, or the binary error-response status (0: none).
    status: u16,
    /// Apple's reason, or words about the binary answer.
    reason: Option<String>,
    /// The identifier a binary error response named.
    identifier: Option<u32>,
    /// How many attempts it took.
    attempts: u32,
    /// The `timestamp` of an HTTP/2 410 answer, milliseconds.
    timestamp_ms: Option<u64>,
}

impl Answer {
    /// A binary error response, on the first attempt.
    fn error_response(resp: &ErrorResponse) -> Self {
        Answer {
            status: u16::from(resp.status.code()),
            reason: None,
            identifier: Some(u32::from_be_bytes(resp.identifier)),
            attempts: 1,
            timestamp_ms: None,
        }
    }

    /// The gateway closed without an error response (Apple's answer to a refused command 0,
    /// or a fault's close), on the first attempt.
    fn closed() -> Self {
        Answer {
            status: 0,
            reason: Some("closed without an error response".to_owned()),
            identifier: None,
            attempts: 1,
            timestamp_ms: None,
        }
    }

    /// A failure an `answer` expectation should name.
    fn failed(&self, api: Via) -> bool {
        match api {
            Via::Http2 => self.status != 200,
            _ => self.status != 0 || self.reason.is_some(),
        }
    }

    fn describe(&self) -> String {
        let mut out = self.status.to_string();
        if let Some(reason) = &self.reason {
            out.push(' ');
            out.push_str(reason);
        }
        if let Some(id) = self.identifier {
            out.push_str(&format!(" (identifier {id})"));
        }
        if self.attempts > 1 {
            out.push_str(&format!(" after {} attempts", self.attempts));
        }
        out
    }
}

/// One notification a push step sent.
#[derive(Debug, Clone)]
struct Sent {
    /// Its device, if it went to one.
    device: Option<String>,
    /// The token it went to (empty for a connection's shutdown answer).
    token: Vec<u8>,
    /// Its API.
    api: Via,
    /// Its apns-id, once known (HTTP/2: the runner's; binary: the hub's).
    apns_id: Option<Uuid>,
    /// The answer.
    answer: Answer,
}

/// What a step left for the milestones and the verdicts.
#[derive(Debug, Clone)]
enum StepResult {
    /// Not run (yet).
    NotRun,
    /// A push step's notifications.
    Push(Vec<Sent>),
    /// A feedback read: the tuples, in the order read.
    Feedback(Vec<FeedbackTuple>),
    /// A fault switched on, with its id.
    Fault(String),
    /// Anything else, done.
    Done,
}

/// The state of one run of a scenario's timeline against a simulator: what `scenario run`
/// drives from start to end, and what `apns-sim test` ([`super::harness`]) and
/// `serve --scenario` drive around a provider of their own. Its phases, in order:
/// [`Runner::create_devices`], [`Runner::timeline`], [`Runner::settle`], then the verdicts
/// ([`Runner::report`]).
pub struct Runner<'a> {
    sim: &'a Simulator,
    clock: Clock,
    scenario: &'a Scenario,
    started: Instant,
    log: Log,
    /// Wakes the end's wait for the inboxes.
    inbox_events: broadcast::Receiver<DeviceEvent>,
    /// The last token each (device, app token) held, kept after an uninstall so a later
    /// push goes to the stale token as a provider's would.
    tokens: HashMap<(String, AppToken), DeviceToken>,
    /// Every token any device has held in the run, with whose it was (`SERIAL APP[:KIND]`):
    /// a reinstall replaces the device's entry in `tokens`, but feedback still hands out the
    /// old token, which must keep its name.
    token_names: HashMap<DeviceToken, String>,
    /// For each device an `uninstall` step acted on: how many events of the delivery log
    /// had been read when its last one was done. The end waits for the device to show what
    /// it acknowledged after that; what it acknowledged before may have left with the app.
    uninstalled_at: HashMap<String, usize>,
    results: Vec<StepResult>,
    timeline: Vec<TimelineLine>,
    /// Steps that could not do what they say.
    failures: Vec<Verdict>,
    next_identifier: u32,
    /// The HTTP/2 connection each (app, certificate auth, environment) last left open, for
    /// a later push with `reuse_connection`.
    connections: HashMap<ConnectionKey, Http2Client>,
    /// Each auth key's current provider token.
    provider_tokens: HashMap<String, String>,
    /// Binary connections left open (`keep_open`), for a `shutdown` to answer on.
    open_binary: Vec<BinaryClient>,
    /// The provider is a program of the user's (`apns-sim test`), not this runner: a
    /// `nothing_else` then also counts every notification the hub rejected.
    external_provider: bool,
    /// Where [`Runner::create_devices`] draws the fleet's progress bar.
    progress: Draw,
}

/// Which HTTP/2 connection a push may reuse: its app, whether it authenticates with the
/// certificate, and its environment.
type ConnectionKey = (String, bool, Environment);

impl<'a> Runner<'a> {
    /// A runner of `scenario` on `sim`, whose clock is `clock`; `started` is the moment
    /// `at_ms` counts from.
    pub fn new(
        sim: &'a Simulator,
        clock: Clock,
        scenario: &'a Scenario,
        started: Instant,
    ) -> Runner<'a> {
        Runner {
            log: Log::new(sim.hub().clone()),
            inbox_events: sim.actors().subscribe(),
            sim,
            clock,
            scenario,
            started,
            tokens: HashMap::new(),
            token_names: HashMap::new(),
            uninstalled_at: HashMap::new(),
            results: vec![StepResult::NotRun; scenario.steps.len()],
            timeline: Vec::new(),
            failures: Vec::new(),
            next_identifier: FIRST_IDENTIFIER,
            connections: HashMap::new(),
            provider_tokens: HashMap::new(),
            open_binary: Vec::new(),
            external_provider: false,
            progress: Draw::Hidden,
        }
    }

    /// Draws the fleet's start (devices connected and registered) on a progress bar as
    /// `draw` says; without it the start is not drawn. The binary's hosts of a scenario
    /// (`serve`, `apns-sim test`, `apns-sim run`) ask for standard error.
    pub fn with_progress(mut self, draw: Draw) -> Self {
        self.progress = draw;
        self
    }

    /// Says that the provider is a program of the user's (see [`Runner`]'s field).
    pub fn with_external_provider(mut self) -> Self {
        self.external_provider = true;
        self
    }

    /// Restarts the clock `at_ms` counts from (`apns-sim test`: when COMMAND starts).
    pub fn restart_timeline_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Runs every step, in the scenario's order. A scenario that [`super::Scenario::parse`]
    /// did not make is checked first: one whose indices point nowhere runs no step and its
    /// report says why.
    pub async fn timeline(&mut self, print: &mut (dyn FnMut(&str) + Send)) {
        if let Err(e) = consistent(self.scenario) {
            self.failures.push(Verdict {
                name: "scenario".to_owned(),
                line: 1,
                passed: false,
                expected: "a consistent scenario".to_owned(),
                seen: e,
                closest: Vec::new(),
            });
            return;
        }
        for &i in &self.scenario.order {
            self.step(i, print).await;
        }
    }

    /// Reads the delivery log as it grows, until the future is dropped (so that a long
    /// stretch without steps, while a user's provider pushes, cannot outrun the log's ring).
    pub async fn follow_log(&mut self) {
        loop {
            self.log.next().await;
        }
    }

    /// Waits until every provider connection the hub has seen open has closed, at most
    /// [`MAX_WAIT_PER_STEP`]: a provider that wrote and exited may still have frames in the
    /// gateway's hands. Returns false when some stayed open.
    pub async fn providers_closed(&mut self) -> bool {
        self.log
            .wait_for(|events| {
                let mut open: HashMap<u64, i64> = HashMap::new();
                for e in events {
                    match e {
                        Event::ProviderConnected { connection, .. } => {
                            *open.entry(*connection).or_default() += 1
                        }
                        Event::ProviderDisconnected { connection, .. } => {
                            *open.entry(*connection).or_default() -= 1
                        }
                        _ => {}
                    }
                }
                open.values().all(|n| *n <= 0)
            })
            .await
    }

    /// The verdicts (one per expectation, then one per step that could not run) and the
    /// timeline, as a report of `file`.
    pub fn report(&mut self, file: &str, name: &str, error: Option<String>) -> FileReport {
        let verdicts = if error.is_none() {
            let mut verdicts: Vec<Verdict> = self
                .scenario
                .expects
                .iter()
                .map(|e| self.verdict(e))
                .collect();
            if self.log.truncated {
                verdicts.push(Verdict {
                    name: "delivery log".to_owned(),
                    line: 1,
                    passed: false,
                    expected: "every event of the run read".to_owned(),
                    seen: format!(
                        "the delivery log ({RUN_LOG_LEN} events) dropped some before they \
                         were read"
                    ),
                    closest: Vec::new(),
                });
            }
            verdicts.extend(self.failures.iter().cloned());
            verdicts
        } else {
            Vec::new()
        };
        FileReport {
            file: file.to_owned(),
            name: name.to_owned(),
            timeline: self.timeline.clone(),
            verdicts,
            error,
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// Adds and prints a timeline line.
    pub fn line(
        &mut self,
        step: &str,
        text: String,
        ok: bool,
        print: &mut (dyn FnMut(&str) + Send),
    ) {
        let line = TimelineLine {
            at_ms: self.started.elapsed().as_millis() as u64,
            step: step.to_owned(),
            text,
            ok,
        };
        print(&format!(
            "{:>7} {}{}: {}",
            format!("+{}ms", line.at_ms),
            if ok { "" } else { "FAILED " },
            line.step,
            line.text
        ));
        self.timeline.push(line);
    }

    /// Creates every device, a few dozen at a time, and records its tokens;
    /// returns them in the scenario's order, each with the tokens it registered. The
    /// fleet's progress (devices online, devices with every token) is counted on a bar
    /// drawn where [`Runner::with_progress`] said.
    pub async fn create_devices(&mut self) -> Result<Vec<Device>, String> {
        let fleet = FleetProgress::new(self.scenario.devices.len(), self.progress);
        // A device's first `online` counts it as connected; a lagging receiver misses
        // some, so a created device (online by then) counts too if it was missed.
        let mut events = Some(self.sim.actors().subscribe());
        let mut online = HashSet::new();
        let mut set = JoinSet::new();
        let mut pending = self.scenario.devices.iter().enumerate();
        let mut created = Vec::new();
        loop {
            while set.len() < DEVICE_CONCURRENCY {
                let Some((i, d)) = pending.next() else { break };
                let actors = self.sim.actors().clone();
                let spec = ActorSpec {
                    serial: d.serial.clone(),
                    environment: d.environment,
                    apps: d.apps.clone(),
                };
                set.spawn(async move { (i, actors.create(spec).await) });
            }
            if set.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = set.join_next() => joined,
                event = next_event(&mut events) => {
                    match event {
                        Ok(DeviceEvent::Online { serial, .. }) => {
                            if online.insert(serial) {
                                fleet.connected();
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => events = None,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    }
                    continue;
                }
            };
            let Some(joined) = joined else {
                break;
            };
            let (i, device) = joined.map_err(|e| e.to_string())?;
            let device = device.map_err(|e| format!("a device did not start: {e}"))?;
            for app in &device.apps {
                self.remember(&device.serial, app);
            }
            if online.insert(device.serial.clone()) {
                fleet.connected();
            }
            fleet.registered();
            created.push((i, device));
        }
        created.sort_by_key(|(i, _)| *i);
        Ok(created.into_iter().map(|(_, d)| d).collect())
    }

    /// Records a token the actors report.
    fn remember(&mut self, serial: &str, app: &crate::server::control::devices::App) {
        let (Ok(kind), Ok(token)) = (app.kind.parse(), DeviceToken::from_hex(&app.token)) else {
            return;
        };
        let app = AppToken::new(app.app.clone(), kind);
        self.token_names.insert(token, format!("{serial} {app}"));
        self.tokens.insert((serial.to_owned(), app), token);
    }

    /// Runs one step: its wait, its pacing, its action.
    async fn step(&mut self, index: usize, print: &mut (dyn FnMut(&str) + Send)) {
        let step = &self.scenario.steps[index];
        let name = step.name.clone();
        if let Some(after) = step.after {
            if after.milestone != Milestone::Done {
                let ids = self.apns_ids(after.step);
                let milestone = after.milestone;
                let reached = self
                    .log
                    .wait_for(|events| reached(events, &ids, milestone))
                    .await;
                let waited = format!(
                    "{} {}",
                    self.scenario.steps[after.step].name, after.milestone
                );
                if !reached {
                    self.fail(
                        index,
                        waited.clone(),
                        format!("no {waited} within {MAX_WAIT_PER_STEP:?}"),
                    );
                    self.line(&name, format!("waited in vain for {waited}"), false, print);
                }
            }
        }
        if let Some(at) = step.at_ms {
            let deadline = self.started + Duration::from_millis(at);
            self.log.sleep_until(deadline.into()).await;
        }
        let action = step.action.clone();
        let outcome = self.act(index, &action).await;
        match outcome {
            Ok((result, text)) => {
                self.results[index] = result;
                self.line(&name, text, true, print);
            }
            Err(e) => {
                self.results[index] = StepResult::Done;
                self.fail(index, format!("{} runs", action.verb()), e.clone());
                self.line(&name, e, false, print);
            }
        }
    }

    /// Records that a step could not do what it says.
    fn fail(&mut self, index: usize, expected: String, seen: String) {
        let step = &self.scenario.steps[index];
        self.failures.push(Verdict {
            name: format!("step {}", step.name),
            line: step.line,
            passed: false,
            expected,
            seen,
            closest: Vec::new(),
        });
    }

    /// The apns-ids of a push step's notifications.
    fn apns_ids(&self, step: usize) -> HashSet<Uuid> {
        match &self.results[step] {
            StepResult::Push(sent) => sent.iter().filter_map(|s| s.apns_id).collect(),
            _ => HashSet::new(),
        }
    }

    /// Does a step's action; returns what it left and a timeline text.
    async fn act(&mut self, index: usize, action: &Action) -> Result<(StepResult, String), String> {
        let actors = self.sim.actors().clone();
        match action {
            Action::Push(pushes) => {
                let sent = self.push(index, pushes).await?;
                let text = describe_sent(pushes, &sent);
                Ok((StepResult::Push(sent), text))
            }
            Action::Uninstall(devices, app) => {
                let app2 = app.clone();
                for_each(devices, move |serial| {
                    let actors = actors.clone();
                    let app = app2.clone();
                    async move { actors.uninstall(&serial, app).await.map(|_| ()) }
                })
                .await?;
                self.log.refresh();
                for serial in devices {
                    self.uninstalled_at
                        .insert(serial.clone(), self.log.events.len());
                }
                Ok((
                    StepResult::Done,
                    format!("{} uninstalls {app}", who(devices)),
                ))
            }
            Action::Install(devices, app) => {
                let app2 = app.clone();
                let installed = for_each(devices, move |serial| {
                    let actors = actors.clone();
                    let app = app2.clone();
                    async move {
                        let got = actors.install(&serial, app).await?;
                        Ok::<_, crate::server::control::devices::Refusal>((serial, got))
                    }
                })
                .await?;
                for (serial, got) in installed {
                    self.remember(&serial, &got);
                }
                Ok((StepResult::Done, format!("{} installs {app}", who(devices))))
            }
            Action::Offline(devices) | Action::Online(devices) => {
                let online = matches!(action, Action::Online(_));
                for_each(devices, move |serial| {
                    let actors = actors.clone();
                    async move { actors.set_online(&serial, online).await.map(|_| ()) }
                })
                .await?;
                let word = if online { "online" } else { "offline" };
                Ok((StepResult::Done, format!("{} {word}", who(devices))))
            }
            Action::Reboot(devices) => {
                for_each(devices, move |serial| {
                    let actors = actors.clone();
                    async move {
                        actors.set_online(&serial, false).await?;
                        actors.set_online(&serial, true).await.map(|_| ())
                    }
                })
                .await?;
                Ok((StepResult::Done, format!("{} rebooted", who(devices))))
            }
            Action::Feedback(app, environment) => {
                let tokens = self.feedback(app, *environment).await?;
                let mut names: Vec<String> = tokens
                    .iter()
                    .take(MAX_CLOSEST)
                    .map(|t| self.token_name(&t.token))
                    .collect();
                if tokens.len() > MAX_CLOSEST {
                    names.push("…".to_owned());
                }
                let text = format!(
                    "feedback for {app} ({environment}): {} tuple(s){}{}",
                    tokens.len(),
                    if names.is_empty() { "" } else { ": " },
                    names.join(", ")
                );
                Ok((StepResult::Feedback(tokens), text))
            }
            Action::Fault(spec) => {
                let fault = self
                    .sim
                    .hub()
                    .add_fault(spec.clone())
                    .map_err(|e| format!("fault refused: {e}"))?;
                let json = serde_json::to_string(spec).unwrap_or_default();
                Ok((
                    StepResult::Fault(fault.id.clone()),
                    format!("fault {} on: {json}", fault.id),
                ))
            }
            Action::FaultOff(step) => {
                let StepResult::Fault(id) = &self.results[*step] else {
                    return Err(format!(
                        "step {} has not switched a fault on",
                        self.scenario.steps[*step].name
                    ));
                };
                let id = id.clone();
                let removed = self.sim.hub().remove_fault(&id);
                Ok((
                    StepResult::Done,
                    if removed {
                        format!("fault {id} off")
                    } else {
                        format!("fault {id} was already gone (used up or expired)")
                    },
                ))
            }
            Action::Shutdown => {
                let sent = self.shutdown_now().await;
                let answers: Vec<String> = sent
                    .iter()
                    .map(|s| {
                        let api = if s.api == Via::Http2 {
                            "HTTP/2"
                        } else {
                            "binary"
                        };
                        format!("{api} connection: {}", s.answer.describe())
                    })
                    .collect();
                let text = format!(
                    "the simulator shuts down{}{}",
                    if answers.is_empty() { "" } else { "; " },
                    answers.join(", ")
                );
                Ok((StepResult::Push(sent), text))
            }
            Action::AdvanceClock(ms) => {
                self.clock.advance(Duration::from_millis(*ms));
                Ok((
                    StepResult::Done,
                    format!("the simulator's clock moves {ms} ms on"),
                ))
            }
        }
    }

    /// Shuts the simulator down and reads what each connection left open hears: binary
    /// ones the error response (status 10 with the last identifier accepted), HTTP/2 ones
    /// a GOAWAY. Binary connections first, in the order they were opened.
    async fn shutdown_now(&mut self) -> Vec<Sent> {
        self.sim.shutdown_token().cancel();
        let mut sent = Vec::new();
        for mut client in std::mem::take(&mut self.open_binary) {
            let answer = match client.finish(MAX_WAIT_PER_STEP).await {
                Ok(GatewayAnswer::Error(resp)) => Answer::error_response(&resp),
                Ok(GatewayAnswer::Closed) => Answer::closed(),
                Ok(GatewayAnswer::Silent) => Answer {
                    status: 0,
                    reason: Some(format!("no answer within {MAX_WAIT_PER_STEP:?}")),
                    identifier: None,
                    attempts: 1,
                    timestamp_ms: None,
                },
                Err(e) => Answer {
                    status: 0,
                    reason: Some(e.to_string()),
                    identifier: None,
                    attempts: 1,
                    timestamp_ms: None,
                },
            };
            sent.push(Sent {
                token: Vec::new(),
                device: None,
                api: Via::Binary2,
                apns_id: None,
                answer,
            });
        }
        let mut open: Vec<(ConnectionKey, Http2Client)> = self.connections.drain().collect();
        open.sort_by(|a, b| {
            (&a.0 .0, a.0 .1, a.0 .2.as_str()).cmp(&(&b.0 .0, b.0 .1, b.0 .2.as_str()))
        });
        for (_, client) in open {
            let goaway = tokio::time::timeout(MAX_WAIT_PER_STEP, client.closed())
                .await
                .ok()
                .flatten();
            let reason = match goaway {
                Some(g) => format!(
                    "GOAWAY {}",
                    g.reason()
                        .unwrap_or_else(|| format!("code {}", g.error_code))
                ),
                None => "closed without a GOAWAY".to_owned(),
            };
            sent.push(Sent {
                token: Vec::new(),
                device: None,
                api: Via::Http2,
                apns_id: None,
                answer: Answer {
                    status: 0,
                    reason: Some(reason),
                    identifier: None,
                    attempts: 1,
                    timestamp_ms: None,
                },
            });
        }
        sent
    }

    /// A token's name for people: `SERIAL APP[:KIND]`, or its hex.
    fn token_name(&self, token: &DeviceToken) -> String {
        self.token_names
            .get(token)
            .cloned()
            .unwrap_or_else(|| token.to_hex())
    }

    /// The provider's push: the notifications of one step, in order, on one connection
    /// (a fresh one for each HTTP/2 retry).
    async fn push(&mut self, index: usize, pushes: &[PushDecl]) -> Result<Vec<Sent>, String> {
        let step = self.scenario.steps[index].name.clone();
        let mut prepared = Vec::new();
        for p in pushes {
            prepared.push(self.prepare(p, &step)?);
        }
        match pushes.first().map(|p| p.api) {
            Some(Via::Http2) => self.push_http2(&prepared).await,
            Some(api) => self.push_binary(api, &prepared).await,
            None => Ok(Vec::new()),
        }
    }

    /// One notification, resolved: its token bytes, its credentials, its headers.
    fn prepare(&mut self, p: &PushDecl, step: &str) -> Result<Prepared, String> {
        let app = p
            .app
            .as_ref()
            .map(|a| a.get_ref().clone())
            .ok_or("the push names no app")?;
        let device = p.device.as_ref().map(|d| d.get_ref().clone());
        let (token, environment) = match (&p.token, &device) {
            (Some(hex), _) => (
                hex::decode(hex.get_ref()).map_err(|e| format!("token: {e}"))?,
                Environment::Sandbox,
            ),
            (None, Some(serial)) => {
                let token = self
                    .tokens
                    .get(&(serial.clone(), app.clone()))
                    .ok_or_else(|| format!("device {serial} never held a {app} token"))?;
                let environment = self
                    .scenario
                    .devices
                    .iter()
                    .find(|d| d.serial == *serial)
                    .map_or(Environment::Sandbox, |d| d.environment);
                (token.as_bytes().to_vec(), environment)
            }
            (None, None) => return Err("the push names no device and no token".to_owned()),
        };
        let payload = match (&p.payload_text, &p.payload) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(table)) => serde_json::to_vec(table).map_err(|e| e.to_string())?,
            (None, None) => serde_json::to_vec(&serde_json::json!({"aps": {"alert": step}}))
                .map_err(|e| e.to_string())?,
        };
        let now = self.clock.now_secs();
        let expiry = p.expiry.or_else(|| {
            p.expiry_in_s
                .map(|s| (now + u64::from(s)).min(u64::from(u32::MAX)) as u32)
        });
        let identifier = p.identifier.unwrap_or_else(|| {
            let id = self.next_identifier;
            self.next_identifier = self.next_identifier.wrapping_add(1);
            id
        });
        let spec = self
            .scenario
            .apps
            .iter()
            .find(|a| a.bundle == app.app)
            .ok_or_else(|| format!("no [[app]] {}", app.app))?;
        let auth = match p.auth.as_ref().map(|a| *a.get_ref()) {
            Some(auth) => auth,
            None if spec.certificate != CertChoice::None => Auth::Certificate,
            None => Auth::Token,
        };
        Ok(Prepared {
            device,
            token,
            environment,
            payload,
            expiry,
            identifier,
            app,
            auth,
            key_id: spec.key_id.clone(),
            decl: p.clone(),
        })
    }

    /// TLS for a provider connection of `bundle`: its certificate, or none (token auth).
    fn provider_tls(
        &self,
        bundle: &str,
        with_cert: bool,
        h2: bool,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let pki = self.sim.pki();
        let identity = if with_cert {
            let cert = pki
                .providers()
                .find(|c| c.topic == bundle)
                .ok_or_else(|| format!("no provider certificate for {bundle}"))?;
            Some(ClientIdentity::from_provider(cert).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let alpn = if h2 {
            vec![tls::ALPN_H2.to_vec()]
        } else {
            Vec::new()
        };
        tls::client_config(pki.ca_cert_pem().as_bytes(), identity, alpn).map_err(|e| e.to_string())
    }

    /// Commands 0, 1 or 2, all in one write on one connection; then the gateway's answer
    /// or the hub's record of every one of them, whichever comes first.
    async fn push_binary(&mut self, api: Via, prepared: &[Prepared]) -> Result<Vec<Sent>, String> {
        let first = prepared.first().ok_or("nothing to push")?;
        let config = self.provider_tls(&first.app.app, true, false)?;
        let mut frames = BytesMut::new();
        let default_expiry = (self.clock.now_secs() + DEFAULT_BINARY_EXPIRY.as_secs())
            .min(u64::from(u32::MAX)) as u32;
        for p in prepared {
            match api.command() {
                Some(0) => notification::encode_simple_raw(&p.token, &p.payload, &mut frames),
                Some(1) => notification::encode_enhanced_raw(
                    p.identifier.to_be_bytes(),
                    p.expiry.unwrap_or(default_expiry),
                    &p.token,
                    &p.payload,
                    &mut frames,
                ),
                _ => notification::encode_frame_raw(
                    &p.token,
                    &p.payload,
                    p.identifier.to_be_bytes(),
                    p.expiry.unwrap_or(default_expiry),
                    p.decl.priority.unwrap_or(10),
                    &mut frames,
                ),
            }
        }
        self.log.refresh();
        let from = self.log.events.len();
        let server = self.sim.addrs().gateway.to_string();
        let mut client = BinaryClient::connect(&server, gateway_name(first.environment), config)
            .await
            .map_err(|e| format!("binary gateway: {e}"))?;
        client
            .send(&frames)
            .await
            .map_err(|e| format!("binary gateway: {e}"))?;
        let keys: Vec<(u32, Vec<u8>)> = prepared
            .iter()
            .map(|p| {
                (
                    if api == Via::Binary0 { 0 } else { p.identifier },
                    p.token.clone(),
                )
            })
            .collect();
        // Which frames the hub has recorded, read incrementally: a fleet's thousands of
        // frames are each looked up once, not once per wake-up.
        let by_identifier = by_identifier(&keys);
        let progress = std::cell::RefCell::new((from, HashSet::new()));
        let recorded = |events: &[Event]| {
            let mut guard = progress.borrow_mut();
            let (scanned, found) = &mut *guard;
            for e in events.get(*scanned..).unwrap_or_default() {
                found.extend(binary_matches(e, &by_identifier, &keys));
            }
            *scanned = (*scanned).max(events.len());
            found.len() == keys.len()
        };
        let answer = tokio::select! {
            answer = client.finish(MAX_WAIT_PER_STEP) => Some(answer),
            _ = self.log.wait_for(recorded) => None,
        };
        self.log.refresh();
        let events = &self.log.events[from.min(self.log.events.len())..];
        let records = first_records(events, &keys);
        let rejected = records.iter().any(|r| {
            matches!(
                r,
                Some(Event::Notification {
                    outcome: Outcome::Rejected,
                    ..
                })
            )
        });
        let answer = match answer {
            Some(answer) => answer,
            None if rejected => client.finish(MAX_WAIT_PER_STEP).await,
            None => Ok(GatewayAnswer::Silent),
        };
        let answer = match answer {
            Ok(GatewayAnswer::Error(resp)) => Answer::error_response(&resp),
            Ok(GatewayAnswer::Closed) => Answer::closed(),
            Ok(GatewayAnswer::Silent) => {
                if prepared.iter().any(|p| p.decl.keep_open) {
                    self.open_binary.push(client);
                } else {
                    let _ = client.close().await;
                }
                Answer {
                    status: 0,
                    reason: None,
                    identifier: None,
                    attempts: 1,
                    timestamp_ms: None,
                }
            }
            Err(e) => return Err(format!("binary gateway: {e}")),
        };
        Ok(prepared
            .iter()
            .zip(&records)
            .map(|(p, record)| Sent {
                token: p.token.clone(),
                device: p.device.clone(),
                api,
                apns_id: match record {
                    Some(Event::Notification { apns_id, .. }) => Some(*apns_id),
                    _ => None,
                },
                answer: answer.clone(),
            })
            .collect())
    }

    /// HTTP/2 requests in order on one connection; a retried push (or one after a GOAWAY)
    /// opens a fresh connection.
    async fn push_http2(&mut self, prepared: &[Prepared]) -> Result<Vec<Sent>, String> {
        let mut out = Vec::new();
        let mut connection: Option<Http2Client> = None;
        let mut last_key = None;
        for p in prepared {
            let key: ConnectionKey = (
                p.app.app.clone(),
                p.auth == Auth::Certificate,
                p.environment,
            );
            if last_key.as_ref() != Some(&key) {
                if let (Some(old), Some(client)) = (last_key.take(), connection.take()) {
                    self.connections.insert(old, client);
                }
                connection = if p.decl.reuse_connection {
                    self.connections.remove(&key)
                } else {
                    None
                };
                last_key = Some(key);
            }
            if p.decl.refresh_token {
                if let Some(id) = &p.key_id {
                    self.provider_tokens.remove(id);
                }
            }
            let apns_id = Uuid::new_v4();
            let (max, retry_on) = match &p.decl.retry {
                Some(r) => (
                    *r.get_ref().attempts.get_ref(),
                    r.get_ref()
                        .on
                        .clone()
                        .unwrap_or_else(|| DEFAULT_RETRY_ON.to_vec()),
                ),
                None => (1, Vec::new()),
            };
            let mut attempts = 0;
            let answer = loop {
                attempts += 1;
                let request = self.request(p, apns_id)?;
                let sent = match connection.as_mut() {
                    Some(client) => client.send(&request).await,
                    None => match self.connect_http2(p).await {
                        Ok(client) => connection.insert(client).send(&request).await,
                        Err(e) => Err(e),
                    },
                };
                let answer = match sent {
                    Ok(resp) => Answer {
                        status: resp.status,
                        reason: resp.reason,
                        identifier: None,
                        attempts,
                        timestamp_ms: resp.timestamp,
                    },
                    Err(Http2ClientError::GoAway(goaway)) => {
                        connection = None;
                        Answer {
                            status: 0,
                            reason: Some(format!(
                                "GOAWAY {}",
                                goaway
                                    .reason()
                                    .unwrap_or_else(|| format!("code {}", goaway.error_code))
                            )),
                            identifier: None,
                            attempts,
                            timestamp_ms: None,
                        }
                    }
                    Err(e) => {
                        connection = None;
                        Answer {
                            status: 0,
                            reason: Some(e.to_string()),
                            identifier: None,
                            attempts,
                            timestamp_ms: None,
                        }
                    }
                };
                if let Some(client) = &connection {
                    if client.goaway().is_some() {
                        connection = None;
                    }
                }
                let retryable = answer.status == 0 || retry_on.contains(&answer.status);
                if attempts >= max || !retryable {
                    break answer;
                }
                connection = None;
            };
            out.push(Sent {
                token: p.token.clone(),
                device: p.device.clone(),
                api: Via::Http2,
                apns_id: Some(apns_id),
                answer,
            });
        }
        if let (Some(key), Some(client)) = (last_key, connection) {
            self.connections.insert(key, client);
        }
        Ok(out)
    }

    /// A connection authenticated as `p` says.
    async fn connect_http2(&self, p: &Prepared) -> Result<Http2Client, Http2ClientError> {
        let config = self
            .provider_tls(&p.app.app, p.auth == Auth::Certificate, true)
            .map_err(Http2ClientError::BadRequest)?;
        let addr = self.sim.addrs().http2.to_string();
        Http2Client::connect(&addr, http2_name(p.environment), config).await
    }

    /// The request of one notification.
    fn request(&mut self, p: &Prepared, apns_id: Uuid) -> Result<Http2Request, String> {
        let mut request = Http2Request::push(&hex::encode(&p.token), p.payload.clone())
            .header("apns-id", apns_id.to_string());
        let topic = p.decl.topic.clone().unwrap_or_else(|| p.app.topic());
        request = request.header("apns-topic", topic);
        let push_type = p
            .decl
            .push_type
            .clone()
            .unwrap_or_else(|| p.app.kind.push_type().to_owned());
        request = request.header("apns-push-type", push_type);
        if let Some(priority) = p.decl.priority {
            request = request.header("apns-priority", priority.to_string());
        }
        if let Some(expiry) = p.expiry {
            request = request.header("apns-expiration", expiry.to_string());
        }
        if let Some(collapse) = &p.decl.collapse_id {
            request = request.header("apns-collapse-id", collapse.clone());
        }
        if p.auth == Auth::Token {
            let key_id = p.key_id.as_ref().ok_or("the app has no key to sign with")?;
            let key = self
                .sim
                .pki()
                .auth_key(key_id)
                .ok_or_else(|| format!("no key {key_id}"))?;
            let jwt = match self.provider_tokens.get(key_id) {
                Some(jwt) => jwt.clone(),
                None => {
                    let jwt = jwt::sign(key, self.clock.now_secs()).map_err(|e| e.to_string())?;
                    self.provider_tokens.insert(key_id.clone(), jwt.clone());
                    jwt
                }
            };
            request = request.bearer(&jwt);
        }
        Ok(request)
    }

    /// One read of the feedback service with the app's certificate.
    async fn feedback(
        &self,
        bundle: &str,
        environment: Environment,
    ) -> Result<Vec<FeedbackTuple>, String> {
        let config = self.provider_tls(bundle, true, false)?;
        let addr = self.sim.addrs().feedback.to_string();
        let name = match environment {
            Environment::Sandbox => "feedback.sandbox.push.apple.com",
            Environment::Production => "feedback.push.apple.com",
        };
        let tuples = read_feedback(&addr, name, config, FEEDBACK_WAIT)
            .await
            .map_err(|e| format!("feedback: {e}"))?;
        Ok(tuples)
    }

    /// Waits until every notification sent to a device has been answered by it, every one
    /// stored for a device that is reconnecting (a fault dropped its connection) has reached
    /// it, and every inbox shows what its device acknowledged.
    pub async fn settle(&mut self) {
        let actors = self.sim.actors();
        self.log
            .wait_for(|events| {
                // Per notification: sent minus answered, and whether it is stored now for
                // a device that comes back by itself (its reconnection flushes the store
                // and logs another `sent`, which wakes this wait).
                let mut open: HashMap<Uuid, (i64, bool)> = HashMap::new();
                for e in events {
                    if let Event::Notification {
                        apns_id,
                        outcome,
                        serial,
                        ..
                    } = e
                    {
                        let entry = open.entry(*apns_id).or_default();
                        match outcome {
                            Outcome::Sent => *entry = (entry.0 + 1, false),
                            Outcome::Acknowledged | Outcome::NotInstalled | Outcome::Requeued => {
                                entry.0 -= 1
                            }
                            Outcome::Stored => {
                                entry.1 = serial.as_deref().is_some_and(|s| actors.coming_back(s))
                            }
                            // Superseded or expired in the store: it will not be sent.
                            _ => entry.1 = false,
                        }
                    }
                }
                open.values().all(|(sent, stored)| *sent <= 0 && !stored)
            })
            .await;
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        // An uninstall takes the app's notifications off the inbox, so its count no longer
        // says what was shown: for those devices, each notification acknowledged after
        // their last uninstall must be shown (by its apns-id).
        let mut acked_since: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, e) in self.log.events.iter().enumerate() {
            if let Event::Notification {
                outcome: Outcome::Acknowledged,
                serial: Some(serial),
                apns_id,
                ..
            } = e
            {
                match self.uninstalled_at.get(serial) {
                    None => *acked.entry(serial.clone()).or_default() += 1,
                    Some(at) if i >= *at => acked_since
                        .entry(serial.clone())
                        .or_default()
                        .push(apns_id.to_string()),
                    Some(_) => {}
                }
            }
        }
        let deadline = tokio::time::Instant::now() + MAX_WAIT_PER_STEP;
        loop {
            let actors = self.sim.actors();
            let behind = acked.iter().any(|(serial, n)| {
                let shown = actors
                    .inbox(serial)
                    .map(|list| list.iter().map(|s| s.index).max().unwrap_or(0))
                    .unwrap_or(u64::MAX);
                shown < *n
            }) || acked_since.iter().any(|(serial, ids)| {
                actors.inbox(serial).is_ok_and(|list| {
                    list.len() < crate::actors::inbox::INBOX_LEN
                        && ids.iter().any(|id| !list.iter().any(|s| s.apns_id == *id))
                })
            });
            if !behind {
                return;
            }
            match tokio::time::timeout_at(deadline, self.inbox_events.recv()).await {
                Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return,
                Ok(_) => {}
            }
        }
    }

    /// The verdict on one expectation.
    fn verdict(&self, e: &Expectation) -> Verdict {
        let mut v = Verdict {
            name: e.name.clone(),
            line: e.line,
            passed: false,
            expected: String::new(),
            seen: String::new(),
            closest: Vec::new(),
        };
        match &e.kind {
            ExpectKind::Shows { devices, decl } => self.shows(&mut v, devices, decl),
            ExpectKind::Answer { step, decl } => self.answer(&mut v, *step, decl),
            ExpectKind::Feedback {
                step,
                tokens,
                count,
                at_not_installed,
                as_410_of,
            } => {
                self.feedback_verdict(&mut v, *step, tokens.as_deref(), *count);
                if v.passed && (*at_not_installed || as_410_of.is_some()) {
                    self.feedback_times(&mut v, *step, *at_not_installed, *as_410_of);
                }
            }
            ExpectKind::Outcome {
                step,
                outcome,
                count,
            } => self.outcome_verdict(&mut v, *step, *outcome, *count),
            ExpectKind::NothingElse => self.nothing_else(&mut v),
        }
        v.closest.truncate(MAX_CLOSEST);
        v
    }

    fn shows(&self, v: &mut Verdict, devices: &[String], decl: &super::format::ShowsDecl) {
        let app = decl.app.as_ref().map(|a| a.get_ref().clone());
        let payloads: Option<Vec<Value>> = decl.payloads.as_ref().map(|list| {
            list.iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect()
        });
        let mut parts = Vec::new();
        if let Some(n) = decl.count {
            parts.push(format!("{n} notification(s)"));
        }
        if let Some(p) = &payloads {
            parts.push(format!(
                "payloads containing, in order: {}",
                p.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(c) = &decl.collapse_ids {
            parts.push(format!("collapse ids, in order: {c:?}"));
        }
        if parts.is_empty() {
            parts.push("at least one notification".to_owned());
        }
        let of = app.as_ref().map_or(String::new(), |a| format!(" of {a}"));
        let each = if devices.len() > 1 {
            format!("each of {} devices shows", devices.len())
        } else {
            format!("{} shows", devices.join(""))
        };
        v.expected = format!("{each}{of} {}", parts.join(" and "));
        let mut last = 0;
        for serial in devices {
            let all = self.sim.actors().inbox(serial).unwrap_or_default();
            let shown: Vec<&Shown> = all
                .iter()
                .filter(|s| {
                    app.as_ref().is_none_or(|a| {
                        s.app == a.app
                            && (a.kind == crate::protocol::token::TokenKind::Remote
                                || s.kind == a.kind.to_string())
                    })
                })
                .collect();
            let ok_count = decl.count.map_or(
                !shown.is_empty() || payloads.is_some() || decl.collapse_ids.is_some(),
                |n| shown.len() as u64 == n,
            );
            let ok_payloads = payloads.as_ref().is_none_or(|p| {
                p.len() == shown.len()
                    && p.iter()
                        .zip(&shown)
                        .all(|(want, s)| contains(&s.payload, want))
            });
            let ok_collapse = decl.collapse_ids.as_ref().is_none_or(|c| {
                c.len() == shown.len()
                    && c.iter()
                        .zip(&shown)
                        .all(|(want, s)| s.collapse_id.as_deref().unwrap_or("") == want)
            });
            last = shown.len();
            if !(ok_count && ok_payloads && ok_collapse) {
                v.seen = format!("{serial} shows {} notification(s){of}", shown.len());
                // What the device shows, other apps' too: the near miss may be there.
                v.closest = all.iter().map(describe_shown).collect();
                return;
            }
        }
        v.passed = true;
        v.seen = if devices.len() > 1 {
            format!("all {} devices do", devices.len())
        } else {
            format!("{last} shown{of}")
        };
    }

    fn answer(&self, v: &mut Verdict, step: usize, decl: &super::format::AnswerDecl) {
        let mut want = Vec::new();
        if let Some(s) = decl.status {
            want.push(format!("status {s}"));
        }
        if let Some(r) = &decl.reason {
            want.push(format!("reason {r}"));
        }
        if let Some(i) = decl.identifier {
            want.push(format!("identifier {i}"));
        }
        if let Some(a) = decl.attempts {
            want.push(format!("{a} attempt(s)"));
        }
        let which = decl.index.map_or("every notification".to_owned(), |i| {
            format!("notification {i}")
        });
        v.expected = format!(
            "{which} of {} answered with {}",
            decl.step.get_ref(),
            want.join(", ")
        );
        let StepResult::Push(sent) = &self.results[step] else {
            v.seen = "the step did not run".to_owned();
            return;
        };
        let chosen: Vec<&Sent> = match decl.index {
            Some(i) => i
                .checked_sub(1)
                .and_then(|i| sent.get(i))
                .into_iter()
                .collect(),
            None => sent.iter().collect(),
        };
        let bad = chosen.iter().find(|s| {
            let a = &s.answer;
            decl.status.is_some_and(|st| st != a.status)
                || decl
                    .reason
                    .as_ref()
                    .is_some_and(|r| !a.reason.as_deref().unwrap_or("").contains(r.as_str()))
                || decl.identifier.is_some_and(|i| Some(i) != a.identifier)
                || decl.attempts.is_some_and(|n| n != a.attempts)
        });
        match bad {
            Some(s) => {
                v.seen = s.answer.describe();
                v.closest = sent.iter().map(|s| s.answer.describe()).collect();
            }
            None if chosen.is_empty() => v.seen = "no notification was sent".to_owned(),
            None => {
                v.passed = true;
                v.seen = chosen[0].answer.describe();
            }
        }
    }

    fn feedback_verdict(
        &self,
        v: &mut Verdict,
        step: usize,
        tokens: Option<&[(String, AppToken)]>,
        count: Option<u64>,
    ) {
        let step_name = &self.scenario.steps[step].name;
        let StepResult::Feedback(read) = &self.results[step] else {
            v.expected = format!("{step_name} reads feedback");
            v.seen = "the step did not run".to_owned();
            return;
        };
        let mut seen: Vec<String> = read.iter().map(|t| self.token_name(&t.token)).collect();
        seen.sort();
        let mut want_parts = Vec::new();
        let mut ok = true;
        if let Some(tokens) = tokens {
            let mut want: Vec<String> = tokens.iter().map(|(s, a)| format!("{s} {a}")).collect();
            want.sort();
            want_parts.push(format!("tokens [{}]", want.join(", ")));
            ok &= want == seen;
        }
        if let Some(n) = count {
            want_parts.push(format!("{n} tuple(s)"));
            ok &= read.len() as u64 == n;
        }
        if want_parts.is_empty() {
            want_parts.push("at least one tuple".to_owned());
            ok &= !read.is_empty();
        }
        v.expected = format!("{step_name} reads {}", want_parts.join(" and "));
        v.seen = format!(
            "{} tuple(s): [{}]",
            read.len(),
            seen.iter()
                .take(MAX_CLOSEST)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        v.passed = ok;
        if !ok {
            v.closest = seen;
        }
    }

    /// The timestamps of a feedback read: each tuple's second must be when the delivery
    /// log recorded its token's first `not_installed` and/or that of the 410 the push step
    /// `as_410_of` got for the same token. Called once the tokens and counts hold.
    fn feedback_times(
        &self,
        v: &mut Verdict,
        step: usize,
        at_not_installed: bool,
        as_410_of: Option<usize>,
    ) {
        let StepResult::Feedback(read) = &self.results[step] else {
            return;
        };
        let mut first_report: HashMap<&DeviceToken, u64> = HashMap::new();
        for e in &self.log.events {
            if let Event::Notification {
                outcome: Outcome::NotInstalled,
                token: Some(token),
                at_ms,
                ..
            } = e
            {
                first_report.entry(token).or_insert(*at_ms);
            }
        }
        // The 410 answers of the push step, by token.
        let mut gone: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        if let Some(push) = as_410_of {
            if let StepResult::Push(sent) = &self.results[push] {
                for s in sent.iter().filter(|s| s.answer.status == 410) {
                    gone.insert(s.token.clone(), s.answer.timestamp_ms);
                }
            }
        }
        let mut wants = Vec::new();
        if at_not_installed {
            wants.push("the second its token was found not installed".to_owned());
        }
        if let Some(push) = as_410_of {
            wants.push(format!(
                "the timestamp of {}'s 410 to it",
                self.scenario.steps[push].name
            ));
        }
        v.expected = format!(
            "{}, each tuple's timestamp {}",
            v.expected,
            wants.join(" and ")
        );
        let mut wrong = Vec::new();
        for t in read {
            let name = self.token_name(&t.token);
            let seconds = u64::from(t.timestamp);
            if at_not_installed {
                match first_report.get(&t.token) {
                    Some(ms) if ms / 1000 == seconds => {}
                    Some(ms) => wrong.push(format!(
                        "{name}: timestamp {seconds}, not installed at {ms} ms"
                    )),
                    None => wrong.push(format!(
                        "{name}: timestamp {seconds}, and no not_installed in the log"
                    )),
                }
            }
            if let Some(push) = as_410_of {
                let step_name = &self.scenario.steps[push].name;
                match gone.get(t.token.as_bytes()) {
                    Some(Some(ms)) if ms / 1000 == seconds => {}
                    Some(Some(ms)) => wrong.push(format!(
                        "{name}: timestamp {seconds}, {step_name}'s 410 said {ms} ms"
                    )),
                    Some(None) => wrong.push(format!("{name}: {step_name}'s 410 had no timestamp")),
                    None => wrong.push(format!("{name}: {step_name} got no 410 for it")),
                }
            }
        }
        v.passed = wrong.is_empty();
        if !v.passed {
            v.seen = format!("{} of {} tuple(s) at another time", wrong.len(), read.len());
            v.closest = wrong;
        }
    }

    fn outcome_verdict(&self, v: &mut Verdict, step: usize, outcome: Outcome, count: Option<u64>) {
        let step_name = &self.scenario.steps[step].name;
        let ids = self.apns_ids(step);
        let total = match &self.results[step] {
            StepResult::Push(sent) => sent.len(),
            _ => 0,
        };
        let word = Milestone::Outcome(outcome).to_string();
        v.expected = match count {
            Some(n) => format!("{n} of {step_name}'s notifications {word}"),
            None => format!("every notification of {step_name} {word}"),
        };
        let mut by_id: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
        for e in &self.log.events {
            if let Event::Notification {
                apns_id,
                outcome: o,
                detail,
                ..
            } = e
            {
                if ids.contains(apns_id) {
                    let mut text = outcome_name(*o);
                    if !detail.is_empty() {
                        text.push_str(&format!(" ({detail})"));
                    }
                    by_id.entry(*apns_id).or_default().push(text);
                }
            }
        }
        let had = self
            .log
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Notification {
                    apns_id,
                    outcome: o,
                    ..
                } if *o == outcome && ids.contains(apns_id) => Some(*apns_id),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        v.passed = match count {
            Some(n) => had == n,
            None => total > 0 && had == total as u64,
        };
        v.seen = format!("{had} of {total} {word}");
        if !v.passed {
            // The notifications that did not get the outcome first: they are the near miss.
            let word = outcome_name(outcome);
            let (missed, had): (Vec<_>, Vec<_>) = by_id
                .values()
                .partition(|list| !list.iter().any(|t| t.split(' ').next() == Some(&word)));
            v.closest = missed
                .into_iter()
                .chain(had)
                .map(|list| list.join(" -> "))
                .collect();
            if total > ids.len() {
                v.closest.push(format!(
                    "{} notification(s) never reached the hub",
                    total - ids.len()
                ));
            }
        }
    }

    fn nothing_else(&self, v: &mut Verdict) {
        v.expected = if self.external_provider {
            "no other device shows a notification, no push was refused".to_owned()
        } else {
            "no other device shows a notification, no other push was refused".to_owned()
        };
        let mut covered_devices = std::collections::BTreeSet::new();
        let mut covered_steps = std::collections::BTreeSet::new();
        for e in &self.scenario.expects {
            match &e.kind {
                ExpectKind::Shows { devices, .. } => {
                    covered_devices.extend(devices.iter().cloned())
                }
                ExpectKind::Answer { step, .. } => {
                    covered_steps.insert(*step);
                }
                _ => {}
            }
        }
        let mut extra = Vec::new();
        for d in &self.scenario.devices {
            if covered_devices.contains(&d.serial) {
                continue;
            }
            for s in self.sim.actors().inbox(&d.serial).unwrap_or_default() {
                extra.push(format!("{} shows {}", d.serial, describe_shown(&s)));
            }
        }
        for (i, result) in self.results.iter().enumerate() {
            if covered_steps.contains(&i) {
                continue;
            }
            if let StepResult::Push(sent) = result {
                for s in sent.iter().filter(|s| s.answer.failed(s.api)) {
                    extra.push(format!(
                        "{} was answered {}",
                        self.scenario.steps[i].name,
                        s.answer.describe()
                    ));
                }
            }
        }
        if self.external_provider {
            // No step of the scenario pushed, so no `answer` can name a refusal: every
            // notification the hub refused is something else.
            for e in &self.log.events {
                if let Event::Notification {
                    outcome: Outcome::Rejected,
                    token,
                    detail,
                    api,
                    ..
                } = e
                {
                    let to = token
                        .as_ref()
                        .map_or_else(|| "no valid token".to_owned(), |t| self.token_name(t));
                    let api = match api {
                        Api::Binary => "binary",
                        Api::Http2 => "HTTP/2",
                    };
                    extra.push(format!("a {api} push to {to} was rejected: {detail}"));
                }
            }
        }
        v.passed = extra.is_empty();
        v.seen = if extra.is_empty() {
            "nothing else".to_owned()
        } else {
            format!("{} other thing(s) happened", extra.len())
        };
        v.closest = extra;
    }
}

/// A notification, resolved for sending.
#[derive(Debug, Clone)]
struct Prepared {
    device: Option<String>,
    token: Vec<u8>,
    environment: Environment,
    payload: Vec<u8>,
    expiry: Option<u32>,
    identifier: u32,
    app: AppToken,
    auth: Auth,
    key_id: Option<String>,
    decl: PushDecl,
}

/// Whether the delivery log shows `milestone` for the notifications `ids`.
fn reached(events: &[Event], ids: &HashSet<Uuid>, milestone: Milestone) -> bool {
    match milestone {
        Milestone::Done => true,
        Milestone::Outcome(outcome) => events.iter().any(|e| {
            matches!(e, Event::Notification { apns_id, outcome: o, .. }
                if *o == outcome && ids.contains(apns_id))
        }),
        Milestone::Settled => {
            let mut latest: HashMap<Uuid, Outcome> = HashMap::new();
            for e in events {
                if let Event::Notification {
                    apns_id, outcome, ..
                } = e
                {
                    if ids.contains(apns_id) {
                        latest.insert(*apns_id, *outcome);
                    }
                }
            }
            ids.iter().all(|id| {
                latest
                    .get(id)
                    .is_some_and(|o| !matches!(o, Outcome::Sent | Outcome::Requeued))
            })
        }
    }
}

/// The hub's first record of each binary notification `(identifier, token)` among `events`
/// (one pass over the events).
fn first_records<'e>(events: &'e [Event], keys: &[(u32, Vec<u8>)]) -> Vec<Option<&'e Event>> {
    let by_identifier = by_identifier(keys);
    let mut records = vec![None; keys.len()];
    for e in events {
        if let Some(i) = binary_matches(e, &by_identifier, keys).find(|&i| records[i].is_none()) {
            records[i] = Some(e);
        }
    }
    records
}

/// The indices of `keys` (binary `(identifier, token)` pairs) by identifier, for
/// [`binary_matches`].
fn by_identifier(keys: &[(u32, Vec<u8>)]) -> HashMap<u32, Vec<usize>> {
    let mut by_identifier: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (identifier, _)) in keys.iter().enumerate() {
        by_identifier.entry(*identifier).or_default().push(i);
    }
    by_identifier
}

/// The indices of the keys a binary notification record `e` stands for: its identifier,
/// and its token when the record has one (a frame refused before its token was read has
/// none and fits every key of its identifier).
fn binary_matches<'a>(
    e: &'a Event,
    by_identifier: &'a HashMap<u32, Vec<usize>>,
    keys: &'a [(u32, Vec<u8>)],
) -> impl Iterator<Item = usize> + 'a {
    let (identifier, token) = match e {
        Event::Notification {
            api: Api::Binary,
            identifier,
            token,
            ..
        } => (Some(identifier), token.as_ref()),
        _ => (None, None),
    };
    identifier
        .and_then(|id| by_identifier.get(id))
        .into_iter()
        .flatten()
        .copied()
        .filter(move |&i| token.is_none_or(|t| t.as_bytes() == keys[i].1))
}

/// Runs `work` for each serial, [`DEVICE_CONCURRENCY`] at a time; the first failure wins.
async fn for_each<F, Fut, T, E>(serials: &[String], work: F) -> Result<Vec<T>, String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut pending = serials.iter();
    let mut out = Vec::new();
    loop {
        while set.len() < DEVICE_CONCURRENCY {
            let Some(serial) = pending.next() else { break };
            set.spawn(work(serial.clone()));
        }
        let Some(joined) = set.join_next().await else {
            return Ok(out);
        };
        out.push(
            joined
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
    }
}

/// Whether `actual` contains every field of `expected` (objects recursively; anything else
/// equal).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| contains(got, v))),
        _ => actual == expected,
    }
}

/// A shown notification in one line.
fn describe_shown(s: &Shown) -> String {
    let mut out = format!("#{} {} {}", s.index, s.app, s.payload);
    if s.kind != "remote" {
        out.push_str(&format!(" [{}]", s.kind));
    }
    if let Some(c) = &s.collapse_id {
        out.push_str(&format!(" collapse-id {c}"));
    }
    out
}

/// Who a device step is about, in a few words.
fn who(devices: &[String]) -> String {
    match devices {
        [one] => one.clone(),
        many => format!("{} devices", many.len()),
    }
}

/// A push step's timeline text.
fn describe_sent(pushes: &[PushDecl], sent: &[Sent]) -> String {
    let api = match pushes.first().map(|p| p.api) {
        Some(Via::Http2) => "http2",
        Some(Via::Binary0) => "binary command 0",
        Some(Via::Binary1) => "binary command 1",
        _ => "binary command 2",
    };
    let target = match sent {
        [one] => one
            .device
            .clone()
            .unwrap_or_else(|| "a given token".to_owned()),
        many => format!("{} notifications", many.len()),
    };
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for s in sent {
        *answers
            .entry(if s.api == Via::Http2 || s.answer.failed(s.api) {
                s.answer.describe()
            } else {
                "accepted (no error response)".to_owned()
            })
            .or_default() += 1;
    }
    let answers: Vec<String> = answers
        .into_iter()
        .map(|(a, n)| if n > 1 { format!("{n}x {a}") } else { a })
        .collect();
    format!("{api} -> {target}: {}", answers.join(", "))
}

/// The TLS server name that selects `environment` on the binary gateway.
fn gateway_name(environment: Environment) -> &'static str {
    match environment {
        Environment::Sandbox => "gateway.sandbox.push.apple.com",
        Environment::Production => "gateway.push.apple.com",
    }
}

/// The TLS server name that selects `environment` on the HTTP/2 API.
fn http2_name(environment: Environment) -> &'static str {
    match environment {
        Environment::Sandbox => "api.sandbox.push.apple.com",
        Environment::Production => "api.push.apple.com",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payload_contains_the_fields_asked_for() {
        let shown = json!({"aps": {"alert": "hi", "badge": 1}, "n": 2});
        assert!(contains(&shown, &json!({"aps": {"alert": "hi"}})));
        assert!(contains(&shown, &json!({})));
        assert!(!contains(&shown, &json!({"aps": {"alert": "bye"}})));
        assert!(!contains(&shown, &json!({"m": 2})));
        assert!(!contains(&json!([1, 2]), &json!([1])));
    }

    /// A delivery whose connection a fault dropped is routed again, and stored when the
    /// device's reconnection comes after the hub saw it go: the end of the run waits for
    /// the device to come back rather than judging while it is still reconnecting (a CI run
    /// once judged 0 of 1 delivered while the device was on its way back).
    #[tokio::test]
    async fn the_end_waits_for_a_device_that_a_fault_dropped_to_come_back() {
        let text = r#"
[[app]]
bundle = "com.example.app"

[[device]]
serial = "D1"
apps = ["com.example.app"]

[[step]]
name = "drop"
fault = { on = "devices", drop = true, count = 1 }

[[step]]
name = "push"
push = { device = "D1", payload = { aps = { alert = "again" } } }

[[expect]]
outcome = { step = "push", is = "requeued" }

[[expect]]
outcome = { step = "push", is = "delivered" }

[[expect]]
shows = { device = "D1", count = 1 }
"#;
        // A few rounds: which of the two orders (reconnected before or after the hub saw the
        // drop) a round takes is up to the scheduler.
        for round in 0..5 {
            let report = run_file("drop.toml", text, &mut |_| {}).await;
            assert!(report.passed(), "round {round}: {report:?}");
        }
    }

    #[tokio::test]
    async fn a_scenario_built_by_hand_with_bad_indices_is_refused_not_indexed() {
        let mut scenario = Scenario::uniform(1, "com.a").unwrap();
        scenario.order = vec![3];
        let report = run(&scenario, "hand.toml", &mut |_| {}).await;
        assert!(!report.passed());
        let error = report.error.unwrap_or_default();
        assert!(error.contains("order names step 3 of 0"), "{error}");
    }
}
