//! `push` and `feedback` with `--output json`, through the binary: one JSON document with
//! each notification's answer (binary: identifier, token, outcome, the error response;
//! HTTP/2: token, status, reason, apns-id) or the feedback tuples, and the exit code of the
//! text form.

use crate::common;
use crate::process::{apns_sim, run_code};

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
