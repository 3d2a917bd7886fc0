//! `GET /v1/events`: server-sent events (`text/event-stream`) of every event the hub logs, as
//! it happens, resumable.
//!
//! Each message is `id: <seq>`, `event: <tag>` (the event's `"event"` tag: `notification`,
//! `device_online`, `reset`, …) and `data: <the event's JSON, with "seq">`. A reader resumes
//! with the `Last-Event-ID` header (which a browser's `EventSource` sends by itself when it
//! reconnects) or `?since=N`: the stream replays the events after that cursor from the
//! hub's ring, then goes on live, without a gap or a duplicate. When events after the
//! cursor have already left the ring, the stream starts with an `event: truncated` message
//! (no `id`) saying so.
//!
//! How it stays exact: the stream subscribes to the hub's broadcast first, then reads the
//! ring, then follows the broadcast by sequence number: an event it already sent is
//! skipped, the next one is sent, and a gap (two events broadcast out of order, or a
//! receiver that lagged [`crate::hub::EVENT_CHANNEL`] behind) is filled by reading the ring
//! again after the last one sent, so a slow reader is never dropped silently.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use super::{number, params, ApiError, Ctx, RawQuery, MAX_CURSOR};
use crate::hub::{Hub, Logged};

/// Event streams open at once; one more is answered 503. Each holds a connection, a task
/// and a broadcast receiver (which may queue up to `EVENT_CHANNEL` events), so a page
/// reloaded in a loop must not pile them up; a dashboard or two and a test suite need a few.
pub const MAX_EVENT_STREAMS: usize = 32;

/// How often a quiet stream sends a comment line (`: keep-alive`), so that proxies and
/// clients with read timeouts do not close it, and a closed client is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The header a reconnecting `EventSource` sends with the last id it received.
const LAST_EVENT_ID: &str = "last-event-id";

/// The parameters of `GET /v1/events`.
const EVENTS_PARAMS: &[&str] = &["since", "access_token"];

/// `GET /v1/events`'s query.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The cursor: stream the events after this sequence number (0, the default: every
    /// event the ring holds), at most `i64::MAX` (`MAX_CURSOR`). The `Last-Event-ID`
    /// header wins over it.
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    pub since: Option<u64>,
    /// The control token, for a client that cannot set `Authorization` (a browser's
    /// `EventSource`); only needed when the simulator runs with `--control-token`.
    pub access_token: Option<String>,
}

/// The data of the `truncated` message: events after the cursor were gone before the
/// stream could send them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Truncated {
    /// Always `truncated`.
    pub event: &'static str,
    /// The cursor the events were missed after.
    pub since: u64,
    /// The first sequence number the stream goes on from.
    pub resumes_at: u64,
}

/// Server-sent events of every hub event, replayed after a cursor and then live.
#[utoipa::path(
    get,
    path = "/v1/events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, maximum = 9223372036854775807_u64,
          description = "Resume after this sequence \
          number (sent by a reconnecting EventSource), at most `i64::MAX`; wins over `since`. One ahead of the \
          log (a simulator restarted since) replays the whole ring after `truncated`.")),
    responses(
        (status = 200, description = "`text/event-stream`: `id: <seq>`, `event: <tag>`, \
          `data: <the event's JSON with seq>`; first `event: truncated` when events after the \
          cursor are gone; `: keep-alive` comments when quiet", content_type = "text/event-stream"),
        (status = 400, description = "A bad parameter or header, named in `field`", body = super::ErrorBody),
        (status = 503, description = "Too many event streams are open", body = super::ErrorBody),
    )
)]
pub(super) async fn stream(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query, EVENTS_PARAMS)?;
    let since = number(&params, "since", 0, MAX_CURSOR)?;
    let header = headers
        .get(LAST_EVENT_ID)
        .map(|v| last_event_id(v.to_str().ok()))
        .transpose()?;
    let last = ctx.hub.events_after(u64::MAX).last_seq;
    let cursor = match (header, since) {
        // A browser reconnecting to a restarted simulator: its events are gone; say so and
        // send what there is rather than refusing (an EventSource gives up on a 4xx).
        (Some(id), _) if id > last => Start::Gone(id),
        (Some(id), _) => Start::After(id),
        (None, Some(n)) => {
            super::notifications::check_since(&ctx.hub, n)?;
            Start::After(n)
        }
        (None, None) => Start::After(0),
    };
    let slot = ctx.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::general(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} event streams are already open; close one"),
        )
    })?;
    // Subscribe before reading the ring: an event logged after the read is broadcast after
    // it joined the ring, so this receiver hears of it.
    let live = ctx.hub.subscribe();
    let mut follow = Follow {
        hub: ctx.hub.clone(),
        live,
        cursor: 0,
        pending: VecDeque::new(),
        missed: None,
        shutdown: ctx.shutdown.clone(),
        _slot: slot,
    };
    match cursor {
        Start::After(n) => follow.read_after(n),
        Start::Gone(id) => {
            follow.read_after(0);
            follow.missed = Some(Truncated {
                event: "truncated",
                since: id,
                resumes_at: follow.pending.front().map_or(last + 1, |l| l.seq),
            });
        }
    }
    let messages = stream::unfold(follow, |mut follow| async move {
        let message = follow.next().await?;
        Some((Ok::<_, Infallible>(message), follow))
    });
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

/// The `Last-Event-ID` header's cursor: an unsigned integer up to [`MAX_CURSOR`].
fn last_event_id(text: Option<&str>) -> Result<u64, ApiError> {
    let id = text
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::field("Last-Event-ID", "not an unsigned integer (an event's id)")
        })?;
    if id > MAX_CURSOR {
        return Err(ApiError::field(
            "Last-Event-ID",
            format!("{id} is out of range 0..={MAX_CURSOR}"),
        ));
    }
    Ok(id)
}

/// Where a stream starts.
enum Start {
    /// After this cursor.
    After(u64),
    /// The reader's last id is ahead of the log: from the start, after a `truncated`.
    Gone(u64),
}

/// One stream's position: what it has sent, what it still has to send from the ring, and
/// the live receiver.
struct Follow {
    /// Where the ring is read from.
    hub: Hub,
    /// The broadcast, subscribed to before the first read.
    live: broadcast::Receiver<Logged>,
    /// The sequence number of the last event sent (or the cursor it started after).
    cursor: u64,
    /// Events read from the ring and not yet sent, oldest first.
    pending: VecDeque<Logged>,
    /// A `truncated` message to send before anything else.
    missed: Option<Truncated>,
    /// The simulator's shutdown: the stream ends when it fires.
    shutdown: CancellationToken,
    /// The stream's slot among [`MAX_EVENT_STREAMS`], freed when the client goes.
    _slot: OwnedSemaphorePermit,
}

impl Follow {
    /// Reads the ring after `cursor` into `pending`, noting a `truncated` when events after
    /// it are gone.
    fn read_after(&mut self, cursor: u64) {
        let read = self.hub.events_after(cursor);
        if read.truncated {
            self.missed = Some(Truncated {
                event: "truncated",
                since: cursor,
                resumes_at: read.events.first().map_or(read.last_seq + 1, |l| l.seq),
            });
        }
        self.cursor = cursor;
        self.pending = read.events.into();
    }

    /// The next message, or `None` when the simulator shuts down.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(missed) = self.missed.take() {
                let data = serde_json::to_string(&missed).unwrap_or_default();
                return Some(SseEvent::default().event("truncated").data(data));
            }
            while let Some(logged) = self.pending.pop_front() {
                if logged.seq > self.cursor {
                    self.cursor = logged.seq;
                    return Some(message(&logged));
                }
            }
            let heard = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                heard = self.live.recv() => heard,
            };
            match heard {
                Ok(logged) if logged.seq <= self.cursor => {}
                Ok(logged) if logged.seq == self.cursor + 1 => {
                    self.cursor = logged.seq;
                    return Some(message(&logged));
                }
                // A gap: read it from the ring (which has it unless it fell out, and then
                // the reader hears `truncated`).
                Ok(_) | Err(RecvError::Lagged(_)) => self.read_after(self.cursor),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The SSE message of a logged event.
fn message(logged: &Logged) -> SseEvent {
    let data = serde_json::to_string(logged).unwrap_or_default();
    SseEvent::default()
        .id(logged.seq.to_string())
        .event(logged.event.tag())
        .data(data)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::hub::Api;

    fn reject(hub: &Hub, identifier: u32) {
        hub.record_rejection(
            Api::Http2,
            "com.example.app",
            identifier.to_be_bytes(),
            Uuid::new_v4(),
            None,
            "test".to_owned(),
        );
    }

    fn follow(hub: &Hub, cursor: u64) -> Follow {
        let ctx = super::super::tests::ctx();
        let mut f = Follow {
            hub: hub.clone(),
            live: hub.subscribe(),
            cursor: 0,
            pending: VecDeque::new(),
            missed: None,
            shutdown: ctx.shutdown.clone(),
            _slot: ctx.streams.clone().try_acquire_owned().unwrap(),
        };
        f.read_after(cursor);
        f
    }

    /// The seq of the next message (`None` for `truncated`).
    async fn next_seq(f: &mut Follow) -> Option<u64> {
        let before = f.cursor;
        let missed = f.missed.is_some();
        let _message = tokio::time::timeout(Duration::from_secs(10), f.next())
            .await
            .expect("a message")
            .expect("not ended");
        (!missed).then_some(f.cursor).filter(|c| *c > before)
    }

    #[tokio::test]
    async fn a_stream_replays_then_follows_without_gaps_or_duplicates() {
        let hub = Hub::new(crate::clock::Clock::system());
        reject(&hub, 1);
        reject(&hub, 2);
        let mut f = follow(&hub, 1);
        reject(&hub, 3); // in the broadcast too, after the read
        assert_eq!(next_seq(&mut f).await, Some(2));
        // Event 3 was not read from the ring (it came later): it comes from the broadcast.
        assert_eq!(next_seq(&mut f).await, Some(3));
        reject(&hub, 4);
        assert_eq!(next_seq(&mut f).await, Some(4));
        // A receiver that lags reads the gap from the ring; more than the ring keeps went
        // by, so it hears `truncated` first, then goes on from the oldest kept.
        let n = crate::hub::EVENT_CHANNEL as u64 + 1;
        for i in 0..n {
            reject(&hub, 10 + i as u32);
        }
        let last = 4 + n;
        let first_kept = last - crate::settings::DEFAULT_DELIVERY_LOG_LEN as u64 + 1;
        assert_eq!(next_seq(&mut f).await, None, "truncated");
        assert_eq!(next_seq(&mut f).await, Some(first_kept));
        assert_eq!(next_seq(&mut f).await, Some(first_kept + 1));
    }

    #[tokio::test]
    async fn streams_beyond_the_bound_are_503() {
        let ctx = super::super::tests::ctx();
        let held = ctx
            .streams
            .clone()
            .acquire_many_owned(MAX_EVENT_STREAMS as u32)
            .await
            .unwrap();
        let none: RawQuery = Ok(axum::extract::Query(Vec::new()));
        let err = stream(State(ctx.clone()), HeaderMap::new(), none)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        let none: RawQuery = Ok(axum::extract::Query(Vec::new()));
        let ok = stream(State(ctx), HeaderMap::new(), none).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[test]
    fn a_cursor_above_i64_max_is_refused() {
        assert_eq!(last_event_id(Some(" 7 ")).unwrap(), 7);
        assert_eq!(
            last_event_id(Some("9223372036854775807")).unwrap(),
            MAX_CURSOR
        );
        for bad in [Some("9223372036854775808"), Some("-1"), Some("x"), None] {
            let err = last_event_id(bad).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some("Last-Event-ID"), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn since_above_i64_max_is_refused_even_with_last_event_id() {
        let ctx = super::super::tests::ctx();
        let mut headers = HeaderMap::new();
        headers.insert(LAST_EVENT_ID, "0".parse().unwrap());
        let query: RawQuery = Ok(axum::extract::Query(vec![(
            "since".to_owned(),
            "9223372036854775808".to_owned(),
        )]));
        let err = stream(State(ctx), headers, query).await.unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body.field.as_deref(), Some("since"));
    }

    #[tokio::test]
    async fn a_cursor_out_of_the_ring_hears_truncated_first() {
        let hub = Hub::new(crate::clock::Clock::system());
        reject(&hub, 1);
        hub.reset();
        let mut f = follow(&hub, 0);
        assert_eq!(next_seq(&mut f).await, None, "truncated");
        assert_eq!(next_seq(&mut f).await, Some(2), "the reset event");
        // Shutdown ends the stream.
        f.shutdown.cancel();
        assert!(f.next().await.is_none());
    }
}
