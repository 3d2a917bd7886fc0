//! `push` and `feedback` with `--output json`, through the binary: one JSON document with
//! each notification's answer (binary: identifier, token, outcome, the error response;
//! HTTP/2: token, status, reason, apns-id) or the feedback tuples, and the exit code of the
//! text form. And the progress bars kept off a stream that is not a terminal:
//! `device --count 3` with a piped stderr writes no bar, no escape code and no summary.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common;
use crate::process::{apns_sim, line_where, run_code};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

#[tokio::test]
async fn push_and_feedback_answer_in_json() {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    t.pki.write(&dir.path().join("certs")).unwrap();
    let addrs = *t.sim.addrs();
    let (bad, worse) = ("ab".repeat(32), "cd".repeat(32));

    // Binary: the first of two unknown tokens is refused, the one after it dropped.
    let (code, out, err) = run_code(apns_sim(dir.path()).args([
        "push",
        "--output",
        "json",
        "--gateway",
        &addrs.gateway.to_string(),
        "--id",
        "9",
        "--token",
        &bad,
        "--token",
        &worse,
    ]))
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let doc = json(&out);
    assert_eq!(doc["api"], "binary");
    assert_eq!(doc["answer"], "error_response");
    assert_eq!(doc["error"]["status"], 8);
    assert_eq!(doc["error"]["reason"], "Invalid token");
    assert_eq!(doc["error"]["identifier"], 9);
    let n = &doc["notifications"];
    assert_eq!(n[0]["identifier"], 9);
    assert_eq!(n[0]["token"], bad.as_str());
    assert_eq!(n[0]["outcome"], "refused");
    assert_eq!(n[1]["identifier"], 10);
    assert_eq!(n[1]["outcome"], "dropped");

    // HTTP/2: each token's status, reason and apns-id.
    let (code, out, err) = run_code(apns_sim(dir.path()).args([
        "push",
        "--http2",
        "--output",
        "json",
        "--api",
        &addrs.http2.to_string(),
        "--token",
        &bad,
    ]))
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let doc = json(&out);
    assert_eq!(doc["api"], "http2");
    let answer = &doc["notifications"][0];
    assert_eq!(answer["token"], bad.as_str());
    assert_eq!(answer["status"], 400);
    assert_eq!(answer["reason"], "BadDeviceToken");
    assert!(
        answer["apns_id"].as_str().is_some_and(|id| id.len() == 36),
        "{answer}"
    );

    // Feedback: no tuples is an empty list, not a sentence.
    let (code, out, err) = run_code(apns_sim(dir.path()).args([
        "feedback",
        "--output",
        "json",
        "--feedback",
        &addrs.feedback.to_string(),
    ]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out), serde_json::json!({"tuples": []}));
    t.stop().await;
}

/// `device --count 3` draws its fleet's progress bar on stderr only when stderr is a
/// terminal: piped, it gets no bar, no escape code and no summary, while the three devices
/// register as ever (stdout's JSON lines are unchanged).
#[tokio::test]
async fn device_count_writes_no_progress_to_a_piped_stderr() {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    t.pki.write(&dir.path().join("certs")).unwrap();
    let devices = t.sim.addrs().devices.to_string();
    let mut child = apns_sim(dir.path())
        .args([
            "device", "--server", &devices, "--serial", "BAR", "--count", "3",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("device started");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut registered = std::collections::BTreeSet::new();
    while registered.len() < 3 {
        let line = line_where(&mut lines, |l| l.contains("\"registered\"")).await;
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        registered.insert(event["serial"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        registered.into_iter().collect::<Vec<_>>(),
        ["BAR-1", "BAR-2", "BAR-3"]
    );
    stdin.write_all(b"quit\n").await.unwrap();
    drop(stdin);
    let mut err = String::new();
    tokio::time::timeout(common::TIMEOUT, stderr.read_to_string(&mut err))
        .await
        .expect("stderr closed in time")
        .unwrap();
    let status = tokio::time::timeout(common::TIMEOUT, child.wait())
        .await
        .expect("device ended in time")
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(
        !err.contains('\x1b'),
        "escape codes on a piped stderr: {err:?}"
    );
    assert!(
        !err.contains('\r'),
        "a redrawn line on a piped stderr: {err:?}"
    );
    assert!(
        !err.contains("registered"),
        "a bar on a piped stderr: {err:?}"
    );
    assert!(
        !err.contains("fleet of"),
        "a summary on a piped stderr: {err:?}"
    );
    t.stop().await;
}
