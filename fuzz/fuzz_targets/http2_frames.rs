//! Fuzzes the raw HTTP/2 frame readers of `apns_sim::protocol::http2`: `find_goaway`,
//! `FrameBoundary` (which follows what `h2` writes, and what a client reads, to find GOAWAY
//! debug data and SETTINGS) and `InboundFilter` (which removes the SETTINGS ACKs of frames
//! the server injected from what `h2` reads).
//!
//! Input: a piece size (the stream arrives in pieces of 1 + that many bytes, cycling up to
//! it; 0: in one piece), a bit mask of the SETTINGS ACKs to drop (bit i: the (i+1)-th), then
//! the stream: the server's output for `FrameBoundary` and `find_goaway`, what a client sends
//! (the 24-byte preface, then frames) for `InboundFilter`. Each reader is compared with a reference that parses the whole stream frame
//! by frame (RFC 9113 §4.1), so the properties are: the stream's pieces do not change the
//! outcome; `FrameBoundary` counts the SETTINGS frames, keeps the last GOAWAY (debug data cut
//! at `MAX_GOAWAY_CAPTURE`) and the first `MAX_SETTINGS_SEEN` stream limits, and knows whether
//! the stream ends between frames; `find_goaway` finds the first GOAWAY; `InboundFilter`
//! passes every byte through in order except the ACKs asked for, and holds back at most an
//! incomplete frame header. And `goaway` encodes a GOAWAY (fields from the stream's first
//! bytes) that `find_goaway` reads back.
#![no_main]

use apns_sim::protocol::http2::{
    find_goaway, goaway, FrameBoundary, GoAway, InboundFilter, CLIENT_PREFACE_LEN,
    FRAME_HEADER_LEN, MAX_GOAWAY_CAPTURE, MAX_PENDING_DROPS, MAX_SETTINGS_CAPTURE,
    MAX_SETTINGS_SEEN, SETTINGS_MAX_CONCURRENT_STREAMS,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// Frame type SETTINGS (RFC 9113 §6.5).
const TYPE_SETTINGS: u8 = 0x4;
/// Frame type GOAWAY (RFC 9113 §6.8).
const TYPE_GOAWAY: u8 = 0x7;
/// The ACK flag of SETTINGS.
const FLAG_ACK: u8 = 0x1;

/// One frame as the reference parser sees it.
struct Frame<'a> {
    kind: u8,
    flags: u8,
    /// The payload bytes present (all of them when `complete`).
    payload: &'a [u8],
    complete: bool,
    /// Where the frame (header included) starts and ends in the stream.
    start: usize,
    end: usize,
}

/// Splits `bytes` into frames; the last one may be cut (or be only part of a header, which is
/// returned as the second value's offset).
fn frames(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(h) = bytes.get(at..at + FRAME_HEADER_LEN) else {
            return (out, Some(at));
        };
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let body = at + FRAME_HEADER_LEN;
        let end = (body + len).min(bytes.len());
        out.push(Frame {
            kind: h[3],
            flags: h[4],
            payload: &bytes[body..end],
            complete: end == body + len,
            start: at,
            end,
        });
        at = end;
    }
    (out, None)
}

fn goaway_of(payload: &[u8], capture: usize) -> Option<GoAway> {
    let p = payload.get(..payload.len().min(capture))?;
    if p.len() < 8 {
        return None;
    }
    Some(GoAway {
        last_stream_id: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
        error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        debug_data: Bytes::copy_from_slice(&p[8..]),
    })
}

/// The stream cut into pieces of 1, 2, … `max` + 1 bytes, cycling (one piece when `max` is 0).
fn pieces(stream: &[u8], max: u8) -> Vec<&[u8]> {
    if max == 0 {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut size = 0usize;
    while !rest.is_empty() {
        size = size % usize::from(max) + 1;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&[piece_max, drop_mask], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (all, partial_header) = frames(stream);

    // find_goaway: the first complete GOAWAY with a full fixed part, unless the stream is cut
    // before one.
    let mut expected_goaway = None;
    for frame in &all {
        if !frame.complete {
            break;
        }
        if frame.kind == TYPE_GOAWAY {
            if let Some(g) = goaway_of(frame.payload, usize::MAX) {
                expected_goaway = Some(g);
                break;
            }
        }
    }
    assert_eq!(find_goaway(stream), expected_goaway);
    if let Some((&fixed, debug)) = stream.split_first_chunk::<8>() {
        let last = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        let code = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let encoded = goaway(last, code, debug);
        let found = find_goaway(&encoded).expect("an encoded GOAWAY is not found");
        assert_eq!(found.last_stream_id, last & 0x7fff_ffff);
        assert_eq!((found.error_code, &found.debug_data[..]), (code, debug));
    }

    // FrameBoundary, fed in pieces, against the reference.
    let mut boundary = FrameBoundary::default();
    for piece in pieces(stream, piece_max) {
        boundary.feed(piece);
    }
    let settings: Vec<&Frame<'_>> = all
        .iter()
        .filter(|f| f.kind == TYPE_SETTINGS && f.flags & FLAG_ACK == 0)
        .collect();
    assert_eq!(boundary.settings_frames(), settings.len() as u64);
    let limits: Vec<u32> = settings
        .iter()
        .filter(|f| f.complete)
        .flat_map(|f| f.payload[..f.payload.len().min(MAX_SETTINGS_CAPTURE)].chunks_exact(6))
        .filter(|e| u16::from_be_bytes([e[0], e[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        .take(MAX_SETTINGS_SEEN)
        .collect();
    assert_eq!(boundary.max_streams_seen(), &limits[..]);
    let last_goaway = all
        .iter()
        .filter(|f| f.complete && f.kind == TYPE_GOAWAY)
        .filter_map(|f| goaway_of(f.payload, MAX_GOAWAY_CAPTURE))
        .last();
    assert_eq!(boundary.last_goaway(), last_goaway.as_ref());
    let ends_between = partial_header.is_none() && all.last().map_or(true, |f| f.complete);
    assert_eq!(boundary.at_boundary(), ends_between);

    // InboundFilter: a preface, then the frames of what is left.
    let Some(frames_part) = stream.get(CLIENT_PREFACE_LEN..) else {
        return;
    };
    let drops: Vec<u64> = (0..8u64)
        .filter(|bit| drop_mask & (1 << bit) != 0)
        .map(|bit| bit + 1)
        .collect();
    assert!(drops.len() <= MAX_PENDING_DROPS);
    let mut filter = InboundFilter::server();
    for &ordinal in &drops {
        filter.drop_ack(ordinal);
    }
    let mut passed = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    for piece in pieces(stream, piece_max) {
        let mut data = std::mem::take(&mut held);
        data.extend_from_slice(piece);
        let (kept, held_len) = filter.filter(&mut data);
        assert!(held_len < FRAME_HEADER_LEN, "held back {held_len} bytes");
        passed.extend_from_slice(&data[..kept]);
        held = data[kept..kept + held_len].to_vec();
    }
    passed.extend_from_slice(&held);

    let (inner, _) = frames(frames_part);
    let mut expected = stream[..CLIENT_PREFACE_LEN].to_vec();
    let mut acks = 0u64;
    let mut dropped_upto = 0;
    for frame in &inner {
        let is_ack = frame.kind == TYPE_SETTINGS && frame.flags & FLAG_ACK != 0;
        if is_ack {
            acks += 1;
        }
        let drop = is_ack && frame.complete && frame.payload.is_empty() && drops.contains(&acks);
        expected.extend_from_slice(&frames_part[dropped_upto..frame.start]);
        dropped_upto = if drop { frame.end } else { frame.start };
    }
    expected.extend_from_slice(&frames_part[dropped_upto..]);
    assert_eq!(
        passed, expected,
        "the filter changed more than the ACKs asked for"
    );
});
