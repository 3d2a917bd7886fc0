//! The anchors of issue 10: two minimal servers that apns-sim's figures are measured
//! against, in the same session and under the same load (`apns-sim bench --target FILE`).
//!
//! - `forwarder`: the minimal coalescing forwarder — a binary gateway that walks each
//!   command-2 frame to its token and forwards it to the device holding that token, over
//!   the simulator's own device protocol (so the same device client and the same provider
//!   pump drive both), with none of the simulator's rules;
//! - `h2`: the bare HTTP/2 server — hyper 1.x `server::conn::http2` over tokio-rustls,
//!   answering `POST /3/device/<token>` with 200 and an `apns-id` after reading the body.
//!
//! Both use the project's PKI (a certificate folder in the layout `apns-sim serve` writes) and
//! write a target file (JSON: pid, addresses, certificate folder) for the load generator,
//! then run until killed or Ctrl-C.
//!
//! ```sh
//! cargo run --release --example anchors -- forwarder --certs /tmp/fwd --info /tmp/fwd.json
//! apns-sim bench --target /tmp/fwd.json --devices 1000 --connections 4 --window 4000
//! ```

mod forwarder;
mod h2;

use std::path::PathBuf;

use anyhow::{Context, Result};
use apns_sim::loadgen::TargetInfo;
use apns_sim::pki::Pki;
use clap::{Parser, ValueEnum};

/// Which anchor to run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    /// The minimal coalescing forwarder (binary gateway + device endpoint).
    Forwarder,
    /// The bare hyper HTTP/2 server.
    H2,
}

/// The anchors' command line.
#[derive(Debug, Parser)]
#[command(about = "The anchors apns-sim is measured against (issue 10)")]
struct Args {
    /// Which anchor.
    which: Which,
    /// Certificate folder (created with a fresh PKI if missing).
    #[arg(long)]
    certs: PathBuf,
    /// Where to write the target file for `apns-sim bench --target`.
    #[arg(long)]
    info: PathBuf,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let pki = Pki::load_or_create(&args.certs)
        .with_context(|| format!("certificates in {}", args.certs.display()))?;
    let mut info = TargetInfo {
        name: String::new(),
        pid: Some(std::process::id()),
        gateway: None,
        http2: None,
        devices: None,
        certs: args.certs.clone(),
        tokens: None,
    };
    let served = match args.which {
        Which::Forwarder => {
            let fwd = forwarder::Forwarder::bind(&pki).await?;
            info.name = "forwarder".into();
            info.gateway = Some(fwd.gateway.to_string());
            info.devices = Some(fwd.devices.to_string());
            tokio::spawn(fwd.serve())
        }
        Which::H2 => {
            let server = h2::BareH2::bind(&pki).await?;
            info.name = "h2".into();
            info.http2 = Some(server.addr.to_string());
            tokio::spawn(server.serve())
        }
    };
    info.write(&args.info)?;
    println!("{}", serde_json::to_string(&info)?);
    tokio::select! {
        r = served => r??,
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
