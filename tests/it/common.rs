//! The one test harness: a simulator on 127.0.0.1 port 0 with an in-memory PKI (extra
//! provider certificates and auth keys for the binary and HTTP/2 suites), provider clients
//! for the binary gateway and the HTTP/2 API, simulated devices, and helpers that wait on
//! events (never on sleeps), and the one HTTP client the control API suites share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use apns_sim::client::device::{self, DeviceCommand, DeviceConfig, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::Http2Client;
use apns_sim::client::BinaryClient;
use apns_sim::clock::Clock;
use apns_sim::hub::{Event, Logged};
use apns_sim::pki::{jwt, CertEnvironment, Pki, DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::token::{AppToken, DeviceToken};
use apns_sim::protocol::Environment;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use apns_sim::tls::{self, ClientIdentity};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Generous: these machines are shared and slow; a healthy test never waits this long.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The app of the extra universal provider certificate: a topic the default certificate
/// does not carry.
pub(crate) const OTHER_TOPIC: &str = "com.example.other";

/// A second auth key of the default team: any key of the team may follow another on a
/// token connection.
pub(crate) const TEAM_KEY_2: &str = "TEAMKEY002";

/// An auth key of the default team restricted to [`ONLY_TOPIC`].
pub(crate) const TOPIC_KEY: &str = "TOPICKEY01";

/// The one topic [`TOPIC_KEY`] may push to.
pub(crate) const ONLY_TOPIC: &str = "com.only";

/// A team other than the default one.
pub(crate) const OTHER_TEAM: &str = "OTHERTEAM1";

/// The auth key of [`OTHER_TEAM`].
pub(crate) const OTHER_TEAM_KEY: &str = "OTHERKEY01";

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

/// The test PKI: `Pki::generate()`'s CA, server certificate, default universal provider
/// certificate and default auth key, plus sandbox-only and production-only certificates for
/// the default topic, a universal one for [`OTHER_TOPIC`], and the auth keys
/// [`TEAM_KEY_2`], [`TOPIC_KEY`] and [`OTHER_TEAM_KEY`].
pub(crate) fn test_pki() -> Pki {
    let mut pki = Pki::generate().expect("PKI");
    pki.mint_provider(DEFAULT_TOPIC, CertEnvironment::Sandbox, DEFAULT_TEAM_ID)
        .expect("sandbox provider");
    pki.mint_provider(DEFAULT_TOPIC, CertEnvironment::Production, DEFAULT_TEAM_ID)
        .expect("production provider");
    pki.mint_provider(OTHER_TOPIC, CertEnvironment::Universal, DEFAULT_TEAM_ID)
        .expect("other provider");
    pki.mint_auth_key(DEFAULT_TEAM_ID, Some(TEAM_KEY_2.into()), Vec::new())
        .expect("second team key");
    pki.mint_auth_key(
        DEFAULT_TEAM_ID,
        Some(TOPIC_KEY.into()),
        vec![ONLY_TOPIC.into()],
    )
    .expect("topic key");
    pki.mint_auth_key(OTHER_TEAM, Some(OTHER_TEAM_KEY.into()), Vec::new())
        .expect("other team key");
    pki
}

/// Starts a simulator on [`test_pki`] with default settings and the system clock.
pub(crate) async fn start() -> TestSim {
    start_with(|_| {}).await
}

/// Starts a simulator on [`test_pki`] after letting the test adjust the configuration
/// (usually a setting: `start_with(|c| c.settings.hello_timeout = …)`).
pub(crate) async fn start_with(adjust: impl FnOnce(&mut SimulatorConfig)) -> TestSim {
    init_tracing();
    let mut config = SimulatorConfig::new(test_pki());
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
    /// Client TLS trusting the simulator's CA, with `identity` and ALPN `alpn`.
    pub(crate) fn client_tls(
        &self,
        identity: Option<ClientIdentity>,
        alpn: Vec<Vec<u8>>,
    ) -> Arc<ClientConfig> {
        tls::client_config(self.pki.ca_cert_pem().as_bytes(), identity, alpn)
            .expect("client config")
    }

    /// The identity of the provider certificate of `topic` valid for `env`.
    fn provider_identity(&self, topic: &str, env: CertEnvironment) -> ClientIdentity {
        let cert = self
            .pki
            .provider_for(topic, env)
            .unwrap_or_else(|| panic!("no provider certificate for {topic} {env}"));
        ClientIdentity::from_provider(cert).expect("identity")
    }

    /// TLS for a provider certificate of `topic` valid for `env` (no ALPN).
    pub(crate) fn provider_tls(&self, topic: &str, env: CertEnvironment) -> Arc<ClientConfig> {
        self.client_tls(Some(self.provider_identity(topic, env)), Vec::new())
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

    /// The HTTP/2 API's address, as clients take it.
    pub(crate) fn http2_addr(&self) -> String {
        self.sim.addrs().http2.to_string()
    }

    /// TLS for an HTTP/2 client: ALPN h2, and the default topic's provider certificate valid
    /// for `cert` if any (none: a token-authentication connection).
    pub(crate) fn http2_tls(&self, cert: Option<CertEnvironment>) -> Arc<ClientConfig> {
        let identity = cert.map(|env| self.provider_identity(DEFAULT_TOPIC, env));
        self.client_tls(identity, vec![b"h2".to_vec()])
    }

    /// An HTTP/2 connection with the default (universal) provider certificate, sandbox via
    /// `localhost`.
    pub(crate) async fn http2(&self) -> Http2Client {
        self.http2_connect(Some(CertEnvironment::Universal), "localhost")
            .await
    }

    /// An HTTP/2 connection without a client certificate (token authentication), sandbox
    /// via `localhost`.
    pub(crate) async fn http2_token(&self) -> Http2Client {
        self.http2_connect(None, "localhost").await
    }

    /// An HTTP/2 connection to `server_name` with [`Self::http2_tls`]`(cert)`.
    pub(crate) async fn http2_connect(
        &self,
        cert: Option<CertEnvironment>,
        server_name: &str,
    ) -> Http2Client {
        self.http2_as(self.http2_tls(cert), server_name).await
    }

    /// An HTTP/2 connection with the given TLS and server name.
    pub(crate) async fn http2_as(&self, tls: Arc<ClientConfig>, server_name: &str) -> Http2Client {
        Http2Client::connect(&self.http2_addr(), server_name, tls)
            .await
            .expect("connect to the HTTP/2 API")
    }

    /// A provider token signed by `key_id` with `iat` = the simulator's clock now.
    pub(crate) fn jwt(&self, key_id: &str) -> String {
        self.jwt_at(key_id, self.clock.now_secs())
    }

    /// A provider token signed by `key_id` with the given `iat`.
    pub(crate) fn jwt_at(&self, key_id: &str, iat: u64) -> String {
        let key = self
            .pki
            .auth_key(key_id)
            .unwrap_or_else(|| panic!("no auth key {key_id}"));
        jwt::sign(key, iat).expect("sign a provider token")
    }

    /// Starts a device on the device endpoint and waits until every app has its token.
    /// `apps` are `APP` (the ordinary token) or `APP:KIND` (`com.example.app:voip`); the
    /// tokens are keyed the same way.
    pub(crate) async fn device(
        &self,
        serial: &str,
        environment: Environment,
        apps: &[&str],
    ) -> (DeviceHandle, HashMap<String, DeviceToken>) {
        let mut handle = device::spawn(
            DeviceConfig {
                server: self.sim.addrs().devices.to_string(),
                server_name: "localhost".into(),
                tls: self.client_tls(None, Vec::new()),
                serial: serial.into(),
                environment,
                apps: apps
                    .iter()
                    .map(|a| a.parse().expect("APP[:KIND]"))
                    .collect(),
                register_url: None,
            },
            self.devices_stop.clone(),
        );
        let mut tokens = HashMap::new();
        while tokens.len() < apps.len() {
            if let DeviceEvent::Registered {
                app, kind, token, ..
            } = next_device_event(&mut handle, |e| matches!(e, DeviceEvent::Registered { .. }))
                .await
            {
                tokens.insert(AppToken { app, kind }.to_string(), token);
            }
        }
        (handle, tokens)
    }

    /// Stops devices and the simulator.
    pub(crate) async fn stop(self) {
        self.devices_stop.cancel();
        self.sim.shutdown().await;
    }
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
    rx: &mut broadcast::Receiver<Logged>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(l) if pred(&l.event) => return l.event,
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

/// Takes the device offline and waits until the hub has closed its session, so that what is
/// pushed next is stored.
pub(crate) async fn go_offline(t: &TestSim, dev: &mut DeviceHandle, serial: &str) {
    let mut events = t.sim.hub().subscribe();
    command(dev, DeviceCommand::Offline).await;
    next_device_event(dev, |e| matches!(e, DeviceEvent::Offline { .. })).await;
    let serial = serial.to_owned();
    next_hub_event(
        &mut events,
        move |e| matches!(e, Event::DeviceOffline { serial: s, .. } if *s == serial),
    )
    .await;
}

/// Sends one request to a control API at `addr` (HTTP/1.1, plain TCP), with `headers` and
/// `body` (empty: none), and reads the whole answer: the status, the headers and the body.
/// Bounded by [`TIMEOUT`].
pub(crate) async fn control_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    tokio::time::timeout(TIMEOUT, async {
        let response = client.request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, headers, body)
    })
    .await
    .expect("answered in time")
}

/// [`control_request`] with an optional JSON body (sent as `application/json`): the status
/// and the answer as JSON (`null` for an empty body; a body that is not JSON fails the test).
pub(crate) async fn control_json(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    let (status, _, bytes) =
        control_request(addr, method, path_and_query, headers, body.unwrap_or("")).await;
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path_and_query}: not JSON ({e}): {bytes:?}"));
    (status, json)
}
