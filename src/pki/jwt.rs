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

use crate::pki::{AuthKey, Pki};

/// Longest token [`verify`] looks at. A real token is ~200 bytes; the bound keeps a hostile
/// `authorization` header from costing more than a small decode.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The only signing algorithm APNs accepts.
pub const ALGORITHM: &str = "ES256";

/// Why a provider token was not accepted (all map to 403 `InvalidProviderToken` unless the
/// caller distinguishes them).
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
    #[error("token algorithm must be ES256")]
    WrongAlgorithm,
    /// The header has no string `kid`.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// No auth key with this key id is known.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The claims are not a JSON object with string `iss` and integer `iat` seconds.
    #[error("bad token claims: {0}")]
    BadClaims(String),
    /// `iss` is not the team that owns the key.
    #[error("token issuer {found:?} does not own key (team {expected:?})")]
    TeamMismatch {
        /// The key's team id.
        expected: String,
        /// The `iss` claim.
        found: String,
    },
    /// The signature does not decode or does not verify over `header.claims`.
    #[error("token signature is invalid")]
    BadSignature,
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

/// The public halves of the auth keys the simulator accepts, by key id. Cloneable so each
/// endpoint can hold its own copy.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, KeyEntry>,
}

impl KeyStore {
    /// An empty store, which rejects every token.
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    /// Every auth key of the PKI.
    pub fn from_pki(pki: &Pki) -> Result<KeyStore, JwtError> {
        let mut store = KeyStore::new();
        for key in pki.auth_keys() {
            store.insert_auth_key(key)?;
        }
        Ok(store)
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

    /// The topics a key is limited to (`Some(&[])` for a team-scoped key), or `None` for an
    /// unknown key.
    pub fn topics_for(&self, key_id: &str) -> Option<&[String]> {
        self.keys.get(key_id).map(|e| e.topics.as_slice())
    }

    /// The team that owns a key.
    pub fn team_for(&self, key_id: &str) -> Option<&str> {
        self.keys.get(key_id).map(|e| e.team_id.as_str())
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

/// `header.claims`, the signing input, for a key and issue time.
fn signing_input(key: &AuthKey, issued_at: u64) -> String {
    let header = json!({ "alg": ALGORITHM, "kid": key.key_id });
    let claims = json!({ "iss": key.team_id, "iat": issued_at });
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn sign_with(key: &AuthKey, issued_at: u64, der: bool) -> Result<String, JwtError> {
    let signer = signing_key(key)?;
    let input = signing_input(key, issued_at);
    let signature: Signature = signer.sign(input.as_bytes());
    let bytes = if der {
        signature.to_der().as_bytes().to_vec()
    } else {
        signature.to_bytes().to_vec()
    };
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes)))
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
    if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(JwtError::WrongAlgorithm);
    }
    let key_id = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingKeyId)?;
    let entry = keys
        .keys
        .get(key_id)
        .ok_or_else(|| JwtError::UnknownKey(key_id.to_owned()))?;

    // 2. Signature over the exact bytes received, before any claim is believed.
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::BadSignature)?;
    let signature = if signature_bytes.len() == 64 {
        Signature::from_slice(&signature_bytes)
    } else {
        Signature::from_der(&signature_bytes)
    }
    .map_err(|_| JwtError::BadSignature)?;
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    let signed = jwt.get(..signed_len).ok_or(JwtError::BadSignature)?;
    entry
        .key
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| JwtError::BadSignature)?;

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
    let issued_at = match claims.get("iat") {
        Some(iat) => iat.as_u64().ok_or_else(|| {
            JwtError::BadClaims("iat is not a non-negative integer of seconds".to_owned())
        })?,
        None => return Err(JwtError::BadClaims("missing iat".to_owned())),
    };
    if team_id != entry.team_id {
        return Err(JwtError::TeamMismatch {
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
        assert_eq!(verify(&tampered, &store), Err(JwtError::BadSignature));

        // A token signed by another key with the same key id.
        let (other_pki, _) = setup();
        let forged = sign(other_pki.auth_key(DEFAULT_KEY_ID).unwrap(), IAT).unwrap();
        assert_eq!(verify(&forged, &store), Err(JwtError::BadSignature));

        let truncated = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
        assert_eq!(verify(&truncated, &store), Err(JwtError::BadSignature));
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
            assert_eq!(
                verify(&token, &store),
                Err(JwtError::WrongAlgorithm),
                "{header}"
            );
        }
        // Unsigned token, empty signature part.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert_eq!(verify(&unsigned, &store), Err(JwtError::WrongAlgorithm));
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
        assert_eq!(
            verify(&token, &store),
            Err(JwtError::UnknownKey("NOSUCHKEY0".to_owned()))
        );
        assert_eq!(
            verify(&sign(key, IAT).unwrap(), &KeyStore::new()),
            Err(JwtError::UnknownKey(DEFAULT_KEY_ID.to_owned()))
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
            json!({"iss": DEFAULT_TEAM_ID, "iat": "1700000000000"}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": -1}),
            json!({"iss": DEFAULT_TEAM_ID, "iat": 1.5}),
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
                expected: DEFAULT_TEAM_ID.to_owned(),
                found: "OTHERTEAM1".to_owned()
            })
        );
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
