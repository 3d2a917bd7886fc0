//! Fuzzes the feedback service's tuple decoder (`apns_sim::protocol::feedback`), which a
//! provider runs on what the feedback service streams.
//!
//! The input is the stream. Properties, for every tuple decoded in turn: `Ok(None)` consumes
//! nothing; a tuple consumes exactly its own 6 + N bytes, which re-encode to the same bytes
//! (the format has one encoding), and every shorter prefix of them is `Ok(None)`; an error is
//! only for a token length outside 1..=100, read from the header.
#![no_main]

use apns_sim::protocol::feedback::{FeedbackError, FeedbackTuple};
use apns_sim::protocol::token::DeviceToken;
use apns_sim_fuzz::assert_prefixes_incomplete;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Most tuples decoded from one input.
const MAX_TUPLES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    for _ in 0..MAX_TUPLES {
        let before = buf.clone();
        match FeedbackTuple::decode(&mut buf) {
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                break;
            }
            Ok(Some(tuple)) => {
                let used = before.len() - buf.len();
                assert_eq!(used, 6 + tuple.token.len());
                assert_eq!(&buf[..], &before[used..]);
                let mut encoded = BytesMut::new();
                tuple.encode(&mut encoded);
                assert_eq!(
                    &encoded[..],
                    &before[..used],
                    "re-encoding changed the bytes"
                );
                assert_prefixes_incomplete(&before[..used], |prefix| {
                    FeedbackTuple::decode(&mut BytesMut::from(prefix))
                });
            }
            Err(FeedbackError::BadTokenLength(len)) => {
                assert_eq!(before.get(4..6), Some(&len.to_be_bytes()[..]));
                assert!(len == 0 || usize::from(len) > DeviceToken::MAX_LEN);
                break;
            }
        }
    }
});
