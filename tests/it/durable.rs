//! Durable state and registration bounds (issue 11).
//!
//! The process tests run the built binary: `serve --state DIR`, a device registers, its app
//! is uninstalled (410 with a timestamp, a feedback tuple), a notification is stored for an
//! offline device; the process is killed (SIGKILL, or SIGTERM for a clean stop) and started
//! again on the same directory, and everything must still be there: the same token routes,
//! the 410 carries the same timestamp, feedback returns the tuple once, and the stored
//! notification reaches its device when it comes back. A state file of a newer version is
//! refused and a corrupt one reported, each naming the file, and a second `serve` on a state
//! directory another one holds is refused naming it and the owner's pid. The bound test: one
//! device reinstalling in a loop is held to its bound while another still registers.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{SystemTime, UNIX_EPOCH};

use apns_sim::client::device::{self, DeviceCommand, DeviceConfig, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::{Http2Client, Http2Request};
use apns_sim::client::{read_feedback, CertsDir};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::token::{AppToken, DeviceToken};
use apns_sim::protocol::Environment;
use apns_sim::settings::{RateLimit, Settings};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::{self, next_device_event, TIMEOUT};
use crate::process::apns_sim;

/// `apns-sim serve` as a process, on ports of its own choosing (also used by the SIGTERM
/// test in `hardening`).
pub(crate) struct Serve {
    pub(crate) child: Child,
    /// The binary gateway, HTTP/2 API, feedback service and device endpoint addresses from
    /// its banner.
    pub(crate) gateway: String,
    pub(crate) http2: String,
    pub(crate) feedback: String,
    pub(crate) devices: String,
    /// Its log lines (stderr), as they come.
    log: mpsc::UnboundedReceiver<String>,
}

/// `serve --state STATE` in `dir` (certificates in `dir/certs`), no demo devices, every
/// port 0 but the device endpoint's, `device_port` (0: any). Returns once the banner has
/// named every endpoint.
async fn serve(dir: &Path, state: &Path, device_port: &str) -> Serve {
    serve_with(dir, state, device_port, &[]).await
}

/// [`serve`] with `extra` flags.
pub(crate) async fn serve_with(
    dir: &Path,
    state: &Path,
    device_port: &str,
    extra: &[&str],
) -> Serve {
    let mut child = apns_sim(dir)
        .env("RUST_LOG", "info")
        .args(["serve", "--devices", "0", "--gateway-port", "0"])
        .args(["--feedback-port", "0", "--http2-port", "0"])
        .args([
            "--device-port",
            device_port,
            "--control-port",
            "0",
            "--state",
        ])
        .arg(state)
        .args(extra)
        .spawn()
        .expect("serve started");
    let (tx, log) = mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = async {
        let (mut gateway, mut http2, mut feedback, mut devices) = (None, None, None, None);
        while let Some(line) = stdout.next_line().await.expect("stdout") {
            let last = line
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            let line = line.trim_start();
            if line.starts_with("binary gateway") {
                gateway = Some(last);
            } else if line.starts_with("HTTP/2 API") {
                http2 = Some(last);
            } else if line.starts_with("feedback service") {
                feedback = Some(last);
            } else if line.starts_with("device endpoint") {
                devices = Some(last);
            } else if line.starts_with("control API") {
                break;
            }
        }
        (gateway, http2, feedback, devices)
    };
    let (gateway, http2, feedback, devices) = tokio::time::timeout(TIMEOUT, banner)
        .await
        .expect("banner in time");
    // Keep reading stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    Serve {
        child,
        gateway: gateway.expect("gateway address"),
        http2: http2.expect("HTTP/2 address"),
        feedback: feedback.expect("feedback address"),
        devices: devices.expect("device address"),
        log,
    }
}

impl Serve {
    /// Waits for a log line satisfying `pred`.
    pub(crate) async fn log_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                match self.log.recv().await {
                    Some(line) if pred(&line) => return line,
                    Some(_) => {}
                    None => panic!("serve exited while a test waited for a log line"),
                }
            }
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .expect("log line in time")
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits for the process to end.
    pub(crate) async fn signal(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        // The shell's own `kill`, so no extra package is needed.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("exited in time")
            .unwrap()
    }
}

/// TLS from the certificate folder `serve` minted in `dir`: the default provider
/// certificate (with `alpn`), or only trust for devices.
pub(crate) fn files(dir: &Path) -> apns_sim::client::ProviderTlsFiles {
    CertsDir(dir.join("certs")).provider_files("localhost")
}

/// A device with the default app, on `sim`; returns it and its token once registered.
pub(crate) async fn device(
    sim: &Serve,
    dir: &Path,
    serial: &str,
    stop: &CancellationToken,
) -> (DeviceHandle, DeviceToken) {
    let mut handle = device::spawn(
        DeviceConfig {
            server: sim.devices.clone(),
            server_name: "localhost".into(),
            tls: files(dir).trust_only_config(Vec::new()).unwrap(),
            serial: serial.into(),
            environment: Environment::Sandbox,
            apps: vec![AppToken::from(DEFAULT_TOPIC)],
            register_url: None,
        },
        stop.clone(),
    );
    let event =
        next_device_event(&mut handle, |e| matches!(e, DeviceEvent::Registered { .. })).await;
    let DeviceEvent::Registered { token, .. } = event else {
        unreachable!("matched above")
    };
    (handle, token)
}

/// An HTTP/2 connection to `sim` with the default provider certificate.
pub(crate) async fn http2(sim: &Serve, dir: &Path) -> Http2Client {
    let tls = files(dir).client_config(vec![b"h2".to_vec()]).unwrap();
    Http2Client::connect(&sim.http2, "localhost", tls)
        .await
        .expect("connect to the HTTP/2 API")
}

/// An alert for the default topic, expiring in an hour (so stored for an offline device).
pub(crate) fn push(token: &DeviceToken, text: &str) -> Http2Request {
    let in_an_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Http2Request::push(
        &token.to_hex(),
        format!(r#"{{"aps":{{"alert":"{text}"}}}}"#),
    )
    .header("apns-topic", DEFAULT_TOPIC)
    .header("apns-expiration", in_an_hour.to_string())
}

/// The text of a shown notification's alert.
fn alert(event: &DeviceEvent) -> String {
    match event {
        DeviceEvent::Notification { payload, .. } => payload["aps"]["alert"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        other => panic!("not a notification: {other:?}"),
    }
}

/// A device `serial` on `sim` whose app is uninstalled, pushed to over `h2` until the hub
/// answers 410 (its report of the first push comes first). Returns its token and the 410's
/// timestamp (ms); the device is stopped.
pub(crate) async fn uninstalled(
    sim: &Serve,
    dir: &Path,
    h2: &mut Http2Client,
    serial: &str,
) -> (DeviceToken, u64) {
    let stop = CancellationToken::new();
    let (mut handle, token) = device(sim, dir, serial, &stop).await;
    common::command(
        &handle,
        DeviceCommand::Uninstall(AppToken::from(DEFAULT_TOPIC)),
    )
    .await;
    next_device_event(&mut handle, |e| {
        matches!(e, DeviceEvent::Uninstalled { .. })
    })
    .await;
    let mut unregistered_at = None;
    for _ in 0..20 {
        let answer = h2.send(&push(&token, "to a gone app")).await.unwrap();
        if answer.status == 410 {
            unregistered_at = answer.timestamp;
            break;
        }
        // Delivered before the device's report reached the hub: it reports this one too.
        assert_eq!(answer.status, 200, "{answer:?}");
        next_device_event(&mut handle, |e| {
            matches!(e, DeviceEvent::NotInstalled { .. })
        })
        .await;
    }
    stop.cancel();
    (token, unregistered_at.expect("a 410 with a timestamp"))
}

/// A device `serial` on `sim` that registers and goes offline (`stop` ends it), and a
/// notification stored for it (HTTP/2 200: durable). Returns the device, its token and the
/// stored notification's apns-id; its alert is "kept for you".
pub(crate) async fn stored_for(
    sim: &mut Serve,
    dir: &Path,
    h2: &mut Http2Client,
    serial: &str,
    stop: &CancellationToken,
) -> (DeviceHandle, DeviceToken, uuid::Uuid) {
    let (mut handle, token) = device(sim, dir, serial, stop).await;
    common::command(&handle, DeviceCommand::Offline).await;
    next_device_event(&mut handle, |e| matches!(e, DeviceEvent::Offline { .. })).await;
    sim.log_line(|l| l.contains("device offline") && l.contains(serial))
        .await;
    let apns_id = uuid::Uuid::new_v4();
    let stored = push(&token, "kept for you").header("apns-id", apns_id.to_string());
    let answer = h2.send(&stored).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    (handle, token, apns_id)
}

/// Every durable thing, before and after the process is stopped with `signal`.
async fn state_survives(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("kept-state");
    let mut sim = serve(dir.path(), &state, "0").await;
    let mut h2 = http2(&sim, dir.path()).await;
    // The restarted simulator listens for devices where this one did, so that a device
    // that went offline comes back to it knowing its token, as a phone would.
    let device_port = sim.devices.rsplit(':').next().unwrap().to_owned();

    // DUR-1's app is uninstalled: a push is reported as not installed, then answered 410.
    let (gone, unregistered_at) = uninstalled(&sim, dir.path(), &mut h2, "DUR-1").await;

    // DUR-2 goes offline, and a notification is stored for it.
    let away_stop = CancellationToken::new();
    let (mut away_device, away, apns_id) =
        stored_for(&mut sim, dir.path(), &mut h2, "DUR-2", &away_stop).await;

    // The 200 was durable: the process may die now.
    let status = sim.signal(signal).await;
    if signal == "TERM" {
        assert!(status.success(), "a clean stop: {status:?}");
    }

    let sim = serve(dir.path(), &state, &device_port).await;
    let mut h2 = http2(&sim, dir.path()).await;
    let answer = h2.send(&push(&gone, "still gone")).await.unwrap();
    assert_eq!(
        (answer.status, answer.timestamp),
        (410, Some(unregistered_at)),
        "{answer:?}"
    );
    let feedback_tls = files(dir.path()).client_config(Vec::new()).unwrap();
    let tuples = read_feedback(&sim.feedback, "localhost", feedback_tls.clone(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(tuples.len(), 1, "{tuples:?}");
    assert_eq!(tuples[0].token, gone);
    assert_eq!(u64::from(tuples[0].timestamp), unregistered_at / 1000);
    let again = read_feedback(&sim.feedback, "localhost", feedback_tls, TIMEOUT)
        .await
        .unwrap();
    assert!(again.is_empty(), "read once: {again:?}");

    // DUR-2 comes back: the stored notification, and the same token when it registers.
    common::command(&away_device, DeviceCommand::Online).await;
    let (mut shown, mut registered) = (None, None);
    while shown.is_none() || registered.is_none() {
        let event = next_device_event(&mut away_device, |e| {
            matches!(
                e,
                DeviceEvent::Notification { .. }
                    | DeviceEvent::Registered { .. }
                    | DeviceEvent::NotInstalled { .. }
            )
        })
        .await;
        match event {
            DeviceEvent::Registered { token, .. } => registered = Some(token),
            DeviceEvent::NotInstalled { .. } => panic!("{event:?}"),
            notification => shown = Some(notification),
        }
    }
    assert_eq!(
        registered,
        Some(away),
        "the same serial, app, environment and kind: the same token"
    );
    let shown = shown.unwrap();
    assert_eq!(alert(&shown), "kept for you");
    assert!(
        matches!(&shown, DeviceEvent::Notification { apns_id: id, .. } if *id == apns_id),
        "{shown:?}"
    );
    let mut back = away_device;
    // And the token routes.
    let answer = h2.send(&push(&away, "live")).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let shown =
        next_device_event(&mut back, |e| matches!(e, DeviceEvent::Notification { .. })).await;
    assert_eq!(alert(&shown), "live");
    away_stop.cancel();
    assert!(sim.signal("TERM").await.success());
}

#[tokio::test]
async fn state_survives_kill_9() {
    state_survives("KILL").await;
}

#[tokio::test]
async fn state_survives_a_clean_restart() {
    state_survives("TERM").await;
}

/// Runs `serve --state STATE` expecting it to refuse to start; returns its stderr.
async fn refused(dir: &Path, state: &Path) -> String {
    let out = tokio::time::timeout(
        TIMEOUT,
        apns_sim(dir)
            .args(["serve", "--devices", "0", "--gateway-port", "0"])
            .args(["--feedback-port", "0", "--http2-port", "0"])
            .args(["--device-port", "0", "--control-port", "0", "--state"])
            .arg(state)
            .output(),
    )
    .await
    .expect("exited in time")
    .unwrap();
    assert!(!out.status.success(), "started on a state it must refuse");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_newer_state_is_refused_and_a_corrupt_one_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join(apns_sim::store::STATE_FILE);
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", apns_sim::store::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = refused(dir.path(), &state).await;
    assert!(err.contains("newer apns-sim"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");

    let garbage = b"not a database: a state file overwritten by something else".repeat(100);
    std::fs::write(&file, &garbage).unwrap();
    let err = refused(dir.path(), &state).await;
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "never silently reset"
    );
}

#[tokio::test]
async fn a_device_reinstalling_in_a_loop_is_held_to_its_bound_and_others_still_register() {
    const BOUND: u32 = 5;
    let t = common::start_with(|config| {
        config.settings = Settings {
            device_token_rate: RateLimit {
                pushes: BOUND,
                per: std::time::Duration::from_secs(3600),
            },
            ..Settings::default()
        };
    })
    .await;
    let (mut looping, _) = t
        .device("LOOP-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    // The first registration took one; each reinstall asks for another.
    let mut minted = 1;
    let reason = loop {
        common::command(
            &looping,
            DeviceCommand::Install(AppToken::from(DEFAULT_TOPIC)),
        )
        .await;
        let event = next_device_event(&mut looping, |e| {
            matches!(
                e,
                DeviceEvent::Registered { .. } | DeviceEvent::Disconnected { .. }
            )
        })
        .await;
        match event {
            DeviceEvent::Registered { .. } => minted += 1,
            DeviceEvent::Disconnected { reason, .. } => break reason,
            _ => unreachable!("matched above"),
        }
        assert!(minted <= BOUND, "held to {BOUND}");
    };
    assert_eq!(minted, BOUND);
    assert!(reason.contains("device_token_rate"), "{reason}");
    // However many reinstalls, the device holds one current token.
    let held: Vec<_> = t
        .sim
        .hub()
        .devices(10)
        .into_iter()
        .filter(|d| d.serial == "LOOP-1")
        .flat_map(|d| d.tokens)
        .collect();
    assert!(held.len() <= 1, "{held:?}");
    // Another device is not affected.
    let (_other, tokens) = t
        .device("OTHER-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    assert_eq!(tokens.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_second_serve_on_the_same_state_directory_is_refused_naming_it_and_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("shared-state");
    let first = serve(dir.path(), &state, "0").await;
    let owner = first.child.id().expect("running");
    let (code, _, err) = crate::process::run_code(
        apns_sim(dir.path())
            .args(["serve", "--devices", "0", "--gateway-port", "0"])
            .args(["--feedback-port", "0", "--http2-port", "0"])
            .args(["--device-port", "0", "--control-port", "0", "--state"])
            .arg(&state),
    )
    .await;
    assert_eq!(code, Some(2), "a start failure (README, exit codes): {err}");
    assert!(err.contains("in use by another apns-sim"), "{err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {owner}")), "{err}");
    // The first one still serves, and once it is gone the directory can be taken again.
    let mut h2 = http2(&first, dir.path()).await;
    let answer = h2
        .send(&push(&DeviceToken::new(&[7; 32]).unwrap(), "to nobody"))
        .await
        .unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(first.signal("TERM").await.success());
    // (Its banner is all this checks: killed, as a SIGTERM this early could come before
    // its handler is installed.)
    let again = serve(dir.path(), &state, "0").await;
    again.signal("KILL").await;
}
