//! Hostile input over real TLS: random bytes to the gateway and the device endpoint. Each
//! connection must end with an answer or a close — never a hang — and no code in `src/` may
//! panic (a panicking task would only drop its connection, so a panic hook counts them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use apns_sim::client::connect_tls;
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::Environment;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, frame, TIMEOUT};

/// Panics raised by the simulator's own code (file under `src/`) in this test binary.
static SRC_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_src_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().starts_with("src/"))
            {
                SRC_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Random bytes with a valid command byte now and then, so decoding gets past the first check.
fn garbage(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let len = rng.gen_range(1..400);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    if rng.gen_bool(0.7) {
        bytes[0] = rng.gen_range(0..3);
    }
    bytes
}

#[tokio::test]
async fn random_bytes_never_hang_or_panic_the_simulator() {
    count_src_panics();
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("GARBAGE-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let gateway = t.sim.addrs().gateway.to_string();
    let devices = t.sim.addrs().devices.to_string();
    let device_tls =
        apns_sim::tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    for round in 0..60 {
        let (addr, tls) = if round % 2 == 0 {
            (&gateway, t.default_provider_tls())
        } else {
            (&devices, device_tls.clone())
        };
        let mut stream = connect_tls(addr, "localhost", tls).await.unwrap();
        let bytes = garbage(&mut rng);
        // The server may close before everything is written; that is an answer too.
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        let end = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut sink)).await;
        assert!(
            end.is_ok(),
            "round {round}: no answer and no close for {bytes:02x?}"
        );
    }
    // Still serving.
    let mut gw = t.gateway().await;
    gw.send(&frame(
        tokens[DEFAULT_TOPIC].as_bytes(),
        &common::alert("ok"),
        7,
        0,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(common::next_id(&mut dev).await, 7);
    assert_eq!(
        SRC_PANICS.load(Ordering::SeqCst),
        0,
        "the simulator panicked"
    );
    t.stop().await;
}
