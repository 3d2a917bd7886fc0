//! The accept loop every TLS endpoint shares: a connection limit, the TLS handshake inside
//! the connection's own task with a deadline, a tracing span per connection, and shutdown.
//!
//! Each endpoint (gateway, feedback, devices, HTTP/2) supplies only what it does with an
//! established TLS stream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

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
        let span = info_span!("conn", endpoint = endpoint.name, %peer);
        endpoint.tracker.spawn(
            async move {
                let _permit = permit;
                let tls = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(deadline, acceptor.accept(tcp)) => r,
                };
                match tls {
                    Ok(Ok(stream)) => handle(stream, peer).await,
                    Ok(Err(err)) => debug!(%err, "TLS handshake failed"),
                    Err(_) => debug!(?deadline, "TLS handshake timed out"),
                }
            }
            .instrument(span),
        );
    }
}
