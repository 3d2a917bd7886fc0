//! The scenario file as TOML reads it: one struct per table, every unknown key refused
//! (`deny_unknown_fields`), and the values a later check must point at wrapped in
//! [`Spanned`], so a mistake found after parsing (a step that does not exist, an `after`
//! cycle) is reported at its line. `scenarios/README.md` documents every key; the checked,
//! resolved form is [`super::Scenario`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::hub::FaultSpec;
use crate::protocol::token::AppToken;
use crate::protocol::Environment;

/// A whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// A title for the reports (default: the file name).
    pub name: Option<String>,
    /// What the scenario shows, in words.
    pub description: Option<String>,
    /// The apps of the world, with the provider credentials to mint for them.
    #[serde(rename = "app", default)]
    pub apps: Vec<Spanned<AppDecl>>,
    /// The devices (a `count` makes a fleet).
    #[serde(rename = "device", default)]
    pub devices: Vec<Spanned<DeviceDecl>>,
    /// Team id → bundle ids it owns (the fleet format's `[teams]`).
    pub teams: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    /// The timeline.
    #[serde(rename = "step", default)]
    pub steps: Vec<Spanned<StepDecl>>,
    /// The verdicts to reach.
    #[serde(rename = "expect", default)]
    pub expects: Vec<Spanned<ExpectDecl>>,
}

/// `[[app]]`: an app of the world and the credentials its provider uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDecl {
    /// The bundle id (the certificate's topic).
    pub bundle: Spanned<String>,
    /// The team that owns it (default `SIMTEAM001`, the PKI's default team).
    pub team: Option<Spanned<String>>,
    /// Which provider certificate to mint: `universal` (default), `sandbox`, `production`
    /// or `none`.
    #[serde(default)]
    pub certificate: CertChoice,
    /// Mint a `.p8` auth key with this key id (10 capitals and digits) for the app's team,
    /// scoped to the app: HTTP/2 token auth then works for it.
    pub key_id: Option<Spanned<String>>,
}

/// Which certificate `[[app]]` mints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertChoice {
    /// Both environments (Apple's "Apple Push Services").
    #[default]
    Universal,
    /// Development only.
    Sandbox,
    /// Production only.
    Production,
    /// No certificate: the app's provider uses token auth only.
    None,
}

/// `[[device]]`: one device, or a fleet of `count` of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDecl {
    /// The serial; with `count`, the fleet's name and the prefix of its serials
    /// (`NAME-0001`, …).
    pub serial: Spanned<String>,
    /// Environment of its tokens (default sandbox).
    #[serde(default = "sandbox")]
    pub environment: Environment,
    /// Tokens registered at start: `APP` or `APP:KIND`.
    pub apps: Spanned<Vec<AppToken>>,
    /// How many devices this entry stands for (a fleet); omitted: one.
    pub count: Option<Spanned<u64>>,
    /// `true`: a virtual fleet of `count` devices held inside the simulator as state, with
    /// no socket (`serve --virtual-devices`): each holds every kind of token of each of
    /// `apps` (bundle ids) and acknowledges at once. Providers push to its tokens (listed
    /// by `GET /v1/virtual/devices`); steps and expectations cannot name it. One per file.
    #[serde(rename = "virtual")]
    pub is_virtual: Option<Spanned<bool>>,
}

/// The default environment.
fn sandbox() -> Environment {
    Environment::Sandbox
}

/// `[[step]]`: one thing that happens on the timeline. Exactly one action key is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDecl {
    /// Its name, for `after` and the expectations (default `step-N`, N from 1).
    pub name: Option<Spanned<String>>,
    /// Not before this many ms after the run started.
    pub at_ms: Option<Spanned<u64>>,
    /// Not before this: `"STEP MILESTONE"` (`push-1 delivered`, `push-1 stored`, …).
    pub after: Option<Spanned<String>>,
    /// Send one notification (to each device of a fleet).
    pub push: Option<Spanned<PushDecl>>,
    /// Send these notifications in order on one connection (one write on the binary API).
    pub pushes: Option<Spanned<Vec<PushDecl>>>,
    /// Uninstall an app (or one kind of its tokens).
    pub uninstall: Option<Spanned<DeviceApp>>,
    /// Install an app (a reinstall gets a fresh token).
    pub install: Option<Spanned<DeviceApp>>,
    /// Take a device (or fleet) offline.
    pub offline: Option<Spanned<String>>,
    /// Bring a device (or fleet) back online.
    pub online: Option<Spanned<String>>,
    /// Offline, then online again.
    pub reboot: Option<Spanned<String>>,
    /// Read the feedback service.
    pub feedback: Option<Spanned<FeedbackDecl>>,
    /// Switch a fault on: the JSON of `POST /v1/faults`, written as TOML.
    pub fault: Option<Spanned<FaultSpec>>,
    /// Switch off the fault a named `fault` step switched on.
    pub fault_off: Option<Spanned<String>>,
    /// Move the simulator's clock forward this many ms (expiry, token age).
    pub advance_clock_ms: Option<Spanned<u64>>,
    /// Shut the simulator down (`true`) while connections are open: binary connections
    /// left open get status 10, HTTP/2 connections a GOAWAY. The last step of a run.
    pub shutdown: Option<Spanned<bool>>,
}

/// The provider API a push goes through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The HTTP/2 API (default).
    #[default]
    Http2,
    /// The binary gateway, command 2 (the same as `binary2`).
    Binary,
    /// Command 0 (simple): no identifier, no expiry, no error response.
    Binary0,
    /// Command 1 (enhanced): identifier and expiry.
    Binary1,
    /// Command 2 (frame): identifier, expiry and priority.
    Binary2,
}

impl Via {
    /// The binary command byte, or `None` for HTTP/2.
    pub fn command(self) -> Option<u8> {
        match self {
            Via::Http2 => None,
            Via::Binary0 => Some(0),
            Via::Binary1 => Some(1),
            Via::Binary | Via::Binary2 => Some(2),
        }
    }
}

/// How an HTTP/2 push authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// The app's provider certificate.
    Certificate,
    /// A provider token signed with the app's `.p8` key.
    Token,
}

/// One notification a push step sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushDecl {
    /// The device (or fleet) whose token it goes to.
    pub device: Option<Spanned<String>>,
    /// Which of the device's tokens (`APP` or `APP:KIND`); default: its first.
    pub app: Option<Spanned<AppToken>>,
    /// Which API (default `http2`).
    #[serde(default)]
    pub api: Via,
    /// HTTP/2 auth (default: the certificate when the app has one, else the token).
    pub auth: Option<Spanned<Auth>>,
    /// The payload (default `{"aps":{"alert":"<step name>"}}`).
    pub payload: Option<toml::Table>,
    /// The payload's exact bytes instead (for malformed ones).
    pub payload_text: Option<String>,
    /// The token's hex instead of a device's (a bad or unknown one); needs `app`.
    pub token: Option<Spanned<String>>,
    /// Expiry, UNIX seconds as sent (0: deliver now or never).
    pub expiry: Option<u32>,
    /// Expiry this many seconds after the simulator's clock now.
    pub expiry_in_s: Option<u32>,
    /// 10, 5 or 1.
    pub priority: Option<u8>,
    /// `apns-collapse-id` (HTTP/2).
    pub collapse_id: Option<String>,
    /// `apns-push-type` (HTTP/2; default the token kind's).
    pub push_type: Option<String>,
    /// `apns-topic` (HTTP/2; default the app with its kind's suffix).
    pub topic: Option<String>,
    /// The binary identifier (default: a number of the run's own).
    pub identifier: Option<u32>,
    /// A fleet: only its first N devices.
    pub first: Option<Spanned<u64>>,
    /// Retry a failed push like a careful provider (HTTP/2).
    pub retry: Option<Spanned<RetryDecl>>,
    /// HTTP/2: push on the connection an earlier step of the same app, auth and environment
    /// left open, as a provider keeps its connection (default: a fresh one for each step).
    #[serde(default)]
    pub reuse_connection: bool,
    /// HTTP/2 token auth: sign a new provider token now (default: keep the app's current
    /// one, signed when it was first used, as a provider keeps it until it must renew).
    #[serde(default)]
    pub refresh_token: bool,
    /// Binary: leave the connection open after the step (for a later `shutdown` to answer
    /// on); by default it is closed once every notification is recorded.
    #[serde(default)]
    pub keep_open: bool,
}

/// `retry`: what a provider that must retry does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryDecl {
    /// At most this many attempts in all (≥ 2).
    pub attempts: Spanned<u32>,
    /// Retry on these HTTP statuses (default 429, 500, 503) and on a GOAWAY or a closed
    /// connection (a fresh connection each time).
    pub on: Option<Vec<u16>>,
}

/// A device (or fleet) and an app token of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceApp {
    /// The device or fleet.
    pub device: Spanned<String>,
    /// The app (`APP` uninstalls the whole app) or `APP:KIND`.
    pub app: Spanned<AppToken>,
    /// A fleet: only its first N devices.
    pub first: Option<Spanned<u64>>,
}

/// `feedback`: one read of the feedback service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackDecl {
    /// Whose certificate: an `[[app]]` bundle.
    pub app: Spanned<String>,
    /// Which environment's list (default sandbox).
    #[serde(default = "sandbox")]
    pub environment: Environment,
}

/// `[[expect]]`: one verdict. Exactly one kind key is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDecl {
    /// Its name in the reports (default: made from what it checks).
    pub name: Option<String>,
    /// What a device (each device of a fleet) shows at the end.
    pub shows: Option<Spanned<ShowsDecl>>,
    /// How a push step was answered.
    pub answer: Option<Spanned<AnswerDecl>>,
    /// Which tokens a feedback step read.
    pub feedback: Option<Spanned<FeedbackExpect>>,
    /// What the delivery log recorded for a push step's notifications.
    pub outcome: Option<Spanned<OutcomeExpect>>,
    /// Nothing happened besides what the other expectations name: no device shows a
    /// notification no `shows` names, no push was refused that no `answer` names.
    pub nothing_else: Option<Spanned<bool>>,
}

/// `shows`: what a device shows at the end (collapse ids applied).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowsDecl {
    /// The device or fleet (each device of it).
    pub device: Spanned<String>,
    /// Only notifications of this app (or `APP:KIND` token).
    pub app: Option<Spanned<AppToken>>,
    /// Exactly this many.
    pub count: Option<u64>,
    /// In order, oldest first: each shown payload contains these fields (a subset match).
    pub payloads: Option<Vec<toml::Table>>,
    /// In order: the shown notifications' collapse ids (`""` for none).
    pub collapse_ids: Option<Vec<String>>,
}

/// `answer`: how a push step was answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerDecl {
    /// The push step.
    pub step: Spanned<String>,
    /// HTTP status (200 …), or the binary error-response status (0: none came).
    pub status: Option<u16>,
    /// The reason (HTTP/2), or words the binary answer contains.
    pub reason: Option<String>,
    /// The binary identifier the error response named.
    pub identifier: Option<u32>,
    /// How many attempts the push took (with `retry`).
    pub attempts: Option<u32>,
    /// Which notification of a `pushes` step or fleet push (1 = first; default every one).
    pub index: Option<usize>,
}

/// `feedback`: what a feedback step read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackExpect {
    /// The feedback step.
    pub step: Spanned<String>,
    /// Exactly these tokens, as `SERIAL APP[:KIND]` (in any order).
    pub tokens: Option<Vec<Spanned<String>>>,
    /// Exactly this many tuples.
    pub count: Option<u64>,
    /// Each tuple's timestamp is the second, on the simulator's clock, at which the delivery
    /// log recorded its token's first `not_installed` (the moment the uninstall was found).
    #[serde(default)]
    pub at_not_installed: bool,
    /// Each tuple's timestamp is that of this push step's 410 answer to the same token
    /// (milliseconds there, seconds here: Apple says they are the same moment).
    pub as_410_of: Option<Spanned<String>>,
}

/// `outcome`: a delivery-log outcome of a push step's notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeExpect {
    /// The push step.
    pub step: Spanned<String>,
    /// The outcome: `delivered` (acknowledged), `stored`, `superseded`, `expired`, …
    pub is: Spanned<String>,
    /// How many of the step's notifications had it (default: every one).
    pub count: Option<u64>,
}
