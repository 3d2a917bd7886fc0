//! The device endpoint (port 5223, like the real devices' APNs port): one persistent TLS
//! connection per simulated device.
//!
//! Per connection:
//!
//! 1. the device says `Hello` (serial, environment) within the hello deadline;
//! 2. the hub opens its session (sending anything stored for it) and we answer `Welcome`
//!    with the heartbeat interval;
//! 3. then one `select!` loop serves three sources until one ends the session:
//!    - shutdown: tell the device (`Error` SHUTDOWN) and close;
//!    - the session queue: write the notification, plus any others already queued, in one
//!      TLS write; a closed queue means a newer connection with the same serial replaced us;
//!    - the socket: `Register` → `Registered` (one token per app and kind, of
//!      `Settings::token_len` bytes), `Ack` / `NotInstalled` → the hub, `Ping` → `Pong`;
//!      three heartbeats without a complete message end the session;
//! 4. the hub routes anything still unacknowledged again (to the store or a newer session).
//!    This runs however the session ends, even when shutdown aborts the task where it
//!    stands (`Online`, a drop guard), so the state the store keeps at shutdown is complete.
//!
//! Deadlines, the same rules as the provider endpoints' (the Hello through
//! [`Connection::read_frame_within`], as the binary gateway reads; after it through
//! [`Connection::read_frame_begun_within`] and one idle timer armed for the whole session,
//! like the shutdown signal, rather than on every turn of the loop): the Hello must be complete
//! within [`Settings::hello_timeout`]; after it, the idle clock counts from the last
//! *complete* message, not the last byte, and a message that has begun must be complete
//! within [`Settings::frame_timeout`], so a device dripping a frame a byte at a time is told
//! (`Error` IDLE) and cut off. Every write has the accept loop's deadline
//! ([`crate::server::write_deadline`]): a device that stops reading is cut off after
//! [`Settings::write_timeout`]. Either way step 4 follows, as for any device that drops. A
//! device counts as unauthenticated (a smaller share of the slots, see
//! [`crate::server::accept`]) until its Hello.
//!
//! A fault on `devices` (`POST /v1/faults`) is looked up for each notification about to be
//! written (`SessionFaults`): `drop` ends the connection instead (so step 4 routes it again),
//! `withhold_ack` never passes the device's answer on, `delay_ms` passes it on late. The
//! hub marks the delivery with the fault, so its later events name it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Connection, ReadError, TimedReadError};
use crate::hub::{
    DeviceAnswer, DeviceReply, Effect, FaultOn, Hub, Outgoing, Phase, Probe, RegisterError,
};
use crate::protocol::device::{
    decode_device_message, encode_notification, encode_server_message, CloseCode, DeviceMessage,
    DeviceProtocolError, ServerMessage, PROTOCOL_VERSION,
};
use crate::protocol::token::AppToken;
use crate::protocol::Environment;
use crate::server::accept::{self, Admission, Endpoint, Transport};
use crate::settings::Settings;

/// Read buffer of a device session while it reads: device messages are a few bytes (acks
/// of 11, pings, registrations of a bundle id), and 512 bytes still takes the acks of 46
/// notifications in one read. It grows if a device sends more, and an idle session holds
/// none ([`Connection::releasing_idle_buffers`]): thousands of them should stay small.
const DEVICE_READ_BUFFER: usize = 512;

/// Most notifications written in one TLS write: enough to amortise the write, small enough
/// that acknowledgements keep flowing during a burst.
const MAX_BATCH: usize = 64;

/// Why the simulator ends a device session. Its text is the Error message the device reads;
/// [`SessionError::close_code`] is the code sent with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The device's Hello asks for a protocol version this simulator does not speak: the
    /// device must be built for [`PROTOCOL_VERSION`].
    #[error("unsupported device protocol version {0} (this simulator speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The first message was a well-formed message other than Hello: the device must say
    /// Hello first.
    #[error("expected Hello first, got {0:?}")]
    NotHello(Box<DeviceMessage>),
    /// No Hello arrived within [`Settings::hello_timeout`] of the handshake.
    #[error("no Hello within {0:?}")]
    NoHello(Duration),
    /// The device sent bytes that are not a device-protocol frame.
    #[error("{0}")]
    Malformed(DeviceProtocolError),
    /// A second Hello on a session that already said hello.
    #[error("Hello sent twice")]
    HelloTwice,
    /// An Ack for a delivery this session was never sent (or already answered).
    #[error("Ack for unknown delivery {0}")]
    UnknownAck(u64),
    /// A NotInstalled for a delivery this session was never sent (or already answered).
    #[error("NotInstalled for unknown delivery {0}")]
    UnknownNotInstalled(u64),
    /// An AckThrough past the last delivery this session wrote: it would acknowledge
    /// notifications the device cannot have seen.
    #[error("AckThrough for delivery {delivery}, beyond the last one sent ({last})")]
    AckBeyondSent {
        /// The number the device sent.
        delivery: u64,
        /// The last delivery written to it (0: none).
        last: u64,
    },
    /// Writing an answer to the device failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// The hub could not register the app (the token limit, or the session is gone).
    #[error("{0}")]
    Register(RegisterError),
    /// The device sent nothing, not even a Ping, for its idle timeout (three heartbeats).
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    /// A message the device began was not complete within [`Settings::frame_timeout`]: a
    /// device dripping bytes would otherwise hold its connection for ever.
    #[error("a message begun was not complete within {after:?} ({buffered} bytes arrived)")]
    Stalled {
        /// Bytes of the incomplete message that had arrived.
        buffered: usize,
        /// The frame deadline.
        after: Duration,
    },
    /// A newer connection with the same serial took over the device's session.
    #[error("another connection for serial {0} replaced this one")]
    Replaced(String),
    /// The simulator is shutting down.
    #[error("simulator shutting down")]
    Shutdown,
}

impl SessionError {
    /// The close code the device is told (every variant named, so a new one must choose).
    pub(crate) fn close_code(&self) -> CloseCode {
        match self {
            SessionError::UnsupportedVersion(_) | SessionError::NotHello(_) => CloseCode::BadHello,
            SessionError::Malformed(_)
            | SessionError::HelloTwice
            | SessionError::UnknownAck(_)
            | SessionError::UnknownNotInstalled(_)
            | SessionError::AckBeyondSent { .. }
            | SessionError::Write(_) => CloseCode::Protocol,
            SessionError::Register(RegisterError::TooManyTokens(_) | RegisterError::Limited(_)) => {
                CloseCode::Limit
            }
            // The hub drops a live session's record only for a newer connection with the
            // same serial.
            SessionError::Register(RegisterError::NotConnected(_)) | SessionError::Replaced(_) => {
                CloseCode::Replaced
            }
            // A stalled message is a device that has stopped talking in the middle of one.
            SessionError::NoHello(_) | SessionError::Idle(_) | SessionError::Stalled { .. } => {
                CloseCode::Idle
            }
            SessionError::Shutdown | SessionError::Register(RegisterError::NotSaved(_)) => {
                CloseCode::Shutdown
            }
        }
    }
}

/// Serves the device endpoint on `listener` until `endpoint.shutdown` fires.
pub async fn run(listener: TcpListener, endpoint: Endpoint, hub: Hub, settings: Arc<Settings>) {
    let shutdown = endpoint.shutdown.clone();
    accept::serve(listener, endpoint, move |stream, peer, admission| {
        handle(
            stream,
            peer,
            admission,
            hub.clone(),
            settings.clone(),
            shutdown.clone(),
        )
    })
    .await;
}

/// One device connection, for as long as it lasts. A plain function that builds the
/// connection before the future that serves it, so that the future holds the connection
/// once: an `async fn` holds its argument and, beside it, the connection it was moved into.
/// The TLS stream stays in the accept loop's box (a pointer here, not the stream's KiB).
fn handle(
    stream: Box<TlsStream<Transport>>,
    peer: SocketAddr,
    mut admission: Admission,
    hub: Hub,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let mut conn = Connection::with_capacity(stream, DEVICE_READ_BUFFER).releasing_idle_buffers();
    async move {
        serve_device(&mut conn, &peer, &mut admission, &hub, &settings, &shutdown).await;
    }
}

/// Sends an `Error` frame and closes. Best effort: the device may already be gone.
async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    error: &SessionError,
) {
    let code = error.close_code();
    let message = error.to_string();
    conn.buffer(|b| encode_server_message(&ServerMessage::Error { code, message }, b));
    let _ = conn.flush().await;
    let _ = conn.shutdown().await;
}

/// One device session, generic over the stream so the tests below drive it over `duplex`.
pub(crate) async fn serve_device<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: &SocketAddr,
    admission: &mut Admission,
    hub: &Hub,
    settings: &Settings,
    shutdown: &CancellationToken,
) {
    // 1. Hello, within its deadline (and, once begun, within the frame deadline). The
    //    decoder refuses a version other than PROTOCOL_VERSION, so a decoded Hello always
    //    speaks ours.
    let hello_due = Instant::now() + settings.hello_timeout;
    let hello = conn
        .read_frame_within(decode_device_message, hello_due, settings.frame_timeout)
        .await;
    let refusal = match hello {
        Ok(Some(DeviceMessage::Hello {
            environment,
            serial,
            ..
        })) => {
            debug!(%peer, %serial, %environment, "hello");
            // The Hello authenticates the device (it leaves the unauthenticated share),
            // unless a newer connection already pushed this one out of it.
            if !admission.authenticated() {
                return;
            }
            return serve_session(conn, hub, settings, shutdown, serial, environment).await;
        }
        Ok(Some(other)) => SessionError::NotHello(Box::new(other)),
        Err(TimedReadError::Read(ReadError::Decode(DeviceProtocolError::UnsupportedVersion(
            version,
        )))) => SessionError::UnsupportedVersion(version),
        Err(TimedReadError::Read(ReadError::Decode(e))) => SessionError::Malformed(e),
        Ok(None) | Err(TimedReadError::Read(ReadError::Truncated(_) | ReadError::Io(_))) => return,
        Err(TimedReadError::Idle) => SessionError::NoHello(settings.hello_timeout),
        Err(TimedReadError::Stalled { buffered, after }) => {
            SessionError::Stalled { buffered, after }
        }
    };
    if matches!(refusal, SessionError::Stalled { .. }) {
        info!(%peer, cause = %refusal, "device stalled in its Hello: Error IDLE, then close");
    }
    close_with(conn, &refusal).await;
}

/// Steps 2 to 4: the session of a device that said hello.
async fn serve_session<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    hub: &Hub,
    settings: &Settings,
    shutdown: &CancellationToken,
    serial: String,
    environment: Environment,
) {
    // 2. Session and welcome.
    let mut session = hub.connect_device(&serial, environment);
    // Step 4 when this function returns, or when its task is dropped where it stands.
    let _online = Online {
        hub,
        serial: &serial,
        environment,
        session: session.id,
    };
    let heartbeat_secs = settings
        .device_heartbeat
        .as_secs()
        .clamp(1, u16::MAX as u64) as u16;
    conn.buffer(|b| encode_server_message(&ServerMessage::Welcome { heartbeat_secs }, b));
    if conn.flush().await.is_err() {
        return;
    }

    // 3. Serve until something ends the session.
    let idle = settings.device_idle_timeout();
    let mut deadline = Instant::now() + idle;
    let mut faults = SessionFaults::default();
    // The last delivery written to the device (an AckThrough may not go past it), and the
    // answers of one read, gathered for the hub (kept between reads to reuse the buffer).
    let mut last_sent = 0u64;
    let mut answers: Vec<DeviceAnswer> = Vec::new();
    // Armed once for the whole session rather than on every turn of the loop: the
    // shutdown signal, and the idle timer, which a complete message does not move (it only
    // moves `deadline`); when the timer fires before `deadline` it is moved on to it.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    // The timer in a box of its own: the session's task (every idle device's largest
    // allocation but TLS) holds a pointer instead of its 112 bytes.
    let mut idle_timer = Box::pin(tokio::time::sleep_until(deadline));
    let ended: Option<SessionError> = loop {
        let next_late = faults.next_late();
        tokio::select! {
            _ = &mut cancelled => break Some(SessionError::Shutdown),
            _ = &mut idle_timer => {
                if deadline > Instant::now() {
                    idle_timer.as_mut().reset(deadline);
                    continue;
                }
                // As the frame deadline would have said: a message under way has stalled.
                break Some(match conn.buffered() {
                    0 => SessionError::Idle(idle),
                    buffered => SessionError::Stalled { buffered, after: settings.frame_timeout },
                });
            }
            next = session.rx.recv() => {
                let Some(first) = next else {
                    break Some(SessionError::Replaced(serial.clone()));
                };
                let mut dropped = false;
                let mut n = first;
                let mut batched = 0;
                loop {
                    if faults.deliver(hub, &serial, session.id, &n) {
                        dropped = true;
                        break;
                    }
                    last_sent = n.delivery;
                    conn.buffer(|b| encode_notification(&n.fields(), b));
                    batched += 1;
                    if batched == MAX_BATCH {
                        break;
                    }
                    match session.rx.try_recv() {
                        Ok(more) => n = more,
                        Err(_) => break,
                    }
                }
                // The write has the transport's deadline (a device that stops reading is
                // cut off after `Settings::write_timeout`), and gives way to shutdown: either
                // way no goodbye is written to a device that takes no bytes, and step 4
                // routes what it had not acknowledged again.
                let flushed = tokio::select! {
                    r = conn.flush() => Some(r),
                    _ = &mut cancelled => None,
                };
                match flushed {
                    Some(Ok(())) => {}
                    Some(Err(err)) => {
                        info!(%serial, %err, "device write failed: session ended, its pending notifications routed again");
                        break None;
                    }
                    None => {
                        debug!(%serial, "shutdown during a write to the device");
                        break None;
                    }
                }
                if dropped {
                    // Dropped without a word, as a network failure would; the hub routes what
                    // the session had not acknowledged again.
                    break None;
                }
            }
            // The timer is made (boxed) only when the branch is polled, that is when an
            // answer is held back: a `Sleep` kept in every session's task for a fault that
            // almost never comes would cost over 100 bytes each.
            _ = async move {
                if let Some(at) = next_late {
                    Box::pin(tokio::time::sleep_until(at)).await;
                }
            }, if next_late.is_some() => {
                if let Some((delivery, reply)) = faults.pop_late() {
                    if !hub.device_reply(session.id, delivery, reply) {
                        debug!(delivery, "a delayed answer found its delivery gone");
                    }
                }
            }
            // Cancel-safe: a message under way, and when it began, stay in `conn` while
            // another branch runs.
            read = conn.read_frame_begun_within(decode_device_message, settings.frame_timeout) => {
                let msg = match read {
                    Err(TimedReadError::Idle) => break Some(SessionError::Idle(idle)),
                    Err(TimedReadError::Stalled { buffered, after }) => {
                        break Some(SessionError::Stalled { buffered, after })
                    }
                    Ok(None) => break None,
                    Err(TimedReadError::Read(ReadError::Decode(e))) => {
                        break Some(SessionError::Malformed(e))
                    }
                    Err(err) => {
                        debug!(%err, "device connection ended");
                        break None;
                    }
                    Ok(Some(msg)) => msg,
                };
                deadline = Instant::now() + idle;
                let who = Who { serial: &serial, environment, session: session.id, token_len: settings.token_len };
                let mut read = Read { faults: &mut faults, answers: &mut answers, last_sent, registered: false };
                if let Err(problem) = read.handle(conn, hub, &who, msg).await {
                    break Some(problem);
                }
            }
        }
    };
    if let Some(error) = ended {
        if error.close_code() == CloseCode::Protocol {
            warn!(%serial, message = %error, "device protocol error");
        }
        if matches!(error, SessionError::Stalled { .. }) {
            info!(%serial, cause = %error, "device stalled in a message: Error IDLE, then close; its pending notifications routed again");
        }
        close_with(conn, &error).await;
    }
    // 4. `_online` hands back what was not acknowledged.
}

/// A device's session while it is online: dropping it is step 4 (the hub takes the session
/// offline and routes what it had not acknowledged again). A guard rather than a call at
/// the end, so that it also runs when shutdown aborts the task mid-write
/// ([`crate::server::accept::abortable`]), before the store is closed.
struct Online<'a> {
    /// The routing core.
    hub: &'a Hub,
    /// The device's serial.
    serial: &'a str,
    /// The device's environment.
    environment: Environment,
    /// The hub's session id.
    session: u64,
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.hub
            .disconnect_device(self.serial, self.environment, self.session);
    }
}

/// What faults on `devices` made of a session's deliveries: answers to withhold or delay.
/// Boxed, and only once a fault hits one of the session's deliveries: most sessions never
/// meet a fault, and the three collections would take 120 bytes of every session's task.
#[derive(Debug, Default)]
struct SessionFaults(Option<Box<FaultState>>);

/// The collections of [`SessionFaults`].
#[derive(Debug, Default)]
struct FaultState {
    /// Deliveries whose answer is never passed on (`withhold_ack`), with the fault's id.
    withheld: HashMap<u64, String>,
    /// Deliveries whose answer is passed on late (`delay_ms`), and by how much.
    delayed: HashMap<u64, Duration>,
    /// Answers held back until their time, by (time, delivery). Only deliveries in `delayed`
    /// get here, and those are pending in the hub, so this is bounded like them
    /// (`MAX_UNACKED_PER_SESSION`).
    late: BTreeMap<(Instant, u64), DeviceReply>,
}

impl SessionFaults {
    /// Asks the hub for a fault on a notification about to be written. True: drop the
    /// connection instead (the notification stays pending and is routed again).
    fn deliver(&mut self, hub: &Hub, serial: &str, session: u64, n: &Outgoing) -> bool {
        let Some(hit) = hub.fault(&Probe {
            on: FaultOn::Devices,
            phase: Phase::Notification,
            token: Some(n.token()),
            topic: None,
            connection: None,
            serial: Some(serial),
        }) else {
            return false;
        };
        hub.mark_delivery_fault(session, n.delivery, &hit.id);
        match hit.effect {
            Effect::Drop => {
                info!(serial, fault = %hit.id, delivery = n.delivery, "fault: device connection dropped");
                return true;
            }
            Effect::WithholdAck => {
                let state = self.0.get_or_insert_default();
                state.withheld.insert(n.delivery, hit.id);
            }
            Effect::Delay(ms) => {
                let state = self.0.get_or_insert_default();
                state.delayed.insert(n.delivery, Duration::from_millis(ms));
            }
            _ => {}
        }
        false
    }

    /// Takes the device's answer to a delivery a fault withholds or delays. True: handled
    /// here (the hub hears of it late, or never). An AckThrough is never handled here: the
    /// deliveries up to it that a fault withholds or delays are taken out of it (the hub
    /// passes over them, [`DeviceAnswer::Through`]), and the rest goes to the hub.
    fn intercept(&mut self, msg: &DeviceMessage) -> bool {
        let Some(state) = self.0.as_deref_mut() else {
            return false;
        };
        let (delivery, reply) = match msg {
            DeviceMessage::Ack { delivery } => (*delivery, DeviceReply::Ack),
            DeviceMessage::NotInstalled { delivery } => (*delivery, DeviceReply::NotInstalled),
            DeviceMessage::AckThrough { delivery } => {
                state.intercept_through(*delivery);
                return false;
            }
            _ => return false,
        };
        if let Some(fault) = state.withheld.remove(&delivery) {
            info!(delivery, %fault, "fault: the device's answer is withheld");
            return true;
        }
        if let Some(delay) = state.delayed.remove(&delivery) {
            state.late.insert((Instant::now() + delay, delivery), reply);
            return true;
        }
        false
    }

    /// When the next delayed answer is due, if one is held back.
    fn next_late(&self) -> Option<Instant> {
        let state = self.0.as_deref()?;
        state.late.keys().next().map(|(at, _)| *at)
    }

    /// Takes the delayed answer due first.
    fn pop_late(&mut self) -> Option<(u64, DeviceReply)> {
        let state = self.0.as_deref_mut()?;
        state
            .late
            .pop_first()
            .map(|((_, delivery), reply)| (delivery, reply))
    }
}

impl FaultState {
    /// What [`SessionFaults::intercept`] does for the deliveries up to `through` that a
    /// fault withholds or delays, which an AckThrough acknowledges together.
    fn intercept_through(&mut self, through: u64) {
        if !self.withheld.is_empty() {
            self.withheld.retain(|&delivery, fault| {
                let covered = delivery <= through;
                if covered {
                    info!(delivery, %fault, "fault: the device's answer is withheld");
                }
                !covered
            });
        }
        if !self.delayed.is_empty() {
            let now = Instant::now();
            let late = &mut self.late;
            self.delayed.retain(|&delivery, delay| {
                let covered = delivery <= through;
                if covered {
                    late.insert((now + *delay, delivery), DeviceReply::Ack);
                }
                !covered
            });
        }
    }
}

/// The session a message arrived on, and the length of the tokens it is given.
struct Who<'a> {
    /// The device's serial.
    serial: &'a str,
    /// The device's environment.
    environment: Environment,
    /// The hub's session id.
    session: u64,
    /// `Settings::token_len`.
    token_len: usize,
}

/// One read's worth of frames from the device, handled together: the answers about
/// deliveries (Ack, NotInstalled, AckThrough) go to the hub in one step
/// ([`Hub::device_answers`]), and what is written back goes out in one write.
struct Read<'a> {
    /// The session's faults, which may take an answer out.
    faults: &'a mut SessionFaults,
    /// The answers gathered since they were last handed to the hub (empty between reads).
    answers: &'a mut Vec<DeviceAnswer>,
    /// The last delivery written to the device.
    last_sent: u64,
    /// A token was registered in this read: with durable state, its answer waits for
    /// the commit ([`Hub::synced`]).
    registered: bool,
}

impl Read<'_> {
    /// Handles `first` and every whole frame already buffered after it, in order. An `Err`
    /// ends the session with that error (the answers before it stand).
    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        hub: &Hub,
        who: &Who<'_>,
        first: DeviceMessage,
    ) -> Result<(), SessionError> {
        let mut wrote = false;
        let mut next = Some(first);
        while let Some(msg) = next {
            if let Err(problem) = self.answer(conn, hub, who, msg, &mut wrote) {
                // What came before the problem stands, as if it had been read alone.
                self.settle(hub, who)?;
                return Err(problem);
            }
            next = match conn.buffered_frame(decode_device_message) {
                Ok(next) => next,
                Err(e) => {
                    self.settle(hub, who)?;
                    return Err(SessionError::Malformed(e));
                }
            };
        }
        self.settle(hub, who)?;
        if std::mem::take(&mut self.registered) && hub.is_durable() {
            // Boxed: awaited only with durable state, and its future (over 400 bytes) would
            // otherwise be part of every session's task.
            let saved = Box::pin(hub.synced()).await;
            saved.map_err(|e| SessionError::Register(RegisterError::NotSaved(e.0)))?;
        }
        if wrote {
            conn.flush().await.map_err(SessionError::Write)?;
        }
        Ok(())
    }

    /// Handles one message: an answer is gathered, anything else is answered in turn (after
    /// the answers before it reached the hub, so the log keeps the device's order).
    fn answer<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        hub: &Hub,
        who: &Who<'_>,
        msg: DeviceMessage,
        wrote: &mut bool,
    ) -> Result<(), SessionError> {
        if self.faults.intercept(&msg) {
            return Ok(());
        }
        let (serial, environment) = (who.serial, who.environment);
        match msg {
            DeviceMessage::Hello { .. } => return Err(SessionError::HelloTwice),
            DeviceMessage::Register {
                fresh_install,
                app,
                kind,
            } => {
                self.settle(hub, who)?;
                let wanted = AppToken { app, kind };
                let token = hub
                    .register_token(serial, environment, &wanted, fresh_install, who.token_len)
                    .map_err(SessionError::Register)?;
                let AppToken { app, kind } = wanted;
                let registered = ServerMessage::Registered { app, kind, token };
                conn.buffer(|b| encode_server_message(&registered, b));
                *wrote = true;
                self.registered = true;
            }
            DeviceMessage::Ack { delivery } => self.answers.push(DeviceAnswer::One {
                delivery,
                reply: DeviceReply::Ack,
            }),
            DeviceMessage::NotInstalled { delivery } => {
                info!(serial, delivery, "device reported app not installed");
                self.answers.push(DeviceAnswer::One {
                    delivery,
                    reply: DeviceReply::NotInstalled,
                });
            }
            DeviceMessage::AckThrough { delivery } => {
                if delivery > self.last_sent {
                    return Err(SessionError::AckBeyondSent {
                        delivery,
                        last: self.last_sent,
                    });
                }
                self.answers.push(DeviceAnswer::Through { delivery });
            }
            DeviceMessage::Ping { nonce } => {
                conn.buffer(|b| encode_server_message(&ServerMessage::Pong { nonce }, b));
                *wrote = true;
            }
        }
        Ok(())
    }

    /// Hands the gathered answers to the hub, under one lock.
    fn settle(&mut self, hub: &Hub, who: &Who<'_>) -> Result<(), SessionError> {
        if self.answers.is_empty() {
            return Ok(());
        }
        let result = hub.device_answers(who.session, self.answers);
        self.answers.clear();
        result.map_err(|(delivery, reply)| match reply {
            DeviceReply::Ack => SessionError::UnknownAck(delivery),
            DeviceReply::NotInstalled => SessionError::UnknownNotInstalled(delivery),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use tokio::io::DuplexStream;
    use tokio::sync::broadcast;
    use uuid::Uuid;

    use crate::clock::Clock;
    use crate::hub::{Api, Event, Logged, Outcome, PushRequest};
    use crate::protocol::device::{decode_server_message, encode_device_message};
    use crate::protocol::token::{DeviceToken, TokenKind};

    /// Generous: a healthy test never waits this long.
    const TIMEOUT: Duration = Duration::from_secs(30);
    const APP: &str = "com.example.app";

    /// The device's end of an 8-byte pipe to a served session, so every frame crosses it in
    /// pieces.
    struct Device {
        conn: Connection<DuplexStream>,
        served: tokio::task::JoinHandle<()>,
    }

    fn serve(hub: &Hub, shutdown: &CancellationToken) -> Device {
        serve_with(hub, shutdown, Settings::default())
    }

    fn serve_with(hub: &Hub, shutdown: &CancellationToken, settings: Settings) -> Device {
        let (device, server) = tokio::io::duplex(8);
        let hub = hub.clone();
        let shutdown = shutdown.clone();
        let served = tokio::spawn(async move {
            let mut conn = Connection::new(server);
            let peer = SocketAddr::from(([127, 0, 0, 1], 1));
            serve_device(
                &mut conn,
                &peer,
                &mut Admission::authenticated_peer(),
                &hub,
                &settings,
                &shutdown,
            )
            .await;
        });
        Device {
            conn: Connection::new(device),
            served,
        }
    }

    impl Device {
        async fn send(&mut self, m: DeviceMessage) {
            self.conn.buffer(|b| encode_device_message(&m, b));
            self.conn.flush().await.unwrap();
        }

        async fn send_raw(&mut self, bytes: &[u8]) {
            self.conn.write_all(bytes).await.unwrap();
        }

        async fn next(&mut self) -> ServerMessage {
            tokio::time::timeout(TIMEOUT, self.conn.read_frame(decode_server_message))
                .await
                .expect("answer in time")
                .expect("valid frame")
                .expect("a frame, not the end")
        }

        /// Reads the Error frame, then expects the end of the stream and of the task.
        async fn closed_with(mut self) -> (CloseCode, String) {
            let ServerMessage::Error { code, message } = self.next().await else {
                panic!("expected an Error frame");
            };
            let end = tokio::time::timeout(TIMEOUT, self.conn.read_frame(decode_server_message))
                .await
                .expect("closed in time");
            assert!(matches!(end, Ok(None)), "{end:?}");
            tokio::time::timeout(TIMEOUT, self.served)
                .await
                .expect("session task ends")
                .unwrap();
            (code, message)
        }
    }

    fn hello(version: u8) -> DeviceMessage {
        DeviceMessage::Hello {
            version,
            environment: Environment::Sandbox,
            serial: "DUPLEX-1".into(),
        }
    }

    async fn acknowledged(events: &mut broadcast::Receiver<Logged>, id: u32) {
        let wait = async {
            loop {
                if let Event::Notification {
                    identifier,
                    outcome: Outcome::Acknowledged,
                    ..
                } = events.recv().await.unwrap().event
                {
                    if identifier == id {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .expect("acknowledged in time");
    }

    /// Pushes `id` to `token`; `expiry` as the provider gave it (`Some(0)`: now or never).
    fn push(hub: &Hub, token: DeviceToken, id: u32, expiry: Option<u32>) {
        hub.push(PushRequest {
            api: Api::Binary,
            token,
            topic: APP.into(),
            environment: Environment::Sandbox,
            identifier: id.to_be_bytes(),
            apns_id: Uuid::new_v4(),
            expiry,
            priority: 10,
            push_type: None,
            collapse_id: None,
            payload: Bytes::from_static(br#"{"aps":{}}"#),
            frame: None,
            fault: None,
        })
        .unwrap();
    }

    #[tokio::test]
    async fn a_session_across_a_tiny_pipe() {
        let hub = Hub::new(Clock::system());
        let mut events = hub.subscribe();
        let shutdown = CancellationToken::new();
        let mut device = serve(&hub, &shutdown);

        device.send(hello(PROTOCOL_VERSION)).await;
        let welcome = device.next().await;
        assert_eq!(welcome, ServerMessage::Welcome { heartbeat_secs: 30 });

        device
            .send(DeviceMessage::Register {
                fresh_install: true,
                app: APP.into(),
                kind: TokenKind::Remote,
            })
            .await;
        let ServerMessage::Registered { app, kind, token } = device.next().await else {
            panic!("expected Registered");
        };
        assert_eq!((app.as_str(), kind), (APP, TokenKind::Remote));
        assert_eq!(token.len(), DeviceToken::LEN);

        push(&hub, token, 7, Some(0));
        let ServerMessage::Notification(n) = device.next().await else {
            panic!("expected a Notification");
        };
        assert_eq!((n.token, n.identifier), (token, 7u32.to_be_bytes()));
        device
            .send(DeviceMessage::Ack {
                delivery: n.delivery,
            })
            .await;
        acknowledged(&mut events, 7).await;

        device.send(DeviceMessage::Ping { nonce: 99 }).await;
        assert_eq!(device.next().await, ServerMessage::Pong { nonce: 99 });

        shutdown.cancel();
        let (code, message) = device.closed_with().await;
        assert_eq!(code, CloseCode::Shutdown);
        assert_eq!(message, "simulator shutting down");
    }

    /// Says hello, reads the welcome, registers [`APP`] and returns its token.
    async fn registered(device: &mut Device) -> DeviceToken {
        device.send(hello(PROTOCOL_VERSION)).await;
        assert!(matches!(device.next().await, ServerMessage::Welcome { .. }));
        device
            .send(DeviceMessage::Register {
                fresh_install: false,
                app: APP.into(),
                kind: TokenKind::Remote,
            })
            .await;
        let ServerMessage::Registered { token, .. } = device.next().await else {
            panic!("expected Registered");
        };
        token
    }

    /// The idle timer is armed once per session and moved on only when it fires: pings
    /// that keep coming keep the session open across many idle periods, and once they
    /// stop the session ends IDLE (paused time: the waits are the device's pacing, and time
    /// moves on only when every task is idle).
    #[tokio::test(start_paused = true)]
    async fn pings_keep_a_session_past_its_idle_deadline_until_they_stop() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let settings = Settings {
            device_heartbeat: Duration::from_secs(1),
            ..Settings::default()
        };
        let idle = settings.device_idle_timeout();
        let mut device = serve_with(&hub, &shutdown, settings);
        registered(&mut device).await;
        // Ten pings two seconds apart: twenty seconds, more than six idle periods of 3 s.
        for nonce in 0..10 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            device.send(DeviceMessage::Ping { nonce }).await;
            assert_eq!(device.next().await, ServerMessage::Pong { nonce });
        }
        let (code, message) = device.closed_with().await;
        assert_eq!(code, CloseCode::Idle);
        assert_eq!(message, format!("nothing received for {idle:?}"));
    }

    /// The shutdown signal armed once for the session still ends it in the middle of a
    /// session that has served notifications and answers.
    #[tokio::test]
    async fn shutdown_ends_a_session_that_has_been_busy() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let mut device = serve(&hub, &shutdown);
        let token = registered(&mut device).await;
        for id in 0..3 {
            push(&hub, token, id, None);
            let ServerMessage::Notification(n) = device.next().await else {
                panic!("expected a Notification");
            };
            device
                .send(DeviceMessage::Ack {
                    delivery: n.delivery,
                })
                .await;
            device
                .send(DeviceMessage::Ping {
                    nonce: u64::from(id),
                })
                .await;
            assert_eq!(
                device.next().await,
                ServerMessage::Pong {
                    nonce: u64::from(id)
                }
            );
        }
        shutdown.cancel();
        let (code, _) = device.closed_with().await;
        assert_eq!(code, CloseCode::Shutdown);
    }

    #[tokio::test]
    async fn a_message_dripped_after_hello_is_cut_off_at_the_frame_deadline() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let settings = Settings {
            frame_timeout: Duration::from_millis(50),
            ..Settings::default()
        };
        let mut device = serve_with(&hub, &shutdown, settings);
        registered(&mut device).await;
        // The first two bytes of a Ping (type, half its length), and no more: the idle
        // deadline is 90 s away, the frame deadline ends it.
        device.send_raw(&[0x05, 0x00]).await;
        let (code, message) = device.closed_with().await;
        assert_eq!(code, CloseCode::Idle);
        assert_eq!(
            message,
            "a message begun was not complete within 50ms (2 bytes arrived)"
        );
    }

    #[tokio::test]
    async fn a_dripped_hello_is_cut_off_at_the_frame_deadline() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let settings = Settings {
            frame_timeout: Duration::from_millis(50),
            hello_timeout: Duration::from_secs(3600),
            ..Settings::default()
        };
        let mut device = serve_with(&hub, &shutdown, settings);
        device.send_raw(&[0x01]).await;
        let (code, message) = device.closed_with().await;
        assert_eq!(code, CloseCode::Idle);
        assert_eq!(
            message,
            "a message begun was not complete within 50ms (1 bytes arrived)"
        );
    }

    #[tokio::test]
    async fn an_aborted_session_still_goes_offline_and_routes_its_pending_again() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let mut device = serve(&hub, &shutdown);
        let token = registered(&mut device).await;
        // Delivered, never acknowledged.
        push(&hub, token, 7, None);
        let ServerMessage::Notification(n) = device.next().await else {
            panic!("expected a Notification");
        };
        assert_eq!(n.identifier, 7u32.to_be_bytes());
        // What shutdown does past its deadline: the task is dropped where it stands.
        let Device { conn, served } = device;
        served.abort();
        assert!(served.await.unwrap_err().is_cancelled());
        let known = hub.devices(10);
        assert_eq!(known.len(), 1);
        assert!(
            !known[0].online,
            "the aborted session left the device online"
        );
        // The notification was stored again: a new session of the device receives it.
        let mut again = hub.connect_device("DUPLEX-1", Environment::Sandbox);
        let stored = again
            .rx
            .try_recv()
            .expect("the unacknowledged notification, stored");
        assert_eq!(stored.to_message().identifier, 7u32.to_be_bytes());
        drop(conn);
    }

    #[tokio::test]
    async fn a_wrong_version_over_a_tiny_pipe_is_a_bad_hello() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();
        let mut device = serve(&hub, &shutdown);
        device.send(hello(9)).await;
        let (code, message) = device.closed_with().await;
        assert_eq!(code, CloseCode::BadHello);
        assert_eq!(
            message,
            "unsupported device protocol version 9 (this simulator speaks 1)"
        );
    }

    #[tokio::test]
    async fn protocol_errors_over_a_tiny_pipe_name_the_problem() {
        let hub = Hub::new(Clock::system());
        let shutdown = CancellationToken::new();

        let mut device = serve(&hub, &shutdown);
        device.send(hello(PROTOCOL_VERSION)).await;
        device.next().await;
        device.send(hello(PROTOCOL_VERSION)).await;
        let closed = device.closed_with().await;
        assert_eq!(closed, (CloseCode::Protocol, "Hello sent twice".to_owned()));

        let mut device = serve(&hub, &shutdown);
        device.send(hello(PROTOCOL_VERSION)).await;
        device.next().await;
        device.send(DeviceMessage::Ack { delivery: 41 }).await;
        let closed = device.closed_with().await;
        assert_eq!(
            closed,
            (
                CloseCode::Protocol,
                "Ack for unknown delivery 41".to_owned()
            )
        );

        let mut device = serve(&hub, &shutdown);
        device.send(hello(PROTOCOL_VERSION)).await;
        device.next().await;
        device
            .send_raw(&[
                0x05, // type Ping
                0x00, 0x09, // body length 9: one byte too many
                0, 0, 0, 0, 0, 0, 0, 1, 0xEE,
            ])
            .await;
        let closed = device.closed_with().await;
        assert_eq!(
            closed,
            (
                CloseCode::Protocol,
                "message type 0x05 has 1 unexpected trailing bytes".to_owned()
            )
        );
    }

    #[test]
    fn close_codes_of_session_errors() {
        let cases = [
            (SessionError::UnsupportedVersion(2), CloseCode::BadHello),
            (
                SessionError::NotHello(Box::new(DeviceMessage::Ping { nonce: 1 })),
                CloseCode::BadHello,
            ),
            (
                SessionError::NoHello(Duration::from_secs(1)),
                CloseCode::Idle,
            ),
            (
                SessionError::Malformed(DeviceProtocolError::UnknownType(0x7F)),
                CloseCode::Protocol,
            ),
            (SessionError::HelloTwice, CloseCode::Protocol),
            (SessionError::UnknownAck(1), CloseCode::Protocol),
            (SessionError::UnknownNotInstalled(1), CloseCode::Protocol),
            (
                SessionError::Write(std::io::ErrorKind::BrokenPipe.into()),
                CloseCode::Protocol,
            ),
            (
                SessionError::Register(RegisterError::TooManyTokens(1)),
                CloseCode::Limit,
            ),
            (
                SessionError::Register(RegisterError::NotConnected("S".into())),
                CloseCode::Replaced,
            ),
            (SessionError::Idle(Duration::from_secs(90)), CloseCode::Idle),
            (
                SessionError::Stalled {
                    buffered: 1,
                    after: Duration::from_secs(10),
                },
                CloseCode::Idle,
            ),
            (SessionError::Replaced("S".into()), CloseCode::Replaced),
            (SessionError::Shutdown, CloseCode::Shutdown),
        ];
        for (error, code) in cases {
            assert_eq!(error.close_code(), code, "{error}");
        }
    }
}
