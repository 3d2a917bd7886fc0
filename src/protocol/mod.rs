//! The pure wire protocols the simulator speaks: bytes in, values out, no I/O.
//!
//! Nothing here touches a socket, a clock or tokio, so every rule can be unit-tested with byte
//! fixtures. Each decoder takes the connection's read buffer, returns `Ok(None)` while a frame is
//! incomplete (consuming nothing), checks every length field against its maximum *before*
//! waiting for the bytes it announces, and never panics on hostile input.
//!
//! | module | wire format |
//! |---|---|
//! | [`notification`] | binary provider API, commands 0, 1 and 2 (provider → gateway) |
//! | [`error_response`] | binary provider API, command 8 (gateway → provider) |
//! | [`feedback`] | feedback-service tuples (feedback service → provider) |
//! | [`device`] | the simulator's own device protocol (device ↔ simulator) |
//! | [`h2wire`] | HTTP/2 bytes labelled field by field for people (frames, SETTINGS, HPACK), used by the tour |
//! | [`http2`] | the few raw HTTP/2 frames the simulator writes itself (SETTINGS, GOAWAY) and a frame-boundary tracker |
//! | [`payload`] | JSON payload checks shared by the binary and HTTP/2 APIs |
//! | [`token`] | the 32-byte device token |
//!
//! All multi-byte integers on every format here are big-endian (network order).

pub mod device;
pub mod error_response;
pub mod feedback;
pub mod h2wire;
pub mod http2;
pub mod notification;
pub mod payload;
mod reader;
pub mod token;

use std::fmt;
use std::str::FromStr;

/// APNs environment. Tokens, certificates and connections belong to one.
///
/// Apple runs two separate services: a token issued in one environment is rejected by the other
/// (status 8, "Invalid token"), so the simulator tags everything with its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Development ("sandbox") service, used by apps built with a development profile.
    #[serde(alias = "development")]
    Sandbox,
    /// Production service, used by App Store / ad-hoc builds.
    Production,
}

impl Environment {
    /// The canonical lowercase name, as used in config files, logs and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Sandbox => "sandbox",
            Environment::Production => "production",
        }
    }

    /// The one-byte encoding used by the device protocol: 0 = sandbox, 1 = production.
    pub fn to_byte(self) -> u8 {
        match self {
            Environment::Sandbox => 0,
            Environment::Production => 1,
        }
    }

    /// Decodes [`Environment::to_byte`]; `None` for any other byte so the caller can name it.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Environment::Sandbox),
            1 => Some(Environment::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no environment; carries the rejected text so the user sees what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown APNs environment {value:?} (expected \"sandbox\", \"development\" or \"production\")"
)]
pub struct ParseEnvironmentError {
    /// The text that was not recognised.
    pub value: String,
}

impl FromStr for Environment {
    type Err = ParseEnvironmentError;

    /// Accepts "sandbox" or Apple's older name "development" for [`Environment::Sandbox`] and
    /// "production" for [`Environment::Production`], ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("sandbox") || s.eq_ignore_ascii_case("development") {
            Ok(Environment::Sandbox)
        } else if s.eq_ignore_ascii_case("production") {
            Ok(Environment::Production)
        } else {
            Err(ParseEnvironmentError {
                value: s.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("sandbox".parse(), Ok(Environment::Sandbox));
        assert_eq!("development".parse(), Ok(Environment::Sandbox));
        assert_eq!("Production".parse(), Ok(Environment::Production));
        let err = "prod".parse::<Environment>().unwrap_err();
        assert_eq!(err.value, "prod");
        assert!(err.to_string().contains("\"prod\""));
    }

    #[test]
    fn display_and_as_str_are_canonical() {
        for env in [Environment::Sandbox, Environment::Production] {
            assert_eq!(env.to_string(), env.as_str());
            assert_eq!(env.as_str().parse(), Ok(env));
        }
        assert_eq!(Environment::Sandbox.to_string(), "sandbox");
        assert_eq!(Environment::Production.to_string(), "production");
    }

    #[test]
    fn byte_round_trip() {
        assert_eq!(Environment::Sandbox.to_byte(), 0);
        assert_eq!(Environment::Production.to_byte(), 1);
        for env in [Environment::Sandbox, Environment::Production] {
            assert_eq!(Environment::from_byte(env.to_byte()), Some(env));
        }
        assert_eq!(Environment::from_byte(2), None);
        assert_eq!(Environment::from_byte(0xFF), None);
    }

    #[test]
    fn serde_uses_lowercase_names() {
        assert_eq!(
            serde_json::to_string(&Environment::Production).unwrap(),
            "\"production\""
        );
        let env: Environment = serde_json::from_str("\"sandbox\"").unwrap();
        assert_eq!(env, Environment::Sandbox);
        let env: Environment = serde_json::from_str("\"development\"").unwrap();
        assert_eq!(env, Environment::Sandbox);
        assert!(serde_json::from_str::<Environment>("\"staging\"").is_err());
    }
}
