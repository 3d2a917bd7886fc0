//! Where `apns-sim serve`'s settings come from: a TOML file (`serve --config FILE`),
//! `APNS_SIM_*` environment variables and flags, in that order of precedence (file <
//! environment < flag), mapped onto [`Settings`] and the options of [`ServeConfig`] (ports,
//! bind address, certificate folder, control token, demo fleet). The same table gives the
//! commented default file (`apns-sim config init`), the effective configuration
//! (`serve --print-config`), the flags' help and the README's table, so none of them can drift.
//!
//! # Adding a setting
//!
//! One line in [`ENTRIES`]: `entry!("key", place.in.ServeConfig: Type, bounds, doc)`.
//! - The key is the TOML key; the flag (`--key-with-dashes`) and the variable
//!   (`APNS_SIM_KEY_IN_CAPITALS`) follow from it. For a [`Settings`] field the key is the
//!   field's name and `doc` is [`Doc::Field`]: the field's own `///` comment in
//!   `src/settings.rs` is its documentation here (a test fails if a `Settings` field has no
//!   entry, or an entry names no field).
//! - The type needs a [`Knob`] impl (integers, `bool`, [`Duration`] written as `"10s"`, paths,
//!   addresses, strings, the settings' enums, `Option<T>` for "unset by default" exist).
//! - `bounds` is [`ANY`], an integer range ([`Bounds::Int`]) or a duration range
//!   ([`Bounds::Duration`], e.g. [`TIMEOUT`]); values outside are refused with where they came
//!   from.
//! - The flag appears in `serve` by itself (`src/cli/serve.rs` builds its flags from this
//!   table); rerun `apns-sim serve -h` and `cargo test` to refresh README's help block and table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::protocol::payload::{MAX_PAYLOAD_FRAME, MAX_PAYLOAD_LEGACY};
use crate::protocol::Environment;
use crate::settings::{
    RateLimit, Settings, StateSync, UnknownCommand, MAX_DELIVERY_LOG_LEN, MAX_STORAGE_DAYS,
    MAX_VIRTUAL_DEVICES, TOKEN_LEN_RANGE,
};

/// Folder `serve` and `certs` write to, and the client commands read from, unless told
/// otherwise: relative, so that a checkout's `cargo run -- serve` keeps its certificates in it.
pub const DEFAULT_CERTS_DIR: &str = "certs";

/// Largest duration any setting takes: a year. Timers add durations to the clock's present,
/// so an unbounded one could overflow; no deadline of a simulator needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Largest connection count a `max_*_connections` setting takes. Each connection costs a file
/// descriptor, and the operating system's limit is the real ceiling; this only keeps a typo
/// (an extra zero or three) from reading as "unlimited".
pub const MAX_CONNECTIONS: u64 = 1_000_000;

/// Default port of the binary gateway (Apple's `gateway.push.apple.com:2195`).
pub const DEFAULT_GATEWAY_PORT: u16 = 2195;
/// Default port of the feedback service (Apple's `feedback.push.apple.com:2196`).
pub const DEFAULT_FEEDBACK_PORT: u16 = 2196;
/// Default port of the HTTP/2 provider API (Apple's alternative port 2197).
pub const DEFAULT_HTTP2_PORT: u16 = 2197;
/// Default port of the control API (HTTP and JSON, loopback only).
pub const DEFAULT_CONTROL_PORT: u16 = 8080;
/// Default port of the device endpoint (5223, the port real devices use for APNs).
pub const DEFAULT_DEVICE_PORT: u16 = 5223;

/// Everything `serve` is configured with: the simulator's [`Settings`] and what `serve`
/// itself binds, reads and starts.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The simulator's limits and defaults.
    pub settings: Settings,
    /// Certificate folder (minted on first start, reused later).
    pub certs: PathBuf,
    /// Address every endpoint binds to.
    pub bind: IpAddr,
    /// Binary gateway port (0 = any free port).
    pub gateway_port: u16,
    /// Feedback service port (0 = any free port).
    pub feedback_port: u16,
    /// HTTP/2 provider API port (0 = any free port).
    pub http2_port: u16,
    /// Device endpoint port (0 = any free port).
    pub device_port: u16,
    /// Control API port (0 = any free port).
    pub control_port: u16,
    /// Bearer token the control API requires; needed to bind off loopback.
    pub control_token: Option<String>,
    /// Start this many plain demo devices instead of the demo fleet.
    pub devices: Option<usize>,
    /// Serve this scenario file's world instead of the demo fleet.
    pub scenario: Option<PathBuf>,
    /// State directory (SQLite); `None`: `state/` beside the certificate folder.
    pub state: Option<PathBuf>,
    /// Keep all state in memory, whatever `state` says.
    pub in_memory: bool,
}

impl ServeConfig {
    /// Where the durable state lives: `state`, else `state/` beside the certificate folder;
    /// `None` with `in_memory`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        if self.in_memory {
            return None;
        }
        Some(self.state.clone().unwrap_or_else(|| {
            let beside = self.certs.parent().unwrap_or(Path::new(""));
            beside.join("state")
        }))
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            settings: Settings::default(),
            certs: PathBuf::from(DEFAULT_CERTS_DIR),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            gateway_port: DEFAULT_GATEWAY_PORT,
            feedback_port: DEFAULT_FEEDBACK_PORT,
            http2_port: DEFAULT_HTTP2_PORT,
            device_port: DEFAULT_DEVICE_PORT,
            control_port: DEFAULT_CONTROL_PORT,
            control_token: None,
            devices: None,
            scenario: None,
            state: None,
            in_memory: false,
        }
    }
}

/// Where an entry's documentation comes from.
#[derive(Debug, Clone, Copy)]
pub enum Doc {
    /// The `///` comment of this [`Settings`] field in `src/settings.rs`.
    Field,
    /// A text of its own (for `serve`'s options, which are not `Settings` fields).
    Text(&'static str),
}

/// The values a setting may take beyond its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// Anything the type can hold.
    Any,
    /// An integer within `min..=max`.
    Int(u64, u64),
    /// A duration within `min..=max`.
    Duration(Duration, Duration),
}

/// No bounds beyond the type.
pub const ANY: Bounds = Bounds::Any;
/// A deadline or interval: at least a millisecond (0 would fire at once), at most
/// [`MAX_DURATION`].
pub const TIMEOUT: Bounds = Bounds::Duration(Duration::from_millis(1), MAX_DURATION);
/// A duration that may be zero, at most [`MAX_DURATION`].
pub const DURATION: Bounds = Bounds::Duration(Duration::ZERO, MAX_DURATION);
/// A connection count: at least one, at most [`MAX_CONNECTIONS`].
pub const CONNECTIONS: Bounds = Bounds::Int(1, MAX_CONNECTIONS);

/// A value as one source gives it: a TOML value from the file, or the text of a variable
/// or a flag.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// From the file.
    Toml(&'a toml::Value),
    /// From an `APNS_SIM_*` variable or a flag.
    Text(&'a str),
}

impl<'a> Raw<'a> {
    /// The text of a string value (a TOML string, or any variable or flag).
    fn text(self, shape: &str) -> Result<&'a str, String> {
        match self {
            Raw::Text(text) => Ok(text),
            Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("expected {shape}, found {}", other.type_str())),
        }
    }
}

/// A type a setting can have: read from any source, written back as TOML.
pub trait Knob: Sized {
    /// What a value looks like, for help and errors (`DURATION`, `INTEGER`, …).
    const SHAPE: &'static str;
    /// Reads a value; the error says what was expected.
    fn read(raw: Raw<'_>) -> Result<Self, String>;
    /// The value as TOML; `None` for "unset" (written as a comment).
    fn write(&self) -> Option<toml::Value>;
    /// Whether the value lies within `bounds`; the error says what it should be.
    fn within(&self, bounds: &Bounds) -> Result<(), String> {
        let _ = bounds;
        Ok(())
    }
}

macro_rules! integer_knob {
    ($($ty:ty),*) => {$(
        impl Knob for $ty {
            const SHAPE: &'static str = "INTEGER";
            fn read(raw: Raw<'_>) -> Result<Self, String> {
                let expected = concat!("a whole number (", stringify!($ty), ")");
                match raw {
                    Raw::Toml(toml::Value::Integer(n)) => {
                        <$ty>::try_from(*n).map_err(|_| format!("{n} is not {expected}"))
                    }
                    Raw::Toml(other) => {
                        Err(format!("expected {expected}, found {}", other.type_str()))
                    }
                    Raw::Text(text) => text
                        .trim()
                        .parse()
                        .map_err(|_| format!("{text:?} is not {expected}")),
                }
            }
            fn write(&self) -> Option<toml::Value> {
                i64::try_from(*self).ok().map(toml::Value::Integer)
            }
            fn within(&self, bounds: &Bounds) -> Result<(), String> {
                match *bounds {
                    Bounds::Int(min, max) if !(min..=max).contains(&(*self as u64)) => {
                        Err(format!("{self} is not within {min} to {max}"))
                    }
                    _ => Ok(()),
                }
            }
        }
    )*};
}
integer_knob!(u8, u16, u32, usize);

impl Knob for bool {
    const SHAPE: &'static str = "BOOL";
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        match raw {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(other) => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
            Raw::Text(text) => match text.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{text:?} is not true or false")),
            },
        }
    }
    fn write(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

/// Durations are written with units (`"500ms"`, `"10s"`, `"2h"`, `"1h 30m"`), as
/// [`humantime`] reads and writes them.
impl Knob for Duration {
    const SHAPE: &'static str = "DURATION";
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        let text = raw.text("a duration such as \"10s\"")?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration such as \"500ms\", \"10s\" or \"2h\" ({e})")
        })
    }
    fn write(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            humantime::format_duration(*self).to_string(),
        ))
    }
    fn within(&self, bounds: &Bounds) -> Result<(), String> {
        match *bounds {
            Bounds::Duration(min, max) if !(min..=max).contains(self) => Err(format!(
                "{} is not within {} to {}",
                humantime::format_duration(*self),
                humantime::format_duration(min),
                humantime::format_duration(max)
            )),
            _ => Ok(()),
        }
    }
}

/// A knob written as a TOML string and read with `FromStr`.
macro_rules! text_knob {
    ($ty:ty, $shape:literal, $write:expr) => {
        impl Knob for $ty {
            const SHAPE: &'static str = $shape;
            fn read(raw: Raw<'_>) -> Result<Self, String> {
                let text = raw.text(concat!("a string (", $shape, ")"))?;
                text.parse::<$ty>().map_err(|e| e.to_string())
            }
            fn write(&self) -> Option<toml::Value> {
                let write: fn(&$ty) -> String = $write;
                Some(toml::Value::String(write(self)))
            }
        }
    };
}
text_knob!(PathBuf, "PATH", |p| p.display().to_string());
text_knob!(String, "TEXT", Clone::clone);
text_knob!(RateLimit, "PUSHES/SECONDS", |r| format!(
    "{}/{}",
    r.pushes,
    r.per.as_secs()
));
text_knob!(Environment, "sandbox|production", |e| e.as_str().to_owned());

impl Knob for IpAddr {
    const SHAPE: &'static str = "ADDRESS";
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        let text = raw.text("an IP address")?;
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address such as 127.0.0.1 or ::1"))
    }
    fn write(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Knob for UnknownCommand {
    const SHAPE: &'static str = "close|protocol-error";
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        match raw.text("\"close\" or \"protocol-error\"")?.trim() {
            "close" => Ok(UnknownCommand::Close),
            "protocol-error" => Ok(UnknownCommand::ProtocolError),
            other => Err(format!("{other:?} is not \"close\" or \"protocol-error\"")),
        }
    }
    fn write(&self) -> Option<toml::Value> {
        let name = match self {
            UnknownCommand::Close => "close",
            UnknownCommand::ProtocolError => "protocol-error",
        };
        Some(toml::Value::String(name.to_owned()))
    }
}

impl Knob for StateSync {
    const SHAPE: &'static str = "normal|full";
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        match raw.text("\"normal\" or \"full\"")?.trim() {
            "normal" => Ok(StateSync::Normal),
            "full" => Ok(StateSync::Full),
            other => Err(format!("{other:?} is not \"normal\" or \"full\"")),
        }
    }
    fn write(&self) -> Option<toml::Value> {
        let name = match self {
            StateSync::Normal => "normal",
            StateSync::Full => "full",
        };
        Some(toml::Value::String(name.to_owned()))
    }
}

/// Unset unless a source sets it.
impl<T: Knob> Knob for Option<T> {
    const SHAPE: &'static str = T::SHAPE;
    fn read(raw: Raw<'_>) -> Result<Self, String> {
        T::read(raw).map(Some)
    }
    fn write(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::write)
    }
    fn within(&self, bounds: &Bounds) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), |v| v.within(bounds))
    }
}

/// One setting: its key and how to read, check and write it.
pub struct Entry {
    /// The TOML key; the flag and the variable are made from it ([`Entry::flag`],
    /// [`Entry::env`]).
    pub key: &'static str,
    /// What a value looks like (`DURATION`, `INTEGER`, …).
    pub shape: &'static str,
    /// The values allowed.
    pub bounds: Bounds,
    /// Where the documentation comes from.
    pub doc: Doc,
    /// The help heading the flag is listed under, if not the default one.
    pub heading: Option<&'static str>,
    set: fn(&mut ServeConfig, Raw<'_>, &Bounds) -> Result<(), String>,
    get: fn(&ServeConfig) -> Option<toml::Value>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("key", &self.key).finish()
    }
}

/// One [`Entry`]: `entry!("key", place: Type, bounds, doc)`, optionally `, heading`.
macro_rules! entry {
    ($key:literal, $($place:ident).+ : $ty:ty, $bounds:expr, $doc:expr $(, $heading:expr)?) => {
        Entry {
            key: $key,
            shape: <$ty as Knob>::SHAPE,
            bounds: $bounds,
            doc: $doc,
            heading: entry!(@heading $($heading)?),
            set: |config, raw, bounds| {
                let value = <$ty as Knob>::read(raw)?;
                value.within(bounds)?;
                config.$($place).+ = value;
                Ok(())
            },
            get: |config| Knob::write(&config.$($place).+),
        }
    };
    (@heading) => { None };
    (@heading $heading:expr) => { Some($heading) };
}

/// The help heading (and file section) of the settings where Apple's sources disagree.
pub const FIDELITY: &str = "Where Apple's sources disagree (README, Protocol)";

/// Every setting of `serve`, in the order of its help, the default file and the README.
pub static ENTRIES: &[Entry] = &[
    entry!("certs", certs: PathBuf, ANY,
        Doc::Text("Certificate folder (minted on first start, reused later).")),
    entry!("bind", bind: IpAddr, ANY, Doc::Text("Address every endpoint binds to.")),
    entry!("gateway_port", gateway_port: u16, ANY,
        Doc::Text("Binary gateway port (0 = any free port).")),
    entry!("feedback_port", feedback_port: u16, ANY,
        Doc::Text("Feedback service port (0 = any free port).")),
    entry!("http2_port", http2_port: u16, ANY,
        Doc::Text("HTTP/2 provider API port (0 = any free port; 443 works too, given the privilege).")),
    entry!("device_port", device_port: u16, ANY,
        Doc::Text("Device endpoint port (0 = any free port).")),
    entry!("control_port", control_port: u16, ANY,
        Doc::Text("Control API port (HTTP and JSON; 0 = any free port). Without control_token, \
                   bind must be a loopback address.")),
    entry!("control_token", control_token: Option<String>, ANY,
        Doc::Text("Require this bearer token on every control API request (Authorization: \
                   Bearer T; the dashboard and /v1/events also take ?access_token=T). Needed to \
                   bind off loopback.")),
    // Unbounded here: `Scenario::uniform` refuses more devices than a fleet may hold.
    entry!("devices", devices: Option<usize>, ANY,
        Doc::Text("Start N plain demo devices (sandbox, com.example.app) instead of the demo \
                   fleet; 0 starts none. Set with scenario in the same place, it is refused; \
                   otherwise the one set in the stronger place wins.")),
    entry!("scenario", scenario: Option<PathBuf>, ANY,
        Doc::Text("Serve this scenario file's world: its apps' credentials (minted into certs), \
                   its devices, its timeline, and its expectations' verdicts once the timeline \
                   has settled (default: scenarios/demo.toml, embedded).")),
    entry!("state", state: Option<PathBuf>, ANY,
        Doc::Text("State directory: devices, tokens, unregistered tokens, unread feedback and \
                   stored notifications survive restarts there (SQLite). Default: state/ \
                   beside certs.")),
    entry!("in_memory", in_memory: bool, ANY,
        Doc::Text("Keep all state in memory (state is not read or written): a restart \
                   forgets every device and token.")),
    entry!("default_environment", settings.default_environment: Environment, ANY, Doc::Field),
    entry!("token_rate_limit", settings.token_rate_limit: Option<RateLimit>, ANY, Doc::Field),
    entry!("token_len", settings.token_len: usize,
        Bounds::Int(*TOKEN_LEN_RANGE.start() as u64, *TOKEN_LEN_RANGE.end() as u64), Doc::Field),
    entry!("delivery_log_len", settings.delivery_log_len: usize,
        Bounds::Int(1, MAX_DELIVERY_LOG_LEN as u64), Doc::Field),
    entry!("max_provider_connections", settings.max_provider_connections: usize, CONNECTIONS,
        Doc::Field),
    entry!("max_device_connections", settings.max_device_connections: usize, CONNECTIONS,
        Doc::Field),
    entry!("max_control_connections", settings.max_control_connections: usize, CONNECTIONS,
        Doc::Field),
    entry!("handshake_timeout", settings.handshake_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("hello_timeout", settings.hello_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("provider_idle_timeout", settings.provider_idle_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("http2_idle_timeout", settings.http2_idle_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("request_body_timeout", settings.request_body_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("device_heartbeat", settings.device_heartbeat: Duration, TIMEOUT, Doc::Field),
    entry!("linger", settings.linger: Duration, DURATION, Doc::Field),
    entry!("pki_reread_interval", settings.pki_reread_interval: Duration, DURATION, Doc::Field),
    entry!("default_storage_days", settings.default_storage_days: u32,
        Bounds::Int(1, MAX_STORAGE_DAYS as u64), Doc::Field, FIDELITY),
    entry!("legacy_payload_limit", settings.legacy_payload_limit: usize,
        Bounds::Int(MAX_PAYLOAD_LEGACY as u64, MAX_PAYLOAD_FRAME as u64), Doc::Field, FIDELITY),
    entry!("unknown_command", settings.unknown_command: UnknownCommand, ANY, Doc::Field, FIDELITY),
    entry!("accept_uppercase_apns_id", settings.accept_uppercase_apns_id: bool, ANY, Doc::Field,
        FIDELITY),
    entry!("max_iat_ahead", settings.max_iat_ahead: Duration, DURATION, Doc::Field, FIDELITY),
    // Admission and deadlines (README, Admission and deadlines).
    entry!("max_handshaking", settings.max_handshaking: usize, CONNECTIONS, Doc::Field),
    entry!("listen_backlog", settings.listen_backlog: u32,
        Bounds::Int(1, i32::MAX as u64), Doc::Field),
    entry!("unauthenticated_share_percent", settings.unauthenticated_share_percent: u8,
        Bounds::Int(1, 100), Doc::Field),
    entry!("first_request_timeout", settings.first_request_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("frame_timeout", settings.frame_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("write_timeout", settings.write_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("shutdown_timeout", settings.shutdown_timeout: Duration, TIMEOUT, Doc::Field),
    entry!("http2_body_budget", settings.http2_body_budget: usize,
        Bounds::Int(1, u32::MAX as u64), Doc::Field),
    // Registrations and device records.
    entry!("max_registrations_per_connection", settings.max_registrations_per_connection: u32,
        Bounds::Int(1, u32::MAX as u64), Doc::Field),
    entry!("connection_registration_rate", settings.connection_registration_rate: RateLimit, ANY,
        Doc::Field),
    entry!("device_token_rate", settings.device_token_rate: RateLimit, ANY, Doc::Field),
    entry!("max_apps_per_device", settings.max_apps_per_device: usize,
        Bounds::Int(1, u32::MAX as u64), Doc::Field),
    entry!("max_unregistered_per_device", settings.max_unregistered_per_device: usize,
        Bounds::Int(0, u32::MAX as u64), Doc::Field),
    entry!("device_record_ttl", settings.device_record_ttl: Duration, TIMEOUT, Doc::Field),
    entry!("max_device_records", settings.max_device_records: usize,
        Bounds::Int(1, u32::MAX as u64), Doc::Field),
    entry!("state_sync", settings.state_sync: StateSync, ANY, Doc::Field),
    // The per-notification log line.
    entry!("log_lines_per_sec", settings.log_lines_per_sec: u32, ANY, Doc::Field),
    // Virtual fleets.
    entry!("virtual_devices", settings.virtual_devices: u32,
        Bounds::Int(0, MAX_VIRTUAL_DEVICES as u64), Doc::Field),
    entry!("virtual_apps", settings.virtual_apps: String, ANY, Doc::Field),
    entry!("virtual_environment", settings.virtual_environment: Environment, ANY, Doc::Field),
    entry!("virtual_uninstall_rate", settings.virtual_uninstall_rate: u32, ANY, Doc::Field),
    entry!("virtual_offline_rate", settings.virtual_offline_rate: u32, ANY, Doc::Field),
    entry!("virtual_offline_for", settings.virtual_offline_for: Duration, DURATION, Doc::Field),
];

/// The text of `src/settings.rs`, whose `///` comments document the [`Doc::Field`] entries.
const SETTINGS_SOURCE: &str = include_str!("settings.rs");

impl Entry {
    /// The entry with this key.
    pub fn find(key: &str) -> Option<&'static Entry> {
        ENTRIES.iter().find(|e| e.key == key)
    }

    /// The flag, without its dashes: the key with `-` for `_`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable: `APNS_SIM_` and the key in capitals.
    pub fn env(&self) -> String {
        format!("APNS_SIM_{}", self.key.to_ascii_uppercase())
    }

    /// Whether the flag may be given without a value (meaning `true`).
    pub fn is_switch(&self) -> bool {
        self.shape == bool::SHAPE
    }

    /// The whole documentation, as one paragraph of plain text.
    pub fn doc(&self) -> String {
        match self.doc {
            Doc::Text(text) => text.split_whitespace().collect::<Vec<_>>().join(" "),
            Doc::Field => field_doc(self.key).unwrap_or_default(),
        }
    }

    /// The documentation's first sentence (the flag's short help, the README's meaning).
    pub fn summary(&self) -> String {
        let doc = self.doc();
        // A sentence ends at ". " before a capital letter or a digit, unless it is "e.g.".
        let bytes = doc.as_bytes();
        let end = (0..bytes.len().saturating_sub(2))
            .find(|&i| {
                bytes[i] == b'.'
                    && bytes[i + 1] == b' '
                    && (bytes[i + 2].is_ascii_uppercase() || bytes[i + 2].is_ascii_digit())
                    && !doc[..i].ends_with("e.g")
            })
            .map_or(doc.len(), |i| i + 1);
        doc[..end].trim_end_matches('.').to_owned()
    }

    /// The default as a variable or flag takes it (a string without TOML's quotes), or
    /// `None` when unset by default.
    pub fn default_value(&self) -> Option<String> {
        (self.get)(&ServeConfig::default()).map(|v| match v {
            toml::Value::String(text) => text,
            other => other.to_string(),
        })
    }
}

/// The `///` comment of a [`Settings`] field, joined into one paragraph, with rustdoc's
/// link brackets and escapes removed.
fn field_doc(field: &str) -> Option<String> {
    let body = SETTINGS_SOURCE.split("pub struct Settings {").nth(1)?;
    let body = body.split("\n}").next()?;
    let mut doc: Vec<&str> = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
        } else if line.starts_with(&format!("pub {field}:")) {
            let text = doc.join(" ");
            return Some(
                text.replace("[`", "`")
                    .replace("`]", "`")
                    .replace("\\[", "[")
                    .replace("\\]", "]"),
            );
        } else {
            doc.clear();
        }
    }
    None
}

/// The names of [`Settings`]' fields, as `src/settings.rs` declares them.
pub fn settings_fields() -> Vec<&'static str> {
    let Some(body) = SETTINGS_SOURCE
        .split("pub struct Settings {")
        .nth(1)
        .and_then(|b| b.split("\n}").next())
    else {
        return Vec::new();
    };
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':'))
        .map(|(name, _)| name)
        .collect()
}

/// The source of a value, from the weakest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// An `APNS_SIM_*` variable.
    Env,
    /// A flag.
    Flag,
}

/// A configuration that cannot be used: where the bad value is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct ConfigError {
    /// `FILE:LINE:COLUMN`, the variable, or the flag.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// The flags given, as `(key, text)` pairs; a switch without a value is `"true"`.
pub type Flags<'a> = [(&'a str, String)];

impl ServeConfig {
    /// The configuration from a file (its path, for errors, and its text), the environment
    /// (`env` looks a variable up; an empty one counts as unset) and the flags given, each
    /// overriding the one before. `devices` and `scenario` both choose the fleet: the one
    /// set in the stronger place wins, and both set in the same place are refused.
    pub fn resolve(
        file: Option<(&Path, &str)>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Flags<'_>,
    ) -> Result<ServeConfig, ConfigError> {
        let mut config = ServeConfig::default();
        let mut set_by: BTreeMap<&str, Source> = BTreeMap::new();
        if let Some((path, text)) = file {
            for (key, entry, raw) in read_file(path, text)? {
                (entry.set)(&mut config, Raw::Toml(raw.get_ref()), &entry.bounds).map_err(
                    |message| ConfigError {
                        place: place_in(path, text, raw.span().start),
                        message: format!("{key}: {message}"),
                    },
                )?;
                set_by.insert(entry.key, Source::File);
            }
        }
        for entry in ENTRIES {
            let name = entry.env();
            let Some(text) = env(&name).filter(|t| !t.is_empty()) else {
                continue;
            };
            (entry.set)(&mut config, Raw::Text(&text), &entry.bounds).map_err(|message| {
                ConfigError {
                    place: name,
                    message,
                }
            })?;
            set_by.insert(entry.key, Source::Env);
        }
        for (key, text) in flags {
            let entry = Entry::find(key).ok_or_else(|| ConfigError {
                place: format!("--{}", key.replace('_', "-")),
                message: "no such setting".to_owned(),
            })?;
            (entry.set)(&mut config, Raw::Text(text), &entry.bounds).map_err(|message| {
                ConfigError {
                    place: format!("--{}", entry.flag()),
                    message,
                }
            })?;
            set_by.insert(entry.key, Source::Flag);
        }
        match (set_by.get("devices"), set_by.get("scenario")) {
            (Some(d), Some(s)) if d == s => {
                return Err(ConfigError {
                    place: match d {
                        Source::File => {
                            file.map_or_else(String::new, |(p, _)| p.display().to_string())
                        }
                        Source::Env => "APNS_SIM_DEVICES, APNS_SIM_SCENARIO".to_owned(),
                        _ => "--devices, --scenario".to_owned(),
                    },
                    message: "--devices and --scenario both choose the demo fleet: give one of \
                              them"
                        .to_owned(),
                })
            }
            (Some(d), Some(s)) if d > s => config.scenario = None,
            (Some(_), Some(_)) => config.devices = None,
            _ => {}
        }
        Ok(config)
    }

    /// The configuration as a commented TOML file: every key with its documentation, the
    /// variable and flag that override it, and its value (an unset one as a comment).
    /// `apns-sim config init` prints the defaults; `serve --print-config` the effective
    /// values. Read back, it gives the same configuration.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# apns-sim serve configuration: `apns-sim serve --config FILE` reads it.\n\
             # APNS_SIM_* variables override this file, and flags override both.\n\
             # Durations take units: \"500ms\", \"10s\", \"2h\", \"1h 30m\".\n",
        );
        let mut heading = None;
        for entry in ENTRIES {
            if entry.heading != heading {
                heading = entry.heading;
                if let Some(h) = heading {
                    let _ = write!(out, "\n# ---- {h} ----\n");
                }
            }
            out.push('\n');
            for line in wrap(&entry.doc(), 88) {
                let _ = writeln!(out, "# {line}");
            }
            let _ = writeln!(out, "# ({}, --{})", entry.env(), entry.flag());
            match (entry.get)(self) {
                Some(value) => {
                    let _ = writeln!(out, "{} = {value}", entry.key);
                }
                None => {
                    let _ = writeln!(out, "# {} = {}", entry.key, entry.shape);
                }
            }
        }
        out
    }
}

/// One key of a file: as written, its entry, and its value with where it stands.
type FileEntry = (String, &'static Entry, Spanned<toml::Value>);

/// The file's keys with their entries and values, in the file's order; an unknown key or a
/// syntax error is refused with its line and column.
fn read_file(path: &Path, text: &str) -> Result<Vec<FileEntry>, ConfigError> {
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| ConfigError {
            place: e.span().map_or_else(
                || path.display().to_string(),
                |s| place_in(path, text, s.start),
            ),
            message: e.message().trim().to_owned(),
        })?;
    let mut entries = Vec::new();
    for (key, value) in table {
        let Some(entry) = Entry::find(key.get_ref()) else {
            return Err(ConfigError {
                place: place_in(path, text, key.span().start),
                message: format!(
                    "unknown key `{}` (`apns-sim config init` lists every key)",
                    key.get_ref()
                ),
            });
        };
        entries.push((key.into_inner(), entry, value));
    }
    entries.sort_by_key(|(_, _, value)| value.span().start);
    Ok(entries)
}

/// `FILE:LINE:COLUMN` of byte `offset` in `text`, both counted from 1.
fn place_in(path: &Path, text: &str, offset: usize) -> String {
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{column}", path.display())
}

/// `str::floor_char_boundary` for the declared `rust-version`, where it is not stable.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        let mut i = index.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// `text` in lines of at most `width` characters (a longer word keeps its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The README's table of settings: key, variable, flag, default, meaning.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| key | variable | flag | default | meaning |\n|---|---|---|---|---|\n");
    for entry in ENTRIES {
        let default = entry
            .default_value()
            .map_or_else(|| "unset".to_owned(), |d| format!("`{d}`"));
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `--{}` | {default} | {} |",
            entry.key,
            entry.env(),
            entry.flag(),
            entry.summary().replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file(text: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::resolve(Some((Path::new("sim.toml"), text)), &no_env, &[])
    }

    #[test]
    fn every_settings_field_has_an_entry_and_a_doc() {
        let fields = settings_fields();
        assert!(fields.len() >= 20, "{fields:?}");
        for field in &fields {
            let entry = Entry::find(field)
                .unwrap_or_else(|| panic!("Settings::{field} has no entry in config::ENTRIES"));
            assert!(matches!(entry.doc, Doc::Field), "{field}");
        }
        for entry in ENTRIES {
            if matches!(entry.doc, Doc::Field) {
                assert!(
                    fields.contains(&entry.key),
                    "{} is no Settings field",
                    entry.key
                );
            }
            assert!(entry.doc().len() > 20, "{}: {:?}", entry.key, entry.doc());
            assert!(!entry.summary().is_empty());
        }
    }

    #[test]
    fn field_docs_lose_rustdoc_markup() {
        let doc = field_doc("default_storage_days").unwrap();
        assert!(
            doc.starts_with("Days a notification for an offline device"),
            "{doc}"
        );
        assert!(
            doc.contains("[A7]") && doc.contains("`MAX_STORAGE_DAYS`"),
            "{doc}"
        );
        assert!(!doc.contains("\\["), "{doc}");
        assert_eq!(
            Entry::find("token_len").unwrap().summary(),
            "Length in bytes of the device tokens the simulator mints, 1 to 100 (values outside are clamped)"
        );
    }

    #[test]
    fn the_default_file_reads_back_as_the_defaults() {
        let text = ServeConfig::default().to_toml();
        let read = file(&text).expect("the default file reads");
        assert_eq!(format!("{read:?}"), format!("{:?}", ServeConfig::default()));
        assert_eq!(read.to_toml(), text);
        assert!(text.contains("\nhandshake_timeout = \"5s\"\n"), "{text}");
        assert!(text.contains("\nhttp2_idle_timeout = \"2h\"\n"), "{text}");
        assert!(
            text.contains("\n# token_rate_limit = PUSHES/SECONDS\n"),
            "{text}"
        );
    }

    #[test]
    fn a_changed_file_reads_back_as_itself() {
        let config = file(
            "token_rate_limit = \"10/60\"\ncontrol_token = \"s3cret\"\nlinger = \"1h 30m\"\n\
             bind = \"::1\"\nunknown_command = \"protocol-error\"\naccept_uppercase_apns_id = false\n",
        )
        .unwrap();
        assert_eq!(config.settings.linger, Duration::from_secs(5400));
        assert_eq!(
            config.settings.unknown_command,
            UnknownCommand::ProtocolError
        );
        assert!(!config.settings.accept_uppercase_apns_id);
        let again = file(&config.to_toml()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{config:?}"));
    }

    #[test]
    fn file_then_environment_then_flags() {
        let text = "token_len = 40\nhello_timeout = \"3s\"\ngateway_port = 1\n";
        let env = |name: &str| match name {
            "APNS_SIM_TOKEN_LEN" => Some("50".to_owned()),
            "APNS_SIM_HELLO_TIMEOUT" => Some("4s".to_owned()),
            "APNS_SIM_BIND" => Some(String::new()),
            _ => None,
        };
        let flags = [("token_len", "60".to_owned())];
        let config = ServeConfig::resolve(Some((Path::new("f.toml"), text)), &env, &flags).unwrap();
        assert_eq!(config.settings.token_len, 60);
        assert_eq!(config.settings.hello_timeout, Duration::from_secs(4));
        assert_eq!(config.gateway_port, 1);
        assert_eq!(
            config.bind,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "empty is unset"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_their_line() {
        let err = file("token_len = 40\n\n  tokn_len = 3\n").unwrap_err();
        assert_eq!(err.place, "sim.toml:3:3");
        assert!(err.message.contains("unknown key `tokn_len`"), "{err}");
        let err = file("# x\ntoken_len = \"forty\"\n").unwrap_err();
        assert_eq!(err.place, "sim.toml:2:13");
        assert!(err.message.contains("found string"), "{err}");
        let err = file("hello_timeout = 10\n").unwrap_err();
        assert!(err.message.contains("duration"), "{err}");
        let err = file("token_len = 101\n").unwrap_err();
        assert!(err.message.contains("1 to 100"), "{err}");
        let err = file("hello_timeout = \"0s\"\n").unwrap_err();
        assert!(err.message.contains("not within"), "{err}");
        let err = file("token_len = = 3\n").unwrap_err();
        assert!(err.place.starts_with("sim.toml:1:"), "{err}");
        let err = file("[server]\nbind = \"::1\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown key `server`"), "{err}");
    }

    #[test]
    fn environment_and_flag_errors_name_their_source() {
        let env = |name: &str| (name == "APNS_SIM_TOKEN_LEN").then(|| "x".to_owned());
        let err = ServeConfig::resolve(None, &env, &[]).unwrap_err();
        assert_eq!(err.place, "APNS_SIM_TOKEN_LEN");
        let err = ServeConfig::resolve(None, &no_env, &[("max_iat_ahead", "soon".to_owned())])
            .unwrap_err();
        assert_eq!(err.place, "--max-iat-ahead");
    }

    #[test]
    fn the_stronger_fleet_choice_wins_and_one_place_may_not_make_both() {
        let env = |name: &str| (name == "APNS_SIM_SCENARIO").then(|| "a.toml".to_owned());
        let flags = [("devices", "2".to_owned())];
        let config = ServeConfig::resolve(None, &env, &flags).unwrap();
        assert_eq!((config.devices, config.scenario), (Some(2), None));
        let config =
            ServeConfig::resolve(Some((Path::new("f.toml"), "devices = 3\n")), &env, &[]).unwrap();
        assert_eq!(config.devices, None);
        assert_eq!(config.scenario, Some(PathBuf::from("a.toml")));
        let both = [
            ("devices", "2".to_owned()),
            ("scenario", "b.toml".to_owned()),
        ];
        let err = ServeConfig::resolve(None, &no_env, &both).unwrap_err();
        assert!(err.message.contains("--devices and --scenario"), "{err}");
    }

    #[test]
    fn names_follow_the_key() {
        let entry = Entry::find("request_body_timeout").unwrap();
        assert_eq!(entry.flag(), "request-body-timeout");
        assert_eq!(entry.env(), "APNS_SIM_REQUEST_BODY_TIMEOUT");
        assert!(Entry::find("accept_uppercase_apns_id").unwrap().is_switch());
        assert!(markdown_table().contains(
            "| `http2_idle_timeout` | `APNS_SIM_HTTP2_IDLE_TIMEOUT` | `--http2-idle-timeout` | `2h` |"
        ));
    }
}
