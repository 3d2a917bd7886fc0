//! Store-and-forward over real TLS: an absent expiry is not 0 (issue 7, item 2). A
//! notification without an expiry (command 0, command 2 without item 4, HTTP/2 without
//! `apns-expiration`) is kept for an offline device under the storage policy, 30 days as
//! Apple's (spec §3); only an explicit 0 means "now or never"; nothing outlives the policy.

use std::time::Duration;

use apns_sim::client::device::{DeviceCommand, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::Http2Request;
use apns_sim::hub::{Event, Logged, Outcome};
use apns_sim::pki::{CertEnvironment, DEFAULT_TOPIC};
use apns_sim::protocol::notification::{self, FrameItem};
use apns_sim::protocol::Environment;
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;

use crate::common::{
    self, alert, command, go_offline, next_device_event, next_hub_event, next_notification,
    OTHER_TOPIC,
};

/// Apple's storage policy, the default of `Settings::default_storage_days`.
const POLICY: Duration = Duration::from_secs(30 * 86_400);

/// Waits for the next notification event with `outcome`, whatever its identifier.
async fn next_outcome(events: &mut broadcast::Receiver<Logged>, outcome: Outcome) -> Event {
    next_hub_event(
        events,
        move |e| matches!(e, Event::Notification { outcome: o, .. } if *o == outcome),
    )
    .await
}

/// Command 0: token and payload, no expiry field.
fn simple(token: &[u8], payload: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    notification::encode_simple_raw(token, payload.as_bytes(), &mut out);
    out.to_vec()
}

/// Command 2 with token, payload and identifier, and no item 4.
fn frame_without_expiry(token: &[u8], payload: &str, id: u32) -> Vec<u8> {
    let items = [
        FrameItem {
            id: 1,
            data: Bytes::copy_from_slice(token),
        },
        FrameItem {
            id: 2,
            data: Bytes::copy_from_slice(payload.as_bytes()),
        },
        FrameItem {
            id: 3,
            data: Bytes::copy_from_slice(&id.to_be_bytes()),
        },
    ];
    let mut out = BytesMut::new();
    notification::encode_frame_items(&items, &mut out);
    out.to_vec()
}

/// Brings the device back and returns the alert text and expiry of what it shows first.
async fn back_online(dev: &mut DeviceHandle) -> (String, u32) {
    command(dev, DeviceCommand::Online).await;
    match next_notification(dev).await {
        DeviceEvent::Notification {
            payload, expiry, ..
        } => (
            payload["aps"]["alert"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            expiry,
        ),
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test]
async fn without_an_expiry_every_api_keeps_the_notification_for_an_offline_device() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("NOEXP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    let mut h2 = t.http2().await;

    for api in [
        "command 0",
        "command 2 without item 4",
        "HTTP/2 without apns-expiration",
    ] {
        go_offline(&t, &mut dev, "NOEXP-1").await;
        let sent_at = t.clock.now_secs();
        match api {
            "command 0" => gw
                .send(&simple(token.as_bytes(), &alert(api)))
                .await
                .unwrap(),
            "command 2 without item 4" => gw
                .send(&frame_without_expiry(token.as_bytes(), &alert(api), 7))
                .await
                .unwrap(),
            _ => {
                let answer = h2
                    .send(
                        &Http2Request::push(&token.to_hex(), alert(api))
                            .header("apns-topic", DEFAULT_TOPIC),
                    )
                    .await
                    .unwrap();
                assert_eq!(answer.status, 200, "{answer}");
            }
        }
        let stored = next_outcome(&mut events, Outcome::Stored).await;
        assert!(
            matches!(&stored, Event::Notification { detail, .. } if detail.contains("default storage policy")),
            "{api}: {stored:?}"
        );
        let (text, expiry) = back_online(&mut dev).await;
        assert_eq!(text, api);
        // The device is shown the deadline the policy gave it: 30 days from its arrival.
        let policy_end = u64::from(expiry) - POLICY.as_secs();
        assert!(
            (sent_at..=t.clock.now_secs()).contains(&policy_end),
            "{api}: expiry {expiry}"
        );
    }
    common::assert_silent(&mut gw).await;
    t.stop().await;
}

#[tokio::test]
async fn only_an_explicit_0_is_now_or_never() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device("ZERO-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    go_offline(&t, &mut dev, "ZERO-1").await;
    let mut events = t.sim.hub().subscribe();

    let mut gw = t.gateway().await;
    gw.send(&common::frame(
        token.as_bytes(),
        &alert("binary 0"),
        1,
        0,
        10,
    ))
    .await
    .unwrap();
    next_hub_event(&mut events, |e| {
        common::is_outcome(e, 1, Outcome::Discarded)
    })
    .await;
    let mut h2 = t.http2().await;
    let answer = h2
        .send(
            &Http2Request::push(&token.to_hex(), alert("http2 0"))
                .header("apns-topic", DEFAULT_TOPIC)
                .header("apns-expiration", "0"),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer}");
    next_outcome(&mut events, Outcome::Discarded).await;

    // Back online, the first thing shown is a marker sent now: nothing was kept.
    command(&dev, DeviceCommand::Online).await;
    next_device_event(&mut dev, |e| matches!(e, DeviceEvent::Online { .. })).await;
    gw.send(&simple(token.as_bytes(), &alert("marker")))
        .await
        .unwrap();
    match next_notification(&mut dev).await {
        DeviceEvent::Notification { payload, .. } => assert_eq!(payload["aps"]["alert"], "marker"),
        other => panic!("{other:?}"),
    }
    t.stop().await;
}

#[tokio::test]
async fn nothing_is_kept_past_the_storage_policy() {
    let t = common::start().await;
    let (mut dev, tokens) = t
        .device(
            "POLICY-1",
            Environment::Sandbox,
            &[DEFAULT_TOPIC, OTHER_TOPIC],
        )
        .await;
    go_offline(&t, &mut dev, "POLICY-1").await;
    let mut events = t.sim.hub().subscribe();

    // No expiry (command 0) for one app; an expiry 60 days out for the other, which the
    // policy caps at 30.
    let mut gw = t.gateway().await;
    gw.send(&simple(
        tokens[DEFAULT_TOPIC].as_bytes(),
        &alert("no expiry"),
    ))
    .await
    .unwrap();
    next_outcome(&mut events, Outcome::Stored).await;
    let mut other = t
        .gateway_as(
            t.provider_tls(OTHER_TOPIC, CertEnvironment::Universal),
            "localhost",
        )
        .await;
    let far = (t.clock.now_secs() + 60 * 86_400) as u32;
    other
        .send(&common::frame(
            tokens[OTHER_TOPIC].as_bytes(),
            &alert("sixty days"),
            2,
            far,
            10,
        ))
        .await
        .unwrap();
    let stored = next_hub_event(&mut events, |e| common::is_outcome(e, 2, Outcome::Stored)).await;
    assert!(
        matches!(&stored, Event::Notification { detail, .. } if detail.contains("capped by the storage policy")),
        "{stored:?}"
    );

    // One second past the policy, the device returns: both have expired.
    t.clock.advance(POLICY + Duration::from_secs(1));
    command(&dev, DeviceCommand::Online).await;
    // (The store is flushed in no particular order.)
    let mut expired = Vec::new();
    while expired.len() < 2 {
        if let Event::Notification { identifier, .. } =
            next_outcome(&mut events, Outcome::Expired).await
        {
            expired.push(identifier);
        }
    }
    expired.sort_unstable();
    assert_eq!(expired, [0, 2]);
    let mut gw = t.gateway().await;
    gw.send(&simple(tokens[DEFAULT_TOPIC].as_bytes(), &alert("marker")))
        .await
        .unwrap();
    match next_notification(&mut dev).await {
        DeviceEvent::Notification { payload, .. } => assert_eq!(payload["aps"]["alert"], "marker"),
        other => panic!("{other:?}"),
    }
    t.stop().await;
}

#[tokio::test]
async fn the_storage_policy_is_a_setting() {
    let t = common::start_with(|c| c.settings.default_storage_days = 1).await;
    let (mut dev, tokens) = t
        .device("POLICY-2", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    go_offline(&t, &mut dev, "POLICY-2").await;
    let mut events = t.sim.hub().subscribe();
    let mut gw = t.gateway().await;
    gw.send(&frame_without_expiry(token.as_bytes(), &alert("a day"), 3))
        .await
        .unwrap();
    next_hub_event(&mut events, |e| common::is_outcome(e, 3, Outcome::Stored)).await;
    t.clock.advance(Duration::from_secs(86_400 + 1));
    command(&dev, DeviceCommand::Online).await;
    next_hub_event(&mut events, |e| common::is_outcome(e, 3, Outcome::Expired)).await;
    t.stop().await;
}
