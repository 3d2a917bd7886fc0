//! Validation of one HTTP/2 request's head: method, path and headers (spec §4.3 and §4.4).
//!
//! Pure functions of the request head and the connection's topic policy, so every rule is
//! unit-tested without a socket. The body (payload) and the provider token are checked by the
//! connection after these pass.
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
//!   providers send none), else `alert`;
//! - `background` with priority 10 is `BadPriority` (Apple calls it "an error" without naming
//!   the answer; rejecting it is the strict choice); without `apns-priority` a background
//!   push gets 5 and every other push 10;
//! - `apns-id` must be the canonical lowercase form Apple documents; uppercase is
//!   `BadMessageId`;
//! - an empty `apns-collapse-id` is `BadCollapseId`, like one over 64 bytes.

use http::{HeaderMap, Method, Uri};
use uuid::Uuid;

use super::response::Reason;
use crate::pki::profile;
use crate::protocol::token::DeviceToken;

/// The path prefix of the only request Apple's API serves.
pub const DEVICE_PATH: &str = "/3/device/";

/// Longest `apns-collapse-id` Apple accepts, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;

/// Longest topic accepted. Bundle ids are far shorter; the bound keeps hostile headers out of
/// logs and maps.
pub const MAX_TOPIC_LEN: usize = 255;

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

/// A request head that passed every header and path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Target device.
    pub token: DeviceToken,
    /// The full `apns-topic` (or the certificate's default topic).
    pub topic: String,
    /// The app: the topic without its push type's suffix.
    pub bundle: String,
    /// The push type as sent (`None` when the header was absent).
    pub push_type_header: Option<PushType>,
    /// The push type that applies (sent, or inferred from the topic).
    pub push_type: PushType,
    /// `apns-collapse-id`.
    pub collapse_id: Option<String>,
    /// `apns-expiration`: `Some(0)` = deliver now or never; `None` when absent, which APNs
    /// answers with its default storage policy (spec §3), not with 0.
    pub expiry: Option<u32>,
    /// `apns-priority` or its default.
    pub priority: u8,
}

/// Checks a request head. Returns the `apns-id` to answer with (the request's when it is
/// valid, else a fresh one) and the verdict.
pub fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    policy: TopicPolicy<'_>,
) -> (Uuid, Result<Checked, Reason>) {
    if has_duplicates(headers) {
        return (Uuid::new_v4(), Err(Reason::DuplicateHeaders));
    }
    let apns_id = match headers.get("apns-id") {
        None => Uuid::new_v4(),
        Some(v) => match parse_apns_id(v.as_bytes()) {
            Some(id) => id,
            None => return (Uuid::new_v4(), Err(Reason::BadMessageId)),
        },
    };
    (apns_id, check_rest(method, uri, headers, policy))
}

fn check_rest(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    policy: TopicPolicy<'_>,
) -> Result<Checked, Reason> {
    if method != Method::POST {
        return Err(Reason::MethodNotAllowed);
    }
    let topic = topic(headers.get("apns-topic").map(|v| v.as_bytes()), policy)?;
    let collapse_id = match headers.get("apns-collapse-id") {
        None => None,
        Some(v) => Some(collapse_id(v.as_bytes()).ok_or(Reason::BadCollapseId)?),
    };
    let priority = match headers.get("apns-priority") {
        None => None,
        Some(v) => Some(priority(v.as_bytes()).ok_or(Reason::BadPriority)?),
    };
    let expiry = match headers.get("apns-expiration") {
        None => None,
        Some(v) => Some(expiration(v.as_bytes()).ok_or(Reason::BadExpirationDate)?),
    };
    let push_type_header = match headers.get("apns-push-type") {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(PushType::parse)
                .ok_or(Reason::InvalidPushType)?,
        ),
    };
    let (push_type, bundle) = push_type_and_bundle(push_type_header, &topic)?;
    let priority = match (push_type, priority) {
        (PushType::Background, Some(10)) => return Err(Reason::BadPriority),
        (_, Some(p)) => p,
        (PushType::Background, None) => 5,
        (_, None) => 10,
    };
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

/// True when an `apns-*` header or `authorization` appears more than once.
fn has_duplicates(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let n = name.as_str();
        (n.starts_with("apns-") || n == "authorization")
            && headers.get_all(name).iter().nth(1).is_some()
    })
}

/// A canonical lowercase hyphenated UUID (`8-4-4-4-12`), as Apple documents `apns-id`.
pub fn parse_apns_id(value: &[u8]) -> Option<Uuid> {
    if value.len() != 36 {
        return None;
    }
    let canonical = value.iter().enumerate().all(|(i, &b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    });
    if !canonical {
        return None;
    }
    Uuid::try_parse_ascii(value).ok()
}

fn topic(value: Option<&[u8]>, policy: TopicPolicy<'_>) -> Result<String, Reason> {
    let Some(value) = value else {
        return match policy {
            TopicPolicy::Certificate([only]) => Ok(only.clone()),
            _ => Err(Reason::MissingTopic),
        };
    };
    let valid = !value.is_empty()
        && value.len() <= MAX_TOPIC_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        return Err(Reason::BadTopic);
    }
    let topic = String::from_utf8_lossy(value).into_owned();
    if let TopicPolicy::Certificate(topics) = policy {
        if !topics.contains(&topic) {
            return Err(Reason::TopicDisallowed);
        }
    }
    Ok(topic)
}

fn collapse_id(value: &[u8]) -> Option<String> {
    if value.is_empty() || value.len() > MAX_COLLAPSE_ID {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

fn priority(value: &[u8]) -> Option<u8> {
    match value {
        b"10" => Some(10),
        b"5" => Some(5),
        b"1" => Some(1),
        _ => None,
    }
}

/// UNIX seconds as plain decimal digits, within the 32 bits the simulator stores.
fn expiration(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse::<u32>().ok()
}

fn push_type_and_bundle(sent: Option<PushType>, topic: &str) -> Result<(PushType, String), Reason> {
    let by_suffix = PushType::from_topic_suffix(topic);
    let push_type = match sent {
        Some(t) => t,
        None => by_suffix.unwrap_or(PushType::Alert),
    };
    let bundle = match push_type.suffix() {
        Some(suffix) => {
            if by_suffix != Some(push_type) {
                return Err(Reason::BadTopic);
            }
            topic[..topic.len() - suffix.len()].to_owned()
        }
        None if push_type == PushType::Mdm => topic.to_owned(),
        None => {
            if by_suffix.is_some() {
                return Err(Reason::BadTopic);
            }
            topic.to_owned()
        }
    };
    Ok((push_type, bundle))
}

fn device_token(uri: &Uri) -> Result<DeviceToken, Reason> {
    if uri.query().is_some() {
        return Err(Reason::BadPath);
    }
    let rest = uri
        .path()
        .strip_prefix(DEVICE_PATH)
        .ok_or(Reason::BadPath)?;
    if rest.is_empty() {
        return Err(Reason::MissingDeviceToken);
    }
    DeviceToken::from_hex(rest).map_err(|_| Reason::BadDeviceToken)
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

    fn run(pairs: &[(&str, &str)]) -> Result<Checked, Reason> {
        check(
            &Method::POST,
            &uri(&format!("{DEVICE_PATH}{TOKEN}")),
            &head(pairs),
            TopicPolicy::Token,
        )
        .1
    }

    #[test]
    fn minimal_token_request_passes_with_defaults() {
        let c = run(&[("apns-topic", "com.example.app")]).unwrap();
        assert_eq!(c.token.to_hex(), TOKEN);
        assert_eq!(c.topic, "com.example.app");
        assert_eq!(c.bundle, "com.example.app");
        assert_eq!(c.push_type, PushType::Alert);
        assert_eq!(c.push_type_header, None);
        assert_eq!(c.priority, 10);
        assert_eq!(c.expiry, None, "absent, not 0");
        assert_eq!(c.collapse_id, None);
    }

    #[test]
    fn apns_id_is_echoed_or_generated() {
        let h = head(&[("apns-topic", "a.b"), ("apns-id", ID)]);
        let (id, r) = check(
            &Method::POST,
            &uri(&format!("/3/device/{TOKEN}")),
            &h,
            TopicPolicy::Token,
        );
        assert_eq!(id.to_string(), ID);
        assert!(r.is_ok());
        for bad in [
            &ID.to_uppercase()[..],
            "6b6c6a5e0f4e4f8b9d4c2f8e5a1b3c7d",
            "x",
            "{6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7}",
        ] {
            let h = head(&[("apns-topic", "a.b"), ("apns-id", bad)]);
            let (id, r) = check(
                &Method::POST,
                &uri(&format!("/3/device/{TOKEN}")),
                &h,
                TopicPolicy::Token,
            );
            assert_eq!(r, Err(Reason::BadMessageId), "{bad}");
            assert_ne!(id.to_string(), ID);
        }
    }

    #[test]
    fn repeated_apns_headers_are_duplicates() {
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
            check(&m, &uri(p), &h, TopicPolicy::Token)
                .1
                .map(|c| c.token)
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
            go(Method::POST, &format!("/3/device/{}", TOKEN.to_uppercase())).map(|t| t.to_hex()),
            Ok(TOKEN.to_owned())
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
            check(
                &Method::POST,
                &uri(&format!("/3/device/{TOKEN}")),
                &head(pairs),
                TopicPolicy::Certificate(topics),
            )
            .1
        };
        assert_eq!(go(&one, &[]).unwrap().topic, "com.solo");
        assert_eq!(go(&many, &[]), Err(Reason::MissingTopic));
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
            p(&[("apns-topic", "a.b"), ("apns-push-type", "background")]),
            Ok(5)
        );
        assert_eq!(
            p(&[
                ("apns-topic", "a.b"),
                ("apns-push-type", "background"),
                ("apns-priority", "10")
            ]),
            Err(Reason::BadPriority)
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
        assert_eq!(c(""), Err(Reason::BadCollapseId));
    }

    #[test]
    fn check_order_follows_the_documented_sequence() {
        // Bad method beats a bad path and a missing topic.
        let h = head(&[]);
        assert_eq!(
            check(&Method::GET, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::MethodNotAllowed)
        );
        // A bad topic beats a bad priority, which beats a bad path.
        let h = head(&[("apns-topic", "a b"), ("apns-priority", "3")]);
        assert_eq!(
            check(&Method::POST, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::BadTopic)
        );
        let h = head(&[("apns-topic", "a.b"), ("apns-priority", "3")]);
        assert_eq!(
            check(&Method::POST, &uri("/x"), &h, TopicPolicy::Token).1,
            Err(Reason::BadPriority)
        );
    }
}
