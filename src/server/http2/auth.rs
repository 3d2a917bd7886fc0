//! Token-based (JWT) authentication of one HTTP/2 connection: a small state machine fed with
//! each request's `authorization` header and the time, so every rule is unit-tested with
//! explicit clocks instead of waiting (spec §4.7).
//!
//! Rules, checked in this order for each request on a connection without a certificate:
//!
//! 1. no `authorization`, or `bearer` with nothing after it → 403 `MissingProviderToken`;
//!    another scheme → 403 `InvalidProviderToken`;
//! 2. the token is verified by [`jwt::verify`] (shape, `alg` ES256, known `kid`, signature as
//!    JOSE `R||S` or DER, `iss` owning the key, `iat` a number or a digit string) → else 403
//!    `InvalidProviderToken`; a token identical to the connection's current one is not
//!    verified again. An unknown `kid` first makes the simulator re-read its certificate
//!    folder ([`TokenKeys`]), at most once per [`Settings::pki_reread_interval`];
//! 3. `iat` more than an hour old → 403 `ExpiredProviderToken`; `iat` more than
//!    [`Settings::max_iat_ahead`] in the future, or in milliseconds → 403
//!    `ExpiredProviderToken` too (see "A future `iat`" below);
//! 4. the connection's first accepted push pins its team and key: another team → 403
//!    `InvalidProviderToken` (as Pushy's mock answers; Apple says only "an error"); another
//!    key of the same team → 403 `UnrelatedKeyIdInToken` unless both keys are team-scoped
//!    (team keys are interchangeable, a topic-specific key is related only to itself);
//! 5. a token different from the current one less than 20 minutes after the current one was
//!    first used → 429 `TooManyProviderTokenUpdates` (the current token stays in force),
//!    unless the current token has expired: then it may be replaced at once, or the
//!    connection would be wedged for the rest of the 20 minutes;
//! 6. a topic-specific key whose topics do not include the request's app → 400
//!    `TopicDisallowed`;
//! 7. a bundle owned by other teams than the token's (certificates and keys minted for a
//!    team, the demo topics under the default team; [`KeyStore::owners_of`]) → 400
//!    `TopicDisallowed`. A bundle nobody owns is open to every team.
//!
//! Only a request that passes every rule changes the state: it may make its token the
//! current one, pins the connection on the first push, and lifts the one-stream limit
//! ([`TokenAuth::has_valid_token`]). Every refusal is a [`TokenRefusal`]: Apple's reason and
//! the cause in words, logged at info level with the connection's peer address.
//!
//! # Evidence for the choices Apple does not document
//!
//! - **A future `iat`**: Apple says the `iat` "must be no more than one hour from the
//!   current time" (spec §4.7, \[A9\]), which reads both ways. The one observation is
//!   node-apn#590: a provider whose clock ran an hour fast got 429
//!   `TooManyProviderTokenUpdates` on every push. node-apn regenerates its token only on 403
//!   `ExpiredProviderToken`, so APNs must have answered that to the future `iat`, then 429
//!   to the regenerated token. So: more than [`Settings::max_iat_ahead`] (one hour) ahead →
//!   `ExpiredProviderToken`. An `iat` in milliseconds is the same case to APNs (a date
//!   50,000 years ahead) and gets the same reason; the detail says it looks like
//!   milliseconds.
//! - **A bundle of another team**: 400 `TopicDisallowed`, as token-auth users report when
//!   the topic is not one of their team's bundles (node-apn#559, node-apn#517,
//!   parse-community/node-apn#115); Apple's table gives it for a topic the provider may not
//!   push to (\[A8\]). Pushy's mock answers `InvalidProviderToken` instead (\[T3\]), but it
//!   is a mock.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use crate::pki::jwt::{self, JwtError, KeyStore};
use crate::pki::Pki;
use crate::settings::Settings;

use super::response::{Reason, Rejection};

/// A provider token is valid for one hour after its `iat` (Apple: older → expired).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Apple refuses a new token on a connection sooner than 20 minutes after the previous one.
pub const MIN_TOKEN_UPDATE_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Why a request's provider token was refused: Apple's reason, and the cause in words for
/// the log, the hub's record and the `apns-sim-detail` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TokenRefusal {
    /// What Apple answers.
    pub reason: Reason,
    /// What exactly was wrong, e.g. "token issued 3720 s ago; provider tokens expire after
    /// 3600 s". Printable ASCII (values from the token are escaped and cut), so it fits an
    /// HTTP header.
    pub detail: String,
}

impl From<TokenRefusal> for Rejection {
    /// The refusal as the stream answers it: Apple's reason, and the detail for the
    /// `apns-sim-detail` header, the log and the hub's record.
    fn from(refusal: TokenRefusal) -> Self {
        Rejection::new(refusal.reason, refusal.detail)
    }
}

impl TokenRefusal {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        TokenRefusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// How the simulator reads a refused token's [`JwtError`]: every verification failure is
/// `InvalidProviderToken` except an `iat` in milliseconds, which is a time rule (see the
/// module docs).
fn refusal_for(err: &JwtError) -> TokenRefusal {
    let reason = match err {
        JwtError::IatMilliseconds(_) => Reason::ExpiredProviderToken,
        _ => Reason::InvalidProviderToken,
    };
    TokenRefusal::new(reason, err.to_string())
}

/// The auth keys every token connection of an endpoint shares, kept current with the
/// certificate folder: a token naming an unknown key makes it re-read the folder's manifest
/// and `.p8` files ([`Pki::read_auth_keys`]) once before the token is refused, so keys minted
/// while the simulator runs work without a restart. Re-reads are at most one per
/// [`Settings::pki_reread_interval`], so a flood of unknown key ids costs one small read per
/// interval, not one per request; the read is a few small files, done inline.
#[derive(Debug)]
pub struct TokenKeys {
    /// The keys in force; replaced whole by a re-read.
    store: RwLock<Arc<KeyStore>>,
    /// The folder the PKI was loaded from (`None`: an in-memory PKI, never re-read).
    folder: Option<PathBuf>,
    /// When the folder was last re-read (ms since the epoch), held while reading so only
    /// one connection reads at a time.
    last_reread_ms: Mutex<Option<u64>>,
    /// Least time between two re-reads.
    reread_interval: Duration,
    /// How far ahead of the clock an `iat` may be.
    max_iat_ahead: Duration,
    /// Owners given beside the PKI (a scenario's `[teams]`), applied again after every
    /// re-read so a re-read never forgets them.
    extra_owners: Vec<(String, String)>,
}

/// What an attempt to re-read the folder did.
enum Reread {
    /// Read now: the new keys.
    Done(Arc<KeyStore>),
    /// Read too recently (this long ago, ms): the keys as they are.
    TooSoon(Arc<KeyStore>, u64),
    /// The folder could not be read: why.
    Failed(String),
}

impl TokenKeys {
    /// The keys of a PKI, never re-read, with the time rules of `settings`.
    pub fn new(store: KeyStore, settings: &Settings) -> Self {
        TokenKeys {
            store: RwLock::new(Arc::new(store)),
            folder: None,
            last_reread_ms: Mutex::new(None),
            reread_interval: settings.pki_reread_interval,
            max_iat_ahead: settings.max_iat_ahead,
            extra_owners: Vec::new(),
        }
    }

    /// Adds `(bundle, team)` owners beyond the PKI's (a scenario file's `[teams]`).
    pub fn with_bundle_owners(mut self, owners: Vec<(String, String)>) -> Self {
        if !owners.is_empty() {
            let store = self.store.get_mut().unwrap_or_else(PoisonError::into_inner);
            Arc::make_mut(store).add_bundle_owners(&owners);
        }
        self.extra_owners = owners;
        self
    }

    /// Re-reads `folder` when a token names an unknown key.
    pub fn with_folder(mut self, folder: Option<PathBuf>) -> Self {
        self.folder = folder;
        self
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<KeyStore> {
        self.store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Verifies a token; an unknown key id re-reads the folder (if any, and if allowed) and
    /// tries once more.
    fn verify(
        &self,
        jwt_text: &str,
        now_ms: u64,
    ) -> Result<(jwt::VerifiedToken, Arc<KeyStore>), TokenRefusal> {
        let store = self.current();
        let err = match jwt::verify(jwt_text, &store) {
            Ok(token) => return Ok((token, store)),
            Err(err) => err,
        };
        let (JwtError::UnknownKey { .. }, Some(folder)) = (&err, &self.folder) else {
            return Err(refusal_for(&err));
        };
        let folder = folder.display();
        let (store, note) = match self.reread(now_ms) {
            Reread::Done(store) => (store, format!("not in {folder} either (re-read now)")),
            Reread::TooSoon(store, ago_ms) => (
                store,
                format!(
                    "{folder} was re-read {ago_ms} ms ago and is re-read at most once per {:?}",
                    self.reread_interval
                ),
            ),
            Reread::Failed(why) => {
                let refusal = refusal_for(&err);
                return Err(TokenRefusal::new(
                    refusal.reason,
                    format!("{}; re-reading {folder} failed: {why}", refusal.detail),
                ));
            }
        };
        match jwt::verify(jwt_text, &store) {
            Ok(token) => Ok((token, store)),
            Err(err @ JwtError::UnknownKey { .. }) => {
                let refusal = refusal_for(&err);
                Err(TokenRefusal::new(
                    refusal.reason,
                    format!("{}; {note}", refusal.detail),
                ))
            }
            Err(err) => Err(refusal_for(&err)),
        }
    }

    /// Re-reads the folder unless it was re-read less than the interval ago.
    fn reread(&self, now_ms: u64) -> Reread {
        let Some(folder) = &self.folder else {
            return Reread::Failed("no folder".to_owned());
        };
        let mut last = self
            .last_reread_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let interval_ms = u64::try_from(self.reread_interval.as_millis()).unwrap_or(u64::MAX);
        if let Some(at) = *last {
            let ago = now_ms.saturating_sub(at);
            if ago < interval_ms {
                return Reread::TooSoon(self.current(), ago);
            }
        }
        *last = Some(now_ms);
        let read = Pki::read_auth_keys(folder)
            .map_err(|e| e.to_string())
            .and_then(|keys| KeyStore::from_folder(&keys).map_err(|e| e.to_string()))
            .map(|mut store| {
                store.add_bundle_owners(&self.extra_owners);
                store
            });
        match read {
            Ok(store) => {
                let store = Arc::new(store);
                info!(
                    folder = %folder.display(),
                    keys = store.len(),
                    "auth keys re-read for an unknown key id"
                );
                *self.store.write().unwrap_or_else(PoisonError::into_inner) = store.clone();
                Reread::Done(store)
            }
            Err(why) => {
                warn!(folder = %folder.display(), %why, "re-reading auth keys failed; keeping the old ones");
                Reread::Failed(why)
            }
        }
    }
}

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
    /// Who is connected, for the log line of each refusal.
    peer: Option<SocketAddr>,
    current: Option<Current>,
    pin: Option<Pin>,
}

impl TokenAuth {
    /// A connection from `peer` that has not sent a token yet.
    pub fn new(peer: Option<SocketAddr>) -> Self {
        TokenAuth {
            peer,
            ..TokenAuth::default()
        }
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

    /// Applies the rules above to one request for app `bundle` at `now_ms`. A refusal is
    /// logged here, with the peer address, and returned for the answer.
    pub fn authorize(
        &mut self,
        authorization: Option<&[u8]>,
        bundle: &str,
        now_ms: u64,
        keys: &TokenKeys,
    ) -> Result<(), TokenRefusal> {
        let result = self.check(authorization, bundle, now_ms, keys);
        if let Err(refusal) = &result {
            let peer = self
                .peer
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            info!(
                %peer,
                reason = refusal.reason.as_str(),
                detail = %refusal.detail,
                "provider token refused"
            );
        }
        result
    }

    fn check(
        &mut self,
        authorization: Option<&[u8]>,
        bundle: &str,
        now_ms: u64,
        keys: &TokenKeys,
    ) -> Result<(), TokenRefusal> {
        let jwt_text = bearer(authorization)?;

        // 2. Verify (or recognise the current token).
        let same = self.current.as_ref().is_some_and(|c| c.jwt == jwt_text);
        // The current token is borrowed, not cloned: most requests carry it.
        let (token, store) = match &self.current {
            Some(c) if same => (Cow::Borrowed(&c.token), keys.current()),
            _ => {
                let (token, store) = keys.verify(jwt_text, now_ms)?;
                (Cow::Owned(token), store)
            }
        };

        // 3. Lifetime.
        let now_secs = now_ms / 1000;
        let lifetime = TOKEN_LIFETIME.as_secs();
        if now_secs > token.issued_at.saturating_add(lifetime) {
            return Err(TokenRefusal::new(
                Reason::ExpiredProviderToken,
                format!(
                    "token issued {} s ago (iat {}); provider tokens expire after {lifetime} s",
                    now_secs - token.issued_at,
                    token.issued_at
                ),
            ));
        }
        let ahead = keys.max_iat_ahead.as_secs();
        if token.issued_at > now_secs.saturating_add(ahead) {
            return Err(TokenRefusal::new(
                Reason::ExpiredProviderToken,
                format!(
                    "token issued {} s in the future (iat {}, now {now_secs}); an iat may be at \
                     most {ahead} s ahead: is the provider's clock right?",
                    token.issued_at - now_secs,
                    token.issued_at
                ),
            ));
        }

        // 4. Team and key binding.
        let key_topics = store.topics_for(&token.key_id).unwrap_or(&[]);
        let team_scoped = key_topics.is_empty();
        if let Some(pin) = &self.pin {
            if pin.team_id != token.team_id {
                return Err(TokenRefusal::new(
                    Reason::InvalidProviderToken,
                    format!(
                        "token of team {} on a connection pinned to team {} by its first push; \
                         APNs allows one team per connection",
                        token.team_id, pin.team_id
                    ),
                ));
            }
            if pin.key_id != token.key_id && !(pin.team_scoped && team_scoped) {
                let kind = |scoped| {
                    if scoped {
                        "team-scoped"
                    } else {
                        "topic-specific"
                    }
                };
                return Err(TokenRefusal::new(
                    Reason::UnrelatedKeyIdInToken,
                    format!(
                        "{} key {} is unrelated to {} key {} pinned by the connection's first \
                         push",
                        kind(team_scoped),
                        token.key_id,
                        kind(pin.team_scoped),
                        pin.key_id
                    ),
                ));
            }
        }

        // 5. Token updates: at most one per 20 minutes, unless the current token expired.
        if !same {
            if let Some(c) = &self.current {
                let since_ms = now_ms.saturating_sub(c.first_used_ms);
                let current_expired = now_secs > c.token.issued_at.saturating_add(lifetime);
                let min_ms = MIN_TOKEN_UPDATE_INTERVAL.as_millis() as u64;
                if since_ms < min_ms && !current_expired {
                    return Err(TokenRefusal::new(
                        Reason::TooManyProviderTokenUpdates,
                        format!(
                            "a new token {} s after the connection's current one was first \
                             used; APNs allows one update per {} s on a connection (keep \
                             sending the current token, valid for {} s more)",
                            since_ms / 1000,
                            MIN_TOKEN_UPDATE_INTERVAL.as_secs(),
                            (c.token.issued_at + lifetime).saturating_sub(now_secs)
                        ),
                    ));
                }
            }
        }

        // 6. Topic-specific keys.
        if !team_scoped && !key_topics.iter().any(|t| t == bundle) {
            return Err(TokenRefusal::new(
                Reason::TopicDisallowed,
                format!(
                    "key {} may push only to {}, not to {}",
                    token.key_id,
                    key_topics.join(", "),
                    jwt::quote(bundle)
                ),
            ));
        }

        // 7. The bundle must be the team's (when any team owns it).
        if let Some(owners) = store.owners_of(bundle) {
            if !owners.contains(&token.team_id) {
                return Err(TokenRefusal::new(
                    Reason::TopicDisallowed,
                    format!(
                        "bundle {bundle} belongs to team {}, not to the token's team {}",
                        owners.join(", "),
                        token.team_id
                    ),
                ));
            }
        }

        if self.pin.is_none() {
            self.pin = Some(Pin {
                team_id: token.team_id.clone(),
                key_id: token.key_id.clone(),
                team_scoped,
            });
        }
        if !same {
            let token = token.into_owned();
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
fn bearer(authorization: Option<&[u8]>) -> Result<&str, TokenRefusal> {
    let missing = |detail| TokenRefusal::new(Reason::MissingProviderToken, detail);
    let value = authorization.ok_or_else(|| {
        missing("no authorization header on a connection without a client certificate")
    })?;
    let text = std::str::from_utf8(value).map_err(|_| {
        TokenRefusal::new(
            Reason::InvalidProviderToken,
            "the authorization header is not UTF-8",
        )
    })?;
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("bearer") {
        return Err(missing("the authorization header holds no token"));
    }
    match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            let jwt = rest.trim();
            if jwt.is_empty() {
                Err(missing("the authorization header holds no token"))
            } else {
                Ok(jwt)
            }
        }
        _ => Err(TokenRefusal::new(
            Reason::InvalidProviderToken,
            format!(
                "authorization scheme {} is not bearer",
                jwt::quote(text.split(' ').next().unwrap_or(""))
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DEFAULT_KEY_ID, DEFAULT_TEAM_ID};

    const MIN: u64 = 60_000;

    struct Fixture {
        pki: Pki,
        keys: TokenKeys,
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
        let keys = TokenKeys::new(KeyStore::from_pki(&pki).unwrap(), &Settings::default());
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
            .map_err(|r| r.reason)
    }

    #[test]
    fn missing_and_malformed_headers() {
        let f = fixture();
        let mut auth = TokenAuth::new(None);
        assert_eq!(
            auth.authorize(None, "a", T0, &f.keys).map_err(|r| r.reason),
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
            let mut auth = TokenAuth::new(None);
            assert_eq!(go(&mut auth, &f, &format!("bearer {jwt_text}"), T0), Ok(()));
            assert!(auth.has_valid_token());
            assert_eq!(auth.team(), Some(DEFAULT_TEAM_ID));
        }
        // The scheme is case-insensitive.
        let mut auth = TokenAuth::new(None);
        let header = f.bearer(DEFAULT_KEY_ID, T0).replacen("bearer", "Bearer", 1);
        assert_eq!(go(&mut auth, &f, &header, T0), Ok(()));
    }

    #[test]
    fn tampered_or_unknown_tokens_are_invalid() {
        let f = fixture();
        let mut auth = TokenAuth::new(None);
        let good = f.bearer(DEFAULT_KEY_ID, T0);
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            go(&mut auth, &f, &tampered, T0),
            Err(Reason::InvalidProviderToken)
        );
        let empty_store = TokenKeys::new(KeyStore::new(), &Settings::default());
        assert_eq!(
            auth.authorize(Some(good.as_bytes()), "com.example.app", T0, &empty_store)
                .map_err(|r| r.reason),
            Err(Reason::InvalidProviderToken)
        );
        assert!(!auth.has_valid_token());
    }

    #[test]
    fn one_hour_lifetime() {
        let f = fixture();
        let header = f.bearer(DEFAULT_KEY_ID, T0);
        let mut auth = TokenAuth::new(None);
        assert_eq!(go(&mut auth, &f, &header, T0 + 59 * MIN), Ok(()));
        assert_eq!(go(&mut auth, &f, &header, T0 + 60 * MIN), Ok(()));
        assert_eq!(
            go(&mut auth, &f, &header, T0 + 60 * MIN + 1000),
            Err(Reason::ExpiredProviderToken)
        );
        // A fresh connection is told the same.
        let mut fresh = TokenAuth::new(None);
        assert_eq!(
            go(&mut fresh, &f, &header, T0 + 61 * MIN),
            Err(Reason::ExpiredProviderToken)
        );
        // Issued more than an hour in the future: expired, as node-apn#590 shows APNs says.
        let ahead = f.bearer(DEFAULT_KEY_ID, T0 + 61 * MIN);
        assert_eq!(
            go(&mut fresh, &f, &ahead, T0),
            Err(Reason::ExpiredProviderToken)
        );
        let near = f.bearer(DEFAULT_KEY_ID, T0 + 59 * MIN);
        assert_eq!(go(&mut fresh, &f, &near, T0), Ok(()));
    }

    #[test]
    fn every_refusal_says_why() {
        let f = fixture();
        let refused = |auth: &mut TokenAuth, header: Option<&str>, bundle: &str, now: u64| {
            auth.authorize(header.map(str::as_bytes), bundle, now, &f.keys)
                .unwrap_err()
        };
        let app = "com.example.app";
        let mut auth = TokenAuth::new(None);
        let expired = refused(
            &mut auth,
            Some(&f.bearer(DEFAULT_KEY_ID, T0)),
            app,
            T0 + 62 * MIN,
        );
        assert_eq!(expired.reason, Reason::ExpiredProviderToken);
        assert_eq!(
            expired.detail,
            "token issued 3720 s ago (iat 1700000000); provider tokens expire after 3600 s"
        );
        assert_eq!(
            expired.to_string(),
            format!("ExpiredProviderToken: {}", expired.detail)
        );
        let future = refused(
            &mut auth,
            Some(&f.bearer(DEFAULT_KEY_ID, T0 + 70 * MIN)),
            app,
            T0,
        );
        assert!(
            future
                .detail
                .starts_with("token issued 4200 s in the future"),
            "{future}"
        );
        let millis = {
            let key = f.pki.auth_key(DEFAULT_KEY_ID).unwrap();
            format!("bearer {}", jwt::sign(key, T0).unwrap())
        };
        let millis = refused(&mut auth, Some(&millis), app, T0);
        assert_eq!(millis.reason, Reason::ExpiredProviderToken);
        assert_eq!(
            millis.detail,
            "iat 1700000000000 looks like milliseconds; APNs expects seconds"
        );
        let unknown = TokenKeys::new(KeyStore::new(), &Settings::default());
        let err = auth
            .authorize(
                Some(f.bearer(DEFAULT_KEY_ID, T0).as_bytes()),
                app,
                T0,
                &unknown,
            )
            .unwrap_err();
        assert_eq!(err.reason, Reason::InvalidProviderToken);
        assert_eq!(err.detail, r#"unknown key id "SIMKEY0001"; known: none"#);
        let missing = refused(&mut auth, None, app, T0);
        assert_eq!(missing.reason, Reason::MissingProviderToken);
        assert!(missing.detail.contains("no authorization header"));
        let basic = refused(&mut auth, Some("Basic abc"), app, T0);
        assert_eq!(
            basic.detail,
            r#"authorization scheme "Basic" is not bearer"#
        );
        let topic = refused(&mut auth, Some(&f.bearer("TOPICKEY01", T0)), app, T0);
        assert_eq!(
            topic.detail,
            r#"key TOPICKEY01 may push only to com.only, not to "com.example.app""#
        );

        // Updates too soon, and another team, on a pinned connection.
        assert_eq!(go(&mut auth, &f, &f.bearer(DEFAULT_KEY_ID, T0), T0), Ok(()));
        let soon = refused(
            &mut auth,
            Some(&f.bearer(DEFAULT_KEY_ID, T0 + MIN)),
            app,
            T0 + MIN,
        );
        assert_eq!(soon.reason, Reason::TooManyProviderTokenUpdates);
        assert!(soon.detail.contains("60 s after"), "{soon}");
        let team = refused(
            &mut auth,
            Some(&f.bearer("OTHERKEY01", T0 + MIN)),
            app,
            T0 + MIN,
        );
        assert_eq!(
            team.detail,
            "token of team OTHERTEAM1 on a connection pinned to team SIMTEAM001 by its first \
             push; APNs allows one team per connection"
        );
    }

    #[test]
    fn an_expired_token_is_replaced_at_once() {
        let f = fixture();
        let mut auth = TokenAuth::new(None);
        assert_eq!(go(&mut auth, &f, &f.bearer(DEFAULT_KEY_ID, T0), T0), Ok(()));
        // 55 minutes on, a fresh token is first used; it is the current one from then on.
        let second = f.bearer(DEFAULT_KEY_ID, T0 + 55 * MIN);
        assert_eq!(go(&mut auth, &f, &second, T0 + 55 * MIN), Ok(()));
        // Ten minutes later `second` is still valid: a third token is too soon.
        let third = f.bearer(DEFAULT_KEY_ID, T0 + 65 * MIN);
        assert_eq!(
            go(&mut auth, &f, &third, T0 + 65 * MIN),
            Err(Reason::TooManyProviderTokenUpdates)
        );
        // A connection whose current token expired 5 minutes after it was first used (its
        // iat was old): the replacement is accepted at once, not 20 minutes later.
        let mut late = TokenAuth::new(None);
        let old = f.bearer(DEFAULT_KEY_ID, T0);
        assert_eq!(go(&mut late, &f, &old, T0 + 55 * MIN), Ok(()));
        assert_eq!(
            go(&mut late, &f, &old, T0 + 61 * MIN),
            Err(Reason::ExpiredProviderToken)
        );
        let fresh = f.bearer(DEFAULT_KEY_ID, T0 + 61 * MIN);
        assert_eq!(go(&mut late, &f, &fresh, T0 + 61 * MIN), Ok(()));
    }

    #[test]
    fn teams_own_their_bundles() {
        let f = fixture();
        // OTHERTEAM1 owns com.theirs through a topic-specific key; SIMTEAM001 owns the demo
        // topics and com.only.
        let mut store = KeyStore::from_pki(&f.pki).unwrap();
        store.add_bundle_owner("com.theirs", "OTHERTEAM1");
        let keys = TokenKeys::new(store, &Settings::default());
        let push = |auth: &mut TokenAuth, key: &str, bundle: &str| {
            auth.authorize(Some(f.bearer(key, T0).as_bytes()), bundle, T0, &keys)
        };
        let err = push(&mut TokenAuth::new(None), DEFAULT_KEY_ID, "com.theirs").unwrap_err();
        assert_eq!(err.reason, Reason::TopicDisallowed);
        assert_eq!(
            err.detail,
            "bundle com.theirs belongs to team OTHERTEAM1, not to the token's team SIMTEAM001"
        );
        let err = push(&mut TokenAuth::new(None), "OTHERKEY01", "com.example.other").unwrap_err();
        assert_eq!(err.reason, Reason::TopicDisallowed);
        assert_eq!(
            push(&mut TokenAuth::new(None), "OTHERKEY01", "com.theirs"),
            Ok(())
        );
        assert_eq!(
            push(
                &mut TokenAuth::new(None),
                DEFAULT_KEY_ID,
                "com.example.other"
            ),
            Ok(())
        );
        // A bundle nobody owns is open to every team.
        assert_eq!(
            push(&mut TokenAuth::new(None), "OTHERKEY01", "com.nobody"),
            Ok(())
        );
    }

    #[test]
    fn unknown_keys_reread_the_folder_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut pki = Pki::generate().unwrap();
        pki.write(dir.path()).unwrap();
        let settings = Settings::default();
        let keys = TokenKeys::new(KeyStore::from_pki(&pki).unwrap(), &settings)
            .with_folder(Some(dir.path().to_owned()));
        let push = |pki: &Pki, key: &str, now: u64| {
            let header = format!(
                "bearer {}",
                jwt::sign(pki.auth_key(key).unwrap(), now / 1000).unwrap()
            );
            TokenAuth::new(None).authorize(Some(header.as_bytes()), "com.example.app", now, &keys)
        };
        pki.mint_auth_key(DEFAULT_TEAM_ID, Some("NEWKEY0001".into()), vec![])
            .unwrap();
        pki.write(dir.path()).unwrap();
        assert_eq!(push(&pki, "NEWKEY0001", T0), Ok(()));
        assert_eq!(keys.current().len(), 2);

        // Another key minted at once is not seen until the interval has passed.
        pki.mint_auth_key(DEFAULT_TEAM_ID, Some("NEWKEY0002".into()), vec![])
            .unwrap();
        pki.write(dir.path()).unwrap();
        let err = push(&pki, "NEWKEY0002", T0 + 999).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidProviderToken);
        assert!(
            err.detail
                .contains("was re-read 999 ms ago and is re-read at most once per 1s"),
            "{err}"
        );
        assert_eq!(push(&pki, "NEWKEY0002", T0 + 1000), Ok(()));

        // A key that is not in the folder either says so.
        let mut stranger = Pki::generate().unwrap();
        stranger
            .mint_auth_key(DEFAULT_TEAM_ID, Some("STRANGER01".into()), vec![])
            .unwrap();
        let err = push(&stranger, "STRANGER01", T0 + 5000).unwrap_err();
        assert!(err.detail.contains("either (re-read now)"), "{err}");
        assert!(
            err.detail.starts_with(
                r#"unknown key id "STRANGER01"; known: NEWKEY0001, NEWKEY0002, SIMKEY0001"#
            ),
            "{err}"
        );

        // A broken folder keeps the keys in force and says why.
        std::fs::write(dir.path().join(crate::pki::MANIFEST_FILE), "not json").unwrap();
        let err = push(&stranger, "STRANGER01", T0 + 9000).unwrap_err();
        assert!(err.detail.contains("re-reading"), "{err}");
        assert!(err.detail.contains("invalid manifest"), "{err}");
        assert_eq!(push(&pki, "NEWKEY0002", T0 + 9000), Ok(()));
    }

    #[test]
    fn twenty_minute_rule() {
        let f = fixture();
        let first = f.bearer(DEFAULT_KEY_ID, T0);
        let second = f.bearer(DEFAULT_KEY_ID, T0 + 1000);
        let mut auth = TokenAuth::new(None);
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
        let mut auth = TokenAuth::new(None);
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
            )
            .map_err(|r| r.reason),
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
        let mut auth = TokenAuth::new(None);
        assert_eq!(
            auth.authorize(Some(header.as_bytes()), "com.example.app", T0, &f.keys)
                .map_err(|r| r.reason),
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
