//! The check of a scenario file: TOML's own errors (unknown key, wrong type, unknown value)
//! with the line TOML's span gives, then every rule of the format TOML cannot see (one
//! action per step, a reference to an app, a device or a step that does not exist, a
//! milestone that is not one, an `after` cycle, the bounds), each a [`Problem`] with its
//! line and the path of its field (`step[3].after`). Every problem is collected, not just
//! the first, so one `scenario check` lists them all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;

use toml::Spanned;

use super::format::{self, CertChoice, File, PushDecl, Via};
use super::{
    Action, After, AppSpec, DeviceSpec, ExpectKind, Expectation, Milestone, Scenario, Step,
    VirtualFleet, DEFAULT_TEAM, MAX_APPS, MAX_DEVICES, MAX_EXPECTS, MAX_STEPS,
};
use crate::protocol::token::{AppToken, TokenKind};
use crate::settings::{MAX_VIRTUAL_APPS, MAX_VIRTUAL_DEVICES};

/// Longest serial a device may have (the device protocol's str8 strings).
pub const MAX_SERIAL_LEN: usize = 64;

/// Longest team id a scenario may name (Apple's are 10 characters).
const MAX_TEAM_ID_LEN: usize = 32;

/// Longest bundle id a scenario may name (the certificate minting limit).
const MAX_BUNDLE_LEN: usize = 200;

/// Longest step name: short enough to read in a timeline line.
const MAX_STEP_NAME_LEN: usize = 64;

/// Latest `at_ms`: a scenario paces its timeline for a reader or a test, not for hours; ten
/// minutes bounds how long a run can sleep in all.
pub const MAX_AT_MS: u64 = 600_000;

/// Largest `advance_clock_ms`: past the storage policy's 30 days and a provider token's
/// hour by far, short of anything that could overflow an expiry.
pub const MAX_CLOCK_ADVANCE_MS: u64 = 400 * 24 * 3600 * 1000;

/// Most attempts a `retry` may ask for: enough to outlast any fault's `count` worth
/// testing, few enough that a misconfigured run ends quickly.
pub const MAX_ATTEMPTS: u32 = 20;

/// One mistake: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its line in the file, from 1.
    pub line: usize,
    /// The field's path (`device[2].serial`, `step[3].after`).
    pub field: String,
    /// What is wrong, in words.
    pub why: String,
}

impl fmt::Display for Problem {
    /// `LINE: field: why` (the CLI puts the file name in front).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.field, self.why)
    }
}

/// A scenario that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// The file breaks the format: every problem, in line order.
    #[error("scenario is not valid: {}", .0.iter().map(|p| format!("line {p}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// More devices than one process may hold.
    #[error("scenario has {0} devices; at most {MAX_DEVICES} run in one process")]
    TooMany(usize),
}

impl ScenarioError {
    /// The problems (a `TooMany` as one on line 1).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ScenarioError::Invalid(problems) => problems.clone(),
            ScenarioError::TooMany(n) => vec![Problem {
                line: 1,
                field: "device".to_owned(),
                why: format!("{n} devices; at most {MAX_DEVICES}"),
            }],
        }
    }
}

/// Where a checked scenario is to run besides `scenario run`, which runs every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `apns-sim test`: the user's COMMAND is the provider, so the scenario's own provider
    /// steps (`push`, `pushes`, `feedback`) have no place, nor the expectations about them
    /// (`answer`, `outcome`, `feedback`); a `shutdown` would pull the simulator from under
    /// COMMAND.
    Test,
    /// `apns-sim serve --scenario`: every step runs, except `shutdown` (serve keeps
    /// serving until it is stopped).
    Serve,
}

impl Host {
    /// The command's name, for the messages.
    fn command(self) -> &'static str {
        match self {
            Host::Test => "apns-sim test",
            Host::Serve => "apns-sim serve --scenario",
        }
    }
}

/// What of a checked scenario `host` cannot run, each mistake at its line and field as
/// [`check`] names them (empty: it can run there).
pub fn check_for(scenario: &Scenario, host: Host) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let field = format!("step[{}].{}", i + 1, step_key(&step.action));
        let why = match (&step.action, host) {
            (Action::Push(_), Host::Test) => Some(
                "the scenario pushes nothing under apns-sim test: COMMAND is the provider \
                 (use `apns-sim scenario run` for a scripted provider)",
            ),
            (Action::Feedback(..), Host::Test) => Some(
                "the scenario reads no feedback under apns-sim test: the tuples are \
                 COMMAND's to read (a read takes them)",
            ),
            (Action::Shutdown, _) => Some(match host {
                Host::Test => {
                    "no shutdown under apns-sim test: COMMAND is still using the simulator"
                }
                Host::Serve => {
                    "no shutdown under apns-sim serve --scenario: it serves until stopped"
                }
            }),
            _ => None,
        };
        if let Some(why) = why {
            problems.push(Problem {
                line: step.line,
                field,
                why: why.to_owned(),
            });
        }
    }
    if host == Host::Test {
        for (i, e) in scenario.expects.iter().enumerate() {
            let key = match e.kind {
                ExpectKind::Answer { .. } => "answer",
                ExpectKind::Outcome { .. } => "outcome",
                ExpectKind::Feedback { .. } => "feedback",
                ExpectKind::Shows { .. } | ExpectKind::NothingElse => continue,
            };
            problems.push(Problem {
                line: e.line,
                field: format!("expect[{}].{key}", i + 1),
                why: format!(
                    "an `{key}` expectation names a step of the scenario's own provider, \
                     which {} does not run; check what devices show (`shows`, \
                     `nothing_else`)",
                    host.command()
                ),
            });
        }
    }
    problems.sort_by_key(|p| p.line);
    problems
}

/// The key of the action a step's file entry gave (`push` for `pushes` too).
fn step_key(action: &Action) -> &'static str {
    match action {
        Action::AdvanceClock(_) => "advance_clock_ms",
        other => other.verb(),
    }
}

/// What the control API would answer `POST /v1/faults` with `spec` if it refuses it (the
/// HTTP/2 status and reason pairs Apple defines, which the hub alone does not know), as
/// (field, why). The control API's own check decides, and its refusal is read back from the
/// JSON body it would send.
fn control_refusal(spec: &crate::hub::FaultSpec) -> Option<(String, String)> {
    use axum::response::IntoResponse;
    use futures_util::FutureExt;
    let refusal = crate::server::control::faults::check_http2(spec).err()?;
    // The body is one buffer (JSON of an `ErrorBody`): it is ready on the first poll.
    let body = axum::body::to_bytes(refusal.into_response().into_body(), 64 * 1024)
        .now_or_never()
        .and_then(Result::ok);
    let parsed = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let text = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(key)?.as_str().map(str::to_owned))
    };
    Some((
        text("field").unwrap_or_else(|| "respond".to_owned()),
        text("error").unwrap_or_else(|| "the control API refuses this fault".to_owned()),
    ))
}

/// Parses and checks `text`.
pub fn check(text: &str) -> Result<Scenario, ScenarioError> {
    let file: File = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            return Err(ScenarioError::Invalid(vec![Problem {
                line: line_of(text, span.start),
                field: field_at(text, span),
                why: e.message().trim().to_owned(),
            }]));
        }
    };
    let mut c = Checker {
        text,
        problems: Vec::new(),
        wanted: Vec::new(),
        installs: Vec::new(),
        current_step: None,
    };
    let scenario = c.scenario(file);
    if c.problems.is_empty() {
        Ok(scenario)
    } else {
        c.problems.sort_by_key(|p| p.line);
        Err(ScenarioError::Invalid(c.problems))
    }
}

/// The line (from 1) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The field a TOML error points at: the table headers above it (`step[3]`) and the key of
/// its line (or the key its span covers, for an unknown key).
fn field_at(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut path = String::new();
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    for line in text[..line_start].lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let n = counts.entry(name.trim().to_owned()).or_default();
            *n += 1;
            path = format!("{}[{n}]", name.trim());
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            path = name.trim().to_owned();
        }
    }
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    let covered = text
        .get(span.start..span.end.min(text.len()))
        .unwrap_or("")
        .trim();
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    let before = &text[line_start..start];
    // The line's own key (`push` of `push = { … }`), and the key the span is about inside
    // it: the key the span covers (an unknown one), else the last before an `=`.
    let outer = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| bare(k) && line_start + k.len() <= start);
    let inner = if bare(covered) && !before.trim_end().ends_with('=') {
        Some(covered)
    } else {
        before
            .rfind('=')
            .map(|eq| before[..eq].rsplit(['{', ',']).next().unwrap_or("").trim())
            .filter(|k| bare(k))
    };
    let key = match (outer, inner) {
        (Some(o), Some(i)) if o != i => format!("{o}.{i}"),
        (Some(k), _) | (None, Some(k)) => k.to_owned(),
        (None, None) if !covered.is_empty() && !covered.contains('\n') => {
            covered.trim_matches(|c| c == '[' || c == ']').to_owned()
        }
        (None, None) => String::new(),
    };
    match (path.is_empty(), key.is_empty()) {
        (true, true) => "(file)".to_owned(),
        (true, false) => key,
        (false, true) => path,
        (false, false) if line.trim_start().starts_with('[') => path,
        (false, false) => format!("{path}.{key}"),
    }
}

/// Collects problems while building the scenario.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    /// The tokens steps and expectations need their devices to hold, checked once the
    /// timeline's order is known (an `install` earlier in it provides one).
    wanted: Vec<Wanted>,
    /// Each `install` step: its index in the file, its devices and the token it installs.
    installs: Vec<(usize, Vec<String>, AppToken)>,
    /// The step whose action is being checked (`None` while checking expectations).
    current_step: Option<usize>,
}

/// A token a step or an expectation needs devices to hold: at start, or installed by a
/// step that runs before it (any step, for an expectation, which is judged at the end).
#[derive(Debug, Clone)]
struct Wanted {
    /// The step that needs it (its index in the file), or `None` for an expectation.
    step: Option<usize>,
    /// The devices that must hold it.
    devices: Vec<String>,
    /// The token, with the span of the field that named it.
    app: Spanned<AppToken>,
    /// Any token of the app will do for the ordinary kind (an uninstall of the whole app,
    /// what a device shows of an app).
    whole_app: bool,
    /// The field's path, without `.app`.
    field: String,
}

/// A step name's place and the kind of its action, for references to it.
#[derive(Debug, Clone, Copy)]
struct StepRef {
    index: usize,
    verb: &'static str,
    /// How many notifications a push step sends (per connection or per fleet).
    sends: usize,
}

impl Checker<'_> {
    /// Records a problem at `span`.
    fn at(&mut self, span: Range<usize>, field: impl Into<String>, why: impl Into<String>) {
        self.problems.push(Problem {
            line: line_of(self.text, span.start),
            field: field.into(),
            why: why.into(),
        });
    }

    fn scenario(&mut self, file: File) -> Scenario {
        let apps = self.apps(&file);
        let (devices, groups, virtual_fleet) = self.devices(&file);
        let teams = self.teams(&file);
        let holds: BTreeMap<&str, &DeviceSpec> =
            devices.iter().map(|d| (d.serial.as_str(), d)).collect();
        let world = World {
            apps: &apps,
            groups: &groups,
            holds: &holds,
            virtual_name: virtual_fleet.as_ref().map(|v| v.name.as_str()),
        };
        let (steps, names) = self.steps(&file, &world);
        let order = self.order(&file, &steps);
        let expects = self.expects(&file, &world, &names);
        self.check_held(&world, &order, file.steps.len());
        Scenario {
            name: file.name,
            description: file.description,
            apps,
            devices,
            groups,
            virtual_fleet,
            teams,
            steps,
            order,
            expects,
        }
    }

    fn apps(&mut self, file: &File) -> Vec<AppSpec> {
        if file.apps.len() > MAX_APPS {
            self.at(
                file.apps[MAX_APPS].span(),
                format!("app[{}]", MAX_APPS + 1),
                format!("at most {MAX_APPS} apps"),
            );
        }
        let mut apps = Vec::new();
        let mut bundles = HashSet::new();
        let mut keys = HashSet::new();
        for (i, app) in file.apps.iter().enumerate() {
            let field = format!("app[{}]", i + 1);
            let a = app.get_ref();
            let bundle = a.bundle.get_ref();
            if bundle.is_empty() || bundle.len() > MAX_BUNDLE_LEN || bundle.contains(':') {
                self.at(
                    a.bundle.span(),
                    format!("{field}.bundle"),
                    format!("a bundle id is 1 to {MAX_BUNDLE_LEN} bytes without ':'"),
                );
            } else if !bundles.insert(bundle.clone()) {
                self.at(
                    a.bundle.span(),
                    format!("{field}.bundle"),
                    format!("{bundle} is declared twice"),
                );
            }
            let team = a
                .team
                .as_ref()
                .map_or(DEFAULT_TEAM.to_owned(), |t| t.get_ref().clone());
            if let Some(t) = &a.team {
                if !apple_id(t.get_ref()) {
                    self.at(
                        t.span(),
                        format!("{field}.team"),
                        "a team id is 10 capital letters and digits",
                    );
                }
            }
            if let Some(k) = &a.key_id {
                if !apple_id(k.get_ref()) {
                    self.at(
                        k.span(),
                        format!("{field}.key_id"),
                        "a key id is 10 capital letters and digits",
                    );
                } else if !keys.insert(k.get_ref().clone())
                    || k.get_ref() == crate::pki::DEFAULT_KEY_ID
                {
                    self.at(
                        k.span(),
                        format!("{field}.key_id"),
                        format!("key id {} is taken", k.get_ref()),
                    );
                }
            }
            apps.push(AppSpec {
                bundle: bundle.clone(),
                team,
                certificate: a.certificate,
                key_id: a.key_id.as_ref().map(|k| k.get_ref().clone()),
            });
        }
        apps
    }

    fn devices(
        &mut self,
        file: &File,
    ) -> (
        Vec<DeviceSpec>,
        BTreeMap<String, Vec<String>>,
        Option<VirtualFleet>,
    ) {
        let mut devices = Vec::new();
        let mut groups = BTreeMap::new();
        let mut serials = HashSet::new();
        let mut virtual_fleet: Option<VirtualFleet> = None;
        for (i, decl) in file.devices.iter().enumerate() {
            let field = format!("device[{}]", i + 1);
            let d = decl.get_ref();
            let serial = d.serial.get_ref();
            if let Some(flag) = d.is_virtual.as_ref().filter(|v| *v.get_ref()) {
                if let Some(fleet) = self.virtual_fleet(decl, &field, flag, &virtual_fleet) {
                    if serials.contains(&fleet.name) {
                        self.at(
                            d.serial.span(),
                            format!("{field}.serial"),
                            format!("serial {} appears twice", fleet.name),
                        );
                    } else {
                        serials.insert(fleet.name.clone());
                        virtual_fleet = Some(fleet);
                    }
                }
                continue;
            }
            let count = d.count.as_ref().map(|c| *c.get_ref());
            let max_len = if count.is_some() {
                MAX_SERIAL_LEN - 6
            } else {
                MAX_SERIAL_LEN
            };
            if serial.is_empty() || serial.len() > max_len || serial.contains(' ') {
                self.at(
                    d.serial.span(),
                    format!("{field}.serial"),
                    format!("serial must be 1 to {max_len} bytes without spaces"),
                );
                continue;
            }
            if d.apps.get_ref().is_empty() {
                self.at(
                    d.apps.span(),
                    format!("{field}.apps"),
                    "needs at least one app",
                );
            }
            let mut tokens = HashSet::new();
            if let Some(twice) = d.apps.get_ref().iter().find(|a| !tokens.insert(*a)) {
                self.at(
                    d.apps.span(),
                    format!("{field}.apps"),
                    format!("app token {twice} appears twice"),
                );
            }
            let members: Vec<String> = match count {
                None => vec![serial.clone()],
                Some(n) if n == 0 || n > MAX_DEVICES as u64 => {
                    if let Some(c) = &d.count {
                        self.at(
                            c.span(),
                            format!("{field}.count"),
                            format!("count is 1 to {MAX_DEVICES}"),
                        );
                    }
                    continue;
                }
                Some(n) => {
                    let width = n.to_string().len().max(4);
                    (1..=n).map(|k| format!("{serial}-{k:0width$}")).collect()
                }
            };
            if devices.len() + members.len() > MAX_DEVICES {
                self.at(
                    decl.span(),
                    field,
                    format!("more than {MAX_DEVICES} devices in one scenario"),
                );
                break;
            }
            let clash = members
                .iter()
                .chain(std::iter::once(serial))
                .find(|s| serials.contains(*s) || (count.is_some() && groups.contains_key(*s)));
            if let Some(clash) = clash {
                self.at(
                    d.serial.span(),
                    format!("{field}.serial"),
                    format!("serial {clash} appears twice"),
                );
                continue;
            }
            serials.extend(members.iter().cloned());
            serials.insert(serial.clone());
            for member in &members {
                devices.push(DeviceSpec {
                    serial: member.clone(),
                    environment: d.environment,
                    apps: d.apps.get_ref().clone(),
                });
            }
            groups.insert(serial.clone(), members);
        }
        (devices, groups, virtual_fleet)
    }

    /// A `[[device]]` with `virtual = true`: a count within bounds, bundle ids only, one
    /// per file; `None` (with the problems recorded) if it is not right.
    fn virtual_fleet(
        &mut self,
        decl: &Spanned<format::DeviceDecl>,
        field: &str,
        flag: &Spanned<bool>,
        before: &Option<VirtualFleet>,
    ) -> Option<VirtualFleet> {
        let d = decl.get_ref();
        let problems = self.problems.len();
        if before.is_some() {
            self.at(
                flag.span(),
                format!("{field}.virtual"),
                "a scenario has at most one virtual fleet",
            );
        }
        let serial = d.serial.get_ref();
        if serial.is_empty() || serial.len() > MAX_SERIAL_LEN || serial.contains(' ') {
            self.at(
                d.serial.span(),
                format!("{field}.serial"),
                format!("serial must be 1 to {MAX_SERIAL_LEN} bytes without spaces"),
            );
        }
        let count = match &d.count {
            None => {
                self.at(
                    flag.span(),
                    format!("{field}.count"),
                    format!("a virtual fleet needs a count, 1 to {MAX_VIRTUAL_DEVICES}"),
                );
                0
            }
            Some(c) if *c.get_ref() == 0 || *c.get_ref() > u64::from(MAX_VIRTUAL_DEVICES) => {
                self.at(
                    c.span(),
                    format!("{field}.count"),
                    format!("a virtual fleet's count is 1 to {MAX_VIRTUAL_DEVICES}"),
                );
                0
            }
            Some(c) => *c.get_ref() as u32,
        };
        let apps = d.apps.get_ref();
        if apps.is_empty() || apps.len() > MAX_VIRTUAL_APPS {
            self.at(
                d.apps.span(),
                format!("{field}.apps"),
                format!("a virtual fleet holds 1 to {MAX_VIRTUAL_APPS} apps"),
            );
        }
        if let Some(kinded) = apps.iter().find(|a| a.kind != TokenKind::Remote) {
            self.at(
                d.apps.span(),
                format!("{field}.apps"),
                format!(
                    "{kinded}: a virtual fleet holds every kind of token of each app; \
                     list bundle ids"
                ),
            );
        }
        let mut names: Vec<String> = Vec::new();
        for app in apps {
            if names.contains(&app.app) {
                self.at(
                    d.apps.span(),
                    format!("{field}.apps"),
                    format!("app {} appears twice", app.app),
                );
            } else {
                names.push(app.app.clone());
            }
        }
        (self.problems.len() == problems).then(|| VirtualFleet {
            name: serial.clone(),
            count,
            environment: d.environment,
            apps: names,
        })
    }

    fn teams(&mut self, file: &File) -> BTreeMap<String, Vec<String>> {
        let Some(teams) = &file.teams else {
            return BTreeMap::new();
        };
        let span = teams.span();
        let mut owned = HashSet::new();
        for (team, bundles) in teams.get_ref() {
            let field = format!("teams.{team}");
            if team.is_empty()
                || team.len() > MAX_TEAM_ID_LEN
                || !team.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                self.at(
                    span.clone(),
                    field.clone(),
                    format!("a team id is 1 to {MAX_TEAM_ID_LEN} letters and digits"),
                );
            }
            for bundle in bundles {
                if bundle.is_empty() || bundle.len() > MAX_BUNDLE_LEN {
                    self.at(
                        span.clone(),
                        field.clone(),
                        format!("bundle id {bundle:?} must be 1 to {MAX_BUNDLE_LEN} bytes"),
                    );
                } else if !owned.insert(bundle.as_str()) {
                    self.at(
                        span.clone(),
                        field.clone(),
                        format!("bundle {bundle} is claimed by two teams (or twice)"),
                    );
                }
            }
        }
        teams.get_ref().clone()
    }

    /// The devices a reference names: a `[[device]]` serial (a fleet's name: each of its
    /// devices, or its `first` N) or one device of a fleet.
    fn devices_of(
        &mut self,
        world: &World<'_>,
        device: &Spanned<String>,
        first: Option<&Spanned<u64>>,
        field: &str,
    ) -> Vec<String> {
        let name = device.get_ref();
        let members = match world.groups.get(name) {
            Some(members) => members.clone(),
            None if world.holds.contains_key(name.as_str()) => vec![name.clone()],
            None if world.virtual_name == Some(name.as_str()) => {
                self.at(
                    device.span(),
                    format!("{field}.device"),
                    format!(
                        "{name} is a virtual fleet: steps and expectations cannot name it \
                         (providers push to its tokens, which GET /v1/virtual/devices lists)"
                    ),
                );
                return Vec::new();
            }
            None => {
                self.at(
                    device.span(),
                    format!("{field}.device"),
                    format!("no device or fleet {name} in [[device]]"),
                );
                return Vec::new();
            }
        };
        match first {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() as usize > members.len() => {
                self.at(
                    n.span(),
                    format!("{field}.first"),
                    format!("{name} has {} devices", members.len()),
                );
                members
            }
            Some(n) => members[..*n.get_ref() as usize].to_vec(),
            None => members,
        }
    }

    /// Notes that `devices` must hold `app` (any token of it for the ordinary kind's whole
    /// app) when the current step runs; [`Checker::check_held`] decides once the order is
    /// known.
    fn held(&mut self, devices: &[String], app: &Spanned<AppToken>, whole_app: bool, field: &str) {
        self.wanted.push(Wanted {
            step: self.current_step,
            devices: devices.to_vec(),
            app: app.clone(),
            whole_app,
            field: field.to_owned(),
        });
    }

    /// Checks every [`Wanted`] token: a device holds it if it did at start, or if an
    /// `install` of it (on that device) runs before the step that needs it in `order`
    /// (the order the steps run in; file order when it could not be made). An expectation
    /// is judged after every step, so any install counts for it.
    fn check_held(&mut self, world: &World<'_>, order: &[usize], steps: usize) {
        let order: Vec<usize> = if order.is_empty() {
            (0..steps).collect()
        } else {
            order.to_vec()
        };
        // The position each step (by its index in the file) runs at.
        let position: BTreeMap<usize, usize> =
            order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let installs: Vec<(usize, Vec<String>, AppToken)> = std::mem::take(&mut self.installs)
            .into_iter()
            .filter_map(|(i, devices, app)| position.get(&i).map(|pos| (*pos, devices, app)))
            .collect();
        for w in std::mem::take(&mut self.wanted) {
            let wanted = w.app.get_ref();
            let fits = |held: &AppToken| {
                held == wanted
                    || (w.whole_app && wanted.kind == TokenKind::Remote && held.app == wanted.app)
            };
            let before = w
                .step
                .map(|s| position.get(&s).copied().unwrap_or(usize::MAX));
            let missing = w.devices.iter().find(|serial| {
                let at_start = world
                    .holds
                    .get(serial.as_str())
                    .is_none_or(|d| d.apps.iter().any(fits));
                let installed = installs.iter().any(|(pos, devices, app)| {
                    before.is_none_or(|b| *pos < b) && devices.contains(serial) && fits(app)
                });
                !at_start && !installed
            });
            if let Some(serial) = missing {
                let when = if w.step.is_some() {
                    "nor does a step before this one install it"
                } else {
                    "nor does any step install it"
                };
                self.at(
                    w.app.span(),
                    format!("{}.app", w.field),
                    format!("device {serial} does not hold {wanted} at start, {when}"),
                );
            }
        }
    }

    fn steps(&mut self, file: &File, world: &World<'_>) -> (Vec<Step>, BTreeMap<String, StepRef>) {
        if file.steps.len() > MAX_STEPS {
            self.at(
                file.steps[MAX_STEPS].span(),
                format!("step[{}]", MAX_STEPS + 1),
                format!("at most {MAX_STEPS} steps"),
            );
        }
        // Names first, so `after` and `fault_off` may point forward.
        let mut names: BTreeMap<String, StepRef> = BTreeMap::new();
        for (i, step) in file.steps.iter().enumerate() {
            let s = step.get_ref();
            let name = step_name(s, i);
            if let Some(n) = &s.name {
                if n.get_ref().is_empty()
                    || n.get_ref().len() > MAX_STEP_NAME_LEN
                    || n.get_ref().contains(char::is_whitespace)
                {
                    self.at(
                        n.span(),
                        format!("step[{}].name", i + 1),
                        format!("a step name is 1 to {MAX_STEP_NAME_LEN} bytes without spaces"),
                    );
                }
            }
            let sends = match (&s.push, &s.pushes) {
                (Some(p), _) => match p.get_ref().device.as_ref().map(|d| d.get_ref()) {
                    Some(d) => world.groups.get(d).map_or(1, Vec::len),
                    None => 1,
                },
                (None, Some(list)) => list.get_ref().len(),
                (None, None) => 0,
            };
            let verb = verb(s);
            if names
                .insert(
                    name.clone(),
                    StepRef {
                        index: i,
                        verb,
                        sends,
                    },
                )
                .is_some()
            {
                let span = s.name.as_ref().map_or(step.span(), Spanned::span);
                self.at(
                    span,
                    format!("step[{}].name", i + 1),
                    format!("step name {name} is used twice"),
                );
            }
        }
        let mut steps = Vec::new();
        for (i, step) in file.steps.iter().enumerate() {
            let field = format!("step[{}]", i + 1);
            let s = step.get_ref();
            let given = given_actions(s);
            if given.len() != 1 {
                let why = if given.is_empty() {
                    format!("a step needs one action: {}", ACTIONS.join(", "))
                } else {
                    format!(
                        "a step has one action; this one has {}",
                        given.join(" and ")
                    )
                };
                self.at(step.span(), field.clone(), why);
                continue;
            }
            if let Some(at) = &s.at_ms {
                if *at.get_ref() > MAX_AT_MS {
                    self.at(
                        at.span(),
                        format!("{field}.at_ms"),
                        format!("at most {MAX_AT_MS} ms"),
                    );
                }
            }
            let after = s
                .after
                .as_ref()
                .and_then(|a| self.after(a, &names, i, &format!("{field}.after")));
            self.current_step = Some(i);
            let action = self.action(s, world, &names, &field);
            self.current_step = None;
            let Some(action) = action else {
                continue;
            };
            steps.push(Step {
                name: step_name(s, i),
                line: line_of(self.text, step.span().start),
                at_ms: s.at_ms.as_ref().map(|a| *a.get_ref()),
                after,
                action,
            });
        }
        (steps, names)
    }

    fn after(
        &mut self,
        after: &Spanned<String>,
        names: &BTreeMap<String, StepRef>,
        own: usize,
        field: &str,
    ) -> Option<After> {
        let words: Vec<&str> = after.get_ref().split_whitespace().collect();
        let [step, word] = words[..] else {
            self.at(
                after.span(),
                field,
                "write after = \"STEP MILESTONE\", e.g. \"push-1 delivered\"",
            );
            return None;
        };
        let Some(target) = names.get(step) else {
            self.at(after.span(), field, format!("no step named {step}"));
            return None;
        };
        if target.index == own {
            self.at(after.span(), field, "a step cannot wait for itself");
            return None;
        }
        let Some(milestone) = Milestone::parse(word) else {
            self.at(
                after.span(),
                field,
                format!("{word:?} is not a milestone; one of {}", Milestone::WORDS),
            );
            return None;
        };
        if milestone != Milestone::Done && target.verb != "push" {
            self.at(
                after.span(),
                field,
                format!(
                    "{step} is a {} step: only a push step's notifications have outcomes; \
                     wait for \"{step} done\"",
                    target.verb
                ),
            );
            return None;
        }
        Some(After {
            step: target.index,
            milestone,
        })
    }

    fn action(
        &mut self,
        s: &format::StepDecl,
        world: &World<'_>,
        names: &BTreeMap<String, StepRef>,
        field: &str,
    ) -> Option<Action> {
        if let Some(p) = &s.push {
            let devices = match &p.get_ref().device {
                Some(d) => {
                    let first = p.get_ref().first.as_ref();
                    self.devices_of(world, d, first, &format!("{field}.push"))
                }
                None => Vec::new(),
            };
            let push = self.push(
                p.get_ref(),
                p.span(),
                world,
                &devices,
                &format!("{field}.push"),
            );
            // One notification per device of the fleet, each its own copy.
            let pushes = if devices.len() > 1 {
                devices
                    .iter()
                    .map(|serial| {
                        let mut one = push.clone();
                        one.device = Some(Spanned::new(0..0, serial.clone()));
                        one.first = None;
                        one
                    })
                    .collect()
            } else {
                vec![push]
            };
            return Some(Action::Push(pushes));
        }
        if let Some(list) = &s.pushes {
            if list.get_ref().is_empty() {
                self.at(
                    list.span(),
                    format!("{field}.pushes"),
                    "needs at least one push",
                );
            }
            let mut out = Vec::new();
            for (k, p) in list.get_ref().iter().enumerate() {
                let f = format!("{field}.pushes[{}]", k + 1);
                let devices = match &p.device {
                    Some(d) => self.devices_of(world, d, p.first.as_ref(), &f),
                    None => Vec::new(),
                };
                if devices.len() > 1 {
                    self.at(
                        list.span(),
                        format!("{f}.device"),
                        "each of pushes names one device (a push step sends to a fleet)",
                    );
                }
                if p.api != list.get_ref()[0].api {
                    self.at(
                        list.span(),
                        format!("{f}.api"),
                        "every push of one connection goes through one API",
                    );
                }
                out.push(self.push(p, list.span(), world, &devices, &f));
            }
            return Some(Action::Push(out));
        }
        if let Some(d) = s.uninstall.as_ref().or(s.install.as_ref()) {
            let verb = if s.uninstall.is_some() {
                "uninstall"
            } else {
                "install"
            };
            let f = format!("{field}.{verb}");
            let da = d.get_ref();
            let devices = self.devices_of(world, &da.device, da.first.as_ref(), &f);
            if s.uninstall.is_some() {
                self.held(&devices, &da.app, true, &f);
                return Some(Action::Uninstall(devices, da.app.get_ref().clone()));
            }
            if let Some(step) = self.current_step {
                self.installs
                    .push((step, devices.clone(), da.app.get_ref().clone()));
            }
            return Some(Action::Install(devices, da.app.get_ref().clone()));
        }
        for (value, verb) in [
            (&s.offline, "offline"),
            (&s.online, "online"),
            (&s.reboot, "reboot"),
        ] {
            if let Some(d) = value {
                let devices = self.devices_of(world, d, None, &format!("{field}.{verb}"));
                return Some(match verb {
                    "offline" => Action::Offline(devices),
                    "online" => Action::Online(devices),
                    _ => Action::Reboot(devices),
                });
            }
        }
        if let Some(fb) = &s.feedback {
            let app = fb.get_ref().app.get_ref();
            match world.apps.iter().find(|a| a.bundle == *app) {
                None => self.at(
                    fb.get_ref().app.span(),
                    format!("{field}.feedback.app"),
                    format!("no [[app]] with bundle {app}"),
                ),
                Some(a) if a.certificate == CertChoice::None => self.at(
                    fb.get_ref().app.span(),
                    format!("{field}.feedback.app"),
                    format!("{app} has no certificate, and feedback is read with one"),
                ),
                Some(_) => {}
            }
            return Some(Action::Feedback(app.clone(), fb.get_ref().environment));
        }
        if let Some(fault) = &s.fault {
            if let Err(e) = crate::hub::check_fault(fault.get_ref()) {
                self.at(fault.span(), format!("{field}.fault.{}", e.field), e.error);
            } else if let Some((at, why)) = control_refusal(fault.get_ref()) {
                self.at(fault.span(), format!("{field}.fault.{at}"), why);
            }
            return Some(Action::Fault(fault.get_ref().clone()));
        }
        if let Some(off) = &s.fault_off {
            return match names.get(off.get_ref()) {
                Some(target) if target.verb == "fault" => Some(Action::FaultOff(target.index)),
                Some(_) => {
                    self.at(
                        off.span(),
                        format!("{field}.fault_off"),
                        format!("step {} does not switch a fault on", off.get_ref()),
                    );
                    None
                }
                None => {
                    self.at(
                        off.span(),
                        format!("{field}.fault_off"),
                        format!("no step named {}", off.get_ref()),
                    );
                    None
                }
            };
        }
        if let Some(flag) = &s.shutdown {
            if !*flag.get_ref() {
                self.at(
                    flag.span(),
                    format!("{field}.shutdown"),
                    "write shutdown = true, or leave the step out",
                );
            }
            return Some(Action::Shutdown);
        }
        if let Some(ms) = &s.advance_clock_ms {
            if *ms.get_ref() == 0 || *ms.get_ref() > MAX_CLOCK_ADVANCE_MS {
                self.at(
                    ms.span(),
                    format!("{field}.advance_clock_ms"),
                    format!("1 to {MAX_CLOCK_ADVANCE_MS} ms"),
                );
            }
            return Some(Action::AdvanceClock(*ms.get_ref()));
        }
        None
    }

    /// Checks one push and returns it with its app filled in.
    fn push(
        &mut self,
        p: &PushDecl,
        span: Range<usize>,
        world: &World<'_>,
        devices: &[String],
        field: &str,
    ) -> PushDecl {
        let mut p = p.clone();
        let binary = p.api != Via::Http2;
        let bad = |c: &mut Self, what: &str, why: String| {
            c.at(span.clone(), format!("{field}.{what}"), why);
        };
        match (&p.device, &p.token) {
            (None, None) => bad(
                self,
                "device",
                "a push names a device or a token".to_owned(),
            ),
            (Some(_), Some(t)) => self.at(
                t.span(),
                format!("{field}.token"),
                "give a device or a token, not both",
            ),
            _ => {}
        }
        if let Some(t) = &p.token {
            let hex = t.get_ref();
            if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.len() > 400
            {
                self.at(
                    t.span(),
                    format!("{field}.token"),
                    "a token is hex digits, an even number of them (at most 400)",
                );
            }
            if p.app.is_none() {
                bad(self, "app", "a push to a token names its app".to_owned());
            }
        }
        if p.app.is_none() {
            if let Some(first) = devices
                .first()
                .and_then(|s| world.holds.get(s.as_str()))
                .and_then(|d| d.apps.first())
            {
                p.app = Some(Spanned::new(span.clone(), first.clone()));
            }
        }
        if let Some(app) = p.app.clone() {
            if !devices.is_empty() {
                self.held(devices, &app, false, field);
            }
            match world.apps.iter().find(|a| a.bundle == app.get_ref().app) {
                None => self.at(
                    app.span(),
                    format!("{field}.app"),
                    format!(
                        "no [[app]] with bundle {}: its provider needs credentials",
                        app.get_ref().app
                    ),
                ),
                Some(a) => {
                    let auth = p.auth.as_ref().map(|a| *a.get_ref());
                    let cert = a.certificate != CertChoice::None;
                    if (binary || auth == Some(format::Auth::Certificate)) && !cert {
                        bad(self, "app", format!("{} has no certificate", a.bundle));
                    }
                    if p.refresh_token && auth != Some(format::Auth::Token) {
                        bad(
                            self,
                            "refresh_token",
                            "refresh_token needs auth = \"token\"".to_owned(),
                        );
                    }
                    if auth == Some(format::Auth::Token) && a.key_id.is_none() {
                        bad(
                            self,
                            "auth",
                            format!("{} has no key_id to sign with", a.bundle),
                        );
                    }
                    if !binary && auth.is_none() && !cert && a.key_id.is_none() {
                        bad(
                            self,
                            "app",
                            format!("{} has no certificate and no key", a.bundle),
                        );
                    }
                }
            }
        }
        if binary {
            for (given, what) in [
                (p.auth.is_some(), "auth"),
                (p.collapse_id.is_some(), "collapse_id"),
                (p.push_type.is_some(), "push_type"),
                (p.topic.is_some(), "topic"),
                (p.retry.is_some(), "retry"),
                (p.reuse_connection, "reuse_connection"),
                (p.refresh_token, "refresh_token"),
            ] {
                if given {
                    bad(
                        self,
                        what,
                        format!("{what} is HTTP/2 only; the binary API has no such field"),
                    );
                }
            }
        }
        if p.api == Via::Binary0 {
            for (given, what) in [
                (p.expiry.is_some() || p.expiry_in_s.is_some(), "expiry"),
                (p.priority.is_some(), "priority"),
                (p.identifier.is_some(), "identifier"),
            ] {
                if given {
                    bad(self, what, format!("command 0 has no {what}"));
                }
            }
        }
        if !binary && p.keep_open {
            bad(
                self,
                "keep_open",
                "keep_open is the binary API's (HTTP/2 connections stay open anyway)".to_owned(),
            );
        }
        if p.api == Via::Binary1 && p.priority.is_some() {
            bad(self, "priority", "command 1 has no priority".to_owned());
        }
        if p.api == Via::Http2 && p.identifier.is_some() {
            bad(
                self,
                "identifier",
                "identifier is the binary API's".to_owned(),
            );
        }
        if p.expiry.is_some() && p.expiry_in_s.is_some() {
            bad(
                self,
                "expiry",
                "give expiry or expiry_in_s, not both".to_owned(),
            );
        }
        if p.payload.is_some() && p.payload_text.is_some() {
            bad(
                self,
                "payload",
                "give payload or payload_text, not both".to_owned(),
            );
        }
        if let Some(retry) = &p.retry {
            let n = *retry.get_ref().attempts.get_ref();
            if !(2..=MAX_ATTEMPTS).contains(&n) {
                self.at(
                    retry.get_ref().attempts.span(),
                    format!("{field}.retry.attempts"),
                    format!("2 to {MAX_ATTEMPTS} attempts"),
                );
            }
        }
        p
    }

    /// The order the steps run in: file order, except that a step runs after the one its
    /// `after` names; a cycle is reported at each `after` in it.
    fn order(&mut self, file: &File, steps: &[Step]) -> Vec<usize> {
        if steps.len() != file.steps.len() {
            // Some steps were refused; the order is not needed.
            return Vec::new();
        }
        let mut order = Vec::new();
        let mut placed = vec![false; steps.len()];
        let mut reported = BTreeSet::new();
        for start in 0..steps.len() {
            let mut chain = vec![start];
            let mut at = start;
            while let Some(after) = steps[at].after {
                if placed[after.step] {
                    break;
                }
                if let Some(pos) = chain.iter().position(|s| *s == after.step) {
                    let cycle: Vec<&str> = chain[pos..]
                        .iter()
                        .chain(std::iter::once(&after.step))
                        .map(|s| steps[*s].name.as_str())
                        .collect();
                    for s in &chain[pos..] {
                        if reported.insert(*s) {
                            if let Some(a) = &file.steps[*s].get_ref().after {
                                self.at(
                                    a.span(),
                                    format!("step[{}].after", s + 1),
                                    format!("after cycle: {}", cycle.join(" -> ")),
                                );
                            }
                        }
                    }
                    break;
                }
                chain.push(after.step);
                at = after.step;
            }
            for s in chain.into_iter().rev() {
                if !placed[s] {
                    placed[s] = true;
                    order.push(s);
                }
            }
        }
        if let Some(pos) = order
            .iter()
            .position(|s| matches!(steps[*s].action, Action::Shutdown))
        {
            if let Some(next) = order.get(pos + 1) {
                self.at(
                    file.steps[*next].span(),
                    format!("step[{}]", next + 1),
                    format!(
                        "runs after {}, which shuts the simulator down: a shutdown is the last step",
                        steps[order[pos]].name
                    ),
                );
            }
        }
        order
    }

    fn expects(
        &mut self,
        file: &File,
        world: &World<'_>,
        names: &BTreeMap<String, StepRef>,
    ) -> Vec<Expectation> {
        if file.expects.len() > MAX_EXPECTS {
            self.at(
                file.expects[MAX_EXPECTS].span(),
                format!("expect[{}]", MAX_EXPECTS + 1),
                format!("at most {MAX_EXPECTS} expectations"),
            );
        }
        let mut out = Vec::new();
        let mut used = HashSet::new();
        for (i, e) in file.expects.iter().enumerate() {
            let field = format!("expect[{}]", i + 1);
            let d = e.get_ref();
            let given: Vec<&str> = [
                (d.shows.is_some(), "shows"),
                (d.answer.is_some(), "answer"),
                (d.feedback.is_some(), "feedback"),
                (d.outcome.is_some(), "outcome"),
                (d.nothing_else.is_some(), "nothing_else"),
            ]
            .into_iter()
            .filter_map(|(g, n)| g.then_some(n))
            .collect();
            if given.len() != 1 {
                let why = if given.is_empty() {
                    "an expectation needs one of shows, answer, feedback, outcome, nothing_else"
                        .to_owned()
                } else {
                    format!(
                        "an expectation checks one thing; this one has {}",
                        given.join(" and ")
                    )
                };
                self.at(e.span(), field, why);
                continue;
            }
            let line = line_of(self.text, e.span().start);
            let step_ref = |c: &mut Self, step: &Spanned<String>, verb: &str, f: &str| match names
                .get(step.get_ref())
            {
                Some(r) if r.verb == verb || (verb == "push" && r.verb == "shutdown") => Some(*r),
                Some(r) => {
                    c.at(
                        step.span(),
                        f,
                        format!(
                            "step {} is a {} step, not a {verb} step",
                            step.get_ref(),
                            r.verb
                        ),
                    );
                    None
                }
                None => {
                    c.at(step.span(), f, format!("no step named {}", step.get_ref()));
                    None
                }
            };
            let (kind, default_name) = if let Some(shows) = &d.shows {
                let s = shows.get_ref();
                let devices = self.devices_of(world, &s.device, None, &format!("{field}.shows"));
                if let Some(app) = &s.app {
                    self.held(&devices, app, true, &format!("{field}.shows"));
                }
                (
                    ExpectKind::Shows {
                        devices,
                        decl: s.clone(),
                    },
                    format!("{} shows", s.device.get_ref()),
                )
            } else if let Some(answer) = &d.answer {
                let a = answer.get_ref();
                let Some(r) = step_ref(self, &a.step, "push", &format!("{field}.answer.step"))
                else {
                    continue;
                };
                if let Some(index) = a.index {
                    if index == 0 || (r.verb == "push" && index > r.sends) {
                        self.at(
                            answer.span(),
                            format!("{field}.answer.index"),
                            format!(
                                "step {} sends {} notification(s)",
                                a.step.get_ref(),
                                r.sends
                            ),
                        );
                    }
                }
                (
                    ExpectKind::Answer {
                        step: r.index,
                        decl: a.clone(),
                    },
                    format!("{} answered", a.step.get_ref()),
                )
            } else if let Some(fb) = &d.feedback {
                let f = fb.get_ref();
                let Some(r) =
                    step_ref(self, &f.step, "feedback", &format!("{field}.feedback.step"))
                else {
                    continue;
                };
                let tokens = f.tokens.as_ref().map(|list| {
                    list.iter()
                        .filter_map(|t| {
                            self.token_name(world, t, &format!("{field}.feedback.tokens"))
                        })
                        .collect()
                });
                let as_410_of = f.as_410_of.as_ref().and_then(|step| {
                    step_ref(self, step, "push", &format!("{field}.feedback.as_410_of"))
                        .map(|r| r.index)
                });
                (
                    ExpectKind::Feedback {
                        step: r.index,
                        tokens,
                        count: f.count,
                        at_not_installed: f.at_not_installed,
                        as_410_of,
                    },
                    format!("{} read", f.step.get_ref()),
                )
            } else if let Some(o) = &d.outcome {
                let o = o.get_ref();
                let Some(r) = step_ref(self, &o.step, "push", &format!("{field}.outcome.step"))
                else {
                    continue;
                };
                let Some(Milestone::Outcome(outcome)) = Milestone::parse(o.is.get_ref()) else {
                    self.at(
                        o.is.span(),
                        format!("{field}.outcome.is"),
                        format!(
                            "{:?} is not an outcome; one of delivered, {}",
                            o.is.get_ref(),
                            OUTCOMES
                        ),
                    );
                    continue;
                };
                (
                    ExpectKind::Outcome {
                        step: r.index,
                        outcome,
                        count: o.count,
                    },
                    format!("{} {}", o.step.get_ref(), o.is.get_ref()),
                )
            } else {
                let flag = d.nothing_else.as_ref().is_none_or(|f| *f.get_ref());
                if !flag {
                    if let Some(f) = &d.nothing_else {
                        self.at(
                            f.span(),
                            format!("{field}.nothing_else"),
                            "write nothing_else = true, or leave the expectation out",
                        );
                    }
                }
                (ExpectKind::NothingElse, "nothing else happened".to_owned())
            };
            let mut name = d.name.clone().unwrap_or(default_name);
            if !used.insert(name.clone()) {
                name = format!("{name} (line {line})");
                used.insert(name.clone());
            }
            out.push(Expectation { name, line, kind });
        }
        out
    }

    /// `SERIAL APP[:KIND]`, checked against the world.
    fn token_name(
        &mut self,
        world: &World<'_>,
        text: &Spanned<String>,
        field: &str,
    ) -> Option<(String, AppToken)> {
        let Some((serial, app)) = text.get_ref().split_once(' ') else {
            self.at(
                text.span(),
                field,
                "write a token as \"SERIAL APP\" or \"SERIAL APP:KIND\"",
            );
            return None;
        };
        if !world.holds.contains_key(serial) {
            self.at(text.span(), field, format!("no device {serial}"));
            return None;
        }
        match app.trim().parse::<AppToken>() {
            Ok(app) => Some((serial.to_owned(), app)),
            Err(e) => {
                self.at(text.span(), field, e.to_string());
                None
            }
        }
    }
}

/// What the references of steps and expectations are checked against.
struct World<'a> {
    apps: &'a [AppSpec],
    groups: &'a BTreeMap<String, Vec<String>>,
    holds: &'a BTreeMap<&'a str, &'a DeviceSpec>,
    /// The virtual fleet's name, which steps and expectations may not name.
    virtual_name: Option<&'a str>,
}

/// Every action key of a step.
const ACTIONS: [&str; 13] = [
    "push",
    "pushes",
    "uninstall",
    "install",
    "offline",
    "online",
    "reboot",
    "feedback",
    "fault",
    "fault_off",
    "advance_clock_ms",
    "shutdown",
    "(and at_ms or after to time it)",
];

/// The outcomes an `outcome` expectation may name besides `delivered`.
const OUTCOMES: &str = "acknowledged, sent, stored, superseded, expired, discarded, \
     not_installed, unregistered, rejected, throttled, requeued";

/// The action keys a step gives.
fn given_actions(s: &format::StepDecl) -> Vec<&'static str> {
    [
        (s.push.is_some(), "push"),
        (s.pushes.is_some(), "pushes"),
        (s.uninstall.is_some(), "uninstall"),
        (s.install.is_some(), "install"),
        (s.offline.is_some(), "offline"),
        (s.online.is_some(), "online"),
        (s.reboot.is_some(), "reboot"),
        (s.feedback.is_some(), "feedback"),
        (s.fault.is_some(), "fault"),
        (s.fault_off.is_some(), "fault_off"),
        (s.advance_clock_ms.is_some(), "advance_clock_ms"),
        (s.shutdown.is_some(), "shutdown"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect()
}

/// A step's verb (`push` for both push keys), for references to it.
fn verb(s: &format::StepDecl) -> &'static str {
    match given_actions(s).first().copied() {
        Some("pushes") => "push",
        Some(v) => v,
        None => "empty",
    }
}

/// A step's name: as given, else `step-N`.
fn step_name(s: &format::StepDecl, index: usize) -> String {
    s.name
        .as_ref()
        .map_or_else(|| format!("step-{}", index + 1), |n| n.get_ref().clone())
}

/// Whether `id` is an Apple team or key id: 10 capital letters and digits.
fn apple_id(id: &str) -> bool {
    id.len() == 10
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Environment;
    use crate::scenario::DEMO;

    /// The one problem `text` has.
    fn problem(text: &str) -> Problem {
        let problems = check(text).expect_err("refused").problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    const WORLD: &str = "[[app]]\nbundle = 'com.a'\n\n[[device]]\nserial = 'A'\napps = ['com.a']\n";

    #[test]
    fn the_embedded_demo_is_valid() {
        let s = check(DEMO).unwrap();
        assert_eq!(s.devices.len(), 3);
        assert_eq!(s.devices[2].environment, Environment::Production);
        let apps: Vec<String> = s.devices[1].apps.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            apps,
            [
                "com.example.app",
                "com.example.app:voip",
                "com.example.app:liveactivity-start",
                "com.example.app:liveactivity:DEMO-RIDE-1",
                "com.example.other",
            ]
        );
    }

    #[test]
    fn a_fault_the_control_api_refuses_is_refused_at_its_line() {
        let text = format!(
            "{WORLD}\n[[step]]\nfault = {{ on = 'http2', respond = {{ status = 500, reason = 'Unregistered' }} }}\n"
        );
        let p = problem(&text);
        assert_eq!(
            (p.line, p.field.as_str()),
            (9, "step[1].fault.respond.reason"),
            "{p}"
        );
        assert!(
            p.why.contains("APNs sends Unregistered with 410, not 500"),
            "{p}"
        );
        let status = format!(
            "{WORLD}\n[[step]]\nfault = {{ on = 'http2', respond = {{ status = 418 }} }}\n"
        );
        let p = problem(&status);
        assert_eq!(p.field, "step[1].fault.respond.status", "{p}");
        let fine = format!(
            "{WORLD}\n[[step]]\nfault = {{ on = 'http2', respond = {{ status = 410, reason = 'Unregistered' }} }}\n"
        );
        assert!(check(&fine).is_ok());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let p =
            problem("[[device]]\nserial='A'\napps=['x']\n\n[[device]]\nserail='B'\napps=['x']\n");
        assert_eq!((p.line, p.field.as_str()), (6, "device[2].serail"));
        assert!(p.why.contains("unknown field `serail`"), "{p}");
        let step = format!("{WORLD}\n[[step]]\nexplode = 'A'\n");
        let p = problem(&step);
        assert_eq!((p.line, p.field.as_str()), (9, "step[1].explode"), "{p}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let p = problem("[[device]]\nserial = 'A'\napps = ['x']\ncount = 'many'\n");
        assert_eq!((p.line, p.field.as_str()), (4, "device[1].count"), "{p}");
        assert!(p.why.contains("expected u64"), "{p}");
        let p = problem("[[device]]\nserial='A'\nenvironment='staging'\napps=['x']\n");
        assert_eq!(
            (p.line, p.field.as_str()),
            (3, "device[1].environment"),
            "{p}"
        );
        let p = problem("[[device]]\nserial='A'\napps=['x:pushkit']\n");
        assert!(p.why.contains("pushkit"), "{p}");
    }

    #[test]
    fn an_unknown_event_is_named() {
        let text = format!("{WORLD}\n[[step]]\nname = 'p'\npush = {{ device = 'A' }}\n\n[[step]]\nafter = 'p exploded'\noffline = 'A'\n");
        let p = problem(&text);
        assert_eq!((p.line, p.field.as_str()), (13, "step[2].after"), "{p}");
        assert!(p.why.contains("\"exploded\" is not a milestone"), "{p}");
        let empty = format!("{WORLD}\n[[step]]\nat_ms = 5\n");
        let p = problem(&empty);
        assert_eq!((p.line, p.field.as_str()), (8, "step[1]"), "{p}");
        assert!(p.why.contains("a step needs one action"), "{p}");
    }

    #[test]
    fn references_to_what_does_not_exist_are_named() {
        let device = format!("{WORLD}\n[[step]]\npush = {{ device = 'B' }}\n");
        let p = problem(&device);
        assert_eq!(
            (p.line, p.field.as_str()),
            (9, "step[1].push.device"),
            "{p}"
        );
        assert!(p.why.contains("no device or fleet B"), "{p}");
        let app = format!("{WORLD}\n[[step]]\nuninstall = {{ device = 'A', app = 'com.b' }}\n");
        let p = problem(&app);
        assert_eq!(p.field, "step[1].uninstall.app", "{p}");
        assert!(p.why.contains("does not hold com.b"), "{p}");
        let undeclared =
            "[[device]]\nserial = 'A'\napps = ['com.b']\n[[step]]\npush = { device = 'A' }\n";
        let p = problem(undeclared);
        assert!(p.why.contains("no [[app]] with bundle com.b"), "{p}");
        let step = format!("{WORLD}\n[[step]]\noffline = 'A'\n\n[[expect]]\nanswer = {{ step = 'nope', status = 200 }}\n");
        let p = problem(&step);
        assert_eq!(
            (p.line, p.field.as_str()),
            (12, "expect[1].answer.step"),
            "{p}"
        );
        assert!(p.why.contains("no step named nope"), "{p}");
        let wrong_kind = format!(
            "{WORLD}\n[[step]]\noffline = 'A'\n\n[[expect]]\nanswer = {{ step = 'step-1' }}\n"
        );
        assert!(problem(&wrong_kind)
            .why
            .contains("is a offline step, not a push step"));
    }

    #[test]
    fn a_token_installed_earlier_on_the_timeline_may_be_used() {
        let text = format!(
            "{WORLD}\n[[step]]\nname = 'get'\ninstall = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[step]]\npush = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[expect]]\nshows = {{ device = 'A', app = 'com.a:voip', count = 1 }}\n"
        );
        let s = check(&text).unwrap();
        assert!(matches!(s.steps[0].action, Action::Install(..)));
        // Before its install, in the file or by `after`, the token is not there yet.
        let early = format!(
            "{WORLD}\n[[step]]\npush = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[step]]\ninstall = {{ device = 'A', app = 'com.a:voip' }}\n"
        );
        let p = problem(&early);
        assert_eq!((p.line, p.field.as_str()), (9, "step[1].push.app"), "{p}");
        assert_eq!(
            p.why,
            "device A does not hold com.a:voip at start, nor does a step before this one \
             install it"
        );
        // `after` runs the push after the install, wherever the file puts it.
        let waits = format!(
            "{WORLD}\n[[step]]\nafter = 'get done'\npush = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[step]]\nname = 'get'\ninstall = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[step]]\nuninstall = {{ device = 'A', app = 'com.a:voip' }}\n"
        );
        let s = check(&waits).unwrap();
        assert_eq!(s.order, [1, 0, 2]);
        // An install on another device does not count for this one.
        let elsewhere = format!(
            "{WORLD}\n[[device]]\nserial = 'B'\napps = ['com.a']\n\n\
             [[step]]\ninstall = {{ device = 'B', app = 'com.a:voip' }}\n\n\
             [[step]]\npush = {{ device = 'A', app = 'com.a:voip' }}\n"
        );
        let p = problem(&elsewhere);
        assert_eq!((p.line, p.field.as_str()), (16, "step[2].push.app"), "{p}");
        // A token no step installs is refused in an expectation too.
        let never = format!(
            "{WORLD}\n[[step]]\ninstall = {{ device = 'A', app = 'com.a:voip' }}\n\n\
             [[expect]]\nshows = {{ device = 'A', app = 'com.a:location' }}\n"
        );
        let p = problem(&never);
        assert_eq!(
            (p.line, p.field.as_str()),
            (12, "expect[1].shows.app"),
            "{p}"
        );
        assert_eq!(
            p.why,
            "device A does not hold com.a:location at start, nor does any step install it"
        );
    }

    #[test]
    fn an_after_cycle_is_refused_at_each_of_its_steps() {
        let text = format!(
            "{WORLD}\n[[step]]\nname = 'a'\nafter = 'b done'\noffline = 'A'\n\n[[step]]\nname = 'b'\nafter = 'a done'\nonline = 'A'\n"
        );
        let problems = check(&text).unwrap_err().problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            (problems[0].line, problems[0].field.as_str()),
            (10, "step[1].after")
        );
        assert!(
            problems[0].why.contains("after cycle: a -> b -> a"),
            "{}",
            problems[0]
        );
        assert_eq!(problems[1].field, "step[2].after");
    }

    #[test]
    fn steps_run_after_what_they_wait_for() {
        let text = format!(
            "{WORLD}\n[[step]]\nname = 'late'\nafter = 'early done'\nonline = 'A'\n\n[[step]]\nname = 'early'\noffline = 'A'\n"
        );
        let s = check(&text).unwrap();
        assert_eq!(s.order, [1, 0]);
    }

    #[test]
    fn a_shutdown_is_the_last_step() {
        let text = format!("{WORLD}\n[[step]]\nshutdown = true\n\n[[step]]\noffline = 'A'\n");
        let p = problem(&text);
        assert_eq!((p.line, p.field.as_str()), (11, "step[2]"), "{p}");
        assert!(p.why.contains("a shutdown is the last step"), "{p}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = "[[device]]\nserial = 'A'\napps = []\n[[device]]\nserial = 'A'\napps = ['x']\n";
        let problems = check(text).unwrap_err().problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].why, "needs at least one app");
        assert_eq!(problems[1].why, "serial A appears twice");
        assert_eq!(problems[1].line, 5);
    }

    #[test]
    fn a_virtual_fleet_is_counted_bounded_and_never_named_by_a_step() {
        let s = check(
            "[[device]]\nserial = 'V'\nvirtual = true\ncount = 100000\napps = ['com.a', 'com.b']\n",
        )
        .unwrap();
        let v = s.virtual_fleet.clone().expect("a virtual fleet");
        assert_eq!((v.name.as_str(), v.count), ("V", 100_000));
        assert_eq!(v.apps, ["com.a", "com.b"]);
        assert!(s.devices.is_empty(), "not expanded");
        let mut settings = crate::settings::Settings::default();
        s.virtual_settings(&mut settings);
        assert_eq!(
            (settings.virtual_devices, settings.virtual_apps.as_str()),
            (100_000, "com.a,com.b")
        );
        let p = problem("[[device]]\nserial = 'V'\nvirtual = true\napps = ['com.a']\n");
        assert_eq!((p.line, p.field.as_str()), (3, "device[1].count"), "{p}");
        let p = problem(
            "[[device]]\nserial = 'V'\nvirtual = true\ncount = 10000001\napps = ['com.a']\n",
        );
        assert_eq!((p.line, p.field.as_str()), (4, "device[1].count"), "{p}");
        let p =
            problem("[[device]]\nserial = 'V'\nvirtual = true\ncount = 5\napps = ['com.a:voip']\n");
        assert_eq!((p.line, p.field.as_str()), (5, "device[1].apps"), "{p}");
        let p = problem(
            "[[device]]\nserial = 'V'\nvirtual = true\ncount = 5\napps = ['com.a']\n\n\
             [[device]]\nserial = 'W'\nvirtual = true\ncount = 5\napps = ['com.a']\n",
        );
        assert_eq!((p.line, p.field.as_str()), (9, "device[2].virtual"), "{p}");
        let p = problem(&format!(
            "{WORLD}\n[[device]]\nserial = 'V'\nvirtual = true\ncount = 5\napps = ['com.a']\n\n\
             [[step]]\noffline = 'V'\n"
        ));
        assert!(p.why.contains("virtual fleet"), "{p}");
        assert_eq!(p.line, 15, "{p}");
    }

    #[test]
    fn a_fleet_expands_and_its_bounds_hold() {
        let s = check("[[device]]\nserial = 'F'\ncount = 3\napps = ['x']\n").unwrap();
        let serials: Vec<&str> = s.devices.iter().map(|d| d.serial.as_str()).collect();
        assert_eq!(serials, ["F-0001", "F-0002", "F-0003"]);
        assert_eq!(s.groups["F"].len(), 3);
        let p = problem("[[device]]\nserial = 'F'\ncount = 10001\napps = ['x']\n");
        assert_eq!((p.line, p.field.as_str()), (3, "device[1].count"), "{p}");
    }

    #[test]
    fn a_fault_is_checked_as_the_control_api_checks_it() {
        let text = format!("{WORLD}\n[[step]]\nfault = {{ on = 'http2', respond = {{ status = 500 }}, close = true }}\n");
        let p = problem(&text);
        assert!(p.field.starts_with("step[1].fault"), "{p}");
        let unknown = format!("{WORLD}\n[[step]]\nfault = {{ on = 'http2', explode = true }}\n");
        let p = problem(&unknown);
        assert!(p.why.contains("unknown field `explode`"), "{p}");
        assert_eq!(p.line, 9);
    }

    #[test]
    fn binary_pushes_refuse_http2_fields() {
        let text = format!(
            "{WORLD}\n[[step]]\npush = {{ device = 'A', api = 'binary', collapse_id = 'c' }}\n"
        );
        assert!(problem(&text).why.contains("collapse_id is HTTP/2 only"));
        let cmd0 =
            format!("{WORLD}\n[[step]]\npush = {{ device = 'A', api = 'binary0', expiry = 0 }}\n");
        assert!(problem(&cmd0).why.contains("command 0 has no expiry"));
    }

    #[test]
    fn teams_claim_bundles_once() {
        let text = "[teams]\nTEAMA00001 = ['com.a', 'com.a2']\nTEAMB00001 = ['com.b']\n";
        let s = check(text).unwrap();
        let mut owners = s.bundle_owners();
        owners.sort();
        assert_eq!(owners.len(), 3);
        assert_eq!(owners[0], ("com.a".to_owned(), "TEAMA00001".to_owned()));
        let twice = "[teams]\nTEAMA00001 = ['com.a']\nTEAMB00001 = ['com.a']\n";
        let p = problem(twice);
        assert_eq!(p.field, "teams.TEAMB00001");
        assert_eq!(p.why, "bundle com.a is claimed by two teams (or twice)");
        assert!(check("[teams]\n'TEAM-1' = ['com.a']\n").is_err());
        assert!(check("[teams]\nTEAMA00001 = ['']\n").is_err());
    }

    #[test]
    fn the_error_message_names_line_and_field() {
        let err = check("[[device]]\nserial='A'\napps=[]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "scenario is not valid: line 3: device[1].apps: needs at least one app"
        );
    }
}
