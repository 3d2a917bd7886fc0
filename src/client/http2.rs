//! A provider-side client for the HTTP/2 API, over `h2` and tokio-rustls: used by
//! `apns-sim push --http2` ([`push`]) and by the tests.
//!
//! Besides requests and answers it reports the GOAWAY that ended a connection, JSON reason
//! included. `h2` hides the debug data of a `NO_ERROR` GOAWAY (the kind Apple sends), so the
//! client watches the frames it reads with [`FrameBoundary`].

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{Ping, PingPong, SendStream};
use http::{HeaderName, HeaderValue, Method, Request};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use crate::client::{self, ClientError};
use crate::clock::Clock;
use crate::pki::jwt;
use crate::pki::AuthKey;
use crate::protocol::http2::{FrameBoundary, GoAway, DETAIL_HEADER};

/// Deadline for one request's answer, so a silent server cannot hang the CLI.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most response body bytes read; Apple's error bodies are a few dozen bytes.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why an HTTP/2 client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Http2ClientError {
    /// Could not connect or complete TLS.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The HTTP/2 layer failed (handshake, stream reset, protocol error).
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The server closed the connection with a GOAWAY.
    #[error("connection closed by the server: GOAWAY {}", .0.reason().unwrap_or_else(|| format!("code {}", .0.error_code)))]
    GoAway(GoAway),
    /// A request could not be built (bad header name or value, bad path).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No answer within [`RESPONSE_TIMEOUT`].
    #[error("no answer within {RESPONSE_TIMEOUT:?}")]
    Timeout,
    /// A provider token could not be signed.
    #[error("provider token: {0}")]
    Jwt(#[from] jwt::JwtError),
}

/// One request, as loosely as a test needs it (any method, path and headers).
#[derive(Debug, Clone)]
pub struct Http2Request {
    /// `:method`.
    pub method: Method,
    /// `:path`.
    pub path: String,
    /// Headers in order; repeats are sent as repeats.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub body: Bytes,
}

impl Http2Request {
    /// `POST /3/device/<token>` with a payload and no headers.
    pub fn push(token_hex: &str, payload: impl Into<Bytes>) -> Self {
        Http2Request {
            method: Method::POST,
            path: format!("/3/device/{token_hex}"),
            headers: Vec::new(),
            body: payload.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Adds `authorization: bearer <jwt>`.
    pub fn bearer(self, jwt: &str) -> Self {
        self.header("authorization", format!("bearer {jwt}"))
    }

    /// The request's head (method, `https://authority/path`, headers) as h2 sends it;
    /// public so that a client with a connection of its own (the tour's recording one)
    /// builds it the same way.
    pub fn build(&self, authority: &str) -> Result<Request<()>, Http2ClientError> {
        let bad = |e: String| Http2ClientError::BadRequest(e);
        let uri = http::Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(self.path.as_str())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .body(())
            .map_err(|e| bad(e.to_string()))?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            request.headers_mut().append(name, value);
        }
        Ok(request)
    }
}

/// An answer, with the parts Apple defines picked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Response {
    /// `:status`.
    pub status: u16,
    /// `apns-id`.
    pub apns_id: Option<String>,
    /// `apns-unique-id` (sandbox only).
    pub apns_unique_id: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `reason` of the JSON body.
    pub reason: Option<String>,
    /// `timestamp` of the JSON body (410 only), milliseconds.
    pub timestamp: Option<u64>,
    /// The simulator's `apns-sim-detail`: why a request was refused, in words.
    pub detail: Option<String>,
    /// The raw body.
    pub body: Bytes,
}

impl fmt::Display for Http2Response {
    /// `200 apns-id=…` or `400 BadPriority (apns-priority 7 is not 10, 5 or 1) apns-id=…`,
    /// as `apns-sim push --http2` prints: the simulator's detail follows Apple's reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(reason) = &self.reason {
            write!(f, " {reason}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(ts) = self.timestamp {
            write!(f, " timestamp={ts}")?;
        }
        write!(f, " apns-id={}", self.apns_id.as_deref().unwrap_or("-"))?;
        if let Some(unique) = &self.apns_unique_id {
            write!(f, " apns-unique-id={unique}")?;
        }
        Ok(())
    }
}

/// The TLS stream with a watch on the frames read from it.
struct SniffIo {
    stream: TlsStream<TcpStream>,
    frames: Arc<Mutex<FrameBoundary>>,
}

impl AsyncRead for SniffIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            frames.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for SniffIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One HTTP/2 connection to the provider API.
#[derive(Debug)]
pub struct Http2Client {
    send: SendRequest<Bytes>,
    /// The connection's PING handle (`None` if `h2` already handed it out).
    ping: Option<PingPong>,
    connection: JoinHandle<Result<(), h2::Error>>,
    frames: Arc<Mutex<FrameBoundary>>,
    authority: String,
}

impl Http2Client {
    /// Connects, completes TLS with `tls` (which should offer ALPN `h2` and, for
    /// certificate auth, carry the provider certificate) and the HTTP/2 handshake.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<ClientConfig>,
    ) -> Result<Self, Http2ClientError> {
        let stream = client::connect_tls(addr, server_name, tls).await?;
        let frames = Arc::new(Mutex::new(FrameBoundary::default()));
        let io = SniffIo {
            stream,
            frames: frames.clone(),
        };
        let (send, mut connection) = h2::client::Builder::new().handshake::<_, Bytes>(io).await?;
        let ping = connection.ping_pong();
        let connection = tokio::spawn(connection);
        Ok(Http2Client {
            send,
            ping,
            connection,
            frames,
            authority: server_name.to_owned(),
        })
    }

    /// The last GOAWAY the server sent, if any.
    pub fn goaway(&self) -> Option<GoAway> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_goaway()
            .cloned()
    }

    /// Every SETTINGS_MAX_CONCURRENT_STREAMS value the server has sent so far, oldest first
    /// (Apple's token connections start at 1 and raise it after the first valid token).
    pub fn max_streams_seen(&self) -> Vec<u32> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_streams_seen()
            .to_vec()
    }

    /// Sends a PING and waits for the server's PONG (Apple's suggested health check after an
    /// hour idle).
    pub async fn ping(&mut self) -> Result<(), Http2ClientError> {
        let Some(ping) = self.ping.as_mut() else {
            return Err(Http2ClientError::BadRequest(
                "this connection has no PING handle".into(),
            ));
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, ping.ping(Ping::opaque()))
            .await
            .map_err(|_| Http2ClientError::Timeout)??;
        Ok(())
    }

    /// Sends a request and waits for its whole answer.
    pub async fn send(
        &mut self,
        request: &Http2Request,
    ) -> Result<Http2Response, Http2ClientError> {
        let work = async {
            let (response, mut body) = self.start(request, request.body.is_empty()).await?;
            if !request.body.is_empty() {
                body.send_data(request.body.clone(), true)?;
            }
            read_response(response).await
        };
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, work)
            .await
            .map_err(|_| Http2ClientError::Timeout)?;
        answer.map_err(|err| match (err, self.goaway()) {
            (Http2ClientError::H2(e), Some(goaway)) if !e.is_reset() => {
                Http2ClientError::GoAway(goaway)
            }
            (err, _) => err,
        })
    }

    /// Opens a stream with the request's head and leaves the body to the caller (for tests
    /// of concurrent and half-sent streams). With `end_of_stream` the request has no body.
    pub async fn start(
        &mut self,
        request: &Http2Request,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), Http2ClientError> {
        let head = request.build(&self.authority)?;
        let mut ready = self.send.clone().ready().await?;
        Ok(ready.send_request(head, end_of_stream)?)
    }

    /// Waits until the server closes the connection; returns its GOAWAY, if it sent one.
    ///
    /// The request handle stays alive meanwhile: `h2` closes a client connection by itself
    /// once no handle and no stream is left.
    pub async fn closed(self) -> Option<GoAway> {
        let _keep_open = self.send;
        let _ = self.connection.await;
        let frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        frames.last_goaway().cloned()
    }
}

/// Reads an answer's head and (bounded) body.
pub async fn read_response(response: ResponseFuture) -> Result<Http2Response, Http2ClientError> {
    let response = response.await?;
    let (head, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let room = MAX_RESPONSE_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    let header = |name: &str| {
        head.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(&buf).ok();
    Ok(Http2Response {
        status: head.status.as_u16(),
        apns_id: header("apns-id"),
        apns_unique_id: header("apns-unique-id"),
        content_type: header("content-type"),
        reason: json
            .as_ref()
            .and_then(|j| j.get("reason")?.as_str().map(str::to_owned)),
        timestamp: json.as_ref().and_then(|j| j.get("timestamp")?.as_u64()),
        detail: header(DETAIL_HEADER),
        body: buf.freeze(),
    })
}

/// How [`push`] authenticates.
#[derive(Debug, Clone)]
pub enum PushAuth {
    /// The client certificate in the TLS configuration.
    Certificate,
    /// A provider token signed now with this `.p8` key.
    Token(AuthKey),
}

/// Everything `apns-sim push --http2` sends.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `host:port` of the HTTP/2 API.
    pub addr: String,
    /// TLS server name (`localhost`, or an Apple host name to pick the environment).
    pub server_name: String,
    /// TLS client configuration: trusts the simulator's CA, offers ALPN `h2`, and for
    /// certificate auth presents the provider certificate.
    pub tls: Arc<ClientConfig>,
    /// Certificate or token auth.
    pub auth: PushAuth,
    /// Device tokens, hex: one notification each, in order, on one connection.
    pub tokens: Vec<String>,
    /// `apns-topic`.
    pub topic: Option<String>,
    /// `apns-push-type`.
    pub push_type: Option<String>,
    /// `apns-priority`.
    pub priority: Option<u8>,
    /// `apns-expiration`, UNIX seconds.
    pub expiration: Option<u32>,
    /// `apns-collapse-id`.
    pub collapse_id: Option<String>,
    /// `apns-id`, sent exactly as given (so a test can send a malformed or uppercase one);
    /// the server generates one when absent.
    pub apns_id: Option<String>,
    /// The JSON payload.
    pub payload: Bytes,
}

/// Connects once and sends one notification per token; returns the answers in token order
/// (print them with `Display`). A connection-level failure (a GOAWAY, a refused TLS
/// handshake) is the error.
pub async fn push(opts: &PushOptions) -> Result<Vec<Http2Response>, Http2ClientError> {
    let bearer = match &opts.auth {
        PushAuth::Token(key) => Some(jwt::sign(key, Clock::system().now_secs())?),
        PushAuth::Certificate => None,
    };
    let optional = [
        ("apns-topic", opts.topic.clone()),
        ("apns-push-type", opts.push_type.clone()),
        ("apns-priority", opts.priority.map(|p| p.to_string())),
        ("apns-expiration", opts.expiration.map(|e| e.to_string())),
        ("apns-collapse-id", opts.collapse_id.clone()),
        ("apns-id", opts.apns_id.clone()),
    ];
    let mut client = Http2Client::connect(&opts.addr, &opts.server_name, opts.tls.clone()).await?;
    let mut answers = Vec::with_capacity(opts.tokens.len());
    for token in &opts.tokens {
        let mut request = Http2Request::push(token.trim(), opts.payload.clone());
        if let Some(jwt) = &bearer {
            request = request.bearer(jwt);
        }
        for (name, value) in &optional {
            if let Some(value) = value {
                request = request.header(name, value.clone());
            }
        }
        answers.push(client.send(&request).await?);
    }
    Ok(answers)
}
