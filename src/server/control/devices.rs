//! The device routes of the control API: list every device the hub knows, and create, drive
//! and remove the in-process ones, read what they have shown (their inbox) and download a
//! shown notification as an `.apns` file.
//!
//! The server layer may not start clients, so the in-process devices live above it (the
//! `actors` layer) and the routes reach them through the [`Actors`] trait, which the
//! simulator hands to [`super::run`]. Without one (a control API built alone) every route
//! that needs it answers 503 with the reason. A device the hub knows but the actors do not
//! (an `apns-sim device` process) is listed with `"managed": false`; driving it answers 409.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/devices` | 200 [`DeviceList`] |
//! | `POST /v1/devices` [`NewDevice`] | 201 [`Device`], once online with every token |
//! | `DELETE /v1/devices/{serial}` | 204 |
//! | `POST /v1/devices/{serial}/apps` [`NewApp`] | 201 [`App`] (the new token) |
//! | `DELETE /v1/devices/{serial}/apps/{app}?kind=` | 204 |
//! | `POST /v1/devices/{serial}/offline`, `…/online` | 200 [`Device`] |
//! | `GET /v1/devices/{serial}/inbox` | 200 [`Inbox`] |
//! | `GET /v1/devices/{serial}/inbox/{index}/apns` | 200 the `.apns` file |
//! | `GET /v1/virtual` | 200 [`VirtualFleetInfo`] (a fleet of 0 without one) |
//! | `GET /v1/virtual/devices?from=&limit=` | 200 [`VirtualPage`] |
//! | `POST /v1/virtual/devices/{index}/uninstall` [`VirtualUninstall`] | 200 [`VirtualDeviceInfo`] |
//! | `POST /v1/virtual/devices/{index}/offline` [`VirtualOffline`], `…/online` | 200 [`VirtualDeviceInfo`] |
//!
//! A virtual fleet (`serve --virtual-devices N`) may hold millions of devices: `GET
//! /v1/devices` counts it (`virtual`) and `GET /v1/virtual/devices` pages it, so no answer
//! enumerates it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{params, ApiError, Ctx, JsonBody, RawQuery};
use crate::hub::{KnownDevice, VirtualDevice, VirtualError, VirtualSummary};
use crate::protocol::token::{AppToken, DeviceToken, TokenKind};
use crate::protocol::Environment;

/// Longest serial number a device may have (the device protocol's str8 and the scenario
/// files' rule: 1 to 64 bytes).
pub const MAX_SERIAL_LEN: usize = 64;

/// Most apps one `POST /v1/devices` may install: a device registers each at once, and a
/// request must not make the simulator mint tokens without bound.
pub const MAX_APPS_PER_REQUEST: usize = 64;

/// Most devices `GET /v1/devices` lists (sorted by serial): an answer is built in memory,
/// and the hub remembers every device that ever said hello.
pub const MAX_LISTED: usize = 10_000;

/// A boxed future, the return type of the [`Actors`] methods (a trait object cannot have
/// `async fn`s; boxing costs one allocation per API call, nothing beside a device's work).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the control API asks of the in-process devices and the test provider. The
/// simulator implements it with `crate::actors::Actors`; the server layer sees only this.
///
/// Serials name managed devices; a method given a serial it does not manage answers
/// [`Refusal::NotManaged`], and the route decides between 404 and 409 from the hub.
pub trait Actors: Send + Sync + fmt::Debug + 'static {
    /// Every managed device, as the device itself sees it (`managed: true`).
    fn list(&self) -> Vec<Device>;
    /// Starts a device and answers once it is online and every app has its token.
    fn create(&self, spec: DeviceSpec) -> BoxFuture<'_, Result<Device, Refusal>>;
    /// Stops a device and forgets it.
    fn remove(&self, serial: String) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Installs (or reinstalls) an app's kind of token and answers with its new token.
    fn install(&self, serial: String, app: AppToken) -> BoxFuture<'_, Result<App, Refusal>>;
    /// Uninstalls an app (its ordinary kind: the whole app) or one kind of token of it.
    fn uninstall(&self, serial: String, app: AppToken) -> BoxFuture<'_, Result<(), Refusal>>;
    /// Takes the device off the network (`false`) or brings it back (`true`, answered once
    /// it is online again).
    fn set_online(&self, serial: String, online: bool) -> BoxFuture<'_, Result<Device, Refusal>>;
    /// What the device has shown, oldest first, collapse ids applied.
    fn inbox(&self, serial: &str) -> Result<Vec<Shown>, Refusal>;
    /// Sends one push as a provider through the real gateway or HTTP/2 endpoint.
    fn push(&self, push: TestPush) -> BoxFuture<'_, Result<PushAnswer, Refusal>>;
    /// Stops and forgets every managed device (the demo fleet's too) and answers how many:
    /// what `POST /v1/reset` with `"devices": "remove"` does to the in-process devices.
    fn remove_all(&self) -> BoxFuture<'_, Vec<String>>;
}

/// Why an [`Actors`] call did not do what was asked; each maps to one answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No managed device has this serial (404, or 409 when the hub knows it).
    #[error("no managed device {0}")]
    NotManaged(String),
    /// The serial is taken (409).
    #[error("{0}")]
    Exists(String),
    /// As many devices as the actors hold already (409).
    #[error("{0}")]
    Full(String),
    /// The request names something that does not fit (400, naming the field).
    #[error("{error}")]
    Field {
        /// The body field or path part at fault.
        field: &'static str,
        /// Why.
        error: String,
    },
    /// Not found inside a managed device (an app it does not have, an inbox index): 404.
    #[error("{0}")]
    Missing(String),
    /// The device could not do it (it could not connect, was refused, did not register in
    /// time): 502 with the device's reason.
    #[error("{0}")]
    Device(String),
    /// The test provider could not reach the endpoint: 502 with the reason.
    #[error("{0}")]
    Provider(String),
    /// The PKI holds no credentials the test provider could push to this topic with (409:
    /// mint some with `apns-sim certs`).
    #[error("{0}")]
    NoCredentials(String),
}

impl Refusal {
    /// The API's answer; `known` says whether the hub knows the serial of a
    /// [`Refusal::NotManaged`].
    fn into_api(self, known: bool) -> ApiError {
        match self {
            Refusal::NotManaged(serial) if known => ApiError::general(
                StatusCode::CONFLICT,
                format!(
                    "device {serial} is not managed by this simulator (it is an outside \
                     device, e.g. an `apns-sim device` process: drive it through its stdin)"
                ),
            ),
            Refusal::NotManaged(serial) => ApiError::general(
                StatusCode::NOT_FOUND,
                format!("no device {serial}; GET /v1/devices lists them"),
            ),
            Refusal::Exists(e) | Refusal::Full(e) | Refusal::NoCredentials(e) => {
                ApiError::general(StatusCode::CONFLICT, e)
            }
            Refusal::Field { field, error } => ApiError::field(field, error),
            Refusal::Missing(e) => ApiError::general(StatusCode::NOT_FOUND, e),
            Refusal::Device(e) | Refusal::Provider(e) => {
                ApiError::general(StatusCode::BAD_GATEWAY, e)
            }
        }
    }
}

/// A new device, parsed and checked by the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Its serial (generated when the body had none).
    pub serial: String,
    /// Its environment.
    pub environment: Environment,
    /// The tokens it registers at start.
    pub apps: Vec<AppToken>,
}

/// One push of `POST /v1/push`, parsed and checked by the route.
#[derive(Debug, Clone, PartialEq)]
pub struct TestPush {
    /// Which device token.
    pub target: Target,
    /// Through which endpoint.
    pub api: PushApi,
    /// The payload, as JSON text.
    pub payload: String,
    /// `apns-push-type` (HTTP/2; default: the token kind's).
    pub push_type: Option<String>,
    /// Priority, 10, 5 or 1 (default 10).
    pub priority: Option<u8>,
    /// Expiry, UNIX seconds (default: none on HTTP/2, an hour ahead on binary).
    pub expiry: Option<u32>,
    /// `apns-collapse-id` (HTTP/2 only).
    pub collapse_id: Option<String>,
    /// `apns-topic` (HTTP/2; default: the token's app with its kind's suffix).
    pub topic: Option<String>,
}

/// Which token a test push goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A token as given.
    Token(DeviceToken),
    /// The current token of an app (and kind) on a device.
    App {
        /// The device's serial.
        serial: String,
        /// The app and kind.
        app: AppToken,
    },
}

/// The provider API a test push goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushApi {
    /// The HTTP/2 provider API (the default).
    Http2,
    /// The binary gateway (command 2).
    Binary,
}

/// A device as `GET /v1/devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Device {
    /// Its serial number.
    pub serial: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// Whether it holds a session with the device endpoint now.
    pub online: bool,
    /// True for an in-process device this API can drive.
    pub managed: bool,
    /// Its current tokens.
    pub apps: Vec<App>,
}

/// One token of an app on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct App {
    /// The bundle id.
    pub app: String,
    /// The kind of token: `remote`, `voip`, `liveactivity:ID`, …
    pub kind: String,
    /// The device token, hex.
    pub token: String,
}

impl App {
    /// The entry of one token.
    pub fn new(held: &AppToken, token: &DeviceToken) -> Self {
        App {
            app: held.app.clone(),
            kind: held.kind.to_string(),
            token: token.to_hex(),
        }
    }
}

/// The answer of `GET /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeviceList {
    /// Every device the hub knows, sorted by serial, then the managed ones not yet
    /// connected (virtual devices are not among them: see `virtual`).
    pub devices: Vec<Device>,
    /// The virtual fleet, counted rather than listed (its devices are paged by
    /// `GET /v1/virtual/devices`); absent when none runs.
    #[serde(rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virtual_fleet: Option<VirtualFleetInfo>,
}

/// The body of `POST /v1/devices`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Serial number, 1 to 64 printable ASCII characters without spaces or `/` (default: a
    /// fresh `SIM-…`).
    #[schema(pattern = "^[!-.0-~]{1,64}$", example = "SIM-1")]
    pub serial: Option<String>,
    /// `sandbox` (the default; `development` is its older name) or `production`.
    #[schema(value_type = Option<EnvironmentName>)]
    pub environment: Option<String>,
    /// Tokens to register, at most 64: `APP` for an app's ordinary token, `APP:KIND` for
    /// another kind (`com.example.app:voip`); one given twice is registered once. Default: none.
    #[schema(value_type = Option<Vec<AppSpec>>, max_items = 64)]
    pub apps: Option<Vec<String>>,
}

/// An environment's name, as the device routes take it.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum EnvironmentName {
    /// Apple's sandbox.
    Sandbox,
    /// The sandbox's older name.
    Development,
    /// Production.
    Production,
}

/// `APP` or `APP:KIND`: a bundle id (1 to 255 printable ASCII characters without spaces or
/// `:`), and a kind of token when not the ordinary one.
#[derive(Debug, Clone, ToSchema)]
#[schema(
    value_type = String,
    pattern = "^[!-9;-~]{1,255}(:(remote|voip|complication|fileprovider|location|pushtotalk|liveactivity-start|widgets|controls|liveactivity:[!-~]{1,64}))?$",
    example = "com.example.app"
)]
pub struct AppSpec(pub String);

/// The body of `POST /v1/devices/{serial}/apps`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// The bundle id: 1 to 255 printable ASCII characters without spaces or `:`.
    #[schema(pattern = "^[!-9;-~]{1,255}$", example = "com.example.app")]
    pub app: String,
    /// The kind of token (default `remote`, the ordinary one): `remote`, `voip`,
    /// `complication`, `fileprovider`, `location`, `pushtotalk`, `liveactivity-start`,
    /// `liveactivity:ID`, `widgets` or `controls`. Installing a kind the app already holds
    /// reinstalls the app: every kind gets a fresh token.
    #[schema(
        pattern = "^(remote|voip|complication|fileprovider|location|pushtotalk|liveactivity-start|widgets|controls|liveactivity:[!-~]{1,64})$",
        example = "voip"
    )]
    pub kind: Option<String>,
}

/// A notification a device has shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Shown {
    /// Its number on this device, counting every one shown (`…/inbox/{index}/apns`).
    pub index: u64,
    /// The notification's UUID.
    pub apns_id: String,
    /// The app it was for.
    pub app: String,
    /// The kind of the token it was sent to.
    pub kind: String,
    /// The token, hex.
    pub token: String,
    /// When the device received it, ms since the UNIX epoch.
    pub received_at_ms: u64,
    /// 10, 5 or 1.
    pub priority: u8,
    /// `apns-push-type`, when sent over HTTP/2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_type: Option<String>,
    /// `apns-collapse-id`, when given; a newer one with the same id replaced the older
    /// in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_id: Option<String>,
    /// The payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The answer of `GET /v1/devices/{serial}/inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Inbox {
    /// The device.
    pub serial: String,
    /// What it shows, oldest first (bounded: the oldest leave first).
    pub notifications: Vec<Shown>,
}

/// The answer of `POST /v1/push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PushAnswer {
    /// The API it went through.
    pub api: PushApi,
    /// The notification's UUID (the binary API's, as the simulator generated it; empty
    /// when the gateway refused the frame before it reached the hub).
    pub apns_id: String,
    /// HTTP/2: the HTTP status; binary: the error response's status byte, 0 when none came
    /// back (accepted).
    pub status: u16,
    /// Apple's reason (HTTP/2) or the simulator's words for a binary refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The actors, or 503 when the control API runs without them.
pub(super) fn actors_of(ctx: &Ctx) -> Result<&Arc<dyn Actors>, ApiError> {
    ctx.actors.as_ref().ok_or_else(|| {
        ApiError::general(
            StatusCode::SERVICE_UNAVAILABLE,
            "this control API runs without in-process devices (built without the simulator's \
             actors), so it cannot create or drive devices",
        )
    })
}

/// A refusal as the API's answer, asking the hub whether it knows an unmanaged serial.
pub(super) fn refused(ctx: &Ctx, refusal: Refusal) -> ApiError {
    let known = match &refusal {
        Refusal::NotManaged(serial) => ctx
            .hub
            .devices(MAX_LISTED)
            .iter()
            .any(|d| d.serial == *serial),
        _ => false,
    };
    refusal.into_api(known)
}

/// A path's parts, or 400 naming `field`.
fn path<T>(extracted: Result<Path<T>, PathRejection>, field: &str) -> Result<T, ApiError> {
    extracted
        .map(|Path(p)| p)
        .map_err(|e| ApiError::field(field, e.body_text()))
}

/// An unmanaged device as the hub knows it.
fn from_hub(known: &KnownDevice) -> Device {
    Device {
        serial: known.serial.clone(),
        environment: known.environment.as_str().to_owned(),
        online: known.online,
        managed: false,
        apps: known.tokens.iter().map(|(h, t)| App::new(h, t)).collect(),
    }
}

/// Checks a serial: 1 to [`MAX_SERIAL_LEN`] bytes, printable ASCII without spaces or `/`
/// (it is a path segment of every device route).
fn check_serial(serial: &str) -> Result<(), ApiError> {
    if serial.is_empty() || serial.len() > MAX_SERIAL_LEN {
        return Err(ApiError::field(
            "serial",
            format!("must be 1 to {MAX_SERIAL_LEN} bytes"),
        ));
    }
    if !serial.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(ApiError::field(
            "serial",
            "only printable ASCII without spaces or '/' (it is a path segment)",
        ));
    }
    Ok(())
}

/// Every device the hub knows, in-process or not.
#[utoipa::path(
    get,
    path = "/v1/devices",
    responses((status = 200, description = "Every device the hub knows", body = DeviceList))
)]
pub(super) async fn list(State(ctx): State<Ctx>) -> Json<DeviceList> {
    let managed = ctx.actors.as_ref().map(|a| a.list()).unwrap_or_default();
    let mut devices: Vec<Device> = Vec::new();
    let mut listed = vec![false; managed.len()];
    for known in ctx.hub.devices(MAX_LISTED) {
        let env = known.environment.as_str();
        match managed
            .iter()
            .position(|m| m.serial == known.serial && m.environment == env)
        {
            Some(i) => {
                listed[i] = true;
                devices.push(managed[i].clone());
            }
            None => devices.push(from_hub(&known)),
        }
    }
    for (device, seen) in managed.into_iter().zip(listed) {
        if !seen {
            devices.push(device);
        }
    }
    Json(DeviceList {
        devices,
        virtual_fleet: ctx.hub.virtual_summary().map(Into::into),
    })
}

/// Creates an in-process device, connected through the device endpoint like any other.
#[utoipa::path(
    post,
    path = "/v1/devices",
    request_body = NewDevice,
    responses(
        (status = 201, description = "Online, every app registered", body = Device),
        (status = 400, description = "A bad field, named in `field`", body = super::ErrorBody),
        (status = 409, description = "The serial exists, or too many devices", body = super::ErrorBody),
        (status = 502, description = "The device could not get online, with its reason", body = super::ErrorBody),
        (status = 503, description = "No in-process devices here", body = super::ErrorBody),
    )
)]
pub(super) async fn create(
    State(ctx): State<Ctx>,
    body: Result<JsonBody<NewDevice>, ApiError>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let actors = actors_of(&ctx)?;
    let JsonBody(body) = body?;
    let serial = match body.serial {
        Some(serial) => serial,
        None => format!("SIM-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    check_serial(&serial)?;
    let environment = match body.environment.as_deref() {
        None => Environment::Sandbox,
        Some(text) => text.parse().map_err(|_| {
            ApiError::field(
                "environment",
                format!("{text:?} is not sandbox (development) or production"),
            )
        })?,
    };
    let texts = body.apps.unwrap_or_default();
    if texts.len() > MAX_APPS_PER_REQUEST {
        return Err(ApiError::field(
            "apps",
            format!("at most {MAX_APPS_PER_REQUEST} per request"),
        ));
    }
    let mut apps: Vec<AppToken> = Vec::with_capacity(texts.len());
    for text in &texts {
        let app = app_spec(text, "apps")?;
        // One given twice (`com.a` and `com.a:remote` are the same) is registered once.
        if !apps.contains(&app) {
            apps.push(app);
        }
    }
    if let Some(live) = ctx
        .hub
        .devices(MAX_LISTED)
        .into_iter()
        .find(|d| d.serial == serial && d.online)
    {
        if !actors.list().iter().any(|m| m.serial == serial) {
            return Err(ApiError::general(
                StatusCode::CONFLICT,
                format!(
                    "device {} is online in {} as an outside device; a second one with its \
                     serial would replace its session",
                    live.serial, live.environment
                ),
            ));
        }
    }
    let spec = DeviceSpec {
        serial,
        environment,
        apps,
    };
    let device = actors.create(spec).await.map_err(|r| refused(&ctx, r))?;
    Ok((StatusCode::CREATED, Json(device)))
}

/// Stops an in-process device and forgets it (the hub remembers it, offline, with its
/// tokens and anything stored for it, until `POST /v1/reset`).
#[utoipa::path(
    delete,
    path = "/v1/devices/{serial}",
    params(("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1")),
    responses(
        (status = 204, description = "Stopped and removed"),
        (status = 404, description = "No such device", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
    )
)]
pub(super) async fn remove(
    State(ctx): State<Ctx>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let serial = path(serial, "serial")?;
    let actors = actors_of(&ctx)?;
    actors.remove(serial).await.map_err(|r| refused(&ctx, r))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Installs an app (or one more kind of token of it) and answers with the new token.
#[utoipa::path(
    post,
    path = "/v1/devices/{serial}/apps",
    params(("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1")),
    request_body = NewApp,
    responses(
        (status = 201, description = "Installed; the new token", body = App),
        (status = 400, description = "A bad field, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such device", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
        (status = 502, description = "The device got no token, with the reason", body = super::ErrorBody),
    )
)]
pub(super) async fn install(
    State(ctx): State<Ctx>,
    serial: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<NewApp>, ApiError>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    let serial = path(serial, "serial")?;
    let actors = actors_of(&ctx)?;
    let JsonBody(body) = body?;
    let app = app_token(&body.app, body.kind.as_deref(), "app", "kind")?;
    let app = actors
        .install(serial, app)
        .await
        .map_err(|r| refused(&ctx, r))?;
    Ok((StatusCode::CREATED, Json(app)))
}

/// `app` and an optional `kind` as an [`AppToken`], refusing either by name.
fn app_token(
    app: &str,
    kind: Option<&str>,
    app_field: &str,
    kind_field: &str,
) -> Result<AppToken, ApiError> {
    if app.is_empty() || app.len() > 255 || !app.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(ApiError::field(
            app_field,
            "a bundle id is 1 to 255 printable ASCII characters without spaces or ':' (give \
             the kind apart)",
        ));
    }
    let kind = match kind {
        None => TokenKind::Remote,
        Some(text) => kind_of(text).map_err(|e| ApiError::field(kind_field, e))?,
    };
    Ok(AppToken::new(app, kind))
}

/// A kind of token, printable ASCII ([`super::schemas::KIND_PATTERN`]).
fn kind_of(text: &str) -> Result<TokenKind, String> {
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?}: a kind is printable ASCII without spaces"
        ));
    }
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

/// `APP` or `APP:KIND` ([`super::schemas::APP_SPEC_PATTERN`]), refused naming `field`.
pub(super) fn app_spec(text: &str, field: &str) -> Result<AppToken, ApiError> {
    let (app, kind) = match text.split_once(':') {
        Some((app, kind)) => (app, Some(kind)),
        None => (text, None),
    };
    app_token(app, kind, field, field)
        .map_err(|e| ApiError::field(field, format!("not APP or APP:KIND: {}", e.body.error)))
}

/// `DELETE …/apps/{app}`'s query.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UninstallQuery {
    /// Remove only this kind of token (`voip`, `liveactivity:ID`, …); without it, or with
    /// `remote`, the whole app goes.
    #[param(
        pattern = "^(remote|voip|complication|fileprovider|location|pushtotalk|liveactivity-start|widgets|controls|liveactivity:[!-~]{1,64})$",
        example = "voip"
    )]
    pub kind: Option<String>,
}

/// Uninstalls an app, or one kind of token of it. The simulator learns of it only when a
/// push arrives, as APNs does.
#[utoipa::path(
    delete,
    path = "/v1/devices/{serial}/apps/{app}",
    params(
        ("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1"),
        ("app" = String, Path, description = "The bundle id", example = "com.example.app"),
        UninstallQuery,
    ),
    responses(
        (status = 204, description = "Uninstalled"),
        (status = 400, description = "A bad parameter, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such device, or the app is not installed", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
    )
)]
pub(super) async fn uninstall(
    State(ctx): State<Ctx>,
    parts: Result<Path<(String, String)>, PathRejection>,
    query: RawQuery,
) -> Result<StatusCode, ApiError> {
    let (serial, app) = path(parts, "app")?;
    let params = params(query, &["kind"])?;
    let actors = actors_of(&ctx)?;
    let app = app_token(&app, params.get("kind").map(String::as_str), "app", "kind")?;
    actors
        .uninstall(serial, app)
        .await
        .map_err(|r| refused(&ctx, r))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a device off the network: notifications for it are stored meanwhile.
#[utoipa::path(
    post,
    path = "/v1/devices/{serial}/offline",
    params(("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1")),
    responses(
        (status = 200, description = "Offline", body = Device),
        (status = 404, description = "No such device", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
    )
)]
pub(super) async fn offline(
    State(ctx): State<Ctx>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Json<Device>, ApiError> {
    set_online(ctx, serial, false).await
}

/// Brings a device back; answered once it is online (stored notifications follow).
#[utoipa::path(
    post,
    path = "/v1/devices/{serial}/online",
    params(("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1")),
    responses(
        (status = 200, description = "Online", body = Device),
        (status = 404, description = "No such device", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
        (status = 502, description = "It could not get online, with the reason", body = super::ErrorBody),
    )
)]
pub(super) async fn online(
    State(ctx): State<Ctx>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Json<Device>, ApiError> {
    set_online(ctx, serial, true).await
}

/// Both `offline` and `online`.
async fn set_online(
    ctx: Ctx,
    serial: Result<Path<String>, PathRejection>,
    online: bool,
) -> Result<Json<Device>, ApiError> {
    let serial = path(serial, "serial")?;
    let actors = actors_of(&ctx)?;
    let device = actors
        .set_online(serial, online)
        .await
        .map_err(|r| refused(&ctx, r))?;
    Ok(Json(device))
}

/// What a device has shown, collapse ids applied.
#[utoipa::path(
    get,
    path = "/v1/devices/{serial}/inbox",
    params(("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1")),
    responses(
        (status = 200, description = "Shown notifications, oldest first", body = Inbox),
        (status = 404, description = "No such device", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
    )
)]
pub(super) async fn inbox(
    State(ctx): State<Ctx>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Json<Inbox>, ApiError> {
    let serial = path(serial, "serial")?;
    let actors = actors_of(&ctx)?;
    let notifications = actors.inbox(&serial).map_err(|r| refused(&ctx, r))?;
    Ok(Json(Inbox {
        serial,
        notifications,
    }))
}

/// The `.apns` file of a shown notification: its payload plus `"Simulator Target Bundle"`,
/// the JSON `xcrun simctl push` reads.
pub fn apns_file(shown: &Shown) -> serde_json::Value {
    let mut file = match &shown.payload {
        serde_json::Value::Object(map) => map.clone(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("payload".to_owned(), other.clone());
            map
        }
    };
    file.insert(
        APNS_BUNDLE_KEY.to_owned(),
        serde_json::Value::String(shown.app.clone()),
    );
    serde_json::Value::Object(file)
}

/// The key of an `.apns` file that names the app (`xcrun simctl push` reads it).
pub const APNS_BUNDLE_KEY: &str = "Simulator Target Bundle";

/// Downloads one shown notification as an `.apns` file, for `xcrun simctl push` or
/// `apns-sim push --file`.
#[utoipa::path(
    get,
    path = "/v1/devices/{serial}/inbox/{index}/apns",
    params(
        ("serial" = String, Path, description = "The device's serial", example = "DEMO-IPHONE-1"),
        ("index" = u64, Path, description = "The notification's `index` in the inbox"),
    ),
    responses(
        (status = 200, description = "The .apns file (an attachment)", content_type = "application/json"),
        (status = 400, description = "A bad index", body = super::ErrorBody),
        (status = 404, description = "No such device or notification", body = super::ErrorBody),
        (status = 409, description = "Not an in-process device", body = super::ErrorBody),
    )
)]
pub(super) async fn apns(
    State(ctx): State<Ctx>,
    parts: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (serial, index) = path(parts, "index")?;
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::field("index", format!("not an unsigned integer: {index:?}")))?;
    let actors = actors_of(&ctx)?;
    let shown = actors.inbox(&serial).map_err(|r| refused(&ctx, r))?;
    let Some(shown) = shown.iter().find(|s| s.index == index) else {
        return Err(ApiError::general(
            StatusCode::NOT_FOUND,
            format!(
                "device {serial} shows no notification {index} (GET /v1/devices/{serial}/inbox \
                 lists the indexes it holds)"
            ),
        ));
    };
    let body = serde_json::to_vec_pretty(&apns_file(shown)).unwrap_or_default();
    let name = format!("{}-{}.apns", safe_name(&serial), index);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// `text` with anything but letters, digits, `-`, `_` and `.` replaced by `_`, for a file
/// name in a header.
fn safe_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ----- the virtual fleet ---------------------------------------------------------------

/// Most virtual devices one `GET /v1/virtual/devices` lists (each with its ten tokens per
/// app): an answer is built in memory, and a fleet may hold millions, so it is paged.
pub const MAX_VIRTUAL_PAGE: u64 = 1_000;

/// Virtual devices per page when `limit` is not given.
pub const DEFAULT_VIRTUAL_PAGE: u64 = 100;

/// The virtual fleet at a glance (`GET /v1/virtual`, and `virtual` in `GET /v1/devices`):
/// its devices are counted, never enumerated there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VirtualFleetInfo {
    /// Devices in the fleet.
    pub count: u32,
    /// `sandbox` or `production`: the environment of every token.
    pub environment: String,
    /// The apps every device holds every kind of token of.
    pub apps: Vec<String>,
    /// Tokens each device holds.
    pub tokens_per_device: usize,
    /// Devices online now.
    pub online: u64,
    /// Devices offline now (their notifications are stored).
    pub offline: u64,
    /// App tokens uninstalled and not yet reported by their device.
    pub uninstalled: u64,
    /// App tokens reported as not installed (pushes get 410).
    pub unregistered: u64,
    /// Notifications stored for offline virtual devices.
    pub stored: u64,
}

impl From<VirtualSummary> for VirtualFleetInfo {
    fn from(s: VirtualSummary) -> Self {
        VirtualFleetInfo {
            count: s.count,
            environment: s.environment.as_str().to_owned(),
            apps: s.apps,
            tokens_per_device: s.tokens_per_device,
            online: s.online,
            offline: u64::from(s.count) - s.online,
            uninstalled: s.uninstalled,
            unregistered: s.unregistered,
            stored: s.stored,
        }
    }
}

/// One token of a virtual device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VirtualApp {
    /// The bundle id.
    pub app: String,
    /// The kind of token: `remote`, `voip`, `liveactivity:virtual`, …
    pub kind: String,
    /// The device token, hex.
    pub token: String,
    /// `installed`, `uninstalled` (reported at its next notification) or `unregistered`
    /// (reported: pushes get 410).
    pub state: String,
}

/// A virtual device and its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VirtualDeviceInfo {
    /// Its number in the fleet (the path of its routes).
    pub index: u32,
    /// Its serial in the delivery log (`virtual-N`).
    pub serial: String,
    /// Whether it is online.
    pub online: bool,
    /// Every token.
    pub apps: Vec<VirtualApp>,
}

impl From<VirtualDevice> for VirtualDeviceInfo {
    fn from(d: VirtualDevice) -> Self {
        VirtualDeviceInfo {
            index: d.index,
            serial: d.serial,
            online: d.online,
            apps: d
                .tokens
                .iter()
                .map(|(held, token, state)| VirtualApp {
                    app: held.app.clone(),
                    kind: held.kind.to_string(),
                    token: token.to_hex(),
                    state: state.as_str().to_owned(),
                })
                .collect(),
        }
    }
}

/// The answer of `GET /v1/virtual/devices`: one page of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VirtualPage {
    /// The first device number of the page.
    pub from: u64,
    /// Devices in the whole fleet (the next page starts at `from` plus the devices listed).
    pub count: u32,
    /// The page's devices, in number order.
    pub devices: Vec<VirtualDeviceInfo>,
}

/// The body of `POST /v1/virtual/devices/{index}/uninstall`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualUninstall {
    /// The bundle id to uninstall (every kind of its tokens).
    #[schema(example = "com.example.app")]
    pub app: String,
}

/// The body of `POST /v1/virtual/devices/{index}/offline` (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualOffline {
    /// Come back by itself after this many ms (default: stay offline until
    /// `…/online`).
    pub for_ms: Option<u64>,
}

/// A virtual-fleet refusal as the API's answer.
fn virtual_refused(err: VirtualError) -> ApiError {
    match err {
        VirtualError::NoFleet | VirtualError::NoDevice(..) => {
            ApiError::general(StatusCode::NOT_FOUND, err.to_string())
        }
        VirtualError::NoApp(..) => ApiError::field("app", err.to_string()),
    }
}

/// A virtual device number from the path.
fn virtual_index(extracted: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    path(extracted, "index")
}

/// The virtual fleet at a glance (without one, a fleet of 0 devices).
#[utoipa::path(
    get,
    path = "/v1/virtual",
    responses((status = 200, description = "The fleet, counted", body = VirtualFleetInfo))
)]
pub(super) async fn virtual_fleet(State(ctx): State<Ctx>) -> Json<VirtualFleetInfo> {
    Json(ctx.hub.virtual_summary().map_or_else(no_fleet, Into::into))
}

/// What `GET /v1/virtual` answers when no fleet runs: one of 0 devices.
fn no_fleet() -> VirtualFleetInfo {
    VirtualFleetInfo {
        count: 0,
        environment: Environment::Sandbox.as_str().to_owned(),
        apps: Vec::new(),
        tokens_per_device: 0,
        online: 0,
        offline: 0,
        uninstalled: 0,
        unregistered: 0,
        stored: 0,
    }
}

/// One page of virtual devices with their tokens (a fleet may hold millions: it is paged,
/// at most [`MAX_VIRTUAL_PAGE`] devices a page).
#[utoipa::path(
    get,
    path = "/v1/virtual/devices",
    params(
        ("from" = Option<u64>, Query, minimum = 0, maximum = 4294967295_u64,
            description = "The first device number (default 0)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "Devices in the page, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "The page (empty past the fleet's end, or without a fleet)", body = VirtualPage),
        (status = 400, description = "A bad parameter, named in `field`", body = super::ErrorBody),
    )
)]
pub(super) async fn virtual_devices(
    State(ctx): State<Ctx>,
    query: RawQuery,
) -> Result<Json<VirtualPage>, ApiError> {
    let params = params(query, &["from", "limit"])?;
    let from = super::number(&params, "from", 0, u64::from(u32::MAX))?.unwrap_or(0);
    let limit =
        super::number(&params, "limit", 1, MAX_VIRTUAL_PAGE)?.unwrap_or(DEFAULT_VIRTUAL_PAGE);
    let count = ctx.hub.virtual_summary().map_or(0, |s| s.count);
    let devices = ctx
        .hub
        .virtual_devices(from, limit as usize)
        .unwrap_or_default();
    Ok(Json(VirtualPage {
        from,
        count,
        devices: devices.into_iter().map(Into::into).collect(),
    }))
}

/// Uninstalls an app (every kind of its tokens) on a virtual device: its next notification
/// is reported as not installed (feedback, then 410), as a real device reports it.
#[utoipa::path(
    post,
    path = "/v1/virtual/devices/{index}/uninstall",
    params(("index" = u64, Path, minimum = 0, maximum = 9223372036854775807_u64,
        description = "The device's number in the fleet")),
    request_body = VirtualUninstall,
    responses(
        (status = 200, description = "Uninstalled", body = VirtualDeviceInfo),
        (status = 400, description = "A bad field, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such virtual device", body = super::ErrorBody),
    )
)]
pub(super) async fn virtual_uninstall(
    State(ctx): State<Ctx>,
    index: Result<Path<u64>, PathRejection>,
    body: Result<JsonBody<VirtualUninstall>, ApiError>,
) -> Result<Json<VirtualDeviceInfo>, ApiError> {
    let index = virtual_index(index)?;
    let JsonBody(body) = body?;
    ctx.hub
        .virtual_uninstall(index, &body.app)
        .map(|d| Json(d.into()))
        .map_err(virtual_refused)
}

/// Takes a virtual device offline: its notifications are stored meanwhile.
#[utoipa::path(
    post,
    path = "/v1/virtual/devices/{index}/offline",
    params(("index" = u64, Path, minimum = 0, maximum = 9223372036854775807_u64,
        description = "The device's number in the fleet")),
    request_body(content = Option<VirtualOffline>, description = "Optional"),
    responses(
        (status = 200, description = "Offline", body = VirtualDeviceInfo),
        (status = 400, description = "A bad field, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such virtual device", body = super::ErrorBody),
    )
)]
pub(super) async fn virtual_offline(
    State(ctx): State<Ctx>,
    index: Result<Path<u64>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Json<VirtualDeviceInfo>, ApiError> {
    let index = virtual_index(index)?;
    let body: VirtualOffline = super::parse_json_or_default(&body)?;
    let away = body.for_ms.map(std::time::Duration::from_millis);
    ctx.hub
        .virtual_set_online(index, false, away)
        .map(|d| Json(d.into()))
        .map_err(virtual_refused)
}

/// Brings a virtual device back: what was stored for it is delivered (and acknowledged) at
/// once.
#[utoipa::path(
    post,
    path = "/v1/virtual/devices/{index}/online",
    params(("index" = u64, Path, minimum = 0, maximum = 9223372036854775807_u64,
        description = "The device's number in the fleet")),
    responses(
        (status = 200, description = "Online", body = VirtualDeviceInfo),
        (status = 400, description = "A bad device number, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such virtual device", body = super::ErrorBody),
    )
)]
pub(super) async fn virtual_online(
    State(ctx): State<Ctx>,
    index: Result<Path<u64>, PathRejection>,
) -> Result<Json<VirtualDeviceInfo>, ApiError> {
    let index = virtual_index(index)?;
    ctx.hub
        .virtual_set_online(index, true, None)
        .map(|d| Json(d.into()))
        .map_err(virtual_refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_and_kinds_are_printable_ascii() {
        assert!(app_spec("com.a:voip", "apps").is_ok());
        assert!(app_spec("com.a", "apps").is_ok());
        for bad in [
            "",
            "com a",
            "com.\u{e9}",
            "com.a:",
            "com.a:nope",
            "com.a:voip x",
        ] {
            let err = app_spec(bad, "apps").unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some("apps"), "{bad:?}");
        }
        assert!(app_token("com.a", Some(""), "app", "kind").is_err());
        assert!(app_token("com.a", Some("liveactivity:r\u{e9}"), "app", "kind").is_err());
    }

    #[test]
    fn an_apns_file_is_the_payload_with_the_bundle() {
        let shown = Shown {
            index: 1,
            apns_id: "x".into(),
            app: "com.a".into(),
            kind: "remote".into(),
            token: "00".into(),
            received_at_ms: 0,
            priority: 10,
            push_type: None,
            collapse_id: None,
            payload: serde_json::json!({"aps": {"alert": "hi"}}),
        };
        assert_eq!(
            apns_file(&shown),
            serde_json::json!({"aps": {"alert": "hi"}, "Simulator Target Bundle": "com.a"})
        );
        assert_eq!(safe_name("a b/c"), "a_b_c");
    }
}
