//! The legacy binary provider API (Apple's `gateway.push.apple.com:2195`).
//!
//! One task per provider connection:
//!
//! 1. the accept loop ([`crate::server`]) has completed mutual TLS; the provider certificate
//!    gives the topic (its bundle id) and, with the TLS server name, the environment;
//! 2. frames are decoded one by one from the read buffer (commands 0, 1, 2);
//! 3. the valid notifications of one read go to the hub together ([`Hub::push_batch`], one
//!    lock for all of them), which checks each token and routes it; success is silent, as
//!    on Apple's gateway;
//! 4. the first bad notification gets the 6-byte error response (command 8, status, its
//!    identifier); the connection then closes and everything written after it is discarded.
//!    A bad command-0 notification gets no error response: Apple's simple format has none,
//!    and the connection was just dropped (spec §1.2, §1.7). An unknown command byte gets a
//!    silent close too (TN2265), or status 128 if [`Settings::unknown_command`] says so;
//! 5. on shutdown the provider gets status 10 (Shutdown) with the identifier of the last
//!    notification accepted, then the connection closes.
//!
//! Every refusal is logged at info level with its cause in words, the answer given, and
//! the connection's identity (peer, topic, environment): the wire says as little as
//! Apple's did, the log says everything.
//!
//! Each connection is numbered by the hub (`provider_connected`, through `provider::Connected`). A fault on
//! `binary` (`POST /v1/faults`) is looked up for each decoded notification: `error` refuses
//! it with that status exactly as in step 4, `close` takes it and then closes without a byte,
//! `delay_ms` waits before taking it (and so before reading on).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::connection::{Connection, ReadError, TimedReadError};
use crate::hub::{
    Api, Effect, FaultOn, Hub, Phase, Probe, ProviderEndpoint, PushError, PushRequest,
};
use crate::protocol::error_response::{ErrorResponse, Status};
use crate::protocol::notification::{self, Command, Notification, RejectReason};
use crate::server::accept::{self, Endpoint, Transport};
use crate::server::provider::{identify, Connected, IdentifyError, Provider};
use crate::settings::{Settings, UnknownCommand};

/// Most bytes read and thrown away after an error response before the socket is closed.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Initial read buffer of a provider connection: a busy provider sends notifications back to
/// back, and each read that fills a larger buffer takes more of them from the TLS stream in
/// one go (a TLS record is up to 16 KiB). Provider connections are few
/// ([`Settings::max_provider_connections`]), so their buffers cost little memory.
const PROVIDER_READ_BUFFER: usize = 64 * 1024;

/// Serves the binary gateway on `listener` until `endpoint.shutdown` fires.
pub async fn run(listener: TcpListener, endpoint: Endpoint, hub: Hub, settings: Arc<Settings>) {
    let shutdown = endpoint.shutdown.clone();
    // Every gateway peer presented a certificate (the TLS configuration requires one), so
    // the admission has nothing more to learn: it is authenticated from the start.
    accept::serve(listener, endpoint, move |stream, peer, _admission| {
        // Out of its box here, outside the future, so that the box is freed now.
        let stream = *stream;
        let hub = hub.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        async move { handle(stream, peer, hub, settings, shutdown).await }
    })
    .await;
}

async fn handle(
    stream: TlsStream<Transport>,
    peer: SocketAddr,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let provider = identify(stream.get_ref().1, &settings);
    let mut conn = Connection::with_capacity(stream, PROVIDER_READ_BUFFER);
    let identity = match &provider {
        Ok(p) => p.topic.to_string(),
        Err(IdentifyError::NoCertificate) => "no certificate".to_owned(),
        Err(_) => "unreadable certificate".to_owned(),
    };
    // Logs `provider_connected` now and `provider_disconnected` on every way out.
    let connected = Connected::new(&hub, ProviderEndpoint::Gateway, peer, identity);
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            let status = reason.status();
            warn!(%peer, %reason, %status, "provider certificate refused: error response, then close");
            refuse(&mut conn, status, [0; 4], &settings).await;
            return;
        }
    };
    info!(topic = %provider.topic, environment = %provider.environment, connection = connected.id, "provider connected");
    let ctx = Ctx {
        peer,
        provider: &provider,
        connection: connected.id,
        hub: &hub,
        settings: &settings,
        shutdown: &shutdown,
    };
    serve_provider(&mut conn, &ctx).await;
}

/// What the gateway sends back for a refused notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The 6-byte error response, then close.
    Status(Status),
    /// Close without a byte (command 0; an unknown command byte under TN2265).
    Close,
}

/// The answer to a notification refused with `status`: `command` is the format it came
/// in (`None`: the command byte was unknown).
fn answer(command: Option<Command>, status: Status, settings: &Settings) -> Answer {
    match command {
        Some(Command::Simple) => Answer::Close,
        Some(Command::Enhanced | Command::Frame) => Answer::Status(status),
        None => match settings.unknown_command {
            UnknownCommand::Close => Answer::Close,
            UnknownCommand::ProtocolError => Answer::Status(status),
        },
    }
}

/// What a provider connection's loop works with.
pub(crate) struct Ctx<'a> {
    /// The provider's address.
    pub(crate) peer: SocketAddr,
    /// Its topic and environment.
    pub(crate) provider: &'a Provider,
    /// The connection's number (faults match it).
    pub(crate) connection: u64,
    /// The routing core.
    pub(crate) hub: &'a Hub,
    /// The simulator's settings.
    pub(crate) settings: &'a Settings,
    /// The simulator's shutdown.
    pub(crate) shutdown: &'a tokio_util::sync::CancellationToken,
}

/// The per-connection loop, generic over the stream so the tests below drive it over `duplex`.
///
/// Each read's worth of notifications is routed in one step ([`Hub::push_batch`]): the
/// first one read and every whole one already buffered behind it, up to [`MAX_BATCH`].
/// The binary API's rule holds across the batch: the notifications before the first bad
/// one are delivered, that one is answered, and the rest are discarded unrouted.
pub(crate) async fn serve_provider<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    ctx: &Ctx<'_>,
) {
    let Ctx {
        peer,
        provider,
        connection,
        hub,
        settings,
        shutdown,
    } = *ctx;
    // Identifier of the last notification accepted, for status 10 on shutdown.
    let mut last_accepted = [0u8; 4];
    // The first complete notification is due within the first-request deadline; after it,
    // the idle clock runs from the last complete one (a begun frame has its own deadline).
    let mut idle_deadline = tokio::time::Instant::now()
        + settings
            .first_request_timeout
            .min(settings.provider_idle_timeout);
    let mut first = true;
    let legacy_max = settings.legacy_payload_max();
    let decode = |buf: &mut BytesMut| decode(buf, legacy_max);
    // The shutdown signal, armed once for the connection rather than once per notification
    // (arming and dropping it locks the shutdown token's list of waiters, shared by every
    // connection). The loop reads buffered notifications first (`biased`) and checks the flag
    // before each read, so a steady stream of them cannot hide a shutdown.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        if shutdown.is_cancelled() {
            info!(
                last = u32::from_be_bytes(last_accepted),
                "shutdown: status 10"
            );
            refuse(conn, Status::Shutdown, last_accepted, settings).await;
            return;
        }
        let frame = tokio::select! {
            biased;
            r = conn.read_frame_within(decode, idle_deadline, settings.frame_timeout) => r,
            () = &mut cancelled => {
                info!(last = u32::from_be_bytes(last_accepted), "shutdown: status 10");
                refuse(conn, Status::Shutdown, last_accepted, settings).await;
                return;
            }
        };
        let read = match frame {
            Err(TimedReadError::Idle) => {
                if first && settings.first_request_timeout < settings.provider_idle_timeout {
                    info!(%peer, deadline = ?settings.first_request_timeout, "no notification within the first-request deadline: closing");
                } else {
                    debug!("idle timeout: closing");
                }
                let _ = conn.shutdown().await;
                return;
            }
            Err(TimedReadError::Stalled { buffered, after }) => {
                info!(%peer, buffered, deadline = ?after, "a notification begun was not complete within the frame deadline: closing");
                let _ = conn.shutdown().await;
                return;
            }
            Ok(None) => {
                debug!("provider closed the connection");
                return;
            }
            Err(TimedReadError::Read(ReadError::Decode(bad))) => {
                refuse_undecodable(conn, ctx, bad).await;
                return;
            }
            Err(err) => {
                debug!(%err, "connection ended");
                return;
            }
            Ok(Some(read)) => read,
        };
        first = false;
        idle_deadline = tokio::time::Instant::now() + settings.provider_idle_timeout;
        // This notification and every whole one already buffered behind it, routed together.
        let mut batch = Batch::default();
        let mut next = Some(read);
        let mut undecodable = None;
        while let Some((n, frame)) = next.take() {
            let identifier = n.identifier;
            let command = n.command;
            let hit = hub.fault(&Probe {
                on: FaultOn::Binary,
                phase: Phase::Notification,
                token: Some(&n.token),
                topic: Some(&provider.topic),
                connection: Some(connection),
                serial: None,
            });
            let mut request = request(n, frame, provider);
            if let Some(hit) = hit {
                // A fault acts on this notification alone: those before it are routed first,
                // so they are delivered whatever it does.
                if !route(conn, ctx, &mut batch, &mut last_accepted).await {
                    return;
                }
                request.fault = Some(hit.id.clone());
                match hit.effect {
                    Effect::Error(code) => {
                        // Apple's answer to a notification it failed: the error response
                        // (none for command 0), close, the rest discarded.
                        let status = Status::from_code(code).unwrap_or(Status::Unknown);
                        let detail = format!("fault {}: error response status {status}", hit.id);
                        hub.record_faulted(
                            Api::Binary,
                            &provider.topic,
                            identifier,
                            request.apns_id,
                            Some(request.token),
                            detail.clone(),
                            &hit.id,
                        );
                        let answer = answer(Some(command), status, settings);
                        let refused = Refused {
                            peer,
                            provider,
                            command: Some(command),
                        };
                        refused.log(identifier, answer, &detail);
                        send(conn, answer, identifier, settings).await;
                        return;
                    }
                    Effect::Delay(ms) => {
                        tokio::select! {
                            () = &mut cancelled => {
                                info!(last = u32::from_be_bytes(last_accepted), "shutdown: status 10");
                                refuse(conn, Status::Shutdown, last_accepted, settings).await;
                                return;
                            }
                            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        }
                    }
                    Effect::Close => {
                        batch.push(request, identifier, command);
                        if !route(conn, ctx, &mut batch, &mut last_accepted).await {
                            return;
                        }
                        info!(fault = %hit.id, id = u32::from_be_bytes(identifier), "fault: notification taken, then the connection closed");
                        let _ = conn.shutdown().await;
                        linger(conn, settings.linger).await;
                        return;
                    }
                    _ => {}
                }
            }
            batch.push(request, identifier, command);
            if batch.requests.len() >= MAX_BATCH {
                break;
            }
            next = match conn.buffered_frame(decode) {
                Ok(more) => more,
                Err(bad) => {
                    undecodable = Some(bad);
                    None
                }
            };
        }
        if !route(conn, ctx, &mut batch, &mut last_accepted).await {
            return;
        }
        if let Some(bad) = undecodable {
            // The notifications before it were delivered; it is answered, the rest discarded.
            refuse_undecodable(conn, ctx, bad).await;
            return;
        }
    }
}

/// The most notifications of one read routed in one step. A 64 KiB read holds up to about
/// 1,400 of the smallest; 256 takes nearly all of the hub's per-notification lock traffic
/// out while keeping each critical section short, so that device sessions acknowledging
/// meanwhile wait for a bounded time.
const MAX_BATCH: usize = 256;

/// The notifications of one read waiting to be routed together, with what their answers
/// need: the identifier and the format (command) of each.
#[derive(Debug, Default)]
struct Batch {
    /// The hub's requests, in the order they were read.
    requests: Vec<PushRequest>,
    /// The identifier and command of each request, in the same order.
    heads: Vec<([u8; 4], Command)>,
}

impl Batch {
    fn push(&mut self, request: PushRequest, identifier: [u8; 4], command: Command) {
        self.requests.push(request);
        self.heads.push((identifier, command));
    }
}

/// Routes `batch` (emptying it) in one step. True when the connection reads on; false when
/// one was refused with an error response or close, which has been sent: those after it
/// were discarded, those before it delivered.
async fn route<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    ctx: &Ctx<'_>,
    batch: &mut Batch,
    last_accepted: &mut [u8; 4],
) -> bool {
    let Batch { requests, heads } = std::mem::take(batch);
    let stopped = match ctx.hub.push_batch(requests, |e| push_status(e).is_some()) {
        Ok(()) => {
            if let Some((identifier, _)) = heads.last() {
                *last_accepted = *identifier;
            }
            return true;
        }
        Err(stopped) => stopped,
    };
    let (at, error) = stopped;
    if let Some((identifier, _)) = at.checked_sub(1).and_then(|before| heads.get(before)) {
        *last_accepted = *identifier;
    }
    let Some(&(identifier, command)) = heads.get(at) else {
        return true;
    };
    // `push_batch` stops only where `push_status` gives a status.
    let status = push_status(&error).unwrap_or(Status::Unknown);
    let refused = Refused {
        peer: ctx.peer,
        provider: ctx.provider,
        command: Some(command),
    };
    let answer = answer(Some(command), status, ctx.settings);
    refused.log(identifier, answer, &error.to_string());
    send(conn, answer, identifier, ctx.settings).await;
    false
}

/// A command the decoder refused, with what its answer and the delivery log need.
#[derive(Debug, thiserror::Error)]
#[error("{rejection}")]
struct Undecodable {
    /// Why, its status and identifier.
    rejection: notification::Rejection,
    /// The command byte it began with (its format), if any had arrived.
    command_byte: Option<u8>,
    /// What had arrived of its bytes, at most [`crate::hub::MAX_REFUSED_FRAME`], in their
    /// own allocation, for the delivery log.
    bytes: Bytes,
}

/// Decodes the notification at the front of `buf`, with its bytes as received.
fn decode(
    buf: &mut BytesMut,
    legacy_max: usize,
) -> Result<Option<(Notification, Bytes)>, Undecodable> {
    let command_byte = buf.first().copied();
    notification::decode_with_frame(buf, legacy_max).map_err(|rejection| {
        let kept = buf.get(..crate::hub::MAX_REFUSED_FRAME).unwrap_or(buf);
        Undecodable {
            rejection,
            command_byte,
            bytes: Bytes::copy_from_slice(kept),
        }
    })
}

/// Records, logs and answers a command that did not decode; the connection then closes.
async fn refuse_undecodable<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    ctx: &Ctx<'_>,
    bad: Undecodable,
) {
    let Undecodable {
        rejection,
        command_byte,
        bytes,
    } = bad;
    let reason = rejection.reason.to_string();
    ctx.hub.record_refused_frame(
        &ctx.provider.topic,
        rejection.identifier,
        Uuid::new_v4(),
        reason.clone(),
        bytes,
    );
    let command = match rejection.reason {
        RejectReason::UnknownCommand(_) => None,
        _ => command_byte.and_then(Command::from_code),
    };
    let refused = Refused {
        peer: ctx.peer,
        provider: ctx.provider,
        command,
    };
    let answer = answer(command, rejection.status, ctx.settings);
    refused.log(rejection.identifier, answer, &reason);
    send(conn, answer, rejection.identifier, ctx.settings).await;
}

/// Who a refusal is about, for its log line.
#[derive(Debug, Clone, Copy)]
struct Refused<'a> {
    /// The provider's address.
    peer: SocketAddr,
    /// Its certificate's topic and the connection's environment.
    provider: &'a Provider,
    /// The refused notification's format (`None`: unknown command byte).
    command: Option<Command>,
}

impl Refused<'_> {
    /// The one info line of a refusal: cause, answer and the connection's identity.
    fn log(&self, identifier: [u8; 4], answer: Answer, reason: &str) {
        let command = self
            .command
            .map_or_else(|| "unknown".to_owned(), |c| c.code().to_string());
        let answer = match answer {
            Answer::Status(status) => format!("error response status {status}, then close"),
            Answer::Close if self.command == Some(Command::Simple) => {
                "closed without a response (command 0 has no error response)".to_owned()
            }
            Answer::Close => "closed without a response (unknown command byte, TN2265)".to_owned(),
        };
        info!(
            peer = %self.peer,
            topic = %self.provider.topic,
            environment = %self.provider.environment,
            %command,
            id = u32::from_be_bytes(identifier),
            %answer,
            %reason,
            "binary notification refused"
        );
    }
}

/// Sends `answer`: the error response and a close, or the close alone. Either way the
/// close is graceful and what the provider still sends is drained first (see [`refuse`]).
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    answer: Answer,
    identifier: [u8; 4],
    settings: &Settings,
) {
    match answer {
        Answer::Status(status) => refuse(conn, status, identifier, settings).await,
        Answer::Close => {
            let _ = conn.shutdown().await;
            linger(conn, settings.linger).await;
        }
    }
}

/// The binary API's answer to a notification the hub refused: `None` when the binary API
/// accepts it silently.
fn push_status(error: &PushError) -> Option<Status> {
    match error {
        PushError::UnknownToken
        | PushError::WrongEnvironment { .. }
        | PushError::WrongTopic { .. } => Some(Status::InvalidToken),
        // An uninstalled app is not an error on the binary API: Apple accepted the
        // notification and reported the token through the feedback service. Throttling was
        // silent too (the hub logs it as throttled).
        PushError::Unregistered { .. } | PushError::TooManyRequests { .. } => None,
    }
}

/// The hub's request for a decoded notification; `frame` is its bytes as received.
fn request(n: Notification, frame: Bytes, provider: &Provider) -> PushRequest {
    PushRequest {
        api: Api::Binary,
        token: n.token,
        topic: Arc::clone(&provider.topic),
        environment: provider.environment,
        identifier: n.identifier,
        apns_id: Uuid::new_v4(),
        expiry: n.expiry,
        priority: n.priority,
        push_type: None,
        collapse_id: None,
        payload: Bytes::clone(&n.payload),
        frame: Some(frame),
        fault: None,
    }
}

/// Writes an error response, closes the write side, then reads and discards whatever the
/// provider still sends (bounded in time and bytes) so the close is a FIN and not an RST
/// that could destroy the 6 bytes in flight.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    status: Status,
    identifier: [u8; 4],
    settings: &Settings,
) {
    let response = ErrorResponse { status, identifier }.encode();
    if conn.write_all(&response).await.is_err() {
        return;
    }
    let _ = conn.shutdown().await;
    linger(conn, settings.linger).await;
}

async fn linger<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>, limit: Duration) {
    let drain = async {
        let mut discarded = 0usize;
        let mut sink = [0u8; 16 * 1024];
        let stream = conn.get_mut();
        while discarded < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use crate::clock::Clock;
    use crate::hub::DeviceSession;
    use crate::protocol::token::DeviceToken;
    use crate::protocol::Environment;
    use crate::server::accept::log_capture::Capture;

    /// Generous: a healthy test never waits this long.
    const TIMEOUT: Duration = Duration::from_secs(30);
    const TOPIC: &str = "com.example.app";
    const PAYLOAD: &str = r#"{"aps":{"alert":"hi"}}"#;

    fn frame(token: &[u8], id: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        notification::encode_frame_raw(
            token,
            PAYLOAD.as_bytes(),
            id.to_be_bytes(),
            0,
            10,
            &mut out,
        );
        out.to_vec()
    }

    /// A hub with one online device holding a token for [`TOPIC`], and a provider connection
    /// served over an 8-byte pipe, so every frame crosses it in pieces.
    struct Rig {
        session: DeviceSession,
        token: DeviceToken,
        provider: DuplexStream,
        shutdown: CancellationToken,
        served: tokio::task::JoinHandle<()>,
    }

    fn rig() -> Rig {
        rig_with(Settings {
            linger: Duration::from_secs(5),
            ..Settings::default()
        })
    }

    fn rig_with(settings: Settings) -> Rig {
        rig_on(settings, 8)
    }

    /// [`rig_with`] over a pipe of `pipe` bytes: a wide one lets many frames arrive in one
    /// read, which the gateway routes in one step.
    fn rig_on(settings: Settings, pipe: usize) -> Rig {
        let hub = Hub::new(Clock::system());
        let session = hub.connect_device("DUPLEX-1", Environment::Sandbox);
        let token = hub
            .register("DUPLEX-1", Environment::Sandbox, TOPIC, false)
            .unwrap();
        let (provider, server) = tokio::io::duplex(pipe);
        let shutdown = CancellationToken::new();
        let served = {
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            let provider = Provider {
                topic: TOPIC.into(),
                environment: Environment::Sandbox,
            };
            tokio::spawn(async move {
                let mut conn = Connection::new(server);
                let ctx = Ctx {
                    peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                    provider: &provider,
                    connection: 1,
                    hub: &hub,
                    settings: &settings,
                    shutdown: &shutdown,
                };
                serve_provider(&mut conn, &ctx).await;
            })
        };
        Rig {
            session,
            token,
            provider,
            shutdown,
            served,
        }
    }

    impl Rig {
        /// The binary identifier of the next notification the device session receives.
        async fn delivered(&mut self) -> u32 {
            let n = tokio::time::timeout(TIMEOUT, self.session.rx.recv())
                .await
                .expect("delivered in time")
                .expect("session open");
            u32::from_be_bytes(n.to_message().identifier)
        }

        /// Reads the error response, then expects the server to close its side.
        async fn error_response(&mut self) -> [u8; 6] {
            let mut answer = [0u8; 6];
            let mut rest = Vec::new();
            let read = async {
                self.provider.read_exact(&mut answer).await.unwrap();
                self.provider.read_to_end(&mut rest).await.unwrap();
            };
            tokio::time::timeout(TIMEOUT, read)
                .await
                .expect("answered in time");
            assert!(rest.is_empty(), "bytes after the error response: {rest:?}");
            answer
        }

        /// Expects the server to close without writing a byte.
        async fn closed_silently(&mut self) {
            let mut rest = Vec::new();
            tokio::time::timeout(TIMEOUT, self.provider.read_to_end(&mut rest))
                .await
                .expect("closed in time")
                .unwrap();
            assert!(rest.is_empty(), "bytes before the close: {rest:?}");
        }
    }

    fn simple(token: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        notification::encode_simple_raw(token, PAYLOAD.as_bytes(), &mut out);
        out.to_vec()
    }

    /// What every refusal line names: the connection's identity.
    const IDENTITY: [&str; 4] = [
        "binary notification refused",
        "peer=127.0.0.1:1",
        "topic=com.example.app",
        "environment=sandbox",
    ];

    #[tokio::test]
    async fn a_bad_command_0_notification_gets_a_close_and_no_bytes_and_the_log_says_why() {
        let mut log = Capture::install();
        let mut rig = rig();
        rig.provider.write_all(&simple(&[1; 31])).await.unwrap();
        rig.closed_silently().await;
        let line = log
            .line_with(&[&IDENTITY[..], &["command=0", "device token is 31 bytes"]].concat())
            .await;
        assert!(
            line.contains("closed without a response (command 0"),
            "{line}"
        );
        assert!(line.contains(" INFO "), "{line}");
    }

    #[tokio::test]
    async fn a_command_0_notification_to_an_unknown_token_gets_a_close_too() {
        let mut log = Capture::install();
        let mut rig = rig();
        rig.provider.write_all(&simple(&[7; 32])).await.unwrap();
        rig.closed_silently().await;
        log.line_with(&[&IDENTITY[..], &["command=0", "unknown device token"]].concat())
            .await;
    }

    #[tokio::test]
    async fn an_unknown_command_byte_is_closed_silently_or_answered_128_as_set() {
        let mut log = Capture::install();
        let mut rig = rig();
        rig.provider.write_all(&[9, 0, 0, 0, 0]).await.unwrap();
        rig.closed_silently().await;
        let line = log
            .line_with(
                &[
                    &IDENTITY[..],
                    &["command=unknown", "unknown command byte 9"],
                ]
                .concat(),
            )
            .await;
        assert!(line.contains("TN2265"), "{line}");

        let mut rig = rig_with(Settings {
            unknown_command: UnknownCommand::ProtocolError,
            ..Settings::default()
        });
        rig.provider.write_all(&[9, 0, 0, 0, 0]).await.unwrap();
        assert_eq!(
            rig.error_response().await,
            [
                0x08, // command 8
                0x80, // status 128, Protocol error
                0x00, 0x00, 0x00, 0x00, // identifier 0
            ]
        );
        log.line_with(
            &[
                &IDENTITY[..],
                &["error response status 128", "unknown command byte 9"],
            ]
            .concat(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_refusal_with_a_status_is_logged_with_it() {
        let mut log = Capture::install();
        let mut rig = rig();
        rig.provider.write_all(&frame(&[7; 32], 5)).await.unwrap();
        assert_eq!(rig.error_response().await[1], 8);
        let line = log
            .line_with(
                &[
                    &IDENTITY[..],
                    &["command=2", "id=5", "error response status 8"],
                ]
                .concat(),
            )
            .await;
        assert!(line.contains("unknown device token"), "{line}");
    }

    #[tokio::test]
    async fn frames_across_a_tiny_pipe_are_routed_and_the_first_bad_one_answered() {
        let mut rig = rig();
        let good = rig.token;
        let bytes = [
            frame(good.as_bytes(), 1),
            frame(good.as_bytes(), 2),
            frame(&[7; 32], 3),        // a token no device holds: status 8
            frame(good.as_bytes(), 4), // after the error: discarded
        ]
        .concat();
        rig.provider.write_all(&bytes).await.unwrap();
        assert_eq!(rig.delivered().await, 1);
        assert_eq!(rig.delivered().await, 2);
        assert_eq!(
            rig.error_response().await,
            [
                0x08, // command 8
                0x08, // status 8, Invalid token
                0x00, 0x00, 0x00, 0x03, // identifier 3
            ]
        );
        drop(rig.provider);
        tokio::time::timeout(TIMEOUT, rig.served)
            .await
            .expect("connection task ends")
            .unwrap();
        assert!(rig.session.rx.try_recv().is_err(), "frame 4 was discarded");
    }

    #[tokio::test]
    async fn frames_read_together_are_routed_together_until_the_first_bad_one() {
        // One write into a wide pipe: the gateway reads these frames in one go, so they are
        // routed as one batch, and the binary API's rule must hold inside it.
        let mut rig = rig_on(Settings::default(), 64 * 1024);
        let good = rig.token;
        let mut bytes: Vec<u8> = (1..=50).flat_map(|id| frame(good.as_bytes(), id)).collect();
        bytes.extend(frame(&[7; 32], 51)); // a token no device holds: status 8
        bytes.extend((52..=60).flat_map(|id| frame(good.as_bytes(), id))); // discarded
        rig.provider.write_all(&bytes).await.unwrap();
        for id in 1..=50 {
            assert_eq!(rig.delivered().await, id);
        }
        assert_eq!(
            rig.error_response().await,
            [0x08, 0x08, 0x00, 0x00, 0x00, 51],
            "status 8 for identifier 51"
        );
        drop(rig.provider);
        tokio::time::timeout(TIMEOUT, rig.served)
            .await
            .expect("connection task ends")
            .unwrap();
        assert!(
            rig.session.rx.try_recv().is_err(),
            "nothing after the refused frame was delivered"
        );
    }

    #[tokio::test]
    async fn a_frame_that_does_not_decode_ends_a_read_after_those_before_it_are_delivered() {
        let mut rig = rig_on(Settings::default(), 64 * 1024);
        let good = rig.token;
        let mut bytes: Vec<u8> = (1..=3).flat_map(|id| frame(good.as_bytes(), id)).collect();
        bytes.extend(frame(&[1; 5], 4)); // a 5-byte token: status 5 before the hub sees it
        bytes.extend(frame(good.as_bytes(), 5)); // discarded
        rig.provider.write_all(&bytes).await.unwrap();
        for id in 1..=3 {
            assert_eq!(rig.delivered().await, id);
        }
        assert_eq!(
            rig.error_response().await,
            [0x08, 0x05, 0x00, 0x00, 0x00, 0x04],
            "status 5 for identifier 4"
        );
        drop(rig.provider);
        tokio::time::timeout(TIMEOUT, rig.served)
            .await
            .expect("connection task ends")
            .unwrap();
        assert!(rig.session.rx.try_recv().is_err(), "frame 5 was discarded");
    }

    #[tokio::test]
    async fn shutdown_over_a_tiny_pipe_names_the_last_accepted_identifier() {
        let mut rig = rig();
        let good = rig.token;
        rig.provider
            .write_all(&frame(good.as_bytes(), 0x0102_0304))
            .await
            .unwrap();
        assert_eq!(rig.delivered().await, 0x0102_0304);
        rig.shutdown.cancel();
        assert_eq!(
            rig.error_response().await,
            [
                0x08, // command 8
                0x0A, // status 10, Shutdown
                0x01, 0x02, 0x03, 0x04, // the last accepted identifier
            ]
        );
    }

    #[test]
    fn push_errors_map_to_binary_statuses() {
        let cases = [
            (PushError::UnknownToken, Some(Status::InvalidToken)),
            (
                PushError::WrongEnvironment {
                    token: Environment::Production,
                    connection: Environment::Sandbox,
                },
                Some(Status::InvalidToken),
            ),
            (
                PushError::WrongTopic {
                    token_app: "com.example.other".into(),
                    topic: TOPIC.into(),
                },
                Some(Status::InvalidToken),
            ),
            (PushError::Unregistered { at_ms: 1 }, None),
            (
                PushError::TooManyRequests {
                    pushes: 1,
                    per_secs: 60,
                },
                None,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(push_status(&error), status, "{error}");
        }
    }
}
