//! Fuzzes the provider-identity extraction from a client certificate
//! (`apns_sim::pki::profile::provider_identity`, run on every certificate a TLS client
//! presents) and the decoder of Apple's topic-list extension inside it
//! (`decode_topic_list`).
//!
//! Input: one mode byte, then DER. Mode even: a certificate. Properties: an identity has a
//! non-empty topic and a non-empty list of distinct, non-empty topics it allows. Mode odd: a topic-list extension
//! value. Properties: a decoded list is non-empty with non-empty topics, and
//! `decode(encode(list)) == list` (`encode_topic_list` writes Apple's layout, kinds as
//! UTF8String).
#![no_main]

use apns_sim::pki::profile::{decode_topic_list, encode_topic_list, provider_identity, TopicKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, der)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(identity) = provider_identity(der) else {
            return;
        };
        assert!(!identity.topic.is_empty());
        assert!(!identity.topics.is_empty());
        for (i, (topic, _)) in identity.topics.iter().enumerate() {
            assert!(!topic.is_empty(), "an empty topic in {:?}", identity.topics);
            assert!(identity.allows_topic(topic));
            assert!(
                identity.topics[..i].iter().all(|(t, _)| t != topic),
                "topic {topic} listed twice"
            );
        }
    } else {
        let Ok(list) = decode_topic_list(der) else {
            return;
        };
        assert!(!list.is_empty());
        assert!(list.iter().all(|(topic, _)| !topic.is_empty()));
        let encoded = encode_topic_list(&list).expect("a decoded list does not encode");
        let again = decode_topic_list(&encoded).expect("an encoded list does not decode");
        assert_eq!(again, list, "decode(encode(list)) != list");
        for (topic, kind) in &list {
            if let TopicKind::Other(other) = kind {
                assert_eq!(&TopicKind::from_kind(other), kind, "{topic}: {other}");
            }
        }
    }
});
