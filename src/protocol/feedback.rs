//! Feedback service tuples (feedback service → provider).
//!
//! Spec §2: the provider connects and sends nothing; the service writes one tuple per token whose
//! app is no longer installed, then the list is cleared. All integers big-endian.
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 4 | timestamp (u32) — UNIX seconds UTC when the app was found to be gone |
//! | 4 | 2 | token length (u16) — 32 |
//! | 6 | 32 | device token |
//!
//! → [`TUPLE_LEN`] = 38 bytes per tuple. A token length other than 32 is an error, decided from
//! the 6-byte header before waiting for the token bytes.

use bytes::{Buf, BufMut, BytesMut};

use crate::protocol::reader::Reader;
use crate::protocol::token::DeviceToken;

/// Size of one tuple on the wire (4 + 2 + 32).
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
    /// The token-length field is not 32 (binary-era tokens are always 32 bytes).
    #[error("feedback tuple declares a {0}-byte token, expected 32")]
    BadTokenLength(u16),
}

impl FeedbackTuple {
    /// Appends the 38-byte tuple to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(TUPLE_LEN);
        dst.put_u32(self.timestamp);
        dst.put_u16(DeviceToken::LEN as u16);
        dst.put_slice(self.token.as_bytes());
    }

    /// Decodes one tuple from the front of `buf`, consuming it. `Ok(None)` = need more bytes
    /// (nothing consumed).
    pub fn decode(buf: &mut BytesMut) -> Result<Option<FeedbackTuple>, FeedbackError> {
        let mut r = Reader::new(buf);
        let (Some(timestamp), Some(token_len)) = (r.u32(), r.u16()) else {
            return Ok(None);
        };
        if usize::from(token_len) != DeviceToken::LEN {
            return Err(FeedbackError::BadTokenLength(token_len));
        }
        let Some(token) = r.array::<32>() else {
            return Ok(None);
        };
        buf.advance(TUPLE_LEN);
        Ok(Some(FeedbackTuple {
            timestamp,
            token: DeviceToken::from_bytes(token),
        }))
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
    fn bad_token_length_is_decided_from_the_header() {
        for (len, bytes) in [
            (0u16, [0x00, 0x00]),
            (31, [0x00, 0x1F]),
            (100, [0x00, 0x64]),
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
