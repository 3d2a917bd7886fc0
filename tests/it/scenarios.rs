//! Scenario files end to end: every shipped scenario under `scenarios/` passes; a
//! deliberately wrong expectation fails with what was expected and what was seen, and its
//! JUnit report reads back through a JUnit parser; `apns-sim scenario check` names the file,
//! the line and the field of each kind of mistake and exits 1; `scenario run` exits 0 only
//! when every expectation holds and writes its JSON and JUnit reports; `serve --scenario`
//! mints the file's credentials into its folder, runs its timeline, prints its verdicts and
//! keeps serving, and refuses a `shutdown` step at its line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use apns_sim::scenario::report;
use apns_sim::scenario::run::run_file;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// The shipped scenario files, sorted.
fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Every shipped scenario runs and every expectation of it holds. Each runs through the
/// binary, in a process of its own, as a user runs it: the 5,000-device fleet holds 10,000
/// descriptors, which would count against this test process's limit (20,000 here) while
/// the other tests run beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_scenario_passes() {
    let files = shipped();
    assert!(files.len() >= 9, "shipped scenarios: {files:?}");
    for path in files {
        let name = path.display().to_string();
        let out = tokio::process::Command::new(BIN)
            .args(["scenario", "run", "--json", "-"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run apns-sim scenario run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {:?}\n{stderr}", out.status);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: the JSON report: {e}\n{stderr}"));
        let file = &report["files"][0];
        assert_eq!(report["passed"], true, "{name}: {report}");
        if name.ends_with("demo.toml") {
            continue;
        }
        let verdicts = file["verdicts"].as_array().expect("verdicts");
        assert!(!verdicts.is_empty(), "{name} has no expectations");
        assert!(
            verdicts.iter().all(|v| v["passed"] == true),
            "{name}: {report}"
        );
    }
}

/// The README's example scenario passes as shown.
#[tokio::test]
async fn the_readme_example_passes() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Scenarios")
        .nth(1)
        .expect("a Scenarios section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example");
    let report = run_file("README.md", example, &mut |_| {}).await;
    let failed: Vec<String> = report.verdicts.iter().map(|v| v.text()).collect();
    assert!(report.passed(), "{:?}\n{}", report.error, failed.join("\n"));
    assert_eq!(report.verdicts.len(), 1);
}

/// A world of one device and a push, with expectations of which two are wrong.
const WRONG: &str = r#"
name = "wrong on purpose"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "A"
apps = ["com.example.app"]

[[step]]
name = "hello"
push = { device = "A", payload = { aps = { alert = "hello" }, n = 1 } }

[[expect]]
name = "shows what was sent"
shows = { device = "A", payloads = [{ n = 1 }] }

[[expect]]
name = "shows what was not sent"
shows = { device = "A", payloads = [{ aps = { alert = "goodbye" } }] }

[[expect]]
name = "answered 410"
answer = { step = "hello", status = 410 }
"#;

/// A wrong expectation fails, saying what it expected and what it saw, with the closest
/// record; the JUnit report is well-formed XML a JUnit parser reads, with the failure in it.
#[tokio::test]
async fn a_wrong_expectation_fails_with_expected_and_seen() {
    let report = run_file("wrong.toml", WRONG, &mut |_| {}).await;
    assert!(!report.passed());
    assert_eq!(report.error, None);
    let [right, wrong, status] = &report.verdicts[..] else {
        panic!("three verdicts: {:?}", report.verdicts);
    };
    assert!(right.passed, "{}", right.text());
    assert!(!wrong.passed);
    assert_eq!(wrong.line, 19);
    assert!(wrong.expected.contains("\"goodbye\""), "{}", wrong.text());
    assert_eq!(wrong.seen, "A shows 1 notification(s)");
    assert!(
        wrong.closest[0].contains(r#"{"aps":{"alert":"hello"},"n":1}"#),
        "{}",
        wrong.text()
    );
    assert!(!status.passed);
    assert_eq!(status.seen, "200");

    let xml = report::junit(std::slice::from_ref(&report)).unwrap();
    let back = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit XML reads back");
    assert_eq!(back.tests, 3);
    assert_eq!(back.failures, 2);
    let suite = &back.test_suites[0];
    assert_eq!(suite.name.as_str(), "wrong on purpose");
    let case = &suite.test_cases[1];
    assert_eq!(case.name.as_str(), "shows what was not sent");
    match &case.status {
        quick_junit::TestCaseStatus::NonSuccess {
            message,
            description,
            ..
        } => {
            let message = message.as_ref().map(|m| m.as_str()).unwrap_or("");
            assert!(message.contains("expected A shows"), "{message}");
            assert!(
                message.contains("seen A shows 1 notification(s)"),
                "{message}"
            );
            let description = description.as_ref().map(|d| d.as_str()).unwrap_or("");
            assert!(
                description.contains("closest: #1 com.example.app"),
                "{description}"
            );
        }
        other => panic!("a failure: {other:?}"),
    }
}

/// The binary, run in `dir`, without the caller's `APNS_SIM_*` variables.
fn apns_sim(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("APNS_SIM_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion: (exit code, stdout, stderr).
async fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("finished in time")
        .expect("ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A malformed file of each kind of mistake is refused with its file, line and field.
#[tokio::test]
async fn scenario_check_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let world = "[[app]]\nbundle = 'com.a'\n\n[[device]]\nserial = 'A'\napps = ['com.a']\n";
    let files = [
        (
            "unknown-key.toml",
            format!("{world}\n[[step]]\npush = {{ device = 'A', colour = 'red' }}\n"),
            "unknown-key.toml:9: step[1].push.colour: unknown field `colour`",
        ),
        (
            "wrong-type.toml",
            format!("{world}\n[[step]]\nat_ms = 'soon'\noffline = 'A'\n"),
            "wrong-type.toml:9: step[1].at_ms: invalid type: string \"soon\"",
        ),
        (
            "unknown-event.toml",
            format!("{world}\n[[step]]\nname = 'p'\npush = {{ device = 'A' }}\n[[step]]\nafter = 'p arrived'\nonline = 'A'\n"),
            "unknown-event.toml:12: step[2].after: \"arrived\" is not a milestone",
        ),
        (
            "unknown-device.toml",
            format!("{world}\n[[step]]\nreboot = 'B'\n"),
            "unknown-device.toml:9: step[1].reboot.device: no device or fleet B",
        ),
        (
            "unknown-app.toml",
            format!("{world}\n[[step]]\nfeedback = {{ app = 'com.b' }}\n"),
            "unknown-app.toml:9: step[1].feedback.app: no [[app]] with bundle com.b",
        ),
        (
            "unknown-step.toml",
            format!("{world}\n[[expect]]\noutcome = {{ step = 'nope', is = 'stored' }}\n"),
            "unknown-step.toml:9: expect[1].outcome.step: no step named nope",
        ),
        (
            "cycle.toml",
            format!("{world}\n[[step]]\nname = 'a'\nafter = 'b done'\noffline = 'A'\n[[step]]\nname = 'b'\nafter = 'a done'\nonline = 'A'\n"),
            "cycle.toml:10: step[1].after: after cycle: a -> b -> a",
        ),
    ];
    for (name, text, _) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    for (name, _, want) in &files {
        let (code, out, err) = run(apns_sim(dir.path()).args(["scenario", "check", name])).await;
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "{name}: wanted {want:?}, got {out}"
        );
    }
    std::fs::write(dir.path().join("good.toml"), world).unwrap();
    let (code, out, err) = run(apns_sim(dir.path()).args(["scenario", "check", "good.toml"])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "good.toml: valid (1 devices, 0 steps, 0 expectations)\n"
    );
    // Several files: each judged, the exit code 1 if any is wrong.
    let (code, out, _) =
        run(apns_sim(dir.path()).args(["scenario", "check", "good.toml", "cycle.toml"])).await;
    assert_eq!(code, Some(1));
    assert!(out.starts_with("good.toml: valid"), "{out}");
    let (code, out, _) =
        run(apns_sim(dir.path()).args(["scenario", "check", "missing.toml"])).await;
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with("missing.toml:1: (file): cannot read it"),
        "{out}"
    );
}

/// `scenario run` prints the timeline and the verdicts, exits 0 when all hold and 1 when one
/// fails, and writes the JSON and JUnit reports.
#[tokio::test]
async fn scenario_run_exits_with_the_verdict_and_writes_reports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wrong.toml"), WRONG).unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/basic-push.toml");
    let (code, out, err) = run(apns_sim(dir.path()).arg("scenario").arg("run").arg(&good)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ms http2-token: http2 -> IPHONE-1: 200"),
        "{out}"
    );
    assert!(
        out.contains("PASS the device shows all five, in order"),
        "{out}"
    );
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
    assert!(
        !err.contains(" INFO "),
        "the simulator's info lines stay off: {err}"
    );

    let (code, out, err) = run(apns_sim(dir.path()).args([
        "scenario",
        "run",
        "wrong.toml",
        "--junit",
        "report.xml",
        "--json",
        "report.json",
    ]))
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("FAIL shows what was not sent (line 19)"),
        "{out}"
    );
    assert!(out.contains("seen:     A shows 1 notification(s)"), "{out}");
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    let back = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit XML");
    assert_eq!((back.tests, back.failures), (3, 2));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["files"][0]["verdicts"][2]["seen"], "200");

    // `--json -` writes the report on stdout and the timeline on stderr.
    let (code, out, err) = run(apns_sim(dir.path())
        .arg("scenario")
        .arg("run")
        .arg(&good)
        .args(["--json", "-"]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(json["passed"], true);
    assert!(err.contains("PASS"), "{err}");
}

/// A scenario for `serve --scenario`: an app of its own with a key, an uninstall, a push
/// that the device answers "not installed", a token-auth push after it (410), and the
/// feedback read; `{wrong}` adds an expectation that fails.
fn served(wrong: bool) -> String {
    let mut text = r#"
[[app]]
bundle = "com.test.served"
key_id = "SERVEKEY01"

[[device]]
serial = "PHONE-1"
apps = ["com.test.served"]

[[step]]
name = "hello"
push = { device = "PHONE-1", app = "com.test.served", auth = "token", payload = { aps = { alert = "served" } } }

[[step]]
name = "gone"
after = "hello delivered"
uninstall = { device = "PHONE-1", app = "com.test.served" }

[[step]]
name = "stale"
push = { device = "PHONE-1", app = "com.test.served", api = "binary" }

[[step]]
name = "late"
after = "stale not_installed"
push = { device = "PHONE-1", app = "com.test.served", auth = "token" }

[[expect]]
name = "the first push was shown"
answer = { step = "hello", status = 200 }

[[expect]]
name = "410 after the uninstall"
answer = { step = "late", status = 410, reason = "Unregistered" }
"#
    .to_owned();
    if wrong {
        text.push_str("\n[[expect]]\nname = \"wrong on purpose\"\nanswer = { step = \"late\", status = 200 }\n");
    }
    text
}

/// Starts `serve --scenario FILE` with its certificates in `dir/certs` on free ports.
fn serve_scenario(dir: &Path, file: &Path) -> tokio::process::Child {
    apns_sim(dir)
        .env("RUST_LOG", "warn")
        .args(["serve", "--certs"])
        .arg(dir.join("certs"))
        .arg("--scenario")
        .arg(file)
        .args([
            "--gateway-port",
            "0",
            "--feedback-port",
            "0",
            "--http2-port",
            "0",
        ])
        .args(["--device-port", "0", "--control-port", "0"])
        .spawn()
        .expect("serve started")
}

/// Reads `serve`'s output up to its scenario summary line; returns every line read.
async fn until_summary(child: &mut tokio::process::Child) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut read = Vec::new();
    let wait = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = line.contains("still serving");
            read.push(line);
            if done {
                return;
            }
        }
        panic!("serve ended before its verdicts: {read:?}");
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), wait)
        .await
        .expect("the verdicts in time");
    read
}

/// `serve --scenario` mints the file's credentials into the certificate folder (and keeps
/// them on the next start), runs its timeline, prints each verdict and keeps serving: the
/// control API still answers after the verdicts.
#[tokio::test]
async fn serve_runs_a_whole_scenario_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("served.toml");
    std::fs::write(&file, served(true)).unwrap();
    let mut serve = serve_scenario(dir.path(), &file);
    let lines = until_summary(&mut serve).await;
    let text = lines.join("\n");
    assert!(
        text.contains("PASS the first push was shown: 200"),
        "{text}"
    );
    assert!(
        text.contains("PASS 410 after the uninstall: 410 Unregistered"),
        "{text}"
    );
    assert!(text.contains("FAIL wrong on purpose"), "{text}");
    assert!(text.contains("seen:     410 Unregistered"), "{text}");
    assert!(
        text.contains("FAILED (2 of 3 expectations hold); still serving"),
        "{text}"
    );
    // Still serving: the control API answers.
    let control = lines
        .iter()
        .find(|l| l.trim_start().starts_with("control API"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("the control API's address")
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&control).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("PHONE-1"), "{answer}");
    serve.kill().await.unwrap();

    // The credentials are in the folder, listed in its manifest, as a provider loads them.
    let certs = dir.path().join("certs");
    let manifest = std::fs::read_to_string(certs.join("manifest.json")).unwrap();
    for name in [
        "provider-com.test.served-universal.pem",
        "provider-com.test.served-universal-key.pem",
        "AuthKey_SERVEKEY01.p8",
    ] {
        assert!(certs.join(name).exists(), "{name}");
        assert!(manifest.contains(name), "{name} in the manifest");
    }
    let cert = std::fs::read(certs.join("provider-com.test.served-universal.pem")).unwrap();
    // A second start keeps them (the same file, not a fresh certificate) and passes again.
    std::fs::write(&file, served(false)).unwrap();
    let mut again = serve_scenario(dir.path(), &file);
    let text = until_summary(&mut again).await.join("\n");
    assert!(
        text.contains("PASSED (2 of 2 expectations hold); still serving"),
        "{text}"
    );
    again.kill().await.unwrap();
    assert_eq!(
        std::fs::read(certs.join("provider-com.test.served-universal.pem")).unwrap(),
        cert
    );
}

/// A `shutdown` step has no place under `serve` (it serves until stopped): refused at its
/// line before anything starts.
#[tokio::test]
async fn serve_refuses_a_shutdown_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stop.toml");
    std::fs::write(
        &file,
        "[[device]]\nserial = 'A'\napps = ['com.example.app']\n\n[[step]]\nshutdown = true\n",
    )
    .unwrap();
    let (code, _, err) = run(apns_sim(dir.path())
        .args(["serve", "--certs"])
        .arg(dir.path().join("certs"))
        .arg("--scenario")
        .arg(&file)
        .args([
            "--gateway-port",
            "0",
            "--feedback-port",
            "0",
            "--http2-port",
            "0",
        ])
        .args(["--device-port", "0", "--control-port", "0"]))
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stop.toml:5: step[1].shutdown:"), "{err}");
}

/// A feedback timestamp expectation against a push step that got no 410 fails, saying so
/// for the token; one that names a step that is not a push is refused at its line.
#[tokio::test]
async fn feedback_timestamps_are_checked_against_the_410() {
    let text = r#"
[[app]]
bundle = "com.example.app"

[[device]]
serial = "A"
apps = ["com.example.app"]

[[step]]
name = "hello"
push = { device = "A" }

[[step]]
name = "gone"
after = "hello delivered"
uninstall = { device = "A", app = "com.example.app" }

[[step]]
name = "stale"
push = { device = "A", api = "binary" }

[[step]]
name = "read"
after = "stale not_installed"
feedback = { app = "com.example.app" }

[[expect]]
name = "when found"
feedback = { step = "read", count = 1, at_not_installed = true }

[[expect]]
name = "as the 410 of a push that got none"
feedback = { step = "read", count = 1, as_410_of = "hello" }
"#;
    let report = run_file("times.toml", text, &mut |_| {}).await;
    let [found, no_410] = &report.verdicts[..] else {
        panic!("two verdicts: {:?}", report.verdicts);
    };
    assert!(found.passed, "{}", found.text());
    assert!(!no_410.passed, "{}", no_410.text());
    assert!(
        no_410
            .expected
            .contains("the timestamp of hello's 410 to it"),
        "{}",
        no_410.text()
    );
    assert_eq!(
        no_410.closest,
        ["A com.example.app: hello got no 410 for it"],
        "{}",
        no_410.text()
    );

    let wrong = text.replace(r#"as_410_of = "hello""#, r#"as_410_of = "gone""#);
    let err = apns_sim::scenario::Scenario::parse(&wrong).unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.field, "expect[2].feedback.as_410_of", "{p}");
    assert_eq!(p.line, 33, "{p}");
    assert!(
        p.why
            .contains("step gone is a uninstall step, not a push step"),
        "{p}"
    );
}

/// The timeline's device events and fault switches take effect, each judged by what
/// happened: a token an `install` adds is pushed to and shown; a `reboot` ends the
/// device's connection, so what it was sent but never acknowledged is sent again and
/// delivered; a fault with no end of its own refuses every push until `fault_off`; a
/// step with `at_ms` runs no earlier than that many ms into the run.
#[tokio::test]
async fn install_reboot_fault_off_and_at_ms_take_effect() {
    let text = r#"
[[app]]
bundle = "com.example.app"

[[device]]
serial = "A"
apps = ["com.example.app"]

[[step]]
name = "voip"
install = { device = "A", app = "com.example.app:voip" }

[[step]]
name = "call"
push = { device = "A", app = "com.example.app:voip", payload = { caller = "Alice" } }

[[step]]
name = "hold"
after = "call delivered"
fault = { on = "devices", withhold_ack = true, count = 1 }

[[step]]
name = "pending"
push = { device = "A", payload = { aps = { alert = "pending" } } }

[[step]]
name = "restart"
after = "pending sent"
reboot = "A"

[[step]]
name = "outage"
after = "pending delivered"
fault = { on = "http2", respond = { status = 503, reason = "ServiceUnavailable" } }

[[step]]
name = "refused"
push = { device = "A", payload = { aps = { alert = "refused" } } }

[[step]]
name = "over"
at_ms = 1500
fault_off = "outage"

[[step]]
name = "accepted"
push = { device = "A", payload = { aps = { alert = "accepted" } } }

[[expect]]
name = "the installed token took the call"
shows = { device = "A", app = "com.example.app:voip", payloads = [{ caller = "Alice" }] }

[[expect]]
name = "the reboot ended the connection that held the notification"
outcome = { step = "pending", is = "requeued" }

[[expect]]
name = "and it was delivered after it"
outcome = { step = "pending", is = "delivered" }

[[expect]]
name = "refused while the fault is on"
answer = { step = "refused", status = 503, reason = "ServiceUnavailable" }

[[expect]]
name = "accepted once it is off"
answer = { step = "accepted", status = 200 }
"#;
    let report = run_file("events.toml", text, &mut |_| {}).await;
    assert_eq!(report.error, None);
    let failed: Vec<String> = report
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.text())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(report.verdicts.len(), 5);
    let line = |step: &str| {
        report
            .timeline
            .iter()
            .find(|l| l.step == step)
            .unwrap_or_else(|| panic!("no timeline line of {step}: {:?}", report.timeline))
    };
    assert_eq!(line("voip").text, "A installs com.example.app:voip");
    assert_eq!(line("restart").text, "A rebooted");
    assert!(line("over").text.ends_with(" off"), "{:?}", line("over"));
    // Not a speed: `at_ms` is a lower bound the step must keep, however fast the rest ran.
    assert!(line("over").at_ms >= 1500, "{:?}", line("over"));
}

/// A world of two devices for the failures of `scenario run`: a push to each, one
/// `shows` that names only the first with its two payloads in the wrong order, and
/// `nothing_else`, which the second device's notification breaks.
const WRONG_ORDER_AND_MORE: &str = r#"
name = "order and nothing else"

[[app]]
bundle = "com.example.app"

[[device]]
serial = "A"
apps = ["com.example.app"]

[[device]]
serial = "B"
apps = ["com.example.app"]

[[step]]
name = "first"
push = { device = "A", payload = { aps = { alert = "first" } } }

[[step]]
name = "second"
after = "first delivered"
push = { device = "A", payload = { aps = { alert = "second" } } }

[[step]]
name = "other"
push = { device = "B", payload = { aps = { alert = "to B" } } }

[[expect]]
name = "in the wrong order"
shows = { device = "A", payloads = [{ aps = { alert = "second" } }, { aps = { alert = "first" } }] }

[[expect]]
nothing_else = true
"#;

/// `scenario run` of a wrong payload order and of a `nothing_else` that does not hold:
/// exit 1, each failure with what was expected and what was seen.
#[tokio::test]
async fn a_wrong_order_and_something_else_fail_scenario_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("order.toml"), WRONG_ORDER_AND_MORE).unwrap();
    let (code, out, err) = run(apns_sim(dir.path()).args(["scenario", "run", "order.toml"])).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("FAIL in the wrong order (line 28)"), "{out}");
    assert!(
        out.contains(
            r#"expected: A shows payloads containing, in order: {"aps":{"alert":"second"}}, {"aps":{"alert":"first"}}"#
        ),
        "{out}"
    );
    assert!(out.contains("seen:     A shows 2 notification(s)"), "{out}");
    assert!(
        out.contains(r#"closest:  #1 com.example.app {"aps":{"alert":"first"}}"#),
        "{out}"
    );
    assert!(
        out.contains("FAIL nothing else happened (line 32)"),
        "{out}"
    );
    assert!(
        out.contains("expected: no other device shows a notification, no other push was refused"),
        "{out}"
    );
    assert!(out.contains("seen:     1 other thing(s) happened"), "{out}");
    assert!(
        out.contains(r#"closest:  B shows #1 com.example.app {"aps":{"alert":"to B"}}"#),
        "{out}"
    );
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");

    // The right order passes; so does `nothing_else` once B is named.
    let fixed = WRONG_ORDER_AND_MORE
        .replace(
            r#"payloads = [{ aps = { alert = "second" } }, { aps = { alert = "first" } }]"#,
            r#"payloads = [{ aps = { alert = "first" } }, { aps = { alert = "second" } }]"#,
        )
        .replace(
            "[[expect]]\nnothing_else",
            "[[expect]]\nshows = { device = \"B\", count = 1 }\n\n[[expect]]\nnothing_else",
        );
    std::fs::write(dir.path().join("fixed.toml"), fixed).unwrap();
    let (code, out, err) = run(apns_sim(dir.path()).args(["scenario", "run", "fixed.toml"])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
}

/// An app whose provider holds a production certificate only: its pushes to a production
/// device go through on both APIs, the feedback service's production list hands out the
/// uninstalled token, and an HTTP/2 connection to the sandbox host is refused with the
/// certificate's environment named.
#[tokio::test]
async fn a_production_certificate_pushes_to_production() {
    let text = r#"
[[app]]
bundle = "com.example.prod"
certificate = "production"

[[device]]
serial = "PROD-1"
environment = "production"
apps = ["com.example.prod"]

[[device]]
serial = "DEV-1"
apps = ["com.example.prod"]

[[step]]
name = "http2"
push = { device = "PROD-1", payload = { aps = { alert = "http2" } } }

[[step]]
name = "binary"
push = { device = "PROD-1", api = "binary", payload = { aps = { alert = "binary" } } }

[[step]]
name = "to-sandbox"
push = { device = "DEV-1", payload = { aps = { alert = "wrong host" } } }

[[step]]
name = "gone"
after = "binary delivered"
uninstall = { device = "PROD-1", app = "com.example.prod" }

[[step]]
name = "stale"
push = { device = "PROD-1", api = "binary" }

[[step]]
name = "read"
after = "stale not_installed"
feedback = { app = "com.example.prod", environment = "production" }

[[expect]]
answer = { step = "http2", status = 200 }

[[expect]]
outcome = { step = "binary", is = "delivered" }

[[expect]]
name = "the sandbox host refuses the production certificate"
answer = { step = "to-sandbox", status = 0, reason = "GOAWAY BadCertificateEnvironment" }

[[expect]]
feedback = { step = "read", tokens = ["PROD-1 com.example.prod"], at_not_installed = true }

[[expect]]
shows = { device = "DEV-1", count = 0 }

[[expect]]
nothing_else = true
"#;
    let scenario = apns_sim::scenario::Scenario::parse(text).unwrap();
    assert_eq!(
        scenario.apps[0].certificate,
        apns_sim::scenario::format::CertChoice::Production
    );
    let report = run_file("production.toml", text, &mut |_| {}).await;
    assert_eq!(report.error, None);
    let failed: Vec<String> = report
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.text())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(report.verdicts.len(), 6);
    // The app's certificate is minted for production only: a push that named the sandbox
    // environment's feedback list would need another certificate.
    let wrong = text.replace(
        r#"environment = "production" }"#,
        r#"environment = "sandbox" }"#,
    );
    let report = run_file("production.toml", &wrong, &mut |_| {}).await;
    assert!(!report.passed(), "{:?}", report.verdicts);
}
