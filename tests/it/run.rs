//! `apns-sim run -- COMMAND…` through the real binary (Linux; the tests run as root, and
//! `--user-namespace always` takes the unprivileged path all the same): COMMAND's exit code
//! passed back (its own, 128 + N for a signal, 127 and 126 when it cannot start); the
//! `APNS_SIM_*` variables, Apple's host names resolving to 127.0.0.1 inside and not
//! outside, the simulator's CA in the system bundle and the trust-store variables; Apple's
//! second HTTP/2 port (2197) reaching the API; and a `serve` flag that does not apply
//! refused by name. Each run has namespaces of its own, so they run in parallel on Apple's
//! fixed ports. The unmodified third-party providers are interop/run_unmodified.sh's.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// Far more than a run takes (well under a second here): only a hang trips it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `apns-sim run ARGS -- sh -c SCRIPT` with its certificate folder in `dir`.
async fn run(dir: &Path, args: &[&str], script: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg("--certs")
        .arg(dir.join("certs"))
        .args(args)
        .arg("--")
        .args(["sh", "-c", script])
        .current_dir(dir)
        .kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("apns-sim run finished")
        .expect("apns-sim run started")
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn commands_exit_code_is_passed_back() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("provider.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let cases = [
        ("exit 0", 0),
        ("exit 7", 7),
        // 128 + SIGTERM, as a shell reports it.
        ("kill -TERM $$", 143),
    ];
    for (script, want) in cases {
        let out = run(dir.path(), &[], script).await;
        assert_eq!(out.status.code(), Some(want), "{script}: {}", text(&out));
    }
    for (program, want) in [
        ("/nonexistent/provider".to_owned(), 127),
        (not_executable.display().to_string(), 126),
    ] {
        let out = Command::new(BIN)
            .arg("run")
            .arg("--certs")
            .arg(dir.path().join("certs"))
            .arg("--")
            .arg(&program)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(want), "{program}: {}", text(&out));
    }
}

/// What COMMAND checks about its world: the variables, the names, the trust store.
const ENVIRONMENT_SCRIPT: &str = r#"
set -e
for v in APNS_SIM_TOKEN APNS_SIM_CERT_FILE APNS_SIM_KEY_FILE APNS_SIM_CA_FILE \
         APNS_SIM_AUTH_KEY_FILE APNS_SIM_KEY_ID APNS_SIM_TEAM_ID APNS_SIM_GATEWAY \
         APNS_SIM_FEEDBACK APNS_SIM_HTTP2 APNS_SIM_CONTROL_URL APNS_SIM_INFO \
         SSL_CERT_FILE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS CURL_CA_BUNDLE; do
  eval "value=\${$v:-}"
  [ -n "$value" ] || { echo "unset: $v"; exit 10; }
done
for f in "$APNS_SIM_CERT_FILE" "$APNS_SIM_KEY_FILE" "$APNS_SIM_CA_FILE" "$APNS_SIM_INFO" \
         "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS"; do
  [ -r "$f" ] || { echo "unreadable: $f"; exit 11; }
done
grep -q "\"token\": \"$APNS_SIM_TOKEN\"" "$APNS_SIM_INFO" || exit 12
echo "gateway $APNS_SIM_GATEWAY http2 $APNS_SIM_HTTP2 feedback $APNS_SIM_FEEDBACK"
for h in api.push.apple.com api.sandbox.push.apple.com api.development.push.apple.com \
         gateway.push.apple.com gateway.sandbox.push.apple.com feedback.push.apple.com \
         feedback.sandbox.push.apple.com api-manage-broadcast.sandbox.push.apple.com; do
  getent hosts "$h"
done
# The CA's base64 body (its second line) is in the system bundle and in SSL_CERT_FILE.
line="$(sed -n 2p "$APNS_SIM_CA_FILE")"
grep -qF "$line" /etc/ssl/certs/ca-certificates.crt || exit 13
grep -qF "$line" "$SSL_CERT_FILE" || exit 14
grep -qF "$line" "$NODE_EXTRA_CA_CERTS" || exit 15
echo "ca trusted"
"#;

#[tokio::test]
async fn command_finds_the_simulator_under_apples_names_and_trusts_its_ca() {
    let outside = std::fs::read_to_string("/etc/hosts").unwrap();
    for mode in ["never", "always"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &["--user-namespace", mode], ENVIRONMENT_SCRIPT).await;
        let seen = text(&out);
        assert_eq!(out.status.code(), Some(0), "{mode}: {seen}");
        assert!(
            seen.contains("gateway 127.0.0.1:2195 http2 127.0.0.1:443 feedback 127.0.0.1:2196"),
            "{mode}: {seen}"
        );
        let resolved = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("127.0.0.1") && l.contains("apple.com"))
            .count();
        assert_eq!(resolved, 8, "{mode}: {seen}");
        assert!(seen.contains("ca trusted"), "{mode}: {seen}");
        let user = if mode == "always" { "user, " } else { "" };
        assert!(
            seen.contains(&format!("in {user}network and mount namespaces")),
            "{mode}: {seen}"
        );
    }
    // Nothing leaked out of the mount namespace.
    assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), outside);
}

#[tokio::test]
async fn apples_second_http2_port_reaches_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"{BIN} push --http2 --api api.sandbox.push.apple.com:2197 \
            --server-name api.sandbox.push.apple.com --token "$APNS_SIM_TOKEN" \
            --cert "$APNS_SIM_CERT_FILE" --key "$APNS_SIM_KEY_FILE" --ca "$APNS_SIM_CA_FILE" \
            --payload '{{"aps":{{"alert":"via 2197"}}}}'"#
    );
    let out = run(dir.path(), &[], &script).await;
    let seen = text(&out);
    assert_eq!(out.status.code(), Some(0), "{seen}");
    // `push` prints `TOKEN: STATUS apns-id=…` for each answer.
    assert!(seen.contains(": 200 apns-id="), "{seen}");
}

#[tokio::test]
async fn serve_flags_that_do_not_apply_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--gateway-port", "2295"], "exit 0").await;
    let seen = text(&out);
    assert_eq!(out.status.code(), Some(2), "{seen}");
    assert!(
        seen.contains("--gateway-port does not apply to run"),
        "{seen}"
    );
}

/// A world of one app and one phone, expecting the phone to show what COMMAND pushes.
const WORLD: &str = r#"
name = "run reports"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[expect]]
name = "the phone shows what COMMAND pushed"
shows = { device = "PHONE-1", count = 1, payloads = [{ aps = { alert = "via run" } }] }

[[expect]]
nothing_else = true
"#;

/// COMMAND's HTTP/2 push to the world's phone, on Apple's port inside the namespace.
fn push_script() -> String {
    format!(
        r#"{BIN} push --http2 --api "$APNS_SIM_HTTP2" --token "$APNS_SIM_TOKEN" \
            --cert "$APNS_SIM_CERT_FILE" --key "$APNS_SIM_KEY_FILE" --ca "$APNS_SIM_CA_FILE" \
            --payload '{{"aps":{{"alert":"via run"}}}}'"#
    )
}

#[tokio::test]
async fn a_scenario_run_writes_its_verdicts_as_junit_and_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("world.toml"), WORLD).unwrap();
    let out = run(
        dir.path(),
        &[
            "--scenario",
            "world.toml",
            "--json",
            "report.json",
            "--junit",
            "report.xml",
        ],
        &push_script(),
    )
    .await;
    let seen = text(&out);
    assert_eq!(out.status.code(), Some(0), "{seen}");
    assert!(seen.contains("PASSED (3 of 3 expectations hold"), "{seen}");
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    let junit = quick_junit::Report::deserialize_from_str(&xml).expect("well-formed JUnit XML");
    // COMMAND's own verdict and the scenario's two expectations.
    assert_eq!(
        (junit.tests, junit.failures, junit.errors),
        (3, 0, 0),
        "{xml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], true, "{json}");
    assert_eq!(json["exit_code"], 0, "{json}");
    assert_eq!(json["command"]["exited"], 0, "{json}");
    assert_eq!(
        json["files"][0]["verdicts"].as_array().map(Vec::len),
        Some(3),
        "{json}"
    );
}

#[tokio::test]
async fn a_failed_verdict_is_in_the_reports_and_json_dash_keeps_stdout_for_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("world.toml"), WORLD).unwrap();
    // COMMAND pushes nothing, and says so on its standard output.
    let out = run(
        dir.path(),
        &[
            "--scenario",
            "world.toml",
            "--json",
            "-",
            "--junit",
            "report.xml",
        ],
        "echo 'pushed nothing'",
    )
    .await;
    let seen = text(&out);
    assert_eq!(out.status.code(), Some(1), "{seen}");
    // Standard output is the report alone; COMMAND's line went to standard error.
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(json["passed"], false, "{json}");
    assert_eq!(json["exit_code"], 1, "{json}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pushed nothing"),
        "{seen}"
    );
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    let junit = quick_junit::Report::deserialize_from_str(&xml).expect("well-formed JUnit XML");
    assert_eq!((junit.tests, junit.failures), (3, 1), "{xml}");
    assert!(xml.contains("the phone shows what COMMAND pushed"), "{xml}");
}
