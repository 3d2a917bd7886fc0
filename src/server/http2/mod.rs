//! The HTTP/2 provider API (Apple's `api.push.apple.com`, port 443 or 2197), served with the
//! `h2` crate directly (not hyper) for connection-level control.
//!
//! # One connection
//!
//! 1. The accept loop ([`crate::server`]) completes TLS. The certificate is optional: a client
//!    that presents one uses certificate auth, one that presents none uses provider tokens.
//!    ALPN `h2` or no ALPN at all (HTTP/2 with prior knowledge) are both served.
//! 2. Certificate auth: topics come from the certificate (UID and the …6.3.6 list), the
//!    environment from the certificate and the TLS server name. A sandbox-only certificate
//!    that reached `api.push.apple.com` (or the reverse) gets what Apple sends: SETTINGS, then
//!    `GOAWAY NO_ERROR {"reason":"BadCertificateEnvironment"}`, then the close; a certificate
//!    that names no topic or environment gets the same with `BadCertificate`.
//!    Token auth: the environment comes from the TLS server name (Apple's API hosts), else
//!    the simulator's default environment.
//! 3. `h2` serves the connection with SETTINGS close to Apple's observed ones (header table
//!    4096, 1000 concurrent streams, initial window 65535, max frame 16384, max header list
//!    8000). A token connection is told 1 stream instead, until its first valid provider
//!    token, then 1000 (see below). PRIORITY frames are accepted and ignored (`h2` does
//!    that); PINGs are answered.
//! 4. Each request's head is checked at once, in the connection task, in arrival order
//!    ([`request`] for headers and path, [`auth`] for the provider token). A request whose
//!    body has already arrived (the usual case: HEADERS and DATA come in one read) is then
//!    decided right there: payload checked, routed through [`Hub::push`], with no task of its
//!    own; its answer ([`response`]) is handed to `h2` with the others decided from the same
//!    read once `h2` has no request left, so that they go out in one write. A stream that
//!    must wait (for its body, bounded
//!    and with a deadline; for the durable log; for a delay fault) becomes a future the
//!    connection task polls alongside `accept`. Ordinary request failures never close the
//!    connection. Every outcome is logged once through the hub.
//! 5. The connection ends when the client closes it; with `GOAWAY {"reason":"IdleTimeout"}`
//!    after [`Settings::http2_idle_timeout`] without a complete frame from the client, when
//!    no request came within [`Settings::first_request_timeout`], or when a frame it began is
//!    not complete within [`Settings::frame_timeout`] (a lone byte moves no clock,
//!    [`io::Control::last_frame`]); or on shutdown (in-flight requests finish, then
//!    `GOAWAY {"reason":"Shutdown"}`). A token connection counts as unauthenticated (a smaller
//!    share of the slots, [`crate::server::accept`]) until its first valid provider token.
//!
//! # Where `h2` could not do what Apple does
//!
//! - **GOAWAY debug data**: `h2` 0.4 cannot send any. The simulator writes its GOAWAYs as raw
//!   frames, at the start before `h2` runs, or later between two of `h2`'s frames once it has
//!   stopped polling `h2` ([`crate::protocol::http2`], [`io`]).
//! - **Raising SETTINGS_MAX_CONCURRENT_STREAMS on a live connection**: `h2` fixes it at the
//!   handshake. Apple allows one stream on a token connection until a request with a valid
//!   token arrives, then many, and says so: its first SETTINGS carry
//!   `MAX_CONCURRENT_STREAMS = 1`, a later SETTINGS frame raises it (golang/go#17265; spec
//!   §4.2, §7). On a token connection the simulator therefore runs `h2` without a stream
//!   limit of its own, writes `SETTINGS {MAX_CONCURRENT_STREAMS: 1}` as the connection's
//!   first frame, and after the first request with a valid token injects
//!   `SETTINGS {MAX_CONCURRENT_STREAMS: 1000}` ([`io::Control::inject_settings`]; the
//!   client's ACKs of both are kept from `h2`). It enforces the advertised limit itself: a
//!   stream beyond it is reset with `REFUSED_STREAM`, as APNs resets the streams over a
//!   lowered limit (pushy#476, spec \[I12\]), which tells the client the request was not
//!   processed and may be retried. (Apple has also been seen to answer a client that kept
//!   exceeding the limit with `GOAWAY REFUSED_STREAM "Maximum active streams violated for
//!   this endpoint."`, golang/go#17265 and pushy#356; the simulator keeps the connection.)
//!   Certificate connections get 1000 from the start: the one-stream rule is Apple's for
//!   token auth only (spec §4.2).
//!
//! # Documented choices where Apple is silent
//!
//! - A payload that is not a JSON object gets 400 `PayloadEmpty`: it has no notification
//!   content, and Apple's vocabulary has no closer reason; the log names the parse error.
//! - Request bodies in flight share [`Settings::http2_body_budget`] across all connections;
//!   past it a new stream gets 503 `ServiceUnavailable` (Apple's status for an unavailable
//!   service; 429 would blame the device token) and its body is not kept.
//! - A request body that does not complete within [`Settings::request_body_timeout`] of its
//!   headers gets 400 `IdleTimeout`.
//! - The 410 `timestamp` is the hub's record of when the device reported the app gone, in
//!   milliseconds; the feedback service reports the same instant in seconds.
//! - `TooManyRequests` (429) only when a per-token limit is configured
//!   ([`Settings::token_rate_limit`], `serve --token-rate-limit`): Apple throttles without
//!   publishing numbers, so the simulator does not invent a default.
//! - Reasons produced only by a fault (`POST /v1/faults`, `"respond"`): `Forbidden`,
//!   `ExpiredToken`, `InternalServerError` and `ServiceUnavailable` (Apple documents no
//!   trigger the simulator could reproduce faithfully).
//!
//! # Faults
//!
//! A fault on `http2` ([`crate::hub::FaultSpec`]) is looked up when a connection is accepted
//! (`refuse`: closed right after the TLS handshake, before any HTTP/2 frame) and when a
//! stream's request passed its checks (`respond`: that status and reason instead of routing;
//! `delay_ms`: routed, answered that much later; `goaway`: routed and answered, then the
//! connection ends with GOAWAY as at shutdown). Every notification a fault hit names it in
//! the delivery log.

pub mod auth;
pub mod io;
pub mod request;
pub mod response;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::RecvStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::hub::{
    Api, Effect, FaultOn, Hub, Phase, Probe, ProviderEndpoint, PushError, PushOutcome, PushRequest,
};
use crate::pki::profile;
use crate::protocol::http2 as frames;
use crate::protocol::payload::{self, PayloadError};
use crate::protocol::token::DeviceToken;
use crate::protocol::Environment;
use crate::server::accept::{self, Admission, Endpoint, Transport};
use crate::server::provider::Connected;
use crate::settings::Settings;
use crate::tls;

use self::auth::{TokenAuth, TokenKeys};
use self::io::FrameIo;
use self::request::{ApnsId, Checked, Rules, TopicPolicy};
use self::response::{Reason, Rejection};

/// SETTINGS_MAX_CONCURRENT_STREAMS advertised to every client: Apple's value in a 2021 log
/// (500 in 2016, 1,500 in 2019). Bounds the streams a connection keeps waiting.
pub const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// SETTINGS_HEADER_TABLE_SIZE: Apple's observed value (and the RFC default). Bounds the
/// HPACK dynamic table a client can make us keep.
pub const HEADER_TABLE_SIZE: u32 = 4096;

/// SETTINGS_MAX_FRAME_SIZE: Apple's observed value (the RFC minimum).
pub const MAX_FRAME_SIZE: u32 = 16_384;

/// SETTINGS_MAX_HEADER_LIST_SIZE: Apple's observed value. A request head larger than this is
/// refused by `h2` before we see it, which bounds header memory per stream.
pub const MAX_HEADER_LIST_SIZE: u32 = 8000;

/// SETTINGS_INITIAL_WINDOW_SIZE: Apple's observed value. Together with the payload limits it
/// bounds what a client can have in flight per stream.
pub const INITIAL_WINDOW_SIZE: u32 = 65_535;

/// Most response bytes `h2` buffers per stream; answers are a few hundred bytes.
pub const MAX_SEND_BUFFER: usize = 16 * 1024;

/// How long a shutting-down connection waits for its in-flight requests before it closes
/// anyway (each is one hub call, so this is only reached by a stalled request body).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for `h2` to flush its last frames before the closing GOAWAY.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Most answers held back to be written together ([`Answers`]): enough for every request of
/// a large read (h2load's 100 streams a connection), few enough that a client streaming
/// requests without pause still gets answers as it goes.
const MAX_HELD_ANSWERS: usize = 128;

/// Most bytes read and thrown away after the closing GOAWAY, so the close is a FIN and the
/// client gets to read the GOAWAY rather than an RST.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Most bytes of an oversized body counted (and thrown away) so that the refusal can say how
/// large the payload was; beyond this it says "more than". Sixteen times the VoIP limit
/// covers every realistic mistake at a bounded cost.
const MAX_COUNTED_BODY: usize = 16 * payload::MAX_PAYLOAD_HTTP2_VOIP;

/// Serves the HTTP/2 provider API on `listener` until `endpoint.shutdown` fires.
pub async fn run(
    listener: TcpListener,
    endpoint: Endpoint,
    hub: Hub,
    settings: Arc<Settings>,
    keys: TokenKeys,
) {
    let keys = Arc::new(keys);
    let shutdown = endpoint.shutdown.clone();
    let budget = BodyBudget::new(settings.http2_body_budget);
    accept::serve(listener, endpoint, move |stream, peer, admission| {
        // Out of its box here, outside the future, so that the box is freed now.
        let stream = *stream;
        let conn = ConnectionContext {
            hub: hub.clone(),
            settings: settings.clone(),
            keys: keys.clone(),
            shutdown: shutdown.clone(),
            budget: budget.clone(),
        };
        async move { conn.handle(stream, peer, admission).await }
    })
    .await;
}

/// What every connection shares.
struct ConnectionContext {
    hub: Hub,
    settings: Arc<Settings>,
    keys: Arc<TokenKeys>,
    shutdown: CancellationToken,
    budget: BodyBudget,
}

/// The bytes of request bodies all connections may buffer at once
/// ([`Settings::http2_body_budget`]). A stream reserves its payload limit before its body is
/// read and gives it back once the body is read (or the stream ends: [`StreamJob`]'s drop).
#[derive(Debug, Clone)]
struct BodyBudget {
    /// Bytes not reserved.
    free: Arc<AtomicUsize>,
    /// The whole budget, for the refusal's words.
    total: usize,
}

impl BodyBudget {
    fn new(total: usize) -> Self {
        BodyBudget {
            free: Arc::new(AtomicUsize::new(total)),
            total,
        }
    }

    /// Reserves `bytes`; `false` if fewer are free.
    fn reserve(&self, bytes: usize) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(bytes)
            })
            .is_ok()
    }

    /// Gives back `bytes` reserved earlier.
    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.free.fetch_add(bytes, Ordering::AcqRel);
        }
    }
}

/// How a connection authenticates its requests.
#[derive(Debug)]
enum Auth {
    /// A client certificate: its topics (UID first).
    Certificate(Vec<String>),
    /// Provider tokens, one state machine per connection.
    Token(TokenAuth),
}

/// Counts the streams of a connection whose answer has not been sent yet (those answered
/// the moment they were accepted are never counted: no other stream was looked at meanwhile).
#[derive(Debug, Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Some(self.0.clone()))
    }
}

/// Held by a stream that waits; released just before the final frame of the answer is handed to
/// `h2`, so a client that reacts to the answer never finds the stream still counted.
#[derive(Debug)]
struct InFlightGuard(Option<Arc<AtomicUsize>>);

impl InFlightGuard {
    fn release(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a connection is refused before `h2` starts. The text goes into the log line; the
/// client reads [`Refusal::reason`] in the GOAWAY.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    /// The client certificate names no topic or environment, or does not parse: the
    /// provider must use a certificate minted for its app (or none, for token auth).
    #[error(transparent)]
    BadCertificate(#[from] profile::IdentityError),
    /// A sandbox-only or production-only certificate reached the other environment's host
    /// name.
    #[error(transparent)]
    WrongEnvironment(#[from] profile::EnvMismatch),
}

impl Refusal {
    /// The GOAWAY reason Apple sends for it.
    fn reason(&self) -> Reason {
        match self {
            Refusal::BadCertificate(_) => Reason::BadCertificate,
            Refusal::WrongEnvironment(_) => Reason::BadCertificateEnvironment,
        }
    }
}

/// Why the connection loop stopped.
enum End {
    /// The client closed the connection, or it failed.
    Closed,
    /// No complete frame from the client for the idle timeout, no request within the
    /// first-request deadline, or a frame begun and not complete within the frame deadline
    /// (the detail says which).
    Idle(&'static str),
    /// The simulator is shutting down.
    Shutdown,
    /// A `goaway` fault hit a stream: end as at shutdown, with this reason.
    Fault(Reason),
}

impl ConnectionContext {
    async fn handle(
        self,
        mut stream: TlsStream<Transport>,
        peer: SocketAddr,
        admission: Admission,
    ) {
        let authenticated = self.authenticate(&stream);
        let identity = match &authenticated {
            Ok((Auth::Certificate(topics), _)) => topics.join(", "),
            Ok((Auth::Token(_), _)) => "token auth".to_owned(),
            Err(_) => "refused certificate".to_owned(),
        };
        // Logs `provider_connected` now and `provider_disconnected` on every way out.
        let connected = Connected::new(&self.hub, ProviderEndpoint::Http2, peer, identity);
        let (auth, environment) = match authenticated {
            Ok(found) => found,
            Err(why) => {
                let reason = why.reason();
                warn!(%peer, %why, reason = reason.as_str(), "http2 connection refused");
                refuse_connection(stream, reason, self.settings.linger).await;
                return;
            }
        };
        let hit = self.hub.fault(&Probe {
            on: FaultOn::Http2,
            phase: Phase::Connection,
            token: None,
            topic: match &auth {
                Auth::Certificate(topics) => topics.first().map(String::as_str),
                Auth::Token(_) => None,
            },
            connection: Some(connected.id),
            serial: None,
        });
        if let Some(hit) = hit {
            if hit.effect == Effect::Refuse {
                info!(%peer, fault = %hit.id, "fault: http2 connection refused before any HTTP/2 frame");
                let _ = tokio::time::timeout(self.settings.linger, stream.shutdown()).await;
                return;
            }
        }
        match &auth {
            Auth::Certificate(topics) => {
                info!(%peer, %environment, topic = %topics[0], "http2 provider connected (certificate)")
            }
            Auth::Token(_) => info!(%peer, %environment, "http2 provider connected (token)"),
        }
        self.serve(stream, auth, environment, peer, connected.id, admission)
            .await;
    }

    /// Reads the auth mode and environment from the TLS session; an `Err` says why the
    /// connection is refused (and so the GOAWAY's reason).
    fn authenticate(&self, stream: &TlsStream<Transport>) -> Result<(Auth, Environment), Refusal> {
        let (tcp, session) = stream.get_ref();
        let sni = session.server_name();
        let default = self.settings.default_environment;
        match tls::peer_identity(session.peer_certificates()) {
            Err(err) => Err(err.into()),
            Ok(None) => {
                let environment = profile::environment_for_server_name(sni).unwrap_or(default);
                Ok((
                    Auth::Token(TokenAuth::new(tcp.get_ref().peer_addr().ok())),
                    environment,
                ))
            }
            Ok(Some(identity)) => {
                let environment = profile::connection_environment(&identity, sni, default)?;
                let mut topics = vec![identity.topic.clone()];
                for (topic, _) in identity.topics {
                    if !topics.contains(&topic) {
                        topics.push(topic);
                    }
                }
                Ok((Auth::Certificate(topics), environment))
            }
        }
    }

    /// Runs `h2` on an authenticated connection until it ends. A token connection starts with
    /// one stream (the first frame is our SETTINGS saying so, and `h2` gets no limit of its
    /// own: [`MAX_CONCURRENT_STREAMS`] is then enforced here).
    async fn serve(
        &self,
        stream: TlsStream<Transport>,
        mut auth: Auth,
        environment: Environment,
        peer: SocketAddr,
        connection: u64,
        mut admission: Admission,
    ) {
        let (io, control) = FrameIo::new(stream);
        let mut builder = h2::server::Builder::new();
        builder
            .header_table_size(HEADER_TABLE_SIZE)
            .initial_window_size(INITIAL_WINDOW_SIZE)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER);
        match &auth {
            Auth::Certificate(_) => {
                builder.max_concurrent_streams(MAX_CONCURRENT_STREAMS);
            }
            Auth::Token(_) => {
                control.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1)]);
            }
        }
        let handshake = builder.handshake::<_, Bytes>(io);
        let mut conn = match tokio::time::timeout(self.settings.handshake_timeout, handshake).await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => {
                debug!(%err, "http2 handshake failed");
                return;
            }
            Err(_) => {
                debug!("http2 handshake timed out");
                return;
            }
        };

        let in_flight = InFlight::default();
        // Streams that wait (for their body, the durable log, or a delay fault), polled here
        // with `accept`: no task per stream.
        let mut streams: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
        // Streams decided at once, answered together once `h2` has no more requests.
        let mut answers = Answers(Vec::new());
        let per_conn = Arc::new(PerConnection {
            hub: self.hub.clone(),
            budget: self.budget.clone(),
            connection,
            environment,
            body_deadline: self.settings.request_body_timeout,
            goaway: OnceLock::new(),
        });
        let mut last_stream_id = 0u32;
        let idle = self.settings.http2_idle_timeout;
        let frame_timeout = self.settings.frame_timeout;
        // The first request is due within this; `None` once it came.
        let mut first_request_due =
            Some(tokio::time::Instant::now() + self.settings.first_request_timeout);
        let mut who = Who::new(peer, &auth);
        // A token connection's stream limit was raised (or there is none to raise).
        let mut raised = matches!(auth, Auth::Certificate(_));
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        // One timer for every deadline, moved earlier when one comes closer and re-armed when
        // it fires (never re-registered per request).
        let check = tokio::time::sleep(frame_timeout);
        tokio::pin!(check);
        let end = loop {
            if self.shutdown.is_cancelled() {
                break End::Shutdown;
            }
            // A stream a `goaway` fault hit asks for the connection's end, once answered.
            if let Some(reason) = per_conn.goaway.get() {
                break End::Fault(*reason);
            }
            // The next time a deadline could pass: the idle one (while no stream is in
            // flight), the first request's, and the frame deadline of a frame under way. A
            // frame can begin without waking this loop (`h2` reads it), so the loop looks
            // again at least every `frame_timeout`.
            let mut check_at = tokio::time::Instant::now() + frame_timeout;
            if streams.is_empty() {
                check_at = check_at.min(control.last_frame() + idle);
            }
            if let Some(due) = first_request_due {
                check_at = check_at.min(due);
            }
            if let Some(began) = control.partial_since() {
                check_at = check_at.min(began + frame_timeout);
            }
            if check_at < check.deadline() {
                check.as_mut().reset(check_at);
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => break End::Shutdown,
                Some(()) = streams.next(), if !streams.is_empty() => {}
                next = answers.accept(&mut conn) => match next {
                    None => break End::Closed,
                    Some(Err(err)) => {
                        debug!(%err, "http2 connection ended");
                        break End::Closed;
                    }
                    Some(Ok((request, mut respond))) => {
                        let stream_id = u32::from(respond.stream_id());
                        let limit = match &auth {
                            Auth::Token(state) if !state.has_valid_token() => 1,
                            _ => MAX_CONCURRENT_STREAMS as usize,
                        };
                        if in_flight.count() >= limit {
                            info!(
                                who = %who.text,
                                stream = stream_id,
                                limit,
                                "http2 stream over the advertised SETTINGS_MAX_CONCURRENT_STREAMS: REFUSED_STREAM"
                            );
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        // The GOAWAY names the last stream we acted on.
                        last_stream_id = stream_id;
                        first_request_due = None;
                        let (job, reader) = self.admit(request, respond, &mut auth, &per_conn, &who);
                        who.refresh(&auth);
                        if !raised && matches!(&auth, Auth::Token(state) if state.has_valid_token()) {
                            raised = true;
                            // A valid token: no longer among the unauthenticated (unless a
                            // newcomer already pushed this connection out of them).
                            if !admission.authenticated() {
                                info!(who = %who.text, "unauthenticated share full: this connection had given way to a newcomer");
                                break End::Closed;
                            }
                            control.inject_settings(&[(
                                frames::SETTINGS_MAX_CONCURRENT_STREAMS,
                                MAX_CONCURRENT_STREAMS,
                            )]);
                            debug!(who = %who.text, "valid provider token: SETTINGS_MAX_CONCURRENT_STREAMS raised to {MAX_CONCURRENT_STREAMS}");
                        }
                        if let Some(wait) = job.start(reader, &in_flight, &mut answers) {
                            streams.push(wait);
                        }
                    }
                },
                () = &mut check => {
                    let now = tokio::time::Instant::now();
                    if control.partial_since().is_some_and(|began| began + frame_timeout <= now) {
                        break End::Idle("a frame begun was not complete within the frame deadline");
                    }
                    if first_request_due.is_some_and(|due| due <= now) {
                        break End::Idle("no request within the first-request deadline");
                    }
                    if streams.is_empty() && control.last_frame() + idle <= now {
                        break End::Idle("no complete frame within the idle deadline");
                    }
                    check.as_mut().reset(now + frame_timeout);
                }
            }
        };

        // Answers decided before the end go out with the rest.
        answers.send();
        let reason = match end {
            End::Closed => return,
            End::Idle(why) => {
                info!(who = %who.text, why, "http2 connection idle: GOAWAY IdleTimeout");
                Reason::IdleTimeout
            }
            End::Shutdown | End::Fault(_) => {
                // Let in-flight requests finish (refusing new ones) for a bounded time.
                let grace = tokio::time::sleep(SHUTDOWN_GRACE);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        done = streams.next() => if done.is_none() { break },
                        next = conn.accept() => match next {
                            Some(Ok((_, mut respond))) => {
                                respond.send_reset(h2::Reason::REFUSED_STREAM)
                            }
                            _ => return,
                        },
                    }
                }
                match end {
                    End::Fault(reason) => reason,
                    _ => Reason::Shutdown,
                }
            }
        };
        drop(streams);

        // Let h2 write what it still holds, then write the GOAWAY between two of its frames.
        let flushed = tokio::time::timeout(
            FLUSH_DEADLINE,
            std::future::poll_fn(|cx| loop {
                match std::pin::pin!(conn.accept()).poll(cx) {
                    std::task::Poll::Ready(Some(Ok((_, mut respond)))) => {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    }
                    std::task::Poll::Ready(_) => return std::task::Poll::Ready(false),
                    std::task::Poll::Pending => {
                        return if control.quiet() {
                            std::task::Poll::Ready(true)
                        } else {
                            std::task::Poll::Pending
                        };
                    }
                }
            }),
        )
        .await;
        // Dropping `h2` hands the stream back to the control.
        drop(conn);
        let returned = control.take_stream();
        let (Ok(true), Some(returned)) = (flushed, returned) else {
            debug!(
                reason = reason.as_str(),
                "connection not quiet: closing without GOAWAY"
            );
            return;
        };
        info!(
            reason = reason.as_str(),
            last_stream_id, "http2 connection closed by the server"
        );
        // Injected frames `h2` never carried out go first, as they would have.
        let mut last = returned.unwritten;
        last.extend_from_slice(&frames::goaway(
            last_stream_id,
            frames::NO_ERROR,
            &reason.body(None),
        ));
        close_with(returned.stream, &last, self.settings.linger).await;
    }

    /// Checks a new stream's head (and token) in the connection task, and prepares what reads
    /// its body and answers.
    fn admit(
        &self,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        auth: &mut Auth,
        per_conn: &Arc<PerConnection>,
        who: &Who,
    ) -> (StreamJob, BodyReader) {
        let (head, body) = request.into_parts();
        let policy = match auth {
            Auth::Certificate(topics) => TopicPolicy::Certificate(topics),
            Auth::Token(_) => TopicPolicy::Token,
        };
        let rules = Rules {
            accept_uppercase_apns_id: self.settings.accept_uppercase_apns_id,
        };
        let (apns_id, checked) =
            request::check(&head.method, &head.uri, &head.headers, policy, rules);
        let verdict = checked.and_then(|c| match auth {
            Auth::Certificate(_) => Ok(c),
            // A refused provider token keeps its reason and its detail in words.
            Auth::Token(state) => state
                .authorize(
                    head.headers
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                    &c.bundle,
                    self.hub.clock().now_ms(),
                    &self.keys,
                )
                .map(|()| c)
                .map_err(Rejection::from),
        });
        // The body's bytes come out of the global budget; when it is spent the stream is
        // answered 503 ServiceUnavailable and its body is read without being kept.
        let limit = match &verdict {
            Ok(c) => c.push_type.payload_limit(),
            Err(_) => payload::MAX_PAYLOAD_HTTP2_VOIP,
        };
        let (verdict, reserved) = if self.budget.reserve(limit) {
            (verdict, limit)
        } else {
            let rejection = Rejection::new(
                Reason::ServiceUnavailable,
                format!(
                    "the simulator's budget for request bodies in flight ({} bytes, \
                     Settings::http2_body_budget) is spent; retry later",
                    self.budget.total
                ),
            );
            (Err(rejection), 0)
        };
        // What the log can say about a request refused before the hub (one that passed its
        // checks names its own topic and token).
        let (topic_hint, token_hint) = if verdict.is_err() {
            let topic = head
                .headers
                .get("apns-topic")
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(request::MAX_TOPIC_LEN)
                        .collect()
                })
                .unwrap_or_default();
            let token = head
                .uri
                .path()
                .strip_prefix(request::DEVICE_PATH)
                .and_then(|t| DeviceToken::from_hex(t).ok());
            (topic, token)
        } else {
            (String::new(), None)
        };
        let job = StreamJob {
            conn: per_conn.clone(),
            respond,
            body,
            apns_id,
            verdict,
            topic_hint,
            token_hint,
            reserved,
            guard: InFlightGuard(None),
            who: who.text.clone(),
            delay: None,
        };
        (job, BodyReader::new(reserved))
    }
}

/// Who a connection is, for the log line of every refusal: the peer, and the certificate's
/// topic or the token connection's team (once a push pinned it).
struct Who {
    peer: SocketAddr,
    /// Whether the text already names the pinned team.
    team_known: bool,
    /// `peer 127.0.0.1:50123, certificate com.example.app` and the like, shared by the
    /// connection's streams.
    text: Arc<str>,
}

impl Who {
    fn new(peer: SocketAddr, auth: &Auth) -> Self {
        let mut who = Who {
            peer,
            team_known: false,
            text: Arc::from(""),
        };
        who.text = who.describe(auth);
        who
    }

    fn describe(&self, auth: &Auth) -> Arc<str> {
        let peer = self.peer;
        Arc::from(match auth {
            Auth::Certificate(topics) => format!("peer {peer}, certificate {}", topics[0]),
            Auth::Token(state) => match state.team() {
                Some(team) => format!("peer {peer}, token of team {team}"),
                None => format!("peer {peer}, token auth (no push accepted yet)"),
            },
        })
    }

    /// Names the team once the connection's first push pinned it.
    fn refresh(&mut self, auth: &Auth) {
        if let Auth::Token(state) = auth {
            if !self.team_known && state.team().is_some() {
                self.team_known = true;
                self.text = self.describe(auth);
            }
        }
    }
}

/// What a connection's streams share.
struct PerConnection {
    hub: Hub,
    budget: BodyBudget,
    /// The connection's number (faults match it).
    connection: u64,
    environment: Environment,
    /// [`Settings::request_body_timeout`].
    body_deadline: Duration,
    /// Set by a stream a `goaway` fault hit: the connection ends (as at shutdown) with this
    /// reason. Set once: a later fault finds a GOAWAY already on its way.
    goaway: OnceLock<Reason>,
}

/// One stream after its head was checked: read the body, decide, answer. Answered in the
/// connection task at once when its body is there ([`StreamJob::start`]); a stream that must
/// wait becomes a future the connection task polls.
struct StreamJob {
    conn: Arc<PerConnection>,
    respond: SendResponse<Bytes>,
    body: RecvStream,
    apns_id: ApnsId,
    verdict: Result<Checked, Rejection>,
    topic_hint: String,
    token_hint: Option<DeviceToken>,
    /// Bytes of [`BodyBudget`] this stream holds until its body is read (0 for a stream
    /// refused for the budget: its body is not kept); given back on drop at the latest.
    reserved: usize,
    /// Counts the stream as in flight while it waits (not when it is answered at once).
    guard: InFlightGuard,
    /// The connection, for the log line of a refusal.
    who: Arc<str>,
    /// A `delay_ms` fault's wait before the answer.
    delay: Option<Duration>,
}

/// A stream decided at once, with its answer.
struct Answer {
    job: StreamJob,
    result: Result<(), Rejection>,
}

/// The answers decided since `h2` last ran out of requests. They are handed to `h2` together
/// when `accept` finds no more requests in what was read ([`Answers::accept`]), so that `h2`
/// writes the answers to one read in one `writev`: answered one by one, each one went out
/// alone, as `h2` writes what it holds at the end of every `accept`.
struct Answers(Vec<Answer>);

impl Answers {
    /// Hands every held answer to `h2`.
    fn send(&mut self) {
        for mut answer in self.0.drain(..) {
            answer.job.answer(answer.result);
        }
    }

    /// Holds one; sends all once [`MAX_HELD_ANSWERS`] wait.
    fn hold(&mut self, answer: Answer) {
        self.0.push(answer);
        if self.0.len() >= MAX_HELD_ANSWERS {
            self.send();
        }
    }

    /// `conn.accept()`, sending the held answers when `h2` has no request left (and then
    /// letting it write them at once).
    async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut h2::server::Connection<T, Bytes>,
    ) -> Option<Result<(http::Request<RecvStream>, SendResponse<Bytes>), h2::Error>> {
        std::future::poll_fn(|cx| loop {
            match conn.poll_accept(cx) {
                Poll::Pending if !self.0.is_empty() => self.send(),
                other => return other,
            }
        })
        .await
    }
}

/// How reading a request body ended.
enum Body {
    /// Complete, within the limit.
    Complete(Bytes),
    /// More than the limit arrived: the body's size as far as it was counted (at most
    /// [`MAX_COUNTED_BODY`]), and whether it ended there.
    TooLarge {
        /// Bytes counted.
        len: usize,
        /// The whole body was counted.
        complete: bool,
    },
    /// Not complete within the deadline: the bytes that did arrive.
    Stalled(usize),
    /// The client reset the stream: there is no one to answer.
    Reset,
}

/// Reads a request body into a buffer that never grows past its limit (whatever
/// `content-length` claims), releasing flow-control capacity as data arrives. Past the limit
/// it only counts, up to [`MAX_COUNTED_BODY`], so the refusal can say how large the body was.
struct BodyReader {
    /// The first chunk, as `h2` handed it: a body in one DATA frame (the usual case) is
    /// passed on without a copy.
    first: Option<Bytes>,
    /// The body once a second chunk came, or once the reader waits (the first chunk is a
    /// slice of `h2`'s read buffer, not to be held for long).
    buf: BytesMut,
    arrived: usize,
    limit: usize,
}

impl BodyReader {
    fn new(limit: usize) -> Self {
        BodyReader {
            first: None,
            buf: BytesMut::new(),
            arrived: 0,
            limit,
        }
    }

    /// Moves the first chunk into the buffer.
    fn spill(&mut self) {
        if let Some(first) = self.first.take() {
            self.buf.extend_from_slice(&first);
        }
    }

    /// Takes what has arrived; `Ready` once the body is complete (or too large, or reset).
    fn poll(&mut self, body: &mut RecvStream, cx: &mut Context<'_>) -> Poll<Body> {
        loop {
            let chunk = match body.poll_data(cx) {
                Poll::Pending => {
                    self.spill();
                    return Poll::Pending;
                }
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Body::Reset),
                Poll::Ready(Some(Ok(chunk))) => chunk,
            };
            let _ = body.flow_control().release_capacity(chunk.len());
            self.arrived = self.arrived.saturating_add(chunk.len());
            if self.arrived > self.limit {
                self.first = None;
                self.buf.clear();
                if self.arrived >= MAX_COUNTED_BODY {
                    return Poll::Ready(Body::TooLarge {
                        len: MAX_COUNTED_BODY,
                        complete: false,
                    });
                }
                continue;
            }
            if self.first.is_none() && self.buf.is_empty() {
                self.first = Some(chunk);
                continue;
            }
            self.spill();
            self.buf.extend_from_slice(&chunk);
        }
        if self.arrived > self.limit {
            return Poll::Ready(Body::TooLarge {
                len: self.arrived,
                complete: true,
            });
        }
        let body = match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.buf).freeze(),
        };
        Poll::Ready(Body::Complete(body))
    }
}

impl StreamJob {
    /// Decides at once when the body is already there (polled without a waker: nothing to
    /// wait for) and holds the answer in `answers`, else returns the future that waits for
    /// the body, counted in flight.
    fn start(
        mut self,
        mut reader: BodyReader,
        in_flight: &InFlight,
        answers: &mut Answers,
    ) -> Option<BoxFuture<'static, ()>> {
        let mut now = Context::from_waker(Waker::noop());
        match reader.poll(&mut self.body, &mut now) {
            Poll::Pending => {
                self.guard = in_flight.enter();
                let deadline = tokio::time::Instant::now() + self.conn.body_deadline;
                Some(Box::pin(self.read_then_answer(reader, deadline)))
            }
            Poll::Ready(body) => {
                self.give_back();
                let result = self.decide(body)?;
                if self.must_wait(&result) {
                    self.guard = in_flight.enter();
                    Some(Box::pin(self.wait_then_answer(result)))
                } else {
                    answers.hold(Answer {
                        job: self,
                        result: result.map(drop),
                    });
                    None
                }
            }
        }
    }

    /// Reads the body (until `deadline`), then decides and answers.
    async fn read_then_answer(mut self, mut reader: BodyReader, deadline: tokio::time::Instant) {
        let body = std::future::poll_fn(|cx| reader.poll(&mut self.body, cx));
        let body = match tokio::time::timeout_at(deadline, body).await {
            Ok(body) => body,
            Err(_) => Body::Stalled(reader.arrived),
        };
        self.give_back();
        if let Some(result) = self.decide(body) {
            self.wait_then_answer(result).await;
        }
    }

    /// Gives the stream's share of the body budget back.
    fn give_back(&mut self) {
        self.conn
            .budget
            .give_back(std::mem::take(&mut self.reserved));
    }

    /// Decides on a stream whose body is read: `None` when the client reset it (no one to
    /// answer), else the outcome (`Ok(true)`: stored).
    ///
    /// The body was read even for a refused head, so the answer follows the whole request
    /// (no reset races with clients), but never beyond the largest payload limit (and not at
    /// all beyond the budget).
    fn decide(&mut self, body: Body) -> Option<Result<bool, Rejection>> {
        let limit = self.reserved_limit();
        let verdict = std::mem::replace(&mut self.verdict, Err(Reason::BadPath.into()));
        Some(match (verdict, body) {
            (_, Body::Reset) => {
                debug!(apns_id = %self.apns_id.uuid, "stream reset by the client before its answer");
                return None;
            }
            (Err(rejection), _) => {
                self.record(None, rejection.to_string());
                Err(rejection)
            }
            (Ok(checked), Body::TooLarge { len, complete }) => {
                let size = if complete {
                    format!("{len} bytes")
                } else {
                    format!("more than {len} bytes")
                };
                let rejection = Rejection::new(
                    Reason::PayloadTooLarge,
                    format!(
                        "payload is {size}; the limit for {} pushes is {limit}",
                        checked.push_type.as_str()
                    ),
                );
                self.topic_hint = checked.topic;
                self.record(Some(checked.token), rejection.to_string());
                Err(rejection)
            }
            (Ok(checked), Body::Stalled(arrived)) => {
                let rejection = Rejection::new(
                    Reason::IdleTimeout,
                    format!(
                        "the request body was not complete {:?} after its headers ({arrived} bytes arrived)",
                        self.conn.body_deadline
                    ),
                );
                self.topic_hint = checked.topic;
                self.record(Some(checked.token), rejection.to_string());
                Err(rejection)
            }
            (Ok(mut checked), Body::Complete(payload)) => {
                self.topic_hint = std::mem::take(&mut checked.topic);
                self.push(checked, payload)
            }
        })
    }

    /// The payload limit the body was read with: the push type's for a head that passed.
    fn reserved_limit(&self) -> usize {
        match &self.verdict {
            Ok(c) => c.push_type.payload_limit(),
            Err(_) => payload::MAX_PAYLOAD_HTTP2_VOIP,
        }
    }

    /// Whether the answer must wait: durable state answers a 200 for a stored notification
    /// and a 410 only once what they report is on disk; a `delay_ms` fault waits.
    fn must_wait(&self, result: &Result<bool, Rejection>) -> bool {
        let durable = match result {
            Ok(stored) => *stored,
            Err(r) => r.reason == Reason::Unregistered,
        };
        self.delay.is_some() || (durable && self.conn.hub.is_durable())
    }

    /// Waits for the durable log (group-committed; never awaited in memory) and a delay
    /// fault, then answers.
    async fn wait_then_answer(mut self, result: Result<bool, Rejection>) {
        let result = match result {
            Ok(stored) if !stored || !self.conn.hub.is_durable() => Ok(()),
            Err(r) if r.reason != Reason::Unregistered || !self.conn.hub.is_durable() => Err(r),
            durable => match self.conn.hub.synced().await {
                Ok(()) => durable.map(drop),
                Err(e) => Err(Rejection::new(Reason::InternalServerError, e.to_string())),
            },
        };
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.answer(result);
    }

    /// Sends the answer.
    fn answer(&mut self, result: Result<(), Rejection>) {
        match result {
            Ok(()) => {
                let unique = (self.conn.environment == Environment::Sandbox).then(Uuid::new_v4);
                self.guard.release();
                let head = response::success(self.apns_id.header.clone(), unique);
                if let Err(err) = self.respond.send_response(head, true) {
                    debug!(%err, "answer not sent");
                }
            }
            Err(rejection) => {
                info!(
                    who = %self.who,
                    apns_id = %self.apns_id.uuid,
                    topic = %self.topic_hint,
                    status = rejection.reason.status().as_u16(),
                    reason = rejection.reason.as_str(),
                    detail = %rejection.detail,
                    "http2 request refused"
                );
                self.guard.release();
                let (head, body) = response::error(&rejection, self.apns_id.header.clone());
                match self.respond.send_response(head, false) {
                    Ok(mut send) => {
                        if let Err(err) = send.send_data(body, true) {
                            debug!(%err, "answer body not sent");
                        }
                    }
                    Err(err) => debug!(%err, "answer not sent"),
                }
            }
        }
    }

    /// Checks the payload and hands the notification to the hub. A rejection before the hub
    /// is recorded here; the hub records its own outcomes. `Ok(true)`: it was stored.
    fn push(&mut self, checked: Checked, payload: Bytes) -> Result<bool, Rejection> {
        let hit = self.conn.hub.fault(&Probe {
            on: FaultOn::Http2,
            phase: Phase::Notification,
            token: Some(&checked.token),
            topic: Some(&checked.bundle),
            connection: Some(self.conn.connection),
            serial: None,
        });
        let mut fault = None;
        if let Some(hit) = hit {
            match hit.effect {
                Effect::Respond {
                    status,
                    reason,
                    timestamp_ms,
                } => {
                    // The control API checked the pair; a stale one still answers Apple's way.
                    let reason = reason
                        .as_deref()
                        .and_then(Reason::from_name)
                        .or_else(|| Reason::usual(status))
                        .unwrap_or(Reason::InternalServerError);
                    let mut rejection = Rejection::new(reason, format!("fault {}", hit.id));
                    if reason.status() == http::StatusCode::GONE {
                        rejection.timestamp_ms =
                            Some(timestamp_ms.unwrap_or_else(|| self.conn.hub.clock().now_ms()));
                    }
                    self.conn.hub.record_faulted(
                        Api::Http2,
                        &self.topic_hint,
                        [0; 4],
                        self.apns_id.uuid,
                        Some(checked.token),
                        rejection.to_string(),
                        &hit.id,
                    );
                    return Err(rejection);
                }
                Effect::Delay(ms) => self.delay = Some(Duration::from_millis(ms)),
                Effect::Goaway(reason) => {
                    let reason = reason
                        .as_deref()
                        .and_then(Reason::from_name)
                        .unwrap_or(Reason::Shutdown);
                    // Already set: a GOAWAY is already on its way.
                    let _ = self.conn.goaway.set(reason);
                }
                _ => {}
            }
            fault = Some(hit.id);
        }
        if let Err(err) = payload::check(&payload, checked.push_type.payload_limit()) {
            let reason = match err {
                PayloadError::Empty | PayloadError::InvalidJson(_) | PayloadError::NotAnObject => {
                    Reason::PayloadEmpty
                }
                PayloadError::TooLarge { .. } => Reason::PayloadTooLarge,
            };
            let rejection = Rejection::new(reason, err.to_string());
            self.record(Some(checked.token), rejection.to_string());
            return Err(rejection);
        }
        let token = checked.token;
        let request = PushRequest {
            api: Api::Http2,
            token,
            topic: Arc::from(checked.bundle),
            environment: self.conn.environment,
            identifier: [0; 4],
            apns_id: self.apns_id.uuid,
            expiry: checked.expiry,
            priority: checked.priority,
            push_type: Some(checked.push_type.as_str().to_owned()),
            collapse_id: checked.collapse_id,
            payload,
            frame: None,
            fault,
        };
        match self.conn.hub.push(request) {
            Ok(outcome) => Ok(outcome == PushOutcome::Stored),
            Err(err) => Err(hub_rejection(&err)),
        }
    }

    /// Logs (through the hub) a request refused before it reached the hub.
    fn record(&self, token: Option<DeviceToken>, detail: String) {
        self.conn.hub.record_rejection(
            Api::Http2,
            &self.topic_hint,
            [0; 4],
            self.apns_id.uuid,
            token.or(self.token_hint),
            detail,
        );
    }
}

impl Drop for StreamJob {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Apple's answer to a notification the hub refused, with the hub's words as the detail.
fn hub_rejection(err: &PushError) -> Rejection {
    let reason = match err {
        PushError::UnknownToken | PushError::WrongEnvironment { .. } => Reason::BadDeviceToken,
        PushError::WrongTopic { .. } => Reason::DeviceTokenNotForTopic,
        PushError::TooManyRequests { .. } => Reason::TooManyRequests,
        PushError::Unregistered { .. } => Reason::Unregistered,
    };
    let detail = match err {
        PushError::UnknownToken => "no device holds this token".to_owned(),
        other => other.to_string(),
    };
    let mut rejection = Rejection::new(reason, detail);
    if let PushError::Unregistered { at_ms } = err {
        rejection.timestamp_ms = Some(*at_ms);
    }
    rejection
}

/// Refuses a connection the way Apple does: SETTINGS, then GOAWAY with the reason as JSON,
/// then the close. `h2` is never started.
async fn refuse_connection(stream: TlsStream<Transport>, reason: Reason, linger: Duration) {
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&server_settings());
    bytes.extend_from_slice(&frames::goaway(0, frames::NO_ERROR, &reason.body(None)));
    close_with(stream, &bytes, linger).await;
}

/// The SETTINGS frame `h2` sends for us, for connections refused before `h2` starts.
fn server_settings() -> Bytes {
    frames::settings(&[
        (frames::SETTINGS_HEADER_TABLE_SIZE, HEADER_TABLE_SIZE),
        (
            frames::SETTINGS_MAX_CONCURRENT_STREAMS,
            MAX_CONCURRENT_STREAMS,
        ),
        (frames::SETTINGS_INITIAL_WINDOW_SIZE, INITIAL_WINDOW_SIZE),
        (frames::SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_SIZE),
        (frames::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE),
    ])
}

/// Writes the last bytes, sends close_notify, then reads and discards what the client still
/// sends (bounded in time and bytes) so the close is a FIN, not an RST that could destroy
/// the GOAWAY in flight.
async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    last: &[u8],
    linger: Duration,
) {
    let written = async {
        stream.write_all(last).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(linger, written).await.is_err() {
        return;
    }
    let drain = async {
        let mut discarded = 0usize;
        let mut sink = [0u8; 16 * 1024];
        while discarded < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertEnvironment;

    #[test]
    fn refusals_map_to_apples_goaway_reasons() {
        let unreadable = Refusal::from(profile::IdentityError::NoEnvironment);
        assert_eq!(unreadable.reason(), Reason::BadCertificate);
        assert!(unreadable.to_string().contains("names no APNs environment"));
        let crossed = Refusal::from(profile::EnvMismatch {
            certificate: CertEnvironment::Production,
            requested: Environment::Sandbox,
        });
        assert_eq!(crossed.reason(), Reason::BadCertificateEnvironment);
        assert!(crossed
            .to_string()
            .contains("cannot connect to the sandbox environment"));
    }
}
