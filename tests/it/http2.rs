//! The HTTP/2 provider API end to end: a real `h2` client over TLS against a simulator on
//! 127.0.0.1 port 0, with simulated devices on the other side.
//!
//! Nothing here sleeps to synchronise: tests wait on device events, hub events or the
//! server's answers, each with a generous timeout. The one-hour and 20-minute token rules are
//! driven by moving the simulator's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apns_sim::client;
use apns_sim::client::device::{DeviceCommand, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::{
    push, read_response, Http2Client, Http2ClientError, Http2Request, Http2Response, PushAuth,
    PushOptions,
};
use apns_sim::clock::Clock;
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::jwt;
use apns_sim::pki::{CertEnvironment, Pki, DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::http2 as frames;
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::settings::Settings;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use apns_sim::tls::{self, ClientIdentity};
use bytes::Bytes;
use rustls::ClientConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common;

/// Generous bound on every wait, so a slow shared machine never fails a test.
const WAIT: Duration = Duration::from_secs(20);

const APP: &str = DEFAULT_TOPIC;
const OTHER_APP: &str = "com.example.other";
const ALERT: &str = r#"{"aps":{"alert":"hi"}}"#;

/// Key ids minted besides the default team key.
const TEAM_KEY_2: &str = "TEAMKEY002";
const TOPIC_KEY: &str = "TOPICKEY01";
const OTHER_TEAM_KEY: &str = "OTHERKEY01";

struct Env {
    sim: Simulator,
    clock: Clock,
    stop_devices: CancellationToken,
}

fn pki() -> Pki {
    let mut pki = Pki::generate().unwrap();
    pki.mint_provider(APP, CertEnvironment::Sandbox, DEFAULT_TEAM_ID)
        .unwrap();
    pki.mint_provider(APP, CertEnvironment::Production, DEFAULT_TEAM_ID)
        .unwrap();
    pki.mint_auth_key(DEFAULT_TEAM_ID, Some(TEAM_KEY_2.into()), vec![])
        .unwrap();
    pki.mint_auth_key(
        DEFAULT_TEAM_ID,
        Some(TOPIC_KEY.into()),
        vec!["com.only".into()],
    )
    .unwrap();
    pki.mint_auth_key("OTHERTEAM1", Some(OTHER_TEAM_KEY.into()), vec![])
        .unwrap();
    pki
}

async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Env {
    let clock = Clock::system();
    let mut config = SimulatorConfig::new(pki());
    config.clock = clock.clone();
    tweak(&mut config.settings);
    let listeners = Listeners::bind_local().await.unwrap();
    let sim = Simulator::start(config, listeners).unwrap();
    Env {
        sim,
        clock,
        stop_devices: CancellationToken::new(),
    }
}

async fn start() -> Env {
    start_with(|_| {}).await
}

impl Env {
    fn addr(&self) -> String {
        self.sim.addrs().http2.to_string()
    }

    fn pki(&self) -> &Pki {
        self.sim.pki()
    }

    /// TLS for an HTTP/2 client: ALPN h2, and the given provider certificate if any.
    fn tls(&self, cert: Option<CertEnvironment>) -> Arc<ClientConfig> {
        let identity = cert.map(|env| {
            let provider = self.pki().provider_for(APP, env).unwrap();
            ClientIdentity::from_provider(provider).unwrap()
        });
        tls::client_config(
            self.pki().ca_cert_pem().as_bytes(),
            identity,
            vec![b"h2".to_vec()],
        )
        .unwrap()
    }

    async fn cert_client(&self) -> Http2Client {
        self.connect(Some(CertEnvironment::Universal), "localhost")
            .await
    }

    async fn token_client(&self) -> Http2Client {
        self.connect(None, "localhost").await
    }

    async fn connect(&self, cert: Option<CertEnvironment>, server_name: &str) -> Http2Client {
        Http2Client::connect(&self.addr(), server_name, self.tls(cert))
            .await
            .unwrap()
    }

    /// A provider token signed by `key_id` with `iat` = the simulator's clock now.
    fn jwt(&self, key_id: &str) -> String {
        self.jwt_at(key_id, self.clock.now_secs())
    }

    fn jwt_at(&self, key_id: &str, iat: u64) -> String {
        jwt::sign(self.pki().auth_key(key_id).unwrap(), iat).unwrap()
    }

    /// Starts a device with `apps` and waits for their tokens.
    async fn device(
        &self,
        serial: &str,
        environment: Environment,
        apps: &[&str],
    ) -> (DeviceHandle, HashMap<String, DeviceToken>) {
        common::start_device(
            &self.sim,
            self.pki(),
            &self.stop_devices,
            serial,
            environment,
            apps,
        )
        .await
    }
}

/// The device's next event, whatever it is.
async fn next_event(device: &mut DeviceHandle) -> DeviceEvent {
    common::next_device_event(device, |_| true).await
}

async fn send(client: &mut Http2Client, request: &Http2Request) -> Http2Response {
    client.send(request).await.expect("an answer")
}

/// Asserts an Apple-style error answer.
fn assert_reason(response: &Http2Response, status: u16, reason: &str) {
    assert_eq!(
        (response.status, response.reason.as_deref()),
        (status, Some(reason)),
        "{response}"
    );
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    let id = response.apns_id.as_deref().expect("apns-id on errors");
    assert!(Uuid::parse_str(id).is_ok(), "{id}");
}

fn alert(token: &DeviceToken) -> Http2Request {
    Http2Request::push(&token.to_hex(), ALERT).header("apns-topic", APP)
}

#[tokio::test]
async fn certificate_push_reaches_the_device_with_collapse_id() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-1", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.cert_client().await;

    let id = "6b6c6a5e-0f4e-4f8b-9d4c-2f8e5a1b3c7d";
    let request = alert(&token)
        .header("apns-id", id)
        .header("apns-collapse-id", "score")
        .header("apns-push-type", "alert")
        .header("apns-priority", "5")
        // Certificate connections ignore `authorization`.
        .header("authorization", "bearer not-a-token");
    let answer = send(&mut client, &request).await;
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.apns_id.as_deref(), Some(id));
    assert!(answer.body.is_empty());
    let unique = answer
        .apns_unique_id
        .expect("sandbox answers carry apns-unique-id");
    assert!(Uuid::parse_str(&unique).is_ok());

    match common::next_notification(&mut phone).await {
        DeviceEvent::Notification {
            app,
            token: got,
            apns_id,
            collapse_id,
            push_type,
            priority,
            replaced,
            payload,
            ..
        } => {
            assert_eq!(app, APP);
            assert_eq!(got, token);
            assert_eq!(apns_id.to_string(), id);
            assert_eq!(collapse_id.as_deref(), Some("score"));
            assert_eq!(push_type.as_deref(), Some("alert"));
            assert_eq!(priority, 5);
            assert!(!replaced);
            assert_eq!(payload, serde_json::json!({"aps": {"alert": "hi"}}));
        }
        other => panic!("{other:?}"),
    }

    // The same collapse id replaces what the device shows; a generated apns-id comes back.
    let answer = send(
        &mut client,
        &alert(&token).header("apns-collapse-id", "score"),
    )
    .await;
    assert_eq!(answer.status, 200);
    let generated = answer.apns_id.expect("generated apns-id");
    match common::next_notification(&mut phone).await {
        DeviceEvent::Notification {
            apns_id,
            replaced,
            collapse_id,
            ..
        } => {
            assert_eq!(apns_id.to_string(), generated);
            assert!(replaced);
            assert_eq!(collapse_id.as_deref(), Some("score"));
        }
        other => panic!("{other:?}"),
    }
    env.stop_devices.cancel();
}

#[tokio::test]
async fn collapse_id_replaces_while_offline_too() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-off", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.cert_client().await;
    let answer = send(
        &mut client,
        &alert(&token).header("apns-collapse-id", "news"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(matches!(
        common::next_notification(&mut phone).await,
        DeviceEvent::Notification {
            replaced: false,
            ..
        }
    ));

    phone.commands.send(DeviceCommand::Offline).await.unwrap();
    while !matches!(next_event(&mut phone).await, DeviceEvent::Offline { .. }) {}
    let expiry = (env.clock.now_secs() + 3600).to_string();
    let stored = alert(&token)
        .header("apns-collapse-id", "news")
        .header("apns-expiration", expiry);
    let answer = send(&mut client, &stored).await;
    assert_eq!(answer.status, 200);
    phone.commands.send(DeviceCommand::Online).await.unwrap();
    match common::next_notification(&mut phone).await {
        DeviceEvent::Notification {
            apns_id,
            replaced,
            collapse_id,
            ..
        } => {
            assert_eq!(Some(apns_id.to_string()), answer.apns_id);
            assert!(replaced);
            assert_eq!(collapse_id.as_deref(), Some("news"));
        }
        other => panic!("{other:?}"),
    }
    env.stop_devices.cancel();
}

#[tokio::test]
async fn method_path_and_token_errors_keep_the_connection() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-2", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.cert_client().await;

    let mut get = alert(&token);
    get.method = http::Method::GET;
    assert_reason(&send(&mut client, &get).await, 405, "MethodNotAllowed");

    let mut bad_path = alert(&token);
    bad_path.path = format!("/3/devices/{}", token.to_hex());
    assert_reason(&send(&mut client, &bad_path).await, 404, "BadPath");

    let mut empty = alert(&token);
    empty.path = "/3/device/".into();
    assert_reason(&send(&mut client, &empty).await, 400, "MissingDeviceToken");

    let not_hex = Http2Request::push("zz-not-a-token", ALERT).header("apns-topic", APP);
    assert_reason(&send(&mut client, &not_hex).await, 400, "BadDeviceToken");

    let unknown = DeviceToken::from_bytes([7; 32]);
    assert_reason(
        &send(&mut client, &alert(&unknown)).await,
        400,
        "BadDeviceToken",
    );

    // Every failure above left the connection serving.
    assert_eq!(send(&mut client, &alert(&token)).await.status, 200);
    assert!(client.goaway().is_none());
}

#[tokio::test]
async fn header_rules() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-3", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut events = env.sim.hub().subscribe();
    let mut client = env.cert_client().await;
    let base = || Http2Request::push(&token.to_hex(), ALERT);

    let cases: Vec<(Http2Request, u16, &str)> = vec![
        (
            base()
                .header("apns-topic", APP)
                .header("apns-push-type", "sms"),
            400,
            "InvalidPushType",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-push-type", "voip"),
            400,
            "BadTopic",
        ),
        (base().header("apns-topic", "bad topic!"), 400, "BadTopic"),
        (
            base().header("apns-topic", "com.not.mine"),
            400,
            "TopicDisallowed",
        ),
        // The universal certificate has three topics: the request must name one.
        (base(), 400, "MissingTopic"),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-id", "not-a-uuid"),
            400,
            "BadMessageId",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-id", "6B6C6A5E-0F4E-4F8B-9D4C-2F8E5A1B3C7D"),
            400,
            "BadMessageId",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-expiration", "tomorrow"),
            400,
            "BadExpirationDate",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-priority", "7"),
            400,
            "BadPriority",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-push-type", "background")
                .header("apns-priority", "10"),
            400,
            "BadPriority",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-collapse-id", "c".repeat(65)),
            400,
            "BadCollapseId",
        ),
        (
            base().header("apns-topic", APP).header("apns-topic", APP),
            400,
            "DuplicateHeaders",
        ),
        (
            base()
                .header("apns-topic", APP)
                .header("apns-priority", "5")
                .header("apns-priority", "5"),
            400,
            "DuplicateHeaders",
        ),
    ];
    for (request, status, reason) in &cases {
        let answer = send(&mut client, request).await;
        assert_reason(&answer, *status, reason);
        // Each refusal is in the delivery log under the id the provider was given.
        let id: Uuid = answer.apns_id.as_deref().unwrap().parse().unwrap();
        common::next_hub_event(&mut events, |e| {
            matches!(e, Event::Notification { apns_id, outcome: Outcome::Rejected, .. } if *apns_id == id)
        })
        .await;
    }

    // Valid values of every header, and `host` instead of `:authority`, all on the same
    // connection after thirteen refusals.
    let good = base()
        .header("host", "api.sandbox.push.apple.com")
        .header("apns-topic", APP)
        .header("apns-push-type", "background")
        .header("apns-priority", "5")
        .header("apns-expiration", "0")
        .header("apns-collapse-id", "c".repeat(64));
    let answer = send(&mut client, &good).await;
    assert_eq!(answer.status, 200, "{answer}");
    let answer = send(
        &mut client,
        &base()
            .header("apns-topic", APP)
            .header("apns-priority", "1"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer}");
}

#[tokio::test]
async fn single_topic_certificate_supplies_the_default_topic() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-4", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    // A sandbox-only certificate carries just its UID topic.
    let mut client = env
        .connect(Some(CertEnvironment::Sandbox), "localhost")
        .await;
    let answer = send(&mut client, &Http2Request::push(&token.to_hex(), ALERT)).await;
    assert_eq!(answer.status, 200, "{answer}");
    assert!(
        matches!(common::next_notification(&mut phone).await, DeviceEvent::Notification { app, .. } if app == APP)
    );
    // It cannot send VoIP: the .voip topic is not in the certificate.
    let voip = Http2Request::push(&token.to_hex(), ALERT)
        .header("apns-topic", format!("{APP}.voip"))
        .header("apns-push-type", "voip");
    assert_reason(&send(&mut client, &voip).await, 400, "TopicDisallowed");
    env.stop_devices.cancel();
}

#[tokio::test]
async fn payload_rules() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-5", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.cert_client().await;
    let with =
        |payload: Vec<u8>| Http2Request::push(&token.to_hex(), payload).header("apns-topic", APP);
    // `{"a":"xxx…"}` of exactly `len` bytes.
    let sized = |len: usize| format!(r#"{{"a":"{}"}}"#, "x".repeat(len - 8)).into_bytes();

    assert_reason(
        &send(&mut client, &with(Vec::new())).await,
        400,
        "PayloadEmpty",
    );
    assert_reason(
        &send(&mut client, &with(b"not json".to_vec())).await,
        400,
        "PayloadEmpty",
    );
    assert_reason(
        &send(&mut client, &with(b"[1,2]".to_vec())).await,
        400,
        "PayloadEmpty",
    );
    assert_reason(
        &send(&mut client, &with(sized(4097))).await,
        413,
        "PayloadTooLarge",
    );
    assert_eq!(send(&mut client, &with(sized(4096))).await.status, 200);
    assert!(matches!(
        common::next_notification(&mut phone).await,
        DeviceEvent::Notification { .. }
    ));

    // VoIP allows 5120 bytes.
    let voip = |len: usize| {
        Http2Request::push(&token.to_hex(), sized(len))
            .header("apns-topic", format!("{APP}.voip"))
            .header("apns-push-type", "voip")
    };
    let answer = send(&mut client, &voip(5120)).await;
    assert_eq!(answer.status, 200, "{answer}");
    match common::next_notification(&mut phone).await {
        DeviceEvent::Notification { app, push_type, .. } => {
            assert_eq!(app, APP);
            assert_eq!(push_type.as_deref(), Some("voip"));
        }
        other => panic!("{other:?}"),
    }
    assert_reason(
        &send(&mut client, &voip(5121)).await,
        413,
        "PayloadTooLarge",
    );

    // A body far over the limit is answered without the server buffering it.
    assert_reason(
        &send(&mut client, &with(vec![b'x'; 1 << 20])).await,
        413,
        "PayloadTooLarge",
    );
    assert_eq!(send(&mut client, &with(ALERT.into())).await.status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn token_of_another_app_or_environment() {
    let env = start().await;
    let (_phone, tokens) = env
        .device("phone-6", Environment::Sandbox, &[APP, OTHER_APP])
        .await;
    let (_prod, prod_tokens) = env
        .device("phone-6p", Environment::Production, &[APP])
        .await;
    let mut client = env.cert_client().await;
    let other = Http2Request::push(&tokens[OTHER_APP].to_hex(), ALERT).header("apns-topic", APP);
    assert_reason(
        &send(&mut client, &other).await,
        400,
        "DeviceTokenNotForTopic",
    );
    // A production token on a sandbox connection.
    assert_reason(
        &send(&mut client, &alert(&prod_tokens[APP])).await,
        400,
        "BadDeviceToken",
    );

    // The same certificate reaching api.push.apple.com talks to production: no
    // apns-unique-id there, and the sandbox token is the foreign one.
    let mut prod = env
        .connect(Some(CertEnvironment::Universal), "api.push.apple.com")
        .await;
    let answer = send(&mut prod, &alert(&prod_tokens[APP])).await;
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.apns_unique_id, None);
    assert_reason(
        &send(&mut prod, &alert(&tokens[APP])).await,
        400,
        "BadDeviceToken",
    );
    env.stop_devices.cancel();
}

#[tokio::test]
async fn unregistered_after_uninstall_matches_feedback() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-7", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    phone
        .commands
        .send(DeviceCommand::Uninstall(APP.into()))
        .await
        .unwrap();
    while !matches!(
        next_event(&mut phone).await,
        DeviceEvent::Uninstalled { .. }
    ) {}

    let mut events = env.sim.hub().subscribe();
    let mut client = env.cert_client().await;
    // Apple accepts the push; the device then says the app is gone.
    let first = send(&mut client, &alert(&token)).await;
    assert_eq!(first.status, 200);
    let first_id: Uuid = first.apns_id.unwrap().parse().unwrap();
    common::next_hub_event(&mut events, |e| {
        matches!(e, Event::Notification { apns_id, outcome: Outcome::NotInstalled, .. } if *apns_id == first_id)
    })
    .await;
    let at_ms = env.sim.hub().unregistered_at(&token).expect("unregistered");

    let answer = send(&mut client, &alert(&token)).await;
    assert_reason(&answer, 410, "Unregistered");
    assert_eq!(answer.timestamp, Some(at_ms));
    assert_eq!(
        answer.body,
        Bytes::from(format!(
            r#"{{"reason":"Unregistered","timestamp":{at_ms}}}"#
        ))
    );

    // The feedback service reports the same instant, in seconds.
    let feedback_tls = tls::client_config(
        env.pki().ca_cert_pem().as_bytes(),
        Some(ClientIdentity::from_provider(env.pki().default_provider()).unwrap()),
        vec![],
    )
    .unwrap();
    let tuples = client::read_feedback(
        &env.sim.addrs().feedback.to_string(),
        "localhost",
        feedback_tls,
        WAIT,
    )
    .await
    .unwrap();
    let tuple = tuples
        .iter()
        .find(|t| t.token == token)
        .expect("feedback tuple");
    assert_eq!(u64::from(tuple.timestamp), at_ms / 1000);
    assert_eq!(
        u64::from(tuple.timestamp) * 1000,
        answer.timestamp.unwrap() / 1000 * 1000
    );
    env.stop_devices.cancel();
}

#[tokio::test]
async fn wrong_environment_certificate_gets_goaway() {
    let env = start().await;
    for (cert, host) in [
        (CertEnvironment::Sandbox, "api.push.apple.com"),
        (CertEnvironment::Production, "api.sandbox.push.apple.com"),
    ] {
        let mut client = env.connect(Some(cert), host).await;
        let token = DeviceToken::from_bytes([1; 32]);
        match client.send(&alert(&token)).await {
            Err(Http2ClientError::GoAway(goaway)) => {
                assert_eq!(
                    goaway.reason().as_deref(),
                    Some("BadCertificateEnvironment")
                );
                assert_eq!(goaway.error_code, frames::NO_ERROR);
                assert_eq!(goaway.last_stream_id, 0);
            }
            other => panic!("{cert:?} at {host}: {other:?}"),
        }
    }
    // The matching host works.
    let (_phone, tokens) = env.device("phone-8", Environment::Sandbox, &[APP]).await;
    let mut client = env
        .connect(Some(CertEnvironment::Sandbox), "api.sandbox.push.apple.com")
        .await;
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn token_auth_basics() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-9", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];

    // Both signature encodings, each on its own connection.
    let key = env.pki().auth_key(DEFAULT_KEY_ID).unwrap();
    let der = jwt::sign_der(key, env.clock.now_secs()).unwrap();
    for bearer in [env.jwt(DEFAULT_KEY_ID), der] {
        let mut client = env.token_client().await;
        let answer = send(&mut client, &alert(&token).bearer(&bearer)).await;
        assert_eq!(answer.status, 200, "{answer}");
        assert!(matches!(
            common::next_notification(&mut phone).await,
            DeviceEvent::Notification { .. }
        ));
    }

    let mut client = env.token_client().await;
    assert_reason(
        &send(&mut client, &alert(&token)).await,
        403,
        "MissingProviderToken",
    );
    assert_reason(
        &send(&mut client, &alert(&token).bearer("abc.def.ghi")).await,
        403,
        "InvalidProviderToken",
    );
    // A token from a key the simulator does not know.
    let mut stranger = Pki::generate().unwrap();
    let unknown = stranger
        .mint_auth_key(DEFAULT_TEAM_ID, Some("UNKNOWNK01".into()), vec![])
        .unwrap()
        .clone();
    let foreign = jwt::sign(&unknown, env.clock.now_secs()).unwrap();
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&foreign)).await,
        403,
        "InvalidProviderToken",
    );
    // The default key's id on a token signed by another key: bad signature.
    let forged = {
        let mine = env.jwt(DEFAULT_KEY_ID);
        let theirs = jwt::sign(&unknown, env.clock.now_secs()).unwrap();
        let (head, _) = mine.rsplit_once('.').unwrap();
        let (_, signature) = theirs.rsplit_once('.').unwrap();
        format!("{head}.{signature}")
    };
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&forged)).await,
        403,
        "InvalidProviderToken",
    );
    // alg HS256 instead of ES256.
    let hs256 = {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{DEFAULT_KEY_ID}"}}"#));
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"{DEFAULT_TEAM_ID}","iat":{}}}"#,
            env.clock.now_secs()
        ));
        format!("{head}.{claims}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]))
    };
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&hs256)).await,
        403,
        "InvalidProviderToken",
    );
    // Token connections must name the topic.
    let no_topic = Http2Request::push(&token.to_hex(), ALERT).bearer(&env.jwt(DEFAULT_KEY_ID));
    assert_reason(&send(&mut client, &no_topic).await, 400, "MissingTopic");
    // And any push type's topic is allowed with a team key.
    let voip = Http2Request::push(&token.to_hex(), ALERT)
        .header("apns-topic", format!("{APP}.voip"))
        .header("apns-push-type", "voip")
        .bearer(&env.jwt(DEFAULT_KEY_ID));
    assert_eq!(send(&mut client, &voip).await.status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn token_lifetime_and_update_rate_follow_the_clock() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-10", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.token_client().await;
    let first = env.jwt(DEFAULT_KEY_ID);
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&first))
            .await
            .status,
        200
    );

    // A different token a second later: too soon.
    let second = env.jwt_at(DEFAULT_KEY_ID, env.clock.now_secs() + 1);
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&second)).await,
        429,
        "TooManyProviderTokenUpdates",
    );
    // The first one still works; twenty minutes later the update is accepted.
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&first))
            .await
            .status,
        200
    );
    env.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&second))
            .await
            .status,
        200
    );

    // An hour and a bit after its iat a token has expired, on this connection or a new one.
    env.clock.advance(Duration::from_secs(41 * 60));
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&second)).await,
        403,
        "ExpiredProviderToken",
    );
    let mut fresh = env.token_client().await;
    assert_reason(
        &send(&mut fresh, &alert(&token).bearer(&first)).await,
        403,
        "ExpiredProviderToken",
    );
    // A fresh token is accepted (the last update was 41 minutes ago).
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&env.jwt(DEFAULT_KEY_ID)))
            .await
            .status,
        200
    );
    env.stop_devices.cancel();
}

#[tokio::test]
async fn team_and_key_are_pinned_to_the_connection() {
    let env = start().await;
    let (_phone, tokens) = env
        .device("phone-11", Environment::Sandbox, &[APP, "com.only"])
        .await;
    let token = tokens[APP];
    let mut client = env.token_client().await;
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&env.jwt(DEFAULT_KEY_ID)))
            .await
            .status,
        200
    );
    env.clock.advance(Duration::from_secs(30 * 60));
    // Another team on the same connection.
    assert_reason(
        &send(&mut client, &alert(&token).bearer(&env.jwt(OTHER_TEAM_KEY))).await,
        403,
        "InvalidProviderToken",
    );
    // A topic-specific key of the same team is unrelated to the team key.
    let only = Http2Request::push(&tokens["com.only"].to_hex(), ALERT)
        .header("apns-topic", "com.only")
        .bearer(&env.jwt(TOPIC_KEY));
    assert_reason(
        &send(&mut client, &only).await,
        403,
        "UnrelatedKeyIdInToken",
    );
    // Another team key of the same team is fine.
    assert_eq!(
        send(&mut client, &alert(&token).bearer(&env.jwt(TEAM_KEY_2)))
            .await
            .status,
        200
    );

    // On its own connection the topic key may push only to its topic.
    let mut scoped = env.token_client().await;
    assert_reason(
        &send(&mut scoped, &alert(&token).bearer(&env.jwt(TOPIC_KEY))).await,
        400,
        "TopicDisallowed",
    );
    assert_eq!(send(&mut scoped, &only).await.status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn one_stream_until_a_valid_token() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-12", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.token_client().await;

    // Stream A: no token, body not sent yet, so it stays open.
    let (a_answer, mut a_body) = client.start(&alert(&token), false).await.unwrap();
    // Stream B, concurrent, with a valid token: refused, not processed.
    let b = alert(&token).bearer(&env.jwt(DEFAULT_KEY_ID));
    let (b_answer, mut b_body) = client.start(&b, false).await.unwrap();
    let _ = b_body.send_data(Bytes::from(ALERT), true);
    let refused = read_response(b_answer).await.unwrap_err();
    match refused {
        Http2ClientError::H2(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}"),
        other => panic!("{other:?}"),
    }
    // A completes and is answered.
    a_body.send_data(Bytes::from(ALERT), true).unwrap();
    assert_reason(
        &read_response(a_answer).await.unwrap(),
        403,
        "MissingProviderToken",
    );

    // A valid token lifts the limit: two streams may then be open at once.
    assert_eq!(send(&mut client, &b).await.status, 200);
    let (first, mut first_body) = client.start(&b, false).await.unwrap();
    let (second, mut second_body) = client.start(&b, false).await.unwrap();
    second_body.send_data(Bytes::from(ALERT), true).unwrap();
    first_body.send_data(Bytes::from(ALERT), true).unwrap();
    assert_eq!(read_response(second).await.unwrap().status, 200);
    assert_eq!(read_response(first).await.unwrap().status, 200);
}

#[tokio::test]
async fn valid_token_on_the_first_stream_allows_a_second_at_once() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-13", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = env.token_client().await;
    let valid = alert(&token).bearer(&env.jwt(DEFAULT_KEY_ID));
    let (a, mut a_body) = client.start(&valid, false).await.unwrap();
    let (b, mut b_body) = client.start(&valid, false).await.unwrap();
    b_body.send_data(Bytes::from(ALERT), true).unwrap();
    assert_eq!(read_response(b).await.unwrap().status, 200);
    a_body.send_data(Bytes::from(ALERT), true).unwrap();
    assert_eq!(read_response(a).await.unwrap().status, 200);
}

#[tokio::test]
async fn token_connection_environment_comes_from_the_server_name() {
    let env = start().await;
    let (_sandbox, sandbox_tokens) = env.device("phone-14", Environment::Sandbox, &[APP]).await;
    let (_prod, prod_tokens) = env
        .device("phone-14p", Environment::Production, &[APP])
        .await;
    let mut prod = env.connect(None, "api.push.apple.com").await;
    let jwt_text = env.jwt(DEFAULT_KEY_ID);
    let answer = send(&mut prod, &alert(&prod_tokens[APP]).bearer(&jwt_text)).await;
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.apns_unique_id, None);
    assert_reason(
        &send(&mut prod, &alert(&sandbox_tokens[APP]).bearer(&jwt_text)).await,
        400,
        "BadDeviceToken",
    );
    // localhost: the default environment, sandbox.
    let mut local = env.token_client().await;
    let answer = send(&mut local, &alert(&sandbox_tokens[APP]).bearer(&jwt_text)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.apns_unique_id.is_some());
    env.stop_devices.cancel();
}

#[tokio::test]
async fn idle_connection_gets_goaway_idle_timeout() {
    let env = start_with(|s| s.provider_idle_timeout = Duration::from_millis(300)).await;
    let (_phone, tokens) = env.device("phone-15", Environment::Sandbox, &[APP]).await;
    let mut client = env.cert_client().await;
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    let goaway = tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("closed in time")
        .expect("a GOAWAY");
    assert_eq!(goaway.reason().as_deref(), Some("IdleTimeout"));
    assert_eq!(goaway.error_code, frames::NO_ERROR);
    assert_eq!(goaway.last_stream_id, 1);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn stalled_body_gets_idle_timeout_answer() {
    let env = start_with(|s| s.request_body_timeout = Duration::from_secs(3)).await;
    let mut client = env.cert_client().await;
    let token = DeviceToken::from_bytes([3; 32]);
    let (answer, _body_never_sent) = client.start(&alert(&token), false).await.unwrap();
    let answer = tokio::time::timeout(WAIT, read_response(answer))
        .await
        .expect("answer in time")
        .unwrap();
    assert_reason(&answer, 400, "IdleTimeout");
}

#[tokio::test]
async fn shutdown_sends_goaway_shutdown() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-16", Environment::Sandbox, &[APP]).await;
    let mut client = env.cert_client().await;
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    env.stop_devices.cancel();
    let closed = tokio::spawn(client.closed());
    tokio::time::timeout(WAIT, env.sim.shutdown())
        .await
        .expect("shutdown in time");
    let goaway = tokio::time::timeout(WAIT, closed)
        .await
        .expect("closed in time")
        .unwrap()
        .expect("a GOAWAY");
    assert_eq!(goaway.reason().as_deref(), Some("Shutdown"));
    assert_eq!(goaway.last_stream_id, 3);
}

#[tokio::test]
async fn server_settings_are_close_to_apples() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = start().await;
    let mut stream = client::connect_tls(&env.addr(), "localhost", env.tls(None))
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "first frame is SETTINGS");
    let len = usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    let settings: HashMap<u16, u32> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert_eq!(settings.get(&0x1), Some(&4096), "header table");
    assert_eq!(settings.get(&0x3), Some(&1000), "max concurrent streams");
    assert_eq!(settings.get(&0x4), Some(&65_535), "initial window");
    assert_eq!(settings.get(&0x5), Some(&16_384), "max frame");
    assert_eq!(settings.get(&0x6), Some(&8000), "max header list");
}

#[tokio::test]
async fn prior_knowledge_without_alpn_is_served() {
    let env = start().await;
    let (_phone, tokens) = env.device("phone-17", Environment::Sandbox, &[APP]).await;
    let identity = ClientIdentity::from_provider(env.pki().default_provider()).unwrap();
    let no_alpn =
        tls::client_config(env.pki().ca_cert_pem().as_bytes(), Some(identity), vec![]).unwrap();
    let mut client = Http2Client::connect(&env.addr(), "localhost", no_alpn)
        .await
        .unwrap();
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn push_command_in_both_auth_modes() {
    let env = start().await;
    let (mut phone, tokens) = env.device("phone-18", Environment::Sandbox, &[APP]).await;
    let live = tokens[APP].to_hex();
    let base = PushOptions {
        addr: env.addr(),
        server_name: "localhost".into(),
        tls: env.tls(Some(CertEnvironment::Universal)),
        auth: PushAuth::Certificate,
        tokens: vec![live.clone(), live.clone()],
        topic: Some(APP.into()),
        push_type: Some("alert".into()),
        priority: Some(10),
        expiration: None,
        collapse_id: Some("cli".into()),
        apns_id: None,
        payload: Bytes::from(ALERT),
    };
    let answers = push(&base).await.unwrap();
    assert_eq!(answers.len(), 2);
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer}");
        assert!(answer.to_string().starts_with("200 apns-id="), "{answer}");
        assert!(matches!(
            common::next_notification(&mut phone).await,
            DeviceEvent::Notification { .. }
        ));
    }

    let token_auth = PushOptions {
        tls: env.tls(None),
        auth: PushAuth::Token(env.pki().auth_key(DEFAULT_KEY_ID).unwrap().clone()),
        tokens: vec![DeviceToken::from_bytes([9; 32]).to_hex(), live],
        ..base
    };
    let answers = push(&token_auth).await.unwrap();
    assert_eq!(answers[0].reason.as_deref(), Some("BadDeviceToken"));
    assert!(
        answers[0]
            .to_string()
            .starts_with("400 BadDeviceToken apns-id="),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1].status, 200);
    env.stop_devices.cancel();
}

#[tokio::test]
async fn certificate_without_a_topic_gets_goaway_bad_certificate() {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let env = start().await;
    // Signed by the simulator's CA, so TLS accepts it, but not shaped like a push
    // certificate: no UID, no Apple OIDs, no known CN prefix.
    let ca_key = KeyPair::from_pem(env.pki().ca_key_pem()).unwrap();
    let ca_cert = CertificateParams::from_ca_cert_pem(env.pki().ca_cert_pem())
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "just a client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let identity =
        ClientIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let tls = tls::client_config(
        env.pki().ca_cert_pem().as_bytes(),
        Some(identity),
        vec![b"h2".to_vec()],
    )
    .unwrap();
    let mut client = Http2Client::connect(&env.addr(), "localhost", tls)
        .await
        .unwrap();
    match client.send(&alert(&DeviceToken::from_bytes([2; 32]))).await {
        Err(Http2ClientError::GoAway(goaway)) => {
            assert_eq!(goaway.reason().as_deref(), Some("BadCertificate"));
            assert_eq!(goaway.last_stream_id, 0);
        }
        other => panic!("{other:?}"),
    }
}

/// With a per-token limit configured, pushes beyond it get 429 `TooManyRequests`; other
/// tokens and the next window are unaffected.
#[tokio::test]
async fn per_token_rate_limit_answers_too_many_requests() {
    let env = start_with(|s| {
        s.token_rate_limit = Some(apns_sim::settings::RateLimit {
            pushes: 2,
            per: Duration::from_secs(60),
        })
    })
    .await;
    let (_phone, tokens) = env.device("phone-rate", Environment::Sandbox, &[APP]).await;
    let (_tablet, other_tokens) = env
        .device("tablet-rate", Environment::Sandbox, &[APP])
        .await;
    let mut client = env.cert_client().await;
    for _ in 0..2 {
        let answer = send(&mut client, &alert(&tokens[APP])).await;
        assert_eq!(answer.status, 200, "{answer}");
    }
    assert_reason(
        &send(&mut client, &alert(&tokens[APP])).await,
        429,
        "TooManyRequests",
    );
    assert_eq!(
        send(&mut client, &alert(&other_tokens[APP])).await.status,
        200
    );
    env.clock.advance(Duration::from_secs(61));
    assert_eq!(send(&mut client, &alert(&tokens[APP])).await.status, 200);
    env.stop_devices.cancel();
}
