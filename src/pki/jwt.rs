//! ES256 provider tokens for token-based auth on the HTTP/2 API (§4.7 of the reference).
//!
//! A provider token is a JWS in compact form: `base64url(header).base64url(claims).
//! base64url(signature)`, header `{"alg":"ES256","kid":<key id>}`, claims
//! `{"iss":<team id>,"iat":<seconds>}`, signed with the P-256 key of a `.p8` file.
//!
//! [`verify`] checks shape, algorithm, key, signature and claims, in that order, so no claim
//! is interpreted before the signature over it holds. Like APNs it accepts the signature as
//! JOSE `R||S` (64 bytes) or as DER. Time rules (older than an hour, issued in the future,
//! refreshed too often) belong to the caller, which owns the clock: [`VerifiedToken`]
//! carries `issued_at` for that.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};

use crate::pki::{AuthKey, KeyFolder, Pki};

/// Longest token [`verify`] looks at. A real token is ~200 bytes; the bound keeps a hostile
/// `authorization` header from costing more than a small decode.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The only signing algorithm APNs accepts.
pub const ALGORITHM: &str = "ES256";

/// The largest `iat` read as seconds. 10^11 seconds is the year 5138, while 10^11
/// milliseconds is March 1973: any `iat` above it from a clock set after 1973 is
/// milliseconds (a common provider bug: JavaScript's `Date.now()`), and no honest seconds
/// value reaches it.
pub const MAX_IAT_SECONDS: u64 = 100_000_000_000;

/// How many characters of a value taken from a token (a key id, an issuer, an algorithm)
/// an error quotes: enough to recognise it, and it keeps a hostile token from making the
/// log line or the `apns-sim-detail` header long.
pub const MAX_QUOTED_CHARS: usize = 64;

/// How many known key ids an unknown-key error lists before "and N more".
const MAX_LISTED_KEYS: usize = 8;

/// Why a provider token was not accepted. The caller maps each to Apple's reason (403
/// `InvalidProviderToken` for all but [`JwtError::IatMilliseconds`], which is a time rule);
/// the message is the detail in words, with values from the token quoted, escaped to ASCII
/// and cut to [`MAX_QUOTED_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of bounded size; the text says which rule failed.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header is not a JSON object.
    #[error("token header is not a JSON object")]
    BadHeader,
    /// `alg` is missing or not `ES256` (including `none` and HMAC algorithms).
    #[error("token algorithm {found} is not ES256, the only one APNs accepts")]
    WrongAlgorithm {
        /// The `alg` string (quoted and cut), the JSON type of a non-string, or `missing`.
        found: String,
    },
    /// The header has no string `kid`.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// No auth key with this key id is known.
    #[error("unknown key id {}; known: {}", quote(key_id), list(known))]
    UnknownKey {
        /// The `kid` of the token (cut to [`MAX_QUOTED_CHARS`]).
        key_id: String,
        /// The key ids the store holds, sorted.
        known: Vec<String>,
    },
    /// The claims are not a JSON object with a string `iss` and an `iat` of seconds.
    #[error("bad token claims: {0}")]
    BadClaims(String),
    /// `iat` is above [`MAX_IAT_SECONDS`]: milliseconds where APNs expects seconds.
    #[error("iat {0} looks like milliseconds; APNs expects seconds")]
    IatMilliseconds(String),
    /// `iss` is not the team that owns the key.
    #[error(
        "token issuer {} is not the team of key {key_id} (team {expected})",
        quote(found)
    )]
    TeamMismatch {
        /// The key id.
        key_id: String,
        /// The key's team id.
        expected: String,
        /// The `iss` claim.
        found: String,
    },
    /// The signature does not decode or does not verify over `header.claims`.
    #[error("token signature does not verify with key {key_id}: {why}")]
    BadSignature {
        /// The key it was checked against.
        key_id: String,
        /// Which step failed.
        why: &'static str,
    },
    /// The `.p8` key to sign with (or to verify against) is not a P-256 PKCS#8 key: the
    /// user has to replace that file, so the message names the key and the file.
    #[error("auth key {key_id} ({file}): not a P-256 private key in PKCS#8 PEM form")]
    BadKey {
        /// The key id (`kid`) of the unusable key.
        key_id: String,
        /// Its file name as Apple issues it and the PKI directory stores it,
        /// `AuthKey_<KEYID>.p8` ([`AuthKey::file_name`]).
        file: String,
    },
}

/// A value from a token as an error quotes it: in quotes, escaped to printable ASCII, at
/// most [`MAX_QUOTED_CHARS`] characters of it.
pub fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars().take(MAX_QUOTED_CHARS) {
        out.extend(c.escape_default());
    }
    if value.chars().count() > MAX_QUOTED_CHARS {
        out.push_str("...");
    }
    out.push('"');
    out
}

/// `A, B, C and 5 more`, or `none`.
fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        return "none".to_owned();
    }
    let shown = ids[..ids.len().min(MAX_LISTED_KEYS)].join(", ");
    match ids.len().saturating_sub(MAX_LISTED_KEYS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// What a valid token says, for the caller's lifetime and connection-binding rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `kid` header: which key signed it.
    pub key_id: String,
    /// The `iss` claim: the team, already checked to own the key.
    pub team_id: String,
    /// The `iat` claim in seconds since the epoch; the caller rejects tokens older than an
    /// hour (`ExpiredProviderToken`) or from the future.
    pub issued_at: u64,
}

/// One verification key with what it is allowed to sign for.
#[derive(Debug, Clone)]
struct KeyEntry {
    team_id: String,
    topics: Vec<String>,
    key: VerifyingKey,
}

/// The public halves of the auth keys the simulator accepts, by key id, and which team owns
/// which bundle. Cloneable so each endpoint can hold its own copy.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, KeyEntry>,
    /// Bundle id → the teams that own it (usually one).
    owners: HashMap<String, Vec<String>>,
}

impl KeyStore {
    /// An empty store, which rejects every token.
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    /// Every auth key of the PKI, and its bundle owners ([`Pki::bundle_owners`]).
    pub fn from_pki(pki: &Pki) -> Result<KeyStore, JwtError> {
        KeyStore::from_parts(pki.auth_keys(), &pki.bundle_owners())
    }

    /// What [`Pki::read_auth_keys`] read from a PKI directory.
    pub fn from_folder(folder: &KeyFolder) -> Result<KeyStore, JwtError> {
        KeyStore::from_parts(&folder.auth_keys, &folder.bundle_owners)
    }

    /// Auth keys and `(bundle, team)` ownership pairs.
    pub fn from_parts(
        keys: &[AuthKey],
        bundle_owners: &[(String, String)],
    ) -> Result<KeyStore, JwtError> {
        let mut store = KeyStore::new();
        for key in keys {
            store.insert_auth_key(key)?;
        }
        store.add_bundle_owners(bundle_owners);
        Ok(store)
    }

    /// Adds every `(bundle, team)` pair with [`KeyStore::add_bundle_owner`].
    pub fn add_bundle_owners(&mut self, owners: &[(String, String)]) {
        for (bundle, team) in owners {
            self.add_bundle_owner(bundle, team);
        }
    }

    /// Adds (or replaces) a key. Empty `topics` means team-scoped: any topic of the team.
    pub fn insert(
        &mut self,
        key_id: String,
        team_id: String,
        topics: Vec<String>,
        key: VerifyingKey,
    ) {
        self.keys.insert(
            key_id,
            KeyEntry {
                team_id,
                topics,
                key,
            },
        );
    }

    /// Adds the public half of a `.p8` auth key.
    pub fn insert_auth_key(&mut self, key: &AuthKey) -> Result<(), JwtError> {
        let verifying = *signing_key(key)?.verifying_key();
        self.insert(
            key.key_id.clone(),
            key.team_id.clone(),
            key.topics.clone(),
            verifying,
        );
        Ok(())
    }

    /// Records that `team` owns `bundle`.
    pub fn add_bundle_owner(&mut self, bundle: &str, team: &str) {
        let teams = self.owners.entry(bundle.to_owned()).or_default();
        if !teams.iter().any(|t| t == team) {
            teams.push(team.to_owned());
        }
    }

    /// The teams that own `bundle`, or `None` for a bundle no certificate, key or demo
    /// device names (which any team may push to: the simulator cannot know its owner).
    pub fn owners_of(&self, bundle: &str) -> Option<&[String]> {
        self.owners.get(bundle).map(Vec::as_slice)
    }

    /// The topics a key is limited to (`Some(&[])` for a team-scoped key), or `None` for an
    /// unknown key.
    pub fn topics_for(&self, key_id: &str) -> Option<&[String]> {
        self.keys.get(key_id).map(|e| e.topics.as_slice())
    }

    /// The team that owns a key.
    pub fn team_for(&self, key_id: &str) -> Option<&str> {
        self.keys.get(key_id).map(|e| e.team_id.as_str())
    }

    /// Every key id, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether a key with this id is known.
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn signing_key(key: &AuthKey) -> Result<SigningKey, JwtError> {
    SigningKey::from_pkcs8_pem(&key.p8_pem).map_err(|_| JwtError::BadKey {
        key_id: key.key_id.clone(),
        file: key.file_name(),
    })
}

/// A token of `key` over `claims` with the standard header, its signature `R||S` or DER.
fn sign_json(key: &AuthKey, claims: &Value, der: bool) -> Result<String, JwtError> {
    let signer = signing_key(key)?;
    let header = json!({ "alg": ALGORITHM, "kid": key.key_id });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = signer.sign(input.as_bytes());
    let bytes = if der {
        signature.to_der().as_bytes().to_vec()
    } else {
        signature.to_bytes().to_vec()
    };
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn sign_with(key: &AuthKey, issued_at: u64, der: bool) -> Result<String, JwtError> {
    let claims = json!({ "iss": key.team_id, "iat": issued_at });
    sign_json(key, &claims, der)
}

/// A provider token as the JWS standard wants it: 64-byte `R||S` signature.
pub fn sign(key: &AuthKey, issued_at: u64) -> Result<String, JwtError> {
    sign_with(key, issued_at, false)
}

/// The same token with a DER-encoded signature, as some provider libraries send and APNs
/// accepts; used to test that leniency.
pub fn sign_der(key: &AuthKey, issued_at: u64) -> Result<String, JwtError> {
    sign_with(key, issued_at, true)
}

/// A token with the standard header and any claims JSON, signed `R||S`: what a provider
/// library with its own idea of the claims sends (an `iat` as a float or a digit string),
/// for tests of how [`verify`] reads them.
pub fn sign_claims(key: &AuthKey, claims: &Value) -> Result<String, JwtError> {
    sign_json(key, claims, false)
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))
}

/// Verifies a provider token (the text after `bearer `) against the known keys.
pub fn verify(jwt: &str, keys: &KeyStore) -> Result<VerifiedToken, JwtError> {
    if jwt.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("token longer than 8 KiB"));
    }
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    if header_b64.is_empty() || claims_b64.is_empty() {
        return Err(JwtError::Malformed("empty header or claims"));
    }

    // 1. Header: algorithm and key id.
    let header: Value =
        serde_json::from_slice(&decode_part(header_b64, "header is not base64url")?)
            .map_err(|_| JwtError::BadHeader)?;
    let header = header.as_object().ok_or(JwtError::BadHeader)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALGORITHM => {}
        found => {
            let found = match found {
                Some(Value::String(alg)) => quote(alg),
                Some(other) => json_kind(other).to_owned(),
                None => "missing".to_owned(),
            };
            return Err(JwtError::WrongAlgorithm { found });
        }
    }
    let key_id = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingKeyId)?;
    let entry = keys.keys.get(key_id).ok_or_else(|| JwtError::UnknownKey {
        key_id: key_id.chars().take(MAX_QUOTED_CHARS).collect(),
        known: keys.key_ids(),
    })?;

    // 2. Signature over the exact bytes received, before any claim is believed.
    let bad_signature = |why| JwtError::BadSignature {
        key_id: key_id.to_owned(),
        why,
    };
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| bad_signature("the signature is not base64url"))?;
    let signature = if signature_bytes.len() == 64 {
        Signature::from_slice(&signature_bytes)
    } else {
        Signature::from_der(&signature_bytes)
    }
    .map_err(|_| bad_signature("the signature is neither 64-byte R||S nor DER"))?;
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    let signed = jwt
        .get(..signed_len)
        .ok_or_else(|| bad_signature("the signed part is cut"))?;
    entry
        .key
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| bad_signature("signed by another key, or altered"))?;

    // 3. Claims.
    let claims: Value =
        serde_json::from_slice(&decode_part(claims_b64, "claims are not base64url")?)
            .map_err(|_| JwtError::BadClaims("not JSON".to_owned()))?;
    let claims = claims
        .as_object()
        .ok_or_else(|| JwtError::BadClaims("not a JSON object".to_owned()))?;
    let team_id = match claims.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        Some(_) => return Err(JwtError::BadClaims("iss is not a string".to_owned())),
        None => return Err(JwtError::BadClaims("missing iss".to_owned())),
    };
    let issued_at = issued_at(claims.get("iat"))?;
    if team_id != entry.team_id {
        return Err(JwtError::TeamMismatch {
            key_id: key_id.to_owned(),
            expected: entry.team_id.clone(),
            found: team_id,
        });
    }
    Ok(VerifiedToken {
        key_id: key_id.to_owned(),
        team_id,
        issued_at,
    })
}

/// What a JSON value is, in words.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads `iat` as seconds the way APNs is seen to (spec §4.7): any JSON number, floored
/// (RFC 7519's NumericDate allows fractions; Python's `time.time()` sends them), or a
/// string of decimal digits (APNSwift before its PR #246, kalyke). Booleans, null, arrays,
/// objects, negative numbers and other strings are refused; a value above
/// [`MAX_IAT_SECONDS`] is refused as milliseconds.
fn issued_at(iat: Option<&Value>) -> Result<u64, JwtError> {
    let refused = |what: &str| {
        JwtError::BadClaims(format!(
            "iat is {what}; APNs expects a number of seconds since the epoch"
        ))
    };
    let (seconds, written) = match iat {
        None => return Err(JwtError::BadClaims("missing iat".to_owned())),
        Some(Value::Number(n)) => {
            let seconds = if let Some(whole) = n.as_u64() {
                whole
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 => {
                        // Saturates for values beyond u64 (caught as milliseconds below).
                        f.floor() as u64
                    }
                    _ => return Err(refused(&format!("negative ({n})"))),
                }
            };
            (seconds, n.to_string())
        }
        Some(Value::String(text)) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refused(&format!(
                    "the string {}, not decimal digits",
                    quote(text)
                )));
            }
            // Overflowing digit strings saturate (and are caught as milliseconds below).
            let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
            (seconds, quote(text))
        }
        Some(other) => return Err(refused(json_kind(other))),
    };
    if seconds > MAX_IAT_SECONDS {
        return Err(JwtError::IatMilliseconds(written));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DEFAULT_KEY_ID, DEFAULT_TEAM_ID};

    const IAT: u64 = 1_700_000_000;

    fn setup() -> (Pki, KeyStore) {
        let pki = Pki::generate().unwrap();
        let store = KeyStore::from_pki(&pki).unwrap();
        (pki, store)
    }

    /// Signs arbitrary header and claims JSON with a key, for tests of the later checks.
    fn forge(key: &AuthKey, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature: Signature = signing_key(key).unwrap().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    #[test]
    fn round_trip_both_signature_forms() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let expected = VerifiedToken {
            key_id: DEFAULT_KEY_ID.to_owned(),
            team_id: DEFAULT_TEAM_ID.to_owned(),
            issued_at: IAT,
        };
        let token = sign(key, IAT).unwrap();
        assert_eq!(verify(&token, &store), Ok(expected.clone()));
        let der = sign_der(key, IAT).unwrap();
        assert_ne!(der, token);
        assert_eq!(verify(&der, &store), Ok(expected));

        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header, json!({"alg": "ES256", "kid": DEFAULT_KEY_ID}));
        let signature = URL_SAFE_NO_PAD
            .decode(token.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(signature.len(), 64);
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let token = sign(key, IAT).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let claims =
            URL_SAFE_NO_PAD.encode(json!({"iss": DEFAULT_TEAM_ID, "iat": IAT + 1}).to_string());
        let tampered = format!("{}.{}.{}", parts[0], claims, parts[2]);
        assert!(matches!(
            verify(&tampered, &store),
            Err(JwtError::BadSignature { .. })
        ));

        // A token signed by another key with the same key id.
        let (other_pki, _) = setup();
        let forged = sign(other_pki.auth_key(DEFAULT_KEY_ID).unwrap(), IAT).unwrap();
        let err = verify(&forged, &store).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token signature does not verify with key SIMKEY0001: signed by another key, or altered"
        );

        let truncated = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
        assert!(matches!(
            verify(&truncated, &store),
            Err(JwtError::BadSignature { .. })
        ));
    }

    #[test]
    fn wrong_algorithms() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let claims = json!({"iss": DEFAULT_TEAM_ID, "iat": IAT}).to_string();
        for header in [
            json!({"alg": "none", "kid": DEFAULT_KEY_ID}),
            json!({"alg": "HS256", "kid": DEFAULT_KEY_ID}),
            json!({"alg": "es256", "kid": DEFAULT_KEY_ID}),
            json!({"alg": 256, "kid": DEFAULT_KEY_ID}),
            json!({"kid": DEFAULT_KEY_ID}),
        ] {
            let token = forge(key, &header.to_string(), &claims);
            assert!(
                matches!(verify(&token, &store), Err(JwtError::WrongAlgorithm { .. })),
                "{header}"
            );
        }
        let token = forge(
            key,
            &json!({"alg": "HS256", "kid": DEFAULT_KEY_ID}).to_string(),
            &claims,
        );
        assert_eq!(
            verify(&token, &store).unwrap_err().to_string(),
            r#"token algorithm "HS256" is not ES256, the only one APNs accepts"#
        );
        // Unsigned token, empty signature part.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert!(matches!(
            verify(&unsigned, &store),
            Err(JwtError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn key_id_checks() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let claims = json!({"iss": DEFAULT_TEAM_ID, "iat": IAT}).to_string();
        let token = forge(key, &json!({"alg": "ES256"}).to_string(), &claims);
        assert_eq!(verify(&token, &store), Err(JwtError::MissingKeyId));
        let token = forge(
            key,
            &json!({"alg": "ES256", "kid": "NOSUCHKEY0"}).to_string(),
            &claims,
        );
        let err = verify(&token, &store).unwrap_err();
        assert_eq!(
            err,
            JwtError::UnknownKey {
                key_id: "NOSUCHKEY0".to_owned(),
                known: vec![DEFAULT_KEY_ID.to_owned()]
            }
        );
        assert_eq!(
            err.to_string(),
            r#"unknown key id "NOSUCHKEY0"; known: SIMKEY0001"#
        );
        assert_eq!(
            verify(&sign(key, IAT).unwrap(), &KeyStore::new())
                .unwrap_err()
                .to_string(),
            r#"unknown key id "SIMKEY0001"; known: none"#
        );
        // A hostile key id is quoted escaped and cut; a long list of keys is cut too.
        let token = forge(
            key,
            &json!({"alg": "ES256", "kid": format!("é\n{}", "K".repeat(500))}).to_string(),
            &claims,
        );
        let text = verify(&token, &store).unwrap_err().to_string();
        assert!(text.starts_with(r#"unknown key id "\u{e9}\nKKK"#), "{text}");
        assert!(text.is_ascii() && text.len() < 200, "{text}");
        let ids: Vec<String> = (0..20).map(|i| format!("KEY{i:07}")).collect();
        assert_eq!(
            list(&ids),
            "KEY0000000, KEY0000001, KEY0000002, KEY0000003, KEY0000004, KEY0000005, \
             KEY0000006, KEY0000007 and 12 more"
        );
    }

    #[test]
    fn claim_checks() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let header = json!({"alg": "ES256", "kid": DEFAULT_KEY_ID}).to_string();
        for claims in [
            json!({"iat": IAT}),
            json!({"iss": DEFAULT_TEAM_ID}),
            json!({"iss": 5, "iat": IAT}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": -1}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": -0.5}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": true}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": null}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": [IAT]}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": {"s": IAT}}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": ""}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": "1700000000.5"}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": " 1700000000"}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": "-1700000000"}),
            json!([1, 2]),
        ] {
            let token = forge(key, &header, &claims.to_string());
            assert!(
                matches!(verify(&token, &store), Err(JwtError::BadClaims(_))),
                "{claims}"
            );
        }
        let token = forge(key, &header, "not json");
        assert!(matches!(
            verify(&token, &store),
            Err(JwtError::BadClaims(_))
        ));
        let token = forge(
            key,
            &header,
            &json!({"iss": "OTHERTEAM1", "iat": IAT}).to_string(),
        );
        assert_eq!(
            verify(&token, &store),
            Err(JwtError::TeamMismatch {
                key_id: DEFAULT_KEY_ID.to_owned(),
                expected: DEFAULT_TEAM_ID.to_owned(),
                found: "OTHERTEAM1".to_owned()
            })
        );
    }

    #[test]
    fn iat_as_apns_reads_it() {
        let (pki, store) = setup();
        let key = pki.auth_key(DEFAULT_KEY_ID).unwrap();
        let header = json!({"alg": "ES256", "kid": DEFAULT_KEY_ID}).to_string();
        let with_iat = |iat: &str| {
            let claims = format!(r#"{{"iss":"{DEFAULT_TEAM_ID}","iat":{iat}}}"#);
            verify(&forge(key, &header, &claims), &store).map(|t| t.issued_at)
        };
        // Accepted: integers, floats (floored), exponent forms, digit strings.
        assert_eq!(with_iat("1796122258"), Ok(1_796_122_258));
        assert_eq!(with_iat("1796122258.73"), Ok(1_796_122_258));
        assert_eq!(with_iat("1.796122258e9"), Ok(1_796_122_258));
        assert_eq!(with_iat(r#""1796122258""#), Ok(1_796_122_258));
        assert_eq!(with_iat(r#""01796122258""#), Ok(1_796_122_258));
        assert_eq!(with_iat("0"), Ok(0));
        assert_eq!(with_iat("-0.0"), Ok(0));
        assert_eq!(with_iat(&MAX_IAT_SECONDS.to_string()), Ok(MAX_IAT_SECONDS));

        // Milliseconds, in any form, are named as such.
        for (iat, shown) in [
            ("1796122258247", "1796122258247"),
            ("1796122258247.5", "1796122258247.5"),
            (r#""1796122258247""#, r#""1796122258247""#),
            ("1e300", "1e+300"),
            (
                r#""99999999999999999999999999""#,
                r#""99999999999999999999999999""#,
            ),
        ] {
            let err = with_iat(iat).unwrap_err();
            assert_eq!(err, JwtError::IatMilliseconds(shown.to_owned()), "{iat}");
            assert_eq!(
                err.to_string(),
                format!("iat {shown} looks like milliseconds; APNs expects seconds")
            );
        }
        assert!(with_iat(&(MAX_IAT_SECONDS + 1).to_string()).is_err());

        // Refused, each saying what the value was.
        for (iat, says) in [
            ("true", "iat is a boolean"),
            ("null", "iat is null"),
            ("[1]", "iat is an array"),
            ("{}", "iat is an object"),
            ("-1", "iat is negative (-1)"),
            ("-1796122258.5", "iat is negative (-1796122258.5)"),
            (r#""17x""#, r#"iat is the string "17x", not decimal digits"#),
        ] {
            let text = with_iat(iat).unwrap_err().to_string();
            assert!(text.contains(says), "{iat}: {text}");
        }
    }

    #[test]
    fn key_store_topics() {
        let mut pki = Pki::generate().unwrap();
        pki.mint_auth_key(
            "TEAM000002",
            Some("KEY0000002".into()),
            vec!["com.a".into()],
        )
        .unwrap();
        let store = KeyStore::from_pki(&pki).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.topics_for(DEFAULT_KEY_ID), Some(&[][..]));
        assert_eq!(
            store.topics_for("KEY0000002"),
            Some(&["com.a".to_owned()][..])
        );
        assert_eq!(store.team_for("KEY0000002"), Some("TEAM000002"));
        assert_eq!(store.topics_for("NOPE"), None);
        let token = sign(pki.auth_key("KEY0000002").unwrap(), IAT).unwrap();
        assert_eq!(verify(&token, &store).unwrap().team_id, "TEAM000002");
    }

    #[test]
    fn bad_key_material() {
        let key = AuthKey {
            key_id: "BROKEN0001".to_owned(),
            team_id: DEFAULT_TEAM_ID.to_owned(),
            topics: Vec::new(),
            p8_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
        };
        let err = sign(&key, IAT).unwrap_err();
        assert_eq!(
            err,
            JwtError::BadKey {
                key_id: "BROKEN0001".to_owned(),
                file: "AuthKey_BROKEN0001.p8".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "auth key BROKEN0001 (AuthKey_BROKEN0001.p8): not a P-256 private key in PKCS#8 PEM form"
        );
        assert!(KeyStore::new().insert_auth_key(&key).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let (pki, store) = setup();
        let good = sign(pki.auth_key(DEFAULT_KEY_ID).unwrap(), IAT).unwrap();
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let mut inputs: Vec<String> = [
            "",
            ".",
            "..",
            "...",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "!!!.???.###",
            "é.é.é",
            "=.=.=",
            "e30.e30.",
            "e30.e30.e30",
            "bnVsbA.bnVsbA.AA",
            "W10.W10.W10",
            "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        inputs.push(long);
        inputs.push(format!("{good}."));
        inputs.push(format!(".{good}"));
        inputs.push(good.replace('.', ".."));
        for cut in 0..good.len() {
            inputs.push(good[..cut].to_owned());
        }
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[i] = match flipped[i] {
                b'A' => b'B',
                b'.' => b'-',
                _ => b'A',
            };
            if let Ok(s) = String::from_utf8(flipped) {
                inputs.push(s);
            }
        }
        for input in &inputs {
            if input != &good {
                assert!(verify(input, &store).is_err(), "{input}");
            }
        }
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1), &store),
            Err(JwtError::Malformed("token longer than 8 KiB"))
        );
    }
}
