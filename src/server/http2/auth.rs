//! Token-based (JWT) authentication of one HTTP/2 connection: a small state machine fed with
//! each request's `authorization` header and the time, so every rule is unit-tested with
//! explicit clocks instead of waiting (spec §4.7).
//!
//! Rules, checked in this order for each request on a connection without a certificate:
//!
//! 1. no `authorization`, or `bearer` with nothing after it → 403 `MissingProviderToken`;
//!    another scheme → 403 `InvalidProviderToken`;
//! 2. the token is verified by [`jwt::verify`] (shape, `alg` ES256, known `kid`, signature as
//!    JOSE `R||S` or DER, `iss` owning the key) → else 403 `InvalidProviderToken`; a token
//!    identical to the connection's current one is not verified again;
//! 3. `iat` more than an hour old → 403 `ExpiredProviderToken`; `iat` more than
//!    [`MAX_IAT_AHEAD`] in the future → 403 `InvalidProviderToken` (Apple does not document
//!    this case; a far-future `iat`, typically milliseconds sent as seconds, would otherwise
//!    never expire);
//! 4. the connection's first accepted push pins its team and key: another team → 403
//!    `InvalidProviderToken` (as Pushy's mock answers; Apple says only "an error"); another
//!    key of the same team → 403 `UnrelatedKeyIdInToken` unless both keys are team-scoped
//!    (team keys are interchangeable, a topic-specific key is related only to itself);
//! 5. a token different from the current one less than 20 minutes after the current one was
//!    first used → 429 `TooManyProviderTokenUpdates` (the current token stays in force);
//! 6. a topic-specific key whose topics do not include the request's app → 400
//!    `TopicDisallowed`.
//!
//! Only a request that passes every rule changes the state: it may make its token the
//! current one, pins the connection on the first push, and lifts the one-stream limit
//! ([`TokenAuth::has_valid_token`]).

use std::time::Duration;

use crate::pki::jwt::{self, KeyStore};

use super::response::Reason;

/// A provider token is valid for one hour after its `iat` (Apple: older → expired).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Apple refuses a new token on a connection sooner than 20 minutes after the previous one.
pub const MIN_TOKEN_UPDATE_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// How far in the future an `iat` may be (clock skew between provider and simulator).
pub const MAX_IAT_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The token in force on a connection.
#[derive(Debug, Clone)]
struct Current {
    /// The compact JWT text, to recognise it on later requests without verifying again.
    jwt: String,
    /// What verification said.
    token: jwt::VerifiedToken,
    /// When a request first used it (ms since the epoch), for the 20-minute rule.
    first_used_ms: u64,
}

/// The team and key the connection's first push was made with.
#[derive(Debug, Clone)]
struct Pin {
    team_id: String,
    key_id: String,
    /// The key may sign for any topic of its team.
    team_scoped: bool,
}

/// Authentication state of one token-auth connection.
#[derive(Debug, Default)]
pub struct TokenAuth {
    current: Option<Current>,
    pin: Option<Pin>,
}

impl TokenAuth {
    /// A connection that has not sent a token yet.
    pub fn new() -> Self {
        TokenAuth::default()
    }

    /// True once a request with a valid token has been accepted: until then the connection
    /// serves one stream at a time (spec §4.2).
    pub fn has_valid_token(&self) -> bool {
        self.current.is_some()
    }

    /// The team pinned to the connection, once a push was accepted.
    pub fn team(&self) -> Option<&str> {
        self.pin.as_ref().map(|p| p.team_id.as_str())
    }

    /// Applies the rules above to one request for app `bundle` at `now_ms`.
    pub fn authorize(
        &mut self,
        authorization: Option<&[u8]>,
        bundle: &str,
        now_ms: u64,
        keys: &KeyStore,
    ) -> Result<(), Reason> {
        let jwt_text = bearer(authorization)?;

        // 2. Verify (or recognise the current token).
        let same = self.current.as_ref().is_some_and(|c| c.jwt == jwt_text);
        let token = match &self.current {
            Some(c) if same => c.token.clone(),
            _ => jwt::verify(jwt_text, keys).map_err(|_| Reason::InvalidProviderToken)?,
        };

        // 3. Lifetime.
        let now_secs = now_ms / 1000;
        if now_secs > token.issued_at.saturating_add(TOKEN_LIFETIME.as_secs()) {
            return Err(Reason::ExpiredProviderToken);
        }
        if token.issued_at > now_secs.saturating_add(MAX_IAT_AHEAD.as_secs()) {
            return Err(Reason::InvalidProviderToken);
        }

        // 4. Team and key binding.
        let key_topics = keys.topics_for(&token.key_id).unwrap_or(&[]);
        let team_scoped = key_topics.is_empty();
        if let Some(pin) = &self.pin {
            if pin.team_id != token.team_id {
                return Err(Reason::InvalidProviderToken);
            }
            if pin.key_id != token.key_id && !(pin.team_scoped && team_scoped) {
                return Err(Reason::UnrelatedKeyIdInToken);
            }
        }

        // 5. Token updates.
        if !same {
            if let Some(c) = &self.current {
                let since = now_ms.saturating_sub(c.first_used_ms);
                if since < MIN_TOKEN_UPDATE_INTERVAL.as_millis() as u64 {
                    return Err(Reason::TooManyProviderTokenUpdates);
                }
            }
        }

        // 6. Topic-specific keys.
        if !team_scoped && !key_topics.iter().any(|t| t == bundle) {
            return Err(Reason::TopicDisallowed);
        }

        if self.pin.is_none() {
            self.pin = Some(Pin {
                team_id: token.team_id.clone(),
                key_id: token.key_id.clone(),
                team_scoped,
            });
        }
        if !same {
            self.current = Some(Current {
                jwt: jwt_text.to_owned(),
                token,
                first_used_ms: now_ms,
            });
        }
        Ok(())
    }
}

/// The JWT of an `authorization: bearer <jwt>` header (scheme case-insensitive).
fn bearer(authorization: Option<&[u8]>) -> Result<&str, Reason> {
    let value = authorization.ok_or(Reason::MissingProviderToken)?;
    let text = std::str::from_utf8(value).map_err(|_| Reason::InvalidProviderToken)?;
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("bearer") {
        return Err(Reason::MissingProviderToken);
    }
    match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            let jwt = rest.trim();
            if jwt.is_empty() {
                Err(Reason::MissingProviderToken)
            } else {
                Ok(jwt)
            }
        }
        _ => Err(Reason::InvalidProviderToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Pki, DEFAULT_KEY_ID, DEFAULT_TEAM_ID};

    const MIN: u64 = 60_000;

    struct Fixture {
        pki: Pki,
        keys: KeyStore,
    }

    /// A PKI with the default team key, a second team key, a topic-specific key and a key of
    /// another team.
    fn fixture() -> Fixture {
        let mut pki = Pki::generate().unwrap();
        pki.mint_auth_key(DEFAULT_TEAM_ID, Some("TEAMKEY002".into()), vec![])
            .unwrap();
        pki.mint_auth_key(
            DEFAULT_TEAM_ID,
            Some("TOPICKEY01".into()),
            vec!["com.only".into()],
        )
        .unwrap();
        pki.mint_auth_key("OTHERTEAM1", Some("OTHERKEY01".into()), vec![])
            .unwrap();
        let keys = KeyStore::from_pki(&pki).unwrap();
        Fixture { pki, keys }
    }

    impl Fixture {
        fn bearer(&self, key_id: &str, iat_ms: u64) -> String {
            let key = self.pki.auth_key(key_id).unwrap();
            format!("bearer {}", jwt::sign(key, iat_ms / 1000).unwrap())
        }
    }

    const T0: u64 = 1_700_000_000_000;

    fn go(auth: &mut TokenAuth, f: &Fixture, header: &str, now_ms: u64) -> Result<(), Reason> {
        auth.authorize(Some(header.as_bytes()), "com.example.app", now_ms, &f.keys)
    }

    #[test]
    fn missing_and_malformed_headers() {
        let f = fixture();
        let mut auth = TokenAuth::new();
        assert_eq!(
            auth.authorize(None, "a", T0, &f.keys),
            Err(Reason::MissingProviderToken)
        );
        assert_eq!(go(&mut auth, &f, "", T0), Err(Reason::MissingProviderToken));
        assert_eq!(
            go(&mut auth, &f, "bearer", T0),
            Err(Reason::MissingProviderToken)
        );
        assert_eq!(
            go(&mut auth, &f, "bearer   ", T0),
            Err(Reason::MissingProviderToken)
        );
        assert_eq!(
            go(&mut auth, &f, "Basic abc", T0),
            Err(Reason::InvalidProviderToken)
        );
        assert_eq!(
            go(&mut auth, &f, "bearer a.b.c", T0),
            Err(Reason::InvalidProviderToken)
        );
        assert!(!auth.has_valid_token());
    }

    #[test]
    fn valid_token_in_both_signature_encodings() {
        let f = fixture();
        let key = f.pki.auth_key(DEFAULT_KEY_ID).unwrap();
        for jwt_text in [
            jwt::sign(key, T0 / 1000).unwrap(),
            jwt::sign_der(key, T0 / 1000).unwrap(),
        ] {
            let mut auth = TokenAuth::new();
            assert_eq!(go(&mut auth, &f, &format!("bearer {jwt_text}"), T0), Ok(()));
            assert!(auth.has_valid_token());
            assert_eq!(auth.team(), Some(DEFAULT_TEAM_ID));
        }
        // The scheme is case-insensitive.
        let mut auth = TokenAuth::new();
        let header = f.bearer(DEFAULT_KEY_ID, T0).replacen("bearer", "Bearer", 1);
        assert_eq!(go(&mut auth, &f, &header, T0), Ok(()));
    }

    #[test]
    fn tampered_or_unknown_tokens_are_invalid() {
        let f = fixture();
        let mut auth = TokenAuth::new();
        let good = f.bearer(DEFAULT_KEY_ID, T0);
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            go(&mut auth, &f, &tampered, T0),
            Err(Reason::InvalidProviderToken)
        );
        let empty_store = KeyStore::new();
        assert_eq!(
            auth.authorize(Some(good.as_bytes()), "com.example.app", T0, &empty_store),
            Err(Reason::InvalidProviderToken)
        );
        assert!(!auth.has_valid_token());
    }

    #[test]
    fn one_hour_lifetime() {
        let f = fixture();
        let header = f.bearer(DEFAULT_KEY_ID, T0);
        let mut auth = TokenAuth::new();
        assert_eq!(go(&mut auth, &f, &header, T0 + 59 * MIN), Ok(()));
        assert_eq!(go(&mut auth, &f, &header, T0 + 60 * MIN), Ok(()));
        assert_eq!(
            go(&mut auth, &f, &header, T0 + 60 * MIN + 1000),
            Err(Reason::ExpiredProviderToken)
        );
        // A fresh connection is told the same.
        let mut fresh = TokenAuth::new();
        assert_eq!(
            go(&mut fresh, &f, &header, T0 + 61 * MIN),
            Err(Reason::ExpiredProviderToken)
        );
        // Issued in the future beyond the skew allowance.
        let ahead = f.bearer(DEFAULT_KEY_ID, T0 + 6 * MIN);
        assert_eq!(
            go(&mut fresh, &f, &ahead, T0),
            Err(Reason::InvalidProviderToken)
        );
        let near = f.bearer(DEFAULT_KEY_ID, T0 + 4 * MIN);
        assert_eq!(go(&mut fresh, &f, &near, T0), Ok(()));
    }

    #[test]
    fn twenty_minute_rule() {
        let f = fixture();
        let first = f.bearer(DEFAULT_KEY_ID, T0);
        let second = f.bearer(DEFAULT_KEY_ID, T0 + 1000);
        let mut auth = TokenAuth::new();
        assert_eq!(go(&mut auth, &f, &first, T0), Ok(()));
        // The same token again is fine at any rate.
        assert_eq!(go(&mut auth, &f, &first, T0 + 1000), Ok(()));
        assert_eq!(
            go(&mut auth, &f, &second, T0 + 19 * MIN),
            Err(Reason::TooManyProviderTokenUpdates)
        );
        // The refused update did not replace the current token.
        assert_eq!(go(&mut auth, &f, &first, T0 + 19 * MIN), Ok(()));
        assert_eq!(go(&mut auth, &f, &second, T0 + 20 * MIN), Ok(()));
        // Now `second` is current, first used at +20 min: switching back needs until +40.
        assert_eq!(
            go(&mut auth, &f, &first, T0 + 39 * MIN),
            Err(Reason::TooManyProviderTokenUpdates)
        );
        assert_eq!(go(&mut auth, &f, &first, T0 + 40 * MIN), Ok(()));
    }

    #[test]
    fn team_and_key_pinning() {
        let f = fixture();
        let mut auth = TokenAuth::new();
        assert_eq!(go(&mut auth, &f, &f.bearer(DEFAULT_KEY_ID, T0), T0), Ok(()));
        let later = T0 + 30 * MIN;
        assert_eq!(
            go(&mut auth, &f, &f.bearer("OTHERKEY01", later), later),
            Err(Reason::InvalidProviderToken)
        );
        assert_eq!(
            auth.authorize(
                Some(f.bearer("TOPICKEY01", later).as_bytes()),
                "com.only",
                later,
                &f.keys
            ),
            Err(Reason::UnrelatedKeyIdInToken)
        );
        // Another team-scoped key of the same team is related.
        assert_eq!(
            go(&mut auth, &f, &f.bearer("TEAMKEY002", later), later),
            Ok(())
        );
    }

    #[test]
    fn topic_specific_keys() {
        let f = fixture();
        let header = f.bearer("TOPICKEY01", T0);
        let mut auth = TokenAuth::new();
        assert_eq!(
            auth.authorize(Some(header.as_bytes()), "com.example.app", T0, &f.keys),
            Err(Reason::TopicDisallowed)
        );
        assert!(!auth.has_valid_token(), "a refused request changes nothing");
        assert_eq!(
            auth.authorize(Some(header.as_bytes()), "com.only", T0, &f.keys),
            Ok(())
        );
        assert_eq!(auth.team(), Some(DEFAULT_TEAM_ID));
    }
}
