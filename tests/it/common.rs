//! Shared test support: a simulator on 127.0.0.1 port 0 with an in-memory PKI, provider and
//! device clients, and helpers that wait on events (never on sleeps).

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use apns_sim::client::device::{self, DeviceCommand, DeviceConfig, DeviceEvent, DeviceHandle};
use apns_sim::client::BinaryClient;
use apns_sim::clock::Clock;
use apns_sim::hub::Event;
use apns_sim::pki::{CertEnvironment, Pki, DEFAULT_TOPIC};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use apns_sim::tls;
use rustls::ClientConfig;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Generous: these machines are shared and slow; a healthy test never waits this long.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Installs a test-friendly tracing subscriber once per test binary (`RUST_LOG` to see it).
pub(crate) fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A simulator started for one test.
pub(crate) struct TestSim {
    /// The simulator.
    pub(crate) sim: Simulator,
    /// Its certificates (with extra provider certificates the test minted).
    pub(crate) pki: Arc<Pki>,
    /// Its clock, which the test may move.
    pub(crate) clock: Clock,
    /// Stops the test's devices.
    pub(crate) devices_stop: CancellationToken,
}

/// Starts a simulator with the default PKI plus sandbox-only, production-only and
/// other-app provider certificates.
pub(crate) async fn start() -> TestSim {
    start_with(|_| {}).await
}

/// Starts a simulator after letting the test adjust the configuration.
pub(crate) async fn start_with(adjust: impl FnOnce(&mut SimulatorConfig)) -> TestSim {
    init_tracing();
    let mut pki = Pki::generate().expect("PKI");
    pki.mint_provider(DEFAULT_TOPIC, CertEnvironment::Sandbox, "SIMTEAM001")
        .expect("sandbox provider");
    pki.mint_provider(DEFAULT_TOPIC, CertEnvironment::Production, "SIMTEAM001")
        .expect("production provider");
    pki.mint_provider(
        "com.example.other",
        CertEnvironment::Universal,
        "SIMTEAM001",
    )
    .expect("other provider");
    let mut config = SimulatorConfig::new(pki);
    adjust(&mut config);
    let clock = config.clock.clone();
    let pki = config.pki.clone();
    let sim = Simulator::start(config, Listeners::bind_local().await.expect("bind"))
        .expect("start simulator");
    TestSim {
        sim,
        pki,
        clock,
        devices_stop: CancellationToken::new(),
    }
}

impl TestSim {
    /// TLS for a provider certificate of `topic` valid for `env`.
    pub(crate) fn provider_tls(&self, topic: &str, env: CertEnvironment) -> Arc<ClientConfig> {
        let cert = self
            .pki
            .provider_for(topic, env)
            .unwrap_or_else(|| panic!("no provider certificate for {topic} {env}"));
        let identity =
            tls::ClientIdentity::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                .expect("identity");
        tls::client_config(
            self.pki.ca_cert_pem().as_bytes(),
            Some(identity),
            Vec::new(),
        )
        .expect("client config")
    }

    /// TLS of the default (universal, com.example.app) provider certificate.
    pub(crate) fn default_provider_tls(&self) -> Arc<ClientConfig> {
        self.provider_tls(DEFAULT_TOPIC, CertEnvironment::Universal)
    }

    /// A binary-gateway connection with the default provider certificate (sandbox via
    /// `localhost`).
    pub(crate) async fn gateway(&self) -> BinaryClient {
        self.gateway_as(self.default_provider_tls(), "localhost")
            .await
    }

    /// A binary-gateway connection with the given TLS and server name.
    pub(crate) async fn gateway_as(
        &self,
        tls: Arc<ClientConfig>,
        server_name: &str,
    ) -> BinaryClient {
        BinaryClient::connect(&self.sim.addrs().gateway.to_string(), server_name, tls)
            .await
            .expect("connect to gateway")
    }

    /// Starts a device and waits until every app has its token.
    pub(crate) async fn device(
        &self,
        serial: &str,
        environment: Environment,
        apps: &[&str],
    ) -> (DeviceHandle, HashMap<String, DeviceToken>) {
        start_device(
            &self.sim,
            &self.pki,
            &self.devices_stop,
            serial,
            environment,
            apps,
        )
        .await
    }

    /// Stops devices and the simulator.
    pub(crate) async fn stop(self) {
        self.devices_stop.cancel();
        self.sim.shutdown().await;
    }
}

/// Starts a device on `sim`'s device endpoint and waits until every app has its token.
pub(crate) async fn start_device(
    sim: &Simulator,
    pki: &Pki,
    stop: &CancellationToken,
    serial: &str,
    environment: Environment,
    apps: &[&str],
) -> (DeviceHandle, HashMap<String, DeviceToken>) {
    let tls =
        tls::client_config(pki.ca_cert_pem().as_bytes(), None, Vec::new()).expect("device tls");
    let mut handle = device::spawn(
        DeviceConfig {
            server: sim.addrs().devices.to_string(),
            server_name: "localhost".into(),
            tls,
            serial: serial.into(),
            environment,
            apps: apps.iter().map(|a| a.to_string()).collect(),
            register_url: None,
        },
        stop.clone(),
    );
    let mut tokens = HashMap::new();
    while tokens.len() < apps.len() {
        if let DeviceEvent::Registered { app, token, .. } =
            next_device_event(&mut handle, |e| matches!(e, DeviceEvent::Registered { .. })).await
        {
            tokens.insert(app, token);
        }
    }
    (handle, tokens)
}

/// Waits for the first device event matching `pred` (skipping others).
pub(crate) async fn next_device_event(
    handle: &mut DeviceHandle,
    pred: impl Fn(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let wait = async {
        loop {
            match handle.events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("device stopped while a test waited for an event"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("timed out waiting for a device event")
}

/// Waits for the next notification the device shows.
pub(crate) async fn next_notification(handle: &mut DeviceHandle) -> DeviceEvent {
    next_device_event(handle, |e| matches!(e, DeviceEvent::Notification { .. })).await
}

/// Waits for the next notification the device shows and returns its binary identifier.
pub(crate) async fn next_id(handle: &mut DeviceHandle) -> u32 {
    match next_notification(handle).await {
        DeviceEvent::Notification { id, .. } => id,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// Sends a command to a device.
pub(crate) async fn command(handle: &DeviceHandle, cmd: DeviceCommand) {
    handle.commands.send(cmd).await.expect("device alive");
}

/// Waits for the first hub event matching `pred`.
pub(crate) async fn next_hub_event(
    rx: &mut broadcast::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    panic!("test subscriber lagged by {n} events")
                }
                Err(broadcast::error::RecvError::Closed) => panic!("hub gone"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("timed out waiting for a hub event")
}

/// The binary identifier of a notification event, if `e` is one with `outcome`.
pub(crate) fn is_outcome(e: &Event, id: u32, outcome: apns_sim::hub::Outcome) -> bool {
    matches!(e, Event::Notification { identifier, outcome: o, .. } if *identifier == id && *o == outcome)
}

/// A UNIX time an hour from now, for expiries.
pub(crate) fn in_an_hour(clock: &Clock) -> u32 {
    (clock.now_secs() + 3600) as u32
}

/// A command-2 frame with all five items.
pub(crate) fn frame(token: &[u8], payload: &str, id: u32, expiry: u32, priority: u8) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    apns_sim::protocol::notification::encode_frame_raw(
        token,
        payload.as_bytes(),
        id.to_be_bytes(),
        expiry,
        priority,
        &mut out,
    );
    out.to_vec()
}

/// A payload with an alert text.
pub(crate) fn alert(text: &str) -> String {
    format!(r#"{{"aps":{{"alert":"{text}"}}}}"#)
}

/// Asserts that the gateway sends nothing back for a short while: the binary API's only
/// sign of success. (A slow machine can only make this pass wrongly, never fail wrongly.)
pub(crate) async fn assert_silent(gw: &mut BinaryClient) {
    let answer = gw
        .finish(Duration::from_millis(200))
        .await
        .expect("gateway answer");
    assert_eq!(answer, apns_sim::client::GatewayAnswer::Silent);
}
