//! The feedback service: uninstall → push → one tuple for the app's topic, then an empty
//! list; tuples are per topic and per environment.

use apns_sim::client::device::{DeviceCommand, DeviceEvent};
use apns_sim::client::read_feedback;
use apns_sim::hub::Outcome;
use apns_sim::pki::{CertEnvironment, DEFAULT_TOPIC};
use apns_sim::protocol::Environment;

use crate::common::{self, command, next_device_event, next_hub_event, TIMEOUT};

fn frame(token: &[u8], id: u32) -> Vec<u8> {
    common::frame(token, &common::alert("hi"), id, 0, 10)
}

#[tokio::test]
async fn uninstall_push_feedback_once_then_empty() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device(
            "FB-1",
            Environment::Sandbox,
            &[DEFAULT_TOPIC, "com.example.other"],
        )
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let feedback_addr = t.sim.addrs().feedback.to_string();
    let tls = t.default_provider_tls();

    // Nothing recorded yet.
    let empty = read_feedback(&feedback_addr, "localhost", tls.clone(), TIMEOUT)
        .await
        .unwrap();
    assert!(empty.is_empty());

    command(&dev, DeviceCommand::Uninstall(DEFAULT_TOPIC.into())).await;
    next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Uninstalled { .. })).await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&frame(token.as_bytes(), 1)).await.unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::NotInstalled)
    })
    .await;
    let at_ms = t.sim.hub().unregistered_at(&token).expect("unregistered");

    // Another topic's certificate sees nothing of it.
    let other = t.provider_tls("com.example.other", CertEnvironment::Universal);
    let none = read_feedback(&feedback_addr, "localhost", other, TIMEOUT)
        .await
        .unwrap();
    assert!(none.is_empty());
    // The production list of the same topic is separate too.
    let prod = read_feedback(
        &feedback_addr,
        "feedback.push.apple.com",
        tls.clone(),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(prod.is_empty());

    let tuples = read_feedback(&feedback_addr, "localhost", tls.clone(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(tuples.len(), 1);
    assert_eq!(tuples[0].token, token);
    assert_eq!(u64::from(tuples[0].timestamp), at_ms / 1000);

    // Read once: the list is now empty.
    let again = read_feedback(&feedback_addr, "localhost", tls, TIMEOUT)
        .await
        .unwrap();
    assert!(again.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn feedback_requires_a_client_certificate() {
    let t = common::start().await;
    let no_cert =
        apns_sim::tls::client_config(t.pki.ca_cert_pem().as_bytes(), None, Vec::new()).unwrap();
    let result = read_feedback(
        &t.sim.addrs().feedback.to_string(),
        "localhost",
        no_cert,
        TIMEOUT,
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    t.stop().await;
}
