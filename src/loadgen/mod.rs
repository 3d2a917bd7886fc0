//! `apns-sim bench`: the load generator. It targets a simulator (started in this process,
//! started as a child `apns-sim serve`, or already running and described by a target file)
//! or anything else that speaks the same protocols, such as the anchors in
//! `benches/anchors/`, so that one pump and one device client measure them all.
//!
//! One run, in order:
//!
//! 1. start or find the target and read its certificates (the project's PKI folder layout);
//! 2. connect D simulated devices (in this process, and past what one process may hold, in
//!    child `apns-sim device --count` processes) and wait until each has a token; the
//!    simulator's resident memory before and after gives the memory per device session;
//! 3. open P provider connections (binary gateway, or HTTP/2 with a provider token or the
//!    provider certificate) and send N notifications round-robin over the tokens, unpaced,
//!    at a fixed rate, or with at most W in flight, each payload stamped with its send time;
//! 4. wait until every accepted notification was shown by its device: throughput (accepted
//!    and delivered per second), push → device latency percentiles (HDR histogram), the
//!    simulator's CPU time per notification;
//! 5. the raw TLS loopback limit of the same machine (one rustls connection).
//!
//! Everything is bounded in count and time; the summary says what was complete.

mod fleet;
mod frame;
mod measure;
mod pump;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::clock::Clock;
use crate::pki::{jwt, Pki};
use crate::progress::{self, Draw};
use crate::protocol::token::DeviceToken;
use crate::sim::{Listeners, Simulator, SimulatorConfig};
use crate::tls;
pub use measure::RawTls;

/// Name prefix of the in-process simulator's runtime threads, whose CPU time is the
/// simulator's (the load generator runs on the caller's runtime).
const SIM_THREADS: &str = "sim-worker";
/// Tokens pushed to when the target has no devices (the bare HTTP/2 anchor, an ingest run):
/// random, so requests spread as they would over a real fleet.
const TOKENS_WITHOUT_DEVICES: usize = 1_000;
/// Most devices held in this process when the simulator is elsewhere (one descriptor each);
/// a process may hold 20,000 open files here, and the load generator needs a few more.
pub const MAX_LOCAL_DEVICES: usize = 18_000;
/// Most devices held in this process next to an in-process simulator (two descriptors each:
/// both ends of every session).
pub const MAX_LOCAL_DEVICES_BESIDE_SIM: usize = 9_000;
/// Most devices per child `apns-sim device` process (one descriptor each, under 20,000).
pub const MAX_DEVICES_PER_CHILD: usize = 18_000;
/// Most devices a run may hold in all (children are one process per
/// [`MAX_DEVICES_PER_CHILD`]; the target must also hold their sessions).
pub const MAX_DEVICES: usize = 200_000;
/// Most provider connections.
pub const MAX_CONNECTIONS: usize = 256;

/// Which provider API the pump uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// The legacy binary gateway (command 2 frames, mutual TLS).
    Binary,
    /// HTTP/2 with an ES256 provider token (JWT) signed with the target's auth key.
    Http2Token,
    /// HTTP/2 with the provider certificate (mutual TLS).
    Http2Certificate,
}

/// How the providers hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// As fast as the target takes them.
    Full,
    /// This many notifications per second over all connections.
    Rate(u64),
    /// At most this many sent and not yet shown by a device (not yet answered, without
    /// devices).
    Window(u64),
}

/// What to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// A simulator started in this process on its own runtime (threads `sim-worker`), with
    /// default settings and a fresh PKI.
    InProcess,
    /// `apns-sim serve` started as a child process with `RUST_LOG` set to this filter
    /// (`warn`, `info`, …), its log lines discarded; CPU and memory from its /proc.
    Serve {
        /// The child's `RUST_LOG`.
        log: String,
        /// Whether the child keeps durable state (`--state` in its temporary folder, fresh
        /// for each run) instead of `--in-memory`: what durability costs is this against
        /// that.
        durable: bool,
    },
    /// Something already running, described by a target file.
    Running(TargetInfo),
}

/// Where a running target listens, written by the anchors (`--info FILE`) and read by
/// `apns-sim bench --target FILE`. JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// What it is, for the summary (`forwarder`, `h2`, `apns-sim`).
    pub name: String,
    /// Its process id, whose /proc gives CPU and memory (absent: not measured).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Binary gateway `host:port`.
    #[serde(default)]
    pub gateway: Option<String>,
    /// HTTP/2 API `host:port`.
    #[serde(default)]
    pub http2: Option<String>,
    /// Device endpoint `host:port`.
    #[serde(default)]
    pub devices: Option<String>,
    /// Certificate folder in the project's layout (ca.pem, provider.pem, AuthKey_*.p8, …).
    pub certs: PathBuf,
    /// A file of device tokens, hex, one a line, pushed to round-robin instead of random
    /// ones when no devices are held (`--devices 0`): a virtual fleet's tokens (`GET
    /// /v1/virtual/devices`), so the pushes are delivered without a socket per device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<PathBuf>,
}

impl TargetInfo {
    /// Reads a target file.
    pub fn read(path: &Path) -> Result<TargetInfo> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a target file", path.display()))
    }

    /// Writes a target file (to a temporary name first, so a reader never sees half).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// What to measure.
    pub target: Target,
    /// Which provider API.
    pub api: Api,
    /// Provider connections (P).
    pub connections: usize,
    /// Devices held (D); 0 sends to random tokens and measures acceptance only.
    pub devices: usize,
    /// The devices register, then all go offline before the first push: every notification
    /// is stored for its device (the newest per device and app kept), and acceptance only is
    /// measured. With a durable target this is the load that writes to disk.
    pub offline: bool,
    /// Notifications (N).
    pub notifications: u64,
    /// How the providers hold back.
    pub pace: Pace,
    /// Frames per binary write.
    pub batch: usize,
    /// Open streams per HTTP/2 connection.
    pub streams: usize,
    /// Put every device in child processes, even when this process could hold them, so that
    /// an in-process simulator's memory holds only its own side of each session.
    pub child_devices: bool,
    /// Frames through the raw TLS pipe afterwards (0 skips it).
    pub raw_tls_frames: u64,
    /// Deadline of each phase.
    pub timeout: Duration,
    /// The `apns-sim` executable (child devices, `Target::Serve`).
    pub exe: Option<PathBuf>,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
}

/// What a run measured: `apns-sim bench --json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What was measured (`in-process`, `serve`, or the target file's name).
    pub target: String,
    /// The provider API.
    pub api: Api,
    /// How the providers held back.
    pub pace: Pace,
    /// Provider connections.
    pub connections: usize,
    /// Devices held.
    pub devices: usize,
    /// Of them, in child processes.
    pub child_devices: usize,
    /// Notifications sent.
    pub notifications: u64,
    /// Accepted by the target (written and not refused on the binary API, 200 on HTTP/2).
    pub accepted: u64,
    /// Refused by the target.
    pub rejected: u64,
    /// Shown by a device (0 without devices).
    pub delivered: u64,
    /// The first refusal, in words.
    pub first_error: Option<String>,
    /// Whether every notification was accepted and, with devices, delivered.
    pub complete: bool,
    /// Seconds from the first write to the last acceptance.
    pub accept_secs: f64,
    /// Accepted per second.
    pub accepted_per_sec: f64,
    /// Seconds from the first write to the last notification shown.
    pub deliver_secs: f64,
    /// Delivered per second.
    pub delivered_per_sec: f64,
    /// Push → device latency in microseconds (`None` without devices).
    pub latency_us: Option<Latency>,
    /// The simulator's CPU and memory.
    pub simulator: SimulatorCost,
    /// How closely the load generator kept a fixed rate on the binary API (`None`
    /// otherwise): if its writes fell behind, the latency above is partly its own.
    pub pacing: Option<Pacing>,
    /// The raw TLS loopback limit of this machine (`None` when skipped).
    pub raw_tls: Option<RawTls>,
}

/// The binary pacer's own record: how it spread a fixed rate over its writes.
#[derive(Debug, Clone, Serialize)]
pub struct Pacing {
    /// Writes over all connections (one per connection and round that had something due).
    pub writes: u64,
    /// Notifications per write on average: small means the rate arrived smoothly, large
    /// means in bursts.
    pub frames_per_write: f64,
    /// Per round, how late the oldest notification it wrote was behind its place in the
    /// schedule, microseconds (count = rounds).
    pub lag_us: Latency,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Notifications recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub(crate) fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The simulator's side of the bill.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatorCost {
    /// Where the figures come from.
    pub source: String,
    /// CPU seconds from the first write until the last delivery (or acceptance).
    pub cpu_secs: Option<f64>,
    /// CPU microseconds per notification.
    pub cpu_us_per_notification: Option<f64>,
    /// Resident KiB before the devices connected.
    pub rss_kib_before_devices: Option<u64>,
    /// Resident KiB once every device had registered.
    pub rss_kib_after_devices: Option<u64>,
    /// (after − before) / devices.
    pub kib_per_device: Option<f64>,
    /// Whose memory that is: `simulator side only`, or `both ends` when devices share the
    /// simulator's process.
    pub memory_holds: String,
    /// Seconds to connect and register every device.
    pub devices_ready_secs: f64,
}

/// A target's endpoints and credentials, however it was found.
struct Resolved {
    name: String,
    probe: measure::Probe,
    gateway: Option<String>,
    http2: Option<String>,
    devices: Option<String>,
    pki: Pki,
    certs: PathBuf,
    /// The target file's tokens ([`TargetInfo::tokens`]), if it names some.
    tokens: Option<Vec<DeviceToken>>,
    /// What must live as long as the target: the in-process simulator and its runtime, or
    /// the child `serve` process; the temporary certificate folder.
    keep: Keep,
}

enum Keep {
    Nothing,
    InProcess {
        sim: Simulator,
        runtime: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    },
    Child {
        child: tokio::process::Child,
        _dir: tempfile::TempDir,
    },
}

/// Runs one benchmark. Call inside a tokio runtime (the load generator's).
pub async fn run(config: BenchConfig) -> Result<Summary> {
    check(&config)?;
    let target = resolve(&config).await?;
    let result = measure_target(&config, &target).await;
    match target.keep {
        Keep::Nothing => {}
        Keep::InProcess { sim, runtime, .. } => {
            let _ = tokio::time::timeout(config.timeout, sim.shutdown()).await;
            runtime.shutdown_background();
        }
        Keep::Child { mut child, .. } => {
            let _ = child.kill().await;
        }
    }
    result
}

fn check(c: &BenchConfig) -> Result<()> {
    if c.connections == 0 || c.connections > MAX_CONNECTIONS {
        bail!("connections must be 1 to {MAX_CONNECTIONS}");
    }
    if c.devices > MAX_DEVICES {
        bail!("devices must be at most {MAX_DEVICES}");
    }
    if c.notifications == 0 || c.batch == 0 || c.streams == 0 {
        bail!("notifications, batch and streams must be at least 1");
    }
    if matches!(c.pace, Pace::Rate(0) | Pace::Window(0)) {
        bail!("a rate or a window must be at least 1");
    }
    Ok(())
}

async fn resolve(config: &BenchConfig) -> Result<Resolved> {
    match &config.target {
        Target::InProcess => {
            let dir = tempfile::tempdir()?;
            let pki = Pki::generate()?;
            pki.write(dir.path())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .thread_name(SIM_THREADS)
                .enable_all()
                .build()?;
            let sim_pki = Pki::load(dir.path())?;
            let sim = runtime
                .spawn(async move {
                    let listeners = Listeners::bind_local().await?;
                    anyhow::Ok(Simulator::start(SimulatorConfig::new(sim_pki), listeners)?)
                })
                .await??;
            let addrs = *sim.addrs();
            Ok(Resolved {
                name: "in-process".into(),
                probe: measure::Probe::Threads(SIM_THREADS),
                gateway: Some(addrs.gateway.to_string()),
                http2: Some(addrs.http2.to_string()),
                devices: Some(addrs.devices.to_string()),
                pki,
                certs: dir.path().to_path_buf(),
                tokens: None,
                keep: Keep::InProcess {
                    sim,
                    runtime,
                    _dir: dir,
                },
            })
        }
        Target::Serve { log, durable } => spawn_serve(config, log, *durable).await,
        Target::Running(info) => Ok(Resolved {
            name: info.name.clone(),
            probe: info
                .pid
                .map_or(measure::Probe::None, measure::Probe::Process),
            gateway: info.gateway.clone(),
            http2: info.http2.clone(),
            devices: info.devices.clone(),
            pki: Pki::load(&info.certs)
                .with_context(|| format!("certificates in {}", info.certs.display()))?,
            certs: info.certs.clone(),
            tokens: info.tokens.as_deref().map(read_tokens).transpose()?,
            keep: Keep::Nothing,
        }),
    }
}

/// The tokens of a [`TargetInfo::tokens`] file: hex, one a line (blank lines skipped), at
/// least one.
fn read_tokens(path: &Path) -> Result<Vec<DeviceToken>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tokens = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            DeviceToken::from_hex(l)
                .with_context(|| format!("{} line {}: not a token", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(!tokens.is_empty(), "{} holds no tokens", path.display());
    Ok(tokens)
}

/// Starts `apns-sim serve` on ports chosen by the system, without demo devices, and reads
/// its addresses from the banner it prints. Its state is in memory, or with `durable` in a
/// `state` folder of its own temporary folder (never the default one beside `--certs`,
/// which two runs at once would share).
async fn spawn_serve(config: &BenchConfig, log: &str, durable: bool) -> Result<Resolved> {
    let exe = config
        .exe
        .as_deref()
        .context("starting a simulator needs the apns-sim executable")?;
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let mut state = vec![std::ffi::OsString::from("--in-memory")];
    if durable {
        state = vec!["--state".into(), dir.path().join("state").into()];
    }
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .arg("--certs")
        .arg(&certs)
        .args(&state)
        .args([
            "--gateway-port",
            "0",
            "--feedback-port",
            "0",
            "--http2-port",
            "0",
        ])
        .args([
            "--device-port",
            "0",
            "--control-port",
            "0",
            "--devices",
            "0",
        ])
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", exe.display()))?;
    let pid = child.id().context("the simulator exited at once")?;
    let stdout = child.stdout.take().context("serve stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut gateway, mut http2, mut devices) = (None, None, None);
    let banner = async {
        while let Some(line) = lines.next_line().await? {
            let addr = || line.split_whitespace().last().map(str::to_owned);
            let l = line.trim_start();
            if l.starts_with("binary gateway") {
                gateway = addr();
            } else if l.starts_with("HTTP/2 API") {
                http2 = addr();
            } else if l.starts_with("device endpoint") {
                devices = addr();
            } else if l.starts_with("certificates") {
                return anyhow::Ok(());
            }
        }
        bail!("apns-sim serve ended before it was ready")
    };
    tokio::time::timeout(config.timeout, banner)
        .await
        .context("apns-sim serve did not start in time")??;
    // Keep reading what it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let kept = if durable { ", durable state" } else { "" };
    Ok(Resolved {
        name: format!("serve (RUST_LOG={log}{kept})"),
        probe: measure::Probe::Process(pid),
        gateway,
        http2,
        devices,
        pki: Pki::load(&certs)?,
        certs,
        tokens: None,
        keep: Keep::Child { child, _dir: dir },
    })
}

async fn measure_target(config: &BenchConfig, target: &Resolved) -> Result<Summary> {
    let pki = &target.pki;
    let ca = pki.ca_cert_pem().as_bytes();
    let device_tls = tls::client_config(ca, None, Vec::new())?;
    let seen = Arc::new(fleet::Seen::new()?);

    // Devices.
    let beside_sim = matches!(target.keep, Keep::InProcess { .. });
    let in_process = if config.child_devices {
        0
    } else if beside_sim {
        MAX_LOCAL_DEVICES_BESIDE_SIM
    } else {
        MAX_LOCAL_DEVICES
    };
    let rss_before = target.probe.rss_kib();
    let ready = Instant::now();
    let fleet = if config.devices > 0 {
        let addr = target
            .devices
            .clone()
            .context("the target has no device endpoint; use --devices 0")?;
        let plan = fleet::FleetPlan {
            addr,
            server_name: "localhost".into(),
            tls: device_tls.clone(),
            ca_file: fleet::ca_file(&target.certs),
            exe: config.exe.clone(),
            in_process,
            per_child: MAX_DEVICES_PER_CHILD,
            timeout: config.timeout,
        };
        Some(fleet::Fleet::start(&plan, config.devices, &seen).await?)
    } else {
        None
    };
    let devices_ready_secs = ready.elapsed().as_secs_f64();
    let rss_after = target.probe.rss_kib();
    let local = config.devices.min(in_process);
    let tokens = match &fleet {
        Some(f) => f.tokens.clone(),
        None => match &target.tokens {
            Some(tokens) => tokens.clone(),
            None => (0..TOKENS_WITHOUT_DEVICES)
                .map(|_| DeviceToken::from_bytes(rand::random()))
                .collect(),
        },
    };

    // Offline: the devices leave with their tokens registered (the hub stores what comes).
    let fleet = match fleet {
        Some(f) if config.offline => {
            f.stop(config.timeout).await;
            None
        }
        other => other,
    };

    // Providers.
    let (addr, alpn) = match config.api {
        Api::Binary => (target.gateway.clone(), Vec::new()),
        Api::Http2Token | Api::Http2Certificate => (target.http2.clone(), vec![b"h2".to_vec()]),
    };
    let addr = addr.with_context(|| format!("the target has no {}", pump::describe(config.api)))?;
    let identity = match config.api {
        Api::Http2Token => None,
        _ => Some(tls::ClientIdentity::from_provider(pki.default_provider())?),
    };
    let bearer = match config.api {
        Api::Http2Token => {
            let key = pki
                .auth_keys()
                .first()
                .context("the target has no auth key")?;
            Some(format!(
                "bearer {}",
                jwt::sign(key, Clock::system().now_secs())?
            ))
        }
        _ => None,
    };
    let provider_tls = tls::client_config(ca, identity, alpn)?;
    let draw = if config.progress {
        Draw::Stdout
    } else {
        Draw::Hidden
    };
    let progress = progress::bar(config.notifications, "accepted", "{per_sec}", draw.target());
    let cpu0 = target.probe.cpu_secs();
    let plan = pump::PumpPlan {
        api: config.api,
        addr,
        server_name: "localhost".into(),
        tls: provider_tls,
        bearer,
        connections: config.connections,
        notifications: config.notifications,
        batch: config.batch,
        streams: config.streams,
        pace: config.pace,
        delivered: fleet.is_some(),
        // Stored for offline devices: a day from now.
        expiration: if config.offline {
            (Clock::system().now_secs() + 86_400).to_string()
        } else {
            "0".to_owned()
        },
        timeout: config.timeout,
    };
    let shown0 = seen.shown();
    let pumped = pump::run(plan, tokens, seen.clone(), progress.clone()).await?;
    progress.finish_and_clear();
    let delivered = if fleet.is_some() {
        let deadline = Instant::now() + config.timeout;
        seen.wait_shown(shown0 + pumped.accepted, deadline).await;
        seen.shown() - shown0
    } else {
        0
    };
    let cpu1 = target.probe.cpu_secs();
    let deliver_ns = seen.last_ns().saturating_sub(pumped.start_ns);
    let accept_ns = pumped.accepted_ns.saturating_sub(pumped.start_ns);
    if let Some(f) = fleet {
        f.stop(config.timeout).await;
    }

    let raw_tls = if config.raw_tls_frames > 0 {
        Some(
            measure::raw_tls(
                tls::device_server_config(pki)?,
                device_tls,
                config.raw_tls_frames,
                frame::FRAME_LEN,
                config.timeout,
            )
            .await?,
        )
    } else {
        None
    };

    let per_sec = |n: u64, ns: u64| {
        if ns == 0 {
            0.0
        } else {
            n as f64 * 1e9 / ns as f64
        }
    };
    let cpu_secs = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let h = seen.latency();
    let complete = pumped.accepted == config.notifications
        && (config.devices == 0 || config.offline || delivered == pumped.accepted);
    Ok(Summary {
        target: target.name.clone(),
        api: config.api,
        pace: config.pace,
        connections: config.connections,
        devices: config.devices,
        child_devices: config.devices - local,
        notifications: config.notifications,
        accepted: pumped.accepted,
        rejected: pumped.rejected,
        delivered,
        first_error: pumped.first_error,
        complete,
        accept_secs: accept_ns as f64 / 1e9,
        accepted_per_sec: per_sec(pumped.accepted, accept_ns),
        deliver_secs: deliver_ns as f64 / 1e9,
        delivered_per_sec: if delivered > 0 {
            per_sec(delivered, deliver_ns)
        } else {
            0.0
        },
        latency_us: (!h.is_empty()).then(|| Latency::of(&h)),
        simulator: SimulatorCost {
            source: target.probe.source(),
            cpu_secs,
            cpu_us_per_notification: cpu_secs.map(|s| s * 1e6 / config.notifications as f64),
            rss_kib_before_devices: rss_before,
            rss_kib_after_devices: rss_after,
            kib_per_device: rss_before
                .zip(rss_after)
                .filter(|_| config.devices > 0)
                .map(|(a, b)| (b as f64 - a as f64) / config.devices as f64),
            memory_holds: if beside_sim && local > 0 {
                "both ends (in-process devices share the simulator's process)".into()
            } else {
                "simulator side only".into()
            },
            devices_ready_secs,
        },
        pacing: pumped.pacing,
        raw_tls,
    })
}

impl Summary {
    /// The summary in words, one result a line.
    pub fn report(&self) -> String {
        let mut out = format!(
            "target {}: {:?}, {} connections, {} devices ({} in child processes), {} notifications, pace {:?}\n",
            self.target,
            self.api,
            self.connections,
            self.devices,
            self.child_devices,
            self.notifications,
            self.pace,
        );
        out += &format!(
            "accepted {} ({:.0}/s over {:.3} s), rejected {}",
            self.accepted, self.accepted_per_sec, self.accept_secs, self.rejected,
        );
        if self.devices > 0 {
            out += &format!(
                ", delivered {} ({:.0}/s over {:.3} s)",
                self.delivered, self.delivered_per_sec, self.deliver_secs,
            );
        }
        out += if self.complete {
            "\n"
        } else {
            " — INCOMPLETE\n"
        };
        if let Some(e) = &self.first_error {
            out += &format!("first refusal: {e}\n");
        }
        if let Some(l) = &self.latency_us {
            out += &format!(
                "push -> device latency: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)\n",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
        }
        if let Some(p) = &self.pacing {
            out += &format!(
                "pacing: {} writes, {:.1} notifications per write, behind schedule p50 {} µs, p99 {} µs, max {} µs\n",
                p.writes, p.frames_per_write, p.lag_us.p50, p.lag_us.p99, p.lag_us.max
            );
        }
        let s = &self.simulator;
        if let (Some(cpu), Some(per)) = (s.cpu_secs, s.cpu_us_per_notification) {
            out += &format!("simulator CPU: {cpu:.2} s, {per:.2} µs per notification\n");
        }
        if let Some(kib) = s.kib_per_device {
            out += &format!(
                "simulator memory: {} -> {} KiB: {kib:.1} KiB per device session ({})\n",
                s.rss_kib_before_devices.unwrap_or(0),
                s.rss_kib_after_devices.unwrap_or(0),
                s.memory_holds
            );
        }
        if self.devices > 0 {
            out += &format!(
                "devices connected and registered in {:.2} s\n",
                s.devices_ready_secs
            );
        }
        out += &format!("measured from: {}\n", s.source);
        if let Some(r) = &self.raw_tls {
            out += &format!(
                "raw TLS: {} frames of {} bytes over one connection: {:.0} frames/s, {:.0} MB/s\n",
                r.frames, r.frame_len, r.frames_per_sec, r.mb_per_sec
            );
        }
        out
    }
}
