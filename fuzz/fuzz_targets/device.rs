//! Fuzzes both decoders of the simulator's device protocol (`apns_sim::protocol::device`):
//! device → simulator messages (run by the device endpoint on what a device sends) and
//! simulator → device messages (run by the device client).
//!
//! Input: one byte whose low bit picks the direction (0: device → simulator), then the
//! stream. Properties, for every message decoded in turn: `Ok(None)` consumes nothing; a
//! message consumes exactly the 3 + length bytes its header announces, and every shorter
//! prefix of them is `Ok(None)`; `decode(encode(m)) == m`, the re-encoded frame is consumed
//! whole and encoding is stable (encoding the re-decoded message gives the same bytes). The
//! encoding is not always the received bytes: an ordinary token's kind may be sent as code 0
//! or left out, and is written left out.
#![no_main]

use apns_sim::protocol::device::{
    decode_device_message, decode_server_message, encode_device_message, encode_server_message,
};
use apns_sim_fuzz::assert_prefixes_incomplete;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Most messages decoded from one input.
const MAX_MESSAGES: usize = 16;

/// Size of a frame header: type (1) + body length (2).
const HEADER_LEN: usize = 3;

fuzz_target!(|data: &[u8]| {
    let Some((&direction, stream)) = data.split_first() else {
        return;
    };
    if direction & 1 == 0 {
        run(stream, decode_device_message, encode_device_message);
    } else {
        run(stream, decode_server_message, encode_server_message);
    }
});

/// Decodes `stream` message by message with `decode`, checking each against `encode`.
fn run<M, E>(
    stream: &[u8],
    decode: fn(&mut BytesMut) -> Result<Option<M>, E>,
    encode: fn(&M, &mut BytesMut),
) where
    M: PartialEq + std::fmt::Debug,
    E: std::fmt::Debug,
{
    let mut buf = BytesMut::from(stream);
    for _ in 0..MAX_MESSAGES {
        let before = buf.clone();
        match decode(&mut buf) {
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                break;
            }
            Ok(Some(message)) => {
                let used = before.len() - buf.len();
                let announced = usize::from(u16::from_be_bytes([before[1], before[2]]));
                assert_eq!(
                    used,
                    HEADER_LEN + announced,
                    "consumed more or less than the frame"
                );
                assert_eq!(&buf[..], &before[used..]);
                assert_prefixes_incomplete(&before[..used], |prefix| {
                    decode(&mut BytesMut::from(prefix))
                });

                let mut encoded = BytesMut::new();
                encode(&message, &mut encoded);
                let wire = encoded.clone();
                let again = decode(&mut encoded)
                    .expect("a re-encoded message is refused")
                    .expect("a re-encoded message is incomplete");
                assert_eq!(again, message, "decode(encode(m)) != m");
                assert!(
                    encoded.is_empty(),
                    "the re-encoded frame was not consumed whole"
                );
                let mut stable = BytesMut::new();
                encode(&again, &mut stable);
                assert_eq!(stable, wire, "encoding is not stable");
            }
            Err(_) => break,
        }
    }
}
