//! Scenarios (`scenarios/*.toml`): a world (apps and their provider credentials, devices and
//! fleets), a timeline of steps (device events, provider pushes and feedback reads, faults,
//! the clock) and expectations with verdicts. `apns-sim serve --scenario` starts a file's
//! devices (the embedded `scenarios/demo.toml` by default); `apns-sim scenario check` and
//! `scenario run` check and run whole files.
//!
//! - [`format`](mod@format): the file as TOML reads it, with the spans a later check points at;
//! - [`check`]: every rule of the format, each mistake named with its line and field;
//!   the result is a [`Scenario`];
//! - [`run`]: a self-contained run against a fresh [`crate::sim::Simulator`], and the
//!   [`run::Runner`] that `serve --scenario` drives on its own simulator;
//! - [`harness`]: `apns-sim test`, the world for a provider program of the user's;
//! - [`report`]: the verdicts, as text, JSON and JUnit XML.
//!
//! `scenarios/README.md` documents the format.

pub mod check;
pub mod format;
pub mod harness;
pub mod report;
pub mod run;

use std::collections::BTreeMap;
use std::fmt;

use crate::hub::{FaultSpec, Outcome};
use crate::protocol::token::AppToken;
use crate::protocol::Environment;

pub use check::{Problem, ScenarioError};

/// The embedded default fleet.
pub const DEMO: &str = include_str!("../../scenarios/demo.toml");

/// Most devices one scenario may start in-process (each holds a connection and a task):
/// the actors' own limit.
pub const MAX_DEVICES: usize = crate::actors::MAX_DEVICES;

/// Most steps in one scenario: a timeline a person can read, and a bound on how long a run
/// can take ([`run::MAX_WAIT_PER_STEP`] each at worst).
pub const MAX_STEPS: usize = 1_000;

/// Most expectations in one scenario (each is a line of the verdict and a JUnit test case).
pub const MAX_EXPECTS: usize = 1_000;

/// Most `[[app]]` entries: each may mint a certificate and a key, which takes milliseconds.
pub const MAX_APPS: usize = 64;

/// The default team of `[[app]]` (the PKI's default team).
pub const DEFAULT_TEAM: &str = crate::pki::DEFAULT_TEAM_ID;

/// A checked scenario: the world, the timeline and the expectations, every reference
/// resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its title (`name`), if the file gave one.
    pub name: Option<String>,
    /// What it shows.
    pub description: Option<String>,
    /// The apps, with the credentials to mint.
    pub apps: Vec<AppSpec>,
    /// Every device, fleets expanded, in start order.
    pub devices: Vec<DeviceSpec>,
    /// Each `[[device]]` entry's serial (a fleet's name) → the serials it stands for.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The virtual fleet (`[[device]]` with `virtual = true`), if the file asks for one.
    pub virtual_fleet: Option<VirtualFleet>,
    /// Which team owns which bundle ids (`[teams]`, team id → bundle ids). A token-auth push
    /// to a bundle owned by another team than the token's is refused, as APNs refuses it
    /// (400 `TopicDisallowed`); a bundle no team claims is open to every team.
    pub teams: BTreeMap<String, Vec<String>>,
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// The order the steps run in: `after` first, then file order.
    pub order: Vec<usize>,
    /// The expectations, in file order.
    pub expects: Vec<Expectation>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Serial number, unique in the scenario.
    pub serial: String,
    /// Environment of its tokens.
    pub environment: Environment,
    /// Tokens registered at start: `APP` for an app's ordinary token, `APP:KIND` for another
    /// kind (`com.x.app:voip`, `com.x.app:liveactivity-start`, `com.x.app:liveactivity:ID`).
    pub apps: Vec<AppToken>,
}

/// A virtual fleet of the world: devices held inside the simulator as state
/// ([`crate::settings::Settings::virtual_devices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualFleet {
    /// Its `serial` (the fleet's name; its devices are `virtual-N` in the delivery log).
    pub name: String,
    /// How many devices.
    pub count: u32,
    /// The environment of its tokens.
    pub environment: Environment,
    /// The apps each device holds every kind of token of.
    pub apps: Vec<String>,
}

/// An app of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// Its bundle id.
    pub bundle: String,
    /// Its team.
    pub team: String,
    /// The certificate to mint.
    pub certificate: format::CertChoice,
    /// The auth key to mint, if any.
    pub key_id: Option<String>,
}

/// One step of the timeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// Its line in the file.
    pub line: usize,
    /// Not before this many ms after the start.
    pub at_ms: Option<u64>,
    /// Not before another step's milestone.
    pub after: Option<After>,
    /// What it does.
    pub action: Action,
}

/// `after = "STEP MILESTONE"`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// The index of the step waited for.
    pub step: usize,
    /// What of it.
    pub milestone: Milestone,
}

/// What a step waits for of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The step finished (a push answered, a feedback read, a device event done).
    Done,
    /// One of the step's notifications got this outcome in the delivery log
    /// (`delivered` is `acknowledged`).
    Outcome(Outcome),
    /// Every one of the step's notifications has settled: its latest outcome is neither
    /// `sent` nor `requeued` (it was acknowledged, reported not installed, stored, refused…).
    Settled,
}

impl Milestone {
    /// The words `after` accepts, for the check's message.
    pub const WORDS: &'static str =
        "done, answered, read, settled, delivered, acknowledged, sent, stored, \
         superseded, expired, discarded, not_installed, unregistered, rejected, throttled, \
         requeued";

    /// Parses one of [`Milestone::WORDS`].
    pub fn parse(word: &str) -> Option<Milestone> {
        match word {
            "done" | "answered" | "read" => Some(Milestone::Done),
            "delivered" => Some(Milestone::Outcome(Outcome::Acknowledged)),
            "settled" => Some(Milestone::Settled),
            other => serde_json::from_value(serde_json::Value::String(other.to_owned()))
                .ok()
                .map(Milestone::Outcome),
        }
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Milestone::Done => f.write_str("done"),
            Milestone::Settled => f.write_str("settled"),
            Milestone::Outcome(Outcome::Acknowledged) => f.write_str("delivered"),
            Milestone::Outcome(o) => write!(f, "{}", outcome_name(*o)),
        }
    }
}

/// An outcome's name as the delivery log writes it.
pub fn outcome_name(outcome: Outcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Notifications, in order, on one connection (`push` is one of them, sent to each
    /// device of a fleet).
    Push(Vec<format::PushDecl>),
    /// Uninstall an app on each device named.
    Uninstall(Vec<String>, AppToken),
    /// Install an app on each device named.
    Install(Vec<String>, AppToken),
    /// Take the devices offline.
    Offline(Vec<String>),
    /// Bring them online.
    Online(Vec<String>),
    /// Offline, then online.
    Reboot(Vec<String>),
    /// Read the feedback service with an app's certificate.
    Feedback(String, Environment),
    /// Switch a fault on.
    Fault(FaultSpec),
    /// Switch off the fault of this (`fault`) step.
    FaultOff(usize),
    /// Move the clock.
    AdvanceClock(u64),
    /// Shut the simulator down while connections are open.
    Shutdown,
}

impl Action {
    /// Its name, for the timeline.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Push(_) => "push",
            Action::Uninstall(..) => "uninstall",
            Action::Install(..) => "install",
            Action::Offline(_) => "offline",
            Action::Online(_) => "online",
            Action::Reboot(_) => "reboot",
            Action::Feedback(..) => "feedback",
            Action::Fault(_) => "fault",
            Action::FaultOff(_) => "fault_off",
            Action::AdvanceClock(_) => "advance_clock",
            Action::Shutdown => "shutdown",
        }
    }
}

/// One expectation.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Its name in the reports.
    pub name: String,
    /// Its line in the file.
    pub line: usize,
    /// What it checks.
    pub kind: ExpectKind,
}

/// What an expectation checks.
#[derive(Debug, Clone)]
pub enum ExpectKind {
    /// What each named device shows.
    Shows {
        /// The devices.
        devices: Vec<String>,
        /// What they must show.
        decl: format::ShowsDecl,
    },
    /// How a push step was answered.
    Answer {
        /// The step's index.
        step: usize,
        /// The answer expected.
        decl: format::AnswerDecl,
    },
    /// What a feedback step read.
    Feedback {
        /// The step's index.
        step: usize,
        /// The tokens expected, as (serial, app token).
        tokens: Option<Vec<(String, AppToken)>>,
        /// The count expected.
        count: Option<u64>,
        /// Each tuple's timestamp must be its token's first `not_installed` second.
        at_not_installed: bool,
        /// Each tuple's timestamp must be that of this push step's 410 to the token.
        as_410_of: Option<usize>,
    },
    /// An outcome of a push step's notifications.
    Outcome {
        /// The step's index.
        step: usize,
        /// The outcome.
        outcome: Outcome,
        /// How many (`None`: all).
        count: Option<u64>,
    },
    /// Nothing else happened.
    NothingElse,
}

impl Scenario {
    /// Parses and checks a scenario; the error lists every mistake with its line and field.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        check::check(text)
    }

    /// Asks `settings` for the scenario's virtual fleet, unless they ask for one already
    /// (`serve --virtual-devices` wins over the file).
    pub fn virtual_settings(&self, settings: &mut crate::settings::Settings) {
        if let Some(fleet) = &self.virtual_fleet {
            if settings.virtual_devices == 0 {
                settings.virtual_devices = fleet.count;
                settings.virtual_apps = fleet.apps.join(",");
                settings.virtual_environment = fleet.environment;
            }
        }
    }

    /// The `[teams]` table and the `[[app]]` teams as `(bundle, team)` pairs, for
    /// [`crate::sim::SimulatorConfig::bundle_owners`].
    pub fn bundle_owners(&self) -> Vec<(String, String)> {
        let mut owners: Vec<(String, String)> = self
            .teams
            .iter()
            .flat_map(|(team, bundles)| bundles.iter().map(|b| (b.clone(), team.clone())))
            .collect();
        for app in &self.apps {
            if !owners.iter().any(|(b, _)| *b == app.bundle) {
                owners.push((app.bundle.clone(), app.team.clone()));
            }
        }
        owners
    }

    /// `count` sandbox devices `DEMO-0001`… each with `app` installed.
    pub fn uniform(count: usize, app: &str) -> Result<Self, ScenarioError> {
        if count > MAX_DEVICES {
            return Err(ScenarioError::TooMany(count));
        }
        let devices: Vec<DeviceSpec> = (1..=count)
            .map(|i| DeviceSpec {
                serial: format!("DEMO-{i:04}"),
                environment: Environment::Sandbox,
                apps: vec![app.into()],
            })
            .collect();
        Ok(Scenario {
            name: None,
            description: None,
            apps: Vec::new(),
            groups: devices
                .iter()
                .map(|d| (d.serial.clone(), vec![d.serial.clone()]))
                .collect(),
            devices,
            virtual_fleet: None,
            teams: BTreeMap::new(),
            steps: Vec::new(),
            order: Vec::new(),
            expects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::TokenKind;

    #[test]
    fn apps_may_name_kinds_of_token() {
        let text = "[[device]]\nserial='A'\napps=['x', 'x:voip', 'x:pushtotalk']\n";
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.devices[0].apps[1].kind, TokenKind::Voip);
        let twice = "[[device]]\nserial='A'\napps=['x:voip', 'x:voip']\n";
        let err = Scenario::parse(twice).unwrap_err().to_string();
        assert!(err.contains("x:voip appears twice"), "{err}");
        assert!(Scenario::parse("[[device]]\nserial='A'\napps=['']\n").is_err());
    }

    #[test]
    fn uniform_fleet() {
        let s = Scenario::uniform(2, "com.a").unwrap();
        assert_eq!(s.devices[1].serial, "DEMO-0002");
        assert!(Scenario::uniform(MAX_DEVICES + 1, "com.a").is_err());
    }

    #[test]
    fn milestones_read_as_written() {
        assert_eq!(
            Milestone::parse("delivered"),
            Some(Milestone::Outcome(Outcome::Acknowledged))
        );
        assert_eq!(
            Milestone::parse("not_installed"),
            Some(Milestone::Outcome(Outcome::NotInstalled))
        );
        assert_eq!(Milestone::parse("answered"), Some(Milestone::Done));
        assert_eq!(Milestone::parse("exploded"), None);
        assert_eq!(Milestone::Outcome(Outcome::Stored).to_string(), "stored");
    }
}
