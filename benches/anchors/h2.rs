//! The bare HTTP/2 anchor: hyper 1.x `server::conn::http2` over tokio-rustls (the
//! simulator's own HTTP/2 TLS configuration), answering `POST /3/device/<token>` with 200
//! and a fresh `apns-id` once the body is read, anything else with 404. No validation, no
//! auth, no routing: what an HTTP/2 server costs on this machine before any APNs rule.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Result;
use apns_sim::pki::Pki;
use apns_sim::tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest body read (APNs's HTTP/2 payload limit); a longer one is answered 413.
const MAX_BODY: usize = 4096;

/// A bound, not yet serving, bare HTTP/2 server.
pub(crate) struct BareH2 {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl BareH2 {
    /// Binds 127.0.0.1 on a port the system picks.
    pub(crate) async fn bind(pki: &Pki) -> Result<BareH2> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(BareH2 {
            addr: listener.local_addr()?,
            listener,
            acceptor: TlsAcceptor::from(tls::http2_server_config(pki)?),
        })
    }

    /// Accepts connections until the listener fails; one task per connection (hyper's).
    pub(crate) async fn serve(self) -> Result<()> {
        loop {
            let (tcp, _) = self.listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(answer))
                    .await;
            });
        }
    }
}

/// 200 with an `apns-id` for a push, after reading its body.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let push = request.method() == Method::POST && request.uri().path().starts_with("/3/device/");
    let status = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Ok(_) if push => StatusCode::OK,
        Ok(_) => StatusCode::NOT_FOUND,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(id) = uuid::Uuid::new_v4().hyphenated().to_string().parse() {
        response.headers_mut().insert("apns-id", id);
    }
    Ok(response)
}
