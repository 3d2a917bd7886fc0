//! Apple's second HTTP/2 port inside `apns-sim run`'s namespace: the simulator serves the
//! HTTP/2 API on one listener (443), so 2197 is relayed to it byte for byte. TLS passes
//! through untouched (the server name and ALPN reach the simulator as sent); only the peer
//! address the simulator sees is the relay's.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

/// Most connections relayed at once: as many as a provider test opens and then some; one
/// beyond it is closed at once (the simulator's own limits apply behind the relay).
const MAX_RELAYED: usize = 1024;

/// The pause after a failed accept, so a lasting failure (no file descriptors left) does
/// not spin a core.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts on `listener` and copies each connection both ways to and from `to`, until the
/// task is aborted; aborting it drops the `JoinSet`, which aborts every relayed connection.
pub(super) async fn run(listener: TcpListener, to: SocketAddr) {
    let permits = Arc::new(Semaphore::new(MAX_RELAYED));
    let mut connections = JoinSet::new();
    loop {
        // 1. A connection, while a permit is free (accepted and closed otherwise).
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: retrying at once would spin.
                debug!(%e, "relay accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Finished relays are reaped here, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "relay full, connection closed");
            continue;
        };
        // 2. Its own task: connect to the HTTP/2 listener, copy until either side closes.
        connections.spawn(async move {
            let _permit = permit;
            match TcpStream::connect(to).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => debug!(%peer, %e, "relay could not reach the HTTP/2 listener"),
            }
        });
    }
}
