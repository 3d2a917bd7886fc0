//! `GET /v1/notifications` and `GET /v1/notifications/wait`: the delivery log, read from the
//! hub's bounded ring ([`Hub::events_after`]) with a cursor, filtered, and waited on through
//! the hub's broadcast ([`Hub::subscribe`]) without sleeping.
//!
//! Every event of the ring has a sequence number; a record carries its number as `seq`, and
//! an answer's `next` is the cursor to pass as `since` to read on. When events after the
//! cursor have already fallen out of the ring the answer says `"truncated": true`. The
//! broadcast carries the numbers too: a wait takes the event right after its cursor as it
//! comes, skips one it has seen, and reads the ring again across a gap.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use utoipa::{IntoParams, ToSchema};

use super::{number, params, ApiError, Ctx, RawQuery, MAX_CURSOR};
use crate::hub::{self, Event, Hub, Logged};
use crate::protocol::notification;
use crate::protocol::token::DeviceToken;

/// The most records one answer returns (`limit`'s maximum, and `count`'s): an answer is built
/// in memory and sent at once, so it must stay a few hundred KiB however full the log is.
pub const MAX_LIMIT: u64 = 1_000;

/// Records per answer of `GET /v1/notifications` when `limit` is not given: a page a person
/// can read, and enough for a test that pushed a handful.
pub const DEFAULT_LIMIT: u64 = 100;

/// The longest `timeout_ms` a wait accepts: a test that waits longer has lost its delivery,
/// and a bound keeps a forgotten client from holding a connection forever.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// How many waits may be pending at once; one more is answered 503. Each holds a connection
/// and a broadcast receiver for up to [`MAX_TIMEOUT_MS`], so a runaway client loop must not
/// pile them up without bound; a test suite runs far fewer at a time.
pub const MAX_PENDING_WAITS: usize = 256;

/// `timeout_ms` when not given: long enough for a delivery on a slow machine.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The parameters both routes filter by (the parsed query; `wait` adds `count` and
/// `timeout_ms`, `list` adds `limit`). A record matches when it matches every one given.
#[derive(Debug, Clone, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filters {
    /// Only notifications to this device token (hex, any case: an even number of digits,
    /// 2 to 200).
    #[param(value_type = Option<String>, pattern = "^([0-9a-fA-F]{2}){1,100}$")]
    token: Option<DeviceToken>,
    /// Only notifications of this topic (bundle id, with its suffix for VoIP and the like).
    topic: Option<String>,
    /// Only notifications to a token minted for the device with this serial number.
    serial: Option<String>,
    /// Only notifications that came through this API.
    #[param(inline)]
    api: Option<hub::Api>,
    /// Only records with this outcome.
    #[param(inline)]
    outcome: Option<hub::Outcome>,
    /// The cursor: only records with a sequence number above it (an answer's `next`).
    /// 0, the default, is the start of the log; at most `i64::MAX` (`MAX_CURSOR`), and not
    /// ahead of the log.
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    since: Option<u64>,
}

/// `GET /v1/notifications`'s own parameter.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many records, 1 to 1000 (`MAX_LIMIT`; default 100, `DEFAULT_LIMIT`).
    /// When more match, `next` is the last one returned, so the next page follows it.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u64>,
}

/// `GET /v1/notifications/wait`'s own parameters.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Wait {
    /// Answer once this many records match, 1 to 1000 (`MAX_LIMIT`; default 1).
    #[param(minimum = 1, maximum = 1000, default = 1)]
    count: Option<u64>,
    /// Give up after this many milliseconds, 0 to 60000 (`MAX_TIMEOUT_MS`; default 10000,
    /// `DEFAULT_TIMEOUT_MS`), and answer 408 with what matched so far.
    #[param(minimum = 0, maximum = 60000, default = 10000)]
    timeout_ms: Option<u64>,
}

/// One record of the delivery log: one thing that happened to one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Record {
    /// Its sequence number in the log (the cursor after it).
    pub seq: u64,
    /// When, in milliseconds since the UNIX epoch.
    pub at_ms: u64,
    /// The notification's UUID (apns-id; generated for the binary API).
    pub apns_id: String,
    /// The binary API's identifier (0 on HTTP/2).
    pub identifier: u32,
    /// Its device token in hex, when it got far enough to have a valid one.
    pub token: Option<String>,
    /// The serial of the device the token was minted for, when the simulator minted it.
    pub serial: Option<String>,
    /// The topic of the provider connection or request.
    pub topic: String,
    /// The API it came through.
    pub api: hub::Api,
    /// What happened.
    pub outcome: hub::Outcome,
    /// Extra words: a rejection's reason, the device, a warning.
    pub detail: String,
    /// `apns-push-type` (HTTP/2), when the request named one.
    pub push_type: Option<String>,
    /// The priority (10, 5 or 1), when the notification got far enough to have one.
    pub priority: Option<u8>,
    /// The expiry as the provider gave it, UNIX seconds (0: now or never; null: none given).
    pub expiry: Option<u32>,
    /// `apns-collapse-id` (HTTP/2), when given.
    pub collapse_id: Option<String>,
    /// The JSON payload as sent, when it got far enough to have a checked one.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// Binary API: the command's bytes exactly as received, in hex.
    pub frame: Option<String>,
    /// Binary API: every field of `frame`, labelled.
    pub frame_fields: Option<Vec<FrameField>>,
    /// The id of the fault that hit it (`POST /v1/faults`), if one did.
    pub fault: Option<String>,
}

/// One field of a binary command's bytes (`frame`), labelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FrameField {
    /// Offset of its first byte in `frame`.
    pub offset: usize,
    /// Its length in bytes.
    pub length: usize,
    /// What it is: `command`, `frame length`, `item id`, `item length`, `device token`,
    /// `payload`, `identifier`, `expiry`, `priority`, `token length`, `payload length`,
    /// `item data`, or `unparsed`.
    pub name: String,
    /// Its value in words (numbers, hex, the payload's text); a field the bytes end inside
    /// says `cut short`.
    pub value: String,
}

impl FrameField {
    /// Every field of `frame`, labelled by [`notification::annotate`].
    pub fn all(frame: &[u8]) -> Vec<FrameField> {
        notification::annotate(frame)
            .into_iter()
            .map(|f| FrameField {
                offset: f.offset,
                length: f.length,
                name: f.name.to_owned(),
                value: f.value,
            })
            .collect()
    }
}

/// An answer of either route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Records {
    /// The matching records, oldest first.
    pub notifications: Vec<Record>,
    /// The cursor to pass as `since` to read on after these.
    pub next: u64,
    /// True when records after `since` fell out of the bounded log before this read: some
    /// are missing.
    pub truncated: bool,
}

/// The parameters common to both routes, parsed; `Filters` is their shape.
fn filters(params: &HashMap<String, String>) -> Result<Filters, ApiError> {
    let text = |field: &str| params.get(field).cloned();
    let token = params
        .get("token")
        .map(|t| {
            DeviceToken::from_hex(t)
                .map_err(|e| ApiError::field("token", format!("not a device token: {e}")))
        })
        .transpose()?;
    let api = params
        .get("api")
        .map(|a| match a.as_str() {
            "binary" => Ok(hub::Api::Binary),
            "http2" => Ok(hub::Api::Http2),
            other => Err(ApiError::field(
                "api",
                format!("{other:?} is not binary or http2"),
            )),
        })
        .transpose()?;
    let outcome = params
        .get("outcome")
        .map(|o| {
            serde_json::from_value::<hub::Outcome>(serde_json::Value::String(o.clone())).map_err(
                |_| {
                    ApiError::field(
                        "outcome",
                        format!(
                            "{o:?} is not one of sent, acknowledged, stored, superseded, \
                             expired, discarded, not_installed, unregistered, rejected, \
                             throttled, requeued"
                        ),
                    )
                },
            )
        })
        .transpose()?;
    let since = number(params, "since", 0, MAX_CURSOR)?;
    Ok(Filters {
        token,
        topic: text("topic"),
        serial: text("serial"),
        api,
        outcome,
        since,
    })
}

/// The parameters of `list`.
const LIST_PARAMS: &[&str] = &[
    "token", "topic", "serial", "api", "outcome", "since", "limit",
];

/// The parameters of `wait`.
const WAIT_PARAMS: &[&str] = &[
    "token",
    "topic",
    "serial",
    "api",
    "outcome",
    "since",
    "count",
    "timeout_ms",
];

/// Reads the log after a cursor and keeps the records that match, looking each token's
/// device up once.
struct Matcher<'a> {
    /// Where the log and the token table are.
    hub: &'a Hub,
    /// What to keep.
    filters: Filters,
    /// Each token's device serial, as looked up so far.
    serials: HashMap<DeviceToken, Option<String>>,
}

impl Matcher<'_> {
    /// The serial of the device `token` was minted for.
    fn serial(&mut self, token: &DeviceToken) -> Option<String> {
        let hub = self.hub;
        self.serials
            .entry(*token)
            .or_insert_with(|| hub.token_serial(token))
            .clone()
    }

    /// The record of a logged event, if it is a notification's and matches.
    fn record(&mut self, logged: Logged) -> Option<Record> {
        let Event::Notification {
            at_ms,
            apns_id,
            identifier,
            token,
            topic,
            api,
            outcome,
            detail,
            push_type,
            priority,
            expiry,
            collapse_id,
            payload,
            serial,
            frame,
            fault,
        } = logged.event
        else {
            return None;
        };
        let f = &self.filters;
        if f.token.is_some_and(|t| token != Some(t))
            || f.topic.as_ref().is_some_and(|t| *t != topic)
            || f.api.is_some_and(|a| a != api)
            || f.outcome.is_some_and(|o| o != outcome)
        {
            return None;
        }
        let serial = serial.or_else(|| token.and_then(|t| self.serial(&t)));
        if let Some(wanted) = &self.filters.serial {
            if serial.as_ref() != Some(wanted) {
                return None;
            }
        }
        Some(Record {
            seq: logged.seq,
            at_ms,
            apns_id: apns_id.to_string(),
            identifier,
            token: token.map(|t| t.to_hex()),
            serial,
            topic,
            api,
            outcome,
            detail,
            push_type,
            priority,
            expiry,
            collapse_id,
            payload: payload.map(|p| {
                serde_json::from_slice(&p).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&p).into_owned())
                })
            }),
            frame_fields: frame.0.as_deref().map(FrameField::all),
            frame: frame.0.map(hex::encode),
            fault,
        })
    }

    /// Reads the log after `cursor` and adds the matching records to `out` until it holds
    /// `max`. Returns the cursor after the last event examined, and whether events after
    /// `cursor` had already left the ring.
    fn read(&mut self, cursor: u64, out: &mut Vec<Record>, max: usize) -> (u64, bool) {
        let read = self.hub.events_after(cursor);
        let mut next = read.last_seq.max(cursor);
        for logged in read.events {
            if out.len() == max {
                break;
            }
            let seq = logged.seq;
            if let Some(record) = self.record(logged) {
                out.push(record);
                if out.len() == max {
                    next = seq;
                }
            }
        }
        (next, read.truncated)
    }
}

/// Checks that a cursor is not ahead of the log (a cursor from an earlier run of the
/// simulator would otherwise match nothing, silently, until the log caught up).
pub(super) fn check_since(hub: &Hub, since: u64) -> Result<(), ApiError> {
    let last = hub.events_after(u64::MAX).last_seq;
    if since > last {
        return Err(ApiError::field(
            "since",
            format!("cursor {since} is ahead of the log, whose newest record is {last}"),
        ));
    }
    Ok(())
}

/// The delivery log, filtered, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    params(Filters, Page),
    responses(
        (status = 200, description = "The matching records after `since`", body = Records),
        (status = 400, description = "A bad parameter, named in `field`", body = super::ErrorBody),
    )
)]
pub(super) async fn list(
    State(ctx): State<Ctx>,
    query: RawQuery,
) -> Result<Json<Records>, ApiError> {
    let params = params(query, LIST_PARAMS)?;
    let filters = filters(&params)?;
    let page = Page {
        limit: number(&params, "limit", 1, MAX_LIMIT)?,
    };
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let since = filters.since.unwrap_or(0);
    check_since(&ctx.hub, since)?;
    let mut matcher = Matcher {
        hub: &ctx.hub,
        filters,
        serials: HashMap::new(),
    };
    let mut notifications = Vec::new();
    let (next, truncated) = matcher.read(
        since,
        &mut notifications,
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    Ok(Json(Records {
        notifications,
        next,
        truncated,
    }))
}

/// Waits until `count` records match (those already in the log after `since` count), then
/// answers with them; after `timeout_ms`, answers 408 with what matched so far.
#[utoipa::path(
    get,
    path = "/v1/notifications/wait",
    params(Filters, Wait),
    responses(
        (status = 200, description = "`count` records matched", body = Records),
        (status = 400, description = "A bad parameter, named in `field`", body = super::ErrorBody),
        (status = 408, description = "The timeout passed first: what matched so far", body = Records),
        (status = 503, description = "The simulator is shutting down, or too many waits are \
                                      pending", body = super::ErrorBody),
    )
)]
pub(super) async fn wait(State(ctx): State<Ctx>, query: RawQuery) -> Result<Response, ApiError> {
    let params = params(query, WAIT_PARAMS)?;
    let filters = filters(&params)?;
    let wait = Wait {
        count: number(&params, "count", 1, MAX_LIMIT)?,
        timeout_ms: number(&params, "timeout_ms", 0, MAX_TIMEOUT_MS)?,
    };
    let count = wait.count.unwrap_or(1);
    let timeout_ms = wait.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    let since = filters.since.unwrap_or(0);
    check_since(&ctx.hub, since)?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    // Held until the answer is built.
    let _slot = ctx.waits.clone().try_acquire_owned().map_err(|_| {
        ApiError::general(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_PENDING_WAITS} waits are already pending; retry when one ends"),
        )
    })?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);

    // Subscribe before the first read: an event logged after that read is broadcast after it
    // joined the log, so this receiver hears of it; nothing falls between the two.
    let mut live = ctx.hub.subscribe();
    let mut matcher = Matcher {
        hub: &ctx.hub,
        filters,
        serials: HashMap::new(),
    };
    let mut notifications = Vec::new();
    let mut cursor = since;
    let mut truncated = false;
    // Whether the log must be read after `cursor`: at first, and whenever the broadcast
    // skipped ahead (a lagged receiver, or two events heard out of order).
    let mut reread = true;
    loop {
        if reread {
            let (next, missed) = matcher.read(cursor, &mut notifications, count);
            cursor = next;
            truncated |= missed;
            reread = false;
        }
        let answer = |status| {
            let records = Records {
                notifications: notifications.clone(),
                next: cursor,
                truncated,
            };
            (status, Json(records)).into_response()
        };
        if notifications.len() == count {
            return Ok(answer(StatusCode::OK));
        }
        // Each broadcast event carries its sequence number: the one right after the cursor
        // is taken as it is, one already seen is skipped, and a gap is filled from the log.
        tokio::select! {
            () = ctx.shutdown.cancelled() => {
                return Err(ApiError::general(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the simulator is shutting down",
                ));
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok(answer(StatusCode::REQUEST_TIMEOUT));
            }
            heard = live.recv() => match heard {
                Ok(logged) if logged.seq <= cursor => {}
                Ok(logged) if logged.seq == cursor + 1 => {
                    cursor = logged.seq;
                    if let Some(record) = matcher.record(logged) {
                        notifications.push(record);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    // Whatever else is already queued is in the log too: one read for all.
                    while !matches!(live.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
                    reread = true;
                }
                Err(RecvError::Closed) => {
                    return Err(ApiError::general(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the simulator is shutting down",
                    ));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::Query;
    use uuid::Uuid;

    use super::*;
    use crate::hub::EVENT_CHANNEL;

    fn ctx() -> Ctx {
        super::super::tests::ctx()
    }

    fn query(pairs: &[(&str, &str)]) -> RawQuery {
        Ok(Query(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    fn reject(hub: &Hub, topic: &str, identifier: u32) {
        hub.record_rejection(
            hub::Api::Http2,
            topic,
            identifier.to_be_bytes(),
            Uuid::new_v4(),
            None,
            "test".to_owned(),
        );
    }

    async fn body(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_wait_ends_with_503_when_the_simulator_shuts_down() {
        let ctx = ctx();
        ctx.shutdown.cancel();
        let err = wait(State(ctx), query(&[("timeout_ms", "60000")]))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_wait_beyond_the_pending_bound_is_503() {
        let ctx = ctx();
        let held = ctx
            .waits
            .clone()
            .acquire_many_owned(MAX_PENDING_WAITS as u32)
            .await;
        let err = wait(State(ctx.clone()), query(&[("timeout_ms", "0")]))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.body.error.contains("pending"), "{:?}", err.body);
        drop(held);
        let answer = wait(State(ctx), query(&[("timeout_ms", "0")]))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT, "a slot again");
    }

    #[tokio::test]
    async fn a_lagged_wait_reads_the_log_again_and_says_what_it_missed() {
        let ctx = ctx();
        let hub = ctx.hub.clone();
        let waiting = wait(
            State(ctx),
            query(&[("topic", "com.target"), ("timeout_ms", "60000")]),
        );
        tokio::pin!(waiting);
        // One poll: the wait subscribes, reads the empty log and waits on the broadcast.
        assert!(tokio::time::timeout(Duration::ZERO, &mut waiting)
            .await
            .is_err());
        // More than the channel holds, so its receiver lags, and more than the ring keeps.
        for i in 0..=EVENT_CHANNEL as u32 {
            reject(&hub, "com.noise", i);
        }
        reject(&hub, "com.target", 7);
        let (status, records) = body(waiting.await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{records}");
        assert_eq!(records["notifications"][0]["identifier"], 7);
        assert_eq!(
            records["truncated"], true,
            "events after the cursor left the ring"
        );
        assert_eq!(records["next"], EVENT_CHANNEL as u64 + 2);
    }
}
