//! The tour's five steps, on its own simulator. Each step acts through a client (the tour's
//! device, a binary or HTTP/2 provider, a feedback reader), then narrates what the hub's
//! events, the client's answers and the bytes read say happened, and fails when they do not
//! say what the step expects.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::device::TourDevice;
use super::h2::{Dir, TourH2};
use super::wire::{self, DeviceDirection};
use super::{Narrator, TourConfig, TourError, Watch};
use crate::client::http2::Http2Request;
use crate::client::{self, ClientError};
use crate::clock::Clock;
use crate::hub::{Api, Event, Outcome, ProviderEndpoint};
use crate::pki::Pki;
use crate::protocol::device::{DeviceMessage, DeviceNotification, ServerMessage, PROTOCOL_VERSION};
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::feedback::FeedbackTuple;
use crate::protocol::h2wire::{Labeller, Side, UnitKind};
use crate::protocol::notification;
use crate::protocol::token::{DeviceToken, TokenKind};
use crate::protocol::Environment;
use crate::settings::Settings;
use crate::sim::{Listeners, Simulator, SimulatorConfig};
use crate::tls::{self, ClientIdentity};

/// How many steps the tour has.
pub(super) const STEPS: u8 = 5;
/// The tour device's serial number.
const SERIAL: &str = "TOUR-PHONE";
/// The environment of the whole tour (the provider certificate is universal; the TLS server
/// names below choose sandbox).
const ENVIRONMENT: Environment = Environment::Sandbox;
/// The name the device checks the simulator's certificate against.
const DEVICE_SERVER_NAME: &str = "localhost";
/// Apple's sandbox host names: a universal certificate takes its environment from them.
const GATEWAY_SERVER_NAME: &str = "gateway.sandbox.push.apple.com";
const FEEDBACK_SERVER_NAME: &str = "feedback.sandbox.push.apple.com";
const HTTP2_SERVER_NAME: &str = "api.sandbox.push.apple.com";
/// How often the tour's device is asked to ping: an hour, so a person reading a step for
/// minutes does not see the device dropped as idle (the tour's device does not ping).
const TOUR_HEARTBEAT: Duration = Duration::from_secs(3600);
/// How long a stored notification of step 4 may live, and how far the clock is moved.
const SHORT_EXPIRY: Duration = Duration::from_secs(60);
const CLOCK_MOVE: Duration = Duration::from_secs(120);
/// The expiry of an ordinary push: an hour from now.
const HOUR: Duration = Duration::from_secs(3600);
/// How long the tour waits for a provider endpoint's bytes or its close.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The steps' titles, in order.
const TITLES: [&str; STEPS as usize] = [
    "registration: a device gets a token",
    "a push over each provider API: binary, then HTTP/2",
    "uninstall, feedback and 410 Unregistered",
    "offline: store-and-forward with expiry",
    "an error response: close and discard",
];

/// A binary provider connection.
type Provider = TlsStream<TcpStream>;

/// The tour's world: its simulator, the clients' TLS, the device and what it holds.
pub(super) struct Tour<'a> {
    n: Narrator<'a>,
    sim: Simulator,
    clock: Clock,
    watch: Watch,
    device_tls: Arc<ClientConfig>,
    provider_tls: Arc<ClientConfig>,
    http2_tls: Arc<ClientConfig>,
    topic: String,
    device: Option<TourDevice>,
    token: Option<DeviceToken>,
    installed: bool,
    /// Whether to keep the simulator up after the last step ([`TourConfig::linger`]).
    linger: bool,
}

/// The labellers of one HTTP/2 connection, one per direction (each keeps its HPACK table).
struct H2Frames {
    sent: Labeller,
    received: Labeller,
}

impl H2Frames {
    fn new() -> Self {
        H2Frames {
            sent: Labeller::new(Side::Client),
            received: Labeller::new(Side::Server),
        }
    }
}

/// What the frames of an HTTP/2 exchange show, in words: only what was seen is said.
fn h2_story(seen: &[(Dir, UnitKind)]) -> String {
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    const ACK: u8 = 0x1;
    let frame = |dir: Dir, wanted: u8, stream: Option<u32>, ack: bool| {
        seen.iter().any(|(d, kind)| match kind {
            UnitKind::Frame {
                frame_type,
                flags,
                stream: s,
                ..
            } => {
                *d == dir
                    && *frame_type == wanted
                    && stream.is_none_or(|want| want == *s)
                    && (!ack || flags & ACK != 0)
            }
            UnitKind::Preface => false,
        })
    };
    let mut said = Vec::new();
    if frame(Dir::Received, SETTINGS, None, false) {
        said.push(
            "sent its SETTINGS (how many streams it takes at once, how large a frame may be)"
                .to_owned(),
        );
    }
    if frame(Dir::Received, SETTINGS, None, true) {
        said.push(
            "acknowledged the provider's with an empty SETTINGS frame flagged ACK".to_owned(),
        );
    }
    let request = seen.iter().find_map(|(d, kind)| match kind {
        UnitKind::Frame {
            frame_type: HEADERS,
            stream,
            ..
        } if *d == Dir::Sent => Some(*stream),
        _ => None,
    });
    if let Some(stream) = request {
        if frame(Dir::Received, HEADERS, Some(stream), false) {
            said.push(if frame(Dir::Received, DATA, Some(stream), false) {
                format!(
                    "answered the request of stream {stream} on the same stream: a HEADERS \
                     frame (:status and apns-id, HPACK-compressed like the request's) and a \
                     DATA frame with the JSON body, whose END_STREAM flag closes the stream"
                )
            } else {
                format!(
                    "answered the request of stream {stream} on the same stream with a HEADERS \
                     frame alone (:status and apns-id, HPACK-compressed like the request's), \
                     whose END_STREAM flag closes the stream: a success has no body"
                )
            });
        }
    }
    if said.is_empty() {
        "sent no frame the tour recognised.".to_owned()
    } else {
        format!("{}.", said.join("; "))
    }
}

/// Wraps an error of a client in words.
fn failed(what: &str) -> impl FnOnce(ClientError) -> TourError + '_ {
    move |e| TourError::Failed(format!("{what}: {e}"))
}

/// An outcome's name, as the delivery log spells it (`not_installed`, …).
fn name(outcome: Outcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{outcome:?}"))
}

/// A token in the narration: hex, cut to its first 8 bytes.
fn short(token: &DeviceToken) -> String {
    let hex = token.to_hex();
    match hex.get(..16) {
        Some(head) if hex.len() > 16 => format!("{head}…"),
        _ => hex,
    }
}

impl<'a> Tour<'a> {
    /// Mints an in-memory PKI, starts the simulator and prints where it listens.
    pub(super) async fn start(
        config: TourConfig,
        mut n: Narrator<'a>,
    ) -> Result<Tour<'a>, TourError> {
        let start = |e: String| TourError::Start(e);
        let pki = Pki::generate().map_err(|e| start(format!("minting certificates: {e}")))?;
        let bind = |port: u16| async move {
            TcpListener::bind(("127.0.0.1", port))
                .await
                .map_err(|e| start(format!("binding 127.0.0.1:{port}: {e}")))
        };
        let listeners = Listeners {
            gateway: bind(0).await?,
            feedback: bind(0).await?,
            http2: bind(0).await?,
            devices: bind(0).await?,
            control: bind(config.control_port).await?,
        };
        let clock = Clock::system();
        let settings = Settings {
            device_heartbeat: TOUR_HEARTBEAT,
            ..Settings::default()
        };
        let mut sim_config = SimulatorConfig::new(pki);
        sim_config.settings = settings;
        sim_config.clock = clock.clone();
        let topic = sim_config.pki.default_provider().topic.clone();
        let ca = sim_config.pki.ca_cert_pem().as_bytes().to_vec();
        let tls_err = |e: tls::TlsError| start(format!("client TLS: {e}"));
        let identity =
            ClientIdentity::from_provider(sim_config.pki.default_provider()).map_err(tls_err)?;
        let device_tls = tls::client_config(&ca, None, Vec::new()).map_err(tls_err)?;
        let provider_tls =
            tls::client_config(&ca, Some(identity.clone()), Vec::new()).map_err(tls_err)?;
        let http2_tls = tls::client_config(&ca, Some(identity), vec![tls::ALPN_H2.to_vec()])
            .map_err(tls_err)?;
        let sim = Simulator::start(sim_config, listeners).map_err(|e| start(e.to_string()))?;
        // Subscribed before the tour does anything, so none of its events can be missed.
        let watch = Watch::new(sim.hub().subscribe());
        let addrs = *sim.addrs();
        n.line(
            "apns-sim tour: the push flow, step by step, on a simulator running in this process.",
        )?;
        n.line(&format!(
            "Watch it live on the dashboard: http://{0}/ (the same events as a stream: \
             http://{0}/v1/events).",
            addrs.control
        ))?;
        n.line(&format!(
            "Endpoints: binary gateway {}, feedback service {}, HTTP/2 API {}, device endpoint {}.",
            addrs.gateway, addrs.feedback, addrs.http2, addrs.devices
        ))?;
        n.line(&format!(
            "The provider's certificate is for the app {topic}; everything happens in the {ENVIRONMENT} environment."
        ))?;
        Ok(Tour {
            n,
            sim,
            clock,
            watch,
            device_tls,
            provider_tls,
            http2_tls,
            topic,
            device: None,
            token: None,
            installed: false,
            linger: config.linger,
        })
    }

    /// Runs every step, then stops the simulator.
    pub(super) async fn run(mut self) -> Result<(), TourError> {
        let control = self.sim.addrs().control;
        // Time to open the dashboard before anything happens.
        self.n.pause(1, control).await?;
        let mut result = Ok(());
        for (i, title) in TITLES.iter().enumerate() {
            let step = u8::try_from(i + 1).unwrap_or(u8::MAX);
            self.n.heading(step, title)?;
            let done = match step {
                1 => self.registration().await,
                2 => self.push().await,
                3 => self.uninstall().await,
                4 => self.offline().await,
                _ => self.error_response().await,
            };
            if let Err(why) = done {
                self.n.line(&format!("\nSTEP {step} FAILED: {why}"))?;
                result = Err(TourError::Step {
                    step,
                    title,
                    why: Box::new(why),
                });
                break;
            }
            self.n.line(&format!("\nStep {step} done."))?;
            if step < STEPS {
                self.n.pause(step + 1, control).await?;
            }
        }
        if result.is_ok() {
            self.n
                .line("\nThe tour is complete: every step happened as described.")?;
        }
        if self.linger {
            self.n.linger(control).await?;
        }
        if let Some(device) = self.device.take() {
            // The simulator is stopping anyway; a failed close changes nothing.
            let _ = device.close().await;
        }
        self.sim.shutdown().await;
        result
    }

    fn device(&mut self) -> Result<&mut TourDevice, TourError> {
        self.device
            .as_mut()
            .ok_or_else(|| TourError::Failed("the device is not connected".to_owned()))
    }

    fn token(&self) -> Result<DeviceToken, TourError> {
        self.token
            .ok_or_else(|| TourError::Failed("the device has no token yet".to_owned()))
    }

    /// The device writes `message`; the tour shows its bytes.
    async fn device_send(&mut self, message: DeviceMessage) -> Result<(), TourError> {
        let bytes = self.device()?.send(&message).await?;
        let title = format!(
            "device → simulator: {}",
            wire::device_type_name(message.frame_type())
        );
        let labels = wire::device_frame(&bytes, DeviceDirection::FromDevice);
        self.n.bytes(&title, &bytes, &labels)
    }

    /// The device reads the simulator's next frame; the tour shows its bytes.
    async fn device_recv(&mut self) -> Result<ServerMessage, TourError> {
        let (message, bytes) = self.device()?.recv().await?;
        let title = format!(
            "simulator → device: {}",
            wire::device_type_name(message.frame_type())
        );
        let labels = wire::device_frame(&bytes, DeviceDirection::FromSimulator);
        self.n.bytes(&title, &bytes, &labels)?;
        Ok(message)
    }

    /// Shows recorded HTTP/2 chunks as labelled frames, in the order they went, and returns
    /// which way each frame went and what it was.
    fn show_h2(
        &mut self,
        frames: &mut H2Frames,
        chunks: Vec<(Dir, Vec<u8>)>,
    ) -> Result<Vec<(Dir, UnitKind)>, TourError> {
        let mut seen = Vec::new();
        for (dir, bytes) in chunks {
            let (arrow, units) = match dir {
                Dir::Sent => ("provider → HTTP/2 API", frames.sent.feed(&bytes)),
                Dir::Received => ("HTTP/2 API → provider", frames.received.feed(&bytes)),
            };
            for unit in &units {
                self.n.h2(arrow, unit)?;
                seen.push((dir, unit.kind));
            }
        }
        Ok(seen)
    }

    /// The device connects and says hello; the hub opens its session; the endpoint welcomes it.
    async fn connect_device(&mut self) -> Result<(), TourError> {
        let addr = self.sim.addrs().devices.to_string();
        self.n.say(
            "device",
            &format!(
                "{SERIAL} opens a TLS connection to the simulator's device endpoint at {addr} \
                 (a phone keeps one such connection to APNs open all the time) and says hello \
                 with its serial number and environment."
            ),
        )?;
        self.device =
            Some(TourDevice::connect(&addr, DEVICE_SERVER_NAME, self.device_tls.clone()).await?);
        self.device_send(DeviceMessage::Hello {
            version: PROTOCOL_VERSION,
            environment: ENVIRONMENT,
            serial: SERIAL.to_owned(),
        })
        .await?;
        let environment = self
            .watch
            .until("the device coming online", |e| match e {
                Event::DeviceOnline {
                    serial,
                    environment,
                    ..
                } if serial == SERIAL => Some(*environment),
                _ => None,
            })
            .await?;
        self.n.say(
            "hub",
            &format!(
                "opened a session for {SERIAL} in {environment}: notifications for its tokens \
                 now go down this connection, and anything stored for it while it was away \
                 goes first."
            ),
        )?;
        match self.device_recv().await? {
            ServerMessage::Welcome { heartbeat_secs } => {
                let why = if u64::from(heartbeat_secs) == TOUR_HEARTBEAT.as_secs() {
                    " (the tour's simulator asks for an hour, so the device can wait for you)"
                } else {
                    ""
                };
                self.n.say(
                    "device endpoint",
                    &format!(
                        "welcomed the device and asked it to ping at least every \
                         {heartbeat_secs} seconds{why}."
                    ),
                )
            }
            other => Err(TourError::Failed(format!(
                "the device expected Welcome, got {other:?}"
            ))),
        }
    }

    /// The device registers the app (a fresh install: a new token) and reads its token.
    async fn register(&mut self) -> Result<DeviceToken, TourError> {
        let previous = self.token;
        self.device_send(DeviceMessage::Register {
            fresh_install: true,
            app: self.topic.clone(),
            kind: TokenKind::Remote,
        })
        .await?;
        let topic = self.topic.clone();
        let minted = self
            .watch
            .until("the token being minted", |e| match e {
                Event::Registered {
                    serial, app, token, ..
                } if serial == SERIAL && *app == topic => Some(*token),
                _ => None,
            })
            .await?;
        let fresh = if previous == Some(minted) {
            return Err(TourError::Failed(
                "the hub kept the old token for a fresh install".to_owned(),
            ));
        } else if previous.is_some() {
            ", a different one from before: a reinstalled app gets a new token"
        } else {
            ""
        };
        self.n.say(
            "hub",
            &format!(
                "minted the device token {minted} ({} random bytes) for ({SERIAL}, {topic}, \
                 {ENVIRONMENT}){fresh}.",
                minted.len()
            ),
        )?;
        match self.device_recv().await? {
            ServerMessage::Registered { token, .. } if token == minted => {}
            other => {
                return Err(TourError::Failed(format!(
                    "the device expected Registered with {minted}, got {other:?}"
                )))
            }
        }
        self.token = Some(minted);
        self.installed = true;
        Ok(minted)
    }

    /// Step 1.
    async fn registration(&mut self) -> Result<(), TourError> {
        self.connect_device().await?;
        self.n.say(
            "device",
            &format!(
                "the app {} starts and asks for its push token: the device sends Register.",
                self.topic
            ),
        )?;
        let token = self.register().await?;
        self.n.say(
            "device",
            &format!(
                "handed the token to the app, which sends it to its provider's app server (in \
                 real life over the app's own API; `apns-sim device --register-url` POSTs it \
                 as JSON). Here the tour plays the app server: it keeps {token} to push to."
            ),
        )
    }

    /// Connects a provider to the gateway and narrates what the gateway read from its
    /// certificate; returns the connection and its number.
    async fn connect_provider(&mut self) -> Result<(Provider, u64), TourError> {
        let addr = self.sim.addrs().gateway.to_string();
        self.n.say(
            "provider",
            &format!(
                "connects to the binary gateway at {addr} with its client certificate (mutual \
                 TLS), asking for {GATEWAY_SERVER_NAME}."
            ),
        )?;
        let stream = client::connect_tls(&addr, GATEWAY_SERVER_NAME, self.provider_tls.clone())
            .await
            .map_err(failed("the provider could not connect to the gateway"))?;
        let (connection, identity) = self
            .watch
            .until("the provider's connection", |e| match e {
                Event::ProviderConnected {
                    connection,
                    endpoint: ProviderEndpoint::Gateway,
                    identity,
                    ..
                } => Some((*connection, identity.clone())),
                _ => None,
            })
            .await?;
        self.n.say(
            "gateway",
            &format!(
                "checked the certificate against the simulator's CA and read who it is: \
                 {identity} (connection {connection}). The certificate fixes the app (topic) \
                 this provider may push to; it is valid for both environments, so the server \
                 name asked for picks one ({GATEWAY_SERVER_NAME}: {ENVIRONMENT})."
            ),
        )?;
        Ok((stream, connection))
    }

    /// A command-2 frame to the tour's token.
    fn frame(&self, id: u32, token: &[u8], expiry: u32, text: &str) -> Bytes {
        let payload = serde_json::json!({"aps": {"alert": text}}).to_string();
        let mut frame = BytesMut::new();
        notification::encode_frame_raw(
            token,
            payload.as_bytes(),
            id.to_be_bytes(),
            expiry,
            10,
            &mut frame,
        );
        frame.freeze()
    }

    /// An expiry `after` from the simulator's now.
    fn expiry_in(&self, after: Duration) -> u32 {
        u32::try_from(self.clock.now_secs() + after.as_secs()).unwrap_or(u32::MAX)
    }

    /// Writes `frames` in one write, showing each (labelled when `labelled` says so).
    async fn send_frames(
        &mut self,
        provider: &mut Provider,
        frames: &[(u32, Bytes, bool)],
    ) -> Result<(), TourError> {
        let mut all = BytesMut::new();
        for (id, frame, labelled) in frames {
            let title = format!("provider → gateway: command 2 frame, identifier {id}");
            if *labelled {
                self.n.bytes(&title, frame, &wire::command(frame))?;
            } else {
                self.n.bytes(&title, frame, &[])?;
            }
            all.extend_from_slice(frame);
        }
        provider
            .write_all(&all)
            .await
            .map_err(|e| TourError::Failed(format!("the provider could not write: {e}")))?;
        provider
            .flush()
            .await
            .map_err(|e| TourError::Failed(format!("the provider could not write: {e}")))
    }

    /// Waits for the hub's record of binary notification `id`, whatever its outcome.
    async fn outcome_of(&mut self, id: u32, what: &str) -> Result<(Outcome, String), TourError> {
        self.watch
            .until(what, |e| match e {
                Event::Notification {
                    identifier,
                    api: Api::Binary,
                    outcome,
                    detail,
                    ..
                } if *identifier == id && *outcome != Outcome::Requeued => {
                    Some((*outcome, detail.clone()))
                }
                _ => None,
            })
            .await
    }

    /// Waits for binary notification `id` to end as `expected`.
    async fn expect_outcome(&mut self, id: u32, expected: Outcome) -> Result<String, TourError> {
        let what = format!("notification {id} as {}", name(expected));
        loop {
            let (outcome, detail) = self.outcome_of(id, &what).await?;
            if outcome == expected {
                return Ok(detail);
            }
            // A notification is sent before it is acknowledged: wait on past the earlier one.
            if !(outcome == Outcome::Sent
                && matches!(expected, Outcome::Acknowledged | Outcome::NotInstalled))
            {
                return Err(TourError::Failed(format!(
                    "expected notification {id} to be {}, the hub says {} ({detail})",
                    name(expected),
                    name(outcome)
                )));
            }
        }
    }

    /// The device reads notification `id` and answers as it would: shown and acknowledged
    /// when the app is installed, "not installed" when it is not.
    async fn device_takes(&mut self, id: u32) -> Result<DeviceNotification, TourError> {
        let n = match self.device_recv().await? {
            ServerMessage::Notification(n) if u32::from_be_bytes(n.identifier) == id => n,
            other => {
                return Err(TourError::Failed(format!(
                    "the device expected notification {id}, got {other:?}"
                )))
            }
        };
        if self.installed && Some(n.token) == self.token {
            let payload = String::from_utf8_lossy(&n.payload).into_owned();
            self.n.say(
                "device",
                &format!(
                    "shows the notification for {}: {payload}, and acknowledges delivery {}.",
                    self.topic, n.delivery
                ),
            )?;
            self.device_send(DeviceMessage::Ack {
                delivery: n.delivery,
            })
            .await?;
            self.expect_outcome(id, Outcome::Acknowledged).await?;
            self.n.say(
                "hub",
                &format!("recorded notification {id} as acknowledged by {SERIAL}."),
            )?;
        } else {
            self.n.say(
                "device",
                &format!(
                    "has no app holding the token {}: it answers NotInstalled for delivery {}.",
                    short(&n.token),
                    n.delivery
                ),
            )?;
            self.device_send(DeviceMessage::NotInstalled {
                delivery: n.delivery,
            })
            .await?;
        }
        Ok(n)
    }

    /// Step 2.
    async fn push(&mut self) -> Result<(), TourError> {
        let token = self.token()?;
        let (mut provider, _) = self.connect_provider().await?;
        self.n.say(
            "provider",
            "writes one notification as a command-2 frame: items for the device token, the \
             JSON payload, an identifier of its choosing (1), an expiry an hour away and \
             priority 10 (now).",
        )?;
        let frame = self.frame(
            1,
            token.as_bytes(),
            self.expiry_in(HOUR),
            "Hello from the tour",
        );
        self.send_frames(&mut provider, &[(1, frame, true)]).await?;
        let detail = self.expect_outcome(1, Outcome::Sent).await?;
        self.n.say(
            "gateway",
            "decoded the frame and found every item well formed, then handed it to the hub.",
        )?;
        self.n.say(
            "hub",
            &format!(
                "looked the token up: it is {SERIAL}'s token for {} in {}, and the device \
                 is online, so it sent the notification down the device's connection \
                 ({detail}).",
                self.topic, ENVIRONMENT
            ),
        )?;
        self.device_takes(1).await?;
        self.n.say(
            "gateway",
            "sent the provider nothing: on the binary API success is silent, only a refusal \
             gets an answer (step 5).",
        )?;
        provider
            .shutdown()
            .await
            .map_err(|e| TourError::Failed(format!("closing the provider's connection: {e}")))?;
        self.push_http2(&token).await
    }

    /// Step 2's second half: the same kind of push over the HTTP/2 API, its frames shown,
    /// its 200 read, the device showing and acknowledging it.
    async fn push_http2(&mut self, token: &DeviceToken) -> Result<(), TourError> {
        let addr = self.sim.addrs().http2.to_string();
        self.n.say(
            "provider",
            &format!(
                "now pushes over the HTTP/2 API at {addr}, Apple's current one: TLS with ALPN \
                 h2 and the same certificate, one request per notification, each answered."
            ),
        )?;
        let mut h2 = TourH2::connect(&addr, HTTP2_SERVER_NAME, self.http2_tls.clone()).await?;
        let mut frames = H2Frames::new();
        let body = r#"{"aps":{"alert":"Hello over HTTP/2"}}"#;
        let request = Http2Request::push(&token.to_hex(), body)
            .header("apns-topic", self.topic.clone())
            .header("apns-push-type", "alert");
        self.n.say(
            "provider",
            &format!(
                "its HTTP/2 library opens the connection and sends POST {} with the headers \
                 apns-topic: {} and apns-push-type: alert, and the payload {body}.",
                request.path, self.topic
            ),
        )?;
        let response = h2.send(&request).await?;
        self.n.line(
            "\n  The bytes of that exchange, in the order they went (the plaintext inside TLS, as \
             the provider's HTTP/2 library wrote and read them): the client's preface, then \
             frames, each a 9-byte header (length, type, flags, stream id) and its payload; \
             header names and values travel HPACK-compressed, decoded field by field below.",
        )?;
        let seen = self.show_h2(&mut frames, h2.take())?;
        self.n.say("HTTP/2 API", &h2_story(&seen))?;
        if response.status != 200 {
            return Err(TourError::Failed(format!(
                "expected 200, got {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )));
        }
        let apns_id = response.apns_id.clone().unwrap_or_default();
        self.n.say(
            "HTTP/2 API",
            &format!(
                "answered 200 with apns-id {apns_id}: unlike the binary API, HTTP/2 confirms \
                 that APNs took the notification (not yet that the device has it)."
            ),
        )?;
        let detail = self
            .watch
            .until("the HTTP/2 push as sent", |e| match e {
                Event::Notification {
                    api: Api::Http2,
                    outcome: Outcome::Sent,
                    token: Some(t),
                    detail,
                    ..
                } if t == token => Some(detail.clone()),
                _ => None,
            })
            .await?;
        self.n.say(
            "hub",
            &format!(
                "routed it like the binary one: {SERIAL} is online, so it went down the \
                 device's connection ({detail})."
            ),
        )?;
        let n = match self.device_recv().await? {
            ServerMessage::Notification(n) if n.token == *token => n,
            other => {
                return Err(TourError::Failed(format!(
                    "the device expected the HTTP/2 notification, got {other:?}"
                )))
            }
        };
        self.n.say(
            "device",
            &format!(
                "shows the notification for {}: {}, and acknowledges delivery {}.",
                self.topic,
                String::from_utf8_lossy(&n.payload),
                n.delivery
            ),
        )?;
        self.device_send(DeviceMessage::Ack {
            delivery: n.delivery,
        })
        .await?;
        self.watch
            .until("the HTTP/2 push as acknowledged", |e| match e {
                Event::Notification {
                    api: Api::Http2,
                    outcome: Outcome::Acknowledged,
                    token: Some(t),
                    ..
                } if t == token => Some(()),
                _ => None,
            })
            .await?;
        self.n.say(
            "hub",
            &format!("recorded the HTTP/2 notification {apns_id} as acknowledged by {SERIAL}."),
        )?;
        self.n.say(
            "provider",
            "is done with this connection: its HTTP/2 library says GOAWAY and closes it.",
        )?;
        let closing = h2.close().await?;
        self.show_h2(&mut frames, closing)?;
        Ok(())
    }

    /// Reads the feedback service until it closes; returns its bytes.
    async fn read_feedback(&mut self) -> Result<Vec<u8>, TourError> {
        let addr = self.sim.addrs().feedback.to_string();
        self.n.say(
            "provider",
            &format!(
                "connects to the feedback service at {addr} with the same certificate, and \
                 sends nothing: the service speaks first."
            ),
        )?;
        let mut stream =
            client::connect_tls(&addr, FEEDBACK_SERVER_NAME, self.provider_tls.clone())
                .await
                .map_err(failed(
                    "the provider could not connect to the feedback service",
                ))?;
        self.watch
            .until("the feedback connection", |e| match e {
                Event::ProviderConnected {
                    endpoint: ProviderEndpoint::Feedback,
                    ..
                } => Some(()),
                _ => None,
            })
            .await?;
        let mut bytes = Vec::new();
        match tokio::time::timeout(READ_TIMEOUT, stream.read_to_end(&mut bytes)).await {
            Err(_) => {
                return Err(TourError::Failed(format!(
                    "the feedback service did not close within {READ_TIMEOUT:?}"
                )))
            }
            // A close without TLS close_notify still ends the list.
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Ok(Err(e)) => {
                return Err(TourError::Failed(format!("reading feedback: {e}")));
            }
        }
        Ok(bytes)
    }

    /// Step 3.
    async fn uninstall(&mut self) -> Result<(), TourError> {
        let token = self.token()?;
        self.installed = false;
        self.n.say(
            "device",
            &format!(
                "the user uninstalls {}. The phone forgets the app's token but tells nobody: \
                 APNs learns of it only when the next push arrives.",
                self.topic
            ),
        )?;
        let (mut provider, _) = self.connect_provider().await?;
        let frame = self.frame(2, token.as_bytes(), self.expiry_in(HOUR), "Still there?");
        self.send_frames(&mut provider, &[(2, frame, false)])
            .await?;
        self.expect_outcome(2, Outcome::Sent).await?;
        self.n.say(
            "hub",
            "the token is still valid as far as it knows: it sent notification 2 to the device.",
        )?;
        self.device_takes(2).await?;
        self.expect_outcome(2, Outcome::NotInstalled).await?;
        let gone_ms =
            self.sim.hub().unregistered_at(&token).ok_or_else(|| {
                TourError::Failed("the hub did not unregister the token".to_owned())
            })?;
        self.n.say(
            "hub",
            &format!(
                "recorded notification 2 as not installed, marked the token unregistered at \
                 {gone_ms} ms since 1970, and kept a feedback tuple for {}.",
                self.topic
            ),
        )?;
        let _ = provider.shutdown().await;

        let bytes = self.read_feedback().await?;
        self.n.bytes(
            "feedback service → provider, then it closes",
            &bytes,
            &wire::feedback(&bytes),
        )?;
        let mut buf = BytesMut::from(&bytes[..]);
        let mut tuples = Vec::new();
        while let Some(tuple) = FeedbackTuple::decode(&mut buf)
            .map_err(|e| TourError::Failed(format!("the feedback bytes do not decode: {e}")))?
        {
            tuples.push(tuple);
        }
        let tuple = tuples
            .iter()
            .find(|t| t.token == token)
            .copied()
            .ok_or_else(|| {
                TourError::Failed(format!(
                    "the feedback service did not hand over {token} ({} tuples)",
                    tuples.len()
                ))
            })?;
        self.n.say(
            "feedback service",
            &format!(
                "handed over {} tuple(s) and closed: the token {} has been gone since {} \
                 (UNIX seconds). The provider should stop using the token unless the app \
                 registered it again after that time.",
                tuples.len(),
                short(&tuple.token),
                tuple.timestamp
            ),
        )?;
        self.n
            .say("provider", "reads the feedback service a second time.")?;
        let again = self.read_feedback().await?;
        self.n.bytes(
            "feedback service → provider, then it closes",
            &again,
            &wire::feedback(&again),
        )?;
        if !again.is_empty() {
            return Err(TourError::Failed(format!(
                "the second feedback read was not empty ({} bytes)",
                again.len()
            )));
        }
        self.n.say(
            "feedback service",
            "sent nothing this time and closed: it forgets each tuple once it has handed it over.",
        )?;

        let addr = self.sim.addrs().http2.to_string();
        self.n.say(
            "provider",
            &format!(
                "tries the token once more, over the HTTP/2 API at {addr} (TLS with ALPN h2, \
                 the same certificate)."
            ),
        )?;
        let mut h2 = TourH2::connect(&addr, HTTP2_SERVER_NAME, self.http2_tls.clone()).await?;
        let mut frames = H2Frames::new();
        let body = r#"{"aps":{"alert":"Anyone?"}}"#;
        let request = Http2Request::push(&token.to_hex(), body)
            .header("apns-topic", self.topic.clone())
            .header("apns-push-type", "alert");
        self.n.say(
            "provider",
            &format!(
                "its HTTP/2 library opens the connection and sends POST {} with the headers \
                 apns-topic: {} and apns-push-type: alert, and the payload {body}.",
                request.path, self.topic
            ),
        )?;
        let response = h2.send(&request).await?;
        let answer = String::from_utf8_lossy(&response.body).into_owned();
        self.n.line(
            "\n  The bytes of that exchange, in the order they went (the plaintext inside TLS, as \
             the provider's HTTP/2 library wrote and read them): the client's preface, then \
             frames, each a 9-byte header (length, type, flags, stream id) and its payload; \
             header names and values travel HPACK-compressed, decoded field by field below.",
        )?;
        let seen = self.show_h2(&mut frames, h2.take())?;
        self.n.say("HTTP/2 API", &h2_story(&seen))?;
        self.watch
            .until("the HTTP/2 push as unregistered", |e| match e {
                Event::Notification {
                    api: Api::Http2,
                    outcome: Outcome::Unregistered,
                    token: Some(t),
                    ..
                } if *t == token => Some(()),
                _ => None,
            })
            .await?;
        if response.status != 410 || response.reason.as_deref() != Some("Unregistered") {
            return Err(TourError::Failed(format!(
                "expected 410 Unregistered, got {} {answer}",
                response.status
            )));
        }
        let Some(timestamp) = response.timestamp else {
            return Err(TourError::Failed("the 410 had no timestamp".to_owned()));
        };
        if timestamp / 1000 != u64::from(tuple.timestamp) {
            return Err(TourError::Failed(format!(
                "the 410's timestamp {timestamp} ms is not the feedback time {} s",
                tuple.timestamp
            )));
        }
        self.n.say(
            "HTTP/2 API",
            &format!(
                "answered 410 Unregistered with timestamp {timestamp}: the moment the device \
                 reported the app gone, in milliseconds; the feedback tuple said the same in \
                 seconds ({}).",
                tuple.timestamp
            ),
        )?;
        if self
            .sim
            .hub()
            .peek_feedback(&self.topic, ENVIRONMENT)
            .iter()
            .any(|t| t.token == token)
        {
            self.n.say(
                "hub",
                "listed the token for feedback again after this push to it: like Apple, a push \
                 to an app that is gone feeds the feedback service anew, so the provider hears \
                 of it on its next visit (the dashboard's Feedback panel shows it unread).",
            )?;
        }
        self.n.say(
            "provider",
            "is done with this connection: its HTTP/2 library says GOAWAY and closes it.",
        )?;
        let unrecorded = h2.unrecorded();
        let closing = h2.close().await?;
        self.show_h2(&mut frames, closing)?;
        if unrecorded > 0 {
            self.n.line(&format!(
                "  ({unrecorded} more bytes went by without being recorded.)"
            ))?;
        }
        self.n.say(
            "device",
            &format!(
                "the user installs {} again. The device registers it as a fresh install.",
                self.topic
            ),
        )?;
        let fresh = self.register().await?;
        self.n.say(
            "device",
            &format!("handed the new token {} to the app server.", short(&fresh)),
        )
    }

    /// The device leaves; the hub notices.
    async fn device_leaves(&mut self) -> Result<(), TourError> {
        self.n.say(
            "device",
            &format!("{SERIAL} loses its network: its connection closes."),
        )?;
        if let Some(device) = self.device.take() {
            device.close().await?;
        }
        self.watch
            .until("the device going offline", |e| match e {
                Event::DeviceOffline { serial, .. } if serial == SERIAL => Some(()),
                _ => None,
            })
            .await?;
        self.n.say(
            "hub",
            "saw the session end: from now on a notification for the device is stored, one \
             per app (the newest), until it comes back or the notification expires.",
        )
    }

    /// One notification over a fresh provider connection, waiting for its outcome.
    async fn push_one(
        &mut self,
        id: u32,
        expiry: u32,
        text: &str,
        expected: Outcome,
    ) -> Result<(), TourError> {
        let token = self.token()?;
        let (mut provider, _) = self.connect_provider().await?;
        let frame = self.frame(id, token.as_bytes(), expiry, text);
        self.send_frames(&mut provider, &[(id, frame, false)])
            .await?;
        let detail = self.expect_outcome(id, expected).await?;
        let _ = provider.shutdown().await;
        let said = match expected {
            Outcome::Stored => {
                format!("stored notification {id} (expiry {expiry}) for the device: {detail}.")
            }
            Outcome::Discarded => format!(
                "discarded notification {id}: expiry 0 means now or never, and the device is \
                 away ({detail}). What it had stored stays."
            ),
            other => format!("recorded notification {id} as {}: {detail}.", name(other)),
        };
        self.n.say("hub", &said)
    }

    /// Step 4.
    async fn offline(&mut self) -> Result<(), TourError> {
        self.device_leaves().await?;
        self.push_one(10, self.expiry_in(HOUR), "Kept for later", Outcome::Stored)
            .await?;
        self.push_one(11, 0, "Now or never", Outcome::Discarded)
            .await?;
        self.n
            .say("device", &format!("{SERIAL} is back on the network."))?;
        self.connect_device().await?;
        self.device_takes(10).await?;
        self.n.say(
            "hub",
            "delivered the stored notification 10 as soon as the device was back; 11 is gone.",
        )?;

        self.n
            .line("\nNow a stored notification whose expiry passes while the device is away.")?;
        self.device_leaves().await?;
        let expiry = self.expiry_in(SHORT_EXPIRY);
        self.push_one(12, expiry, "Only for a minute", Outcome::Stored)
            .await?;
        self.clock.advance(CLOCK_MOVE);
        self.n.say(
            "clock",
            &format!(
                "the tour moves the simulator's clock {} seconds forward (the clock every \
                 expiry is judged by): notification 12's expiry ({expiry}) is now past.",
                CLOCK_MOVE.as_secs()
            ),
        )?;
        self.n
            .say("device", &format!("{SERIAL} is back on the network."))?;
        self.connect_device().await?;
        let detail = self.expect_outcome(12, Outcome::Expired).await?;
        self.n.say(
            "hub",
            &format!(
                "found notification 12 expired when the device came back, and dropped it \
                 without delivering it ({detail})."
            ),
        )
    }

    /// Step 5.
    async fn error_response(&mut self) -> Result<(), TourError> {
        let token = self.token()?;
        let (mut provider, connection) = self.connect_provider().await?;
        self.n.say(
            "provider",
            "writes four notifications in one go: 20 is fine, 21 has a device token of 31 \
             bytes instead of 32, 22 and 23 are fine.",
        )?;
        let expiry = self.expiry_in(HOUR);
        let short_token = token.as_bytes().get(1..).unwrap_or_default();
        let frames = [
            (
                20,
                self.frame(20, token.as_bytes(), expiry, "First of four"),
                false,
            ),
            (21, self.frame(21, short_token, expiry, "Broken"), true),
            (
                22,
                self.frame(22, token.as_bytes(), expiry, "Third of four"),
                false,
            ),
            (
                23,
                self.frame(23, token.as_bytes(), expiry, "Fourth of four"),
                false,
            ),
        ];
        self.send_frames(&mut provider, &frames).await?;
        self.expect_outcome(20, Outcome::Sent).await?;
        self.n.say(
            "gateway",
            "accepted notification 20 and handed it to the hub, which sent it to the device.",
        )?;
        self.device_takes(20).await?;
        let detail = self.expect_outcome(21, Outcome::Rejected).await?;
        self.n.say(
            "gateway",
            &format!("refused notification 21: {detail}. It answers with an error response."),
        )?;

        let mut bytes = Vec::new();
        let mut chunk = [0u8; 64];
        let read_response = async {
            loop {
                match provider.read(&mut chunk).await {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        if ErrorResponse::decode(&bytes)
                            .map_err(|e| format!("not an error response: {e}"))?
                            .is_some()
                        {
                            return Ok::<_, String>(true);
                        }
                    }
                    Err(e) => return Err(format!("reading the gateway: {e}")),
                }
            }
        };
        let got = tokio::time::timeout(READ_TIMEOUT, read_response)
            .await
            .map_err(|_| TourError::Failed(format!("no error response within {READ_TIMEOUT:?}")))?
            .map_err(TourError::Failed)?;
        let response = match ErrorResponse::decode(&bytes) {
            Ok(Some((response, _))) if got => response,
            _ => {
                return Err(TourError::Failed(format!(
                    "the gateway closed without an error response ({} bytes)",
                    bytes.len()
                )))
            }
        };
        self.n.bytes(
            "gateway → provider: error response",
            &bytes,
            &wire::error_response(&bytes),
        )?;
        let identifier = u32::from_be_bytes(response.identifier);
        if identifier != 21 {
            return Err(TourError::Failed(format!(
                "the error response names {identifier}, not 21"
            )));
        }
        self.n.say(
            "gateway",
            &format!(
                "status {} ({}) names notification {identifier}: the first one it refused.",
                response.status.code(),
                response.status.description()
            ),
        )?;

        let mut rest = Vec::new();
        match tokio::time::timeout(READ_TIMEOUT, provider.read_to_end(&mut rest)).await {
            Err(_) => {
                return Err(TourError::Failed(format!(
                    "the gateway did not close within {READ_TIMEOUT:?} of its error response"
                )))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Ok(Err(e)) => return Err(TourError::Failed(format!("reading the gateway: {e}"))),
        }
        self.watch
            .until("the provider's disconnection", |e| match e {
                Event::ProviderDisconnected {
                    connection: c,
                    endpoint: ProviderEndpoint::Gateway,
                    ..
                } if *c == connection => Some(()),
                _ => None,
            })
            .await?;
        let seen: Vec<u32> = self
            .sim
            .hub()
            .recent_events()
            .iter()
            .filter_map(|e| match e {
                Event::Notification {
                    identifier,
                    api: Api::Binary,
                    ..
                } if (22..=23).contains(identifier) => Some(*identifier),
                _ => None,
            })
            .collect();
        if !seen.is_empty() {
            return Err(TourError::Failed(format!(
                "the hub has records of {seen:?}, which should have been discarded"
            )));
        }
        self.n.say(
            "gateway",
            &format!(
                "closed the connection. Notifications 22 and 23 were discarded unread: the hub \
                 has no record of them, and the device never saw them{}. A provider resends \
                 everything after the identifier in the error response, on a new connection.",
                if rest.is_empty() {
                    String::new()
                } else {
                    format!(" ({} more bytes came before the close)", rest.len())
                }
            ),
        )
    }
}
