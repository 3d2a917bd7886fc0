//! The accept loop every TLS endpoint shares: admission (handshake budget, connection
//! limit, the unauthenticated share), the TLS handshake inside the connection's own task
//! with a deadline, a write deadline on every connection, a tracing span per connection,
//! and shutdown (with an abort for whatever does not end in time).
//!
//! Each endpoint (gateway, feedback, devices, HTTP/2) supplies only what it does with an
//! established TLS stream.
//!
//! # Admission
//!
//! 1. The loop accepts every TCP connection at once and gives it a seat among the
//!    *handshaking* ones ([`Endpoint::max_handshaking`]). When they are all taken, the oldest
//!    handshaking connection gives way (it is closed): a flood of sockets that never send a
//!    ClientHello therefore never keeps a newcomer waiting, and each of them lasts at most
//!    [`Endpoint::handshake_timeout`].
//! 2. Once its handshake is done, a connection needs one of the endpoint's
//!    [`Endpoint::max_connections`] slots (it waits for one in its handshaking seat, where
//!    newcomers can still push it out). Only then does it leave the handshaking seats.
//! 3. A peer that presented no client certificate is *unauthenticated* until the endpoint
//!    says otherwise ([`Admission::authenticated`]: an HTTP/2 connection's first valid
//!    provider token, a device's Hello). The unauthenticated hold at most
//!    [`Endpoint::max_unauthenticated`] slots; a newcomer beyond that makes the oldest of them
//!    give way, so they can neither take the slots authenticated peers need nor keep a new
//!    one out. No rule looks at the source address.
//!
//! A handshake that fails or times out is logged at warn level (shown by default) with the
//! endpoint, the peer and the cause in words (`handshake_failure`): a client refused
//! here sees only a TLS alert or a closed socket, so the log is where it learns why.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::hub::Metrics;
use crate::server::write_deadline::WriteDeadline;

/// How long to wait before accepting again after `accept` fails (for example when the
/// process is out of file descriptors), so that a persistent error does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The transport under every endpoint's TLS: TCP with a deadline on each write.
pub type Transport = WriteDeadline<TcpStream>;

/// What an endpoint's accept loop needs besides its listener.
#[derive(Clone)]
pub struct Endpoint {
    /// Name used in logs ("gateway", "feedback", "devices", "http2").
    pub name: &'static str,
    /// TLS configuration, built once.
    pub acceptor: TlsAcceptor,
    /// At most this many established connections at once; a connection whose handshake is
    /// done waits for a free slot in its handshaking seat.
    pub max_connections: usize,
    /// At most this many connections in their TLS handshake; past it the oldest gives way
    /// ([`crate::settings::Settings::max_handshaking`]).
    pub max_handshaking: usize,
    /// The listen backlog the accept loop sets on its listener before it starts
    /// ([`crate::settings::Settings::listen_backlog`]): connections that arrive faster than
    /// the loop takes them wait there instead of losing their SYN.
    pub listen_backlog: u32,
    /// At most this many established connections not yet authenticated; past it the oldest
    /// gives way ([`crate::settings::Settings::unauthenticated_share_percent`]).
    pub max_unauthenticated: usize,
    /// A client that has not finished the TLS handshake by then is dropped (slow-loris
    /// defence: an idle half-open TLS socket is the classic way to exhaust a server).
    pub handshake_timeout: Duration,
    /// Every write must make progress within this ([`WriteDeadline`]).
    pub write_timeout: Duration,
    /// Stops accepting and tells every connection to wind down.
    pub shutdown: CancellationToken,
    /// Fired when shutdown has waited long enough: every connection task still running is
    /// dropped where it stands.
    pub abort: CancellationToken,
    /// Tracks connection tasks, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Where established connections are counted (`apns_sim_connections_total` and
    /// `_open`, labelled with `name`).
    pub metrics: Metrics,
}

/// Runs `task` until it ends or `abort` fires, whichever comes first (then `task` is
/// dropped where it stands). Everything the simulator spawns runs under this, so that
/// shutdown can always end it.
///
/// `task` is boxed here, outside the future that waits on it, so that it is stored once: as
/// an `async fn` argument moved into a `select!` it was stored twice, which made every device
/// session's task twice the size it needs (18 KiB then, over half of what a session cost).
pub fn abortable<F: Future<Output = ()>>(
    abort: CancellationToken,
    task: F,
) -> impl Future<Output = ()> {
    let task = Box::pin(task);
    async move {
        tokio::select! {
            _ = abort.cancelled() => debug!("aborted at the shutdown deadline"),
            _ = task => {}
        }
    }
}

/// A bounded set of seats in which, when all are taken, the oldest occupant gives way to a
/// newcomer (its token is cancelled; its task notices and closes the connection).
#[derive(Debug)]
struct Seats {
    capacity: usize,
    /// Occupants by arrival (the first is the oldest), each with the token that tells it to
    /// give way.
    taken: Mutex<(u64, BTreeMap<u64, CancellationToken>)>,
}

/// One occupant's seat; leaving (or dropping it) frees it.
#[derive(Debug)]
struct Seat {
    seats: Arc<Seats>,
    id: u64,
    /// Cancelled when a newcomer took the seat.
    gave_way: CancellationToken,
}

impl Seats {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Seats {
            capacity: capacity.max(1),
            taken: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// Takes a seat, making the oldest occupants give way while all are taken. Returns how
    /// many gave way.
    fn take(self: &Arc<Self>) -> (Seat, usize) {
        let gave_way = CancellationToken::new();
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = 0;
        while taken.1.len() >= self.capacity {
            let Some((_, oldest)) = taken.1.pop_first() else {
                break;
            };
            oldest.cancel();
            evicted += 1;
        }
        let id = taken.0;
        taken.0 += 1;
        taken.1.insert(id, gave_way.clone());
        let seat = Seat {
            seats: self.clone(),
            id,
            gave_way,
        };
        (seat, evicted)
    }
}

impl Seat {
    /// Frees the seat: true if it was still held, false if a newcomer had already taken it
    /// (the occupant must then close).
    fn leave(&self) -> bool {
        let mut taken = self.seats.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.1.remove(&self.id).is_some()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.leave();
    }
}

/// An established connection's standing with the admission rules, handed to the endpoint.
#[derive(Debug)]
pub struct Admission {
    /// The seat among the unauthenticated, while the peer is one of them.
    unauthenticated: Option<Seat>,
}

impl Admission {
    /// The peer proved who it is (a valid provider token, a device's Hello): it leaves the
    /// unauthenticated share and can no longer be made to give way. False if it had
    /// already given way: the endpoint must then end the connection at once.
    pub fn authenticated(&mut self) -> bool {
        match self.unauthenticated.take() {
            Some(seat) => seat.leave(),
            None => true,
        }
    }

    /// Whether the peer is still counted among the unauthenticated.
    pub fn is_unauthenticated(&self) -> bool {
        self.unauthenticated.is_some()
    }

    /// An admission for a connection that needs none (the tests' own loops).
    pub fn authenticated_peer() -> Self {
        Admission {
            unauthenticated: None,
        }
    }
}

/// Runs the accept loop until shutdown. `handle` gets each established TLS stream, in the
/// box the handshake put it in: an endpoint that keeps it there for the connection's life
/// (the device endpoint) stores a pointer in its future instead of the stream (over a
/// KiB), and one that takes it out frees the box at once.
pub async fn serve<H, F>(listener: TcpListener, endpoint: Endpoint, handle: H)
where
    H: Fn(Box<TlsStream<Transport>>, SocketAddr, Admission) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    if let Err(err) = set_backlog(&listener, endpoint.listen_backlog) {
        let backlog = endpoint.listen_backlog;
        warn!(endpoint = endpoint.name, %err, backlog, "could not set the listen backlog: the one it was bound with stays");
    }
    let handle = Arc::new(handle);
    let limit = Arc::new(Semaphore::new(endpoint.max_connections));
    let handshaking = Seats::new(endpoint.max_handshaking);
    let unauthenticated = Seats::new(endpoint.max_unauthenticated);
    loop {
        // 1. Accept at once: admission happens in the connection's own task.
        let (tcp, peer) = tokio::select! {
            _ = endpoint.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    warn!(endpoint = endpoint.name, %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // 2. A handshaking seat, taken here so that arrival order decides who is oldest.
        let (seat, evicted) = handshaking.take();
        if evicted > 0 {
            debug!(
                endpoint = endpoint.name,
                evicted, "handshaking seats full: the oldest gave way"
            );
        }
        let task = Admit {
            acceptor: endpoint.acceptor.clone(),
            handshake_timeout: endpoint.handshake_timeout,
            write_timeout: endpoint.write_timeout,
            shutdown: endpoint.shutdown.clone(),
            metrics: endpoint.metrics.clone(),
            name: endpoint.name,
            limit: limit.clone(),
            unauthenticated: unauthenticated.clone(),
        };
        let span = info_span!("conn", endpoint = endpoint.name, %peer);
        // `run`'s future itself, not an `async` block awaiting it: the block would keep its
        // own copy of every argument beside the future's, for the connection's whole life.
        endpoint.tracker.spawn(abortable(
            endpoint.abort.clone(),
            task.run(tcp, peer, seat, handle.clone()).instrument(span),
        ));
    }
}

/// Sets a bound listener's listen backlog: however it was bound (tokio's `bind` asks for
/// 128), a second `listen` on a listening socket changes only its backlog (the kernel caps it
/// at its own maximum, `net.core.somaxconn` on Linux).
fn set_backlog(listener: &TcpListener, backlog: u32) -> std::io::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket2::SockRef::from(listener).listen(backlog)
}

/// What one connection's task needs to be admitted.
struct Admit {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    write_timeout: Duration,
    shutdown: CancellationToken,
    metrics: Metrics,
    name: &'static str,
    limit: Arc<Semaphore>,
    unauthenticated: Arc<Seats>,
}

impl Admit {
    /// Handshake, slot, then the endpoint's handler (steps 2 and 3 of the module docs). A
    /// plain function that starts the handshake before the future that awaits it, so that
    /// the future holds the boxed handshake rather than the TCP stream beside it.
    fn run<H, F>(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        seat: Seat,
        handle: Arc<H>,
    ) -> impl Future<Output = ()>
    where
        H: Fn(Box<TlsStream<Transport>>, SocketAddr, Admission) -> F,
        F: Future<Output = ()>,
    {
        let deadline = self.handshake_timeout;
        let tcp = WriteDeadline::new(tcp, self.write_timeout);
        // 2a. The handshake, unless a newcomer takes the seat first. Its future, and the
        //     stream (handed to the handler in that box), are boxed: this task lives as long
        //     as the connection, and what only the handshake needs should not stay in it.
        let handshake = Box::pin(tokio::time::timeout(deadline, self.acceptor.accept(tcp)));
        self.admit(handshake, peer, seat, handle)
    }

    /// [`Admit::run`] from the handshake on.
    async fn admit<H, F, Hs>(self, handshake: Hs, peer: SocketAddr, seat: Seat, handle: Arc<H>)
    where
        H: Fn(Box<TlsStream<Transport>>, SocketAddr, Admission) -> F,
        F: Future<Output = ()>,
        Hs: Future<
            Output = Result<std::io::Result<TlsStream<Transport>>, tokio::time::error::Elapsed>,
        >,
    {
        let deadline = self.handshake_timeout;
        let tls = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = seat.gave_way.cancelled() => {
                info!("handshaking connections at their limit: the oldest, this one, gave way to a newcomer");
                return;
            }
            r = handshake => r.map(|r| r.map(Box::new)),
        };
        let stream = match tls {
            Ok(Ok(stream)) => stream,
            // The span names the endpoint and the peer.
            Ok(Err(err)) => {
                let cause = handshake_failure(&err);
                warn!(%cause, "TLS handshake failed");
                return;
            }
            Err(_) => {
                let cause = format!("no complete handshake within {deadline:?}");
                warn!(%cause, "TLS handshake timed out");
                return;
            }
        };
        // 3. A peer without a certificate joins the unauthenticated share (pushing out its
        //    oldest member if it is full) before it waits for a slot, so that the slot the
        //    one pushed out frees can be its own.
        let certified = stream
            .get_ref()
            .1
            .peer_certificates()
            .is_some_and(|certs| !certs.is_empty());
        let unauthenticated = (!certified).then(|| {
            let (seat, evicted) = self.unauthenticated.take();
            if evicted > 0 {
                debug!(evicted, "unauthenticated share full: the oldest gave way");
            }
            seat
        });
        let gave_way = unauthenticated
            .as_ref()
            .map_or_else(CancellationToken::new, |s| s.gave_way.clone());
        // 2b. A slot, waited for in the handshaking seat.
        let permit = match self.limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = seat.gave_way.cancelled() => {
                    info!("waiting for a connection slot, gave way to a newer connection");
                    return;
                }
                _ = gave_way.cancelled() => {
                    info!("unauthenticated share full: the oldest, this one, gave way to a newcomer");
                    return;
                }
                permit = self.limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            },
        };
        drop(seat);
        let _permit = permit;
        // Open until the guard drops: the handler returned, or the task was dropped mid-way.
        let _open = self.metrics.connection_opened(self.name);
        let admission = Admission { unauthenticated };
        // The handler runs until it ends, or (still unauthenticated) it has to give way: the
        // token cannot fire once `Admission::authenticated` returned true.
        tokio::select! {
            // The box itself, not `*stream`: a box moved out of stays allocated until its
            // variable's scope ends, which here is the connection's whole life.
            _ = (*handle)(stream, peer, admission) => {}
            _ = gave_way.cancelled() => {
                info!("unauthenticated share full: the oldest, this one, gave way to a newcomer");
            }
        }
    }
}

/// Why a TLS handshake failed, in words a provider's developer can act on, followed by
/// rustls's own text.
pub(crate) fn handshake_failure(err: &std::io::Error) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the client closed the connection during the handshake".to_owned()
            }
            _ => format!("i/o error during the handshake: {err}"),
        };
    };
    let words = match tls {
        rustls::Error::NoCertificatesPresented => {
            "no client certificate: the provider must present the certificate the simulator \
             minted for its app"
        }
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "client certificate not issued by the simulator's CA (unknown issuer)"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate not valid yet"
            }
            CertificateError::Revoked => "client certificate revoked",
            CertificateError::BadSignature => {
                "client certificate not issued by the simulator's CA (its signature does not \
                 verify: another CA of the same name?)"
            }
            _ => "client certificate refused",
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => {
                "the client refused the simulator's certificate: most often the server name \
                 it asked for is not one the certificate covers (localhost, 127.0.0.1, \
                 Apple's host names)"
            }
            // DecryptError: the signature on the server certificate did not verify against
            // the CA the client trusts, i.e. another CA (of the same name).
            AlertDescription::UnknownCA | AlertDescription::DecryptError => {
                "the client does not trust the simulator's CA: give it ca.pem from the \
                 certificate folder"
            }
            AlertDescription::CertificateExpired => {
                "the client says the simulator's certificate expired"
            }
            _ => "the client aborted the handshake",
        },
        rustls::Error::PeerIncompatible(_) => {
            "no TLS version, cipher suite or extension in common with the client"
        }
        rustls::Error::NoApplicationProtocol => "no ALPN protocol in common with the client",
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "not TLS, or a malformed handshake"
        }
        _ => "handshake failed",
    };
    format!("{words} ({tls})")
}

/// Captures what the code under test logs at the default (info) level, line by line, so
/// tests can wait for a line instead of sleeping.
#[cfg(test)]
pub(crate) mod log_capture {
    use std::io;

    use tokio::sync::mpsc;
    use tracing_subscriber::fmt::MakeWriter;

    /// Generous: a healthy test never waits this long.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

    /// The lines logged on this thread while the capture lives.
    pub(crate) struct Capture {
        lines: mpsc::UnboundedReceiver<String>,
        _guard: tracing::subscriber::DefaultGuard,
    }

    /// One formatted event per write (the fmt layer writes each event whole).
    #[derive(Clone)]
    struct Lines(mpsc::UnboundedSender<String>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Capture {
        /// Installs an info-level subscriber for this thread (a current-thread tokio test
        /// runs every task on it).
        pub(crate) fn install() -> Capture {
            let (tx, lines) = mpsc::unbounded_channel();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(Lines(tx))
                .finish();
            // While exactly one dispatcher exists, tracing-core decides a callsite's interest
            // from the registering thread's dispatcher alone: a parallel test's thread that
            // first reaches a callsite (the `conn` span) would cache "never" for it, and the
            // span's fields would vanish from this capture. A second dispatcher kept for the
            // process makes every registration ask all of them.
            static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
            SECOND.get_or_init(|| {
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
            });
            let guard = tracing::subscriber::set_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
            Capture {
                lines,
                _guard: guard,
            }
        }

        /// Waits for the first line containing every one of `parts`, skipping others.
        pub(crate) async fn line_with(&mut self, parts: &[&str]) -> String {
            let mut skipped = Vec::new();
            let wait = async {
                loop {
                    let line = self.lines.recv().await.expect("capture open");
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                    skipped.push(line);
                }
            };
            let found = tokio::time::timeout(WAIT, wait).await;
            found.unwrap_or_else(|_| panic!("no log line with {parts:?}; seen: {skipped:#?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_capture::Capture;
    use super::*;

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncReadExt;

    use crate::pki::Pki;
    use crate::tls::{self, ClientIdentity};

    /// A gateway-like endpoint (client certificate required) that does nothing with a
    /// connection once its handshake succeeds.
    async fn endpoint(pki: &Pki, handshake_timeout: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = Endpoint {
            name: "gateway",
            acceptor: TlsAcceptor::from(tls::provider_server_config(pki, &[]).unwrap()),
            max_connections: 8,
            max_handshaking: 8,
            listen_backlog: 16,
            max_unauthenticated: 2,
            handshake_timeout,
            write_timeout: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics: Metrics::new(),
        };
        tokio::spawn(serve(listener, endpoint, |_, _, _| async {}));
        addr
    }

    /// Connects with `config` to `server_name`, returns the client's own address (the peer
    /// the server logs), and leaves the handshake to fail however it fails.
    async fn attempt(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> String {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let me = tcp.local_addr().unwrap().to_string();
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        // With TLS 1.3 the client may finish first and learn of the refusal on its
        // first read.
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            let _ = tls.read(&mut [0u8; 1]).await;
        }
        me
    }

    /// A burst of connections larger than the backlog a listener was bound with (tokio's
    /// 128) all complete their TCP handshake while nobody accepts them yet, once the
    /// endpoint's backlog is set: past a full backlog the kernel drops a client's SYN, and
    /// the client waits a second and more before trying again (so without it the connects
    /// past the 129th would still be waiting when the generous deadline ends).
    #[tokio::test]
    async fn the_listen_backlog_holds_a_burst_that_nobody_has_accepted_yet() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        set_backlog(&listener, 400).unwrap();
        let burst = (0..300)
            .map(|_| tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)));
        let connected = futures_util::future::join_all(burst).await;
        let done = connected.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(done, 300, "connections completed with nobody accepting");
        drop(listener);
    }

    /// A provider certificate from `pki`'s CA whose validity ended yesterday.
    fn expired_identity(pki: &Pki) -> ClientIdentity {
        let ca_key = rcgen::KeyPair::from_pem(pki.ca_key_pem()).unwrap();
        let ca = rcgen::CertificateParams::from_ca_cert_pem(pki.ca_cert_pem())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "expired provider");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        ClientIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn every_failed_handshake_is_logged_with_its_cause_and_peer() {
        let mut log = Capture::install();
        let pki = Pki::generate().unwrap();
        let addr = endpoint(&pki, Duration::from_secs(30)).await;
        let ca = pki.ca_cert_pem().as_bytes();
        let provider = pki.default_provider();
        let good = || {
            ClientIdentity::from_pem(provider.cert_pem.as_bytes(), provider.key_pem.as_bytes())
                .unwrap()
        };
        let foreign_pki = Pki::generate().unwrap();
        let foreign = foreign_pki.default_provider();
        let foreign =
            ClientIdentity::from_pem(foreign.cert_pem.as_bytes(), foreign.key_pem.as_bytes())
                .unwrap();

        let cases = [
            (
                "no client certificate",
                tls::client_config(ca, None, Vec::new()).unwrap(),
                "localhost",
            ),
            (
                "not issued by the simulator's CA",
                tls::client_config(ca, Some(foreign), Vec::new()).unwrap(),
                "localhost",
            ),
            (
                "client certificate expired",
                tls::client_config(ca, Some(expired_identity(&pki)), Vec::new()).unwrap(),
                "localhost",
            ),
            (
                "server name",
                tls::client_config(ca, Some(good()), Vec::new()).unwrap(),
                "wrong.example.com",
            ),
            (
                "does not trust the simulator's CA",
                tls::client_config(
                    foreign_pki.ca_cert_pem().as_bytes(),
                    Some(good()),
                    Vec::new(),
                )
                .unwrap(),
                "localhost",
            ),
        ];
        for (cause, config, server_name) in cases {
            let peer = attempt(addr, config, server_name).await;
            let line = log
                .line_with(&["TLS handshake failed", &format!("peer={peer}"), cause])
                .await;
            assert!(line.contains(" WARN "), "{line}");
            assert!(line.contains("endpoint=\"gateway\""), "{line}");
        }
    }

    #[tokio::test]
    async fn a_handshake_that_never_comes_is_logged_when_its_deadline_passes() {
        let mut log = Capture::install();
        let pki = Pki::generate().unwrap();
        let addr = endpoint(&pki, Duration::from_millis(50)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let peer = silent.local_addr().unwrap().to_string();
        let line = log
            .line_with(&["TLS handshake timed out", &format!("peer={peer}"), "50ms"])
            .await;
        assert!(line.contains(" WARN "), "{line}");
        // And the connection is gone.
        assert_eq!(silent.read(&mut [0u8; 1]).await.unwrap_or(0), 0);
    }

    #[test]
    fn causes_without_rustls_are_named_too() {
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(handshake_failure(&eof).contains("closed the connection"));
        let other = std::io::Error::other("boom");
        assert!(handshake_failure(&other).contains("boom"));
        let alpn = std::io::Error::other(rustls::Error::NoApplicationProtocol);
        assert!(handshake_failure(&alpn).contains("ALPN"));
    }
}
