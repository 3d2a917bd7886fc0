//! What the HTTP/2 provider API answers: Apple's status codes and reason strings (spec §4.5),
//! and the response head and body built from them.
//!
//! Success is a single HEADERS frame (`:status 200`, `apns-id`, and in sandbox
//! `apns-unique-id`) with END_STREAM. An error is HEADERS (`:status`,
//! `content-type: application/json`, `apns-id`) followed by one DATA frame carrying
//! `{"reason":"…"}`, plus `"timestamp"` (milliseconds since the epoch) for 410.
//!
//! Every error answer also carries [`DETAIL_HEADER`] (`apns-sim-detail`): the cause in words,
//! which Apple does not send but the simulator knows exactly ("apns-priority 7 is not 10, 5
//! or 1"). Any refusal source supplies one through [`Rejection`]: the request checks
//! ([`super::request`]), the payload and hub checks of a stream, and provider-token auth
//! ([`super::auth`], through `From<Reason>` until it supplies its own detail).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use uuid::Uuid;

/// Every reason string the simulator can send, with its HTTP status (spec §4.5).
///
/// `Forbidden`, `ExpiredToken`, `InternalServerError` and `ServiceUnavailable` are produced
/// only by a fault (`POST /v1/faults`): Apple documents no trigger the simulator could
/// reproduce faithfully (see the module docs of [`crate::server::http2`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400: `apns-collapse-id` is empty or longer than 64 bytes.
    BadCollapseId,
    /// 400: the path's token is not 64 hex digits, unknown, or of the other environment.
    BadDeviceToken,
    /// 400: `apns-expiration` is not a UNIX time in seconds.
    BadExpirationDate,
    /// 400: `apns-id` is not a canonical lowercase UUID.
    BadMessageId,
    /// 400: `apns-priority` is not 10, 5 or 1, or 10 on a background push.
    BadPriority,
    /// 400: `apns-topic` is malformed or does not match the push type's suffix.
    BadTopic,
    /// 400: the token belongs to another app than the topic.
    DeviceTokenNotForTopic,
    /// 400: an `apns-*` header (or `authorization`) appears more than once.
    DuplicateHeaders,
    /// 400: the request body did not arrive in time; also the GOAWAY reason of an idle
    /// connection.
    IdleTimeout,
    /// 400: `apns-push-type` is not one Apple defines.
    InvalidPushType,
    /// 400: `/3/device/` with nothing after it.
    MissingDeviceToken,
    /// 400: no `apns-topic` where one is required.
    MissingTopic,
    /// 400: no payload, or (the simulator's documented choice) one that is not a JSON object.
    PayloadEmpty,
    /// 400: the certificate or the signing key does not allow this topic.
    TopicDisallowed,
    /// 403: the client certificate cannot be read as an APNs provider certificate.
    BadCertificate,
    /// 403: the action is not allowed (fault injection only).
    Forbidden,
    /// 403: the certificate is for the other environment (sent as a GOAWAY).
    BadCertificateEnvironment,
    /// 403: the provider token's `iat` is more than an hour old.
    ExpiredProviderToken,
    /// 403: the provider token cannot be verified, or names another team than the
    /// connection's.
    InvalidProviderToken,
    /// 403: a token-auth connection sent no `authorization: bearer …`.
    MissingProviderToken,
    /// 403: a token signed by a key unrelated to the key of the connection's first push.
    UnrelatedKeyIdInToken,
    /// 404: the `:path` is not `/3/device/…`.
    BadPath,
    /// 405: the `:method` is not POST.
    MethodNotAllowed,
    /// 410: the app was uninstalled (the device reported it) or reinstalled with a new token; carries a timestamp.
    Unregistered,
    /// 410: the device token has expired (fault injection only); carries a timestamp.
    ExpiredToken,
    /// 413: the payload is over 4096 bytes (5120 for VoIP).
    PayloadTooLarge,
    /// 429: a new provider token less than 20 minutes after the previous one.
    TooManyProviderTokenUpdates,
    /// 429: over the per-token push limit (`--token-rate-limit`; off by default).
    TooManyRequests,
    /// 500: an internal server error (fault injection only).
    InternalServerError,
    /// 503: the service is unavailable (fault injection only).
    ServiceUnavailable,
    /// 503: the simulator is shutting down (sent as the GOAWAY reason).
    Shutdown,
}

impl Reason {
    /// The reason string, exactly as Apple spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadCollapseId => "BadCollapseId",
            Reason::BadDeviceToken => "BadDeviceToken",
            Reason::BadExpirationDate => "BadExpirationDate",
            Reason::BadMessageId => "BadMessageId",
            Reason::BadPriority => "BadPriority",
            Reason::BadTopic => "BadTopic",
            Reason::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Reason::DuplicateHeaders => "DuplicateHeaders",
            Reason::IdleTimeout => "IdleTimeout",
            Reason::InvalidPushType => "InvalidPushType",
            Reason::MissingDeviceToken => "MissingDeviceToken",
            Reason::MissingTopic => "MissingTopic",
            Reason::PayloadEmpty => "PayloadEmpty",
            Reason::TopicDisallowed => "TopicDisallowed",
            Reason::BadCertificate => "BadCertificate",
            Reason::BadCertificateEnvironment => "BadCertificateEnvironment",
            Reason::ExpiredProviderToken => "ExpiredProviderToken",
            Reason::InvalidProviderToken => "InvalidProviderToken",
            Reason::MissingProviderToken => "MissingProviderToken",
            Reason::UnrelatedKeyIdInToken => "UnrelatedKeyIdInToken",
            Reason::BadPath => "BadPath",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Unregistered => "Unregistered",
            Reason::PayloadTooLarge => "PayloadTooLarge",
            Reason::TooManyProviderTokenUpdates => "TooManyProviderTokenUpdates",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::Shutdown => "Shutdown",
            Reason::Forbidden => "Forbidden",
            Reason::ExpiredToken => "ExpiredToken",
            Reason::InternalServerError => "InternalServerError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status Apple pairs with this reason.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::BadCollapseId
            | Reason::BadDeviceToken
            | Reason::BadExpirationDate
            | Reason::BadMessageId
            | Reason::BadPriority
            | Reason::BadTopic
            | Reason::DeviceTokenNotForTopic
            | Reason::DuplicateHeaders
            | Reason::IdleTimeout
            | Reason::InvalidPushType
            | Reason::MissingDeviceToken
            | Reason::MissingTopic
            | Reason::PayloadEmpty
            | Reason::TopicDisallowed => StatusCode::BAD_REQUEST,
            Reason::BadCertificate
            | Reason::BadCertificateEnvironment
            | Reason::Forbidden
            | Reason::ExpiredProviderToken
            | Reason::InvalidProviderToken
            | Reason::MissingProviderToken
            | Reason::UnrelatedKeyIdInToken => StatusCode::FORBIDDEN,
            Reason::BadPath => StatusCode::NOT_FOUND,
            Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reason::Unregistered | Reason::ExpiredToken => StatusCode::GONE,
            Reason::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::TooManyProviderTokenUpdates | Reason::TooManyRequests => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Reason::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Reason::ServiceUnavailable | Reason::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body Apple sends with this reason: `{"reason":"…"}`, plus `"timestamp"` in
    /// milliseconds when one is given (410 only).
    pub fn body(self, timestamp_ms: Option<u64>) -> Bytes {
        let text = match timestamp_ms {
            Some(ms) => format!(r#"{{"reason":"{}","timestamp":{ms}}}"#, self.as_str()),
            None => format!(r#"{{"reason":"{}"}}"#, self.as_str()),
        };
        Bytes::from(text)
    }
}

impl Reason {
    /// Every reason, in the order Apple's table lists them.
    pub const ALL: [Reason; 31] = [
        Reason::BadCollapseId,
        Reason::BadDeviceToken,
        Reason::BadExpirationDate,
        Reason::BadMessageId,
        Reason::BadPriority,
        Reason::BadTopic,
        Reason::DeviceTokenNotForTopic,
        Reason::DuplicateHeaders,
        Reason::IdleTimeout,
        Reason::InvalidPushType,
        Reason::MissingDeviceToken,
        Reason::MissingTopic,
        Reason::PayloadEmpty,
        Reason::TopicDisallowed,
        Reason::BadCertificate,
        Reason::BadCertificateEnvironment,
        Reason::ExpiredProviderToken,
        Reason::Forbidden,
        Reason::InvalidProviderToken,
        Reason::MissingProviderToken,
        Reason::UnrelatedKeyIdInToken,
        Reason::BadPath,
        Reason::MethodNotAllowed,
        Reason::ExpiredToken,
        Reason::Unregistered,
        Reason::PayloadTooLarge,
        Reason::TooManyProviderTokenUpdates,
        Reason::TooManyRequests,
        Reason::InternalServerError,
        Reason::ServiceUnavailable,
        Reason::Shutdown,
    ];

    /// The reason spelled `name` (exactly as Apple spells it), if there is one.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The reasons Apple answers `status` with.
    pub fn of_status(status: u16) -> Vec<Reason> {
        Reason::ALL
            .into_iter()
            .filter(|r| r.status().as_u16() == status)
            .collect()
    }

    /// The reason a fault answering `status` sends when it names none.
    pub fn usual(status: u16) -> Option<Reason> {
        Some(match status {
            400 => Reason::BadDeviceToken,
            403 => Reason::Forbidden,
            404 => Reason::BadPath,
            405 => Reason::MethodNotAllowed,
            410 => Reason::Unregistered,
            413 => Reason::PayloadTooLarge,
            429 => Reason::TooManyRequests,
            500 => Reason::InternalServerError,
            503 => Reason::ServiceUnavailable,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reason {
    /// A generic description of the reason, for refusal sources that have no more specific
    /// words to offer (today: provider-token auth, whose own details are still to come).
    pub fn describe(self) -> &'static str {
        match self {
            Reason::BadCollapseId => "apns-collapse-id is longer than 64 bytes",
            Reason::BadDeviceToken => "the device token is malformed, unknown, or of the other environment",
            Reason::BadExpirationDate => "apns-expiration is not a UNIX time in seconds",
            Reason::BadMessageId => "apns-id is not a UUID in the 8-4-4-4-12 form",
            Reason::BadPriority => "apns-priority is not 10, 5 or 1",
            Reason::BadTopic => "apns-topic is malformed or does not fit the push type",
            Reason::DeviceTokenNotForTopic => "the device token belongs to another app",
            Reason::DuplicateHeaders => "an apns-* header or authorization appears more than once",
            Reason::IdleTimeout => "the request or connection was idle for too long",
            Reason::InvalidPushType => "apns-push-type is not a push type APNs defines",
            Reason::MissingDeviceToken => "no device token after /3/device/",
            Reason::MissingTopic => "no apns-topic where one is required",
            Reason::PayloadEmpty => "the payload is empty or not a JSON object",
            Reason::TopicDisallowed => "the certificate or signing key does not cover the topic",
            Reason::BadCertificate => "the client certificate is not a readable APNs provider certificate",
            Reason::BadCertificateEnvironment => "the certificate is for the other environment",
            Reason::ExpiredProviderToken => "the provider token's iat is more than an hour old",
            Reason::InvalidProviderToken => "the provider token could not be verified, or names another team than the connection's",
            Reason::MissingProviderToken => "no authorization: bearer <JWT> on a connection without a client certificate",
            Reason::UnrelatedKeyIdInToken => "the provider token is signed by a key unrelated to the connection's first key",
            Reason::BadPath => "the :path is not /3/device/<token>",
            Reason::MethodNotAllowed => "the :method is not POST",
            Reason::Unregistered => "the token is no longer valid for the topic: the app was uninstalled (the device reported it) or reinstalled with a new token",
            Reason::PayloadTooLarge => "the payload is over the push type's limit",
            Reason::TooManyProviderTokenUpdates => "a new provider token less than 20 minutes after the previous one",
            Reason::TooManyRequests => "over the per-token push limit",
            Reason::Shutdown => "the simulator is shutting down",
            Reason::Forbidden => "the action is not allowed",
            Reason::ExpiredToken => "the device token has expired",
            Reason::InternalServerError => "an internal server error occurred",
            Reason::ServiceUnavailable => "the service is unavailable",
        }
    }
}

pub use crate::protocol::http2::DETAIL_HEADER;

/// Longest [`DETAIL_HEADER`] value, in bytes: long enough for any cause the simulator words
/// (they name at most a topic list or a 200-digit token), short enough that a detail can
/// never crowd a client's header-list limit (Apple's own is 8000 bytes).
pub const MAX_DETAIL_LEN: usize = 512;

/// A refusal: Apple's reason, the cause in words, and for 410 the time the token became
/// invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What Apple would answer.
    pub reason: Reason,
    /// Why, in words: sent as [`DETAIL_HEADER`] and logged.
    pub detail: String,
    /// Milliseconds since the epoch; only the 410s (`Unregistered`, `ExpiredToken`) carry
    /// one.
    pub timestamp_ms: Option<u64>,
}

impl Rejection {
    /// A refusal for `reason` because of `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            timestamp_ms: None,
        }
    }
}

impl From<Reason> for Rejection {
    /// A refusal whose detail is the reason's generic description ([`Reason::describe`]),
    /// for sources that know no more.
    fn from(reason: Reason) -> Self {
        Rejection::new(reason, reason.describe())
    }
}

impl std::fmt::Display for Rejection {
    /// `Reason: detail`, as the log writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// `detail` as a valid header value: visible ASCII and spaces only (anything else becomes
/// `?`), at most [`MAX_DETAIL_LEN`] bytes (a longer one ends in `...`).
pub fn detail_value(detail: &str) -> HeaderValue {
    let mut text: String = detail
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_DETAIL_LEN + 1)
        .collect();
    if text.len() > MAX_DETAIL_LEN {
        text.truncate(MAX_DETAIL_LEN - 3);
        text.push_str("...");
    }
    HeaderValue::from_str(text.trim()).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// `apns-id`, as a name (a `&str` key is parsed and copied on every insert).
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");

/// `apns-unique-id`.
const APNS_UNIQUE_ID: HeaderName = HeaderName::from_static("apns-unique-id");

/// A value unique to one answer (`apns-id`, `apns-unique-id`), marked so that `h2` sends it
/// as a literal that is never indexed (RFC 7541 §6.2.3). Indexed, every answer added it to
/// the HPACK table, evicting an older one, after walking the chain of every value kept
/// under the same name; the value is never seen again, so the client gains nothing from it
/// either. The header and its value are the same; only their encoding differs.
fn unique(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The head of a 200 answer: `apns-id` (as the request sent it, or generated), and
/// `apns-unique-id` when given (sandbox only).
pub(crate) fn success(apns_id: HeaderValue, unique_id: Option<Uuid>) -> Response<()> {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(APNS_ID, unique(apns_id));
    if let Some(id) = unique_id {
        headers.insert(APNS_UNIQUE_ID, unique(uuid_value(id)));
    }
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = headers;
    response
}

/// The head and body of an error answer, with the detail in [`DETAIL_HEADER`].
pub(crate) fn error(rejection: &Rejection, apns_id: HeaderValue) -> (Response<()>, Bytes) {
    let mut response = Response::new(());
    *response.status_mut() = rejection.reason.status();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(APNS_ID, unique(apns_id));
    headers.insert(DETAIL_HEADER, detail_value(&rejection.detail));
    (response, rejection.reason.body(rejection.timestamp_ms))
}

/// A UUID as the lowercase header value APNs generates.
pub(crate) fn uuid_value(id: Uuid) -> HeaderValue {
    // A hyphenated UUID is 36 ASCII characters, always a valid header value.
    let mut buf = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_apples_table() {
        assert_eq!(Reason::BadPath.status(), 404);
        assert_eq!(Reason::MethodNotAllowed.status(), 405);
        assert_eq!(Reason::Unregistered.status(), 410);
        assert_eq!(Reason::PayloadTooLarge.status(), 413);
        assert_eq!(Reason::TooManyProviderTokenUpdates.status(), 429);
        assert_eq!(Reason::ExpiredProviderToken.status(), 403);
        assert_eq!(Reason::MissingTopic.status(), 400);
        assert_eq!(Reason::Shutdown.status(), 503);
    }

    #[test]
    fn bodies_are_apples_json() {
        assert_eq!(
            Reason::BadDeviceToken.body(None),
            Bytes::from_static(br#"{"reason":"BadDeviceToken"}"#)
        );
        assert_eq!(
            Reason::Unregistered.body(Some(1_700_000_000_123)),
            Bytes::from_static(br#"{"reason":"Unregistered","timestamp":1700000000123}"#)
        );
    }

    #[test]
    fn error_head_has_content_type_and_id() {
        let id = Uuid::parse_str("6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7d").unwrap();
        let rejection = Rejection::new(Reason::BadTopic, "apns-topic \"a b\" has a space");
        let (head, body) = error(&rejection, uuid_value(id));
        assert_eq!(head.status(), 400);
        assert_eq!(
            head.headers()[DETAIL_HEADER],
            "apns-topic \"a b\" has a space"
        );
        assert_eq!(head.headers()["content-type"], "application/json");
        assert_eq!(
            head.headers()["apns-id"],
            "6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7d"
        );
        assert_eq!(body, Bytes::from_static(br#"{"reason":"BadTopic"}"#));
    }

    #[test]
    fn success_head_carries_unique_id_only_when_given() {
        let id = Uuid::new_v4();
        let head = success(uuid_value(id), None);
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["apns-id"], id.to_string().as_str());
        assert!(head.headers().get("apns-unique-id").is_none());
        let unique = Uuid::new_v4();
        let head = success(uuid_value(id), Some(unique));
        assert_eq!(
            head.headers()["apns-unique-id"],
            unique.to_string().as_str()
        );
    }

    #[test]
    fn detail_values_are_visible_ascii_and_bounded() {
        assert_eq!(detail_value("plain words"), "plain words");
        assert_eq!(detail_value("topic \u{e9}t\u{e9}\r\n\0x"), "topic ?t????x");
        let long = detail_value(&"x".repeat(10_000));
        assert_eq!(long.len(), MAX_DETAIL_LEN);
        assert!(long.to_str().unwrap().ends_with("..."));
        assert_eq!(
            detail_value(&"y".repeat(MAX_DETAIL_LEN)).len(),
            MAX_DETAIL_LEN
        );
        assert_eq!(detail_value(""), "");
    }

    #[test]
    fn every_reason_has_a_description() {
        let r = Rejection::from(Reason::MissingProviderToken);
        assert_eq!(r.detail, Reason::MissingProviderToken.describe());
        assert!(r
            .to_string()
            .starts_with("MissingProviderToken: no authorization"));
    }
}
