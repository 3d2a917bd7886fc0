//! `apns-sim device`: runs simulated devices in this process, prints their events as JSON
//! lines on stdout and reads commands on stdin (sent to every device), until `quit` or end
//! of input. Their start (connected and registered, against `--count`) is drawn on a
//! progress bar on stderr when that is a terminal.

use std::path::PathBuf;

use anyhow::{bail, Result};
use apns_sim::client::device::{self, DeviceCommand, DeviceConfig, DeviceEvent};
use apns_sim::client::{files, webhook, CertsDir};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::progress::{DeviceProgress, Draw, FleetProgress};
use apns_sim::protocol::token::AppToken;
use apns_sim::protocol::Environment;
use apns_sim::scenario::MAX_DEVICES;
use clap::Args;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::{Outcome, DEFAULT_CERTS_DIR};

/// Events in flight from all devices to the printer; a slow stdout makes devices wait.
const EVENT_QUEUE: usize = 1024;

/// Options of `apns-sim device`.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// Device endpoint address.
    #[arg(long, default_value = "127.0.0.1:5223", env = "APNS_SIM_DEVICE_SERVER")]
    server: String,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost", env = "APNS_SIM_SERVER_NAME")]
    server_name: String,
    /// Certificate folder (as `serve` or `certs` wrote it); --ca defaults to it.
    #[arg(long, default_value = DEFAULT_CERTS_DIR, env = "APNS_SIM_CERTS")]
    certs: PathBuf,
    /// CA certificate (PEM). Default: ca.pem in --certs.
    #[arg(long, env = "APNS_SIM_CA")]
    ca: Option<PathBuf>,
    /// Serial number (with -1, -2, … appended when --count > 1).
    #[arg(long)]
    serial: String,
    /// Token registered at start (repeatable): APP for the app's ordinary token, APP:KIND
    /// for another kind: voip, complication, fileprovider, location, pushtotalk,
    /// liveactivity-start, liveactivity:ID, widgets, controls.
    #[arg(long = "app", value_name = "APP[:KIND]", default_value = DEFAULT_TOPIC)]
    apps: Vec<AppToken>,
    /// Environment of the device's tokens.
    #[arg(long, default_value = "sandbox")]
    environment: Environment,
    /// Number of devices to run.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// POST each new token as JSON to this http:// URL (the provider's app server).
    #[arg(long, env = "APNS_SIM_REGISTER_URL")]
    register_url: Option<String>,
}

impl DeviceArgs {
    /// Runs the devices until `quit` or end of input.
    pub(crate) async fn run(self) -> Result<Outcome> {
        if let Some(url) = &self.register_url {
            webhook::check_url(url)?;
        }
        if self.count == 0 || self.count > MAX_DEVICES {
            bail!("--count must be 1 to {MAX_DEVICES}");
        }
        let ca = self
            .ca
            .clone()
            .unwrap_or_else(|| CertsDir(self.certs.clone()).ca());
        let tls = files::trust_config(&ca, Vec::new())?;
        let stop = CancellationToken::new();
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<DeviceEvent>(EVENT_QUEUE);
        let fleet = FleetProgress::new(self.count, Draw::Stderr);
        let mut commands = Vec::new();
        let mut tasks = Vec::new();
        for i in 1..=self.count {
            let serial = if self.count == 1 {
                self.serial.clone()
            } else {
                format!("{}-{i}", self.serial)
            };
            // Many devices of one process leave from several loopback addresses, as the load
            // generator's own do (the kernel's port search stays cheap); one device leaves
            // from wherever the system routes it.
            let source = (self.count > 1)
                .then(|| device::loopback_source(&self.server, i))
                .flatten();
            let mut handle = device::spawn_from(
                DeviceConfig {
                    server: self.server.clone(),
                    server_name: self.server_name.clone(),
                    tls: tls.clone(),
                    serial,
                    environment: self.environment,
                    apps: self.apps.clone(),
                    register_url: self.register_url.clone(),
                },
                stop.clone(),
                source,
            );
            commands.push(handle.commands);
            tasks.push(handle.task);
            let tx = events_tx.clone();
            let mut progress =
                DeviceProgress::new(fleet.clone(), self.apps.iter().map(AppToken::to_string));
            tokio::spawn(async move {
                while let Some(e) = handle.events.recv().await {
                    match &e {
                        DeviceEvent::Online { .. } => progress.online(),
                        DeviceEvent::Registered { app, kind, .. } => {
                            progress
                                .registered(&AppToken::new(app.clone(), kind.clone()).to_string());
                        }
                        _ => {}
                    }
                    if tx.send(e).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(events_tx);

        // The printer's clone keeps the bar until the devices' events end; its lines are
        // printed with the bar cleared, so a terminal showing both stays legible.
        let shown = fleet.clone();
        drop(fleet);
        let printer = tokio::spawn(async move {
            while let Some(e) = events_rx.recv().await {
                match serde_json::to_string(&e) {
                    Ok(line) => shown.suspend(|| println!("{line}")),
                    Err(err) => eprintln!("cannot print event: {err}"),
                }
            }
        });
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(l)) => l,
                // End of input: quit, as if told to.
                Ok(None) | Err(_) => "quit".to_owned(),
            };
            if line.trim().is_empty() {
                continue;
            }
            match line.parse::<DeviceCommand>() {
                Ok(cmd) => {
                    let quit = cmd == DeviceCommand::Quit;
                    for c in &commands {
                        let _ = c.send(cmd.clone()).await;
                    }
                    if quit {
                        break;
                    }
                }
                Err(error) => {
                    let event = DeviceEvent::BadCommand {
                        serial: self.serial.clone(),
                        error: error.to_string(),
                    };
                    println!("{}", serde_json::to_string(&event)?);
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(commands);
        let _ = printer.await;
        Ok(Outcome::Done)
    }
}
