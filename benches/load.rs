//! The project's load generator: a whole simulator in-process on 127.0.0.1, real TLS
//! everywhere, and numbers for `BENCHMARKS.md`.
//!
//! Run with `cargo bench --bench load`; every parameter is an environment variable (see
//! [`Params::from_env`]). One run, in order:
//!
//! 1. **memory per idle device**: RSS (`VmRSS` of /proc/self/status) before and after
//!    connecting a fleet of in-process simulated devices (both ends of each session live in
//!    this process), then before and after a fleet in a child `apns-sim device --count`
//!    process (only the simulator's side of each session is in this process);
//! 2. **ingest**: the child's devices go offline and the providers push command-2
//!    notifications with expiry 0 to their tokens, so each ends `discarded` in the hub: the
//!    gateway and hub without any write to a device;
//! 3. **unloaded latency**: one notification at a time, provider → device;
//! 4. **end-to-end throughput**: P provider connections push N notifications round-robin
//!    over the tokens of D in-process devices, in large writes, with at most `LOAD_WINDOW`
//!    notifications in flight; measured from the first write until every device has shown
//!    every notification, and until the hub has recorded every `acknowledged` outcome, with
//!    push → device latency percentiles from a timestamp carried in each payload;
//! 5. **raw TLS loopback limit**: one rustls connection (the simulator's own TLS configs)
//!    pumping 160-byte frames through a read loop.
//!
//! The simulator runs on its own tokio runtime (threads `sim-worker`) and the load generator
//! on another (`load-worker`), so CPU time is reported for each side separately (from
//! `/proc/self/task/*/stat`), per notification: on a shared 2-core machine that is steadier
//! than wall-clock rates. The ingest run needs the child fleet (`LOAD_IDLE_DEVICES` > 0).
//!
//! Every loop is bounded in count and time, and only 127.0.0.1 is used.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use apns_sim::client::device::{self, DeviceConfig, DeviceEvent, DeviceHandle};
use apns_sim::client::BinaryClient;
use apns_sim::hub::{Event, Logged, Outcome};
use apns_sim::pki::Pki;
use apns_sim::protocol::notification::{self, encode_frame_raw};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::sim::{Listeners, Simulator, SimulatorConfig};
use apns_sim::tls;
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// The topic of the simulator's default provider certificate.
const APP: &str = "com.example.app";
/// Size of every command-2 frame this generator writes (the design note's 160 bytes).
const FRAME_LEN: usize = 160;
/// Frame bytes other than the payload: header 5, item headers 15, token 32, id 4,
/// expiry 4, priority 1.
const FRAME_OVERHEAD: usize = 61;
/// Devices connected concurrently while a fleet starts (each wave waits for its tokens).
const CONNECT_WAVE: usize = 250;

/// What one run does. Each field has an environment variable.
#[derive(Debug, Clone)]
struct Params {
    /// `LOAD_DEVICES`: in-process devices receiving the throughput run.
    devices: usize,
    /// `LOAD_IDLE_DEVICES`: devices of each memory fleet (in-process, and in the child).
    idle_devices: usize,
    /// `LOAD_PROVIDERS`: provider connections to the binary gateway.
    providers: usize,
    /// `LOAD_NOTIFICATIONS`: notifications of the throughput run.
    notifications: u64,
    /// `LOAD_INGEST`: notifications of the ingest run (0 skips it).
    ingest: u64,
    /// `LOAD_BATCH`: frames per provider write.
    batch: usize,
    /// `LOAD_WINDOW`: most notifications written and not yet shown by a device.
    window: u64,
    /// `LOAD_LATENCY_SAMPLES`: notifications of the unloaded-latency run (0 skips it).
    latency_samples: u64,
    /// `LOAD_RAW_FRAMES`: frames through the raw TLS pipe (0 skips it).
    raw_frames: u64,
    /// `LOAD_WORKERS`: tokio worker threads.
    workers: usize,
    /// `LOAD_TIMEOUT_SECS`: deadline of each phase.
    timeout: Duration,
    /// `LOAD_LOG=1`: install an info-level tracing subscriber writing to a sink, as
    /// `apns-sim serve` logs (one line per notification), to see what logging costs.
    log: bool,
}

impl Params {
    fn from_env() -> Result<Params> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            match std::env::var(name) {
                Ok(text) => text
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{name}={text:?}: {e}")),
                Err(_) => Ok(default),
            }
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let devices: usize = var("LOAD_DEVICES", 1_000)?;
        let p = Params {
            devices,
            idle_devices: var("LOAD_IDLE_DEVICES", 2_000)?,
            providers: var("LOAD_PROVIDERS", 4)?,
            notifications: var("LOAD_NOTIFICATIONS", 200_000)?,
            ingest: var("LOAD_INGEST", 200_000)?,
            batch: var("LOAD_BATCH", 512)?,
            window: var("LOAD_WINDOW", devices as u64 * 4)?,
            latency_samples: var("LOAD_LATENCY_SAMPLES", 1_000)?,
            raw_frames: var("LOAD_RAW_FRAMES", 8_000_000)?,
            workers: var("LOAD_WORKERS", cores)?,
            timeout: Duration::from_secs(var("LOAD_TIMEOUT_SECS", 60)?),
            log: var("LOAD_LOG", 0u8)? == 1,
        };
        // Each in-process device holds two descriptors (both ends); a process may hold
        // 20,000 here, and the child fleet's server ends count too.
        if p.devices == 0 || p.devices > 5_000 || p.idle_devices > 5_000 {
            bail!("LOAD_DEVICES must be 1..=5000 and LOAD_IDLE_DEVICES 0..=5000");
        }
        if p.providers == 0 || p.providers > 64 || p.batch == 0 || p.window == 0 {
            bail!("LOAD_PROVIDERS must be 1..=64, LOAD_BATCH and LOAD_WINDOW at least 1");
        }
        Ok(p)
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; parameters come from the environment only.
    let params = Params::from_env()?;
    if params.log {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    // The simulator and the load generator (devices, providers) run on separate runtimes,
    // on threads named apart, so that the CPU time of each can be read per thread. Both
    // share the machine's cores, as they would as two processes.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(params.workers.max(1))
            .thread_name(name)
            .enable_all()
            .build()
    };
    let sim_runtime = runtime(SIM_THREADS)?;
    let load_runtime = runtime(LOAD_THREADS)?;
    let result = load_runtime.block_on(run(params, sim_runtime.handle().clone()));
    sim_runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Name of the simulator's runtime threads.
const SIM_THREADS: &str = "sim-worker";
/// Name of the load generator's runtime threads.
const LOAD_THREADS: &str = "load-worker";

/// What the in-process devices saw, shared by their event-draining tasks.
struct Seen {
    /// Start of the run; payload timestamps are nanoseconds since it.
    base: Instant,
    /// Notifications shown by any device.
    shown: AtomicU64,
    /// Nanoseconds since `base` of the latest notification shown.
    last_ns: AtomicU64,
    /// Push → device latency in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// Woken after every notification shown.
    wake: Notify,
}

impl Seen {
    fn new() -> Result<Seen> {
        Ok(Seen {
            base: Instant::now(),
            shown: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
            wake: Notify::new(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn record(&self, sent_ns: u64) {
        let now = self.now_ns();
        let micros = now.saturating_sub(sent_ns) / 1_000;
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(micros.max(1));
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.shown.fetch_add(1, Ordering::Release);
        self.wake.notify_one();
    }

    fn take_latency(&self) -> Histogram<u64> {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let copy = h.clone();
        h.reset();
        copy
    }

    /// Waits until `target` notifications were shown in total, or `deadline`.
    async fn wait_shown(&self, target: u64, deadline: Instant) -> bool {
        loop {
            let woken = self.wake.notified();
            if self.shown.load(Ordering::Acquire) >= target {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A missed wake-up costs at most this poll interval, never correctness.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(5)), woken).await;
        }
    }
}

/// Outcomes the hub recorded, counted by a broadcast subscriber.
#[derive(Default)]
struct HubCount {
    /// `sent` outcomes (each is followed by `acknowledged` once the device answers).
    sent: AtomicU64,
    acknowledged: AtomicU64,
    discarded: AtomicU64,
    other: AtomicU64,
    /// Device sessions that ended.
    offline: AtomicU64,
    /// Events the subscriber missed (`RecvError::Lagged`).
    lagged: AtomicU64,
    /// Nanoseconds since the run's base of the latest notification event.
    last_ns: AtomicU64,
}

fn count_hub_events(
    mut rx: broadcast::Receiver<Logged>,
    base: Instant,
    stop: CancellationToken,
) -> (Arc<HubCount>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(HubCount::default());
    let c = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = rx.recv() => next.map(|l| l.event),
            };
            match next {
                Ok(Event::Notification { outcome, .. }) => {
                    let counter = match outcome {
                        Outcome::Acknowledged => &c.acknowledged,
                        Outcome::Discarded => &c.discarded,
                        Outcome::Sent => &c.sent,
                        _ => &c.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    c.last_ns
                        .fetch_max(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                Ok(Event::DeviceOffline { .. }) => {
                    c.offline.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    c.lagged.fetch_add(n, Ordering::Relaxed);
                    c.last_ns
                        .fetch_max(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (count, task)
}

async fn run(p: Params, sim_runtime: tokio::runtime::Handle) -> Result<()> {
    println!("apns-sim load generator: {p:?}");
    let pki = Pki::generate()?;
    let ca_pem = pki.ca_cert_pem().to_owned();
    let provider_tls = tls::client_config(
        ca_pem.as_bytes(),
        Some(tls::ClientIdentity::from_provider(pki.default_provider())?),
        Vec::new(),
    )?;
    let device_tls = tls::client_config(ca_pem.as_bytes(), None, Vec::new())?;
    let raw_server = tls::device_server_config(&pki)?;

    let sim = sim_runtime
        .spawn(async move {
            let listeners = Listeners::bind_local().await?;
            anyhow::Ok(Simulator::start(SimulatorConfig::new(pki), listeners)?)
        })
        .await??;
    let gateway = sim.addrs().gateway.to_string();
    let device_addr = sim.addrs().devices.to_string();
    let seen = Arc::new(Seen::new()?);
    let frame = Arc::new(LoadFrame::new()?);
    let stop_devices = CancellationToken::new();

    // 1a. Memory: an in-process fleet (both ends of every session in this process). The
    // throughput run uses the first `devices` of it.
    let fleet_size = p.devices.max(p.idle_devices);
    let rss0 = rss_kib()?;
    let started = Instant::now();
    let fleet = start_fleet(
        fleet_size,
        &device_addr,
        &device_tls,
        &stop_devices,
        p.timeout,
    )
    .await?;
    let rss1 = rss_kib()?;
    println!(
        "memory: {fleet_size} in-process devices connected and registered in {:.2} s; RSS {} -> {} KiB: {:.1} KiB per device (simulator session + simulated device, both TLS ends)",
        started.elapsed().as_secs_f64(),
        rss0,
        rss1,
        (rss1 as f64 - rss0 as f64) / fleet_size as f64
    );
    let mut tokens = Vec::with_capacity(p.devices);
    let mut handles = Vec::with_capacity(fleet_size);
    for (i, (token, handle)) in fleet.into_iter().enumerate() {
        if i < p.devices {
            tokens.push(token);
        }
        handles.push(handle);
    }
    let commands: Vec<_> = handles.iter().map(|h| h.commands.clone()).collect();
    let drains: Vec<_> = handles
        .into_iter()
        .map(|h| tokio::spawn(drain_device(h, seen.clone())))
        .collect();

    // 1b. Memory, simulator side only: a fleet in a child process.
    let mut child_fleet = None;
    if p.idle_devices > 0 {
        match ChildFleet::start(p.idle_devices, &device_addr, &ca_pem, p.timeout).await {
            Ok((fleet, rss_before, rss_after)) => {
                println!(
                    "memory: {} devices in a child process; simulator RSS {} -> {} KiB: {:.1} KiB per idle device session (simulator side only)",
                    p.idle_devices,
                    rss_before,
                    rss_after,
                    (rss_after as f64 - rss_before as f64) / p.idle_devices as f64
                );
                child_fleet = Some(fleet);
            }
            Err(e) => println!("memory (child fleet): skipped: {e:#}"),
        }
    }

    let mut providers = Vec::with_capacity(p.providers);
    for _ in 0..p.providers {
        providers.push(BinaryClient::connect(&gateway, "localhost", provider_tls.clone()).await?);
    }

    // 2. Ingest: offline devices, expiry 0, so every notification ends `discarded`.
    if let Some(fleet) = child_fleet.as_mut() {
        if p.ingest > 0 {
            let stop = CancellationToken::new();
            let (count, task) = count_hub_events(sim.hub().subscribe(), seen.base, stop.clone());
            fleet.go_offline(p.timeout).await?;
            // Wait until the hub has closed every session, so that each push is routed
            // as "offline" and not to a session about to end.
            let deadline = Instant::now() + p.timeout;
            while count.offline.load(Ordering::Relaxed) < fleet.tokens.len() as u64
                && count.lagged.load(Ordering::Relaxed) == 0
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let cpu0 = Cpu::now()?;
            let t0 = seen.now_ns();
            providers = push_all(
                providers,
                fleet.tokens.clone(),
                p.ingest,
                &p,
                &seen,
                &frame,
                Pace::Unpaced,
            )
            .await?;
            let written_ns = seen.now_ns();
            let deadline = Instant::now() + p.timeout;
            let total = |c: &HubCount| {
                c.discarded.load(Ordering::Relaxed)
                    + c.other.load(Ordering::Relaxed)
                    + c.acknowledged.load(Ordering::Relaxed)
                    + c.lagged.load(Ordering::Relaxed)
            };
            while total(&count) < p.ingest && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let cpu = Cpu::now()?.since(&cpu0);
            stop.cancel();
            let _ = task.await;
            let end_ns = count.last_ns.load(Ordering::Relaxed);
            let secs = (end_ns.saturating_sub(t0)) as f64 / 1e9;
            println!(
                "ingest: {} notifications to {} offline devices over {} connections: {:.0} notifications/s ({:.3} s; writes done after {:.3} s); hub saw discarded {} + other {} + missed by the subscriber {}; {}",
                p.ingest,
                fleet.tokens.len(),
                p.providers,
                p.ingest as f64 / secs,
                secs,
                written_ns.saturating_sub(t0) as f64 / 1e9,
                count.discarded.load(Ordering::Relaxed),
                count.other.load(Ordering::Relaxed),
                count.lagged.load(Ordering::Relaxed),
                cpu.per(p.ingest),
            );
            if total(&count) < p.ingest {
                println!("ingest: WARNING: timed out before the hub saw every notification");
            }
        }
    }
    if let Some(fleet) = child_fleet.take() {
        fleet.quit(p.timeout).await;
    }

    // 3. Unloaded latency: one notification at a time.
    if p.latency_samples > 0 {
        let deadline = Instant::now() + p.timeout;
        let mut done = 0;
        let first = tokens.first().copied().context("no devices")?;
        let mut client = providers.pop().context("no provider")?;
        let start_shown = seen.shown.load(Ordering::Acquire);
        while done < p.latency_samples && Instant::now() < deadline {
            let mut buf = BytesMut::with_capacity(FRAME_LEN);
            frame.put(&mut buf, first, done as u32, seen.now_ns());
            client.send(&buf).await?;
            done += 1;
            if !seen.wait_shown(start_shown + done, deadline).await {
                break;
            }
        }
        providers.push(client);
        let h = seen.take_latency();
        println!(
            "latency, unloaded ({} notifications one at a time): p50 {} µs, p99 {} µs, max {} µs",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }

    // 4. End-to-end throughput.
    {
        let stop = CancellationToken::new();
        let (count, task) = count_hub_events(sim.hub().subscribe(), seen.base, stop.clone());
        let shown0 = seen.shown.load(Ordering::Acquire);
        let cpu0 = Cpu::now()?;
        let t0 = seen.now_ns();
        providers = push_all(
            providers,
            tokens.clone(),
            p.notifications,
            &p,
            &seen,
            &frame,
            Pace::Window(shown0),
        )
        .await?;
        let written_ns = seen.now_ns();
        let deadline = Instant::now() + p.timeout;
        let target = shown0 + p.notifications;
        let all_shown = seen.wait_shown(target, deadline).await;
        // Every notification shown means none was discarded: the hub then publishes exactly
        // two events for each, `sent` and `acknowledged`. Events the subscriber missed
        // (`Lagged`) still count as published, so the last of the 2N marks the moment the
        // hub had recorded every acknowledgement.
        let published = |c: &HubCount| {
            c.sent.load(Ordering::Relaxed)
                + c.acknowledged.load(Ordering::Relaxed)
                + c.discarded.load(Ordering::Relaxed)
                + c.other.load(Ordering::Relaxed)
                + c.lagged.load(Ordering::Relaxed)
        };
        let hub_done = loop {
            if published(&count) >= 2 * p.notifications {
                break true;
            }
            if !all_shown || Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let cpu = Cpu::now()?.since(&cpu0);
        stop.cancel();
        let _ = task.await;
        let shown = seen.shown.load(Ordering::Acquire) - shown0;
        let shown_secs = (seen.last_ns.load(Ordering::Relaxed).saturating_sub(t0)) as f64 / 1e9;
        let hub_secs = (count.last_ns.load(Ordering::Relaxed).saturating_sub(t0)) as f64 / 1e9;
        let h = seen.take_latency();
        println!(
            "throughput: {} notifications, {} devices, {} connections, {} frames per write, window {}: {:.0} notifications/s shown by devices ({} shown in {:.3} s; writes done after {:.3} s)",
            p.notifications,
            p.devices,
            p.providers,
            p.batch,
            p.window,
            shown as f64 / shown_secs,
            shown,
            shown_secs,
            written_ns.saturating_sub(t0) as f64 / 1e9,
        );
        let lagged = count.lagged.load(Ordering::Relaxed);
        if hub_done {
            println!(
                "throughput: hub recorded all {} acknowledgements after {:.3} s: {:.0} notifications/s acknowledged (subscriber saw {} sent + {} acknowledged, missed {lagged})",
                p.notifications,
                hub_secs,
                p.notifications as f64 / hub_secs,
                count.sent.load(Ordering::Relaxed),
                count.acknowledged.load(Ordering::Relaxed),
            );
        } else {
            println!(
                "throughput: WARNING: the hub did not publish 2 events per notification in time (saw {} sent + {} acknowledged + {} discarded + {} other, missed {lagged})",
                count.sent.load(Ordering::Relaxed),
                count.acknowledged.load(Ordering::Relaxed),
                count.discarded.load(Ordering::Relaxed),
                count.other.load(Ordering::Relaxed),
            );
        }
        println!(
            "throughput: push -> device latency under load: p50 {} µs, p99 {} µs, max {} µs; {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            cpu.per(p.notifications),
        );
        if !all_shown {
            println!(
                "throughput: WARNING: timed out with {shown} of {} shown",
                p.notifications
            );
        }
    }

    for c in providers {
        let _ = c.close().await;
    }
    drop(commands);
    stop_devices.cancel();
    for d in drains {
        let _ = tokio::time::timeout(p.timeout, d).await;
    }
    tokio::time::timeout(p.timeout, sim.shutdown())
        .await
        .context("simulator shutdown")?;

    // 5. Raw TLS loopback limit.
    if p.raw_frames > 0 {
        raw_tls(raw_server, device_tls, p.raw_frames, p.timeout).await?;
    }
    Ok(())
}

/// Connects `n` devices with one app each, in waves, and returns their tokens.
async fn start_fleet(
    n: usize,
    addr: &str,
    tls: &Arc<ClientConfig>,
    stop: &CancellationToken,
    timeout: Duration,
) -> Result<Vec<(DeviceToken, DeviceHandle)>> {
    let mut fleet = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while fleet.len() < n {
        let wave: Vec<DeviceHandle> = (fleet.len()..n.min(fleet.len() + CONNECT_WAVE))
            .map(|i| {
                device::spawn(
                    DeviceConfig {
                        server: addr.to_owned(),
                        server_name: "localhost".into(),
                        tls: tls.clone(),
                        serial: format!("LOAD-{i}"),
                        environment: Environment::Sandbox,
                        apps: vec![APP.into()],
                        register_url: None,
                    },
                    stop.clone(),
                )
            })
            .collect();
        for mut handle in wave {
            let token = tokio::time::timeout_at(deadline, async {
                while let Some(event) = handle.events.recv().await {
                    if let DeviceEvent::Registered { token, .. } = event {
                        return Some(token);
                    }
                }
                None
            })
            .await
            .context("devices did not register in time")?
            .context("a device stopped before registering")?;
            fleet.push((token, handle));
        }
    }
    Ok(fleet)
}

/// Reads one device's events for as long as it runs, recording each notification.
async fn drain_device(mut handle: DeviceHandle, seen: Arc<Seen>) {
    while let Some(event) = handle.events.recv().await {
        if let DeviceEvent::Notification { payload, .. } = event {
            if let Some(t) = payload.get("t").and_then(serde_json::Value::as_u64) {
                seen.record(t);
            }
        }
    }
}

/// Byte offsets in the 160-byte frame: token data, identifier data, timestamp digits.
const TOKEN_AT: usize = 8;
const ID_AT: usize = 145;
const STAMP_AT: usize = 43 + STAMP_PREFIX.len();
/// The payload up to the timestamp, which is written as 20 right-aligned digits (JSON allows
/// the leading spaces), so that every frame has the same length.
const STAMP_PREFIX: &str = r#"{"aps":{"alert":"apns-sim load"},"t":"#;

/// A command-2 frame with all five items (expiry 0, priority 10), copied and patched per
/// notification: encoding costs the load generator next to nothing.
struct LoadFrame {
    template: Vec<u8>,
}

impl LoadFrame {
    fn new() -> Result<LoadFrame> {
        let payload = format!(r#"{STAMP_PREFIX}{:>20},"pad":"{}"}}"#, 0, "x".repeat(32));
        if payload.len() != FRAME_LEN - FRAME_OVERHEAD {
            bail!("load payload is {} bytes", payload.len());
        }
        let mut template = BytesMut::new();
        encode_frame_raw(&[0; 32], payload.as_bytes(), [0; 4], 0, 10, &mut template);
        let frame = LoadFrame {
            template: template.to_vec(),
        };
        // Check the offsets with the simulator's own decoder.
        let mut check = BytesMut::new();
        let token = DeviceToken::from_bytes([7; 32]);
        frame.put(&mut check, token, 42, 1_234_567);
        let n = notification::decode(&mut check)
            .map_err(|e| anyhow::anyhow!("load frame rejected: {e}"))?
            .context("load frame incomplete")?;
        let json: serde_json::Value = serde_json::from_slice(&n.payload)?;
        if n.token != token || n.identifier != 42u32.to_be_bytes() || json["t"] != 1_234_567 {
            bail!("load frame offsets are wrong");
        }
        Ok(frame)
    }

    /// Appends one frame for `token` with identifier `id` and timestamp `sent_ns`.
    fn put(&self, dst: &mut BytesMut, token: DeviceToken, id: u32, sent_ns: u64) {
        let start = dst.len();
        dst.extend_from_slice(&self.template);
        let frame = &mut dst[start..];
        frame[TOKEN_AT..TOKEN_AT + 32].copy_from_slice(token.as_bytes());
        frame[ID_AT..ID_AT + 4].copy_from_slice(&id.to_be_bytes());
        let stamp = &mut frame[STAMP_AT..STAMP_AT + 20];
        let mut value = sent_ns;
        for digit in stamp.iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
    }
}

/// How writers hold back.
#[derive(Clone, Copy)]
enum Pace {
    /// Write as fast as the gateway reads.
    Unpaced,
    /// Keep (written − shown since `shown0`) within the window.
    Window(u64),
}

/// Pushes `n` notifications round-robin over `tokens`, notification `i` on connection
/// `i % connections`, `batch` frames per write. Returns the connections.
async fn push_all(
    providers: Vec<BinaryClient>,
    tokens: Vec<DeviceToken>,
    n: u64,
    p: &Params,
    seen: &Arc<Seen>,
    frame: &Arc<LoadFrame>,
    pace: Pace,
) -> Result<Vec<BinaryClient>> {
    let connections = providers.len() as u64;
    let tokens = Arc::new(tokens);
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + p.timeout;
    let mut tasks = Vec::new();
    for (k, mut client) in providers.into_iter().enumerate() {
        let tokens = tokens.clone();
        let seen = seen.clone();
        let frame = frame.clone();
        let written = written.clone();
        let batch = p.batch as u64;
        let window = p.window;
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(batch as usize * FRAME_LEN);
            let mut i = k as u64;
            while i < n {
                if let Pace::Window(shown0) = pace {
                    loop {
                        let shown = seen.shown.load(Ordering::Acquire) - shown0;
                        if written.load(Ordering::Relaxed).saturating_sub(shown) < window {
                            break;
                        }
                        if Instant::now() > deadline {
                            bail!("window never opened: devices stopped showing notifications");
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                buf.clear();
                let now = seen.now_ns();
                let mut in_batch = 0;
                while i < n && in_batch < batch {
                    let token = tokens[(i % tokens.len() as u64) as usize];
                    frame.put(&mut buf, token, i as u32, now);
                    i += connections;
                    in_batch += 1;
                }
                written.fetch_add(in_batch, Ordering::Relaxed);
                client.send(&buf).await?;
            }
            Ok::<_, anyhow::Error>(client)
        }));
    }
    let mut back = Vec::new();
    for t in tasks {
        back.push(t.await??);
    }
    Ok(back)
}

/// Devices in a child `apns-sim device --count N` process.
struct ChildFleet {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    tokens: Vec<DeviceToken>,
    /// Keeps the CA file alive while the child may read it.
    _dir: tempfile::TempDir,
}

impl ChildFleet {
    /// Starts the child and waits for every device's token. Returns the simulator's RSS
    /// before and after.
    async fn start(
        n: usize,
        addr: &str,
        ca_pem: &str,
        timeout: Duration,
    ) -> Result<(ChildFleet, u64, u64)> {
        let exe = env!("CARGO_BIN_EXE_apns-sim");
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem)?;
        let rss_before = rss_kib()?;
        let mut child = tokio::process::Command::new(exe)
            .arg("device")
            .args(["--server", addr, "--serial", "MEM", "--app", APP])
            .arg("--count")
            .arg(n.to_string())
            .arg("--ca")
            .arg(&ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {exe}"))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut fleet = ChildFleet {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            tokens: Vec::with_capacity(n),
            _dir: dir,
        };
        let mut by_serial = HashMap::new();
        fleet
            .read_events(timeout, |event| {
                if event["event"] == "registered" {
                    if let (Some(serial), Some(token)) =
                        (event["serial"].as_str(), event["token"].as_str())
                    {
                        if let Ok(token) = DeviceToken::from_hex(token) {
                            by_serial.insert(serial.to_owned(), token);
                        }
                    }
                }
                by_serial.len() >= n
            })
            .await?;
        fleet.tokens = by_serial.into_values().collect();
        let rss_after = rss_kib()?;
        Ok((fleet, rss_before, rss_after))
    }

    /// Reads JSON events until `done` says so, or the deadline.
    async fn read_events(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let work = async {
            while let Some(line) = self.lines.next_line().await? {
                let event: serde_json::Value = serde_json::from_str(&line)?;
                if done(&event) {
                    return Ok(());
                }
            }
            bail!("the device process ended early")
        };
        tokio::time::timeout(timeout, work)
            .await
            .context("the device process was too slow")?
    }

    /// Takes every child device offline and waits until each says so.
    async fn go_offline(&mut self, timeout: Duration) -> Result<()> {
        self.stdin.write_all(b"offline\n").await?;
        self.stdin.flush().await?;
        let n = self.tokens.len();
        let mut offline = 0;
        self.read_events(timeout, |event| {
            if event["event"] == "offline" {
                offline += 1;
            }
            offline >= n
        })
        .await
    }

    /// Asks the child to quit and waits for it (killing it after the timeout).
    async fn quit(mut self, timeout: Duration) {
        let _ = self.stdin.write_all(b"quit\n").await;
        drop(self.stdin);
        let drain = async {
            while let Ok(Some(_)) = self.lines.next_line().await {}
            self.child.wait().await
        };
        if tokio::time::timeout(timeout, drain).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// One TLS connection on loopback, 160-byte frames written in 64,000-byte chunks and split
/// again by the reader: the ceiling for anything that reads frames over TLS here.
async fn raw_tls(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
    frames: u64,
    timeout: Duration,
) -> Result<()> {
    const CHUNK_FRAMES: u64 = 400;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let mut buf = BytesMut::with_capacity(128 * 1024);
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        while got < frames {
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            if tls.read_buf(&mut buf).await? == 0 {
                bail!("raw TLS writer closed after {got} frames");
            }
            first.get_or_insert_with(Instant::now);
            let whole = buf.len() / FRAME_LEN * FRAME_LEN;
            for frame in buf[..whole].chunks_exact(FRAME_LEN) {
                if frame[0] != 2 {
                    bail!("raw TLS frame {got} is corrupt");
                }
                got += 1;
            }
            buf.advance(whole);
        }
        anyhow::Ok(Instant::now())
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
    let mut chunk = BytesMut::new();
    for i in 0..CHUNK_FRAMES {
        let mut frame = vec![0x5Au8; FRAME_LEN];
        frame[0] = 2;
        frame[1..5].copy_from_slice(&(i as u32).to_be_bytes());
        chunk.extend_from_slice(&frame);
    }
    let cpu0 = Cpu::now()?;
    let start = Instant::now();
    let mut sent = 0;
    while sent < frames {
        let n = CHUNK_FRAMES.min(frames - sent) as usize;
        tls.write_all(&chunk[..n * FRAME_LEN]).await?;
        sent += n as u64;
    }
    tls.flush().await?;
    let end = tokio::time::timeout(timeout, reader)
        .await
        .context("raw TLS reader too slow")???;
    let cpu = Cpu::now()?.since(&cpu0).load;
    let secs = (end - start).as_secs_f64();
    println!(
        "raw TLS: {frames} frames of {FRAME_LEN} bytes over one connection in {secs:.3} s: {:.0} frames/s, {:.0} MB/s; CPU {cpu:.2} core-seconds",
        frames as f64 / secs,
        (frames * FRAME_LEN as u64) as f64 / secs / 1e6,
    );
    let _ = tls.shutdown().await;
    Ok(())
}

/// Resident set size of this process in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS without a number")?
        .parse()
        .context("VmRSS")
}

/// CPU time (user + system) used so far by the simulator's threads and by the load
/// generator's, in seconds.
struct Cpu {
    sim: f64,
    load: f64,
}

impl Cpu {
    /// Sums `/proc/self/task/*/stat` by thread name.
    fn now() -> Result<Cpu> {
        let mut cpu = Cpu {
            sim: 0.0,
            load: 0.0,
        };
        for task in std::fs::read_dir("/proc/self/task")? {
            // A thread may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
                continue;
            };
            let (Some((_, rest)), Some(name)) =
                (stat.rsplit_once(')'), stat.split_once('(').map(|(_, n)| n))
            else {
                continue;
            };
            // Fields after the name: state is the 3rd field of the line, utime the 14th
            // and stime the 15th; Linux counts them in 1/100 s (USER_HZ).
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
                continue;
            };
            let seconds = (utime + stime) / 100.0;
            if name.starts_with(SIM_THREADS) {
                cpu.sim += seconds;
            } else {
                cpu.load += seconds;
            }
        }
        Ok(cpu)
    }

    fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            sim: self.sim - earlier.sim,
            load: self.load - earlier.load,
        }
    }

    /// "CPU …" with the cost per notification of each side.
    fn per(&self, notifications: u64) -> String {
        let n = notifications as f64;
        format!(
            "CPU: simulator {:.2} core-seconds ({:.2} µs per notification), load generator {:.2} core-seconds ({:.2} µs per notification)",
            self.sim,
            self.sim * 1e6 / n,
            self.load,
            self.load * 1e6 / n,
        )
    }
}
