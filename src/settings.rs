//! Tunable limits and defaults shared by the endpoints. Every bound the simulator enforces
//! on connections and time lives here, with the reason for its default.

use std::str::FromStr;
use std::time::Duration;

use crate::protocol::payload::{MAX_PAYLOAD_FRAME, MAX_PAYLOAD_LEGACY};
use crate::protocol::Environment;

/// A per-token push limit: at most `pushes` notifications to one device token within `per`.
///
/// Apple throttles providers that push too often to the same token (HTTP/2 answers 429
/// `TooManyRequests`; the binary API dropped them silently) without publishing the numbers, so
/// the simulator leaves it off unless asked, for testing a provider's handling of 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Pushes allowed within the window.
    pub pushes: u32,
    /// The sliding window.
    pub per: Duration,
}

/// A `--token-rate-limit` value that is not `PUSHES/SECONDS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not PUSHES/SECONDS with both above 0 and PUSHES at most {MAX_RATE_LIMIT_PUSHES}, e.g. 10/60")]
pub struct BadRateLimit(pub String);

impl FromStr for RateLimit {
    type Err = BadRateLimit;

    /// Parses `PUSHES/SECONDS`, e.g. `10/60`.
    fn from_str(text: &str) -> Result<Self, BadRateLimit> {
        let bad = || BadRateLimit(text.to_owned());
        let (pushes, secs) = text.split_once('/').ok_or_else(bad)?;
        let pushes: u32 = pushes.trim().parse().map_err(|_| bad())?;
        let secs: u64 = secs.trim().parse().map_err(|_| bad())?;
        if pushes == 0 || secs == 0 || pushes > MAX_RATE_LIMIT_PUSHES {
            return Err(bad());
        }
        Ok(RateLimit {
            pushes,
            per: Duration::from_secs(secs),
        })
    }
}

/// Largest `pushes` a [`RateLimit`] may allow: the hub remembers that many push times per
/// token, so this bounds the memory the limit itself costs.
pub const MAX_RATE_LIMIT_PUSHES: u32 = 10_000;

/// The token length minted unless [`Settings::token_len`] says otherwise: what Apple's
/// tokens have almost always been.
pub const DEFAULT_TOKEN_LEN: usize = 32;

/// The token lengths [`Settings::token_len`] may take: Apple's "up to 100 bytes" (spec §6).
pub const TOKEN_LEN_RANGE: std::ops::RangeInclusive<usize> = 1..=100;

/// Limits and defaults for one simulator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environment for universal certificates when the TLS server name names no Apple host
    /// (Apple's hosts pin it; `localhost` does not). Sandbox, like a developer's first test.
    pub default_environment: Environment,
    /// Provider connections per endpoint (gateway, feedback, HTTP/2). Providers are told to
    /// keep few long-lived connections; 1,000 leaves room for load tests and stays far below
    /// the 20,000 file descriptors a process may hold here.
    pub max_provider_connections: usize,
    /// Device connections. Each costs one file descriptor and ~12 KB; 15,000 keeps the whole
    /// simulator under the 20,000 descriptors a process may hold on these machines.
    pub max_device_connections: usize,
    /// Deadline for the TLS handshake (slow-loris defence). It runs apart from the
    /// connection limits: a connection takes an established slot only once its handshake is
    /// done (see [`Settings::max_handshaking`]). A TLS 1.3 handshake with a client
    /// certificate takes one round trip and a few milliseconds of signing, but a client
    /// runtime starting cold (a JVM loading its TLS classes, on a loaded CI machine) was
    /// seen to need more than 2 s: 5 s. A flood of half-open sockets is not held off by
    /// this deadline but by the handshake seats, where the oldest gives way to a newcomer.
    pub handshake_timeout: Duration,
    /// Deadline for a device's hello after the handshake.
    pub hello_timeout: Duration,
    /// A binary provider connection that sends nothing for this long is closed. Apple keeps
    /// connections for hours; an hour it is.
    pub provider_idle_timeout: Duration,
    /// An HTTP/2 provider connection that sends nothing (not even a PING) for this long gets
    /// `GOAWAY {"reason":"IdleTimeout"}`. Apple suggests a PING after an hour idle (spec §4.2),
    /// so the deadline must lie well past one hour: at exactly one hour a client that follows
    /// the advice races the deadline and loses whenever its timer fires a moment late. Two
    /// hours leaves a full hour for late timers (a suspended VM, a busy event loop) and still
    /// frees an abandoned connection's slot the same afternoon.
    pub http2_idle_timeout: Duration,
    /// An HTTP/2 `apns-id` with uppercase hex digits is accepted and echoed as sent (on), or
    /// refused with `BadMessageId` (off). Apple documents the lowercase form but itself
    /// answers with uppercase ids, and Swift's `UUID().uuidString` is uppercase; the evidence
    /// is in the docs of `server/http2/request.rs`. On, so that a correct Swift provider passes.
    pub accept_uppercase_apns_id: bool,
    /// How often devices must ping. A device silent for three heartbeats is dropped.
    pub device_heartbeat: Duration,
    /// How long to keep reading (and discarding) after an error response, so the closing
    /// socket sends FIN rather than RST and the provider gets to read the 6 bytes.
    pub linger: Duration,
    /// An HTTP/2 request whose body has not fully arrived this long after its headers gets
    /// 400 `IdleTimeout`, so a stalled stream cannot hold its slot and buffer for ever. A
    /// notification body is at most 5 KiB: ten seconds is generous on any link.
    pub request_body_timeout: Duration,
    /// Per-token push limit (HTTP/2: 429 `TooManyRequests`); off by default.
    pub token_rate_limit: Option<RateLimit>,
    /// How far ahead of the simulator's clock a provider token's `iat` may be; beyond it
    /// the token gets 403 `ExpiredProviderToken`. Apple: the `iat` "must be no more than one
    /// hour from the current time", and a provider an hour fast was answered
    /// `ExpiredProviderToken` (node-apn#590): one hour. Lower it to catch a fast clock sooner.
    pub max_iat_ahead: Duration,
    /// Least time between two re-reads of the certificate folder's auth keys, which a token
    /// naming an unknown key triggers: once a second picks up a key minted by
    /// `apns-sim certs auth-key` at once for a person, while a flood of unknown key ids costs
    /// one small read a second instead of one per request.
    pub pki_reread_interval: Duration,
    /// Days a notification for an offline device is kept when the provider gave no expiry
    /// (HTTP/2 without `apns-expiration`, command 2 without item 4, every command 0), and
    /// the most days any expiry keeps it. Apple "may store a notification for up to 30
    /// days" and applies that default storage policy when the expiry is omitted (spec §3,
    /// \[A7\]); only an explicit 0 means "now or never". At most [`MAX_STORAGE_DAYS`].
    pub default_storage_days: u32,
    /// Largest payload of binary commands 0 and 1, in bytes. Apple's legacy-format text
    /// says 256 in every revision \[A2\] and a 2015 report says larger payloads worked only
    /// with command 2 \[I39\]; one library saw 2048 accepted on all formats after the iOS 8
    /// change \[I20\] (spec §1.5, §9 item 2). 256 by default, so a provider relying on the
    /// undocumented larger limit is caught; 2048 ([`MAX_PAYLOAD_FRAME`]) for the other
    /// reading. Values above 2048 act as 2048: no source gave the legacy formats more.
    pub legacy_payload_limit: usize,
    /// What the gateway answers to a command byte other than 0, 1 or 2. TN2265 says the
    /// connection is simply closed, zero bytes \[A15\]; later revisions list status 128
    /// "could not parse" without saying for what \[A1\] (spec §1.7, §9 item 5). The one
    /// source that names this case wins: a silent close by default. The log says why
    /// either way.
    pub unknown_command: UnknownCommand,
    /// Length in bytes of the device tokens the simulator mints, 1 to 100 (values outside
    /// are clamped). Apple's tokens were 32 bytes for years, but Apple promises no size
    /// ("device tokens are of variable length; do not hard-code their size") and 54- and
    /// 80-byte tokens have been seen (spec §6). 32 by default, like nearly every real
    /// token; set it (e.g. 80) to catch a provider that hard-codes 64 hex digits. The
    /// binary API keeps its 32-byte rule, so longer tokens are reachable over HTTP/2 only.
    pub token_len: usize,
    // --- Admission and deadlines (issue 11): what keeps a hostile or broken peer from
    // --- holding the slots, the memory or the shutdown of everyone else.
    /// Connections per endpoint still in their TLS handshake. When that many are handshaking
    /// the oldest gives way to the newcomer (it is closed), so a flood of sockets that
    /// connect and never send a ClientHello cannot keep a well-behaved client out: the
    /// newcomer always gets its turn. 256 per endpoint is far more than the handshakes a
    /// real burst of clients has in flight at once, and keeps the four TLS endpoints within
    /// the 20,000 file descriptors a process may hold here beside the connection limits.
    pub max_handshaking: usize,
    /// Connections the kernel holds for each TLS endpoint before its accept loop takes them
    /// (the `listen` backlog). Past it the kernel drops a client's SYN and the client tries
    /// again only after TCP's retransmission timeout (1 s, then 3 s): with the 128 a
    /// listener gets by default, 5,000 devices connecting in waves of 250 lost 442 SYNs and
    /// took 16 s instead of a few. 4,096 absorbs a burst of thousands while the accept loop
    /// catches up; the kernel caps it at `net.core.somaxconn`.
    pub listen_backlog: u32,
    /// Percentage of an endpoint's connection slots that peers not yet authenticated may
    /// hold: HTTP/2 connections without a client certificate before their first valid
    /// provider token, devices before their Hello. When that share is full the oldest
    /// unauthenticated connection gives way to the newcomer, so a crowd without credentials
    /// can neither take the slots authenticated peers need nor keep a new one out. A
    /// quarter: room for many providers connecting at once, three quarters kept for those
    /// who proved who they are. Nothing rests on the source address (tests, and many real
    /// setups, come from one address).
    pub unauthenticated_share_percent: u8,
    /// After the handshake, a connection must complete its first request or frame (a binary
    /// notification, an HTTP/2 request's head) within this, or it is closed: a connection
    /// that never says anything holds a slot for nothing. Providers open a connection to
    /// push; thirty seconds leaves room for one that connects a little early. Devices have
    /// their own deadline for the first frame, [`Settings::hello_timeout`].
    pub first_request_timeout: Duration,
    /// A frame that has begun (a binary notification, an HTTP/2 frame) must be complete
    /// within this, or the connection is closed. The idle clocks count from the last
    /// *complete* frame, not the last byte, so a peer dripping one byte every few seconds
    /// cannot hold a slot; the largest frame is a few KiB, which any live link delivers in
    /// well under ten seconds.
    pub frame_timeout: Duration,
    /// Every write to a peer must make progress within this, or the connection is cut
    /// off: a device or provider that stops reading would otherwise block its task for
    /// ever (and with it shutdown). A device cut off this way has its pending deliveries
    /// routed again, like any device that drops. Thirty seconds without a byte taken is a
    /// dead peer on any network the simulator serves.
    pub write_timeout: Duration,
    /// How long [`crate::sim::Simulator::shutdown`] lets connections finish (status 10 on
    /// the binary gateway, GOAWAY on HTTP/2, Error SHUTDOWN to devices) before it aborts
    /// whatever is left. Ten seconds covers the HTTP/2 grace for in-flight requests and
    /// the linger of every close, so the process always exits soon after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Bytes of HTTP/2 request bodies buffered at once, across all connections. Each stream
    /// reserves its payload limit (at most 5 KiB) while its body arrives; when the budget is
    /// spent a new stream is answered 503 `ServiceUnavailable` without buffering (Apple's
    /// status for "server shutting down / unavailable", spec §4), so stalled bodies cannot grow memory
    /// without bound. 64 MiB holds about 13,000 bodies in flight at once.
    pub http2_body_budget: usize,
    /// How many events the delivery log keeps (`GET /v1/notifications`, `GET /v1/events`
    /// replay from it); older ones fall out, and a cursor before them is told `truncated`.
    /// 10,000 is a long test suite's pushes several times over (each notification logs two
    /// or three events) at a few MB; at most [`MAX_DELIVERY_LOG_LEN`].
    pub delivery_log_len: usize,
    /// Control API connections served at once; further clients wait in the listen backlog
    /// until one closes. The API is for a test suite and a dashboard or two, and each
    /// connection (an event stream above all) holds a task and buffers, so a runaway client
    /// must not open thousands: 64.
    pub max_control_connections: usize,

    // ----- registrations and device records (issue 11) ----------------------------------
    /// Registrations (`Register` messages) one device connection may send in its life. A
    /// device registers each of its apps once per connection, so a few per app is plenty;
    /// a connection that loops on registering is closed with `Limit`, so one socket cannot
    /// drive the token table: 2,048.
    pub max_registrations_per_connection: u32,
    /// Registrations one device connection may send per window: a phone registers its apps
    /// in a burst after connecting, then rarely; a loop is held to this rate: 100 per 10 s.
    pub connection_registration_rate: RateLimit,
    /// Tokens the hub may mint for one device (serial and environment) per window, whatever
    /// connection asks: a fresh install or a first registration mints one, re-registering
    /// does not. Reinstalling apps in a loop was how one device minted a million tokens in
    /// nine seconds (issue 11). 200 per minute lets the control API install its most apps
    /// at once (64) three times over, and no person reinstalling by hand comes near it.
    pub device_token_rate: RateLimit,
    /// Apps (and kinds of token) one device may hold tokens for. A real phone has a few
    /// hundred apps at most, and each kind of token of an app counts: 512.
    pub max_apps_per_device: usize,
    /// Tokens of one device that a reinstall replaced, kept so that a push to one is
    /// answered 410 Unregistered with the reinstall's timestamp (feeding the feedback
    /// service). Past this the oldest is forgotten (a push to it:
    /// `BadDeviceToken`), so reinstalling in a loop cannot grow the table: 64, far more
    /// than the reinstalls a provider's stale tokens span for one device.
    pub max_unregistered_per_device: usize,
    /// An offline device not seen for this long is forgotten with its tokens and anything
    /// stored for it (its stored notifications are recorded as expired). Longer than the
    /// storage policy (30 days), so nothing a provider may still expect delivered is
    /// dropped by it: 60 days.
    pub device_record_ttl: Duration,
    /// Devices (serial and environment) the hub keeps records of, online or not. When a new
    /// device says hello with the table full, the one offline longest is forgotten first, so
    /// serials made up in a loop cannot grow memory or the state file without bound;
    /// 100,000 is several device connection limits' worth of real devices.
    pub max_device_records: usize,
    /// When a commit of the state file counts as done (SQLite's `synchronous` in WAL mode).
    /// `normal` (default): the commit is in the write-ahead log in the kernel's page cache,
    /// so it survives the simulator's own crash or kill -9, the failure a test tool meets;
    /// only a power cut or a kernel crash can lose the last commits. `full`: the log is
    /// also synced to the disk at every group commit, one fsync per batch. That costs what
    /// the disk's sync latency is: nothing measurable on a quiet disk, but with a sync at
    /// about 120 ms (this project's shared VM disk while six builds ran) HTTP/2 200s for
    /// stored notifications fell to 0.16× of in-memory (BENCHMARKS.md, "Durable state").
    pub state_sync: StateSync,

    // ----- the per-notification log line (issue 10) -------------------------------------
    /// Per-notification info lines written in one second before the log turns into one
    /// summary line per second (counts by fate and the lines suppressed; the delivery log
    /// keeps every record), and back once a second stays below it. A person reads a few
    /// dozen lines a second, and a terminal takes some thousands; a load test pushing 100k/s
    /// must not spend its time writing them. 1,000 ([`DEFAULT_LOG_LINES_PER_SEC`]); 0 writes
    /// every line, always.
    pub log_lines_per_sec: u32,

    // ----- virtual fleets (issue 10) ----------------------------------------------------
    /// Virtual devices to start: devices held inside the simulator as a few bytes of state
    /// each (no socket), every one with every kind of token of each of `virtual_apps`,
    /// acknowledging at once, going offline, coming back and uninstalling apps at the rates
    /// below, so feedback and 410 flow as with real devices. Their tokens are listed by
    /// `GET /v1/virtual/devices`. 0 (the default) starts none; at most
    /// [`MAX_VIRTUAL_DEVICES`].
    pub virtual_devices: u32,
    /// The bundle ids each virtual device holds, comma-separated, 1 to 16
    /// ([`MAX_VIRTUAL_APPS`]); each has every kind of token: com.example.app, the demo's app.
    pub virtual_apps: String,
    /// The environment of every virtual token: sandbox, like a developer's first test.
    pub virtual_environment: Environment,
    /// Apps uninstalled per second across the virtual fleet, each on a device drawn at
    /// random; the device reports it at its next notification (feedback, then 410). 0 (the
    /// default) leaves every app installed unless the control API uninstalls one.
    pub virtual_uninstall_rate: u32,
    /// Virtual devices going offline per second across the fleet, each drawn at random;
    /// notifications for it are stored and delivered when it comes back. 0 by default.
    pub virtual_offline_rate: u32,
    /// How long a virtual device the churn took offline stays away: a minute, long enough
    /// for store-and-forward to show, short enough that a load test sees them return.
    pub virtual_offline_for: Duration,
}

/// Largest [`Settings::virtual_devices`]: device numbers fit the 4 bytes a virtual token
/// gives them with room to spare, and ten million devices of one app are about 110 MB.
pub const MAX_VIRTUAL_DEVICES: u32 = 10_000_000;

/// Most apps of a virtual fleet: each costs every device ten bytes (a byte per kind of
/// token), so 16 keeps a device at 160 bytes, under the 300-byte target of issue 10.
pub const MAX_VIRTUAL_APPS: usize = 16;

/// How often the virtual fleet's churn runs (on the simulator's clock): ten times a second
/// spreads a rate over the second without costing the lock anything noticeable.
pub const VIRTUAL_TICK: Duration = Duration::from_millis(100);

/// Most uninstalls, departures and returns each one churn tick makes, so that a tick holds
/// the hub's lock for a millisecond or so whatever the rates (or a clock moved far ahead)
/// ask: 10,000 (100,000 per second at the default tick).
pub const VIRTUAL_CHURN_PER_TICK: u32 = 10_000;

/// The per-notification log line rate unless [`Settings::log_lines_per_sec`] says otherwise.
pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 1_000;

/// How far a commit of the state file goes before it counts as done (see
/// [`Settings::state_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateSync {
    /// In the write-ahead log, in the kernel's cache: survives kill -9, not a power cut.
    #[default]
    Normal,
    /// Synced to the disk at every group commit: survives a power cut too.
    Full,
}

/// How the binary gateway answers an unknown command byte (see
/// [`Settings::unknown_command`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownCommand {
    /// Close the connection without writing anything (TN2265).
    #[default]
    Close,
    /// Write the error response with status 128 (Protocol error) and identifier 0, then
    /// close (the 2016-2018 documents' status table).
    ProtocolError,
}

/// Largest [`Settings::default_storage_days`]: ten years, so that "now + the policy" fits
/// the u32 seconds of an expiry (which run out in 2106) for decades to come, and the
/// deadline a device is shown is the real one.
pub const MAX_STORAGE_DAYS: u32 = 3_650;

/// The delivery log's length unless [`Settings::delivery_log_len`] says otherwise.
pub const DEFAULT_DELIVERY_LOG_LEN: usize = 10_000;

/// Largest [`Settings::delivery_log_len`]: an event costs a few hundred bytes besides the
/// payload and frame it shares with its notification's other events, so a million is a
/// few hundred MB to a GB at worst, the most a simulator on a developer's machine should
/// hold; `GET /v1/notifications` pages through it either way.
pub const MAX_DELIVERY_LOG_LEN: usize = 1_000_000;

/// Apple's storage policy: "up to 30 days" (spec §3, \[A7\]).
pub const DEFAULT_STORAGE_DAYS: u32 = 30;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_environment: Environment::Sandbox,
            max_provider_connections: 1_000,
            max_device_connections: 15_000,
            handshake_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(10),
            provider_idle_timeout: Duration::from_secs(3600),
            http2_idle_timeout: Duration::from_secs(2 * 3600),
            accept_uppercase_apns_id: true,
            device_heartbeat: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            request_body_timeout: Duration::from_secs(10),
            token_rate_limit: None,
            max_iat_ahead: Duration::from_secs(3600),
            pki_reread_interval: Duration::from_secs(1),
            default_storage_days: DEFAULT_STORAGE_DAYS,
            legacy_payload_limit: MAX_PAYLOAD_LEGACY,
            unknown_command: UnknownCommand::Close,
            token_len: DEFAULT_TOKEN_LEN,
            delivery_log_len: DEFAULT_DELIVERY_LOG_LEN,
            max_control_connections: 64,
            max_handshaking: 256,
            listen_backlog: 4_096,
            unauthenticated_share_percent: 25,
            first_request_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            http2_body_budget: 64 * 1024 * 1024,
            max_registrations_per_connection: 2_048,
            connection_registration_rate: RateLimit {
                pushes: 100,
                per: Duration::from_secs(10),
            },
            device_token_rate: RateLimit {
                pushes: 200,
                per: Duration::from_secs(60),
            },
            max_apps_per_device: 512,
            max_unregistered_per_device: 64,
            device_record_ttl: Duration::from_secs(60 * SECONDS_PER_DAY),
            max_device_records: 100_000,
            state_sync: StateSync::Normal,
            log_lines_per_sec: DEFAULT_LOG_LINES_PER_SEC,
            virtual_devices: 0,
            virtual_apps: "com.example.app".to_owned(),
            virtual_environment: Environment::Sandbox,
            virtual_uninstall_rate: 0,
            virtual_offline_rate: 0,
            virtual_offline_for: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// A device that sends nothing (not even a ping) for this long is dropped.
    pub fn device_idle_timeout(&self) -> Duration {
        self.device_heartbeat * 3
    }

    /// Slots of an endpoint allowing `max_connections` that unauthenticated peers may hold
    /// ([`Settings::unauthenticated_share_percent`], at most 100), at least one.
    pub fn max_unauthenticated(&self, max_connections: usize) -> usize {
        let percent = usize::from(self.unauthenticated_share_percent.min(100));
        (max_connections.saturating_mul(percent) / 100).max(1)
    }

    /// How long a notification may be stored: [`Settings::default_storage_days`], at most
    /// [`MAX_STORAGE_DAYS`].
    pub fn storage(&self) -> Duration {
        let days = self.default_storage_days.min(MAX_STORAGE_DAYS);
        Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)
    }

    /// The delivery log's length: [`Settings::delivery_log_len`], within
    /// 1..=[`MAX_DELIVERY_LOG_LEN`].
    pub fn delivery_log_max(&self) -> usize {
        self.delivery_log_len.clamp(1, MAX_DELIVERY_LOG_LEN)
    }

    /// The payload limit of commands 0 and 1: [`Settings::legacy_payload_limit`], at most
    /// [`MAX_PAYLOAD_FRAME`].
    pub fn legacy_payload_max(&self) -> usize {
        self.legacy_payload_limit.min(MAX_PAYLOAD_FRAME)
    }
}

/// Seconds in a day, for [`Settings::storage`].
const SECONDS_PER_DAY: u64 = 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_parses_and_names_bad_input() {
        assert_eq!(
            "10/60".parse(),
            Ok(RateLimit {
                pushes: 10,
                per: Duration::from_secs(60)
            })
        );
        for bad in ["10", "0/60", "10/0", "x/60", "10/y", "99999999/1"] {
            let err = bad.parse::<RateLimit>().unwrap_err();
            assert_eq!(err, BadRateLimit(bad.to_owned()));
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn storage_and_legacy_limit_are_bounded() {
        let s = Settings::default();
        assert_eq!(s.storage(), Duration::from_secs(30 * 86_400));
        assert_eq!(s.legacy_payload_max(), 256);
        assert_eq!(s.unknown_command, UnknownCommand::Close);
        let s = Settings {
            default_storage_days: u32::MAX,
            legacy_payload_limit: usize::MAX,
            delivery_log_len: usize::MAX,
            ..Settings::default()
        };
        assert_eq!(s.storage(), Duration::from_secs(3_650 * 86_400));
        assert_eq!(s.legacy_payload_max(), 2048);
        assert_eq!(s.delivery_log_max(), MAX_DELIVERY_LOG_LEN);
        let s = Settings {
            delivery_log_len: 0,
            ..Settings::default()
        };
        assert_eq!(s.delivery_log_max(), 1);
        assert_eq!(Settings::default().delivery_log_max(), 10_000);
    }
}
