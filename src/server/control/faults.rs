//! `GET`, `POST`, `DELETE /v1/faults` and `DELETE /v1/faults/{id}`: the hub's fault table
//! ([`crate::hub::FaultSpec`] is the whole shape, in the OpenAPI document too).
//!
//! The hub checks what it can check alone (one effect, and one its endpoint has; the
//! numbers; the token); this module adds what only the HTTP/2 API knows: that a `respond`
//! status is one Apple answers with and its reason one Apple defines for that status, and
//! that a `goaway` reason is one of Apple's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, Ctx, ErrorBody, JsonBody};
use crate::hub::{Fault, FaultSpec, MAX_FAULTS};
use crate::server::http2::response::Reason;

/// The body of `GET /v1/faults`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Faults {
    /// Every fault set, oldest first (the first that matches an event hits it).
    pub faults: Vec<Fault>,
}

/// The statuses the HTTP/2 API answers with (and the `NewFault` schema offers).
pub const STATUSES: [u16; 9] = [400, 403, 404, 405, 410, 413, 429, 500, 503];

/// The body of `POST /v1/faults`, in the document only: a [`FaultSpec`] with exactly one
/// effect of its endpoint. Its schema is hand-written ([`super::schemas`]), since a derived
/// one cannot say "exactly one of these"; the route reads a [`FaultSpec`].
#[derive(Debug, Clone, ToSchema)]
#[schema(value_type = Object)]
pub struct NewFault(pub serde_json::Value);

/// The fields of a fault that are objects: serde would also read each from an array of its
/// fields' values (`"match": [null, null]`), which the document does not allow.
const OBJECT_FIELDS: [&str; 4] = ["match", "respond", "goaway", "error"];

/// A body (a JSON object) as a [`FaultSpec`], each of [`OBJECT_FIELDS`] an object or null.
fn spec_of(body: serde_json::Value) -> Result<FaultSpec, ApiError> {
    for field in OBJECT_FIELDS {
        if let Some(value) = body.get(field) {
            if !(value.is_object() || value.is_null()) {
                return Err(ApiError::field(
                    field,
                    format!("{value} is not a JSON object (or null)"),
                ));
            }
        }
    }
    super::from_value(body)
}

/// Checks what the hub cannot: the HTTP/2 statuses and reasons (a scenario's `fault` step
/// is checked with it too).
pub(crate) fn check_http2(spec: &FaultSpec) -> Result<(), ApiError> {
    if let Some(respond) = &spec.respond {
        if !STATUSES.contains(&respond.status) {
            return Err(ApiError::field(
                "respond.status",
                format!(
                    "{} is not a status APNs answers with ({})",
                    respond.status,
                    STATUSES.map(|s| s.to_string()).join(", ")
                ),
            ));
        }
        if let Some(name) = &respond.reason {
            let known: Vec<&str> = Reason::of_status(respond.status)
                .into_iter()
                .map(Reason::as_str)
                .collect();
            match Reason::from_name(name) {
                Some(reason) if reason.status().as_u16() == respond.status => {}
                Some(reason) => {
                    return Err(ApiError::field(
                        "respond.reason",
                        format!(
                            "APNs sends {name} with {}, not {}; with {} it sends {}",
                            reason.status().as_u16(),
                            respond.status,
                            respond.status,
                            known.join(", ")
                        ),
                    ))
                }
                None => {
                    return Err(ApiError::field(
                        "respond.reason",
                        format!(
                            "{name:?} is not a reason APNs defines; with {} it sends {}",
                            respond.status,
                            known.join(", ")
                        ),
                    ))
                }
            }
        }
        if respond.timestamp_ms.is_some() && respond.status != 410 {
            return Err(ApiError::field(
                "respond.timestamp_ms",
                "only a 410 answer carries a timestamp",
            ));
        }
    }
    if let Some(name) = spec.goaway.as_ref().and_then(|g| g.reason.as_deref()) {
        if Reason::from_name(name).is_none() {
            return Err(ApiError::field(
                "goaway.reason",
                format!("{name:?} is not a reason APNs defines (Shutdown, IdleTimeout, …)"),
            ));
        }
    }
    Ok(())
}

/// Every fault set, oldest first.
#[utoipa::path(
    get,
    path = "/v1/faults",
    responses((status = 200, description = "Every fault set", body = Faults))
)]
pub(super) async fn list(State(ctx): State<Ctx>) -> Json<Faults> {
    Json(Faults {
        faults: ctx.hub.faults(),
    })
}

/// Adds a fault: exactly one effect, of its endpoint (`on`).
#[utoipa::path(
    post,
    path = "/v1/faults",
    request_body = NewFault,
    responses(
        (status = 201, description = "The fault as set, with its id", body = Fault),
        (status = 400, description = "A bad field, named in `field`", body = ErrorBody),
        (status = 409, description = "As many faults as the table holds are set already",
         body = ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = ErrorBody),
    )
)]
pub(super) async fn add(
    State(ctx): State<Ctx>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<Fault>), ApiError> {
    let spec = spec_of(body)?;
    check_http2(&spec)?;
    if ctx.hub.faults().len() >= MAX_FAULTS {
        return Err(ApiError::general(
            StatusCode::CONFLICT,
            format!("{MAX_FAULTS} faults are already set; remove one first"),
        ));
    }
    let fault = ctx
        .hub
        .add_fault(spec)
        .map_err(|e| ApiError::field(&e.field, e.error))?;
    Ok((StatusCode::CREATED, Json(fault)))
}

/// Removes every fault.
#[utoipa::path(
    delete,
    path = "/v1/faults",
    responses((status = 204, description = "No fault is set any more"))
)]
pub(super) async fn clear(State(ctx): State<Ctx>) -> StatusCode {
    ctx.hub.clear_faults();
    StatusCode::NO_CONTENT
}

/// Removes one fault.
#[utoipa::path(
    delete,
    path = "/v1/faults/{id}",
    params(("id" = String, Path, description = "The fault's id (`f1`, …)", example = "f1")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No fault has this id (used up, expired or never set)",
         body = ErrorBody),
    )
)]
pub(super) async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if ctx.hub.remove_fault(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody {
                error: format!("no fault {id:?} is set (used up, expired, removed or never set)"),
                field: Some("id".to_owned()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::control::parse_json;

    fn refused(json: &str) -> (StatusCode, ErrorBody) {
        let err = parse_json::<serde_json::Value>(json.as_bytes())
            .and_then(spec_of)
            .and_then(|spec| check_http2(&spec).map(|()| spec))
            .unwrap_err();
        (err.status, err.body)
    }

    #[test]
    fn bodies_are_refused_naming_the_field() {
        let cases = [
            (r#"{"on": "http2", "bogus": 1}"#, Some("bogus")),
            (
                r#"{"on": "http2", "match": {"tokn": "00"}}"#,
                Some("match.tokn"),
            ),
            (r#"{"match": {}}"#, Some("on")),
            (
                r#"{"on": "devices", "delay_ms": 0, "match": [null, null]}"#,
                Some("match"),
            ),
            (r#"{"on": "http2", "respond": [500]}"#, Some("respond")),
            (r#"{"on": "smtp"}"#, Some("on")),
            (r#"{"on": "http2", "count": "two"}"#, Some("count")),
            (
                r#"{"on": "http2", "respond": {"status": 500, "reason": 7}}"#,
                Some("respond.reason"),
            ),
            (
                r#"{"on": "http2", "respond": {"reason": "X"}}"#,
                Some("respond.status"),
            ),
            (
                r#"{"on": "http2", "respond": {"status": 299}}"#,
                Some("respond.status"),
            ),
            (
                r#"{"on": "http2", "respond": {"status": 500, "reason": "Unregistered"}}"#,
                Some("respond.reason"),
            ),
            (
                r#"{"on": "http2", "respond": {"status": 500, "reason": "Oops"}}"#,
                Some("respond.reason"),
            ),
            (
                r#"{"on": "http2", "respond": {"status": 500, "timestamp_ms": 1}}"#,
                Some("respond.timestamp_ms"),
            ),
            (
                r#"{"on": "http2", "goaway": {"reason": "Bye"}}"#,
                Some("goaway.reason"),
            ),
            (r#"[1]"#, None),
            (r#"{"on": "http2""#, None),
            (r#"not json"#, None),
            (r#"{"on": "http2"} trailing"#, None),
        ];
        for (json, field) in cases {
            let (status, body) = refused(json);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(body.field.as_deref(), field, "{json}: {}", body.error);
        }
    }

    #[tokio::test]
    async fn a_full_table_is_409() {
        let ctx = super::super::tests::ctx();
        let body =
            || JsonBody(serde_json::json!({"on": "http2", "respond": {"status": 500}, "count": 2}));
        for _ in 0..MAX_FAULTS {
            let (status, _) = add(State(ctx.clone()), body()).await.unwrap();
            assert_eq!(status, StatusCode::CREATED);
        }
        let err = add(State(ctx), body()).await.unwrap_err();
        assert_eq!(err.status, StatusCode::CONFLICT, "{}", err.body.error);
    }

    #[test]
    fn the_issues_example_and_apples_pairs_are_accepted() {
        for json in [
            r#"{"on": "http2", "match": {"token": "00"}, "respond": {"status": 500, "reason": "InternalServerError"}, "count": 2}"#,
            r#"{"on": "http2", "respond": {"status": 410, "reason": "ExpiredToken", "timestamp_ms": 5}}"#,
            r#"{"on": "http2", "respond": {"status": 403, "reason": "Forbidden"}}"#,
            r#"{"on": "http2", "respond": {"status": 429}}"#,
            r#"{"on": "http2", "goaway": {}}"#,
        ] {
            let spec = spec_of(parse_json(json.as_bytes()).unwrap()).unwrap();
            check_http2(&spec).unwrap();
        }
    }
}
