//! The control API: HTTP/1.1 and JSON under `/v1`, for test suites and people who want to ask
//! the simulator what happened instead of reading its stdout.
//!
//! Routes of this slice (the OpenAPI 3 document at `GET /v1/openapi.json`, generated from
//! these handlers and types by utoipa, is the full reference):
//!
//! - `GET /v1/health`: up, the version, every endpoint's address;
//! - `GET /v1/notifications`: the delivery log, filtered, with a cursor ([`notifications`]);
//! - `GET /v1/notifications/wait`: the same, answering once enough records match;
//! - `GET /v1/feedback`: the unread feedback tuples of a topic, without draining them;
//! - `GET/POST /v1/devices`, `DELETE /v1/devices/{serial}`, the apps, offline/online, inbox
//!   and `.apns` routes under it ([`devices`]), and `POST /v1/push` ([`push`]): the
//!   in-process devices and the test provider, reached through [`devices::Actors`];
//! - `GET`, `POST`, `DELETE /v1/faults` and `DELETE /v1/faults/{id}`: list, add and remove
//!   faults ([`faults`]);
//! - `GET /v1/events`: server-sent events of everything the hub logs, resumable ([`events`]);
//! - `POST /v1/reset`: back to an empty world without a restart ([`reset`]);
//! - `GET /v1/openapi.json`: the document itself;
//! - `GET /metrics`: the Prometheus metrics, in OpenMetrics text ([`metrics`]);
//! - `GET /`, `GET /dashboard/app.js`, `GET /dashboard/style.css`: the dashboard, a page
//!   that shows all of the above live and drives the simulator through these routes
//!   ([`dashboard`]).
//!
//! Like every endpoint, [`run`] takes an already-bound listener and the simulator's shutdown
//! token. With a token ([`ControlConfig::token`], `serve --control-token`) every request must
//! carry it as `Authorization: Bearer …` (`GET /`, the dashboard's assets and
//! `GET /v1/events` also take `?access_token=…`, since a browser loading a page's script or
//! opening an `EventSource` cannot set headers); without one,
//! [`crate::sim::Simulator`] refuses to start the API on anything but a loopback address.
//! At most [`ControlConfig::max_connections`] connections are served at once
//! ([`Settings::max_control_connections`](crate::settings::Settings::max_control_connections)),
//! and every write to a client must make progress within [`ControlConfig::write_timeout`]
//! ([`crate::server::write_deadline`], as on every other endpoint): a client that stops
//! reading a large answer (the delivery log, the event stream) is cut off and gives its slot
//! back. What waits for such a client meanwhile is bounded: hyper buffers a few hundred KiB
//! of a response before it stops polling the body, and the event stream makes a message only
//! when polled (a receiver that falls behind the broadcast reads the gap from the hub's
//! ring, [`events`]).
//!
//! Every refusal is a 4xx with a JSON body `{"error": …, "field": …}` ([`ErrorBody`]) naming
//! the parameter at fault; no input makes a handler panic.

pub mod dashboard;
pub mod devices;
pub mod events;
pub mod faults;
pub mod feedback;
pub mod metrics;
pub mod notifications;
pub mod push;
pub mod reset;
pub mod schemas;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utoipa::{OpenApi, ToSchema};

use crate::hub::{Hub, Metrics, OpenConnection};
use crate::server::write_deadline::WriteDeadline;

/// The largest request body any route reads. The routes that take one (devices, push,
/// faults) take small JSON objects (a push's payload is at most 5 KiB on APNs), and a
/// client must not be able to make the simulator buffer megabytes for them.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Every route of the router with its handlers: the router is built from this table, so
/// [`routes`] is exactly what it serves.
fn table() -> [(&'static str, MethodRouter<Ctx>); 27] {
    [
        ("/v1/health", get(health)),
        (
            "/v1/faults",
            get(faults::list).post(faults::add).delete(faults::clear),
        ),
        ("/v1/faults/{id}", delete(faults::remove)),
        ("/v1/notifications", get(notifications::list)),
        ("/v1/notifications/wait", get(notifications::wait)),
        ("/v1/feedback", get(feedback::peek)),
        ("/v1/devices", get(devices::list).post(devices::create)),
        ("/v1/devices/{serial}", delete(devices::remove)),
        ("/v1/devices/{serial}/apps", post(devices::install)),
        (
            "/v1/devices/{serial}/apps/{app}",
            delete(devices::uninstall),
        ),
        ("/v1/devices/{serial}/offline", post(devices::offline)),
        ("/v1/devices/{serial}/online", post(devices::online)),
        ("/v1/devices/{serial}/inbox", get(devices::inbox)),
        (
            "/v1/devices/{serial}/inbox/{index}/apns",
            get(devices::apns),
        ),
        ("/v1/virtual", get(devices::virtual_fleet)),
        ("/v1/virtual/devices", get(devices::virtual_devices)),
        (
            "/v1/virtual/devices/{index}/uninstall",
            post(devices::virtual_uninstall),
        ),
        (
            "/v1/virtual/devices/{index}/offline",
            post(devices::virtual_offline),
        ),
        (
            "/v1/virtual/devices/{index}/online",
            post(devices::virtual_online),
        ),
        ("/v1/push", post(push::send)),
        ("/v1/events", get(events::stream)),
        ("/v1/reset", post(reset::reset)),
        ("/v1/openapi.json", get(openapi_json)),
        ("/metrics", get(metrics::scrape)),
        ("/", get(dashboard::index)),
        (dashboard::APP_JS_PATH, get(dashboard::app_js)),
        (dashboard::STYLE_CSS_PATH, get(dashboard::style_css)),
    ]
}

/// Every route the router serves; the OpenAPI document lists exactly these (tests compare
/// the two).
pub fn routes() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// Where each endpoint of the simulator listens, for `GET /v1/health`. The simulator fills
/// it in (the control API cannot see `sim::Addrs`, which sits above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// Binary gateway.
    pub gateway: SocketAddr,
    /// Feedback service.
    pub feedback: SocketAddr,
    /// HTTP/2 provider API.
    pub http2: SocketAddr,
    /// Device endpoint.
    pub devices: SocketAddr,
    /// This control API.
    pub control: SocketAddr,
}

/// How the control API is run, besides its listener, hub and endpoints.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The bearer token every request must carry (`serve --control-token`); `None`: no
    /// authentication, which the simulator allows on a loopback address only.
    pub token: Option<String>,
    /// Connections served at once; the next client waits in the listen backlog
    /// ([`crate::settings::Settings::max_control_connections`]).
    pub max_connections: usize,
    /// The in-process devices and the test provider, which the device and push routes drive
    /// and `POST /v1/reset` with `"devices": "remove"` removes; `None` for a control API built
    /// alone, whose device and push routes then answer 503.
    pub actors: Option<Arc<dyn devices::Actors>>,
    /// Every write to a client must make progress within this, or the connection is cut
    /// off ([`crate::settings::Settings::write_timeout`]).
    pub write_timeout: Duration,
}

impl Default for ControlConfig {
    /// No token, the default connection limit and write deadline, no actors.
    fn default() -> Self {
        let settings = crate::settings::Settings::default();
        ControlConfig {
            token: None,
            max_connections: settings.max_control_connections,
            actors: None,
            write_timeout: settings.write_timeout,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
struct Ctx {
    /// The routing core: the delivery log and the feedback lists are read from it.
    hub: Hub,
    /// The addresses `GET /v1/health` reports.
    endpoints: Endpoints,
    /// The simulator's shutdown: a pending `wait` answers at once when it fires, and an
    /// event stream ends, so that graceful shutdown does not sit out their timeouts.
    shutdown: CancellationToken,
    /// One permit per pending wait, [`notifications::MAX_PENDING_WAITS`] in all.
    waits: Arc<Semaphore>,
    /// One permit per open event stream, [`events::MAX_EVENT_STREAMS`] in all.
    streams: Arc<Semaphore>,
    /// The bearer token, if one is required.
    token: Option<Arc<str>>,
    /// The in-process devices and the test provider; `None` for a control API built
    /// alone, whose device and push routes then answer 503.
    actors: Option<Arc<dyn devices::Actors>>,
}

impl Ctx {
    fn new(
        hub: Hub,
        endpoints: Endpoints,
        shutdown: CancellationToken,
        config: &ControlConfig,
    ) -> Self {
        Ctx {
            hub,
            endpoints,
            shutdown,
            waits: Arc::new(Semaphore::new(notifications::MAX_PENDING_WAITS)),
            streams: Arc::new(Semaphore::new(events::MAX_EVENT_STREAMS)),
            token: config.token.as_deref().map(Arc::from),
            actors: config.actors.clone(),
        }
    }
}

/// Serves the control API on `listener` until `shutdown` fires, then lets requests in flight
/// finish (a `wait` ends at once with 503, an event stream ends).
pub async fn run(
    listener: TcpListener,
    hub: Hub,
    endpoints: Endpoints,
    shutdown: CancellationToken,
    config: ControlConfig,
) {
    let ctx = Ctx::new(hub, endpoints, shutdown.clone(), &config);
    info!(
        addr = %endpoints.control,
        token = config.token.is_some(),
        max_connections = config.max_connections,
        "control API listening"
    );
    let listener = Limited {
        listener,
        slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
        metrics: ctx.hub.metrics().clone(),
        write_timeout: config.write_timeout,
    };
    let served = axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        warn!(error = %e, "control API stopped");
    }
}

/// The router: [`routes`], a JSON 404 for any other path and a JSON 405 for another method,
/// every request (the fallbacks too) through [`authorize`]. The routes sit inside an outer
/// router so that [`explain_405`] sees their answers after axum has added the `Allow` header.
fn router(ctx: Ctx) -> Router {
    let routes = table()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ctx.clone());
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_response(explain_405))
        .layer(middleware::from_fn_with_state(ctx, authorize))
}

/// The routes that also take the token as `?access_token=…`: the dashboard page, its script
/// and style sheet (which the page names with the same query) and its event stream, which a
/// browser loads or opens (`EventSource`) without a way to set headers.
const QUERY_TOKEN_ROUTES: &[&str] = &[
    "/",
    dashboard::APP_JS_PATH,
    dashboard::STYLE_CSS_PATH,
    "/v1/events",
];

/// Lets a request through when no token is set or it carries the token: `Authorization:
/// Bearer <token>`, or `?access_token=<token>` on [`QUERY_TOKEN_ROUTES`]. Otherwise 401 with
/// a JSON body and `WWW-Authenticate: Bearer`. The comparison takes the same time however
/// much of a guess is right.
async fn authorize(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let refusal = ctx
        .token
        .as_deref()
        .and_then(|token| refusal(token, &request));
    let Some(error) = refusal else {
        return next.run(request).await;
    };
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        body: ErrorBody {
            error: error.to_owned(),
            field: Some("Authorization".to_owned()),
        },
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="apns-sim control API""#),
    );
    response
}

/// Why `request` does not carry `token`, or `None` when it does.
fn refusal(token: &str, request: &Request) -> Option<&'static str> {
    let matches = |given: &str| bool::from(given.as_bytes().ct_eq(token.as_bytes()));
    let by_query = || {
        QUERY_TOKEN_ROUTES.contains(&request.uri().path())
            && Query::<Vec<(String, String)>>::try_from_uri(request.uri()).is_ok_and(
                |Query(pairs)| {
                    pairs
                        .iter()
                        .any(|(name, given)| name == "access_token" && matches(given))
                },
            )
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim());
    match bearer {
        Some(given) if matches(given) => None,
        _ if by_query() => None,
        Some(_) => Some("the bearer token is not the control token"),
        None => Some("this control API needs its token: Authorization: Bearer <token>"),
    }
}

/// The control listener with a bound on connections served at once. `axum::serve` accepts
/// without limit, so this wraps the listener: a connection slot is taken before each accept
/// (a client beyond the bound waits in the kernel's backlog, as on the other endpoints)
/// and travels with the connection, freed when axum drops it. Each accepted stream gets the
/// write deadline: when it passes, hyper's write fails and axum drops the connection.
struct Limited {
    /// The bound listener.
    listener: TcpListener,
    /// One permit per connection being served.
    slots: Arc<Semaphore>,
    /// Where each connection is counted (`endpoint="control"`), as the accept loop counts
    /// the provider and device endpoints' connections.
    metrics: Metrics,
    /// [`ControlConfig::write_timeout`].
    write_timeout: Duration,
}

impl axum::serve::Listener for Limited {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        // The semaphore is never closed; should it be, no more connections are accepted.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return std::future::pending().await;
        };
        let (stream, peer) = axum::serve::Listener::accept(&mut self.listener).await;
        (
            Held {
                stream: WriteDeadline::new(stream, self.write_timeout),
                _slot: slot,
                _open: self.metrics.connection_opened("control"),
            },
            peer,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted control connection holding its slot.
struct Held {
    /// The connection, with a deadline on every write.
    stream: WriteDeadline<TcpStream>,
    /// Its slot, released when the connection is dropped.
    _slot: OwnedSemaphorePermit,
    /// Counts it open until it is dropped.
    _open: OpenConnection,
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The OpenAPI 3 document of every route, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "apns-sim control API",
        description = "Inspect and drive a running APNs simulator: its endpoints, the delivery \
                       log, the feedback lists, in-process devices and their inboxes, test \
                       pushes, faults, the live event stream, a reset, the Prometheus \
                       metrics. With `serve --control-token T` every request needs \
                       `Authorization: Bearer T`."
    ),
    paths(
        health,
        notifications::list,
        notifications::wait,
        feedback::peek,
        devices::list,
        devices::create,
        devices::remove,
        devices::install,
        devices::uninstall,
        devices::offline,
        devices::online,
        devices::inbox,
        devices::apns,
        devices::virtual_fleet,
        devices::virtual_devices,
        devices::virtual_uninstall,
        devices::virtual_offline,
        devices::virtual_online,
        push::send,
        faults::list,
        faults::add,
        faults::clear,
        faults::remove,
        events::stream,
        reset::reset,
        openapi_json,
        metrics::scrape,
        dashboard::index,
        dashboard::app_js,
        dashboard::style_css
    )
)]
pub struct ApiDoc;

/// A refusal's body: what is wrong, and which parameter, when one is at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
    /// The query parameter at fault, if the refusal is about one.
    pub field: Option<String>,
}

/// A refusal with its status; the handlers' error type.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// 400 for bad input, 404 for an unknown route, 405, 503 on shutdown.
    status: StatusCode,
    /// The body.
    body: ErrorBody,
}

impl ApiError {
    /// 400 about one parameter.
    fn field(field: &str, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: error.into(),
                field: Some(field.to_owned()),
            },
        }
    }

    /// A refusal about no parameter in particular.
    fn general(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }
}

/// A request's query, as pairs in the order given (or why it could not be decoded).
type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query's parameters by name: 400 for an undecodable query, a parameter the route does
/// not take (`allowed`), or one given twice, each naming the parameter.
fn params(query: RawQuery, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::general(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut out = HashMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            let error = format!("unknown parameter; this route takes {}", allowed.join(", "));
            return Err(ApiError::field(&name, error));
        }
        if out.contains_key(&name) {
            return Err(ApiError::field(&name, "given more than once"));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// The largest cursor (`since`, `Last-Event-ID`) a route takes: `i64::MAX`. A sequence
/// number never gets near it, and a JSON number above it is not safe for many clients.
pub const MAX_CURSOR: u64 = i64::MAX as u64;

/// An unsigned number parameter within `min..=max`, if given.
fn number(
    params: &HashMap<String, String>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(field) else {
        return Ok(None);
    };
    let n: u64 = text
        .parse()
        .map_err(|_| ApiError::field(field, format!("not an unsigned integer: {text:?}")))?;
    if n < min || n > max {
        return Err(ApiError::field(
            field,
            format!("{n} is out of range {min}..={max}"),
        ));
    }
    Ok(Some(n))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The body of `GET /v1/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the simulator answers, so it is up.
    pub status: String,
    /// The simulator's version (the crate's).
    pub version: String,
    /// Where each endpoint listens.
    pub endpoints: EndpointAddrs,
}

/// Each endpoint's address as `IP:PORT`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointAddrs {
    /// Binary gateway (Apple's 2195).
    pub gateway: String,
    /// Feedback service (2196).
    pub feedback: String,
    /// HTTP/2 provider API (2197).
    pub http2: String,
    /// Device endpoint (5223).
    pub devices: String,
    /// This control API.
    pub control: String,
}

/// Up, the version and the endpoints' addresses.
#[utoipa::path(
    get,
    path = "/v1/health",
    responses((status = 200, description = "The simulator is up", body = Health))
)]
async fn health(State(ctx): State<Ctx>) -> Json<Health> {
    let e = ctx.endpoints;
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        endpoints: EndpointAddrs {
            gateway: e.gateway.to_string(),
            feedback: e.feedback.to_string(),
            http2: e.http2.to_string(),
            devices: e.devices.to_string(),
            control: e.control.to_string(),
        },
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    responses((status = 200, description = "The OpenAPI 3 document of every route",
               content_type = "application/json"))
)]
async fn openapi_json() -> Json<serde_json::Value> {
    Json(document())
}

/// The OpenAPI document as served: [`ApiDoc`], with the request bodies whose rules a
/// derived schema cannot say (exactly one effect of a fault, a push's token or serial and
/// app) replaced by the hand-written schemas of [`schemas`].
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(components) = doc
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (name, schema) in schemas::overrides() {
            components.insert(name.to_owned(), schema);
        }
        schemas::open_flattened(components);
    }
    doc
}

/// Any path outside [`routes`].
async fn no_route() -> ApiError {
    ApiError::general(
        StatusCode::NOT_FOUND,
        format!("no such route; the routes are {}", routes().join(", ")),
    )
}

/// A route asked with a method it does not serve; [`explain_405`] adds the ones it does.
async fn wrong_method() -> ApiError {
    ApiError::general(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not answer this method",
    )
}

/// Words every 405 with the methods the route does answer, read from the `Allow` header axum
/// sets from the route table (`HEAD` left out: it is GET's), so the answer stays true
/// whatever routes are added.
async fn explain_405(
    method: axum::http::Method,
    uri: axum::http::Uri,
    response: Response,
) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let methods: Vec<String> = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .map(str::to_owned)
        .collect();
    let mut answer = ApiError::general(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not answer {method}; it answers {}",
            uri.path(),
            methods.join(", ")
        ),
    )
    .into_response();
    if let Some(allow) = allow {
        answer
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    answer
}

/// A JSON request body, as [`axum::Json`] reads it but refused the control API's way: 400
/// `{"error", "field"}` naming the field (with its path, `match.token`) that is missing, of
/// the wrong type or unknown; `field` null when the body is not JSON at all; 413 past
/// [`MAX_BODY_BYTES`]. The content type is not insisted on (`curl -d` sends a form type).
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|e| ApiError::general(e.status(), e.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses an optional JSON body: nothing (or only whitespace) and `null` are `T`'s default,
/// anything else is read as by [`parse_json`].
pub(crate) fn parse_json_or_default<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    let text = bytes.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    parse_json(bytes)
}

/// Parses a JSON body, naming the field at fault when it is refused.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::general(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::general(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    }
    let mut value = value;
    integral_floats(&mut value, true);
    from_value(value)
}

/// Fields of a body passed on as the client wrote them, whose numbers stay as they are: a
/// push's payload.
const VERBATIM_FIELDS: &[&str] = &["payload"];

/// Turns every float with no fractional part (`95.0`) into the integer it is, as JSON
/// Schema's `integer` counts it (so the document's integers are what a route takes), outside
/// [`VERBATIM_FIELDS`] of the top-level object.
fn integral_floats(value: &mut serde_json::Value, top: bool) {
    use serde_json::{Number, Value};
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() == 0.0 {
                // `u64::MAX as f64` is 2^64, one past the range (a literal too big for a u64,
                // which serde_json reads as a float, must stay refused); below it, and from
                // -2^63 up, `as` is exact for an integral float.
                let integer = if (0.0..u64::MAX as f64).contains(&f) {
                    Some(Number::from(f as u64))
                } else if (i64::MIN as f64..0.0).contains(&f) {
                    Some(Number::from(f as i64))
                } else {
                    None
                };
                if let Some(integer) = integer {
                    *n = integer;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| integral_floats(v, false)),
        Value::Object(fields) => {
            for (name, v) in fields.iter_mut() {
                if !(top && VERBATIM_FIELDS.contains(&name.as_str())) {
                    integral_floats(v, false);
                }
            }
        }
        _ => {}
    }
}

/// Reads an already parsed JSON body as `T`, naming the field at fault when it is refused
/// (as [`parse_json`] does).
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let text = inner.to_string();
        let parent = if path == "." { None } else { Some(path) };
        // serde names an unknown or missing field in its message, not in the path (which
        // stops at the object that has it).
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = match (parent, named) {
            // An unknown field's path already ends in it; a missing one's stops above it.
            (Some(parent), Some(name))
                if parent == name || parent.ends_with(&format!(".{name}")) =>
            {
                parent
            }
            (Some(parent), Some(name)) => format!("{parent}.{name}"),
            (None, Some(name)) => name,
            (Some(parent), None) => parent,
            (None, None) => "body".to_owned(),
        };
        ApiError::field(&field, text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context over a fresh hub, for handler tests.
    pub(super) fn ctx() -> Ctx {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let endpoints = Endpoints {
            gateway: addr,
            feedback: addr,
            http2: addr,
            devices: addr,
            control: addr,
        };
        Ctx::new(
            Hub::new(crate::clock::Clock::system()),
            endpoints,
            CancellationToken::new(),
            &ControlConfig::default(),
        )
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u8,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        app: String,
        inner: Option<Inner>,
    }

    fn field(json: &str) -> Option<String> {
        parse_json::<Outer>(json.as_bytes()).unwrap_err().body.field
    }

    #[test]
    fn a_bad_body_names_its_field() {
        assert_eq!(field(r#"{"app": 1}"#).as_deref(), Some("app"));
        assert_eq!(field(r#"{}"#).as_deref(), Some("app"));
        assert_eq!(field(r#"{"app":"x","bogus":1}"#).as_deref(), Some("bogus"));
        assert_eq!(
            field(r#"{"app":"x","inner":{"a":"no"}}"#).as_deref(),
            Some("inner.a")
        );
        assert_eq!(
            field(r#"{"app":"x","inner":{}}"#).as_deref(),
            Some("inner.a")
        );
        assert_eq!(field("not json"), None);
        assert_eq!(field("[]"), None);
        // Null is an optional field left out.
        assert!(parse_json::<Outer>(br#"{"app":"x","inner":null}"#).is_ok());
    }

    #[test]
    fn integral_floats_are_integers_outside_a_payload() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Numbers {
            n: u64,
            m: Option<Inner>,
            payload: serde_json::Value,
        }
        let parsed: Numbers =
            parse_json(br#"{"n": 95.0, "m": {"a": 7.0}, "payload": {"x": 1.0}}"#).unwrap();
        assert_eq!(parsed.n, 95);
        assert_eq!(parsed.payload.to_string(), r#"{"x":1.0}"#);
        for bad in [
            r#"{"n": 95.5}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": 18446744073709551615.0}"#,
        ] {
            let err = parse_json::<Numbers>(bad.as_bytes()).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some("n"), "{bad}");
        }
    }

    #[test]
    fn an_optional_body_may_be_empty() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Opt {
            #[serde(default)]
            n: u8,
        }
        assert_eq!(parse_json_or_default::<Opt>(b"").unwrap().n, 0);
        assert_eq!(parse_json_or_default::<Opt>(b" \n").unwrap().n, 0);
        assert_eq!(parse_json_or_default::<Opt>(b" null ").unwrap().n, 0);
        assert_eq!(parse_json_or_default::<Opt>(br#"{"n":3}"#).unwrap().n, 3);
        assert!(parse_json_or_default::<Opt>(b"x").is_err());
    }

    #[test]
    fn a_cursor_is_at_most_i64_max() {
        let given = |v: &str| HashMap::from([("since".to_owned(), v.to_owned())]);
        let max = i64::MAX.to_string();
        assert_eq!(
            number(&given(&max), "since", 0, MAX_CURSOR).unwrap(),
            Some(MAX_CURSOR)
        );
        for bad in ["9223372036854775808", "18446744073709551615", "-1"] {
            let err = number(&given(bad), "since", 0, MAX_CURSOR).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some("since"), "{bad}");
        }
    }

    #[test]
    fn the_hand_written_schemas_replace_derived_ones() {
        let derived = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let served = document();
        for (name, schema) in schemas::overrides() {
            let path = format!("/components/schemas/{name}");
            assert!(
                derived.pointer(&path).is_some(),
                "{name} is not in the document"
            );
            assert_eq!(served.pointer(&path), Some(&schema));
        }
        let body = "/paths/~1v1~1reset/post/requestBody/required";
        assert_ne!(served.pointer(body), Some(&serde_json::Value::Bool(true)));
    }

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = ApiDoc::openapi();
        let mut documented: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        let mut routes = routes();
        documented.sort_unstable();
        routes.sort_unstable();
        assert_eq!(documented, routes);
    }
}
