//! The accept loop every TLS endpoint shares: a connection limit, the TLS handshake inside
//! the connection's own task with a deadline, a tracing span per connection, and shutdown.
//!
//! Each endpoint (gateway, feedback, devices, HTTP/2) supplies only what it does with an
//! established TLS stream.
//!
//! A handshake that fails or times out is logged at warn level (shown by default) with the
//! endpoint, the peer and the cause in words (`handshake_failure`): a client refused
//! here sees only a TLS alert or a closed socket, so the log is where it learns why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, warn, Instrument};

use crate::hub::Metrics;

/// How long to wait before accepting again after `accept` fails (for example when the
/// process is out of file descriptors), so that a persistent error does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What an endpoint's accept loop needs besides its listener.
#[derive(Clone)]
pub struct Endpoint {
    /// Name used in logs ("gateway", "feedback", "devices", "http2").
    pub name: &'static str,
    /// TLS configuration, built once.
    pub acceptor: TlsAcceptor,
    /// At most this many connections at once; the next `accept` waits for a free slot, so
    /// excess clients queue in the kernel backlog instead of costing memory here.
    pub max_connections: usize,
    /// A client that has not finished the TLS handshake by then is dropped (slow-loris
    /// defence: an idle half-open TLS socket is the classic way to exhaust a server).
    pub handshake_timeout: Duration,
    /// Stops accepting and tells every connection to wind down.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Where established connections are counted (`apns_sim_connections_total` and
    /// `_open`, labelled with `name`).
    pub metrics: Metrics,
}

/// Runs the accept loop until shutdown. `handle` gets each established TLS stream.
pub async fn serve<H, F>(listener: TcpListener, endpoint: Endpoint, handle: H)
where
    H: Fn(TlsStream<TcpStream>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let limit = Arc::new(Semaphore::new(endpoint.max_connections));
    loop {
        // 1. Take a connection slot first; at the limit, stop accepting until one frees.
        let permit = tokio::select! {
            _ = endpoint.shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        // 2. Accept.
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
        // 3. Handshake and serve inside the connection's own task, so a slow client never
        //    holds up the accept loop.
        let acceptor = endpoint.acceptor.clone();
        let handle = handle.clone();
        let shutdown = endpoint.shutdown.clone();
        let deadline = endpoint.handshake_timeout;
        let metrics = endpoint.metrics.clone();
        let name = endpoint.name;
        let span = info_span!("conn", endpoint = endpoint.name, %peer);
        endpoint.tracker.spawn(
            async move {
                let _permit = permit;
                let tls = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(deadline, acceptor.accept(tcp)) => r,
                };
                match tls {
                    Ok(Ok(stream)) => {
                        // Open until the guard drops: the handler returned, or the task
                        // was dropped mid-way.
                        let _open = metrics.connection_opened(name);
                        handle(stream, peer).await;
                    }
                    // The span names the endpoint and the peer.
                    Ok(Err(err)) => {
                        let cause = handshake_failure(&err);
                        warn!(%cause, "TLS handshake failed");
                    }
                    Err(_) => {
                        let cause = format!("no complete handshake within {deadline:?}");
                        warn!(%cause, "TLS handshake timed out");
                    }
                }
            }
            .instrument(span),
        );
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
            Capture {
                lines,
                _guard: tracing::subscriber::set_default(subscriber),
            }
        }

        /// Waits for the first line containing every one of `parts`, skipping others.
        pub(crate) async fn line_with(&mut self, parts: &[&str]) -> String {
            let wait = async {
                loop {
                    let line = self.lines.recv().await.expect("capture open");
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
            };
            tokio::time::timeout(WAIT, wait)
                .await
                .unwrap_or_else(|_| panic!("no log line with {parts:?}"))
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
            handshake_timeout,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics: Metrics::new(),
        };
        tokio::spawn(serve(listener, endpoint, |_, _| async {}));
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
