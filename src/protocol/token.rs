//! Device tokens and their kinds.
//!
//! Spec §6: tokens are opaque bytes assigned by APNs, unique per app + device, and differ
//! between sandbox and production. The binary-era formats carry 32 of them (token length
//! `0x0020`, [`DeviceToken::LEN`]); HTTP/2 carries them as hex in `:path`, and Apple says
//! "device tokens are of variable length; do not hard-code their size" (54- and 80-byte tokens
//! have been seen, and WWDC 2015 spoke of up to 100 bytes). So [`DeviceToken`] holds 1 to
//! [`DeviceToken::MAX_LEN`] bytes inline (no heap), and the binary API's own rule, exactly
//! 32 bytes, is [`DeviceToken::from_slice`].
//!
//! An app holds one token per **kind** ([`TokenKind`], spec §4.4 and §6): its ordinary
//! remote-notification token, and separate PushKit, location-push, Push to Talk, Live
//! Activity, widget and control tokens. Each push type is answered only by its kind of
//! token, and each kind's topic is the bundle id plus the suffix in [`TOPIC_SUFFIXES`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::protocol::device::MAX_APP_LEN;

/// The suffix Apple appends to a bundle id to form the topic of each push type, keyed by the
/// push type's `apns-push-type` name (§4.4). The topic-list kinds `voip` and `complication`
/// are the same names. Push types absent here (`alert`, `background`, `mdm`) use the bundle
/// id (or, for `mdm`, the MDM certificate's UID) as it is. No suffix ends another, so at
/// most one matches a topic.
pub const TOPIC_SUFFIXES: &[(&str, &str)] = &[
    ("location", ".location-query"),
    ("voip", ".voip"),
    ("complication", ".complication"),
    ("fileprovider", ".pushkit.fileprovider"),
    ("liveactivity", ".push-type.liveactivity"),
    ("pushtotalk", ".voip-ptt"),
    ("widgets", ".push-type.widgets"),
    ("controls", ".push-type.controls"),
];

/// The topic suffix of a push type or topic-list kind (`"voip"` → `".voip"`); `None` for the
/// ones whose topic is the bundle id itself.
pub fn topic_suffix(push_type: &str) -> Option<&'static str> {
    TOPIC_SUFFIXES
        .iter()
        .find(|(name, _)| *name == push_type)
        .map(|(_, suffix)| *suffix)
}

/// The push type (or topic-list kind) whose suffix ends `topic` after a non-empty bundle id
/// (`"com.x.voip"` → `"voip"`; `".voip"` alone names no app, so `None`).
pub fn push_type_of_topic(topic: &str) -> Option<&'static str> {
    TOPIC_SUFFIXES
        .iter()
        .find(|(_, suffix)| topic.len() > suffix.len() && topic.ends_with(suffix))
        .map(|(name, _)| *name)
}

/// An APNs device token: 1 to [`DeviceToken::MAX_LEN`] opaque bytes naming one kind of token
/// of one app on one device in one environment.
///
/// `Copy` and `Ord` so it can be a cheap map key in the device registry: the bytes live inline
/// (101 bytes in all), never on the heap. Equality, hashing and order look at the token's own
/// bytes only. It serialises (serde) as a lowercase hex string, the form people paste into
/// configs and HTTP/2 paths.
#[derive(Clone, Copy)]
pub struct DeviceToken {
    /// The token in `bytes[..len]`; the rest is always zero.
    bytes: [u8; DeviceToken::MAX_LEN],
    /// How many bytes of `bytes` are the token, 1..=[`DeviceToken::MAX_LEN`].
    len: u8,
}

/// Why bytes or text are not a device token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bytes / no hex digits at all (APNs reports this as "missing device token").
    #[error("device token is empty")]
    Empty,
    /// Not the 32 bytes the binary API's formats carry ([`DeviceToken::from_slice`]); the
    /// value is the byte count.
    #[error("device token has {0} bytes; the binary API carries exactly 32")]
    WrongLength(usize),
    /// More than [`DeviceToken::MAX_LEN`] bytes ([`DeviceToken::new`]); the value is the byte
    /// count.
    #[error("device token has {0} bytes; at most 100")]
    TooLong(usize),
    /// A hex digit count that is odd or over 200 ([`DeviceToken::from_hex`]); the value is
    /// the digit count.
    #[error("device token has {0} hex digits; expected an even number from 2 to 200")]
    BadHexLength(usize),
    /// Text contains something other than hex digits.
    #[error("device token is not hexadecimal")]
    NotHex,
}

impl DeviceToken {
    /// Length of a binary-era token in bytes (64 hex digits), and the default length the
    /// simulator mints.
    pub const LEN: usize = 32;

    /// Longest token accepted: Apple's 2018 binary-API document says "up to 100 bytes", and
    /// WWDC 2015 warned tokens "may grow up to 100 bytes" (spec §6); the longest observed is
    /// 80. The bound keeps the token inline and small.
    pub const MAX_LEN: usize = 100;

    /// Wraps 32 raw token bytes; infallible because the length is right.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut all = [0u8; Self::MAX_LEN];
        let mut i = 0;
        while i < Self::LEN {
            all[i] = bytes[i];
            i += 1;
        }
        Self {
            bytes: all,
            len: Self::LEN as u8,
        }
    }

    /// A token of any length from 1 to [`DeviceToken::MAX_LEN`] bytes (the HTTP/2 API's and
    /// the device protocol's rule).
    pub fn new(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        let mut all = [0u8; Self::MAX_LEN];
        all.get_mut(..bytes.len())
            .ok_or(TokenError::TooLong(bytes.len()))?
            .copy_from_slice(bytes);
        Ok(Self {
            bytes: all,
            len: bytes.len() as u8,
        })
    }

    /// Takes a token from untrusted bytes under the binary API's rule: exactly
    /// [`DeviceToken::LEN`] bytes (the 2013–2017 documents, spec §1.4 and §9 item 1).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenError::WrongLength(bytes.len()))?;
        Ok(Self::from_bytes(array))
    }

    /// Parses an even number of hex digits, 2 to 200 (1 to 100 bytes), upper or lower case
    /// (the HTTP/2 `:path` form).
    ///
    /// Checks in this order: empty → [`TokenError::Empty`]; any non-hex character →
    /// [`TokenError::NotHex`]; an odd count or more than 200 → [`TokenError::BadHexLength`]
    /// with the count.
    pub fn from_hex(text: &str) -> Result<Self, TokenError> {
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::NotHex);
        }
        if !text.len().is_multiple_of(2) || text.len() > 2 * Self::MAX_LEN {
            return Err(TokenError::BadHexLength(text.len()));
        }
        let len = text.len() / 2;
        let mut bytes = [0u8; Self::MAX_LEN];
        hex::decode_to_slice(text, &mut bytes[..len]).map_err(|_| TokenError::NotHex)?;
        Ok(Self {
            bytes,
            len: len as u8,
        })
    }

    /// The raw bytes, as written on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The token's length in bytes, 1..=[`DeviceToken::MAX_LEN`].
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a token has at least one byte (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowercase hex, the canonical text form (HTTP/2 paths, logs, configs).
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl PartialEq for DeviceToken {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for DeviceToken {}

impl Hash for DeviceToken {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for DeviceToken {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DeviceToken {
    /// Byte-wise, like the hex text.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for DeviceToken {
    /// Full lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceToken {
    /// Short form `DeviceToken(0123abcd…)`: the first 4 bytes are enough to tell tokens apart in
    /// logs without flooding them. A length other than 32 is added: `DeviceToken(0123abcd…; 80
    /// bytes)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.as_bytes()[..self.len().min(4)];
        write!(f, "DeviceToken({}…", hex::encode(head))?;
        if self.len() != Self::LEN {
            write!(f, "; {} bytes", self.len())?;
        }
        f.write_str(")")
    }
}

impl FromStr for DeviceToken {
    type Err = TokenError;

    /// Same as [`DeviceToken::from_hex`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl serde::Serialize for DeviceToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HexVisitor)
    }
}

/// Serde visitor accepting a hex string of 2 to 200 digits.
struct HexVisitor;

impl serde::de::Visitor<'_> for HexVisitor {
    type Value = DeviceToken;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a device token as 2 to 200 hex digits")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DeviceToken, E> {
        DeviceToken::from_hex(v).map_err(E::custom)
    }
}

/// Longest Live Activity id a device may name, in bytes: ActivityKit's ids are UUIDs (36
/// characters); 64 leaves room and keeps registry keys small.
pub const MAX_ACTIVITY_LEN: usize = 64;

/// Which of an app's tokens a token is (spec §4.4 and §6). Each kind answers its own push
/// types only; a push of another type gets `DeviceTokenNotForTopic` (binary: status 8).
///
/// | kind | how the app gets it | push types | topic |
/// |---|---|---|---|
/// | `remote` | `registerForRemoteNotifications` | `alert`, `background`, `mdm` | bundle id |
/// | `voip` | PushKit, `PKPushType.voIP` | `voip` | `.voip` |
/// | `complication` | PushKit, `PKPushType.complication` | `complication` | `.complication` |
/// | `fileprovider` | PushKit, `PKPushType.fileProvider` | `fileprovider` | `.pushkit.fileprovider` |
/// | `location` | `startMonitoringLocationPushes` | `location` | `.location-query` |
/// | `pushtotalk` | PushToTalk's ephemeral token | `pushtotalk` | `.voip-ptt` |
/// | `liveactivity-start` | ActivityKit push-to-start, one per app | `liveactivity` | `.push-type.liveactivity` |
/// | `liveactivity:ID` | ActivityKit, one per activity | `liveactivity` | `.push-type.liveactivity` |
/// | `widgets` | WidgetKit push handler | `widgets` | `.push-type.widgets` |
/// | `controls` | `ControlPushHandler` | `controls` | `.push-type.controls` |
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenKind {
    /// The app's ordinary remote-notification token (alert, background and MDM pushes).
    Remote,
    /// PushKit VoIP token.
    Voip,
    /// PushKit watchOS complication token.
    Complication,
    /// PushKit File Provider token.
    FileProvider,
    /// Location-push service extension token.
    Location,
    /// Push to Talk ephemeral token.
    PushToTalk,
    /// Live Activity push-to-start token (one per app).
    LiveActivityStart,
    /// Live Activity update token of one activity, named by its id (1..=[`MAX_ACTIVITY_LEN`]
    /// bytes).
    LiveActivity(String),
    /// WidgetKit widget push token.
    Widgets,
    /// WidgetKit control push token.
    Controls,
}

/// The wire code of [`TokenKind::LiveActivity`], the one kind that carries an activity id.
pub const LIVE_ACTIVITY_CODE: u8 = 7;

/// Every kind's name, wire code and push type, in code order (the live activity update kind
/// is written `liveactivity:ID`).
const KINDS: [(&str, u8, &str); 10] = [
    ("remote", 0, "alert"),
    ("voip", 1, "voip"),
    ("complication", 2, "complication"),
    ("fileprovider", 3, "fileprovider"),
    ("location", 4, "location"),
    ("pushtotalk", 5, "pushtotalk"),
    ("liveactivity-start", 6, "liveactivity"),
    ("liveactivity", LIVE_ACTIVITY_CODE, "liveactivity"),
    ("widgets", 8, "widgets"),
    ("controls", 9, "controls"),
];

/// A token kind that cannot be read, from text or from the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// A name that is no kind.
    #[error("unknown token kind {0:?}; expected remote, voip, complication, fileprovider, location, pushtotalk, liveactivity-start, liveactivity:ID, widgets or controls")]
    UnknownName(String),
    /// A wire code that is no kind.
    #[error("unknown token kind code {0}")]
    UnknownCode(u8),
    /// `liveactivity` without an activity id.
    #[error("a Live Activity update token needs the activity's id: liveactivity:ID")]
    MissingActivity,
    /// An activity id on a kind that has none, or one over [`MAX_ACTIVITY_LEN`] bytes.
    #[error("activity id {0:?} is only for liveactivity:ID, 1 to 64 bytes")]
    BadActivity(String),
}

impl TokenKind {
    /// The row of [`KINDS`] for this kind.
    fn row(&self) -> (&'static str, u8, &'static str) {
        let index = match self {
            TokenKind::Remote => 0,
            TokenKind::Voip => 1,
            TokenKind::Complication => 2,
            TokenKind::FileProvider => 3,
            TokenKind::Location => 4,
            TokenKind::PushToTalk => 5,
            TokenKind::LiveActivityStart => 6,
            TokenKind::LiveActivity(_) => 7,
            TokenKind::Widgets => 8,
            TokenKind::Controls => 9,
        };
        KINDS[index]
    }

    /// Every kind, in code order, with `activity` as the update kind's activity id.
    pub fn every(activity: &str) -> [TokenKind; 10] {
        [
            TokenKind::Remote,
            TokenKind::Voip,
            TokenKind::Complication,
            TokenKind::FileProvider,
            TokenKind::Location,
            TokenKind::PushToTalk,
            TokenKind::LiveActivityStart,
            TokenKind::LiveActivity(activity.to_owned()),
            TokenKind::Widgets,
            TokenKind::Controls,
        ]
    }

    /// The kind's name without its activity id (`remote`, `voip`, `liveactivity`, …).
    pub fn name(&self) -> &'static str {
        self.row().0
    }

    /// The byte the device protocol writes for this kind.
    pub fn code(&self) -> u8 {
        self.row().1
    }

    /// The activity id of a Live Activity update token.
    pub fn activity(&self) -> Option<&str> {
        match self {
            TokenKind::LiveActivity(id) => Some(id),
            _ => None,
        }
    }

    /// Decodes a wire code and the activity id that only [`LIVE_ACTIVITY_CODE`] carries
    /// (empty for every other code).
    pub fn from_code(code: u8, activity: &str) -> Result<TokenKind, KindError> {
        let (name, _, _) = KINDS
            .iter()
            .find(|(_, c, _)| *c == code)
            .ok_or(KindError::UnknownCode(code))?;
        if code == LIVE_ACTIVITY_CODE {
            Self::live_activity(activity)
        } else if activity.is_empty() {
            name.parse()
        } else {
            Err(KindError::BadActivity(activity.to_owned()))
        }
    }

    /// The update-token kind of activity `id`, checked.
    fn live_activity(id: &str) -> Result<TokenKind, KindError> {
        if id.is_empty() {
            Err(KindError::MissingActivity)
        } else if id.len() > MAX_ACTIVITY_LEN {
            Err(KindError::BadActivity(id.to_owned()))
        } else {
            Ok(TokenKind::LiveActivity(id.to_owned()))
        }
    }

    /// The push type this kind is for: `alert` for the ordinary token (which also takes
    /// `background` and `mdm`), else the kind's own.
    pub fn push_type(&self) -> &'static str {
        self.row().2
    }

    /// Whether a push of `push_type` may go to a token of this kind.
    pub fn accepts(&self, push_type: &str) -> bool {
        match self {
            TokenKind::Remote => matches!(push_type, "alert" | "background" | "mdm"),
            other => other.push_type() == push_type,
        }
    }

    /// The kind a push of `push_type` needs, in words, for refusals (`None` for a push type
    /// no kind takes). Live Activity pushes take either Live Activity kind.
    pub fn needed_by(push_type: &str) -> Option<&'static str> {
        Some(match push_type {
            "alert" | "background" | "mdm" => "remote-notification token",
            "voip" => "PushKit VoIP token",
            "complication" => "PushKit complication token",
            "fileprovider" => "PushKit File Provider token",
            "location" => "location-push token",
            "pushtotalk" => "Push to Talk token",
            "liveactivity" => "Live Activity token (push-to-start or update)",
            "widgets" => "widget push token",
            "controls" => "control push token",
            _ => return None,
        })
    }

    /// What the token is, in words (`PushKit VoIP token`, `Live Activity update token of
    /// activity ride-42`).
    pub fn describe(&self) -> String {
        match self {
            TokenKind::LiveActivityStart => "Live Activity push-to-start token".to_owned(),
            TokenKind::LiveActivity(id) => format!("Live Activity update token of activity {id}"),
            other => Self::needed_by(other.push_type())
                .unwrap_or("token")
                .to_owned(),
        }
    }

    /// The topic a provider pushes this kind of token of `app` to: the bundle id plus the
    /// push type's suffix ([`TOPIC_SUFFIXES`]).
    pub fn topic(&self, app: &str) -> String {
        format!("{app}{}", topic_suffix(self.push_type()).unwrap_or(""))
    }
}

impl fmt::Display for TokenKind {
    /// The name, and `:ID` for a Live Activity update token (`liveactivity:ride-42`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let Some(id) = self.activity() {
            write!(f, ":{id}")?;
        }
        Ok(())
    }
}

impl FromStr for TokenKind {
    type Err = KindError;

    /// The inverse of `Display`: a name from the table, or `liveactivity:ID`.
    fn from_str(text: &str) -> Result<Self, KindError> {
        let (name, activity) = match text.split_once(':') {
            Some((name, activity)) => (name, Some(activity)),
            None => (text, None),
        };
        match (name, activity) {
            ("liveactivity", Some(id)) => Self::live_activity(id),
            ("liveactivity", None) => Err(KindError::MissingActivity),
            (_, Some(id)) if KINDS.iter().any(|(n, _, _)| *n == name) => {
                Err(KindError::BadActivity(id.to_owned()))
            }
            (_, Some(_)) => Err(KindError::UnknownName(text.to_owned())),
            ("remote", None) => Ok(TokenKind::Remote),
            ("voip", None) => Ok(TokenKind::Voip),
            ("complication", None) => Ok(TokenKind::Complication),
            ("fileprovider", None) => Ok(TokenKind::FileProvider),
            ("location", None) => Ok(TokenKind::Location),
            ("pushtotalk", None) => Ok(TokenKind::PushToTalk),
            ("liveactivity-start", None) => Ok(TokenKind::LiveActivityStart),
            ("widgets", None) => Ok(TokenKind::Widgets),
            ("controls", None) => Ok(TokenKind::Controls),
            (_, None) => Err(KindError::UnknownName(text.to_owned())),
        }
    }
}

impl serde::Serialize for TokenKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One token an app holds: the app and the kind, written `APP` (the ordinary token) or
/// `APP:KIND` (`com.x.app:voip`, `com.x.app:liveactivity:ride-42`). Bundle ids never contain
/// `:`, so the first one ends the app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppToken {
    /// The bundle id (1..=[`MAX_APP_LEN`] bytes).
    pub app: String,
    /// Which of its tokens.
    pub kind: TokenKind,
}

/// An `APP[:KIND]` that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppTokenError {
    /// The bundle id is empty or over [`MAX_APP_LEN`] bytes.
    #[error("app {0:?} must be 1 to 255 bytes")]
    BadApp(String),
    /// The kind after the `:` is not one.
    #[error("{text:?}: {error}")]
    BadKind {
        /// The whole `APP:KIND`.
        text: String,
        /// Why the kind is not one.
        error: KindError,
    },
}

impl AppToken {
    /// The token of `kind` of `app`.
    pub fn new(app: impl Into<String>, kind: TokenKind) -> Self {
        AppToken {
            app: app.into(),
            kind,
        }
    }

    /// The topic a provider pushes this token to ([`TokenKind::topic`]).
    pub fn topic(&self) -> String {
        self.kind.topic(&self.app)
    }
}

impl From<&str> for AppToken {
    /// The app's ordinary remote-notification token; the text is the bundle id, not parsed
    /// (use `parse` for `APP:KIND`).
    fn from(app: &str) -> Self {
        AppToken::new(app, TokenKind::Remote)
    }
}

impl From<String> for AppToken {
    /// The app's ordinary remote-notification token, as [`From<&str>`].
    fn from(app: String) -> Self {
        AppToken::new(app, TokenKind::Remote)
    }
}

impl fmt::Display for AppToken {
    /// `APP` for the ordinary token, else `APP:KIND`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.app)?;
        if self.kind != TokenKind::Remote {
            write!(f, ":{}", self.kind)?;
        }
        Ok(())
    }
}

impl FromStr for AppToken {
    type Err = AppTokenError;

    /// `APP` or `APP:KIND`.
    fn from_str(text: &str) -> Result<Self, AppTokenError> {
        let (app, kind) = match text.split_once(':') {
            Some((app, kind)) => (
                app,
                kind.parse().map_err(|error| AppTokenError::BadKind {
                    text: text.to_owned(),
                    error,
                })?,
            ),
            None => (text, TokenKind::Remote),
        };
        if app.is_empty() || app.len() > MAX_APP_LEN {
            return Err(AppTokenError::BadApp(app.to_owned()));
        }
        Ok(AppToken::new(app, kind))
    }
}

impl serde::Serialize for AppToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AppToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn sample() -> DeviceToken {
        let mut bytes = [0u8; 32];
        for (i, b) in (0u8..).zip(bytes.iter_mut()) {
            *b = i;
        }
        DeviceToken::from_bytes(bytes)
    }

    #[test]
    fn hex_round_trip_is_lowercase() {
        let token = sample();
        assert_eq!(token.to_hex(), HEX);
        assert_eq!(token.to_string(), HEX);
        assert_eq!(DeviceToken::from_hex(HEX), Ok(token));
        assert_eq!(DeviceToken::from_hex(&HEX.to_uppercase()), Ok(token));
        assert_eq!(HEX.parse::<DeviceToken>(), Ok(token));
    }

    #[test]
    fn from_hex_takes_any_even_length_up_to_200_digits() {
        for digits in [2, 62, 66, 108, 160, 200] {
            let text = "ab".repeat(digits / 2);
            let token = DeviceToken::from_hex(&text).unwrap();
            assert_eq!(token.len(), digits / 2);
            assert_eq!(token.to_hex(), text);
        }
        assert_eq!(DeviceToken::from_hex(""), Err(TokenError::Empty));
        assert_eq!(
            DeviceToken::from_hex("abc"),
            Err(TokenError::BadHexLength(3))
        );
        assert_eq!(
            DeviceToken::from_hex(&"ab".repeat(101)),
            Err(TokenError::BadHexLength(202))
        );
        let bad = format!("zz{}", &HEX[2..]);
        assert_eq!(DeviceToken::from_hex(&bad), Err(TokenError::NotHex));
        // Multi-byte characters are "not hex", never a panic on a char boundary.
        let bad = format!("é{}", &HEX[2..]);
        assert_eq!(DeviceToken::from_hex(&bad), Err(TokenError::NotHex));
        assert_eq!(
            DeviceToken::from_hex(&format!(" {}", &HEX[1..])),
            Err(TokenError::NotHex)
        );
    }

    #[test]
    fn from_slice_keeps_the_binary_rule_and_new_takes_1_to_100() {
        let token = sample();
        assert_eq!(DeviceToken::from_slice(token.as_bytes()), Ok(token));
        assert_eq!(DeviceToken::from_slice(&[]), Err(TokenError::Empty));
        assert_eq!(
            DeviceToken::from_slice(&[1; 31]),
            Err(TokenError::WrongLength(31))
        );
        assert_eq!(
            DeviceToken::from_slice(&[1; 100]),
            Err(TokenError::WrongLength(100))
        );
        assert_eq!(DeviceToken::new(token.as_bytes()), Ok(token));
        assert_eq!(DeviceToken::new(&[]), Err(TokenError::Empty));
        assert_eq!(DeviceToken::new(&[7; 1]).unwrap().as_bytes(), [7]);
        assert_eq!(DeviceToken::new(&[7; 100]).unwrap().len(), 100);
        assert_eq!(DeviceToken::new(&[7; 101]), Err(TokenError::TooLong(101)));
    }

    #[test]
    fn tokens_of_other_lengths_are_other_tokens() {
        let short = DeviceToken::new(&[0; 31]).unwrap();
        let classic = DeviceToken::new(&[0; 32]).unwrap();
        assert_ne!(short, classic);
        assert!(short < classic);
        let mut set = std::collections::HashSet::new();
        assert!(set.insert(short));
        assert!(set.insert(classic));
        assert!(!set.insert(DeviceToken::from_bytes([0; 32])));
    }

    #[test]
    fn debug_is_short() {
        assert_eq!(format!("{:?}", sample()), "DeviceToken(00010203…)");
        assert_eq!(
            format!("{:?}", DeviceToken::new(&[0xAB; 80]).unwrap()),
            "DeviceToken(abababab…; 80 bytes)"
        );
        assert_eq!(
            format!("{:?}", DeviceToken::new(&[1]).unwrap()),
            "DeviceToken(01…; 1 bytes)"
        );
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(TokenError::Empty.to_string(), "device token is empty");
        assert!(TokenError::WrongLength(31).to_string().contains("31"));
        assert!(TokenError::BadHexLength(3).to_string().contains('3'));
        assert!(TokenError::TooLong(101).to_string().contains("101"));
        assert!(TokenError::NotHex.to_string().contains("hexadecimal"));
    }

    #[test]
    fn serde_as_hex_string() {
        let token = sample();
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, format!("\"{HEX}\""));
        let back: DeviceToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back, token);
        assert!(serde_json::from_str::<DeviceToken>("\"abc\"").is_err());
        assert!(serde_json::from_str::<DeviceToken>("42").is_err());
    }

    #[test]
    fn ordering_follows_bytes() {
        let low = DeviceToken::from_bytes([0; 32]);
        let high = DeviceToken::from_bytes([0xFF; 32]);
        assert!(low < high);
    }

    #[test]
    fn every_kind_round_trips_by_name_and_code() {
        let kinds = TokenKind::every("ride-42");
        assert_eq!(kinds[7], TokenKind::LiveActivity("ride-42".into()));
        for (code, kind) in (0u8..).zip(&kinds) {
            assert_eq!(kind.code(), code);
            assert_eq!(kind.to_string().parse::<TokenKind>().as_ref(), Ok(kind));
            let activity = kind.activity().unwrap_or("");
            assert_eq!(TokenKind::from_code(code, activity).as_ref(), Ok(kind));
            assert!(kind.accepts(kind.push_type()), "{kind}");
        }
        assert_eq!(
            TokenKind::from_code(10, ""),
            Err(KindError::UnknownCode(10))
        );
        assert_eq!(
            TokenKind::from_code(LIVE_ACTIVITY_CODE, ""),
            Err(KindError::MissingActivity)
        );
        assert_eq!(
            TokenKind::from_code(1, "x"),
            Err(KindError::BadActivity("x".into()))
        );
        let long = "a".repeat(MAX_ACTIVITY_LEN + 1);
        assert!(format!("liveactivity:{long}").parse::<TokenKind>().is_err());
        assert!("liveactivity".parse::<TokenKind>().is_err());
        assert!("voip:x".parse::<TokenKind>().is_err());
        let err = "pushkit".parse::<TokenKind>().unwrap_err();
        assert!(err.to_string().contains("\"pushkit\""), "{err}");
    }

    #[test]
    fn kinds_take_their_push_types_only() {
        for push_type in ["alert", "background", "mdm"] {
            assert!(TokenKind::Remote.accepts(push_type));
            assert!(!TokenKind::Voip.accepts(push_type));
        }
        assert!(!TokenKind::Remote.accepts("voip"));
        assert!(TokenKind::LiveActivityStart.accepts("liveactivity"));
        assert!(TokenKind::LiveActivity("a".into()).accepts("liveactivity"));
        assert!(!TokenKind::Widgets.accepts("controls"));
        assert_eq!(TokenKind::Remote.topic("com.x"), "com.x");
        assert_eq!(TokenKind::Voip.topic("com.x"), "com.x.voip");
        assert_eq!(
            TokenKind::LiveActivity("a".into()).topic("com.x"),
            "com.x.push-type.liveactivity"
        );
        assert_eq!(TokenKind::Voip.describe(), "PushKit VoIP token");
        assert_eq!(TokenKind::needed_by("nonsense"), None);
    }

    #[test]
    fn app_tokens_parse_and_print() {
        let plain: AppToken = "com.x.app".parse().unwrap();
        assert_eq!(plain, AppToken::from("com.x.app"));
        assert_eq!(plain.to_string(), "com.x.app");
        let voip: AppToken = "com.x.app:voip".parse().unwrap();
        assert_eq!(voip, AppToken::new("com.x.app", TokenKind::Voip));
        assert_eq!(voip.to_string(), "com.x.app:voip");
        assert_eq!(voip.topic(), "com.x.app.voip");
        let ride: AppToken = "com.x.app:liveactivity:ride-42".parse().unwrap();
        assert_eq!(ride.kind, TokenKind::LiveActivity("ride-42".into()));
        assert_eq!(ride.to_string(), "com.x.app:liveactivity:ride-42");
        assert!(matches!(
            ":voip".parse::<AppToken>(),
            Err(AppTokenError::BadApp(_))
        ));
        let err = "com.x:bogus".parse::<AppToken>().unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let json = serde_json::to_string(&ride).unwrap();
        assert_eq!(json, "\"com.x.app:liveactivity:ride-42\"");
        assert_eq!(serde_json::from_str::<AppToken>(&json).unwrap(), ride);
    }
}
