//! The provider side of `apns-sim bench`: P connections (binary gateway, or HTTP/2 with a
//! provider token or the provider certificate) sending N notifications round-robin over the
//! devices' tokens, unpaced, at a fixed rate, or with at most W in flight.
//!
//! Concurrency: one task per connection; notification `i` goes on connection `i % P`. They
//! share two counters (written, answered) and the devices' [`Seen`]; a windowed writer sleeps
//! until the window opens. Nothing is buffered beyond one write (binary) or the connection's
//! open streams (HTTP/2).
//!
//! A fixed rate on the binary API is kept by one pacer for all P connections, on a thread
//! and runtime of its own: each round it writes what the schedule says is due (notification
//! `i` at `i / rate` seconds) and sleeps with the operating system's timer until the next
//! one is due, at most every [`PACE_TICK`]. Sharing the devices' runtime and its 1 ms timer,
//! the writers woke late whenever the devices were busy, and then wrote what had fallen due
//! in one burst to hundreds of devices at once: the latency measured was the load
//! generator's own queue of device reads, not the target's. The pacer reports how late its
//! writes were behind the schedule ([`super::Pacing`]). HTTP/2 at a fixed rate still polls
//! every [`PACE_POLL`] on the shared runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rustls::ClientConfig;

use super::fleet::Seen;
use super::frame::{self, LoadFrame, FRAME_LEN};
use super::{Api, Pace};
use crate::client::http2::{read_response, Http2Client, Http2Request};
use crate::client::{BinaryClient, GatewayAnswer};
use crate::protocol::token::DeviceToken;

/// How long a binary connection waits after its last write for an error response; silence
/// means every notification on it was accepted (the binary API has no positive answer).
const ERROR_WAIT: Duration = Duration::from_millis(300);
/// Longest a windowed writer (or an HTTP/2 one at a fixed rate) sleeps before looking again.
const PACE_POLL: Duration = Duration::from_millis(1);
/// Shortest round of the binary pacer: it writes what is due at most this often, so that at
/// 50,000/s a round carries about 5 notifications over all connections (finer than tokio's
/// 1 ms timer, which the pacer does not use, and coarse enough not to write one TLS record
/// per notification).
const PACE_TICK: Duration = Duration::from_micros(100);
/// Highest schedule lag the pacer's histogram records, in microseconds (2 minutes).
const MAX_LAG_US: u64 = 120_000_000;

/// What the connections need to know.
pub(crate) struct PumpPlan {
    /// Which API and auth.
    pub(crate) api: Api,
    /// `host:port` to connect to.
    pub(crate) addr: String,
    /// TLS server name.
    pub(crate) server_name: String,
    /// TLS client configuration (provider certificate for the binary API and certificate
    /// auth, ALPN `h2` for HTTP/2).
    pub(crate) tls: Arc<ClientConfig>,
    /// `authorization: bearer …` for token auth.
    pub(crate) bearer: Option<String>,
    /// Connections.
    pub(crate) connections: usize,
    /// Notifications in all.
    pub(crate) notifications: u64,
    /// Frames per binary write when unpaced or windowed.
    pub(crate) batch: usize,
    /// Open streams per HTTP/2 connection.
    pub(crate) streams: usize,
    /// How writers hold back.
    pub(crate) pace: Pace,
    /// Whether devices show what is sent (a window then counts shown notifications; without
    /// devices it counts answers, or nothing on the binary API).
    pub(crate) delivered: bool,
    /// The HTTP/2 `apns-expiration`: `0` (now or never), or a later time for notifications
    /// that an offline device is to have stored.
    pub(crate) expiration: String,
    /// Deadline of the whole send.
    pub(crate) timeout: Duration,
}

/// What the connections reported.
pub(crate) struct Pumped {
    /// Nanoseconds since the run's start when the first write began.
    pub(crate) start_ns: u64,
    /// Nanoseconds since the run's start when the last notification was accepted (written
    /// and not refused on the binary API; answered 200 on HTTP/2).
    pub(crate) accepted_ns: u64,
    /// Notifications accepted.
    pub(crate) accepted: u64,
    /// Notifications refused (an error response, a non-200 status).
    pub(crate) rejected: u64,
    /// The first refusal, in words.
    pub(crate) first_error: Option<String>,
    /// How the binary pacer kept its schedule (a fixed rate on the binary API only).
    pub(crate) pacing: Option<super::Pacing>,
}

/// Counters the connection tasks share.
struct Shared {
    written: AtomicU64,
    answered: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    last_accept_ns: AtomicU64,
}

/// Sends everything and waits for every answer.
pub(crate) async fn run(
    plan: PumpPlan,
    tokens: Vec<DeviceToken>,
    seen: Arc<Seen>,
    progress: ProgressBar,
) -> Result<Pumped> {
    if tokens.is_empty() {
        bail!("no device tokens to send to");
    }
    if let (Api::Binary, Pace::Rate(rate)) = (plan.api, plan.pace) {
        return paced_binary(plan, rate, tokens, seen, progress).await;
    }
    let plan = Arc::new(plan);
    let tokens = Arc::new(tokens);
    let shared = Arc::new(Shared {
        written: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        last_accept_ns: AtomicU64::new(0),
    });
    // Connect every connection before the clock starts.
    let mut binary = Vec::new();
    let mut http2 = Vec::new();
    for _ in 0..plan.connections {
        match plan.api {
            Api::Binary => binary.push(
                BinaryClient::connect(&plan.addr, &plan.server_name, plan.tls.clone()).await?,
            ),
            Api::Http2Token | Api::Http2Certificate => http2
                .push(Http2Client::connect(&plan.addr, &plan.server_name, plan.tls.clone()).await?),
        }
    }
    let start_ns = seen.now_ns();
    let shown0 = seen.shown();
    let mut tasks = Vec::new();
    for k in 0..plan.connections {
        let ctx = Ctx {
            plan: plan.clone(),
            tokens: tokens.clone(),
            shared: shared.clone(),
            seen: seen.clone(),
            progress: progress.clone(),
            k: k as u64,
            shown0,
            started: Instant::now(),
        };
        tasks.push(match plan.api {
            Api::Binary => tokio::spawn(binary_connection(ctx, binary.remove(0))),
            _ => tokio::spawn(http2_connection(ctx, http2.remove(0))),
        });
    }
    let mut first_error = None;
    for t in tasks {
        if let Some(e) = t.await?? {
            first_error.get_or_insert(e);
        }
    }
    Ok(Pumped {
        start_ns,
        accepted_ns: shared.last_accept_ns.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        first_error,
        pacing: None,
    })
}

/// One connection's view.
struct Ctx {
    plan: Arc<PumpPlan>,
    tokens: Arc<Vec<DeviceToken>>,
    shared: Arc<Shared>,
    seen: Arc<Seen>,
    progress: ProgressBar,
    /// This connection's index.
    k: u64,
    /// Notifications shown before the run.
    shown0: u64,
    /// When sending began (the rate's schedule starts here).
    started: Instant,
}

impl Ctx {
    /// The notifications of this connection: `k, k + P, k + 2P, …`.
    fn count(&self) -> u64 {
        let p = self.plan.connections as u64;
        let n = self.plan.notifications;
        if self.k >= n {
            0
        } else {
            (n - self.k).div_ceil(p)
        }
    }

    fn token(&self, i: u64) -> &DeviceToken {
        &self.tokens[(i % self.tokens.len() as u64) as usize]
    }

    /// Notifications in flight: written and not yet shown (or answered, without devices).
    fn in_flight(&self) -> u64 {
        let done = if self.plan.delivered {
            self.seen.shown() - self.shown0
        } else {
            self.shared.answered.load(Ordering::Relaxed)
        };
        self.shared
            .written
            .load(Ordering::Relaxed)
            .saturating_sub(done)
    }

    /// Waits until this connection may send, and returns how many of its next
    /// notifications it may send now (at most `most`); `sent` = how many it has sent.
    async fn allowance(&self, sent: u64, most: u64) -> Result<u64> {
        let deadline = self.started + self.plan.timeout;
        loop {
            let may = match self.plan.pace {
                Pace::Full => most,
                Pace::Window(w) => {
                    // A window is counted over every connection; without devices on the
                    // binary API nothing ever comes back, so it cannot apply.
                    if !self.plan.delivered && self.plan.api == Api::Binary {
                        most
                    } else {
                        w.saturating_sub(self.in_flight()).min(most)
                    }
                }
                Pace::Rate(r) => {
                    // This connection's share of the schedule: notification j of it is due
                    // at j * P / r seconds.
                    let p = self.plan.connections as f64;
                    let due = (self.started.elapsed().as_secs_f64() * r as f64 / p) as u64 + 1;
                    due.saturating_sub(sent).min(most)
                }
            };
            if may > 0 {
                return Ok(may);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting to send: the target stopped answering or showing notifications");
            }
            tokio::time::sleep(PACE_POLL).await;
        }
    }

    fn accepted(&self, n: u64) {
        self.shared.accepted.fetch_add(n, Ordering::Relaxed);
        self.shared
            .last_accept_ns
            .fetch_max(self.seen.now_ns(), Ordering::Relaxed);
        self.progress.inc(n);
    }
}

/// Writes this connection's share in batches of frames, then waits for an error response.
/// Returns the refusal, if there was one.
async fn binary_connection(ctx: Ctx, mut client: BinaryClient) -> Result<Option<String>> {
    let frame = LoadFrame::new()?;
    let total = ctx.count();
    let p = ctx.plan.connections as u64;
    let mut buf = BytesMut::with_capacity(ctx.plan.batch * FRAME_LEN);
    let mut sent = 0;
    while sent < total {
        let n = ctx
            .allowance(sent, (total - sent).min(ctx.plan.batch as u64))
            .await?;
        buf.clear();
        let now = ctx.seen.now_ns();
        for j in sent..sent + n {
            let i = ctx.k + j * p;
            frame.put(&mut buf, ctx.token(i), i as u32, now);
        }
        ctx.shared.written.fetch_add(n, Ordering::Relaxed);
        client.send(&buf).await?;
        sent += n;
        ctx.accepted(n);
    }
    finish_binary(&ctx.shared, client, ctx.k, p, total).await
}

/// Waits for connection `k`'s error response after its `total` notifications (every `p`th
/// from `k`) were written, and counts those it names as refused. Returns the refusal.
async fn finish_binary(
    shared: &Shared,
    mut client: BinaryClient,
    k: u64,
    p: u64,
    total: u64,
) -> Result<Option<String>> {
    // Accepted means written and not refused: an error response names the first refused
    // notification, and everything after it on the connection was dropped.
    match client.finish(ERROR_WAIT).await? {
        GatewayAnswer::Silent => {
            let _ = client.close().await;
            Ok(None)
        }
        GatewayAnswer::Error(resp) => {
            let id = u32::from_be_bytes(resp.identifier);
            let lost = total.saturating_sub((u64::from(id).saturating_sub(k)) / p);
            shared.accepted.fetch_sub(lost, Ordering::Relaxed);
            shared.rejected.fetch_add(lost, Ordering::Relaxed);
            Ok(Some(format!("binary: error response {resp:?}")))
        }
        GatewayAnswer::Closed => Ok(Some(
            "binary: the gateway closed a connection without an error response".into(),
        )),
    }
}

/// Notifications due `elapsed` into a run at `rate` per second: notification `i` (from 0)
/// is due at `i / rate` seconds, so the first is due at once.
fn due(elapsed: Duration, rate: u64) -> u64 {
    let due = elapsed.as_nanos() * u128::from(rate) / 1_000_000_000 + 1;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// When notification `i` is due, from the start of the schedule (the first nanosecond at
/// which [`due`] counts it).
fn due_at(i: u64, rate: u64) -> Duration {
    let ns = (u128::from(i) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// The notifications of one pacer round, `from..to` of the whole run, split by connection:
/// how many go on each of `p` (notification `i` on connection `i % p`).
fn round_split(from: u64, to: u64, p: u64) -> Vec<u64> {
    (0..p)
        .map(|k| {
            // Indices i in from..to with i % p == k.
            let first = from + (k + p - from % p) % p;
            if first >= to {
                0
            } else {
                (to - first).div_ceil(p)
            }
        })
        .collect()
}

/// A fixed rate on the binary API: connects the P connections and runs the pacer on a
/// thread of its own (its own current-thread runtime, so that neither the devices' tasks
/// nor tokio's 1 ms timer decide when a notification is written).
async fn paced_binary(
    plan: PumpPlan,
    rate: u64,
    tokens: Vec<DeviceToken>,
    seen: Arc<Seen>,
    progress: ProgressBar,
) -> Result<Pumped> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(pacer(plan, rate, tokens, seen, progress)));
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the pacer thread ended without a result"))?
}

/// The pacer: rounds of "write what is due on each connection, then sleep until the next
/// notification is due (at least [`PACE_TICK`])", each frame stamped just before its write;
/// then every connection's error wait. Runs on its own thread: the sleep blocks it.
async fn pacer(
    plan: PumpPlan,
    rate: u64,
    tokens: Vec<DeviceToken>,
    seen: Arc<Seen>,
    progress: ProgressBar,
) -> Result<Pumped> {
    let p = plan.connections as u64;
    let total = plan.notifications;
    let mut clients = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        clients.push(BinaryClient::connect(&plan.addr, &plan.server_name, plan.tls.clone()).await?);
    }
    let shared = Shared {
        written: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        last_accept_ns: AtomicU64::new(0),
    };
    let frame = LoadFrame::new()?;
    let mut lag = Histogram::<u64>::new_with_bounds(1, MAX_LAG_US, 3)?;
    let mut bufs: Vec<BytesMut> = (0..p).map(|_| BytesMut::new()).collect();
    // A round carries at most `batch` frames per connection (after a stall, the rest of
    // what is due goes in the next rounds at once).
    let most = (plan.batch as u64).saturating_mul(p).max(1);
    let mut writes = 0u64;
    let start_ns = seen.now_ns();
    let started = Instant::now();
    let deadline = started + plan.timeout;
    let mut sent = 0u64;
    while sent < total {
        let elapsed = started.elapsed();
        let to = due(elapsed, rate).min(total).min(sent + most);
        if to > sent {
            let late = elapsed.saturating_sub(due_at(sent, rate));
            lag.saturating_record((late.as_micros() as u64).clamp(1, MAX_LAG_US));
            for (k, n) in round_split(sent, to, p).into_iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let buf = &mut bufs[k];
                buf.clear();
                let now = seen.now_ns();
                // Connection k's notifications in sent..to: k + j * p.
                let first = sent + (k as u64 + p - sent % p) % p;
                for j in 0..n {
                    let i = first + j * p;
                    let token = &tokens[(i % tokens.len() as u64) as usize];
                    frame.put(buf, token, i as u32, now);
                }
                shared.written.fetch_add(n, Ordering::Relaxed);
                clients[k].send(buf).await?;
                writes += 1;
                shared.accepted.fetch_add(n, Ordering::Relaxed);
                shared
                    .last_accept_ns
                    .fetch_max(seen.now_ns(), Ordering::Relaxed);
                progress.inc(n);
            }
            sent = to;
        }
        if sent >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("timed out sending at {rate}/s: the target stopped reading");
        }
        let next = started + due_at(sent, rate).max(elapsed + PACE_TICK);
        let now = Instant::now();
        if next > now {
            // This thread runs nothing else: blocking it is the precise wait.
            std::thread::sleep(next - now);
        }
    }
    let mut first_error = None;
    let mut waits: FuturesUnordered<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, client)| {
            let k = k as u64;
            let mine = if k >= total {
                0
            } else {
                (total - k).div_ceil(p)
            };
            finish_binary(&shared, client, k, p, mine)
        })
        .collect();
    while let Some(answer) = waits.next().await {
        if let Some(e) = answer? {
            first_error.get_or_insert(e);
        }
    }
    drop(waits);
    Ok(Pumped {
        start_ns,
        accepted_ns: shared.last_accept_ns.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        first_error,
        pacing: Some(super::Pacing {
            writes,
            frames_per_write: if writes == 0 {
                0.0
            } else {
                sent as f64 / writes as f64
            },
            lag_us: super::Latency::of(&lag),
        }),
    })
}

/// Sends this connection's share with up to `streams` requests open, and reads every answer.
async fn http2_connection(ctx: Ctx, mut client: Http2Client) -> Result<Option<String>> {
    let total = ctx.count();
    let p = ctx.plan.connections as u64;
    // One request head per token, built once; only the body changes per notification.
    let heads: Vec<Http2Request> = ctx
        .tokens
        .iter()
        .map(|t| {
            let mut r = Http2Request::push(&t.to_hex(), Bytes::new())
                .header("apns-topic", crate::pki::DEFAULT_TOPIC)
                .header("apns-push-type", "alert")
                .header("apns-expiration", ctx.plan.expiration.clone());
            if let Some(b) = &ctx.plan.bearer {
                r = r.header("authorization", b.clone());
            }
            r
        })
        .collect();
    let mut open = FuturesUnordered::new();
    let mut first_error = None;
    let mut sent = 0;
    let streams = ctx.plan.streams.max(1) as u64;
    let deadline = ctx.started + ctx.plan.timeout;
    while sent < total || !open.is_empty() {
        let room = streams.saturating_sub(open.len() as u64);
        if sent < total && room > 0 {
            let n = ctx.allowance(sent, (total - sent).min(room)).await?;
            for j in sent..sent + n {
                let i = ctx.k + j * p;
                let head = &heads[(i % heads.len() as u64) as usize];
                let (response, mut body) = client.start(head, false).await?;
                body.send_data(Bytes::from(frame::payload(ctx.seen.now_ns())), true)?;
                ctx.shared.written.fetch_add(1, Ordering::Relaxed);
                open.push(read_response(response));
            }
            sent += n;
            // Read what is already answered without waiting.
            while let Some(Some(answer)) = futures_util::FutureExt::now_or_never(open.next()) {
                settle(&ctx, answer, &mut first_error);
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, open.next()).await {
            Ok(Some(answer)) => settle(&ctx, answer, &mut first_error),
            Ok(None) => {}
            Err(_) => bail!("HTTP/2: answers did not arrive in time"),
        }
    }
    Ok(first_error)
}

/// Counts one HTTP/2 answer.
fn settle(
    ctx: &Ctx,
    answer: Result<crate::client::http2::Http2Response, crate::client::http2::Http2ClientError>,
    first_error: &mut Option<String>,
) {
    ctx.shared.answered.fetch_add(1, Ordering::Relaxed);
    match answer {
        Ok(r) if r.status == 200 => ctx.accepted(1),
        Ok(r) => {
            ctx.shared.rejected.fetch_add(1, Ordering::Relaxed);
            first_error.get_or_insert_with(|| format!("HTTP/2: {r}"));
        }
        Err(e) => {
            ctx.shared.rejected.fetch_add(1, Ordering::Relaxed);
            first_error.get_or_insert_with(|| format!("HTTP/2: {e}"));
        }
    }
}

/// The first connection error, with context.
pub(crate) fn describe(api: Api) -> &'static str {
    match api {
        Api::Binary => "binary gateway",
        Api::Http2Token => "HTTP/2 API (token auth)",
        Api::Http2Certificate => "HTTP/2 API (certificate auth)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_counts_what_is_due() {
        // One at once, then one every 1/rate seconds.
        assert_eq!(due(Duration::ZERO, 1_000), 1);
        assert_eq!(due(Duration::from_micros(999), 1_000), 1);
        assert_eq!(due(Duration::from_millis(1), 1_000), 2);
        assert_eq!(due(Duration::from_secs(3), 50_000), 150_001);
        assert_eq!(due(Duration::from_micros(100), 50_000), 6);
        // due_at is its inverse: notification i is due exactly when due() passes i.
        for rate in [1, 7, 1_000, 50_000, 1_000_000] {
            for i in [0u64, 1, 2, 99, 12_345] {
                let at = due_at(i, rate);
                assert_eq!(due(at, rate), i + 1, "rate {rate}, i {i}");
                if i > 0 {
                    assert_eq!(
                        due(at - Duration::from_nanos(1), rate),
                        i,
                        "rate {rate}, i {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_round_splits_round_robin_over_the_connections() {
        // 10..17 over 4 connections: 12, 16 on 0; 13 on 1; 10, 14 on 2; 11, 15 on 3.
        assert_eq!(round_split(10, 17, 4), vec![2, 1, 2, 2]);
        assert_eq!(round_split(5, 5, 3), vec![0, 0, 0]);
        assert_eq!(round_split(0, 1, 4), vec![1, 0, 0, 0]);
        // Every split of a run into rounds gives each connection its share of the run.
        let (n, p) = (1_003u64, 4u64);
        let mut per = vec![0u64; p as usize];
        let mut from = 0;
        for step in [1u64, 5, 2, 17, 3].iter().cycle() {
            let to = (from + step).min(n);
            for (k, c) in round_split(from, to, p).into_iter().enumerate() {
                per[k] += c;
            }
            from = to;
            if from == n {
                break;
            }
        }
        let shares: Vec<u64> = (0..p)
            .map(|k| if k >= n { 0 } else { (n - k).div_ceil(p) })
            .collect();
        assert_eq!(per, shares);
    }
}
