//! Fuzzes the HTTP/2 request checks (`apns_sim::server::http2::request::check`): the method,
//! `:path` and `apns-*` headers of one request, under token auth or a certificate's topics.
//!
//! Input: a request head written as text lines (so the corpus is readable and seeded from
//! the unit tests' requests): `METHOD PATH`, then `name: value` lines (values are raw bytes),
//! plus two lines that are not headers: `@cert: topic,topic` (certificate auth with these
//! topics; without it, token auth) and `@strict` (uppercase `apns-id`s refused). Heads the
//! `http` crate itself refuses (a bad URI, header name or value byte) never reach the server
//! and are skipped. Properties of an accepted request: the method is POST, the path is
//! `/3/device/` and the token's hex (any case), no `apns-*` header is repeated, the topic is
//! the header's (or the certificate's only one) and one the certificate covers, the bundle is
//! the topic less its push type's suffix, the priority is 10, 5 or 1, the collapse id 1..=64
//! bytes and the echoed `apns-id` is the header as sent. Every refusal has a detail, and its
//! header form is valid and at most `MAX_DETAIL_LEN` bytes.
#![no_main]

use apns_sim::server::http2::request::{
    check, parse_apns_id, PushType, Rules, TopicPolicy, DEVICE_PATH, MAX_COLLAPSE_ID, MAX_TOPIC_LEN,
};
use apns_sim::server::http2::response::{detail_value, MAX_DETAIL_LEN};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(request_line) = lines.next() else {
        return;
    };
    let Some(space) = request_line.iter().position(|&b| b == b' ') else {
        return;
    };
    let Ok(method) = Method::from_bytes(&request_line[..space]) else {
        return;
    };
    let Ok(uri) = Uri::try_from(&request_line[space + 1..]) else {
        return;
    };
    let mut headers = HeaderMap::new();
    let mut topics: Vec<String> = Vec::new();
    let mut rules = Rules::default();
    for line in lines {
        if line == b"@strict" {
            rules.accept_uppercase_apns_id = false;
            continue;
        }
        if let Some(list) = line.strip_prefix(b"@cert: ") {
            let Ok(list) = std::str::from_utf8(list) else {
                return;
            };
            topics = list.split(',').map(str::to_owned).collect();
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let policy = if topics.is_empty() {
        TopicPolicy::Token
    } else {
        TopicPolicy::Certificate(&topics)
    };

    let (apns_id, verdict) = check(&method, &uri, &headers, policy, rules);
    assert_eq!(
        apns_id.header.as_bytes().len(),
        36,
        "apns-id {:?}",
        apns_id.header
    );
    let checked = match verdict {
        Ok(checked) => checked,
        Err(rejection) => {
            assert!(
                !rejection.detail.is_empty(),
                "{:?} has no detail",
                rejection.reason
            );
            let header = detail_value(&rejection.detail);
            assert!(header.len() <= MAX_DETAIL_LEN);
            assert!(header.to_str().is_ok());
            return;
        }
    };

    assert_eq!(method, Method::POST);
    assert!(uri.query().is_none());
    let hex = uri
        .path()
        .strip_prefix(DEVICE_PATH)
        .expect("accepted a path outside /3/device/");
    assert_eq!(checked.token.to_hex(), hex.to_ascii_lowercase());
    for name in headers.keys() {
        if name.as_str().starts_with("apns-") || name == "authorization" {
            assert_eq!(headers.get_all(name).iter().count(), 1, "{name} repeated");
        }
    }
    match headers.get("apns-id") {
        Some(sent) => {
            assert_eq!(&apns_id.header, sent, "apns-id not echoed as sent");
            assert_eq!(parse_apns_id(sent.as_bytes(), rules), Ok(apns_id.uuid));
        }
        None => assert_eq!(
            apns_id.header.to_str().ok(),
            Some(&*apns_id.uuid.to_string())
        ),
    }
    match headers.get("apns-topic") {
        Some(sent) => assert_eq!(sent.as_bytes(), checked.topic.as_bytes()),
        None => assert_eq!(topics, [checked.topic.clone()]),
    }
    assert!(!checked.topic.is_empty() && checked.topic.len() <= MAX_TOPIC_LEN);
    if !topics.is_empty() {
        assert!(
            topics.contains(&checked.topic),
            "topic outside the certificate"
        );
    }
    let suffix = checked.push_type.suffix().unwrap_or("");
    assert_eq!(format!("{}{suffix}", checked.bundle), checked.topic);
    if checked.push_type != PushType::Mdm && suffix.is_empty() {
        assert_eq!(PushType::from_topic_suffix(&checked.topic), None);
    }
    if let Some(sent) = checked.push_type_header {
        assert_eq!(sent, checked.push_type);
    }
    assert!(matches!(checked.priority, 1 | 5 | 10));
    if let Some(id) = &checked.collapse_id {
        assert!(!id.is_empty() && id.len() <= MAX_COLLAPSE_ID);
    }
    assert_eq!(
        headers.get("apns-expiration").is_some(),
        checked.expiry.is_some()
    );
});
