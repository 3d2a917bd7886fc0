//! Payload checks shared by the binary and HTTP/2 provider APIs.
//!
//! Spec §1.5 and §5: APNs itself only checks a payload's size and emptiness; presentation keys
//! (`aps`, `alert`, …) are the device's business, and APNs does not require `aps` at all (Wallet
//! passes send `{}`, MDM sends `{"mdm": …}`). Whether APNs rejected malformed JSON is undocumented
//! (spec §9 item 13); the simulator decides that a payload must be a JSON object, which is what
//! every real client sent.
//!
//! | interface | limit | constant |
//! |---|---|---|
//! | binary commands 0 and 1 | 256 bytes by default (the sources disagree: `Settings::legacy_payload_limit`) | [`MAX_PAYLOAD_LEGACY`] |
//! | binary command 2, item 2 | 2048 bytes | [`MAX_PAYLOAD_FRAME`] |
//! | HTTP/2 | 4096 bytes | [`MAX_PAYLOAD_HTTP2`] |
//! | HTTP/2, VoIP pushes | 5120 bytes | [`MAX_PAYLOAD_HTTP2_VOIP`] |

/// Default payload limit for binary commands 0 and 1: Apple's legacy-format text kept 256
/// bytes in every revision (spec §1.5; §9 item 2 for the reports of 2048).
pub const MAX_PAYLOAD_LEGACY: usize = 256;
/// Payload limit for binary command 2, item 2 (raised to 2 KB with iOS 8).
pub const MAX_PAYLOAD_FRAME: usize = 2048;
/// Payload limit for the HTTP/2 API (4 KB).
pub const MAX_PAYLOAD_HTTP2: usize = 4096;
/// Payload limit for VoIP pushes on the HTTP/2 API (5 KB).
pub const MAX_PAYLOAD_HTTP2_VOIP: usize = 5120;

/// Why a payload is refused; each interface maps these onto its own status code or reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Zero bytes (binary status 4 "Missing payload", HTTP/2 `PayloadEmpty`).
    #[error("payload is empty")]
    Empty,
    /// Over the interface's limit (binary status 7, HTTP/2 413 `PayloadTooLarge`).
    #[error("payload is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Actual payload size in bytes.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// Not valid JSON (including invalid UTF-8 or nesting deeper than serde_json's limit of 128);
    /// carries serde_json's message, which names the line and column.
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON whose top level is not an object (e.g. `[]`, `"hi"`, `42`).
    #[error("payload is JSON but its top level is not an object")]
    NotAnObject,
}

/// Checks a payload is non-empty, within `max`, and a JSON object (top level `{...}`); does not require `aps`.
///
/// The size is checked before any parsing, so an oversized payload costs nothing to reject.
/// Parsing uses serde_json, whose recursion limit (128) keeps hostile nesting from overflowing
/// the stack. The JSON is walked, not built: a small visitor reads every value through the
/// same parser calls a `serde_json::Value` would (so the same input is refused, with the same
/// message), and keeps nothing of it (every notification is checked, at load-test rates).
pub fn check(payload: &[u8], max: usize) -> Result<(), PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    if payload.len() > max {
        return Err(PayloadError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    let checked: Checked =
        serde_json::from_slice(payload).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    if checked.object {
        Ok(())
    } else {
        Err(PayloadError::NotAnObject)
    }
}

/// A JSON value read to its end and thrown away, remembering only whether it was an object.
///
/// It asks serde_json for any value (`deserialize_any`), as `serde_json::Value` does, and
/// accepts whatever comes, so every check of the parser still applies: strings are decoded
/// and their UTF-8 and escapes (lone surrogates included) validated, numbers parsed (an
/// out-of-range one is refused), keys read as strings, nesting held to the recursion limit.
/// serde's `IgnoredAny` would not do: it skips strings and numbers without those checks.
/// Strings without escapes are borrowed from the payload, so a valid payload costs no
/// allocation.
struct Checked {
    /// The value was an object.
    object: bool,
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// The visitor behind [`Checked`]: every kind of value is accepted, arrays and objects are
/// walked element by element.
struct CheckedVisitor;

impl CheckedVisitor {
    /// Any value but an object.
    const OTHER: Checked = Checked { object: false };
}

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Self::OTHER)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, inner: D) -> Result<Checked, D::Error> {
        serde::Deserialize::deserialize(inner)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Self::OTHER)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked { object: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_with_or_without_aps() {
        assert_eq!(
            check(br#"{"aps":{"alert":"hi"}}"#, MAX_PAYLOAD_LEGACY),
            Ok(())
        );
        assert_eq!(check(b"{}", MAX_PAYLOAD_LEGACY), Ok(()));
        assert_eq!(check(br#"{"mdm":"abc"}"#, MAX_PAYLOAD_LEGACY), Ok(()));
        assert_eq!(check(b" \n{ } \t", MAX_PAYLOAD_LEGACY), Ok(()));
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(check(b"", MAX_PAYLOAD_HTTP2), Err(PayloadError::Empty));
    }

    #[test]
    fn size_limit_is_inclusive() {
        // `{"a":"xxx…"}` padded to exactly `max` bytes.
        let exactly = |max: usize| format!(r#"{{"a":"{}"}}"#, "x".repeat(max - 8));
        for max in [
            MAX_PAYLOAD_LEGACY,
            MAX_PAYLOAD_FRAME,
            MAX_PAYLOAD_HTTP2,
            MAX_PAYLOAD_HTTP2_VOIP,
        ] {
            let ok = exactly(max);
            assert_eq!(ok.len(), max);
            assert_eq!(check(ok.as_bytes(), max), Ok(()));
            let over = format!(r#"{{"a":"{}"}}"#, "x".repeat(max - 7));
            assert_eq!(
                check(over.as_bytes(), max),
                Err(PayloadError::TooLarge { len: max + 1, max })
            );
        }
    }

    #[test]
    fn size_is_checked_before_json() {
        let junk = [b'x'; 300];
        assert_eq!(
            check(&junk, MAX_PAYLOAD_LEGACY),
            Err(PayloadError::TooLarge { len: 300, max: 256 })
        );
    }

    #[test]
    fn rejects_invalid_json() {
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"hello",
            b"{} {}",
            b"{\"a\":1,}",
            b"\xEF\xBB\xBF{}",
        ] {
            assert!(
                matches!(
                    check(bad, MAX_PAYLOAD_HTTP2),
                    Err(PayloadError::InvalidJson(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_invalid_utf8_inside_strings() {
        let bad = b"{\"a\":\"\xFF\xFE\"}";
        assert!(matches!(
            check(bad, MAX_PAYLOAD_HTTP2),
            Err(PayloadError::InvalidJson(_))
        ));
    }

    #[test]
    fn rejects_non_objects() {
        for bad in [&b"[]"[..], b"\"hi\"", b"42", b"null", b"true"] {
            assert_eq!(
                check(bad, MAX_PAYLOAD_HTTP2),
                Err(PayloadError::NotAnObject),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(4000), "]".repeat(4000));
        assert!(matches!(
            check(deep.as_bytes(), 10_000),
            Err(PayloadError::InvalidJson(msg)) if msg.contains("recursion limit")
        ));
    }

    /// What the check was before it walked instead of building: a `serde_json::Value`.
    fn check_by_value(payload: &[u8]) -> Result<(), PayloadError> {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
        if value.is_object() {
            Ok(())
        } else {
            Err(PayloadError::NotAnObject)
        }
    }

    #[test]
    fn walking_refuses_exactly_what_building_a_value_refused_with_the_same_message() {
        let deep_ok = format!("{{\"a\":{}1{}}}", "[".repeat(126), "]".repeat(126));
        let deep_bad = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<&[u8]> = vec![
            br#"{"aps":{"alert":"hi","badge":1,"sound":"default"},"x":[1,2.5,-3,true,null]}"#,
            br#"{"a":"\u00e9\n\t\"","b":{"c":{}}}"#,
            br#"{"a":"\ud83d\ude00"}"#,
            br#"{"a":"\ud83d"}"#,
            br#"{"a":"\udc00x"}"#,
            br#"{"a":"\x"}"#,
            br#"{"a":1e400}"#,
            br#"{"a":-1e400}"#,
            br#"{"a":1e-400}"#,
            br#"{"a":18446744073709551616}"#,
            br#"{"a":01}"#,
            br#"{"a":1.}"#,
            br#"{"a":+1}"#,
            br#"{"a":"b","a":"c"}"#,
            br#"{1:2}"#,
            br#"{"a" 1}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":tru}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"\xFF\":1}",
            b"{\"a\":\"\xC3\"}",
            b"{} x",
            b"  {}  ",
            b"{",
            b"[{}]",
            b"\"{}\"",
            b"nul",
            deep_ok.as_bytes(),
            deep_bad.as_bytes(),
        ];
        for case in cases {
            assert_eq!(
                check(case, 10_000),
                check_by_value(case),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn messages_name_the_numbers() {
        let e = PayloadError::TooLarge { len: 300, max: 256 };
        assert_eq!(
            e.to_string(),
            "payload is 300 bytes, over the 256-byte limit"
        );
    }
}
