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
//! Faults are hub state and go with it. `"devices": "remove"` first stops every in-process
//! device ([`super::devices::Actors::remove_all`]) and waits, up to [`REMOVE_TIMEOUT`], until
//! the hub has seen each of them leave, so that the hub's reset then forgets them as offline
//! devices instead of keeping them as online ones.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::{ApiError, Ctx};
use crate::hub::{Hub, Logged, ResetCounts};

/// What to do with the devices (`"devices"` in the body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Devices {
    /// Keep the devices that are online, with their tokens (the default).
    #[default]
    Keep,
    /// Also remove the in-process devices (those the control API created and the demo
    /// fleet's); the hub then forgets them as offline devices.
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
    /// How many in-process devices were removed (0 unless `"devices": "remove"`).
    pub removed_devices: u64,
}

/// How long `"devices": "remove"` waits for the hub to see the removed devices' sessions
/// end (each closes its TLS connection as it stops; the device endpoint then ends the session
/// at once), before resetting anyway: ample on a loaded machine, and a bound on the request.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body, optional: nothing is every default ([`super::parse_json_or_default`]).
fn request(body: &[u8]) -> Result<ResetRequest, ApiError> {
    super::parse_json_or_default(body)
}

/// Resets the simulator: the in-process devices first when asked, then the hub.
#[utoipa::path(
    post,
    path = "/v1/reset",
    request_body(content = Option<ResetRequest>, description = "Optional; `{}` or no body keeps the devices"),
    responses(
        (status = 200, description = "What was cleared", body = ResetAnswer),
        (status = 400, description = "A bad body, the field named in `field`", body = super::ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = super::ErrorBody),
    )
)]
pub(super) async fn reset(
    State(ctx): State<Ctx>,
    body: Bytes,
) -> Result<Json<ResetAnswer>, ApiError> {
    let request = request(&body)?;
    let mut removed_devices = 0;
    if request.devices == Devices::Remove {
        if let Some(actors) = &ctx.actors {
            // Subscribe before stopping them, so that no session's end goes unheard.
            let mut events = ctx.hub.subscribe();
            let removed: HashSet<String> = actors.remove_all().await.into_iter().collect();
            removed_devices = removed.len() as u64;
            gone(&ctx.hub, &mut events, &removed).await;
        }
    }
    let cleared = ctx.hub.reset();
    info!(devices = ?request.devices, removed_devices, "control API: reset");
    Ok(Json(ResetAnswer {
        devices: request.devices,
        cleared,
        removed_devices,
    }))
}

/// Waits until none of `serials` has a session in the hub, or [`REMOVE_TIMEOUT`] passes:
/// re-checked after every event (a session's end is a `device_offline` event), never polled.
async fn gone(hub: &Hub, events: &mut broadcast::Receiver<Logged>, serials: &HashSet<String>) {
    let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
    while hub.any_online(serials) {
        tokio::select! {
            heard = events.recv() => {
                if matches!(heard, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                warn!(left = serials.len(), "reset: removed devices still online after {REMOVE_TIMEOUT:?}");
                return;
            }
        }
    }
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
        ] {
            let err = request(body).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some(field), "{body:?}");
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        }
        // Not a JSON object at all: no field to name.
        for body in [&b"[]"[..], b"{"] {
            let err = request(body).unwrap_err();
            assert_eq!(err.body.field, None, "{body:?}");
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
