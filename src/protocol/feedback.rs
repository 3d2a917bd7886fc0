//! Feedback service tuples (feedback service → provider).
//!
//! Spec §2: the provider connects and sends nothing; the service writes one tuple per token whose
//! app is no longer installed, then the list is cleared. All integers big-endian.
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 4 | timestamp (u32) — UNIX seconds UTC when the app was found to be gone |
//! | 4 | 2 | token length N (u16) — 32 for every binary-era token |
//! | 6 | N | device token |
//!
//! → [`TUPLE_LEN`] = 38 bytes per tuple of a 32-byte token. Tokens of other lengths (spec §6;
//! minted when `Settings::token_len` is not 32) are written with their own length, 1 to 100
//! bytes; a length outside that is an error, decided from the 6-byte header before waiting for
//! the token bytes.

use bytes::{Buf, BufMut, BytesMut};

use crate::protocol::reader::Reader;
use crate::protocol::token::DeviceToken;

/// Size of one tuple of a 32-byte token on the wire (4 + 2 + 32).
pub const TUPLE_LEN: usize = 38;

/// One feedback entry: this token's app was uninstalled at `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeedbackTuple {
    /// UNIX seconds when the simulator found the app gone; providers compare it with the time the
    /// token was last registered before they stop sending to it.
    pub timestamp: u32,
    /// The token that is no longer valid.
    pub token: DeviceToken,
}

/// Why bytes from the feedback service are not a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// The token-length field is 0 or over 100 (`DeviceToken::MAX_LEN`).
    #[error("feedback tuple declares a {0}-byte token, expected 1 to 100")]
    BadTokenLength(u16),
}

impl FeedbackTuple {
    /// Appends the tuple (38 bytes for a 32-byte token) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(6 + self.token.len());
        dst.put_u32(self.timestamp);
        dst.put_u16(self.token.len() as u16);
        dst.put_slice(self.token.as_bytes());
    }

    /// Decodes one tuple from the front of `buf`, consuming it. `Ok(None)` = need more bytes
    /// (nothing consumed).
    pub fn decode(buf: &mut BytesMut) -> Result<Option<FeedbackTuple>, FeedbackError> {
        let mut r = Reader::new(buf);
        let (Some(timestamp), Some(token_len)) = (r.u32(), r.u16()) else {
            return Ok(None);
        };
        let len = usize::from(token_len);
        if len == 0 || len > DeviceToken::MAX_LEN {
            return Err(FeedbackError::BadTokenLength(token_len));
        }
        let Some(bytes) = r.take(len) else {
            return Ok(None);
        };
        let token =
            DeviceToken::new(bytes).map_err(|_| FeedbackError::BadTokenLength(token_len))?;
        buf.advance(6 + len);
        Ok(Some(FeedbackTuple { timestamp, token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: [u8; 32] = [0x5A; 32];

    fn fixture() -> Vec<u8> {
        [
            &[0x5F, 0x5E, 0x10, 0x00][..], // timestamp 1_600_000_000
            &[0x00, 0x20],                 // token length 32
            &TOKEN,                        // token
        ]
        .concat()
    }

    fn tuple() -> FeedbackTuple {
        FeedbackTuple {
            timestamp: 1_600_000_000,
            token: DeviceToken::from_bytes(TOKEN),
        }
    }

    #[test]
    fn decodes_annotated_fixture() {
        let mut buf = BytesMut::from(&fixture()[..]);
        assert_eq!(FeedbackTuple::decode(&mut buf), Ok(Some(tuple())));
        assert!(buf.is_empty());
    }

    #[test]
    fn encodes_annotated_fixture() {
        let mut buf = BytesMut::new();
        tuple().encode(&mut buf);
        assert_eq!(&buf[..], &fixture()[..]);
        assert_eq!(buf.len(), TUPLE_LEN);
    }

    #[test]
    fn many_tuples_in_one_buffer() {
        let mut buf = BytesMut::new();
        let tuples: Vec<FeedbackTuple> = (0..5u8)
            .map(|i| FeedbackTuple {
                timestamp: u32::from(i) * 1000,
                token: DeviceToken::from_bytes([i; 32]),
            })
            .collect();
        for t in &tuples {
            t.encode(&mut buf);
        }
        for t in &tuples {
            assert_eq!(FeedbackTuple::decode(&mut buf), Ok(Some(*t)));
        }
        assert_eq!(FeedbackTuple::decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn split_at_every_offset() {
        let bytes = fixture();
        for split in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            assert_eq!(FeedbackTuple::decode(&mut buf), Ok(None), "split {split}");
            assert_eq!(buf.len(), split, "nothing consumed at split {split}");
            buf.extend_from_slice(&bytes[split..]);
            assert_eq!(FeedbackTuple::decode(&mut buf), Ok(Some(tuple())));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut buf = BytesMut::new();
        let bytes = fixture();
        let (last, head) = bytes.split_last().unwrap();
        for b in head {
            buf.extend_from_slice(&[*b]);
            assert_eq!(FeedbackTuple::decode(&mut buf), Ok(None));
        }
        buf.extend_from_slice(&[*last]);
        assert_eq!(FeedbackTuple::decode(&mut buf), Ok(Some(tuple())));
    }

    #[test]
    fn a_longer_token_carries_its_length() {
        let long = FeedbackTuple {
            timestamp: 7,
            token: DeviceToken::new(&[0xA5; 80]).unwrap(),
        };
        let mut buf = BytesMut::new();
        long.encode(&mut buf);
        assert_eq!(&buf[..6], &[0, 0, 0, 7, 0x00, 0x50]); // timestamp 7, token length 80
        assert_eq!(buf.len(), 6 + 80);
        assert_eq!(FeedbackTuple::decode(&mut buf), Ok(Some(long)));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_token_length_is_decided_from_the_header() {
        for (len, bytes) in [
            (0u16, [0x00, 0x00]),
            (101, [0x00, 0x65]),
            (u16::MAX, [0xFF, 0xFF]),
        ] {
            let header = [
                &[0x00, 0x00, 0x00, 0x01][..], // timestamp 1
                &bytes,                        // token length
            ]
            .concat();
            let mut buf = BytesMut::from(&header[..]);
            let err = FeedbackTuple::decode(&mut buf).unwrap_err();
            assert_eq!(err, FeedbackError::BadTokenLength(len));
            assert!(err.to_string().contains(&len.to_string()));
        }
    }
}
