//! The test provider behind `POST /v1/push`: one push, sent as an outside provider sends
//! it, over TLS to the real binary gateway ([`crate::client::binary`]) or HTTP/2 endpoint
//! ([`crate::client::http2`]), with credentials from the PKI, and Apple's answer reported.
//!
//! Credentials: on HTTP/2, the first provider certificate whose topics include the push's
//! topic and whose environment fits the token's, else token auth with an auth key that may
//! sign for the topic (of the team that owns the bundle, when one does); on the binary API,
//! a certificate whose own topic is the app (the binary API takes the topic from the
//! certificate). The TLS server name picks the environment, as Apple's host names do.
//!
//! The binary API answers only failures, so the provider waits for the hub's record of its
//! notification (by its identifier, on the hub's broadcast) instead of sitting out a
//! silence; a refusal's error response is then read from the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;

use super::Actors;
use crate::client::http2::{self as h2client, PushAuth, PushOptions};
use crate::client::{BinaryClient, GatewayAnswer};
use crate::hub::{Api, Event, Logged, Outcome};
use crate::pki::{AuthKey, ProviderCert};
use crate::protocol::notification;
use crate::protocol::token::DeviceToken;
use crate::protocol::Environment;
use crate::server::control::devices::{PushAnswer, PushApi, Refusal, Target, TestPush};
use crate::tls::{self, ClientIdentity};

/// How long the binary push waits for the hub's record of its notification, or for the
/// gateway's answer: on loopback it takes milliseconds.
pub const BINARY_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How far ahead a binary push's expiry lies when none is given (as `apns-sim push`).
pub const DEFAULT_BINARY_EXPIRY: Duration = Duration::from_secs(3600);

/// What the push goes to, resolved.
struct Resolved {
    token: DeviceToken,
    /// The token's environment (sandbox for a token the hub never minted).
    environment: Environment,
    /// The token's app, when known.
    app: Option<String>,
    /// The topic: as given, else the app with its kind's suffix.
    topic: Option<String>,
    /// The push type: as given, else the token kind's.
    push_type: Option<String>,
}

/// Sends one test push and reports the answer.
pub(super) async fn push(actors: &Actors, push: TestPush) -> Result<PushAnswer, Refusal> {
    let resolved = resolve(actors, &push)?;
    match push.api {
        PushApi::Http2 => http2(actors, &push, resolved).await,
        PushApi::Binary => binary(actors, &push, resolved).await,
    }
}

/// The token, its owner and what the push defaults to.
fn resolve(actors: &Actors, push: &TestPush) -> Result<Resolved, Refusal> {
    let hub = &actors.inner.config.hub;
    let token = match &push.target {
        Target::Token(token) => *token,
        Target::App { serial, app } => match actors.token_of(serial, app)? {
            Some(token) => token,
            None => {
                let known = hub.devices(crate::server::control::devices::MAX_LISTED);
                let device = known
                    .iter()
                    .find(|d| d.serial == *serial)
                    .ok_or_else(|| Refusal::NotManaged(serial.clone()))?;
                device
                    .tokens
                    .iter()
                    .find(|(held, _)| held == app)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| {
                        Refusal::Missing(format!("device {serial} holds no {app} token"))
                    })?
            }
        },
    };
    let owner = hub.token_owner(&token);
    Ok(Resolved {
        token,
        environment: owner
            .as_ref()
            .map_or(Environment::Sandbox, |o| o.environment),
        app: owner.as_ref().map(|o| o.held.app.clone()),
        topic: push
            .topic
            .clone()
            .or_else(|| owner.as_ref().map(|o| o.held.topic())),
        push_type: push
            .push_type
            .clone()
            .or_else(|| owner.as_ref().map(|o| o.held.kind.push_type().to_owned())),
    })
}

/// The provider certificates of the PKI with their identities.
fn certificates(actors: &Actors) -> Vec<(ProviderCert, crate::pki::profile::ProviderIdentity)> {
    actors
        .inner
        .config
        .pki
        .providers()
        .filter_map(|cert| {
            let id = ClientIdentity::from_provider(cert).ok()?;
            let leaf = id.chain.first()?;
            let identity = crate::pki::profile::provider_identity(leaf).ok()?;
            Some((cert.clone(), identity))
        })
        .collect()
}

/// An auth key that may sign for `topic`'s bundle: of the team that owns the bundle when
/// the PKI says one does.
fn auth_key(actors: &Actors, bundle: &str, topic: &str) -> Option<AuthKey> {
    let pki = &actors.inner.config.pki;
    let owner = pki
        .bundle_owners()
        .into_iter()
        .find(|(b, _)| b == bundle)
        .map(|(_, team)| team);
    pki.auth_keys()
        .iter()
        .filter(|k| k.allows_topic(topic) || k.allows_topic(bundle))
        .find(|k| owner.as_ref().is_none_or(|team| k.team_id == *team))
        .cloned()
}

/// The TLS server name that selects `environment`.
fn server_name(api: PushApi, environment: Environment) -> &'static str {
    match (api, environment) {
        (PushApi::Http2, Environment::Sandbox) => "api.sandbox.push.apple.com",
        (PushApi::Http2, Environment::Production) => "api.push.apple.com",
        (PushApi::Binary, Environment::Sandbox) => "gateway.sandbox.push.apple.com",
        (PushApi::Binary, Environment::Production) => "gateway.push.apple.com",
    }
}

/// Through the HTTP/2 endpoint.
async fn http2(actors: &Actors, push: &TestPush, to: Resolved) -> Result<PushAnswer, Refusal> {
    let pki = &actors.inner.config.pki;
    let topic = to
        .topic
        .clone()
        .unwrap_or_else(|| pki.default_provider().topic.clone());
    let bundle = to.app.clone().unwrap_or_else(|| topic.clone());
    let alpn = vec![tls::ALPN_H2.to_vec()];
    let tls_error = |e: tls::TlsError| Refusal::Provider(format!("provider TLS: {e}"));
    let cert = certificates(actors)
        .into_iter()
        .find(|(_, id)| id.allows_topic(&topic) && id.environment.allows(to.environment));
    let (config, auth) = match cert {
        Some((cert, _)) => {
            let identity = ClientIdentity::from_provider(&cert).map_err(tls_error)?;
            let config = tls::client_config(pki.ca_cert_pem().as_bytes(), Some(identity), alpn)
                .map_err(tls_error)?;
            (config, PushAuth::Certificate)
        }
        None => {
            let key = auth_key(actors, &bundle, &topic).ok_or_else(|| {
                Refusal::NoCredentials(format!(
                    "the PKI has no provider certificate for topic {topic} in {} and no auth \
                     key that may sign for it; mint one with `apns-sim certs`",
                    to.environment
                ))
            })?;
            let config =
                tls::client_config(pki.ca_cert_pem().as_bytes(), None, alpn).map_err(tls_error)?;
            (config, PushAuth::Token(key))
        }
    };
    let options = PushOptions {
        addr: actors.inner.config.http2.to_string(),
        server_name: server_name(PushApi::Http2, to.environment).to_owned(),
        tls: config,
        auth,
        tokens: vec![to.token.to_hex()],
        topic: Some(topic),
        push_type: to.push_type,
        priority: push.priority,
        expiration: push.expiry,
        collapse_id: push.collapse_id.clone(),
        apns_id: None,
        payload: Bytes::from(push.payload.clone()),
    };
    let answers = match h2client::push(&options).await {
        Ok(answers) => answers,
        // A GOAWAY is Apple's answer too (a certificate for the other environment, a
        // fault): no status came back, the reason did.
        Err(h2client::Http2ClientError::GoAway(goaway)) => {
            return Ok(PushAnswer {
                api: PushApi::Http2,
                apns_id: String::new(),
                status: 0,
                reason: Some(
                    goaway
                        .reason()
                        .unwrap_or_else(|| format!("GOAWAY with code {}", goaway.error_code)),
                ),
            })
        }
        Err(e) => return Err(Refusal::Provider(format!("HTTP/2 push: {e}"))),
    };
    let answer = answers
        .into_iter()
        .next()
        .ok_or_else(|| Refusal::Provider("HTTP/2 push: no answer".to_owned()))?;
    Ok(PushAnswer {
        api: PushApi::Http2,
        apns_id: answer.apns_id.unwrap_or_default(),
        status: answer.status,
        reason: answer.reason,
    })
}

/// What ended a binary push's wait.
enum Heard {
    /// The hub recorded the notification: its UUID, outcome and detail.
    Hub(uuid::Uuid, Outcome, String),
    /// The gateway answered (or closed) first.
    Gateway(Result<GatewayAnswer, crate::client::ClientError>),
    /// Neither within the timeout.
    Nothing,
}

/// Through the binary gateway (command 2).
async fn binary(actors: &Actors, push: &TestPush, to: Resolved) -> Result<PushAnswer, Refusal> {
    let config = &actors.inner.config;
    let bundle = to
        .app
        .clone()
        .unwrap_or_else(|| config.pki.default_provider().topic.clone());
    let (cert, _) = certificates(actors)
        .into_iter()
        .find(|(_, id)| id.topic == bundle && id.environment.allows(to.environment))
        .ok_or_else(|| {
            Refusal::NoCredentials(format!(
                "the PKI has no provider certificate for {bundle} in {} (the binary API takes \
                 the topic from the certificate); mint one with `apns-sim certs`",
                to.environment
            ))
        })?;
    let tls_error = |e: tls::TlsError| Refusal::Provider(format!("provider TLS: {e}"));
    let identity = ClientIdentity::from_provider(&cert).map_err(tls_error)?;
    let tls_config = tls::client_config(
        config.pki.ca_cert_pem().as_bytes(),
        Some(identity),
        Vec::new(),
    )
    .map_err(tls_error)?;
    let identifier = actors.inner.identifier();
    let expiry = push.expiry.unwrap_or_else(|| {
        (config.hub.clock().now_secs() + DEFAULT_BINARY_EXPIRY.as_secs()) as u32
    });
    let mut frame = BytesMut::new();
    notification::encode_frame_raw(
        to.token.as_bytes(),
        push.payload.as_bytes(),
        identifier.to_be_bytes(),
        expiry,
        push.priority.unwrap_or(10),
        &mut frame,
    );
    // Subscribed before sending, so the record cannot be missed.
    let mut events = config.hub.subscribe();
    let gateway = config.gateway.to_string();
    let mut client = BinaryClient::connect(
        &gateway,
        server_name(PushApi::Binary, to.environment),
        tls_config,
    )
    .await
    .map_err(|e| Refusal::Provider(format!("binary gateway: {e}")))?;
    client
        .send(&frame)
        .await
        .map_err(|e| Refusal::Provider(format!("binary gateway: {e}")))?;
    let heard = tokio::select! {
        record = recorded(&mut events, identifier, to.token) => match record {
            Some((id, outcome, detail)) => Heard::Hub(id, outcome, detail),
            None => Heard::Nothing,
        },
        answer = client.finish(BINARY_ANSWER_TIMEOUT) => Heard::Gateway(answer),
    };
    let answer = |apns_id: String, status: u8, reason: Option<String>| PushAnswer {
        api: PushApi::Binary,
        apns_id,
        status: u16::from(status),
        reason,
    };
    match heard {
        Heard::Hub(apns_id, Outcome::Rejected, detail) => {
            let status = match client.finish(BINARY_ANSWER_TIMEOUT).await {
                Ok(GatewayAnswer::Error(resp)) => resp.status.code(),
                _ => 0,
            };
            Ok(answer(apns_id.to_string(), status, Some(detail)))
        }
        Heard::Hub(apns_id, _, _) => {
            let _ = client.close().await;
            Ok(answer(apns_id.to_string(), 0, None))
        }
        Heard::Gateway(Ok(GatewayAnswer::Error(resp))) => Ok(answer(
            String::new(),
            resp.status.code(),
            Some(format!(
                "error response for identifier {}",
                u32::from_be_bytes(resp.identifier)
            )),
        )),
        // Apple's answer to a refused command-0 frame, or a fault's: no status, no bytes.
        Heard::Gateway(Ok(GatewayAnswer::Closed)) => Ok(answer(
            String::new(),
            0,
            Some("the gateway closed the connection without an error response".to_owned()),
        )),
        Heard::Gateway(Ok(GatewayAnswer::Silent)) | Heard::Nothing => Err(Refusal::Provider(
            format!("no record of the notification within {BINARY_ANSWER_TIMEOUT:?}"),
        )),
        Heard::Gateway(Err(e)) => Err(Refusal::Provider(format!("binary gateway: {e}"))),
    }
}

/// The hub's first record of the binary notification `identifier` (to `token`, or to no
/// valid token), within [`BINARY_ANSWER_TIMEOUT`].
async fn recorded(
    events: &mut broadcast::Receiver<Logged>,
    identifier: u32,
    token: DeviceToken,
) -> Option<(uuid::Uuid, Outcome, String)> {
    let work = async {
        loop {
            match events.recv().await.map(|logged| logged.event) {
                Ok(Event::Notification {
                    api: Api::Binary,
                    identifier: id,
                    token: to,
                    apns_id,
                    outcome,
                    detail,
                    ..
                }) if id == identifier && to.is_none_or(|t| t == token) => {
                    return Some((apns_id, outcome, detail));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(BINARY_ANSWER_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}
