//! The few raw HTTP/2 frames the simulator writes itself, and a tracker of frame boundaries in
//! the byte stream `h2` writes.
//!
//! Why raw frames: Apple closes connections with a GOAWAY whose debug data is JSON,
//! `{"reason":"BadCertificateEnvironment"}` (spec §4.2), and the `h2` crate (0.4) can only
//! send GOAWAY without debug data (`abrupt_shutdown` / `graceful_shutdown` take a code and
//! nothing else; hyperium/h2#419 added decoding of debug data, not sending). So:
//!
//! - a connection refused at the start (wrong-environment certificate) never reaches `h2`:
//!   the server writes [`settings`] and [`goaway`] itself, as Apple does;
//! - a live connection closed by the server (idle timeout, shutdown) writes its GOAWAY
//!   between two of `h2`'s frames: [`FrameBoundary`] follows the frame headers in what `h2`
//!   writes, so the extra frame is only ever inserted at a boundary.
//!
//! Frame layout (RFC 9113 §4.1): 24-bit length, 8-bit type, 8-bit flags, 31-bit stream id,
//! then `length` bytes of payload.

use bytes::{BufMut, Bytes, BytesMut};

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;

/// Frame type SETTINGS.
const TYPE_SETTINGS: u8 = 0x4;
/// Frame type GOAWAY.
const TYPE_GOAWAY: u8 = 0x7;

/// SETTINGS_HEADER_TABLE_SIZE.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
/// SETTINGS_MAX_CONCURRENT_STREAMS.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE.
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// SETTINGS_MAX_HEADER_LIST_SIZE.
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// HTTP/2 error code NO_ERROR, what Apple's GOAWAYs carry.
pub const NO_ERROR: u32 = 0x0;

/// The response header in which the simulator says why it refused a request, in words. Not
/// Apple's: clients that do not know it ignore it, as HTTP requires.
pub const DETAIL_HEADER: &str = "apns-sim-detail";

/// What the delivery record says about a push Apple accepts but may not deliver promptly:
/// a `background` push with priority 10 (sent, or the default when `apns-priority` is
/// absent). Apple calls it "an error" yet documents no refusal, and throttles background
/// pushes (spec §4.4, §9 item 3), so APNs-compatible behaviour is to accept it and warn.
pub fn priority_warning(push_type: Option<&str>, priority: u8) -> Option<&'static str> {
    (push_type == Some("background") && priority == 10).then_some(
        "warning: background push with priority 10; Apple may throttle or delay it (send apns-priority 5)",
    )
}

fn header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

/// A SETTINGS frame (not an ACK) with the given `(identifier, value)` pairs.
pub fn settings(values: &[(u16, u32)]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + 6 * values.len());
    header(&mut out, 6 * values.len(), TYPE_SETTINGS, 0, 0);
    for (id, value) in values {
        out.put_u16(*id);
        out.put_u32(*value);
    }
    out.freeze()
}

/// A GOAWAY frame: the last stream the server processed, an error code, and debug data.
pub fn goaway(last_stream_id: u32, error_code: u32, debug_data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + 8 + debug_data.len());
    header(&mut out, 8 + debug_data.len(), TYPE_GOAWAY, 0, 0);
    out.put_u32(last_stream_id & 0x7fff_ffff);
    out.put_u32(error_code);
    out.put_slice(debug_data);
    out.freeze()
}

/// A GOAWAY as parsed from bytes (for tests and the client's diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// Highest stream id the sender processed.
    pub last_stream_id: u32,
    /// HTTP/2 error code.
    pub error_code: u32,
    /// Debug data (Apple: JSON with a `reason`).
    pub debug_data: Bytes,
}

impl GoAway {
    /// The `reason` of Apple-style JSON debug data (`{"reason":"…"}`), if it has one.
    pub fn reason(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.debug_data).ok()?;
        value.get("reason")?.as_str().map(str::to_owned)
    }
}

/// Finds the first GOAWAY in a stream of whole frames (the bytes after the client preface, or
/// a server's output). `None` if there is none or the bytes end mid-frame before one.
pub fn find_goaway(mut bytes: &[u8]) -> Option<GoAway> {
    while bytes.len() >= FRAME_HEADER_LEN {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let kind = bytes[3];
        let end = FRAME_HEADER_LEN.checked_add(len)?;
        if bytes.len() < end {
            return None;
        }
        let payload = &bytes[FRAME_HEADER_LEN..end];
        if kind == TYPE_GOAWAY && payload.len() >= 8 {
            return Some(GoAway {
                last_stream_id: u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]) & 0x7fff_ffff,
                error_code: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                debug_data: Bytes::copy_from_slice(&payload[8..]),
            });
        }
        bytes = &bytes[end..];
    }
    None
}

/// Most GOAWAY payload bytes [`FrameBoundary`] keeps; Apple's debug data is a short JSON
/// object, and a hostile peer must not make a client buffer more.
pub const MAX_GOAWAY_CAPTURE: usize = 4096;

/// Follows frame boundaries in a byte stream seen in arbitrary pieces, and keeps the last
/// GOAWAY that went by.
///
/// A server's output is nothing but frames (no preface), so reading each 9-byte header's
/// length is enough to know, after any write, whether the stream stands between two frames.
/// The server uses it on what `h2` writes; the client uses it on what it reads, to see the
/// GOAWAY debug data that `h2` does not report for a `NO_ERROR` GOAWAY.
#[derive(Debug, Default, Clone)]
pub struct FrameBoundary {
    /// The header of the current frame, as far as it has been seen.
    header: [u8; FRAME_HEADER_LEN],
    /// Header bytes seen so far (0 when between frames or inside a payload).
    header_seen: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The current frame is a GOAWAY: its payload is being kept.
    in_goaway: bool,
    /// The current GOAWAY's payload so far (at most [`MAX_GOAWAY_CAPTURE`] bytes).
    goaway_payload: Vec<u8>,
    /// The last complete GOAWAY.
    last_goaway: Option<GoAway>,
}

impl FrameBoundary {
    /// Accounts for bytes that were written.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                if self.in_goaway {
                    let room = MAX_GOAWAY_CAPTURE.saturating_sub(self.goaway_payload.len());
                    self.goaway_payload.extend_from_slice(&bytes[..n.min(room)]);
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_seen).min(bytes.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&bytes[..n]);
            self.header_seen += n;
            bytes = &bytes[n..];
            if self.header_seen == FRAME_HEADER_LEN {
                self.header_seen = 0;
                self.payload_left = (usize::from(self.header[0]) << 16)
                    | (usize::from(self.header[1]) << 8)
                    | usize::from(self.header[2]);
                self.in_goaway = self.header[3] == TYPE_GOAWAY;
                self.goaway_payload.clear();
                if self.payload_left == 0 {
                    self.end_frame();
                }
            }
        }
    }

    fn end_frame(&mut self) {
        if std::mem::take(&mut self.in_goaway) && self.goaway_payload.len() >= 8 {
            let p = &self.goaway_payload;
            self.last_goaway = Some(GoAway {
                last_stream_id: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                debug_data: Bytes::copy_from_slice(&p[8..]),
            });
        }
        self.goaway_payload = Vec::new();
    }

    /// The last complete GOAWAY seen, if any.
    pub fn last_goaway(&self) -> Option<&GoAway> {
        self.last_goaway.as_ref()
    }

    /// True when every frame written so far is complete.
    pub fn at_boundary(&self) -> bool {
        self.header_seen == 0 && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_background_with_priority_10_warns() {
        assert!(priority_warning(Some("background"), 10)
            .unwrap()
            .contains("priority 10"));
        assert_eq!(priority_warning(Some("background"), 5), None);
        assert_eq!(priority_warning(Some("alert"), 10), None);
        assert_eq!(priority_warning(None, 10), None);
    }

    #[test]
    fn goaway_layout_matches_rfc_9113() {
        let frame = goaway(3, NO_ERROR, br#"{"reason":"IdleTimeout"}"#);
        assert_eq!(
            &frame[..17],
            &[
                0x00, 0x00, 0x20, // length: 8 + 24 bytes of debug data
                0x07, // type GOAWAY
                0x00, // flags
                0x00, 0x00, 0x00, 0x00, // stream 0
                0x00, 0x00, 0x00, 0x03, // last stream id
                0x00, 0x00, 0x00, 0x00, // NO_ERROR
            ]
        );
        assert_eq!(&frame[17..], br#"{"reason":"IdleTimeout"}"#);
    }

    #[test]
    fn settings_layout() {
        let frame = settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]);
        assert_eq!(
            &frame[..],
            &[
                0x00, 0x00, 0x06, // length
                0x04, 0x00, // SETTINGS, no flags
                0x00, 0x00, 0x00, 0x00, // stream 0
                0x00, 0x03, // MAX_CONCURRENT_STREAMS
                0x00, 0x00, 0x03, 0xE8, // 1000
            ]
        );
    }

    #[test]
    fn find_goaway_skips_other_frames() {
        let mut bytes = settings(&[(SETTINGS_MAX_FRAME_SIZE, 16_384)]).to_vec();
        bytes.extend_from_slice(&goaway(0, NO_ERROR, b"{}"));
        let found = find_goaway(&bytes).unwrap();
        assert_eq!(found.last_stream_id, 0);
        assert_eq!(found.error_code, NO_ERROR);
        assert_eq!(found.debug_data, Bytes::from_static(b"{}"));
        assert_eq!(found.reason(), None);
        let idle = find_goaway(&goaway(7, NO_ERROR, br#"{"reason":"IdleTimeout"}"#)).unwrap();
        assert_eq!(idle.reason().as_deref(), Some("IdleTimeout"));
        assert_eq!(find_goaway(&bytes[..bytes.len() - 1]), None);
        assert_eq!(find_goaway(&[0xff; 3]), None);
    }

    #[test]
    fn boundary_tracking_survives_any_split() {
        let mut stream = settings(&[(SETTINGS_HEADER_TABLE_SIZE, 4096)]).to_vec();
        stream.extend_from_slice(&goaway(1, NO_ERROR, &[b'x'; 300]));
        stream.extend_from_slice(&settings(&[]));
        let ends = [15, 15 + 317, stream.len()];
        for piece in [1, 2, 5, 9, 10, 64, 1000] {
            let mut tracker = FrameBoundary::default();
            let mut written = 0;
            for chunk in stream.chunks(piece) {
                tracker.feed(chunk);
                written += chunk.len();
                assert_eq!(
                    tracker.at_boundary(),
                    ends.contains(&written),
                    "piece {piece} at {written}"
                );
                assert_eq!(
                    tracker.last_goaway().is_some(),
                    written >= ends[1],
                    "piece {piece}"
                );
            }
            let seen = tracker.last_goaway().unwrap();
            assert_eq!(seen.last_stream_id, 1);
            assert_eq!(seen.debug_data, Bytes::from(vec![b'x'; 300]));
        }
    }
}
