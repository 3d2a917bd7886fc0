//! The simulator inside a test: started on free ports with an in-memory PKI, one simulated
//! device, one push over the HTTP/2 provider API, and the device showing it.

use std::time::Duration;

use apns_sim::client::device::{self, DeviceConfig, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::{Http2Client, Http2Request};
use apns_sim::pki::{Pki, DEFAULT_TOPIC};
use apns_sim::protocol::Environment;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use apns_sim::tls::{self, ClientIdentity};

/// Generous, for slow shared machines: a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(30);

/// The device's next event that `pick` accepts (skipping the others), within [`WAIT`].
async fn next<T>(device: &mut DeviceHandle, pick: impl Fn(DeviceEvent) -> Option<T>) -> T {
    let wait = async {
        loop {
            let event = device.events.recv().await.expect("the device is running");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the device event in time")
}

#[tokio::test]
async fn a_push_reaches_a_simulated_device() -> Result<(), Box<dyn std::error::Error>> {
    // Every endpoint on 127.0.0.1 and a port the system picks; a fresh PKI in memory (CA,
    // server certificate, universal provider certificate for DEFAULT_TOPIC, signing key).
    let sim = Simulator::start(
        SimulatorConfig::new(Pki::generate()?),
        Listeners::bind_local().await?,
    )?;
    let pki = sim.pki();

    // A sandbox device with one app. It trusts the simulator's CA, connects to the device
    // endpoint and registers the app; it stops when the simulator shuts down.
    let mut phone = device::spawn(
        DeviceConfig {
            server: sim.addrs().devices.to_string(),
            server_name: "localhost".into(),
            tls: tls::client_config(pki.ca_cert_pem().as_bytes(), None, Vec::new())?,
            serial: "phone-1".into(),
            environment: Environment::Sandbox,
            apps: vec![DEFAULT_TOPIC.into()],
            register_url: None,
        },
        sim.shutdown_token(),
    );
    let token = next(&mut phone, |event| match event {
        DeviceEvent::Registered { token, .. } => Some(token),
        _ => None,
    })
    .await;

    // A provider on the HTTP/2 API: the provider certificate, ALPN h2. The universal
    // certificate carries several topics, so the request names one.
    let identity = ClientIdentity::from_provider(pki.default_provider())?;
    let tls = tls::client_config(
        pki.ca_cert_pem().as_bytes(),
        Some(identity),
        vec![b"h2".to_vec()],
    )?;
    let mut provider =
        Http2Client::connect(&sim.addrs().http2.to_string(), "localhost", tls).await?;
    let push = Http2Request::push(&token.to_hex(), r#"{"aps":{"alert":"Hello"}}"#)
        .header("apns-topic", DEFAULT_TOPIC);
    let answer = provider.send(&push).await?;
    assert_eq!(answer.status, 200, "{answer}");

    // The device shows it.
    let payload = next(&mut phone, |event| match event {
        DeviceEvent::Notification { payload, .. } => Some(payload),
        _ => None,
    })
    .await;
    assert_eq!(payload["aps"]["alert"], "Hello");

    // Stops accepting, sends the provider a GOAWAY, and waits for every connection task.
    sim.shutdown().await;
    Ok(())
}
