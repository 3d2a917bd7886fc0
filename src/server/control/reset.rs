//! `POST /v1/reset`: back to an empty world without a restart, between two tests.
//!
//! Body (optional) `{"devices": "keep" | "remove"}`, `keep` by default. The hub clears
//! ([`Hub::reset`](crate::hub::Hub::reset)): the delivery log, the notifications stored for
//! offline devices, the feedback lists, the unregistered tokens and the rate limit's
//! history, and it forgets devices that are offline, with their tokens. Devices online now
//! keep their sessions and the tokens they registered, so a push to one after the reset is
//! delivered as before. A token the hub forgot (unregistered, or an offline device's) is
//! unknown afterwards: a push to it is refused like one to a token no device ever held
//! (HTTP/2 `400 BadDeviceToken`, binary status 8); it is not registered again, since the app
//! behind it is gone.
//!
//! The log's sequence numbers keep growing: the `reset` event that opens the emptied log has
//! the next number, so a reader's cursor stays valid, and a cursor that had not seen
//! everything before the reset is told `truncated`.
//!
//! What lives outside the hub (the faults, the in-process devices that `"devices":
//! "remove"` takes away) joins through [`ResetParticipant`]s, run in order before the hub,
//! so the reset event comes after whatever they log.

use std::collections::BTreeMap;
use std::fmt::Debug;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::{ApiError, Ctx};
use crate::hub::ResetCounts;

/// What to do with the devices (`"devices"` in the body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Devices {
    /// Keep the devices that are online, with their tokens (the default).
    #[default]
    Keep,
    /// Also remove the in-process devices the control API created (the participant that
    /// owns them does; the hub then forgets them as offline devices).
    Remove,
}

/// The body of `POST /v1/reset`; empty means every default.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// `keep` (default) or `remove`.
    #[serde(default)]
    pub devices: Devices,
}

/// The answer: what was cleared.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResetAnswer {
    /// What was asked for the devices.
    pub devices: Devices,
    /// What the hub cleared.
    pub cleared: ResetCounts,
    /// What each participant outside the hub cleared, by its name (`faults`, `devices`).
    pub participants: BTreeMap<String, u64>,
}

/// Something outside the hub that a reset resets: the faults, the in-process devices.
///
/// HOOK (issue 8 merge): the faults (`Hub::clear_faults`) and the actors' devices
/// (`remove_all`, when `devices` is [`Devices::Remove`]) implement this, and the simulator
/// lists them in [`super::ControlConfig::reset_participants`]; none are wired on this branch.
pub trait ResetParticipant: Send + Sync + Debug {
    /// Its name in the answer's `participants`.
    fn name(&self) -> &'static str;

    /// Resets it; returns how many things it cleared.
    fn reset(&self, devices: Devices) -> BoxFuture<'_, u64>;
}

/// Parses the body by hand, so that each refusal names its field (axum's `Json` rejection
/// does not): an object with at most `devices`, which must be `keep` or `remove`.
fn request(body: &[u8]) -> Result<ResetRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ResetRequest::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::field("body", format!("not JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(ApiError::field("body", "not a JSON object"));
    };
    let mut request = ResetRequest::default();
    for (name, value) in fields {
        if name != "devices" {
            return Err(ApiError::field(
                &name,
                "unknown field; the body takes devices only",
            ));
        }
        request.devices = serde_json::from_value(value.clone()).map_err(|_| {
            ApiError::field("devices", format!("{value} is not \"keep\" or \"remove\""))
        })?;
    }
    Ok(request)
}

/// Resets the simulator: the participants first, then the hub.
#[utoipa::path(
    post,
    path = "/v1/reset",
    request_body(content = ResetRequest, description = "Optional; `{}` or no body keeps the devices"),
    responses(
        (status = 200, description = "What was cleared", body = ResetAnswer),
        (status = 400, description = "A bad body, the field named in `field`", body = super::ErrorBody),
    )
)]
pub(super) async fn reset(
    State(ctx): State<Ctx>,
    body: Bytes,
) -> Result<Json<ResetAnswer>, ApiError> {
    let request = request(&body)?;
    let mut participants = BTreeMap::new();
    for participant in ctx.resets.iter() {
        let cleared = participant.reset(request.devices).await;
        participants.insert(participant.name().to_owned(), cleared);
    }
    let cleared = ctx.hub.reset();
    info!(devices = ?request.devices, ?participants, "control API: reset");
    Ok(Json(ResetAnswer {
        devices: request.devices,
        cleared,
        participants,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_optional_and_each_refusal_names_its_field() {
        assert_eq!(request(b"").unwrap().devices, Devices::Keep);
        assert_eq!(request(b" {} ").unwrap().devices, Devices::Keep);
        assert_eq!(
            request(br#"{"devices":"remove"}"#).unwrap().devices,
            Devices::Remove
        );
        for (body, field) in [
            (&br#"{"devices":"all"}"#[..], "devices"),
            (br#"{"devices":1}"#, "devices"),
            (br#"{"device":"keep"}"#, "device"),
            (b"[]", "body"),
            (b"{", "body"),
        ] {
            let err = request(body).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some(field), "{body:?}");
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
