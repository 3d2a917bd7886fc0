//! The seeds of the fuzz corpora (`fuzz/corpus/<target>/seed-<name>`), written by the
//! project's own encoders from the values of the unit tests' byte-annotated fixtures, in each
//! target's input format (described at the top of `fuzz/fuzz_targets/<target>.rs`).
//!
//! [`check_or_write`] compares them with the committed files, so a format change that is not
//! reflected in the corpus fails the test; with `APNS_SIM_WRITE_FUZZ_SEEDS=1` it rewrites them
//! first. The certificate seeds of `provider_identity` are minted with random keys, so they
//! are only written on request; the check reads them back as identities instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apns_sim::pki::profile::{
    encode_topic_list, provider_identity, universal_topics, CertEnvironment, TopicKind,
};
use apns_sim::pki::Pki;
use apns_sim::protocol::device::{
    encode_device_message, encode_server_message, CloseCode, DeviceMessage, DeviceNotification,
    ServerMessage, PROTOCOL_VERSION,
};
use apns_sim::protocol::error_response::{ErrorResponse, Status};
use apns_sim::protocol::feedback::FeedbackTuple;
use apns_sim::protocol::http2::{goaway, settings, NO_ERROR, SETTINGS_MAX_CONCURRENT_STREAMS};
use apns_sim::protocol::notification::{
    encode_enhanced_raw, encode_frame_items, encode_frame_raw, encode_simple_raw, FrameItem,
};
use apns_sim::protocol::token::{DeviceToken, TokenKind};
use apns_sim::protocol::Environment;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

/// The environment variable that makes [`check_or_write`] rewrite the seeds.
const WRITE_VAR: &str = "APNS_SIM_WRITE_FUZZ_SEEDS";

/// The unit tests' recognisable token: 0x00, 0x01, … 0x1F.
const TOKEN: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F,
];
/// The unit tests' identifier.
const ID: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
/// The unit tests' 10-byte payload.
const PAYLOAD: &[u8] = br#"{"aps":{}}"#;
/// The unit tests' expiry, 0x5F5E1000.
const EXPIRY: u32 = 1_600_000_000;

/// The fixed key, key id and team of the `jwt_verify` target (the same constants are in
/// `fuzz/fuzz_targets/jwt_verify.rs`).
const JWT_KEY: [u8; 32] = [0x11; 32];
const JWT_KEY_ID: &str = "FUZZKEY001";
const JWT_TEAM_ID: &str = "FUZZTEAM01";
/// The `iat` of the JWT seeds, the target's clock.
const JWT_IAT: u64 = 1_700_000_000;

/// `(target, name, bytes)` of every seed the encoders write the same way each time.
fn deterministic() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };
    for (name, bytes) in notification() {
        add("notification", name, bytes);
    }
    for (name, bytes) in error_response() {
        add("error_response", &name, bytes);
    }
    for (name, bytes) in feedback() {
        add("feedback", name, bytes);
    }
    for (name, bytes) in device() {
        add("device", &name, bytes);
    }
    for (name, bytes) in token_text() {
        add("token_text", &name, bytes);
    }
    for (name, text) in http2_request() {
        add("http2_request", name, text.into_bytes());
    }
    for (name, bytes) in http2_frames() {
        add("http2_frames", name, bytes);
    }
    for (name, bytes) in jwt_verify() {
        add("jwt_verify", name, bytes);
    }
    for (name, bytes) in topic_lists() {
        add("provider_identity", name, bytes);
    }
    seeds
}

fn with(prefix: &[u8], body: BytesMut) -> Vec<u8> {
    [prefix, &body[..]].concat()
}

fn simple(token: &[u8], payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    encode_simple_raw(token, payload, &mut b);
    b
}

fn enhanced() -> BytesMut {
    let mut b = BytesMut::new();
    encode_enhanced_raw(ID, EXPIRY, &TOKEN, PAYLOAD, &mut b);
    b
}

fn frame(priority: u8, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    encode_frame_raw(&TOKEN, payload, ID, EXPIRY, priority, &mut b);
    b
}

fn items(list: &[(u8, &[u8])]) -> BytesMut {
    let items: Vec<FrameItem> = list
        .iter()
        .map(|(id, data)| FrameItem {
            id: *id,
            data: Bytes::copy_from_slice(data),
        })
        .collect();
    let mut b = BytesMut::new();
    encode_frame_items(&items, &mut b);
    b
}

/// Input: the legacy payload limit (u16), then the stream.
fn notification() -> Vec<(&'static str, Vec<u8>)> {
    let limit = 256u16.to_be_bytes();
    let expiry = EXPIRY.to_be_bytes();
    let stream = [simple(&TOKEN, PAYLOAD), enhanced(), frame(10, PAYLOAD)].concat();
    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(1000));
    vec![
        ("simple", with(&limit, simple(&TOKEN, PAYLOAD))),
        ("enhanced", with(&limit, enhanced())),
        ("frame", with(&limit, frame(10, PAYLOAD))),
        ("frame-priority-5", with(&limit, frame(5, PAYLOAD))),
        (
            "frame-items-reversed",
            with(
                &limit,
                items(&[
                    (5, &[10]),
                    (4, &expiry),
                    (3, &ID),
                    (2, PAYLOAD),
                    (1, &TOKEN),
                ]),
            ),
        ),
        (
            "frame-token-and-payload-only",
            with(&limit, items(&[(1, &TOKEN), (2, PAYLOAD)])),
        ),
        ("stream-of-three", [&limit[..], &stream].concat()),
        (
            "legacy-limit-2048",
            with(&2048u16.to_be_bytes(), simple(&TOKEN, big.as_bytes())),
        ),
        (
            "reject-unknown-command",
            [&limit[..], &[0x03, 0x00]].concat(),
        ),
        (
            "reject-frame-too-large",
            [&limit[..], &[0x02, 0xFF, 0xFF, 0xFF, 0xFF]].concat(),
        ),
        (
            "reject-token-31",
            with(&limit, simple(&TOKEN[..31], PAYLOAD)),
        ),
        (
            "reject-duplicate-item",
            with(&limit, items(&[(1, &TOKEN), (1, &TOKEN), (2, PAYLOAD)])),
        ),
        ("reject-priority-7", with(&limit, frame(7, PAYLOAD))),
        ("reject-not-json", with(&limit, frame(10, b"{not json"))),
        (
            "reject-item-overruns",
            [&limit[..], &[0x02, 0, 0, 0, 4, 1, 0, 32, 0]].concat(),
        ),
    ]
}

fn error_response() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Status::ALL
        .iter()
        .map(|&status| {
            let packet = ErrorResponse {
                status,
                identifier: ID,
            };
            (
                format!("status-{}", status.code()),
                packet.encode().to_vec(),
            )
        })
        .collect();
    seeds.push((
        "unknown-status-9".into(),
        vec![8, 9, 0xDE, 0xAD, 0xBE, 0xEF],
    ));
    seeds.push(("wrong-command".into(), vec![1, 8, 0, 0, 0, 0]));
    seeds
}

fn tuple(timestamp: u32, token: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    FeedbackTuple {
        timestamp,
        token: DeviceToken::new(token).expect("1 to 100 bytes"),
    }
    .encode(&mut b);
    b
}

fn feedback() -> Vec<(&'static str, Vec<u8>)> {
    let stream = [
        tuple(1_600_000_000, &[0x5A; 32]),
        tuple(1_600_000_001, &[0xA5; 80]),
        tuple(0, &[1]),
    ]
    .concat();
    vec![
        ("tuple-32", tuple(1_600_000_000, &[0x5A; 32]).to_vec()),
        ("tuple-100", tuple(1_600_000_000, &[0x5A; 100]).to_vec()),
        ("tuple-1", tuple(u32::MAX, &[0xFF]).to_vec()),
        ("stream-of-three", stream),
        ("bad-length-0", vec![0x5F, 0x5E, 0x10, 0x00, 0x00, 0x00]),
        ("bad-length-101", vec![0x5F, 0x5E, 0x10, 0x00, 0x00, 0x65]),
    ]
}

/// Input: the direction byte (0: device → simulator, 1: simulator → device), then frames.
fn device() -> Vec<(String, Vec<u8>)> {
    let to_sim = [
        DeviceMessage::Hello {
            version: PROTOCOL_VERSION,
            environment: Environment::Sandbox,
            serial: "device-1".into(),
        },
        DeviceMessage::Register {
            fresh_install: true,
            app: "com.example.app".into(),
            kind: TokenKind::Remote,
        },
        DeviceMessage::Register {
            fresh_install: false,
            app: "com.example.app".into(),
            kind: TokenKind::Voip,
        },
        DeviceMessage::Register {
            fresh_install: false,
            app: "com.example.app".into(),
            kind: TokenKind::LiveActivity("ride-42".into()),
        },
        DeviceMessage::Ack { delivery: 7 },
        DeviceMessage::NotInstalled { delivery: 8 },
        DeviceMessage::Ping { nonce: 0x0102 },
    ];
    let token = DeviceToken::from_bytes(TOKEN);
    let to_device = [
        ServerMessage::Welcome { heartbeat_secs: 30 },
        ServerMessage::Registered {
            app: "com.example.app".into(),
            kind: TokenKind::LiveActivityStart,
            token,
        },
        ServerMessage::Notification(DeviceNotification {
            delivery: 7,
            token,
            identifier: ID,
            apns_id: [0xAB; 16],
            expiry: EXPIRY,
            priority: 10,
            push_type: Some("alert".into()),
            collapse_id: Some("score".into()),
            payload: Bytes::from_static(PAYLOAD),
        }),
        ServerMessage::Notification(DeviceNotification {
            delivery: 8,
            token: DeviceToken::new(&[0x42; 100]).expect("100 bytes"),
            identifier: [0; 4],
            apns_id: [0; 16],
            expiry: 0,
            priority: 5,
            push_type: None,
            collapse_id: None,
            payload: Bytes::from_static(PAYLOAD),
        }),
        ServerMessage::Pong { nonce: 0x0102 },
        ServerMessage::Error {
            code: CloseCode::Replaced,
            message: "another connection took serial device-1".into(),
        },
    ];
    let mut seeds = Vec::new();
    let mut stream = vec![0];
    for (i, m) in to_sim.iter().enumerate() {
        let mut b = BytesMut::new();
        encode_device_message(m, &mut b);
        stream.extend_from_slice(&b);
        seeds.push((
            format!("to-simulator-{i}-{:02x}", m.frame_type()),
            with(&[0], b),
        ));
    }
    seeds.push(("to-simulator-stream".into(), stream));
    let mut stream = vec![1];
    for (i, m) in to_device.iter().enumerate() {
        let mut b = BytesMut::new();
        encode_server_message(m, &mut b);
        stream.extend_from_slice(&b);
        seeds.push((
            format!("to-device-{i}-{:02x}", m.frame_type()),
            with(&[1], b),
        ));
    }
    seeds.push(("to-device-stream".into(), stream));
    seeds.push((
        "to-simulator-body-too-large".into(),
        vec![0, 0x01, 0x20, 0x01],
    ));
    seeds
}

/// Input: a selector (0 hex token, 1 kind, 2 `APP[:KIND]`, 3 kind code), then the text.
fn token_text() -> Vec<(String, Vec<u8>)> {
    let hex = DeviceToken::from_bytes(TOKEN).to_hex();
    let mut seeds = vec![
        ("hex-32".to_owned(), [&[0][..], hex.as_bytes()].concat()),
        (
            "hex-32-upper".to_owned(),
            [&[0][..], hex.to_ascii_uppercase().as_bytes()].concat(),
        ),
        (
            "hex-100".to_owned(),
            [&[0][..], "ab".repeat(100).as_bytes()].concat(),
        ),
        ("hex-odd".to_owned(), [&[0][..], b"abc"].concat()),
    ];
    for kind in TokenKind::every("ride-42") {
        let name = kind.name();
        seeds.push((
            format!("kind-{name}"),
            [&[1][..], kind.to_string().as_bytes()].concat(),
        ));
        let app = format!("com.example.app:{kind}");
        seeds.push((format!("app-{name}"), [&[2][..], app.as_bytes()].concat()));
        let activity = kind.activity().unwrap_or("").as_bytes();
        seeds.push((
            format!("code-{name}"),
            [&[3, kind.code()][..], activity].concat(),
        ));
    }
    seeds.push(("app-plain".into(), [&[2][..], b"com.example.app"].concat()));
    seeds
}

/// Input: `METHOD PATH`, then `name: value` lines, `@cert: topics` and `@strict`.
fn http2_request() -> Vec<(&'static str, String)> {
    let token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let id = "6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7d";
    let path = format!("POST /3/device/{token}");
    vec![
        ("minimal-token-auth", format!("{path}\napns-topic: com.example.app")),
        (
            "every-header",
            format!(
                "{path}\napns-id: {id}\napns-topic: com.example.app\napns-push-type: alert\n\
                 apns-priority: 5\napns-expiration: 1600000000\napns-collapse-id: score\n\
                 authorization: bearer x.y.z"
            ),
        ),
        (
            "voip-topic",
            format!("{path}\napns-topic: com.example.app.voip\napns-push-type: voip"),
        ),
        (
            "liveactivity",
            format!(
                "{path}\napns-topic: com.example.app.push-type.liveactivity\napns-push-type: liveactivity"
            ),
        ),
        ("certificate-one-topic", format!("{path}\n@cert: com.example.app")),
        (
            "certificate-two-topics",
            format!("{path}\n@cert: com.example.app,com.example.app.voip\napns-topic: com.example.app.voip"),
        ),
        (
            "duplicate-topic",
            format!("{path}\napns-topic: com.example.app\napns-topic: com.example.app"),
        ),
        ("get-method", format!("GET /3/device/{token}\napns-topic: com.example.app")),
        (
            "uppercase-id-strict",
            format!(
                "{path}\napns-topic: com.example.app\napns-id: {}\n@strict",
                id.to_ascii_uppercase()
            ),
        ),
        (
            "query-string",
            format!("POST /3/device/{token}?x=1\napns-topic: com.example.app"),
        ),
        ("token-100-bytes", format!("POST /3/device/{}\napns-topic: com.example.app", "ab".repeat(100))),
    ]
}

/// Input: the piece size, the ACK drop mask, then the stream (a preface, then frames).
fn http2_frames() -> Vec<(&'static str, Vec<u8>)> {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let ack = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
    let ping = [&[0, 0, 8, 0x6, 0, 0, 0, 0, 0][..], &[7; 8]].concat();
    let limit = settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1)]);
    let away = goaway(3, NO_ERROR, br#"{"reason":"IdleTimeout"}"#);
    let client = [&preface[..], &limit, &ack, &ping, &ack, &away].concat();
    let server = [
        &limit[..],
        &settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]),
        &ping,
        &away,
    ]
    .concat();
    vec![
        ("client-whole", [&[0, 0][..], &client].concat()),
        (
            "client-drop-first-ack-bytewise",
            [&[1, 1][..], &client].concat(),
        ),
        (
            "client-drop-second-ack-pieces",
            [&[7, 2][..], &client].concat(),
        ),
        ("server-output-pieces", [&[5, 0][..], &server].concat()),
        ("goaway-only", [&[0, 0][..], &away].concat()),
    ]
}

/// A token over the given header and claims JSON, signed by the target's key.
fn jwt(header: &str, claims: &str, der: bool) -> String {
    let key = SigningKey::from_slice(&JWT_KEY).expect("a valid P-256 scalar");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature: Signature = key.sign(input.as_bytes());
    let signature = if der {
        signature.to_der().as_bytes().to_vec()
    } else {
        signature.to_bytes().to_vec()
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Input: mode 0 and an `authorization` value, or mode 1/3 (R||S / DER), the header's
/// length, header JSON and claims JSON.
fn jwt_verify() -> Vec<(&'static str, Vec<u8>)> {
    let header = format!(r#"{{"alg":"ES256","kid":"{JWT_KEY_ID}"}}"#);
    let claims = format!(r#"{{"iss":"{JWT_TEAM_ID}","iat":{JWT_IAT}}}"#);
    let bearer = |token: String| [&[0][..], format!("bearer {token}").as_bytes()].concat();
    let signed = |mode: u8, header: &str, claims: String| {
        let len = u8::try_from(header.len()).expect("a short header");
        [&[mode, len][..], header.as_bytes(), claims.as_bytes()].concat()
    };
    let iss = format!(r#""iss":"{JWT_TEAM_ID}""#);
    vec![
        ("bearer-valid", bearer(jwt(&header, &claims, false))),
        ("bearer-valid-der", bearer(jwt(&header, &claims, true))),
        (
            "bearer-uppercase-scheme",
            [
                &[0][..],
                format!("Bearer {}", jwt(&header, &claims, false)).as_bytes(),
            ]
            .concat(),
        ),
        ("bearer-empty", b"\0bearer ".to_vec()),
        ("scheme-basic", b"\0basic abc".to_vec()),
        ("signed-valid", signed(1, &header, claims.clone())),
        ("signed-valid-der", signed(3, &header, claims.clone())),
        (
            "signed-iat-float",
            signed(1, &header, format!(r#"{{{iss},"iat":{JWT_IAT}.5}}"#)),
        ),
        (
            "signed-iat-string",
            signed(1, &header, format!(r#"{{{iss},"iat":"{JWT_IAT}"}}"#)),
        ),
        (
            "signed-iat-millis",
            signed(1, &header, format!(r#"{{{iss},"iat":{JWT_IAT}000}}"#)),
        ),
        (
            "signed-iat-negative",
            signed(1, &header, format!(r#"{{{iss},"iat":-1}}"#)),
        ),
        (
            "signed-iss-number",
            signed(1, &header, format!(r#"{{"iss":7,"iat":{JWT_IAT}}}"#)),
        ),
        (
            "signed-other-team",
            signed(
                1,
                &header,
                format!(r#"{{"iss":"OTHERTEAM1","iat":{JWT_IAT}}}"#),
            ),
        ),
        (
            "signed-alg-none",
            signed(1, r#"{"alg":"none","kid":"FUZZKEY001"}"#, claims.clone()),
        ),
        (
            "signed-alg-hs256",
            signed(1, r#"{"alg":"HS256","kid":"FUZZKEY001"}"#, claims.clone()),
        ),
        (
            "signed-no-kid",
            signed(1, r#"{"alg":"ES256"}"#, claims.clone()),
        ),
        (
            "signed-unknown-kid",
            signed(1, r#"{"alg":"ES256","kid":"OTHERKEY01"}"#, claims.clone()),
        ),
        ("signed-header-array", signed(1, "[]", claims)),
    ]
}

/// Input: mode 1 (topic-list value), then DER.
fn topic_lists() -> Vec<(&'static str, Vec<u8>)> {
    let universal = encode_topic_list(&universal_topics("com.example.app")).expect("encodes");
    let other = encode_topic_list(&[
        ("com.example.app".to_owned(), TopicKind::App),
        (
            "com.example.app.pushkit.fileprovider".to_owned(),
            TopicKind::Other("fileprovider".into()),
        ),
    ])
    .expect("encodes");
    vec![
        ("topic-list-universal", [&[1][..], &universal].concat()),
        ("topic-list-other-kind", [&[1][..], &other].concat()),
    ]
}

/// The DER of the first certificate in a PEM text.
pub(crate) fn pem_to_der(pem: &str) -> Vec<u8> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    parsed.contents
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The environments the certificate seeds are minted for, and their file names.
const CERT_SEEDS: [(CertEnvironment, &str); 3] = [
    (CertEnvironment::Universal, "seed-cert-universal"),
    (CertEnvironment::Sandbox, "seed-cert-sandbox"),
    (CertEnvironment::Production, "seed-cert-production"),
];

/// Mints the certificate seeds of `provider_identity` (mode 0, then the DER).
fn write_certificates(dir: &Path) {
    let mut pki = Pki::generate().expect("a PKI");
    for (environment, file) in CERT_SEEDS {
        let cert = pki
            .mint_provider("com.example.app", environment, "SIMTEAM001")
            .expect("a provider certificate");
        let bytes = [&[0][..], &pem_to_der(&cert.cert_pem)].concat();
        std::fs::write(dir.join(file), bytes).expect("write a seed");
    }
}

/// Writes the seeds when asked to, then checks the committed ones (see the module docs).
pub(crate) fn check_or_write() {
    let root = corpus();
    let seeds = deterministic();
    if std::env::var_os(WRITE_VAR).is_some() {
        for (target, name, bytes) in &seeds {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("create a corpus folder");
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
        }
        write_certificates(&root.join("provider_identity"));
    }

    let targets: BTreeSet<&str> = seeds.iter().map(|(t, _, _)| *t).collect();
    for target in targets {
        let mut expected: BTreeSet<String> = seeds
            .iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, name, _)| format!("seed-{name}"))
            .collect();
        if target == "provider_identity" {
            expected.extend(CERT_SEEDS.iter().map(|(_, f)| (*f).to_owned()));
        }
        let dir = root.join(target);
        let found: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; run with {WRITE_VAR}=1", dir.display()))
            .map(|entry| {
                entry
                    .expect("a corpus entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.starts_with("seed-"))
            .collect();
        assert_eq!(
            found, expected,
            "{target}: seeds differ from the generator's; run with {WRITE_VAR}=1"
        );
    }
    for (target, name, bytes) in &seeds {
        let path = root.join(target).join(format!("seed-{name}"));
        let committed = std::fs::read(&path).expect("read a seed");
        assert!(
            committed == *bytes,
            "{} is not what the encoders write today; run with {WRITE_VAR}=1",
            path.display()
        );
    }
    for (environment, file) in CERT_SEEDS {
        let bytes = std::fs::read(root.join("provider_identity").join(file)).expect("read a seed");
        let identity = provider_identity(&bytes[1..]).expect("a certificate seed reads back");
        assert_eq!(identity.topic, "com.example.app");
        assert_eq!(identity.environment, environment);
    }
}
