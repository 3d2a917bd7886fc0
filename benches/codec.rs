//! Codec benchmarks: the pure, I/O-free costs of the simulator's hot path.
//!
//! Run with `cargo bench --bench codec` (results in `BENCHMARKS.md`). Each decode benchmark
//! decodes a buffer holding [`FRAMES`] consecutive frames, the way a connection's read buffer
//! holds many frames after one large read, and reports frames/s (`Throughput::Elements`);
//! the command-2 decoder is also reported in bytes/s (`Throughput::Bytes`). Copying the
//! input buffer for each iteration happens in criterion's setup and is not timed.
//!
//! Groups:
//! - `binary_decode`: commands 0, 1 and 2 (`protocol::notification::decode`), which includes
//!   the payload's JSON check;
//! - `binary_decode_bytes`: command 2 again, in bytes/s;
//! - `binary_encode`: command 2 (`protocol::notification::encode`);
//! - `feedback`: feedback tuples, decode and encode;
//! - `device_protocol`: the simulator → device `Notification` frame (what every delivery
//!   writes), decode and encode, and the device → simulator `Ack` (what every delivery reads);
//! - `payload`: `protocol::payload::check` on a typical 200-byte payload, beside a
//!   reference parse of the same bytes into `serde::de::IgnoredAny` (validation without a
//!   `serde_json::Value` tree);
//! - `hub`: one notification through the routing core without sockets (`Hub::push` to a live
//!   session, the session queue, `Hub::device_reply` with the ack); and the binary gateway's
//!   case, the payload inside the command's bytes, with the device frame encoded.

use std::hint::black_box;
use std::time::Duration;

use apns_sim::clock::Clock;
use apns_sim::hub::{Api, DeviceReply, Hub, PushRequest};
use apns_sim::protocol::device::{
    decode_device_message, decode_server_message, encode_device_message, encode_notification,
    encode_server_message, DeviceMessage, DeviceNotification, ServerMessage,
};
use apns_sim::protocol::feedback::FeedbackTuple;
use apns_sim::protocol::notification::{self, Command, Notification};
use apns_sim::protocol::payload::{self, MAX_PAYLOAD_FRAME};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use uuid::Uuid;

/// Frames per decode iteration: about what one 64-128 KiB read buffer holds.
const FRAMES: usize = 512;

/// A typical alert payload of exactly 200 bytes (checked in [`payload_200`]).
fn payload_200() -> Bytes {
    let head = r#"{"aps":{"alert":{"title":"New message","body":"#;
    let tail = r#"},"badge":3,"sound":"default"},"conversation":"c-1234"}"#;
    let fill = 200 - head.len() - tail.len() - 2;
    let text = format!("{head}\"{}\"{tail}", "x".repeat(fill));
    assert_eq!(text.len(), 200, "payload length");
    payload::check(text.as_bytes(), MAX_PAYLOAD_FRAME).expect("valid payload");
    Bytes::from(text)
}

/// A short payload for the legacy commands and the 160-byte command-2 frame.
fn payload_short() -> Bytes {
    Bytes::from_static(br#"{"aps":{"alert":"Hello from the benchmark","badge":1,"sound":"default"},"id":"0123456789abcdef012"}"#)
}

fn token(i: usize) -> DeviceToken {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    bytes[31] = 0xA5;
    DeviceToken::from_bytes(bytes)
}

fn notification(command: Command, i: usize, payload: &Bytes) -> Notification {
    Notification {
        command,
        identifier: (i as u32).to_be_bytes(),
        expiry: Some(1_900_000_000),
        priority: 10,
        token: token(i),
        payload: payload.clone(),
    }
}

/// `FRAMES` encoded notifications of one command, back to back.
fn stream_of(command: Command, payload: &Bytes) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..FRAMES {
        notification::encode(&notification(command, i, payload), &mut buf);
    }
    buf
}

/// Decodes every frame in `buf`; panics if one is missing (the benchmark would be wrong).
fn decode_all(mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Some(frame) = notification::decode(&mut buf).expect("valid frame") {
        black_box(frame);
        n += 1;
    }
    assert_eq!(n, FRAMES);
    n
}

fn binary(c: &mut Criterion) {
    let short = payload_short();
    let typical = payload_200();
    let cases = [
        ("cmd0_simple", stream_of(Command::Simple, &short)),
        ("cmd1_enhanced", stream_of(Command::Enhanced, &short)),
        ("cmd2_frame_160B", stream_of(Command::Frame, &short)),
        ("cmd2_frame_261B", stream_of(Command::Frame, &typical)),
    ];
    assert_eq!(cases[2].1.len(), 160 * FRAMES, "160-byte command-2 frames");

    let mut group = c.benchmark_group("binary_decode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (name, input) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched(|| input.clone(), decode_all, BatchSize::LargeInput)
        });
    }
    group.finish();

    let mut group = c.benchmark_group("binary_decode_bytes");
    for (name, input) in cases.iter().filter(|(n, _)| n.starts_with("cmd2")) {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter_batched(|| input.clone(), decode_all, BatchSize::LargeInput)
        });
    }
    group.finish();

    let mut group = c.benchmark_group("binary_encode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let notes: Vec<Notification> = (0..FRAMES)
        .map(|i| notification(Command::Frame, i, &short))
        .collect();
    let mut out = BytesMut::with_capacity(cases[2].1.len());
    group.bench_function("cmd2_frame_160B", |b| {
        b.iter(|| {
            out.clear();
            for n in &notes {
                notification::encode(n, &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

fn feedback(c: &mut Criterion) {
    let tuples: Vec<FeedbackTuple> = (0..FRAMES)
        .map(|i| FeedbackTuple {
            timestamp: 1_700_000_000 + i as u32,
            token: token(i),
        })
        .collect();
    let mut input = BytesMut::new();
    for t in &tuples {
        t.encode(&mut input);
    }
    let mut group = c.benchmark_group("feedback");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || input.clone(),
            |mut buf| {
                let mut n = 0;
                while let Some(t) = FeedbackTuple::decode(&mut buf).expect("valid tuple") {
                    black_box(t);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::LargeInput,
        )
    });
    let mut out = BytesMut::with_capacity(input.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for t in &tuples {
                t.encode(&mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

fn device_notification(i: usize, payload: &Bytes) -> DeviceNotification {
    DeviceNotification {
        delivery: i as u64,
        token: token(i),
        identifier: (i as u32).to_be_bytes(),
        apns_id: *Uuid::from_u128(i as u128).as_bytes(),
        expiry: 1_900_000_000,
        priority: 10,
        push_type: None,
        collapse_id: None,
        payload: payload.clone(),
    }
}

fn device_protocol(c: &mut Criterion) {
    let typical = payload_200();
    let messages: Vec<ServerMessage> = (0..FRAMES)
        .map(|i| ServerMessage::Notification(device_notification(i, &typical)))
        .collect();
    let mut input = BytesMut::new();
    for m in &messages {
        encode_server_message(m, &mut input);
    }
    let mut acks = BytesMut::new();
    for i in 0..FRAMES {
        encode_device_message(&DeviceMessage::Ack { delivery: i as u64 }, &mut acks);
    }

    let mut group = c.benchmark_group("device_protocol");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("notification_decode_200B", |b| {
        b.iter_batched(
            || input.clone(),
            |mut buf| {
                let mut n = 0;
                while let Some(m) = decode_server_message(&mut buf).expect("valid frame") {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::LargeInput,
        )
    });
    let mut out = BytesMut::with_capacity(input.len());
    group.bench_function("notification_encode_200B", |b| {
        b.iter(|| {
            out.clear();
            for m in &messages {
                encode_server_message(m, &mut out);
            }
            black_box(out.len())
        })
    });
    group.bench_function("ack_decode", |b| {
        b.iter_batched(
            || acks.clone(),
            |mut buf| {
                let mut n = 0;
                while let Some(m) = decode_device_message(&mut buf).expect("valid frame") {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn payload_check(c: &mut Criterion) {
    let typical = payload_200();
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_200B", |b| {
        b.iter(|| payload::check(black_box(&typical), MAX_PAYLOAD_FRAME))
    });
    // Reference point, not simulator code: validating the same JSON without building a
    // `serde_json::Value` tree (what a cheaper `payload::check` could do).
    group.bench_function("validate_ignored_any_200B", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&typical)).is_ok())
    });
    group.finish();
}

fn hub(c: &mut Criterion) {
    let hub = Hub::new(Clock::system());
    let mut session = hub.connect_device("BENCH-1", Environment::Sandbox);
    let token = hub
        .register("BENCH-1", Environment::Sandbox, "com.example.app", false)
        .expect("register");
    let typical = payload_200();
    // The request the binary gateway would hand over (with the command's bytes when
    // `frame` is given).
    let request = |payload: Bytes, frame: Option<Bytes>| PushRequest {
        api: Api::Binary,
        token,
        topic: "com.example.app".into(),
        environment: Environment::Sandbox,
        identifier: [0, 0, 0, 1],
        apns_id: Uuid::new_v4(),
        expiry: Some(0),
        priority: 10,
        push_type: None,
        collapse_id: None,
        payload,
        frame,
        fault: None,
    };
    let mut group = c.benchmark_group("hub");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_deliver_ack", |b| {
        b.iter(|| {
            hub.push(request(typical.clone(), None)).expect("accepted");
            let sent = session.rx.try_recv().expect("queued to the session");
            assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::Ack));
        })
    });
    // The binary gateway's case: the payload inside the command's bytes, which the hub keeps
    // (one copy for both), and the device frame written from what the session queue hands
    // over, as a device session writes it.
    let mut frame = vec![2u8, 0, 0, 0, 0];
    frame.extend_from_slice(&typical);
    let frame = Bytes::from(frame);
    let mut out = BytesMut::new();
    group.bench_function("push_frame_encode_ack", |b| {
        b.iter(|| {
            hub.push(request(frame.slice(5..), Some(frame.clone())))
                .expect("accepted");
            let sent = session.rx.try_recv().expect("queued to the session");
            out.clear();
            encode_notification(&sent.fields(), &mut out);
            black_box(out.len());
            assert!(hub.device_reply(session.id, sent.delivery, DeviceReply::Ack));
        })
    });
    group.finish();
}

fn main() {
    // What `criterion_group!` and `criterion_main!` expand to, without the public function
    // the macros generate (which the crate's `missing_docs` lint would flag).
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    binary(&mut c);
    feedback(&mut c);
    device_protocol(&mut c);
    payload_check(&mut c);
    hub(&mut c);
    c.final_summary();
}
