//! The devices `apns-sim bench` holds: simulated devices ([`crate::client::device`]) in this
//! process, and past what one process may hold, in child `apns-sim device --count`
//! processes whose JSON events are read from their stdout. Every notification a device
//! shows is counted and its push → device latency recorded in one HDR histogram.
//!
//! Concurrency: one task per in-process device drains its events, one task per child reads
//! its stdout; all of them record into [`Seen`] (atomics, and one mutex around the histogram
//! taken once per notification).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use rustls::ClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::stamp_of;
use crate::client::device::{self, DeviceConfig, DeviceEvent, DeviceHandle};
use crate::pki::DEFAULT_TOPIC;
use crate::protocol::token::DeviceToken;
use crate::protocol::Environment;

/// In-process devices connecting at once while a fleet starts: as soon as one has
/// registered the next one starts, so the fleet's start is never held up by the slowest of a
/// wave. Kept below the endpoint's handshaking seats (`Settings::max_handshaking`, 256),
/// past which the oldest handshake would give way and its device start again.
const CONNECT_WINDOW: usize = 200;
/// Highest latency the histogram records, in microseconds (2 minutes); longer is clamped.
const MAX_LATENCY_US: u64 = 120_000_000;

/// What the devices saw, shared by every task that reads device events.
pub(crate) struct Seen {
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
    pub(crate) fn new() -> Result<Seen> {
        Ok(Seen {
            base: Instant::now(),
            shown: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?),
            wake: Notify::new(),
        })
    }

    /// Nanoseconds since the run's start (what payloads carry).
    pub(crate) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Notifications shown so far.
    pub(crate) fn shown(&self) -> u64 {
        self.shown.load(Ordering::Acquire)
    }

    /// Nanoseconds since the start of the last notification shown.
    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// One notification shown, sent at `sent_ns`.
    fn record(&self, sent_ns: u64) {
        let now = self.now_ns();
        let micros = now.saturating_sub(sent_ns) / 1_000;
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.shown.fetch_add(1, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// A copy of the latency histogram.
    pub(crate) fn latency(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `target` notifications were shown in total, or `deadline`.
    pub(crate) async fn wait_shown(&self, target: u64, deadline: Instant) -> bool {
        loop {
            let woken = self.wake.notified();
            if self.shown() >= target {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A wake-up between the check and the wait costs at most this poll interval,
            // never correctness.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(5)), woken).await;
        }
    }
}

/// Where the devices connect and how.
pub(crate) struct FleetPlan {
    /// Device endpoint `host:port`.
    pub(crate) addr: String,
    /// TLS server name.
    pub(crate) server_name: String,
    /// Trusts the target's CA (in-process devices).
    pub(crate) tls: Arc<ClientConfig>,
    /// The CA file (child devices read it).
    pub(crate) ca_file: PathBuf,
    /// The `apns-sim` executable that runs child device processes.
    pub(crate) exe: Option<PathBuf>,
    /// Devices in this process, the rest in children.
    pub(crate) in_process: usize,
    /// Most devices per child process.
    pub(crate) per_child: usize,
    /// Deadline for the whole fleet to register.
    pub(crate) timeout: Duration,
}

/// Running devices: their tokens, and what keeps them alive.
pub(crate) struct Fleet {
    /// One token per device, in-process ones first.
    pub(crate) tokens: Vec<DeviceToken>,
    stop: CancellationToken,
    drains: Vec<JoinHandle<()>>,
    children: Vec<Child>,
}

/// One child `apns-sim device --count` process.
struct Child {
    process: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    reader: JoinHandle<()>,
}

impl Fleet {
    /// Starts `n` devices (serials `BENCH-<i>`, one `com.example.app` token each) and waits
    /// until every one has registered.
    pub(crate) async fn start(plan: &FleetPlan, n: usize, seen: &Arc<Seen>) -> Result<Fleet> {
        let deadline = tokio::time::Instant::now() + plan.timeout;
        let stop = CancellationToken::new();
        let mut fleet = Fleet {
            tokens: Vec::with_capacity(n),
            stop: stop.clone(),
            drains: Vec::new(),
            children: Vec::new(),
        };
        let local = n.min(plan.in_process);
        let config = |i: usize| DeviceConfig {
            server: plan.addr.clone(),
            server_name: plan.server_name.clone(),
            tls: plan.tls.clone(),
            serial: format!("BENCH-{i}"),
            environment: Environment::Sandbox,
            apps: vec![DEFAULT_TOPIC.into()],
            register_url: None,
        };
        // In-process devices leave from addresses of 127.0.0.0/8 other than 127.0.0.1.
        let source = |i: usize| device::loopback_source(&plan.addr, i);
        // Each device's token goes in its own place, whatever order they register in.
        let mut tokens: Vec<Option<DeviceToken>> = vec![None; local];
        let mut connecting = FuturesUnordered::new();
        let mut started = 0;
        while started < local || !connecting.is_empty() {
            while started < local && connecting.len() < CONNECT_WINDOW {
                let mut handle = device::spawn_from(config(started), stop.clone(), source(started));
                let i = started;
                connecting.push(async move {
                    let token = registered(&mut handle).await;
                    (i, token, handle)
                });
                started += 1;
            }
            let Some((i, token, handle)) = tokio::time::timeout_at(deadline, connecting.next())
                .await
                .context("devices did not register in time")?
            else {
                break;
            };
            tokens[i] = Some(token?);
            fleet.drains.push(tokio::spawn(drain(handle, seen.clone())));
        }
        fleet.tokens.extend(tokens.into_iter().flatten());
        let mut next = local;
        while next < n {
            let count = (n - next).min(plan.per_child.max(1));
            let (child, tokens) = start_child(plan, next, count, seen, deadline).await?;
            fleet.tokens.extend(tokens);
            fleet.children.push(child);
            next += count;
        }
        Ok(fleet)
    }

    /// Stops every device (children are told to quit, then killed after `timeout`).
    pub(crate) async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        for d in self.drains {
            let _ = tokio::time::timeout(timeout, d).await;
        }
        for mut child in self.children {
            let _ = child.stdin.write_all(b"quit\n").await;
            drop(child.stdin);
            if tokio::time::timeout(timeout, child.process.wait())
                .await
                .is_err()
            {
                let _ = child.process.kill().await;
            }
            let _ = tokio::time::timeout(timeout, child.reader).await;
        }
    }
}

/// Waits for the device's first token.
async fn registered(handle: &mut DeviceHandle) -> Result<DeviceToken> {
    while let Some(event) = handle.events.recv().await {
        if let DeviceEvent::Registered { token, .. } = event {
            return Ok(token);
        }
    }
    bail!("a device stopped before registering")
}

/// Reads one device's events for as long as it runs, recording each notification.
async fn drain(mut handle: DeviceHandle, seen: Arc<Seen>) {
    while let Some(event) = handle.events.recv().await {
        if let DeviceEvent::Notification { payload, .. } = event {
            if let Some(t) = stamp_of(&payload) {
                seen.record(t);
            }
        }
    }
}

/// Starts a child with `count` devices (serials from `first`) and waits for their tokens;
/// its reader then keeps counting the notifications it prints.
async fn start_child(
    plan: &FleetPlan,
    first: usize,
    count: usize,
    seen: &Arc<Seen>,
    deadline: tokio::time::Instant,
) -> Result<(Child, Vec<DeviceToken>)> {
    let exe = plan
        .exe
        .as_deref()
        .context("devices in child processes need the apns-sim executable")?;
    let mut process = tokio::process::Command::new(exe)
        .arg("device")
        .args(["--server", &plan.addr, "--server-name", &plan.server_name])
        .arg("--serial")
        .arg(format!("BENCH-C{first}"))
        .args(["--app", DEFAULT_TOPIC])
        .arg("--count")
        .arg(count.to_string())
        .arg("--ca")
        .arg(&plan.ca_file)
        // The child's own log lines are not wanted; its events are on stdout.
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdin = process.stdin.take().context("child stdin")?;
    let stdout = process.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut tokens = Vec::with_capacity(count);
    let wait = async {
        while tokens.len() < count {
            let Some(line) = lines.next_line().await? else {
                bail!("the device process ended before its devices registered");
            };
            let event: serde_json::Value = serde_json::from_str(&line)?;
            if event["event"] == "registered" {
                if let Some(token) = event["token"].as_str() {
                    tokens.push(DeviceToken::from_hex(token)?);
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout_at(deadline, wait)
        .await
        .context("child devices did not register in time")??;
    let seen = seen.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            // Cheap test first: most lines are notifications once the run starts.
            if !line.contains("\"notification\"") {
                continue;
            }
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["event"] == "notification" {
                    if let Some(t) = stamp_of(&event["payload"]) {
                        seen.record(t);
                    }
                }
            }
        }
    });
    Ok((
        Child {
            process,
            stdin,
            reader,
        },
        tokens,
    ))
}

/// The CA file of a certificate folder.
pub(crate) fn ca_file(certs: &Path) -> PathBuf {
    crate::client::CertsDir(certs.to_path_buf()).ca()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pki::Pki;
    use crate::sim::{Listeners, Simulator, SimulatorConfig};

    /// More devices than connect at once, against a real simulator on 127.0.0.1: every one
    /// registers, each token stands in its device's place, and the simulator holds them all
    /// online (their connections leave from addresses of 127.0.0.0/8 other than 127.0.0.1).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_larger_than_its_connect_window_registers_every_device() {
        let pki = Pki::generate().unwrap();
        let ca = pki.ca_cert_pem().as_bytes().to_vec();
        let sim = Simulator::start(
            SimulatorConfig::new(pki),
            Listeners::bind_local().await.unwrap(),
        )
        .unwrap();
        let plan = FleetPlan {
            addr: sim.addrs().devices.to_string(),
            server_name: "localhost".into(),
            tls: crate::tls::client_config(&ca, None, Vec::new()).unwrap(),
            ca_file: PathBuf::new(),
            exe: None,
            in_process: usize::MAX,
            per_child: 1,
            timeout: Duration::from_secs(60),
        };
        let n = CONNECT_WINDOW + 50;
        let seen = Arc::new(Seen::new().unwrap());
        let fleet = Fleet::start(&plan, n, &seen).await.unwrap();
        assert_eq!(fleet.tokens.len(), n);
        let devices = sim.hub().devices(n + 10);
        assert_eq!(devices.iter().filter(|d| d.online).count(), n);
        // The i-th token is BENCH-i's.
        for i in [0, CONNECT_WINDOW, n - 1] {
            let owner = sim.hub().token_owner(&fleet.tokens[i]);
            assert_eq!(
                owner.map(|o| o.serial),
                Some(format!("BENCH-{i}")),
                "token {i}"
            );
        }
        fleet.stop(Duration::from_secs(10)).await;
        sim.shutdown().await;
    }
}
