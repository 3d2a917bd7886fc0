//! Validation of one HTTP/2 request's head: method, path and headers (spec §4.3 and §4.4).
//!
//! Pure functions of the request head and the connection's topic policy, so every rule is
//! unit-tested without a socket. The body (payload) and the provider token are checked by the
//! connection after these pass. Every refusal is a [`Rejection`]: Apple's reason and the cause
//! in words (sent as `apns-sim-detail`).
//!
//! Apple does not document the order of its checks. The simulator follows the order of Pushy's
//! mock server (spec §7), with the structural check for repeated headers first:
//!
//! ```text
//! DuplicateHeaders → apns-id → :method → apns-topic → apns-collapse-id → apns-priority
//!   → apns-expiration → apns-push-type (and its topic suffix) → :path / token
//!   → (connection) provider token → payload → (hub) token ownership
//! ```
//!
//! # Push types and topics
//!
//! Each push type but `alert`, `background` and `mdm` needs a topic of the form
//! `<bundle id><suffix>` (table in [`profile::TOPIC_SUFFIXES`]); the app a notification is routed to
//! is the topic without that suffix. Documented choices where Apple is silent:
//!
//! - a suffix-less push type (`alert`, `background`) with a topic that ends in another push
//!   type's suffix is `BadTopic`, as is a suffixed push type whose topic lacks its suffix;
//! - without `apns-push-type` the type is inferred from the topic's suffix (old VoIP
//!   providers send none), else `alert`.
//!
//! # Choices made from the evidence (spec §4.3, §9 item 3)
//!
//! - **Priority**: without `apns-priority` every push gets 10, as Apple documents \[A4\], \[A7\].
//!   `background` with priority 10 is accepted: Apple calls it "an error" \[T8\], \[A13\] but no
//!   source says APNs refuses it (spec §9 item 3), and Apple describes throttling of
//!   background pushes instead. The delivery record and its log line carry a warning
//!   ([`crate::protocol::http2::priority_warning`]).
//! - **An uppercase `apns-id`** is accepted and echoed exactly as sent, unless
//!   [`Rules::accept_uppercase_apns_id`] is off. Apple documents the lowercase form \[A7\], but
//!   APNs itself has answered with uppercase ids it generated (AndrewBarba/apns2#95, 2025),
//!   Pushy's mock parses the id case-insensitively with `UUID.fromString` \[T3\], and Swift's
//!   `UUID().uuidString`, which Swift providers reach for first, is uppercase (APNSwift
//!   lowercases it before sending; others do not). Java's `UUID.toString` and .NET's
//!   `Guid.ToString("D")` are lowercase.
//! - **An empty `apns-collapse-id`** is accepted and means no collapse id. Apple's only rule is
//!   the 64-byte maximum \[A4\], \[A7\], \[A8\]; Pushy's mock checks only that \[T3\]; no source refuses
//!   an empty one. Treating it as absent invents no collapsing.
//! - **Device tokens** of 1 to 100 bytes (2 to 200 hex digits, an even count) are well-formed:
//!   Apple says not to assume a size, warned of up to 100 bytes and 80-byte tokens have been
//!   seen (spec §6). A well-formed token no device holds is `BadDeviceToken` at the hub's
//!   step, like any unknown token.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use uuid::Uuid;

use super::response::{uuid_value, Reason, Rejection};
use crate::pki::profile;
use crate::protocol::token::DeviceToken;

/// The path prefix of the only request Apple's API serves.
pub const DEVICE_PATH: &str = "/3/device/";

/// Longest `apns-collapse-id` Apple accepts, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;

/// Longest topic accepted. Bundle ids are far shorter; the bound keeps hostile headers out of
/// logs and maps.
pub const MAX_TOPIC_LEN: usize = 255;

/// Longest device token accepted on the path, in bytes: Apple's announced maximum (spec §6,
/// WWDC 2015 and the 2018 binary doc).
pub const MAX_TOKEN_BYTES: usize = 100;

/// Most characters of a client's value quoted back in a detail: enough to recognise it, and
/// no way to make a detail (or a log line) long.
const MAX_QUOTED: usize = 48;

/// The request headers the checks read, as names: a `&str` key is parsed again on every
/// lookup.
mod names {
    use http::HeaderName;

    /// `apns-id`.
    pub(super) const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
    /// `apns-topic`.
    pub(super) const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
    /// `apns-collapse-id`.
    pub(super) const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
    /// `apns-priority`.
    pub(super) const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
    /// `apns-expiration`.
    pub(super) const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
    /// `apns-push-type`.
    pub(super) const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
}

/// The values of `apns-push-type` (spec §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    /// A visible notification.
    Alert,
    /// A silent content-available push.
    Background,
    /// A location query (token auth only).
    Location,
    /// A PushKit VoIP call.
    Voip,
    /// A watchOS complication update.
    Complication,
    /// A File Provider change.
    Fileprovider,
    /// An MDM check-in request.
    Mdm,
    /// A Live Activity update.
    Liveactivity,
    /// A Push-to-Talk push.
    Pushtotalk,
    /// A widget reload.
    Widgets,
    /// A control reload.
    Controls,
}

impl PushType {
    /// Every push type, for parsing and inference.
    pub const ALL: [PushType; 11] = [
        PushType::Alert,
        PushType::Background,
        PushType::Location,
        PushType::Voip,
        PushType::Complication,
        PushType::Fileprovider,
        PushType::Mdm,
        PushType::Liveactivity,
        PushType::Pushtotalk,
        PushType::Widgets,
        PushType::Controls,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Location => "location",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::Fileprovider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::Liveactivity => "liveactivity",
            PushType::Pushtotalk => "pushtotalk",
            PushType::Widgets => "widgets",
            PushType::Controls => "controls",
        }
    }

    /// Parses a header value exactly (Apple's values are lowercase).
    pub fn parse(value: &str) -> Option<PushType> {
        PushType::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// The suffix the topic must carry after the bundle id, from the one table of Apple's
    /// topic suffixes ([`profile::TOPIC_SUFFIXES`]); `None` for the types whose topic is the
    /// bundle id itself (alert, background) or free-form (mdm: the MDM certificate's UID).
    pub fn suffix(self) -> Option<&'static str> {
        profile::topic_suffix(self.as_str())
    }

    /// The push type whose suffix ends `topic` after a non-empty bundle id, if any.
    pub fn from_topic_suffix(topic: &str) -> Option<PushType> {
        profile::push_type_of_topic(topic).and_then(PushType::parse)
    }

    /// The payload limit for this push type: 5120 bytes for VoIP, 4096 for the rest.
    pub fn payload_limit(self) -> usize {
        match self {
            PushType::Voip => crate::protocol::payload::MAX_PAYLOAD_HTTP2_VOIP,
            _ => crate::protocol::payload::MAX_PAYLOAD_HTTP2,
        }
    }
}

/// Where a connection's topics come from.
#[derive(Debug, Clone, Copy)]
pub enum TopicPolicy<'a> {
    /// Certificate auth: the certificate's topics (its UID first, then the topic list).
    /// Without `apns-topic` a certificate with exactly one topic supplies it.
    Certificate(&'a [String]),
    /// Token auth: `apns-topic` is required; the signing key's limits are checked later.
    Token,
}

/// The settable rules of the request checks (from [`crate::settings::Settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// An `apns-id` with uppercase hex digits is accepted (and echoed as sent); off, it is
    /// `BadMessageId`, the letter of Apple's documentation. See the module docs for the
    /// evidence.
    pub accept_uppercase_apns_id: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            accept_uppercase_apns_id: true,
        }
    }
}

/// The `apns-id` a request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsId {
    /// The id, for the delivery log and the device.
    pub uuid: Uuid,
    /// The `apns-id` response header: the request's value exactly as sent, or the generated
    /// id in lowercase.
    pub header: HeaderValue,
}

impl ApnsId {
    /// A fresh id, as APNs generates when the request has none.
    pub fn generate() -> Self {
        let uuid = Uuid::new_v4();
        ApnsId {
            uuid,
            header: uuid_value(uuid),
        }
    }
}

/// A request head that passed every header and path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Target device (1 to 100 bytes; the hub answers one nobody holds `BadDeviceToken`).
    pub token: DeviceToken,
    /// The full `apns-topic` (or the certificate's default topic).
    pub topic: String,
    /// The app: the topic without its push type's suffix.
    pub bundle: String,
    /// The push type as sent (`None` when the header was absent).
    pub push_type_header: Option<PushType>,
    /// The push type that applies (sent, or inferred from the topic).
    pub push_type: PushType,
    /// `apns-collapse-id` (`None` when absent or empty).
    pub collapse_id: Option<String>,
    /// `apns-expiration`: `Some(0)` = deliver now or never; `None` when absent, which APNs
    /// answers with its default storage policy (spec §3), not with 0.
    pub expiry: Option<u32>,
    /// `apns-priority`, else 10.
    pub priority: u8,
}

/// Checks a request head. Returns the `apns-id` to answer with (the request's when it is
/// valid, else a fresh one) and the verdict.
pub fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    policy: TopicPolicy<'_>,
    rules: Rules,
) -> (ApnsId, Result<Checked, Rejection>) {
    if let Some(name) = duplicated(headers) {
        let count = headers.get_all(name).iter().count();
        let detail = format!("{name} appears {count} times; APNs allows it once");
        return (
            ApnsId::generate(),
            Err(Rejection::new(Reason::DuplicateHeaders, detail)),
        );
    }
    let apns_id = match headers.get(names::APNS_ID) {
        None => ApnsId::generate(),
        Some(v) => match parse_apns_id(v.as_bytes(), rules) {
            Ok(uuid) => ApnsId {
                uuid,
                header: v.clone(),
            },
            Err(detail) => {
                let rejection = Rejection::new(Reason::BadMessageId, detail);
                return (ApnsId::generate(), Err(rejection));
            }
        },
    };
    (apns_id, check_rest(method, uri, headers, policy))
}

fn check_rest(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    policy: TopicPolicy<'_>,
) -> Result<Checked, Rejection> {
    if method != Method::POST {
        let detail = format!("method {}; APNs accepts only POST", quote(method.as_str()));
        return Err(Rejection::new(Reason::MethodNotAllowed, detail));
    }
    let topic = topic(headers.get(names::APNS_TOPIC).map(|v| v.as_bytes()), policy)?;
    let collapse_id = match headers.get(names::APNS_COLLAPSE_ID) {
        None => None,
        Some(v) => collapse_id(v.as_bytes())?,
    };
    let priority = match headers.get(names::APNS_PRIORITY) {
        None => 10,
        Some(v) => priority(v.as_bytes())?,
    };
    let expiry = match headers.get(names::APNS_EXPIRATION) {
        None => None,
        Some(v) => Some(expiration(v.as_bytes())?),
    };
    let push_type_header = match headers.get(names::APNS_PUSH_TYPE) {
        None => None,
        Some(v) => Some(push_type(v.as_bytes())?),
    };
    let (push_type, bundle) = push_type_and_bundle(push_type_header, &topic)?;
    let token = device_token(uri)?;
    Ok(Checked {
        token,
        topic,
        bundle,
        push_type_header,
        push_type,
        collapse_id,
        expiry,
        priority,
    })
}

/// A client's value for a detail: lossy UTF-8, at most [`MAX_QUOTED`] characters, in quotes.
fn quote(value: impl AsRef<[u8]>) -> String {
    let text = String::from_utf8_lossy(value.as_ref());
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if text.chars().nth(MAX_QUOTED).is_some() {
        quoted.push_str("...");
    }
    format!("{quoted:?}")
}

/// The first `apns-*` header (or `authorization`) that appears more than once.
fn duplicated(headers: &HeaderMap) -> Option<&HeaderName> {
    // The usual head repeats no header at all: as many names as values.
    if headers.keys_len() == headers.len() {
        return None;
    }
    headers.keys().find(|name| {
        let n = name.as_str();
        (n.starts_with("apns-") || n == "authorization")
            && headers.get_all(*name).iter().nth(1).is_some()
    })
}

/// A hyphenated UUID (`8-4-4-4-12`), as Apple documents `apns-id`; uppercase hex digits only
/// when `rules` accept them. The `Err` is the detail.
pub fn parse_apns_id(value: &[u8], rules: Rules) -> Result<Uuid, String> {
    let bad = || {
        format!(
            "apns-id {} is not a UUID in the 8-4-4-4-12 form, e.g. 123e4567-e89b-12d3-a456-4266554400a0",
            quote(value)
        )
    };
    if value.len() != 36 {
        return Err(bad());
    }
    let hyphenated = value.iter().enumerate().all(|(i, &b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    if !hyphenated {
        return Err(bad());
    }
    if !rules.accept_uppercase_apns_id && value.iter().any(u8::is_ascii_uppercase) {
        return Err(format!(
            "apns-id {} has uppercase hex digits; Apple documents lowercase (the simulator's accept_uppercase_apns_id setting is off)",
            quote(value)
        ));
    }
    Uuid::try_parse_ascii(value).map_err(|_| bad())
}

fn topic(value: Option<&[u8]>, policy: TopicPolicy<'_>) -> Result<String, Rejection> {
    let Some(value) = value else {
        return match policy {
            // The certificate's own topic stands in for the header only when it could have
            // been sent as one; the PKI never mints an empty or overlong topic, but a
            // certificate from elsewhere may carry one (found by fuzz/http2_request).
            TopicPolicy::Certificate([only]) if !only.is_empty() && only.len() <= MAX_TOPIC_LEN => {
                Ok(only.clone())
            }
            TopicPolicy::Certificate([only]) => Err(Rejection::new(
                Reason::MissingTopic,
                format!(
                    "no apns-topic, and the certificate's only topic is {} bytes, not a topic \
                     (1 to {MAX_TOPIC_LEN} bytes); name one",
                    only.len()
                ),
            )),
            TopicPolicy::Certificate(topics) => Err(Rejection::new(
                Reason::MissingTopic,
                format!(
                    "no apns-topic, and the certificate has {} topics ({}); name one",
                    topics.len(),
                    list(topics)
                ),
            )),
            TopicPolicy::Token => Err(Rejection::new(
                Reason::MissingTopic,
                "no apns-topic; token-authenticated requests must name the topic",
            )),
        };
    };
    let bad = |why: String| Err(Rejection::new(Reason::BadTopic, why));
    if value.is_empty() {
        return bad("apns-topic is empty".into());
    }
    if value.len() > MAX_TOPIC_LEN {
        return bad(format!(
            "apns-topic is {} bytes; at most {MAX_TOPIC_LEN}",
            value.len()
        ));
    }
    if let Some(b) = value
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
    {
        return bad(format!(
            "apns-topic {} has the byte {:?}; a topic is letters, digits, '.', '-' and '_'",
            quote(value),
            char::from(*b)
        ));
    }
    let topic = String::from_utf8_lossy(value).into_owned();
    if let TopicPolicy::Certificate(topics) = policy {
        if !topics.contains(&topic) {
            let detail = format!(
                "the certificate does not cover topic {topic}; it covers {}",
                list(topics)
            );
            return Err(Rejection::new(Reason::TopicDisallowed, detail));
        }
    }
    Ok(topic)
}

/// A certificate's topics for a detail, bounded like every quoted value.
fn list(topics: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = topics
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if topics.len() > SHOWN {
        text.push_str(&format!(" and {} more", topics.len() - SHOWN));
    }
    text
}

/// At most [`MAX_COLLAPSE_ID`] bytes of UTF-8; empty means none (see the module docs).
fn collapse_id(value: &[u8]) -> Result<Option<String>, Rejection> {
    if value.len() > MAX_COLLAPSE_ID {
        let detail = format!(
            "apns-collapse-id is {} bytes; the limit is {MAX_COLLAPSE_ID}",
            value.len()
        );
        return Err(Rejection::new(Reason::BadCollapseId, detail));
    }
    if value.is_empty() {
        return Ok(None);
    }
    match String::from_utf8(value.to_vec()) {
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(Rejection::new(
            Reason::BadCollapseId,
            format!("apns-collapse-id {} is not UTF-8", quote(value)),
        )),
    }
}

fn priority(value: &[u8]) -> Result<u8, Rejection> {
    match value {
        b"10" => Ok(10),
        b"5" => Ok(5),
        b"1" => Ok(1),
        _ => Err(Rejection::new(
            Reason::BadPriority,
            format!(
                "apns-priority {} is not 10, 5 or 1",
                String::from_utf8_lossy(value)
                    .chars()
                    .take(MAX_QUOTED)
                    .collect::<String>()
            ),
        )),
    }
}

/// UNIX seconds as plain decimal digits, within the 32 bits the simulator stores.
fn expiration(value: &[u8]) -> Result<u32, Rejection> {
    let parsed = if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        None
    } else {
        std::str::from_utf8(value)
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
    };
    parsed.ok_or_else(|| {
        Rejection::new(
            Reason::BadExpirationDate,
            format!(
                "apns-expiration {} is not a UNIX time in seconds (decimal digits, at most {})",
                quote(value),
                u32::MAX
            ),
        )
    })
}

fn push_type(value: &[u8]) -> Result<PushType, Rejection> {
    std::str::from_utf8(value)
        .ok()
        .and_then(PushType::parse)
        .ok_or_else(|| {
            let known: Vec<&str> = PushType::ALL.iter().map(|t| t.as_str()).collect();
            Rejection::new(
                Reason::InvalidPushType,
                format!(
                    "apns-push-type {} is not one of {}",
                    quote(value),
                    known.join(", ")
                ),
            )
        })
}

fn push_type_and_bundle(
    sent: Option<PushType>,
    topic: &str,
) -> Result<(PushType, String), Rejection> {
    let by_suffix = PushType::from_topic_suffix(topic);
    let push_type = match sent {
        Some(t) => t,
        None => by_suffix.unwrap_or(PushType::Alert),
    };
    let bundle = match push_type.suffix() {
        Some(suffix) => {
            if by_suffix != Some(push_type) {
                let detail = format!(
                    "push type {} needs a topic <bundle id>{suffix}; {topic} is not one",
                    push_type.as_str()
                );
                return Err(Rejection::new(Reason::BadTopic, detail));
            }
            topic[..topic.len() - suffix.len()].to_owned()
        }
        None if push_type == PushType::Mdm => topic.to_owned(),
        None => {
            if let Some(other) = by_suffix {
                let detail = format!(
                    "topic {topic} ends in {}, the suffix of push type {}, but the push type is {}",
                    other.suffix().unwrap_or_default(),
                    other.as_str(),
                    push_type.as_str()
                );
                return Err(Rejection::new(Reason::BadTopic, detail));
            }
            topic.to_owned()
        }
    };
    Ok((push_type, bundle))
}

/// The path's token: 1 to 100 bytes as hex digits (spec §6: tokens have no fixed size).
fn device_token(uri: &Uri) -> Result<DeviceToken, Rejection> {
    if uri.query().is_some() {
        let detail = "the :path has a query string; APNs serves /3/device/<token> only";
        return Err(Rejection::new(Reason::BadPath, detail));
    }
    let Some(rest) = uri.path().strip_prefix(DEVICE_PATH) else {
        let detail = format!(":path {} is not {DEVICE_PATH}<token>", quote(uri.path()));
        return Err(Rejection::new(Reason::BadPath, detail));
    };
    if rest.is_empty() {
        return Err(Rejection::new(
            Reason::MissingDeviceToken,
            format!("no device token after {DEVICE_PATH}"),
        ));
    }
    let bad = |why: String| Err(Rejection::new(Reason::BadDeviceToken, why));
    if let Some(at) = rest.bytes().position(|b| !b.is_ascii_hexdigit()) {
        let c = rest[at..].chars().next().unwrap_or('?');
        return bad(format!(
            "token {} has {c:?} at position {at}; a token is hex digits",
            quote(rest)
        ));
    }
    let digits = rest.len();
    if digits % 2 == 1 {
        return bad(format!(
            "token has {digits} hex digits, an odd count; APNs tokens are whole bytes, usually 64 digits"
        ));
    }
    let len = digits / 2;
    if len > MAX_TOKEN_BYTES {
        return bad(format!(
            "token has {digits} hex digits ({len} bytes); APNs tokens are 1 to {MAX_TOKEN_BYTES} bytes"
        ));
    }
    DeviceToken::from_hex(rest).map_err(|e| {
        Rejection::new(
            Reason::BadDeviceToken,
            format!("token {}: {e}", quote(rest)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const ID: &str = "6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7d";

    fn uri(path: &str) -> Uri {
        path.parse().unwrap()
    }

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// The verdict's reason, for the rules whose detail another test looks at.
    fn reason_of<T>(verdict: Result<T, Rejection>) -> Result<T, Reason> {
        verdict.map_err(|r| {
            assert!(!r.detail.is_empty(), "{:?} has no detail", r.reason);
            r.reason
        })
    }

    fn go(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        policy: TopicPolicy<'_>,
    ) -> (ApnsId, Result<Checked, Reason>) {
        let (id, verdict) = check(method, uri, headers, policy, Rules::default());
        (id, reason_of(verdict))
    }

    fn run_full(pairs: &[(&str, &str)]) -> Result<Checked, Rejection> {
        check(
            &Method::POST,
            &uri(&format!("{DEVICE_PATH}{TOKEN}")),
            &head(pairs),
            TopicPolicy::Token,
            Rules::default(),
        )
        .1
    }

    fn run(pairs: &[(&str, &str)]) -> Result<Checked, Reason> {
        reason_of(run_full(pairs))
    }

    fn detail(pairs: &[(&str, &str)]) -> String {
        run_full(pairs).unwrap_err().detail
    }

    #[test]
    fn minimal_token_request_passes_with_defaults() {
        let c = run(&[("apns-topic", "com.example.app")]).unwrap();
        assert_eq!(c.token.to_hex(), TOKEN);
        assert_eq!(c.token.as_bytes().len(), 32);
        assert_eq!(c.topic, "com.example.app");
        assert_eq!(c.bundle, "com.example.app");
        assert_eq!(c.push_type, PushType::Alert);
        assert_eq!(c.push_type_header, None);
        assert_eq!(c.priority, 10);
        assert_eq!(c.expiry, None, "absent, not 0");
        assert_eq!(c.collapse_id, None);
    }

    #[test]
    fn apns_id_is_echoed_as_sent_or_generated() {
        let path = uri(&format!("/3/device/{TOKEN}"));
        for sent in [
            ID.to_owned(),
            ID.to_uppercase(),
            "6b6C6a5e-0F4e-4f8b-9d4c-2f8e5a1b3c7d".into(),
        ] {
            let h = head(&[("apns-topic", "a.b"), ("apns-id", &sent)]);
            let (id, r) = go(&Method::POST, &path, &h, TopicPolicy::Token);
            assert_eq!(id.uuid.to_string(), ID);
            assert_eq!(id.header, sent.as_str(), "echoed exactly as sent");
            assert!(r.is_ok());
        }
        for bad in [
            "6b6c6a5e0f4e4f8b9d4c2f8e5a1b3c7d",
            "x",
            "{6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7}",
            "6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7g",
        ] {
            let h = head(&[("apns-topic", "a.b"), ("apns-id", bad)]);
            let (id, r) = check(
                &Method::POST,
                &path,
                &h,
                TopicPolicy::Token,
                Rules::default(),
            );
            let r = r.unwrap_err();
            assert_eq!(r.reason, Reason::BadMessageId, "{bad}");
            assert!(r.detail.contains("8-4-4-4-12"), "{}", r.detail);
            assert_ne!(id.uuid.to_string(), ID);
            assert_eq!(
                id.header,
                id.uuid.to_string().as_str(),
                "generated ids are lowercase"
            );
        }
        // Without the setting, the letter of Apple's documentation.
        let strict = Rules {
            accept_uppercase_apns_id: false,
        };
        let h = head(&[("apns-topic", "a.b"), ("apns-id", &ID.to_uppercase())]);
        let (_, r) = check(&Method::POST, &path, &h, TopicPolicy::Token, strict);
        let r = r.unwrap_err();
        assert_eq!(r.reason, Reason::BadMessageId);
        assert!(r.detail.contains("uppercase"), "{}", r.detail);
        let h = head(&[("apns-topic", "a.b"), ("apns-id", ID)]);
        assert!(check(&Method::POST, &path, &h, TopicPolicy::Token, strict)
            .1
            .is_ok());
    }

    #[test]
    fn repeated_apns_headers_are_duplicates() {
        assert_eq!(
            detail(&[("apns-topic", "a.b"), ("apns-topic", "a.b")]),
            "apns-topic appears 2 times; APNs allows it once"
        );
        assert_eq!(
            run(&[("apns-topic", "a.b"), ("apns-topic", "a.b")]),
            Err(Reason::DuplicateHeaders)
        );
        assert_eq!(
            run(&[
                ("apns-topic", "a.b"),
                ("apns-priority", "10"),
                ("apns-priority", "5")
            ]),
            Err(Reason::DuplicateHeaders)
        );
        assert_eq!(
            run(&[
                ("apns-topic", "a.b"),
                ("authorization", "bearer x"),
                ("authorization", "bearer y")
            ]),
            Err(Reason::DuplicateHeaders)
        );
        // Other headers may repeat.
        assert!(run(&[("apns-topic", "a.b"), ("x-trace", "1"), ("x-trace", "2")]).is_ok());
    }

    #[test]
    fn method_and_path_rules() {
        let h = head(&[("apns-topic", "a.b")]);
        let go = |m: Method, p: &str| {
            go(&m, &uri(p), &h, TopicPolicy::Token)
                .1
                .map(|c| c.token.to_hex())
        };
        assert_eq!(
            go(Method::GET, &format!("/3/device/{TOKEN}")),
            Err(Reason::MethodNotAllowed)
        );
        assert_eq!(go(Method::PUT, "/nope"), Err(Reason::MethodNotAllowed));
        assert_eq!(go(Method::POST, "/3/devices/abc"), Err(Reason::BadPath));
        assert_eq!(go(Method::POST, "/3/device"), Err(Reason::BadPath));
        assert_eq!(
            go(Method::POST, &format!("/3/device/{TOKEN}?x=1")),
            Err(Reason::BadPath)
        );
        assert_eq!(
            go(Method::POST, "/3/device/"),
            Err(Reason::MissingDeviceToken)
        );
        // Two bytes: well-formed; no device holds it, which the hub's step answers.
        assert_eq!(go(Method::POST, "/3/device/abcd"), Ok("abcd".to_owned()));
        assert_eq!(
            go(Method::POST, "/3/device/abc"),
            Err(Reason::BadDeviceToken)
        );
        assert_eq!(
            go(Method::POST, &format!("/3/device/{}zz", &TOKEN[2..])),
            Err(Reason::BadDeviceToken)
        );
        assert_eq!(
            go(Method::POST, &format!("/3/device/{TOKEN}/x")),
            Err(Reason::BadDeviceToken)
        );
        assert_eq!(
            go(Method::POST, &format!("/3/device/{}", TOKEN.to_uppercase())),
            Ok(TOKEN.to_owned())
        );
    }

    #[test]
    fn tokens_of_1_to_100_bytes_are_well_formed() {
        let h = head(&[("apns-topic", "a.b")]);
        let path = |digits: usize| uri(&format!("/3/device/{}", "ab".repeat(digits / 2)));
        for digits in [2, 64, 108, 160, 200] {
            let c = go(&Method::POST, &path(digits), &h, TopicPolicy::Token)
                .1
                .unwrap();
            assert_eq!(c.token.as_bytes().len(), digits / 2, "{digits}");
        }
        let refused = |p: &str| {
            check(
                &Method::POST,
                &uri(p),
                &h,
                TopicPolicy::Token,
                Rules::default(),
            )
            .1
            .unwrap_err()
        };
        let odd = refused(&format!("/3/device/{}", &TOKEN[1..]));
        assert_eq!(odd.reason, Reason::BadDeviceToken);
        assert!(
            odd.detail
                .starts_with("token has 63 hex digits, an odd count"),
            "{}",
            odd.detail
        );
        let long = refused(&format!("/3/device/{}", "ab".repeat(101)));
        assert_eq!(long.reason, Reason::BadDeviceToken);
        assert!(
            long.detail.contains("202 hex digits (101 bytes)"),
            "{}",
            long.detail
        );
        let not_hex = refused("/3/device/zz-not-a-token");
        assert!(
            not_hex.detail.contains("'z' at position 0"),
            "{}",
            not_hex.detail
        );
        let wide = refused(&format!("/3/device/{}%C3%A9", &TOKEN[..62]));
        assert_eq!(
            wide.reason,
            Reason::BadDeviceToken,
            "escaped bytes are not hex"
        );
    }

    #[test]
    fn topic_rules_for_token_auth() {
        assert_eq!(run(&[]), Err(Reason::MissingTopic));
        assert_eq!(run(&[("apns-topic", "")]), Err(Reason::BadTopic));
        assert_eq!(run(&[("apns-topic", "com example")]), Err(Reason::BadTopic));
        assert_eq!(
            run(&[("apns-topic", &"a".repeat(256))]),
            Err(Reason::BadTopic)
        );
    }

    #[test]
    fn topic_rules_for_certificates() {
        let one = vec!["com.solo".to_owned()];
        let many = vec![
            "com.example.app".to_owned(),
            "com.example.app.voip".to_owned(),
            "com.example.app.complication".to_owned(),
        ];
        let go = |topics: &[String], pairs: &[(&str, &str)]| {
            go(
                &Method::POST,
                &uri(&format!("/3/device/{TOKEN}")),
                &head(pairs),
                TopicPolicy::Certificate(topics),
            )
            .1
        };
        assert_eq!(go(&one, &[]).unwrap().topic, "com.solo");
        // A certificate whose only topic is empty (or too long) does not stand in for a
        // missing header (fuzz/corpus/http2_request/regression-empty-cert-topic).
        assert_eq!(go(&[String::new()], &[]), Err(Reason::MissingTopic));
        assert_eq!(go(&["a".repeat(256)], &[]), Err(Reason::MissingTopic));
        assert_eq!(go(&many, &[]), Err(Reason::MissingTopic));
        let missing = check(
            &Method::POST,
            &uri(&format!("/3/device/{TOKEN}")),
            &head(&[]),
            TopicPolicy::Certificate(&many),
            Rules::default(),
        )
        .1
        .unwrap_err();
        assert!(
            missing
                .detail
                .contains("3 topics (com.example.app, com.example.app.voip"),
            "{}",
            missing.detail
        );
        assert_eq!(
            go(&many, &[("apns-topic", "com.other")]),
            Err(Reason::TopicDisallowed)
        );
        let voip = go(
            &many,
            &[
                ("apns-topic", "com.example.app.voip"),
                ("apns-push-type", "voip"),
            ],
        )
        .unwrap();
        assert_eq!(voip.bundle, "com.example.app");
        assert_eq!(voip.push_type.payload_limit(), 5120);
        // A certificate without the topic list cannot send VoIP.
        assert_eq!(
            go(
                &one,
                &[("apns-topic", "com.solo.voip"), ("apns-push-type", "voip")]
            ),
            Err(Reason::TopicDisallowed)
        );
    }

    #[test]
    fn every_topic_suffix_names_a_push_type() {
        for (name, suffix) in profile::TOPIC_SUFFIXES {
            let push_type = PushType::parse(name).expect(name);
            assert_eq!(push_type.suffix(), Some(*suffix));
        }
    }

    #[test]
    fn push_types_and_suffixes() {
        let cases = [
            ("alert", "com.x", "com.x"),
            ("background", "com.x", "com.x"),
            ("location", "com.x.location-query", "com.x"),
            ("voip", "com.x.voip", "com.x"),
            ("complication", "com.x.complication", "com.x"),
            ("fileprovider", "com.x.pushkit.fileprovider", "com.x"),
            (
                "mdm",
                "com.apple.mgmt.External.abc",
                "com.apple.mgmt.External.abc",
            ),
            ("liveactivity", "com.x.push-type.liveactivity", "com.x"),
            ("pushtotalk", "com.x.voip-ptt", "com.x"),
            ("widgets", "com.x.push-type.widgets", "com.x"),
            ("controls", "com.x.push-type.controls", "com.x"),
        ];
        for (kind, topic, bundle) in cases {
            let c = run(&[
                ("apns-topic", topic),
                ("apns-push-type", kind),
                ("apns-priority", "5"),
            ])
            .unwrap();
            assert_eq!(c.bundle, bundle, "{kind}");
            assert_eq!(c.push_type.as_str(), kind);
            assert_eq!(c.push_type_header.map(PushType::as_str), Some(kind));
        }
        assert_eq!(
            run(&[("apns-topic", "com.x"), ("apns-push-type", "voip")]),
            Err(Reason::BadTopic)
        );
        assert_eq!(
            run(&[("apns-topic", "com.x.voip"), ("apns-push-type", "alert")]),
            Err(Reason::BadTopic)
        );
        assert_eq!(
            run(&[("apns-topic", ".voip"), ("apns-push-type", "voip")]),
            Err(Reason::BadTopic)
        );
        assert_eq!(
            run(&[("apns-topic", "com.x.voip-ptt"), ("apns-push-type", "voip")]),
            Err(Reason::BadTopic)
        );
        assert_eq!(
            run(&[("apns-topic", "com.x"), ("apns-push-type", "Alert")]),
            Err(Reason::InvalidPushType)
        );
        assert_eq!(
            run(&[("apns-topic", "com.x"), ("apns-push-type", "sms")]),
            Err(Reason::InvalidPushType)
        );
        // Inferred from the suffix when the header is absent.
        let c = run(&[("apns-topic", "com.x.voip")]).unwrap();
        assert_eq!(
            (c.push_type, c.push_type_header, c.bundle.as_str()),
            (PushType::Voip, None, "com.x")
        );
    }

    #[test]
    fn priority_rules() {
        let p = |pairs: &[(&str, &str)]| run(pairs).map(|c| c.priority);
        assert_eq!(p(&[("apns-topic", "a.b"), ("apns-priority", "5")]), Ok(5));
        assert_eq!(p(&[("apns-topic", "a.b"), ("apns-priority", "1")]), Ok(1));
        assert_eq!(p(&[("apns-topic", "a.b"), ("apns-priority", "10")]), Ok(10));
        for bad in ["0", "7", "010", " 10", "high", ""] {
            assert_eq!(
                p(&[("apns-topic", "a.b"), ("apns-priority", bad)]),
                Err(Reason::BadPriority),
                "{bad:?}"
            );
        }
        assert_eq!(
            detail(&[("apns-topic", "a.b"), ("apns-priority", "7")]),
            "apns-priority 7 is not 10, 5 or 1"
        );
        // Apple's documented default is 10 for every push type, background included; and
        // background with 10 is accepted (the hub records a warning).
        assert_eq!(
            p(&[("apns-topic", "a.b"), ("apns-push-type", "background")]),
            Ok(10)
        );
        assert_eq!(
            p(&[
                ("apns-topic", "a.b"),
                ("apns-push-type", "background"),
                ("apns-priority", "10")
            ]),
            Ok(10)
        );
    }

    #[test]
    fn expiration_and_collapse_id_rules() {
        let e = |v: &str| run(&[("apns-topic", "a.b"), ("apns-expiration", v)]).map(|c| c.expiry);
        assert_eq!(e("0"), Ok(Some(0)));
        assert_eq!(e("1700000000"), Ok(Some(1_700_000_000)));
        assert_eq!(e("4294967295"), Ok(Some(u32::MAX)));
        for bad in ["-1", "4294967296", "1.5", "soon", "", "+5", "99999999999"] {
            assert_eq!(e(bad), Err(Reason::BadExpirationDate), "{bad:?}");
        }
        let c =
            |v: &str| run(&[("apns-topic", "a.b"), ("apns-collapse-id", v)]).map(|c| c.collapse_id);
        assert_eq!(c(&"x".repeat(64)), Ok(Some("x".repeat(64))));
        assert_eq!(c(&"x".repeat(65)), Err(Reason::BadCollapseId));
        assert_eq!(
            detail(&[("apns-topic", "a.b"), ("apns-collapse-id", &"x".repeat(65))]),
            "apns-collapse-id is 65 bytes; the limit is 64"
        );
        // Empty: no collapse id (no source refuses it).
        assert_eq!(c(""), Ok(None));
    }

    #[test]
    fn check_order_follows_the_documented_sequence() {
        // Bad method beats a bad path and a missing topic.
        let h = head(&[]);
        assert_eq!(
            go(&Method::GET, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::MethodNotAllowed)
        );
        // A bad topic beats a bad priority, which beats a bad path.
        let h = head(&[("apns-topic", "a b"), ("apns-priority", "3")]);
        assert_eq!(
            go(&Method::POST, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::BadTopic)
        );
        let h = head(&[("apns-topic", "a.b"), ("apns-priority", "3")]);
        assert_eq!(
            go(&Method::POST, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::BadPriority)
        );
    }
}
