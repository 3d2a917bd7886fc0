//! Fuzzes the binary provider API's notification decoder (commands 0, 1 and 2,
//! `apns_sim::protocol::notification`) and the annotator the delivery log uses on the same
//! bytes.
//!
//! Input: two bytes of legacy payload limit (big-endian), then the byte stream a provider
//! sends. Properties, for every notification decoded from the stream in turn:
//! - `Ok(None)` consumes nothing; `Ok(Some)` consumes exactly the frame it returns, which is
//!   the front of the stream, and every shorter prefix of that frame is `Ok(None)`;
//! - a decoded notification is within the rules (32-byte token, payload 1..=limit, priority 5
//!   or 10, the command its first byte says), and `decode(encode(n)) == n`; commands 0 and 1
//!   have one encoding, so re-encoding gives back the very bytes received;
//! - a rejection's status is its reason's status;
//! - `annotate` labels every byte exactly once, in order (a field may be empty: a 0-byte
//!   token), and a decoded frame has no
//!   `unparsed` bytes.
#![no_main]

use apns_sim::protocol::notification::{
    annotate, decode_with_frame, encode, Command, Notification, RejectReason,
};
use apns_sim::protocol::payload::MAX_PAYLOAD_FRAME;
use apns_sim_fuzz::assert_prefixes_incomplete;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Most notifications decoded from one input; the rest of the stream is left alone.
const MAX_FRAMES: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&[hi, lo], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let legacy_max = usize::from(u16::from_be_bytes([hi, lo]));
    check_annotation(stream, false);

    let mut buf = BytesMut::from(stream);
    for _ in 0..MAX_FRAMES {
        let before = buf.clone();
        match decode_with_frame(&mut buf, legacy_max) {
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                break;
            }
            Ok(Some((n, frame))) => {
                assert!(
                    before.starts_with(&frame),
                    "the frame is not the stream's front"
                );
                assert_eq!(
                    &buf[..],
                    &before[frame.len()..],
                    "consumed more or less than the frame"
                );
                check_notification(&n, &frame, legacy_max);
                check_annotation(&frame, true);
                assert_prefixes_incomplete(&frame, |prefix| {
                    decode_with_frame(&mut BytesMut::from(prefix), legacy_max)
                });
            }
            Err(rejection) => {
                assert_eq!(rejection.status, rejection.reason.status());
                if let RejectReason::UnknownCommand(byte) = rejection.reason {
                    assert_eq!(Some(&byte), before.first());
                    assert_eq!(rejection.identifier, [0; 4]);
                }
                break;
            }
        }
    }
});

/// The rules a decoded notification obeys, and its round trip through `encode`.
fn check_notification(n: &Notification, frame: &[u8], legacy_max: usize) {
    assert_eq!(frame.first(), Some(&n.command.code()));
    assert_eq!(n.token.len(), 32);
    assert!(
        n.priority == 5 || n.priority == 10,
        "priority {}",
        n.priority
    );
    let limit = match n.command {
        Command::Simple | Command::Enhanced => legacy_max,
        Command::Frame => MAX_PAYLOAD_FRAME,
    };
    assert!(!n.payload.is_empty() && n.payload.len() <= limit);
    if n.command == Command::Simple {
        assert_eq!((n.identifier, n.expiry, n.priority), ([0; 4], None, 10));
    }
    if n.command == Command::Enhanced {
        assert!(n.expiry.is_some());
    }

    let mut encoded = BytesMut::new();
    encode(n, &mut encoded);
    let wire = encoded.clone();
    let (again, again_frame) = decode_with_frame(&mut encoded, legacy_max)
        .expect("a re-encoded notification is refused")
        .expect("a re-encoded notification is incomplete");
    assert_eq!(&again, n, "decode(encode(n)) != n");
    assert_eq!(
        again_frame, wire,
        "the re-encoded frame was not consumed whole"
    );
    assert!(encoded.is_empty());
    if n.command != Command::Frame {
        assert_eq!(&wire[..], frame, "commands 0 and 1 have one encoding");
    }
}

/// `annotate` labels each byte once, in order; `whole` frames leave nothing unparsed.
fn check_annotation(bytes: &[u8], whole: bool) {
    let fields = annotate(bytes);
    let mut at = 0;
    for field in &fields {
        assert_eq!(
            field.offset, at,
            "field {field:?} does not start where the last ended"
        );
        at += field.length;
        if whole {
            assert_ne!(
                field.name, "unparsed",
                "a decoded frame has unparsed bytes: {fields:?}"
            );
        }
    }
    assert_eq!(
        at,
        bytes.len(),
        "the fields do not cover the bytes: {fields:?}"
    );
}
