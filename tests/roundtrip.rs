//! Round-trip property tests of every codec with both an encoder and a decoder: for values
//! generated within each format's rules, `decode(encode(x)) == x`, the decoder consumes
//! exactly what the encoder wrote, and a stream of several encodings decodes back in order.
//!
//! They run on stable with `cargo test` (the fuzz targets in `fuzz/` need nightly and check
//! the other direction: arbitrary bytes in, no panic, and a round trip of whatever decodes).
//! proptest rather than quickcheck: its strategies compose for values with bounds (a 1..=64
//! byte serial, a JSON payload under a limit) without an `Arbitrary` impl per type, which the
//! orphan rule would not allow here for the library's types, and it shrinks a failure to a
//! minimal value.
//!
//! Only the public API is used, so these tests do not change with the modules' internals.
//! The last test keeps the fuzz corpora's seeds (`fuzz/corpus/<target>/seed-*`) in step with
//! the encoders (see `fuzz/README.md`).

use apns_sim::pki::profile::{
    decode_topic_list, encode_topic_list, provider_identity, CertEnvironment, TopicKind,
};
use apns_sim::pki::Pki;
use apns_sim::protocol::device::{
    decode_device_message, decode_server_message, encode_device_message, encode_server_message,
    CloseCode, DeviceMessage, DeviceNotification, ServerMessage, PROTOCOL_VERSION,
};
use apns_sim::protocol::error_response::{ErrorResponse, Status};
use apns_sim::protocol::feedback::FeedbackTuple;
use apns_sim::protocol::http2::{
    find_goaway, goaway, settings, FrameBoundary, SETTINGS_MAX_CONCURRENT_STREAMS,
};
use apns_sim::protocol::notification::{
    decode, decode_with_frame, encode, encode_frame_items, Command, FrameItem, Notification,
};
use apns_sim::protocol::payload::{MAX_PAYLOAD_FRAME, MAX_PAYLOAD_LEGACY};
use apns_sim::protocol::token::{AppToken, DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// A JSON object payload of at most `max` bytes: `{"aps":{"alert":"…"}}` with printable
/// ASCII text (no `"` or `\`, so it stays one JSON string).
fn payload(max: usize) -> impl Strategy<Value = Bytes> {
    let room = max - r#"{"aps":{"alert":""}}"#.len();
    proptest::string::string_regex(&format!("[ !#-\\[\\]-~]{{0,{room}}}"))
        .expect("a valid regex")
        .prop_map(|text| Bytes::from(format!(r#"{{"aps":{{"alert":"{text}"}}}}"#)))
}

fn token32() -> impl Strategy<Value = DeviceToken> {
    any::<[u8; 32]>().prop_map(DeviceToken::from_bytes)
}

/// A token of 1 to 100 bytes, the HTTP/2 API's and the device protocol's rule.
fn any_token() -> impl Strategy<Value = DeviceToken> {
    proptest::collection::vec(any::<u8>(), 1..=DeviceToken::MAX_LEN)
        .prop_map(|bytes| DeviceToken::new(&bytes).expect("1 to 100 bytes"))
}

/// A well-formed notification in one of the three binary formats, with only the fields that
/// format carries (command 0: none; command 1: identifier and expiry; command 2: all).
fn notification() -> impl Strategy<Value = Notification> {
    let simple =
        (token32(), payload(MAX_PAYLOAD_LEGACY)).prop_map(|(token, payload)| Notification {
            command: Command::Simple,
            identifier: [0; 4],
            expiry: None,
            priority: 10,
            token,
            payload,
        });
    let enhanced = (
        token32(),
        payload(MAX_PAYLOAD_LEGACY),
        any::<[u8; 4]>(),
        any::<u32>(),
    )
        .prop_map(|(token, payload, identifier, expiry)| Notification {
            command: Command::Enhanced,
            identifier,
            expiry: Some(expiry),
            priority: 10,
            token,
            payload,
        });
    let frame = (
        token32(),
        payload(MAX_PAYLOAD_FRAME),
        any::<[u8; 4]>(),
        any::<Option<u32>>(),
        prop_oneof![Just(5u8), Just(10u8)],
    )
        .prop_map(
            |(token, payload, identifier, expiry, priority)| Notification {
                command: Command::Frame,
                identifier,
                expiry,
                priority,
                token,
                payload,
            },
        );
    prop_oneof![simple, enhanced, frame]
}

/// A string of 1..=`max_chars` characters, any Unicode but controls (each up to 4 bytes).
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{1,{max_chars}}}")).expect("a valid regex")
}

fn token_kind() -> impl Strategy<Value = TokenKind> {
    (0usize..10, "[a-zA-Z0-9-]{1,64}").prop_map(|(index, activity)| {
        TokenKind::every(&activity)
            .into_iter()
            .nth(index)
            .expect("ten kinds")
    })
}

fn environment() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Sandbox), Just(Environment::Production)]
}

/// Device → simulator messages within the protocol's limits (serial ≤ 64 bytes: 16
/// characters of up to 4 bytes; app ≤ 255 bytes: 63 characters).
fn device_message() -> impl Strategy<Value = DeviceMessage> {
    prop_oneof![
        (environment(), text(16)).prop_map(|(environment, serial)| DeviceMessage::Hello {
            version: PROTOCOL_VERSION,
            environment,
            serial,
        }),
        (any::<bool>(), text(63), token_kind()).prop_map(|(fresh_install, app, kind)| {
            DeviceMessage::Register {
                fresh_install,
                app,
                kind,
            }
        }),
        any::<u64>().prop_map(|delivery| DeviceMessage::Ack { delivery }),
        any::<u64>().prop_map(|delivery| DeviceMessage::NotInstalled { delivery }),
        any::<u64>().prop_map(|nonce| DeviceMessage::Ping { nonce }),
    ]
}

/// Simulator → device messages within the protocol's limits (a notification's payload up to
/// the 5120 bytes of a VoIP push, the largest the gateway passes on).
fn server_message() -> impl Strategy<Value = ServerMessage> {
    let notification = (
        (
            any::<u64>(),
            any_token(),
            any::<[u8; 4]>(),
            any::<[u8; 16]>(),
        ),
        (any::<u32>(), any::<u8>()),
        (
            proptest::option::of(text(63)),
            proptest::option::of(text(16)),
        ),
        proptest::collection::vec(any::<u8>(), 0..=5120),
    )
        .prop_map(
            |(
                (delivery, token, identifier, apns_id),
                (expiry, priority),
                (push_type, collapse_id),
                payload,
            )| {
                ServerMessage::Notification(DeviceNotification {
                    delivery,
                    token,
                    identifier,
                    apns_id,
                    expiry,
                    priority,
                    push_type,
                    collapse_id,
                    payload: Bytes::from(payload),
                })
            },
        );
    prop_oneof![
        any::<u16>().prop_map(|heartbeat_secs| ServerMessage::Welcome { heartbeat_secs }),
        (text(63), token_kind(), any_token())
            .prop_map(|(app, kind, token)| ServerMessage::Registered { app, kind, token }),
        notification,
        any::<u64>().prop_map(|nonce| ServerMessage::Pong { nonce }),
        (
            proptest::sample::select(CloseCode::ALL.to_vec()),
            prop_oneof![Just(String::new()), text(63)]
        )
            .prop_map(|(code, message)| ServerMessage::Error { code, message }),
    ]
}

/// Encodes every value into one stream, then decodes them back in order with nothing left.
fn stream_round_trip<T, E>(
    values: &[T],
    encode: impl Fn(&T, &mut BytesMut),
    decode: impl Fn(&mut BytesMut) -> Result<Option<T>, E>,
) -> Result<(), TestCaseError>
where
    T: PartialEq + std::fmt::Debug,
    E: std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    for value in values {
        encode(value, &mut buf);
    }
    for value in values {
        let decoded = decode(&mut buf).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(decoded.as_ref(), Some(value));
    }
    prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    prop_assert!(matches!(decode(&mut buf), Ok(None)));
    Ok(())
}

proptest! {
    #[test]
    fn notifications_round_trip(n in notification()) {
        let mut buf = BytesMut::new();
        encode(&n, &mut buf);
        let wire = buf.clone().freeze();
        let (decoded, frame) = decode_with_frame(&mut buf, MAX_PAYLOAD_LEGACY)
            .expect("refused")
            .expect("incomplete");
        prop_assert_eq!(decoded, n);
        prop_assert_eq!(frame, wire);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn notification_streams_round_trip(ns in proptest::collection::vec(notification(), 1..8)) {
        stream_round_trip(&ns, encode, decode)?;
    }

    /// Command 2 items may come in any order (spec §1.4): every order decodes the same.
    #[test]
    fn frame_items_in_any_order_decode_the_same(
        token in token32(),
        payload in payload(MAX_PAYLOAD_FRAME),
        identifier in any::<[u8; 4]>(),
        expiry in any::<u32>(),
        priority in prop_oneof![Just(5u8), Just(10u8)],
        order in Just((0..5usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let items = [
            FrameItem { id: 1, data: Bytes::copy_from_slice(token.as_bytes()) },
            FrameItem { id: 2, data: payload.clone() },
            FrameItem { id: 3, data: Bytes::copy_from_slice(&identifier) },
            FrameItem { id: 4, data: Bytes::copy_from_slice(&expiry.to_be_bytes()) },
            FrameItem { id: 5, data: Bytes::copy_from_slice(&[priority]) },
        ];
        let shuffled: Vec<FrameItem> = order.iter().map(|&i| items[i].clone()).collect();
        let mut buf = BytesMut::new();
        encode_frame_items(&shuffled, &mut buf);
        let expected = Notification {
            command: Command::Frame,
            identifier,
            expiry: Some(expiry),
            priority,
            token,
            payload,
        };
        prop_assert_eq!(decode(&mut buf).expect("refused"), Some(expected));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn error_responses_round_trip(
        status in proptest::sample::select(Status::ALL.to_vec()),
        identifier in any::<[u8; 4]>(),
    ) {
        let response = ErrorResponse { status, identifier };
        let bytes = response.encode();
        prop_assert_eq!(ErrorResponse::decode(&bytes), Ok(Some((response, ErrorResponse::LEN))));
        // What follows the packet is not read.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&bytes);
        prop_assert_eq!(ErrorResponse::decode(&longer), Ok(Some((response, ErrorResponse::LEN))));
    }

    #[test]
    fn feedback_tuples_round_trip(
        tuples in proptest::collection::vec(
            (any::<u32>(), any_token()).prop_map(|(timestamp, token)| FeedbackTuple { timestamp, token }),
            1..8,
        )
    ) {
        stream_round_trip(&tuples, FeedbackTuple::encode, FeedbackTuple::decode)?;
    }

    #[test]
    fn device_messages_round_trip(ms in proptest::collection::vec(device_message(), 1..8)) {
        stream_round_trip(&ms, encode_device_message, decode_device_message)?;
    }

    #[test]
    fn server_messages_round_trip(ms in proptest::collection::vec(server_message(), 1..4)) {
        stream_round_trip(&ms, encode_server_message, decode_server_message)?;
    }

    #[test]
    fn tokens_round_trip_through_hex_and_json(token in any_token()) {
        let hex = token.to_hex();
        prop_assert_eq!(hex.len(), 2 * token.len());
        prop_assert_eq!(DeviceToken::from_hex(&hex), Ok(token));
        prop_assert_eq!(DeviceToken::from_hex(&hex.to_ascii_uppercase()), Ok(token));
        prop_assert_eq!(DeviceToken::new(token.as_bytes()), Ok(token));
        let json = serde_json::to_string(&token).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<DeviceToken>(&json).expect("deserialises"), token);
    }

    #[test]
    fn binary_tokens_round_trip_through_bytes(bytes in any::<[u8; 32]>()) {
        let token = DeviceToken::from_bytes(bytes);
        prop_assert_eq!(DeviceToken::from_slice(token.as_bytes()), Ok(token));
        prop_assert_eq!(token.as_bytes(), &bytes[..]);
    }

    #[test]
    fn token_kinds_round_trip_through_text_and_code(kind in token_kind()) {
        prop_assert_eq!(kind.to_string().parse::<TokenKind>(), Ok(kind.clone()));
        prop_assert_eq!(
            TokenKind::from_code(kind.code(), kind.activity().unwrap_or("")),
            Ok(kind.clone())
        );
    }

    #[test]
    fn app_tokens_round_trip_through_text(app in "[a-zA-Z0-9.-]{1,255}", kind in token_kind()) {
        let token = AppToken::new(app, kind);
        prop_assert_eq!(token.to_string().parse::<AppToken>(), Ok(token.clone()));
    }

    #[test]
    fn goaways_round_trip(last in any::<u32>(), code in any::<u32>(), debug in proptest::collection::vec(any::<u8>(), 0..512)) {
        let frame = goaway(last, code, &debug);
        let found = find_goaway(&frame).expect("found");
        prop_assert_eq!(found.last_stream_id, last & 0x7fff_ffff);
        prop_assert_eq!(found.error_code, code);
        prop_assert_eq!(&found.debug_data[..], &debug[..]);
        let mut boundary = FrameBoundary::default();
        for byte in frame.iter() {
            boundary.feed(std::slice::from_ref(byte));
        }
        prop_assert_eq!(boundary.last_goaway(), Some(&found));
        prop_assert!(boundary.at_boundary());
    }

    #[test]
    fn settings_limits_round_trip(limits in proptest::collection::vec(any::<u32>(), 1..6)) {
        let mut boundary = FrameBoundary::default();
        for &limit in &limits {
            boundary.feed(&settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, limit)]));
        }
        prop_assert_eq!(boundary.max_streams_seen(), &limits[..]);
        prop_assert_eq!(boundary.settings_frames(), limits.len() as u64);
    }

    #[test]
    fn topic_lists_round_trip(
        topics in proptest::collection::vec(
            (
                "[a-z0-9.-]{1,40}",
                prop_oneof![
                    Just(TopicKind::App),
                    Just(TopicKind::Voip),
                    Just(TopicKind::Complication),
                    "[a-z]{1,12}".prop_map(|k| TopicKind::from_kind(&k)),
                ],
            ),
            1..6,
        )
    ) {
        let der = encode_topic_list(&topics).expect("encodes");
        prop_assert_eq!(decode_topic_list(&der).expect("decodes"), topics);
    }
}

/// Every provider certificate the PKI mints reads back as the identity it was minted for.
#[test]
fn minted_certificates_read_back_as_their_identity() {
    let pki = Pki::generate().expect("a PKI");
    let mut seen = 0;
    for cert in pki.providers() {
        let der = seeds::pem_to_der(&cert.cert_pem);
        let identity = provider_identity(&der).expect("a minted certificate reads back");
        assert_eq!(identity.topic, cert.topic);
        assert_eq!(identity.environment, cert.environment);
        assert_eq!(identity.team_id.as_deref(), Some(cert.team_id.as_str()));
        assert!(identity.allows_topic(&cert.topic));
        seen += 1;
    }
    assert!(seen > 0, "the PKI minted no provider certificate");
    assert!(pki
        .providers()
        .any(|c| c.environment == CertEnvironment::Universal));
}

/// The seeds of the fuzz corpora: written by the encoders, compared with the files in
/// `fuzz/corpus/`.
#[path = "roundtrip/seeds.rs"]
mod seeds;

/// The committed seeds are what the encoders write today (set `APNS_SIM_WRITE_FUZZ_SEEDS=1`
/// to rewrite them after a format change), and the certificate seeds, minted with random
/// keys, still read back as provider identities.
#[test]
fn fuzz_corpus_seeds_are_current() {
    seeds::check_or_write();
}
