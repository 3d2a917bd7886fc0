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
//! The same injection changes SETTINGS_MAX_CONCURRENT_STREAMS on a live connection, which
//! `h2` fixes at the handshake: Apple allows one stream on a token connection until a valid
//! provider token, then many, and says so with SETTINGS frames (spec §4.2, golang/go#17265).
//! The client acknowledges each SETTINGS frame in order; [`InboundFilter`] removes the
//! acknowledgements of the injected ones from what `h2` reads, so `h2` never sees an ACK it
//! did not ask for (it would close the connection with PROTOCOL_ERROR).
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
/// The ACK flag of a SETTINGS frame.
const FLAG_ACK: u8 = 0x1;

/// Length of the client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), which
/// precedes the client's frames.
pub const CLIENT_PREFACE_LEN: usize = 24;

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
    /// SETTINGS frames (not ACKs) whose header went by.
    settings_frames: u64,
    /// The current frame is a SETTINGS frame (not an ACK): its payload is being kept.
    in_settings: bool,
    /// The current SETTINGS payload so far (at most [`MAX_SETTINGS_CAPTURE`] bytes).
    settings_payload: Vec<u8>,
    /// Every SETTINGS_MAX_CONCURRENT_STREAMS value seen, oldest first (at most
    /// [`MAX_SETTINGS_SEEN`]).
    max_streams_seen: Vec<u32>,
}

/// Most SETTINGS payload bytes [`FrameBoundary`] keeps per frame: 32 entries, five times what
/// RFC 9113 defines.
pub const MAX_SETTINGS_CAPTURE: usize = 6 * 32;

/// Most SETTINGS_MAX_CONCURRENT_STREAMS values [`FrameBoundary`] remembers; a client only
/// needs the first few to see the limit change.
pub const MAX_SETTINGS_SEEN: usize = 64;

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
                if self.in_settings {
                    let room = MAX_SETTINGS_CAPTURE.saturating_sub(self.settings_payload.len());
                    self.settings_payload
                        .extend_from_slice(&bytes[..n.min(room)]);
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
                self.in_settings =
                    self.header[3] == TYPE_SETTINGS && self.header[4] & FLAG_ACK == 0;
                self.settings_payload.clear();
                if self.in_settings {
                    self.settings_frames += 1;
                }
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
        if std::mem::take(&mut self.in_settings) {
            for entry in self.settings_payload.chunks_exact(6) {
                let id = u16::from_be_bytes([entry[0], entry[1]]);
                if id == SETTINGS_MAX_CONCURRENT_STREAMS
                    && self.max_streams_seen.len() < MAX_SETTINGS_SEEN
                {
                    self.max_streams_seen
                        .push(u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
                }
            }
        }
        self.settings_payload = Vec::new();
    }

    /// How many SETTINGS frames (not ACKs) have started so far: the ordinal of the last one,
    /// which is the ordinal of the ACK that answers it.
    pub fn settings_frames(&self) -> u64 {
        self.settings_frames
    }

    /// Every SETTINGS_MAX_CONCURRENT_STREAMS value seen, oldest first.
    pub fn max_streams_seen(&self) -> &[u32] {
        &self.max_streams_seen
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

/// Follows the frames a server reads from a client (after the 24-byte preface) and removes
/// chosen SETTINGS ACKs, in place, as the bytes arrive.
///
/// The client acknowledges the server's SETTINGS frames in the order it received them, so the
/// n-th ACK answers the n-th SETTINGS frame the server wrote ([`FrameBoundary::settings_frames`]
/// counts them). [`InboundFilter::drop_ack`] names an ordinal to remove. While one is pending,
/// an incomplete frame header at the end of the bytes read is held back (returned to the
/// caller to present again with the next bytes), because it may be that ACK; otherwise the
/// bytes pass unchanged.
#[derive(Debug, Clone)]
pub struct InboundFilter {
    /// Preface bytes still to pass before the first frame.
    preface_left: usize,
    /// The current frame header, when it arrived in pieces while no drop was pending.
    header: [u8; FRAME_HEADER_LEN],
    /// Bytes of `header` seen.
    header_seen: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// SETTINGS ACKs seen so far.
    acks_seen: u64,
    /// Ordinals of the ACKs to remove, ascending.
    to_drop: std::collections::VecDeque<u64>,
}

/// Most ACK ordinals an [`InboundFilter`] keeps pending: the simulator injects one SETTINGS
/// frame per connection; a few more cost nothing and anything beyond is a bug, ignored.
pub const MAX_PENDING_DROPS: usize = 8;

impl InboundFilter {
    /// A filter for what a server reads: the client preface, then frames.
    pub fn server() -> Self {
        InboundFilter {
            preface_left: CLIENT_PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_seen: 0,
            payload_left: 0,
            acks_seen: 0,
            to_drop: std::collections::VecDeque::new(),
        }
    }

    /// Removes the `ordinal`-th SETTINGS ACK (1 = the first) when it arrives.
    pub fn drop_ack(&mut self, ordinal: u64) {
        if ordinal > self.acks_seen && self.to_drop.len() < MAX_PENDING_DROPS {
            self.to_drop.push_back(ordinal);
        }
    }

    /// True while an ACK waits to be removed (so incomplete headers are held back).
    pub fn active(&self) -> bool {
        !self.to_drop.is_empty()
    }

    /// Filters `data` in place. Returns `(kept, held)`: `data[..kept]` is for the reader, and
    /// `data[kept..kept + held]` is an incomplete frame header the caller must present again,
    /// followed by the next bytes, before anything else (it has not been accounted for).
    pub fn filter(&mut self, data: &mut [u8]) -> (usize, usize) {
        let len = data.len();
        let (mut r, mut w) = (0usize, 0usize);
        while r < len {
            if self.preface_left > 0 || self.payload_left > 0 {
                let left = if self.preface_left > 0 {
                    &mut self.preface_left
                } else {
                    &mut self.payload_left
                };
                let n = (*left).min(len - r);
                data.copy_within(r..r + n, w);
                *left -= n;
                r += n;
                w += n;
                continue;
            }
            if self.header_seen == 0 && len - r < FRAME_HEADER_LEN && self.active() {
                let held = len - r;
                data.copy_within(r..len, w);
                return (w, held);
            }
            if self.header_seen > 0 || len - r < FRAME_HEADER_LEN {
                // A header in pieces, passed through as it comes (no drop was pending when
                // it began, so it cannot be the ACK of an injected frame).
                let n = (FRAME_HEADER_LEN - self.header_seen).min(len - r);
                self.header[self.header_seen..self.header_seen + n]
                    .copy_from_slice(&data[r..r + n]);
                self.header_seen += n;
                data.copy_within(r..r + n, w);
                r += n;
                w += n;
                if self.header_seen == FRAME_HEADER_LEN {
                    self.header_seen = 0;
                    let header = self.header;
                    self.start_frame(&header, false);
                }
                continue;
            }
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(&data[r..r + FRAME_HEADER_LEN]);
            r += FRAME_HEADER_LEN;
            if self.start_frame(&header, true) {
                continue;
            }
            data[w..w + FRAME_HEADER_LEN].copy_from_slice(&header);
            w += FRAME_HEADER_LEN;
        }
        (w, 0)
    }

    /// Accounts for a complete frame header; true when the frame is an ACK to remove (only
    /// if `may_drop`: the header has not been passed on yet).
    fn start_frame(&mut self, header: &[u8; FRAME_HEADER_LEN], may_drop: bool) -> bool {
        self.payload_left =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let is_ack = header[3] == TYPE_SETTINGS && header[4] & FLAG_ACK != 0;
        if !is_ack {
            return false;
        }
        self.acks_seen += 1;
        // The answer to an injected frame is consumed here whatever happens, so a pending
        // drop can never go stale and hold headers back for ever.
        let ours = self.to_drop.front() == Some(&self.acks_seen);
        if ours {
            self.to_drop.pop_front();
        }
        ours && may_drop && self.payload_left == 0
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

    /// A SETTINGS ACK frame.
    fn ack() -> Vec<u8> {
        vec![0, 0, 0, TYPE_SETTINGS, FLAG_ACK, 0, 0, 0, 0]
    }

    /// Runs `filter` over `input` cut into `piece`-byte reads, as a reader would: held bytes
    /// are presented again before the next read.
    fn filtered(filter: &mut InboundFilter, input: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut held = Vec::new();
        for chunk in input.chunks(piece) {
            let mut data = std::mem::take(&mut held);
            data.extend_from_slice(chunk);
            let (kept, h) = filter.filter(&mut data);
            out.extend_from_slice(&data[..kept]);
            held = data[kept..kept + h].to_vec();
        }
        out.extend_from_slice(&held);
        out
    }

    #[test]
    fn the_injected_settings_ack_is_removed_at_any_split() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        assert_eq!(preface.len(), CLIENT_PREFACE_LEN);
        let client_settings = settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]).to_vec();
        let data_frame = [&[0u8, 0, 3, 0, 1, 0, 0, 0, 1][..], b"abc"].concat();
        let mut input = preface.clone();
        input.extend_from_slice(&client_settings);
        input.extend_from_slice(&ack()); // ACK 1: h2's own SETTINGS
        input.extend_from_slice(&data_frame);
        input.extend_from_slice(&ack()); // ACK 2: the injected SETTINGS
        input.extend_from_slice(&data_frame);
        let mut expected = preface;
        expected.extend_from_slice(&client_settings);
        expected.extend_from_slice(&ack());
        expected.extend_from_slice(&data_frame);
        expected.extend_from_slice(&data_frame);
        for piece in [1, 2, 5, 8, 9, 10, 17, 24, 25, 1000] {
            let mut filter = InboundFilter::server();
            filter.drop_ack(2);
            assert_eq!(
                filtered(&mut filter, &input, piece),
                expected,
                "piece {piece}"
            );
            assert!(!filter.active());
        }
        // Nothing pending: every byte passes.
        for piece in [1, 7, 1000] {
            let mut filter = InboundFilter::server();
            assert_eq!(filtered(&mut filter, &input, piece), input, "piece {piece}");
        }
    }

    #[test]
    fn settings_frames_and_max_streams_are_counted() {
        let mut tracker = FrameBoundary::default();
        let mut stream = settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1)]).to_vec();
        stream.extend_from_slice(&ack());
        stream.extend_from_slice(&settings(&[(SETTINGS_HEADER_TABLE_SIZE, 4096)]));
        stream.extend_from_slice(&settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]));
        for chunk in stream.chunks(4) {
            tracker.feed(chunk);
        }
        assert_eq!(tracker.settings_frames(), 3, "ACKs are not counted");
        assert_eq!(tracker.max_streams_seen(), &[1, 1000]);
        assert!(tracker.at_boundary());
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
