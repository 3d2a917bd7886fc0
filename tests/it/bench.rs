//! `apns-sim bench` in smoke mode, as a process: its JSON summary says every notification
//! was accepted by an in-process simulator and shown by a device, and the latency histogram
//! holds one sample per notification; a paced binary run is written by the pacer. Counts
//! only; no figure of speed is asserted.

use std::process::Stdio;

use tokio::process::Command;

use crate::common::TIMEOUT;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// Runs `apns-sim bench --smoke --json` with `extra` flags; returns the summary.
async fn bench(extra: &[&str]) -> serde_json::Value {
    let out = tokio::time::timeout(
        TIMEOUT,
        Command::new(BIN)
            .args(["bench", "--smoke", "--json"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench finished in time")
    .expect("bench ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Every notification accepted, none refused, each shown once, one latency sample each.
fn assert_all_delivered(summary: &serde_json::Value, n: u64, devices: u64) {
    assert_eq!(summary["notifications"], n, "{summary}");
    assert_eq!(summary["accepted"], n, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(summary["delivered"], n, "{summary}");
    assert_eq!(summary["devices"], devices, "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["latency_us"]["count"], n, "{summary}");
    assert!(summary["first_error"].is_null(), "{summary}");
}

#[tokio::test]
async fn binary_smoke_run_delivers_every_notification() {
    let summary = bench(&[]).await;
    assert_all_delivered(&summary, 2_000, 20);
    assert_eq!(summary["api"], "binary");
    assert_eq!(summary["target"], "in-process");
    assert_eq!(summary["child_devices"], 0);
    // The smoke mode's raw TLS run carried all its frames.
    assert_eq!(summary["raw_tls"]["frames"], 10_000);
    // Not paced: no pacer record.
    assert!(summary["pacing"].is_null(), "{summary}");
}

#[tokio::test]
async fn binary_paced_run_is_written_by_the_pacer_and_delivers_every_notification() {
    let summary = bench(&["-n", "600", "--rate", "3000", "--raw-tls-frames", "0"]).await;
    assert_all_delivered(&summary, 600, 20);
    assert_eq!(summary["pace"]["rate"], 3000);
    // The pacer wrote every notification: each of the 2 connections at least once, never
    // more writes than notifications, and as many notifications as writes carried.
    let pacing = &summary["pacing"];
    let writes = pacing["writes"].as_u64().expect("pacing.writes");
    assert!((2..=600).contains(&writes), "{summary}");
    let carried = pacing["frames_per_write"].as_f64().unwrap() * writes as f64;
    assert!((carried - 600.0).abs() < 0.5, "{summary}");
    // One schedule-lag sample per round, and a round writes on one connection or more.
    let rounds = pacing["lag_us"]["count"].as_u64().unwrap();
    assert!(rounds >= 1 && rounds <= writes, "{summary}");
}

#[tokio::test]
async fn http2_token_smoke_run_with_child_devices_delivers_every_notification() {
    let summary = bench(&[
        "--api",
        "http2",
        "--child-devices",
        "-n",
        "300",
        "--rate",
        "1000",
        "--raw-tls-frames",
        "0",
    ])
    .await;
    assert_all_delivered(&summary, 300, 20);
    assert_eq!(summary["api"], "http2-token");
    assert_eq!(summary["child_devices"], 20);
    assert_eq!(summary["pace"]["rate"], 1000);
    // HTTP/2 at a fixed rate is not written by the binary pacer.
    assert!(summary["pacing"].is_null(), "{summary}");
    assert!(summary["raw_tls"].is_null());
}
