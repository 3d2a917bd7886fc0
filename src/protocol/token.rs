//! The device token: 32 opaque bytes naming one app on one device in one environment.
//!
//! Spec §6: tokens are assigned by APNs, unique per app + device, and differ between sandbox and
//! production. The binary interfaces carry them raw (token length `0x0020`); HTTP/2 carries them
//! as 64 hex digits in `:path`. Apple later warned tokens may grow (up to 100 bytes), but every
//! binary-era format the simulator implements uses 32, so this type is fixed-size.

use std::fmt;
use std::str::FromStr;

/// A 32-byte APNs device token.
///
/// `Copy` and `Ord` so it can be a cheap map key in the device registry. It serialises (serde) as
/// a lowercase hex string, the form people paste into configs and HTTP/2 paths.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceToken([u8; 32]);

/// Why bytes or text are not a device token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bytes / no hex digits at all (APNs reports this as "missing device token").
    #[error("device token is empty")]
    Empty,
    /// Not exactly 32 bytes: the value is a byte count for [`DeviceToken::from_slice`] and a
    /// hex-digit count for [`DeviceToken::from_hex`] (which expects 64).
    #[error("device token has the wrong length {0} (expected 32 bytes, i.e. 64 hex digits)")]
    WrongLength(usize),
    /// Text contains something other than hex digits.
    #[error("device token is not hexadecimal")]
    NotHex,
}

impl DeviceToken {
    /// Length of a token in bytes (64 hex digits).
    pub const LEN: usize = 32;

    /// Wraps raw token bytes; infallible because the length is already right.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Takes a token from untrusted bytes, e.g. a decoded frame item.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenError::WrongLength(bytes.len()))?;
        Ok(Self(array))
    }

    /// Parses exactly 64 hex digits, upper or lower case (the HTTP/2 `:path` form).
    ///
    /// Checks in this order: empty → [`TokenError::Empty`]; any non-hex character →
    /// [`TokenError::NotHex`]; digit count ≠ 64 → [`TokenError::WrongLength`] with the count.
    pub fn from_hex(text: &str) -> Result<Self, TokenError> {
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::NotHex);
        }
        if text.len() != 2 * Self::LEN {
            return Err(TokenError::WrongLength(text.len()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| TokenError::NotHex)?;
        Ok(Self(bytes))
    }

    /// The raw bytes, as written on the binary wire.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, the canonical text form (HTTP/2 paths, logs, configs).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for DeviceToken {
    /// Full lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceToken {
    /// Short form `DeviceToken(0123abcd…)`: the first 4 bytes are enough to tell tokens apart in
    /// logs without flooding them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "DeviceToken({}…)", hex::encode([a, b, c, d]))
    }
}

impl FromStr for DeviceToken {
    type Err = TokenError;

    /// Same as [`DeviceToken::from_hex`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl serde::Serialize for DeviceToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HexVisitor)
    }
}

/// Serde visitor accepting a 64-hex-digit string.
struct HexVisitor;

impl serde::de::Visitor<'_> for HexVisitor {
    type Value = DeviceToken;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a device token as 64 hex digits")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DeviceToken, E> {
        DeviceToken::from_hex(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn sample() -> DeviceToken {
        let mut bytes = [0u8; 32];
        for (i, b) in (0u8..).zip(bytes.iter_mut()) {
            *b = i;
        }
        DeviceToken::from_bytes(bytes)
    }

    #[test]
    fn hex_round_trip_is_lowercase() {
        let token = sample();
        assert_eq!(token.to_hex(), HEX);
        assert_eq!(token.to_string(), HEX);
        assert_eq!(DeviceToken::from_hex(HEX), Ok(token));
        assert_eq!(DeviceToken::from_hex(&HEX.to_uppercase()), Ok(token));
        assert_eq!(HEX.parse::<DeviceToken>(), Ok(token));
    }

    #[test]
    fn from_hex_rejections() {
        assert_eq!(DeviceToken::from_hex(""), Err(TokenError::Empty));
        assert_eq!(
            DeviceToken::from_hex("abc"),
            Err(TokenError::WrongLength(3))
        );
        assert_eq!(
            DeviceToken::from_hex(&HEX[..62]),
            Err(TokenError::WrongLength(62))
        );
        assert_eq!(
            DeviceToken::from_hex(&format!("{HEX}00")),
            Err(TokenError::WrongLength(66))
        );
        let bad = format!("zz{}", &HEX[2..]);
        assert_eq!(DeviceToken::from_hex(&bad), Err(TokenError::NotHex));
        // Multi-byte characters are "not hex", never a panic on a char boundary.
        let bad = format!("é{}", &HEX[2..]);
        assert_eq!(DeviceToken::from_hex(&bad), Err(TokenError::NotHex));
        assert_eq!(
            DeviceToken::from_hex(&format!(" {}", &HEX[1..])),
            Err(TokenError::NotHex)
        );
    }

    #[test]
    fn from_slice_checks_length() {
        let token = sample();
        assert_eq!(DeviceToken::from_slice(token.as_bytes()), Ok(token));
        assert_eq!(DeviceToken::from_slice(&[]), Err(TokenError::Empty));
        assert_eq!(
            DeviceToken::from_slice(&[1; 31]),
            Err(TokenError::WrongLength(31))
        );
        assert_eq!(
            DeviceToken::from_slice(&[1; 100]),
            Err(TokenError::WrongLength(100))
        );
    }

    #[test]
    fn debug_is_short() {
        assert_eq!(format!("{:?}", sample()), "DeviceToken(00010203…)");
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(TokenError::Empty.to_string(), "device token is empty");
        assert!(TokenError::WrongLength(31).to_string().contains("31"));
        assert!(TokenError::NotHex.to_string().contains("hexadecimal"));
    }

    #[test]
    fn serde_as_hex_string() {
        let token = sample();
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, format!("\"{HEX}\""));
        let back: DeviceToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back, token);
        assert!(serde_json::from_str::<DeviceToken>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<DeviceToken>("42").is_err());
    }

    #[test]
    fn ordering_follows_bytes() {
        let low = DeviceToken::from_bytes([0; 32]);
        let high = DeviceToken::from_bytes([0xFF; 32]);
        assert!(low < high);
    }
}
