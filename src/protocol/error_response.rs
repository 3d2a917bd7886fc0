//! Binary provider API, command 8: the error-response packet (gateway → provider).
//!
//! Spec §1.6 and §1.7: success is silent; when the gateway refuses a notification it writes this
//! 6-byte packet and closes the connection, and everything the provider wrote after the named
//! notification is discarded. Status 10 (Shutdown) instead names the *last notification that was
//! processed successfully*.
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 1 | command = `8` |
//! | 1 | 1 | status code (table below) |
//! | 2 | 4 | identifier — opaque 4 bytes copied raw from the notification (no byte-order conversion) |
//!
//! | Code | Apple description |
//! |---|---|
//! | 0 | No errors encountered |
//! | 1 | Processing error |
//! | 2 | Missing device token |
//! | 3 | Missing topic |
//! | 4 | Missing payload |
//! | 5 | Invalid token size |
//! | 6 | Invalid topic size |
//! | 7 | Invalid payload size |
//! | 8 | Invalid token |
//! | 10 | Shutdown |
//! | 128 | Protocol error (APNs could not parse the notification) |
//! | 255 | None (unknown) |

use std::fmt;

/// An error-response status code (Apple's table, spec §1.6).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: listed by Apple; when it is sent is undocumented.
    NoErrors = 0,
    /// 1: an Apple-side problem; retryable.
    ProcessingError = 1,
    /// 2: the token is missing (zero-length).
    MissingDeviceToken = 2,
    /// 3: no topic (bundle ID) could be derived from the client certificate.
    MissingTopic = 3,
    /// 4: the payload is missing (zero-length).
    MissingPayload = 4,
    /// 5: the token is not 32 bytes.
    InvalidTokenSize = 5,
    /// 6: the topic has an invalid size.
    InvalidTopicSize = 6,
    /// 7: the payload (or a frame that can only be oversized because of it) is over the limit.
    InvalidPayloadSize = 7,
    /// 8: the token is not valid for this environment or app.
    InvalidToken = 8,
    /// 10: the server is closing the connection; the identifier names the last good notification.
    Shutdown = 10,
    /// 128: the notification could not be parsed.
    ProtocolError = 128,
    /// 255: none (unknown).
    Unknown = 255,
}

impl Status {
    /// Every status, in code order (handy for tests and CLI listings).
    pub const ALL: [Status; 12] = [
        Status::NoErrors,
        Status::ProcessingError,
        Status::MissingDeviceToken,
        Status::MissingTopic,
        Status::MissingPayload,
        Status::InvalidTokenSize,
        Status::InvalidTopicSize,
        Status::InvalidPayloadSize,
        Status::InvalidToken,
        Status::Shutdown,
        Status::ProtocolError,
        Status::Unknown,
    ];

    /// The byte written at offset 1 of the packet.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a status byte; `None` for codes Apple never defined (e.g. 9), which a client must
    /// report rather than guess at.
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Apple's wording for the code, for logs and CLI output.
    pub fn description(self) -> &'static str {
        match self {
            Status::NoErrors => "No errors encountered",
            Status::ProcessingError => "Processing error",
            Status::MissingDeviceToken => "Missing device token",
            Status::MissingTopic => "Missing topic",
            Status::MissingPayload => "Missing payload",
            Status::InvalidTokenSize => "Invalid token size",
            Status::InvalidTopicSize => "Invalid topic size",
            Status::InvalidPayloadSize => "Invalid payload size",
            Status::InvalidToken => "Invalid token",
            Status::Shutdown => "Shutdown",
            Status::ProtocolError => "Protocol error",
            Status::Unknown => "None (unknown)",
        }
    }
}

impl fmt::Display for Status {
    /// `<code> (<description>)`, e.g. `8 (Invalid token)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// One decoded command-8 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorResponse {
    /// Why the notification was refused (or [`Status::Shutdown`]).
    pub status: Status,
    /// The offending notification's identifier (for Shutdown: the last good one), echoed raw.
    pub identifier: [u8; 4],
}

/// Why bytes from the gateway are not an error-response packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorResponseError {
    /// The first byte is not 8; the gateway never sends anything else.
    #[error("expected error-response command 8, got command byte {0}")]
    UnknownCommand(u8),
    /// The status byte is not in Apple's table.
    #[error("error response carries unknown status code {0}")]
    UnknownStatus(u8),
}

impl ErrorResponse {
    /// Size of the packet on the wire.
    pub const LEN: usize = 6;
    /// The command byte at offset 0.
    pub const COMMAND: u8 = 8;

    /// The 6 bytes of the packet.
    pub fn encode(&self) -> [u8; 6] {
        let [a, b, c, d] = self.identifier;
        [Self::COMMAND, self.status.code(), a, b, c, d]
    }

    /// Decodes one packet from the front of `buf`, returning it and the bytes consumed (always
    /// [`ErrorResponse::LEN`]). `Ok(None)` = need more bytes.
    ///
    /// The command byte is checked as soon as it arrives; the status is checked once all 6 bytes
    /// are present. An unknown command or status is an error naming the byte.
    pub fn decode(buf: &[u8]) -> Result<Option<(ErrorResponse, usize)>, ErrorResponseError> {
        let Some(&command) = buf.first() else {
            return Ok(None);
        };
        if command != Self::COMMAND {
            return Err(ErrorResponseError::UnknownCommand(command));
        }
        let Some(&[_, code, a, b, c, d]) = buf.first_chunk::<6>() else {
            return Ok(None);
        };
        let status = Status::from_code(code).ok_or(ErrorResponseError::UnknownStatus(code))?;
        let response = ErrorResponse {
            status,
            identifier: [a, b, c, d],
        };
        Ok(Some((response, Self::LEN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_annotated_fixture() {
        let bytes = [
            0x08, // command 8
            0x07, // status 7 (invalid payload size)
            0xDE, 0xAD, 0xBE, 0xEF, // identifier, raw
        ];
        let expected = ErrorResponse {
            status: Status::InvalidPayloadSize,
            identifier: [0xDE, 0xAD, 0xBE, 0xEF],
        };
        assert_eq!(ErrorResponse::decode(&bytes), Ok(Some((expected, 6))));
        assert_eq!(expected.encode(), bytes);
    }

    #[test]
    fn every_status_round_trips() {
        for status in Status::ALL {
            let response = ErrorResponse {
                status,
                identifier: [1, 2, 3, 4],
            };
            let bytes = response.encode();
            assert_eq!(bytes.len(), ErrorResponse::LEN);
            assert_eq!(ErrorResponse::decode(&bytes), Ok(Some((response, 6))));
        }
    }

    #[test]
    fn codes_and_descriptions_match_apple_table() {
        let table: [(u8, &str); 12] = [
            (0, "No errors encountered"),
            (1, "Processing error"),
            (2, "Missing device token"),
            (3, "Missing topic"),
            (4, "Missing payload"),
            (5, "Invalid token size"),
            (6, "Invalid topic size"),
            (7, "Invalid payload size"),
            (8, "Invalid token"),
            (10, "Shutdown"),
            (128, "Protocol error"),
            (255, "None (unknown)"),
        ];
        for (code, description) in table {
            let status = Status::from_code(code).unwrap();
            assert_eq!(status.code(), code);
            assert_eq!(status.description(), description);
        }
        assert_eq!(Status::InvalidToken.to_string(), "8 (Invalid token)");
        assert_eq!(Status::Unknown.to_string(), "255 (None (unknown))");
    }

    #[test]
    fn undefined_codes_are_none() {
        let defined: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        for code in 0..=u8::MAX {
            assert_eq!(Status::from_code(code).is_some(), defined.contains(&code));
        }
        assert_eq!(Status::from_code(9), None);
    }

    #[test]
    fn incomplete_is_none_at_every_length() {
        let bytes = ErrorResponse {
            status: Status::Shutdown,
            identifier: [0, 0, 0, 42],
        }
        .encode();
        for len in 0..ErrorResponse::LEN {
            assert_eq!(ErrorResponse::decode(&bytes[..len]), Ok(None), "len {len}");
        }
    }

    #[test]
    fn decodes_only_the_first_packet() {
        let bytes = [
            0x08, 0x0A, 0x00, 0x00, 0x00, 0x01, // command 8, status 10, identifier 1
            0x08, 0x01, 0x00, 0x00, 0x00, 0x02, // a second packet, left alone
        ];
        let (first, used) = ErrorResponse::decode(&bytes).unwrap().unwrap();
        assert_eq!(first.status, Status::Shutdown);
        assert_eq!(used, 6);
        let (second, _) = ErrorResponse::decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second.status, Status::ProcessingError);
        assert_eq!(second.identifier, [0, 0, 0, 2]);
    }

    #[test]
    fn rejects_unknown_command_from_first_byte() {
        assert_eq!(
            ErrorResponse::decode(&[0x02]),
            Err(ErrorResponseError::UnknownCommand(2))
        );
    }

    #[test]
    fn rejects_unknown_status() {
        let bytes = [
            0x08, // command 8
            0x09, // status 9: not in Apple's table
            0x00, 0x00, 0x00, 0x00, // identifier
        ];
        let err = ErrorResponse::decode(&bytes).unwrap_err();
        assert_eq!(err, ErrorResponseError::UnknownStatus(9));
        assert!(err.to_string().contains('9'));
    }
}
