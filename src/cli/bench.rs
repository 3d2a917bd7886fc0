//! `apns-sim bench`: parses the load generator's flags into a
//! [`apns_sim::loadgen::BenchConfig`], runs it, and prints the summary (words, or JSON with
//! `--json`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use apns_sim::loadgen::{self, Api, BenchConfig, Pace, Target, TargetInfo};
use clap::{Args, ValueEnum};

use super::Outcome;

/// The provider API flag.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ApiArg {
    /// The binary gateway (command 2, mutual TLS).
    Binary,
    /// HTTP/2 with a provider token (JWT) signed with the target's auth key.
    Http2,
    /// HTTP/2 with the provider certificate.
    Http2Cert,
}

/// Options of `apns-sim bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Measure a running target described by this file (JSON: name, pid, gateway, http2,
    /// devices, certs), as the anchors write it; default: a simulator in this process.
    #[arg(long, value_name = "FILE", conflicts_with = "serve")]
    target: Option<PathBuf>,
    /// Start `apns-sim serve` as a child process with RUST_LOG=LEVEL and measure it (its
    /// CPU and memory from /proc).
    #[arg(long, value_name = "LEVEL")]
    serve: Option<String>,
    /// Run the `--serve` child with durable state (`--state`, a fresh folder per run)
    /// instead of `--in-memory`, to measure what durability costs.
    #[arg(long, requires = "serve")]
    durable: bool,
    /// Provider API.
    #[arg(long, value_enum, default_value = "binary")]
    api: ApiArg,
    /// Provider connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Simulated devices to hold (0: send to random tokens and count acceptance only).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// The devices register, then go offline before the first push: every notification is
    /// stored for them (HTTP/2 only: the binary load frames have expiry 0, never stored),
    /// and only acceptance is measured (the load that writes to disk with `--durable`).
    #[arg(long)]
    offline: bool,
    /// Notifications to send.
    #[arg(short = 'n', long, default_value_t = 200_000)]
    notifications: u64,
    /// Send this many notifications per second (default: as fast as the window allows). On
    /// the binary API a pacer thread of its own writes what is due about every 100 µs, and
    /// the summary says how far behind the schedule it fell.
    #[arg(long, conflicts_with = "window")]
    rate: Option<u64>,
    /// At most this many notifications sent and not yet shown by a device (default: 4 per
    /// device); 0 sends with no window.
    #[arg(long)]
    window: Option<u64>,
    /// Command-2 frames per binary write (with --rate: the most per connection and round).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Open streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Hold every device in child `apns-sim device` processes (memory then holds only the
    /// simulator's side of each session).
    #[arg(long)]
    child_devices: bool,
    /// Frames through the raw TLS loopback pipe afterwards (0 skips it).
    #[arg(long, default_value_t = 4_000_000)]
    raw_tls_frames: u64,
    /// Deadline of each phase, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// A quick run that checks everything works: 2,000 notifications to 20 devices, 2
    /// connections, 10,000 raw TLS frames (flags given explicitly still win).
    #[arg(long)]
    smoke: bool,
    /// Print the summary as JSON (one object) instead of words.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    /// Applies `--smoke`'s small values to the flags not typed on the command line.
    pub(crate) fn check(
        &mut self,
        _cli: &mut clap::Command,
        matches: &clap::ArgMatches,
    ) -> Result<(), clap::Error> {
        if self.smoke {
            let given = |id: &str| super::given_on_command_line(matches, id);
            if !given("devices") {
                self.devices = 20;
            }
            if !given("connections") {
                self.connections = 2;
            }
            if !given("notifications") {
                self.notifications = 2_000;
            }
            if !given("raw_tls_frames") {
                self.raw_tls_frames = 10_000;
            }
        }
        Ok(())
    }

    /// Runs the benchmark and prints its summary.
    pub(crate) async fn run(self) -> Result<Outcome> {
        let devices = self.devices;
        if self.offline && matches!(self.api, ApiArg::Binary) {
            anyhow::bail!(
                "--offline needs --api http2 or http2-cert: the binary load frames have \
                 expiry 0, which is never stored"
            );
        }
        let target = match (&self.target, &self.serve) {
            (Some(file), _) => Target::Running(TargetInfo::read(file)?),
            (None, Some(log)) => Target::Serve {
                log: log.clone(),
                durable: self.durable,
            },
            (None, None) => Target::InProcess,
        };
        let pace = match (self.rate, self.window) {
            (Some(r), _) => Pace::Rate(r),
            (None, Some(0)) => Pace::Full,
            (None, Some(w)) => Pace::Window(w),
            (None, None) if devices == 0 || self.offline => Pace::Full,
            (None, None) => Pace::Window(devices as u64 * 4),
        };
        let config = BenchConfig {
            target,
            api: match self.api {
                ApiArg::Binary => Api::Binary,
                ApiArg::Http2 => Api::Http2Token,
                ApiArg::Http2Cert => Api::Http2Certificate,
            },
            connections: self.connections,
            devices,
            offline: self.offline,
            notifications: self.notifications,
            pace,
            batch: self.batch,
            streams: self.streams,
            child_devices: self.child_devices,
            raw_tls_frames: self.raw_tls_frames,
            timeout: Duration::from_secs(self.timeout.max(1)),
            exe: Some(std::env::current_exe().context("finding the apns-sim executable")?),
            progress: !self.json,
        };
        let summary = loadgen::run(config).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{}", summary.report());
        }
        Ok(if summary.complete {
            Outcome::Done
        } else {
            Outcome::Failed
        })
    }
}
