//! Fuzzes the text forms of device tokens and token kinds (`apns_sim::protocol::token`): the
//! hex token of an HTTP/2 `:path`, `TokenKind` names (`liveactivity:ID`), `APP[:KIND]` and
//! the device protocol's kind code.
//!
//! Input: one selector byte, then the text (UTF-8; other inputs are skipped). Properties: a
//! parsed value prints back to text that parses to the same value (hex tokens print in
//! lowercase, so the text is the input lowercased); lengths are within their bounds; a kind
//! read from its wire code and activity writes the same code and activity.
#![no_main]

use apns_sim::protocol::device::MAX_APP_LEN;
use apns_sim::protocol::token::{AppToken, DeviceToken, TokenKind, MAX_ACTIVITY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(token) = DeviceToken::from_hex(text) {
                assert!((1..=DeviceToken::MAX_LEN).contains(&token.len()));
                assert_eq!(token.to_hex(), text.to_ascii_lowercase());
                assert_eq!(DeviceToken::from_hex(&token.to_hex()), Ok(token));
                assert_eq!(DeviceToken::new(token.as_bytes()), Ok(token));
                let serde = serde_json::to_string(&token).expect("a token serialises");
                assert_eq!(
                    serde_json::from_str::<DeviceToken>(&serde).ok(),
                    Some(token)
                );
            }
        }
        1 => {
            if let Ok(kind) = text.parse::<TokenKind>() {
                assert_eq!(kind.to_string(), text);
                check_kind(&kind);
            }
        }
        2 => {
            if let Ok(token) = text.parse::<AppToken>() {
                assert!((1..=MAX_APP_LEN).contains(&token.app.len()));
                assert!(!token.app.contains(':'));
                assert_eq!(token.to_string().parse::<AppToken>().as_ref(), Ok(&token));
                check_kind(&token.kind);
            }
        }
        _ => {
            if let Some((&code, activity)) = rest.split_first() {
                let Ok(activity) = std::str::from_utf8(activity) else {
                    return;
                };
                if let Ok(kind) = TokenKind::from_code(code, activity) {
                    assert_eq!(kind.code(), code);
                    assert_eq!(kind.activity().unwrap_or(""), activity);
                    check_kind(&kind);
                }
            }
        }
    }
});

/// A kind's text and wire forms both read back to it.
fn check_kind(kind: &TokenKind) {
    assert_eq!(kind.to_string().parse::<TokenKind>().as_ref(), Ok(kind));
    let activity = kind.activity().unwrap_or("");
    assert!(activity.len() <= MAX_ACTIVITY_LEN);
    assert_eq!(
        TokenKind::from_code(kind.code(), activity).as_ref(),
        Ok(kind)
    );
    assert!(kind.accepts(kind.push_type()));
}
