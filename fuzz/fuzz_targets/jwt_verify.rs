//! Fuzzes provider-token verification: `apns_sim::pki::jwt::verify` and, around it, the
//! HTTP/2 connection's `authorization` handling (`server::http2::auth::TokenAuth`).
//!
//! The key store holds one fixed P-256 key (`FUZZKEY001` of team `FUZZTEAM01`). Input: one
//! mode byte, then
//! - mode even: an `authorization` header value. `TokenAuth::authorize` runs on it, and
//!   `verify` on the token after `bearer `. Properties: a verified token names the fixed key
//!   and team and an `iat` in seconds; changing any byte of its signed part makes it fail; a
//!   refusal's detail is printable ASCII (it goes in a header), and a header `verify` refuses
//!   is refused by `authorize`.
//! - mode odd: a length byte, then header JSON and claims JSON, which the target signs with
//!   the fixed key (so the fuzzer reaches the checks behind the signature). Properties: the
//!   token verifies exactly when the header is an object with `alg` `ES256` and `kid`
//!   `FUZZKEY001` and the claims an object with `iss` `FUZZTEAM01` and a readable `iat`, which
//!   is the one returned; the first failing step is the error reported.
#![no_main]

use apns_sim::pki::jwt::{verify, JwtError, KeyStore, MAX_IAT_SECONDS};
use apns_sim::server::http2::auth::{TokenAuth, TokenKeys};
use apns_sim::settings::Settings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::Value;
use std::sync::OnceLock;

const KEY_ID: &str = "FUZZKEY001";
const TEAM_ID: &str = "FUZZTEAM01";
/// The clock `authorize` is given: the `iat` of the seed tokens, in milliseconds.
const NOW_MS: u64 = 1_700_000_000_000;

struct Fixture {
    key: SigningKey,
    store: KeyStore,
    keys: TokenKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::from_slice(&[0x11; 32]).expect("a valid P-256 scalar");
        let mut store = KeyStore::new();
        store.insert(KEY_ID.into(), TEAM_ID.into(), vec![], *key.verifying_key());
        let keys = TokenKeys::new(store.clone(), &Settings::default());
        Fixture { key, store, keys }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        header_mode(rest);
    } else {
        signed_mode(mode & 2 != 0, rest);
    }
});

fn header_mode(header: &[u8]) {
    let f = fixture();
    let mut auth = TokenAuth::new(None);
    let authorized = auth.authorize(Some(header), "com.example.app", NOW_MS, &f.keys);
    match &authorized {
        Ok(()) => assert!(auth.has_valid_token()),
        Err(refusal) => assert!(
            refusal
                .detail
                .bytes()
                .all(|b| b == b' ' || b.is_ascii_graphic()),
            "detail not printable ASCII: {:?}",
            refusal.detail
        ),
    }
    let Ok(text) = std::str::from_utf8(header) else {
        return;
    };
    let jwt = text.trim().strip_prefix("bearer ").unwrap_or(text).trim();
    match verify(jwt, &f.store) {
        Ok(token) => {
            assert_eq!(
                (token.key_id.as_str(), token.team_id.as_str()),
                (KEY_ID, TEAM_ID)
            );
            assert!(token.issued_at <= MAX_IAT_SECONDS);
            let signed_len = jwt.rfind('.').expect("a verified token has three parts");
            for at in [0, signed_len / 2, signed_len - 1] {
                let mut altered = jwt.as_bytes().to_vec();
                altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
                if let Ok(altered) = String::from_utf8(altered) {
                    assert!(
                        verify(&altered, &f.store).is_err(),
                        "altered at {at}: {altered}"
                    );
                }
            }
        }
        Err(err) => {
            if text.trim().starts_with("bearer ") {
                assert!(
                    authorized.is_err(),
                    "authorize accepted what verify refused: {err}"
                );
            }
        }
    }
}

fn signed_mode(der: bool, rest: &[u8]) {
    let Some((&split, json)) = rest.split_first() else {
        return;
    };
    let (header, claims) = json.split_at(usize::from(split).min(json.len()));
    let f = fixture();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature: Signature = f.key.sign(input.as_bytes());
    let signature = if der {
        signature.to_der().as_bytes().to_vec()
    } else {
        signature.to_bytes().to_vec()
    };
    let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let verdict = verify(&jwt, &f.store);

    // The reference, step by step in verify's documented order.
    if header.is_empty() || claims.is_empty() {
        assert!(
            matches!(verdict, Err(JwtError::Malformed(_))),
            "{verdict:?}"
        );
        return;
    }
    let header: Option<Value> = serde_json::from_slice(header).ok();
    let Some(header) = header.as_ref().and_then(Value::as_object) else {
        assert!(matches!(verdict, Err(JwtError::BadHeader)), "{verdict:?}");
        return;
    };
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        assert!(
            matches!(verdict, Err(JwtError::WrongAlgorithm { .. })),
            "{verdict:?}"
        );
        return;
    }
    match header.get("kid").and_then(Value::as_str) {
        None => {
            assert_eq!(verdict, Err(JwtError::MissingKeyId));
            return;
        }
        Some(kid) if kid != KEY_ID => {
            assert!(
                matches!(verdict, Err(JwtError::UnknownKey { .. })),
                "{verdict:?}"
            );
            return;
        }
        Some(_) => {}
    }
    let claims: Option<Value> = serde_json::from_slice(claims).ok();
    let iss = claims
        .as_ref()
        .and_then(|c| c.get("iss"))
        .and_then(Value::as_str);
    let iat = claims
        .as_ref()
        .and_then(|c| c.get("iat"))
        .and_then(reference_iat);
    match (claims.as_ref().and_then(Value::as_object), iss, iat) {
        (Some(_), Some(TEAM_ID), Some(iat)) if iat <= MAX_IAT_SECONDS => {
            let token = verdict.expect("a well-formed token signed by the key is refused");
            assert_eq!(token.issued_at, iat);
            assert_eq!(
                (token.key_id.as_str(), token.team_id.as_str()),
                (KEY_ID, TEAM_ID)
            );
        }
        (Some(_), Some(_), Some(iat)) if iat <= MAX_IAT_SECONDS => {
            assert!(
                matches!(verdict, Err(JwtError::TeamMismatch { .. })),
                "{verdict:?}"
            );
        }
        (Some(_), Some(_), Some(_)) => {
            assert!(
                matches!(verdict, Err(JwtError::IatMilliseconds(_))),
                "{verdict:?}"
            );
        }
        _ => assert!(
            matches!(verdict, Err(JwtError::BadClaims(_))),
            "{verdict:?}"
        ),
    }
}

/// `iat` as the module documents it: a non-negative JSON number, floored and saturating, or a
/// string of decimal digits (saturating).
fn reference_iat(iat: &Value) -> Option<u64> {
    match iat {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.floor() as u64)),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.parse().unwrap_or(u64::MAX))
        }
        _ => None,
    }
}
