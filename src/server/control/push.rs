//! `POST /v1/push`: one test push, sent by the simulator's test provider as a real provider
//! would send it, through the real binary gateway or HTTP/2 endpoint over TLS with the PKI's
//! credentials, and Apple's answer reported back. The push itself is the actors' work
//! ([`super::devices::Actors::push`]); this route checks the body and names the field at
//! fault.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::devices::{actors_of, PushAnswer, PushApi, Refusal, Target, TestPush};
use super::{ApiError, Ctx, JsonBody};
use crate::protocol::token::DeviceToken;

/// The longest collapse id the route passes on; Apple's limit is 64 bytes, and a longer one
/// is still sent (so a test can see `BadCollapseId`) up to this bound.
pub const MAX_COLLAPSE_ID_LEN: usize = 1024;

/// The body of `POST /v1/push`: a `token`, or a `serial` and an `app`. The document's
/// schema of it is hand-written ([`super::schemas`]) to say so.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The device token, hex.
    pub token: Option<String>,
    /// The device (with `app`): its current token of that app.
    pub serial: Option<String>,
    /// The app, `APP` or `APP:KIND` (with `serial`).
    pub app: Option<String>,
    /// `http2` (the default) or `binary`.
    pub api: Option<PushApi>,
    /// The JSON payload (an object).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `apns-push-type` (HTTP/2; default: the one the token's kind takes).
    pub push_type: Option<String>,
    /// 10, 5 or 1 (default 10).
    pub priority: Option<u8>,
    /// Expiry, UNIX seconds; 0 = now or never.
    pub expiry: Option<u32>,
    /// `apns-collapse-id` (HTTP/2 only).
    pub collapse_id: Option<String>,
    /// `apns-topic` (HTTP/2; default: the token's app with its kind's suffix). On the
    /// binary API the certificate chosen for it names the topic.
    pub topic: Option<String>,
}

/// Sends one push through a real provider endpoint and reports Apple's answer.
#[utoipa::path(
    post,
    path = "/v1/push",
    request_body = PushBody,
    responses(
        (status = 200, description = "Sent; Apple's answer (a refusal is an answer too)", body = PushAnswer),
        (status = 400, description = "A bad field, named in `field`", body = super::ErrorBody),
        (status = 404, description = "No such device or app", body = super::ErrorBody),
        (status = 409, description = "No credentials for the topic in the PKI", body = super::ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = super::ErrorBody),
        (status = 502, description = "The endpoint could not be reached", body = super::ErrorBody),
        (status = 503, description = "No test provider here", body = super::ErrorBody),
    )
)]
pub(super) async fn send(
    State(ctx): State<Ctx>,
    body: Result<JsonBody<PushBody>, ApiError>,
) -> Result<Json<PushAnswer>, ApiError> {
    let actors = actors_of(&ctx)?;
    let JsonBody(body) = body?;
    let target = match (&body.token, &body.serial, &body.app) {
        (Some(token), None, None) => Target::Token(
            DeviceToken::from_hex(token)
                .map_err(|e| ApiError::field("token", format!("not a device token: {e}")))?,
        ),
        (None, Some(serial), Some(app)) => Target::App {
            serial: serial.clone(),
            app: super::devices::app_spec(app, "app")?,
        },
        (Some(_), _, _) => {
            return Err(ApiError::field(
                "token",
                "give a token, or a serial and an app, not both",
            ))
        }
        (None, Some(_), None) => {
            return Err(ApiError::field("app", "required with serial"));
        }
        (None, None, Some(_)) => {
            return Err(ApiError::field("serial", "required with app"));
        }
        (None, None, None) => {
            return Err(ApiError::field(
                "token",
                "required: a token, or a serial and an app",
            ))
        }
    };
    if !body.payload.is_object() {
        return Err(ApiError::field("payload", "must be a JSON object"));
    }
    if let Some(p) = body.priority {
        if ![10, 5, 1].contains(&p) {
            return Err(ApiError::field(
                "priority",
                format!("{p} is not 10, 5 or 1"),
            ));
        }
    }
    if body
        .collapse_id
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COLLAPSE_ID_LEN)
    {
        return Err(ApiError::field(
            "collapse_id",
            format!("over {MAX_COLLAPSE_ID_LEN} bytes"),
        ));
    }
    for (field, value) in [
        ("topic", &body.topic),
        ("push_type", &body.push_type),
        ("collapse_id", &body.collapse_id),
    ] {
        if let Some(value) = value {
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(ApiError::field(
                    field,
                    "an HTTP/2 header value: printable ASCII only",
                ));
            }
        }
    }
    let api = body.api.unwrap_or(PushApi::Http2);
    if api == PushApi::Binary {
        for (field, given) in [
            ("push_type", body.push_type.is_some()),
            ("collapse_id", body.collapse_id.is_some()),
            ("topic", body.topic.is_some()),
        ] {
            if given {
                return Err(ApiError::field(
                    field,
                    "the binary API has no such field (use \"api\": \"http2\")",
                ));
            }
        }
    }
    let push = TestPush {
        target,
        api,
        payload: body.payload.to_string(),
        push_type: body.push_type,
        priority: body.priority,
        expiry: body.expiry,
        collapse_id: body.collapse_id,
        topic: body.topic,
    };
    let answer = actors
        .push(push)
        .await
        .map_err(|r: Refusal| super::devices::refused(&ctx, r))?;
    Ok(Json(answer))
}
