//! The notifications `apns-sim bench` sends: one 160-byte command-2 frame (the design note's
//! size) or one HTTP/2 body, copied from a template and patched per notification with its
//! token, identifier and send time, so that encoding costs the load generator next to
//! nothing and every payload carries the moment it was sent.

use anyhow::{bail, Context, Result};
use bytes::BytesMut;

use crate::protocol::notification::{self, encode_frame_raw};
use crate::protocol::token::DeviceToken;

/// Size of every command-2 frame the load generator writes.
pub(crate) const FRAME_LEN: usize = 160;
/// Frame bytes other than the payload: header 5, item headers 15, token 32, id 4, expiry 4,
/// priority 1.
const FRAME_OVERHEAD: usize = 61;
/// Byte offsets in the frame: token data, identifier data, timestamp digits.
const TOKEN_AT: usize = 8;
const ID_AT: usize = 145;
const STAMP_AT: usize = 43 + STAMP_PREFIX.len();
/// Digits of the timestamp, right-aligned with leading spaces (JSON allows them), so every
/// frame has the same length.
const STAMP_DIGITS: usize = 20;
/// The payload up to the timestamp.
const STAMP_PREFIX: &str = r#"{"aps":{"alert":"apns-sim load"},"t":"#;

/// The payload with timestamp `sent_ns` (nanoseconds since the run's start): 99 bytes.
pub(crate) fn payload(sent_ns: u64) -> Vec<u8> {
    let mut p = format!(r#"{STAMP_PREFIX}{:>20},"pad":"{}"}}"#, 0, "x".repeat(32)).into_bytes();
    put_stamp(
        &mut p[STAMP_PREFIX.len()..STAMP_PREFIX.len() + STAMP_DIGITS],
        sent_ns,
    );
    p
}

/// The payload's timestamp, as a device shows it (`t`).
pub(crate) fn stamp_of(payload: &serde_json::Value) -> Option<u64> {
    payload.get("t")?.as_u64()
}

fn put_stamp(stamp: &mut [u8], mut value: u64) {
    for digit in stamp.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
}

/// A command-2 frame with all five items (expiry 0, priority 10), patched per notification.
pub(crate) struct LoadFrame {
    template: Vec<u8>,
}

impl LoadFrame {
    /// Builds the template and checks its offsets with the simulator's own decoder.
    pub(crate) fn new() -> Result<LoadFrame> {
        let body = payload(0);
        if body.len() != FRAME_LEN - FRAME_OVERHEAD {
            bail!("load payload is {} bytes", body.len());
        }
        let mut template = BytesMut::new();
        encode_frame_raw(&[0; 32], &body, [0; 4], 0, 10, &mut template);
        let frame = LoadFrame {
            template: template.to_vec(),
        };
        let mut check = BytesMut::new();
        let token = DeviceToken::from_bytes([7; 32]);
        frame.put(&mut check, &token, 42, 1_234_567);
        let n = notification::decode(&mut check)
            .map_err(|e| anyhow::anyhow!("load frame rejected: {e}"))?
            .context("load frame incomplete")?;
        let json: serde_json::Value = serde_json::from_slice(&n.payload)?;
        if n.token != token
            || n.identifier != 42u32.to_be_bytes()
            || stamp_of(&json) != Some(1_234_567)
        {
            bail!("load frame offsets are wrong");
        }
        Ok(frame)
    }

    /// Appends one frame for `token` (32 bytes; others are cut or zero-padded, the binary
    /// API carries only 32) with identifier `id` and timestamp `sent_ns`.
    pub(crate) fn put(&self, dst: &mut BytesMut, token: &DeviceToken, id: u32, sent_ns: u64) {
        let start = dst.len();
        dst.extend_from_slice(&self.template);
        let frame = &mut dst[start..];
        let bytes = token.as_bytes();
        let n = bytes.len().min(32);
        frame[TOKEN_AT..TOKEN_AT + n].copy_from_slice(&bytes[..n]);
        frame[ID_AT..ID_AT + 4].copy_from_slice(&id.to_be_bytes());
        put_stamp(&mut frame[STAMP_AT..STAMP_AT + STAMP_DIGITS], sent_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_decodes_with_the_simulators_decoder() {
        // `new` checks token, identifier and timestamp offsets itself.
        let frame = LoadFrame::new().unwrap();
        let mut buf = BytesMut::new();
        frame.put(&mut buf, &DeviceToken::from_bytes([1; 32]), 7, u64::MAX);
        assert_eq!(buf.len(), FRAME_LEN);
        let n = notification::decode(&mut buf).unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&n.payload).unwrap();
        assert_eq!(stamp_of(&json), Some(u64::MAX));
    }

    #[test]
    fn a_payload_is_json_with_its_stamp() {
        let json: serde_json::Value = serde_json::from_slice(&payload(987)).unwrap();
        assert_eq!(stamp_of(&json), Some(987));
        assert_eq!(json["aps"]["alert"], "apns-sim load");
    }
}
