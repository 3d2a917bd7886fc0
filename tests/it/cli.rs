//! The `apns-sim` binary driven as processes: `certs`, `device`, `push`, `feedback`, and the
//! README's quick start (`serve`, then the push command it prints); the client commands run
//! from any folder given `--certs` or `APNS_SIM_CERTS`; flags that do not apply are refused,
//! variables set for both modes are not; the README's `-h` blocks are the binary's.

use std::path::Path;
use std::process::Stdio;

use apns_sim::pki::DEFAULT_TOPIC;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::{self, TIMEOUT};
use crate::process::{apns_sim, line_where, run_code};

/// Starts `apns-sim serve` in `dir` with every port chosen by the system.
fn spawn_serve(dir: &Path, extra: &[&str]) -> Child {
    apns_sim(dir)
        .env("RUST_LOG", "info")
        .args(["serve", "--gateway-port", "0", "--feedback-port", "0"])
        .args([
            "--http2-port",
            "0",
            "--device-port",
            "0",
            "--control-port",
            "0",
        ])
        .args(extra)
        .spawn()
        .expect("serve started")
}

/// Runs a command to completion; returns (success, stdout, stderr).
async fn run(cmd: &mut Command) -> (bool, String, String) {
    let (code, out, err) = run_code(cmd).await;
    (code == Some(0), out, err)
}

/// Starts an `apns-sim device` process and waits for its first `registered` event; returns
/// the process, its stdin, its stdout lines and that event.
async fn spawn_device(
    cmd: &mut Command,
) -> (
    Child,
    ChildStdin,
    Lines<BufReader<ChildStdout>>,
    serde_json::Value,
) {
    let mut device = cmd.stdin(Stdio::piped()).spawn().expect("device started");
    let stdin = device.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(device.stdout.take().expect("piped stdout")).lines();
    let registered = json(&line_where(&mut lines, |l| l.contains("\"registered\"")).await);
    (device, stdin, lines, registered)
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn certs_command_mints_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(apns_sim(dir.path()).args(["certs"])).await;
    assert!(ok, "{err}");
    for f in [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "provider.pem",
        "provider-key.pem",
        "manifest.json",
    ] {
        assert!(dir.path().join("certs").join(f).exists(), "{f} missing");
    }
    // The table: a row per file, role first (tests/it/certs_export.rs checks the columns).
    assert!(
        out.lines()
            .any(|l| l.starts_with("provider ") && l.contains(DEFAULT_TOPIC)),
        "{out}"
    );
    let ca_before = std::fs::read(dir.path().join("certs/ca.pem")).unwrap();

    let (ok, out, err) = run(apns_sim(dir.path()).args([
        "certs",
        "provider",
        "--topic",
        "com.acme.news",
        "--environment",
        "sandbox",
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("com.acme.news"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("certs/manifest.json")).unwrap())
            .unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["topic"] == "com.acme.news"
        && f["environment"] == "sandbox"
        && f["role"] == "provider"));
    // The CA is reused, not minted again.
    assert_eq!(
        std::fs::read(dir.path().join("certs/ca.pem")).unwrap(),
        ca_before
    );

    let (ok, _, err) = run(apns_sim(dir.path()).args([
        "certs",
        "provider",
        "--topic",
        "x",
        "--environment",
        "staging",
    ]))
    .await;
    assert!(!ok);
    assert!(err.contains("staging"), "{err}");
}

/// device → push → uninstall → push → feedback (twice), all as separate processes.
#[tokio::test]
async fn device_push_feedback_commands() {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    t.pki.write(&dir.path().join("certs")).unwrap();
    let addrs = *t.sim.addrs();

    let (mut device, mut stdin, mut lines, registered) = spawn_device(apns_sim(dir.path()).args([
        "device",
        "--server",
        &addrs.devices.to_string(),
        "--serial",
        "CLI-1",
        "--app",
        DEFAULT_TOPIC,
    ]))
    .await;
    assert_eq!(registered["serial"], "CLI-1");
    assert_eq!(registered["app"], DEFAULT_TOPIC);
    assert_eq!(registered["environment"], "sandbox");
    let token = registered["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);

    let push = |id: &str| {
        let mut cmd = apns_sim(dir.path());
        cmd.args([
            "push",
            "--token",
            &token,
            "--gateway",
            &addrs.gateway.to_string(),
            "--id",
            id,
            "--payload",
            r#"{"aps":{"alert":"from the CLI"}}"#,
            "--wait-ms",
            "300",
        ]);
        cmd
    };
    let (ok, out, err) = run(&mut push("5")).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("accepted"), "{out}");
    let shown = json(&line_where(&mut lines, |l| l.contains("\"notification\"")).await);
    assert_eq!(shown["id"], 5);
    assert_eq!(shown["token"], token.as_str());
    assert_eq!(shown["priority"], 10);
    assert_eq!(shown["payload"]["aps"]["alert"], "from the CLI");

    stdin
        .write_all(b"uninstall com.example.app\n")
        .await
        .unwrap();
    line_where(&mut lines, |l| l.contains("\"uninstalled\"")).await;
    let (ok, out, err) = run(&mut push("6")).await;
    assert!(ok, "{out}{err}");
    let reported = json(&line_where(&mut lines, |l| l.contains("\"not_installed\"")).await);
    assert_eq!(reported["token"], token.as_str());

    // The hub records the report as the device sends it; the feedback read follows it.
    let mut events = t.sim.hub().subscribe();
    let tok = apns_sim::protocol::token::DeviceToken::from_hex(&token).unwrap();
    if t.sim.hub().unregistered_at(&tok).is_none() {
        common::next_hub_event(&mut events, |e| {
            matches!(
                e,
                apns_sim::hub::Event::Notification {
                    outcome: apns_sim::hub::Outcome::NotInstalled,
                    ..
                }
            )
        })
        .await;
    }
    let feedback = || {
        let mut cmd = apns_sim(dir.path());
        cmd.args(["feedback", "--feedback", &addrs.feedback.to_string()]);
        cmd
    };
    let (ok, out, err) = run(&mut feedback()).await;
    assert!(ok, "{err}");
    let line = out.lines().next().unwrap_or_default();
    let (ts, tok_hex) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("tuple line: {out}"));
    assert_eq!(tok_hex, token);
    assert_eq!(
        ts.parse::<u64>().unwrap(),
        t.sim.hub().unregistered_at(&tok).unwrap() / 1000
    );
    let (ok, out, _) = run(&mut feedback()).await;
    assert!(ok);
    assert!(out.contains("no feedback"), "{out}");

    // A bad command is answered, quit stops the device.
    stdin.write_all(b"dance\nquit\n").await.unwrap();
    let bad = json(&line_where(&mut lines, |l| l.contains("\"bad_command\"")).await);
    assert!(bad["error"].as_str().unwrap().contains("unknown command"));
    line_where(&mut lines, |l| l.contains("\"stopped\"")).await;
    let status = tokio::time::timeout(TIMEOUT, device.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    t.stop().await;
}

#[tokio::test]
async fn push_reports_an_error_response_in_words() {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    t.pki.write(&dir.path().join("certs")).unwrap();
    let (ok, out, _) = run(apns_sim(dir.path()).args([
        "push",
        "--token",
        &"ab".repeat(32),
        "--gateway",
        &t.sim.addrs().gateway.to_string(),
        "--id",
        "9",
    ]))
    .await;
    assert!(!ok, "an error response makes the command fail");
    assert!(
        out.contains("status 8 (Invalid token) for notification id 9"),
        "{out}"
    );
    t.stop().await;
}

/// The README's quick start: `serve` prints demo tokens and a push command that works.
#[tokio::test]
async fn serve_prints_a_push_command_that_reaches_a_demo_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = spawn_serve(dir.path(), &[]);
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let command = line_where(&mut lines, |l| {
        l.trim_start().starts_with("cargo run -- push")
    })
    .await;
    // Run the printed command with the built binary instead of cargo.
    let args = shell_words(command.trim().trim_start_matches("cargo run -- "));
    let (ok, out, err) = run(apns_sim(dir.path()).args(&args)).await;
    assert!(ok, "{out}{err}");
    let shown = line_where(&mut lines, |l| l.contains("shows a notification")).await;
    assert!(shown.contains("Hello"), "{shown}");
    serve.kill().await.unwrap();
}

/// Splits the printed command line (plain words and single-quoted words only).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').expect("closing quote");
            words.push(quoted[..end].to_owned());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    words
}

/// The README shows the `-h` output of every command; it must be what the binary prints.
#[tokio::test]
async fn readme_help_matches_the_binary() {
    let readme = include_str!("../../README.md");
    let mut checked = 0;
    for block in readme.split("```text\n$ apns-sim").skip(1) {
        let (command, rest) = block.split_once('\n').expect("command line");
        let shown = rest.split("```").next().expect("closing fence");
        let args: Vec<&str> = command.split_whitespace().collect();
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = run(apns_sim(dir.path()).args(&args)).await;
        assert!(ok, "apns-sim{command}: {err}");
        assert_eq!(out, shown, "README's `apns-sim{command}` is out of date");
        checked += 1;
    }
    assert_eq!(checked, 19, "help blocks found in the README");
}

/// SIGTERM shuts `serve` down gracefully: a connected provider gets status 10 (Shutdown)
/// with the identifier of the last notification the gateway accepted.
#[tokio::test]
async fn sigterm_shuts_serve_down_with_status_10() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = spawn_serve(dir.path(), &["--devices", "1"]);
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let gateway = line_where(&mut lines, |l| l.contains("binary gateway")).await;
    let gateway = gateway.split_whitespace().last().unwrap().to_owned();
    let demo = line_where(&mut lines, |l| l.trim_start().starts_with("DEMO-0001")).await;
    let token =
        apns_sim::protocol::token::DeviceToken::from_hex(demo.split_whitespace().last().unwrap())
            .unwrap();
    let files = apns_sim::client::CertsDir(dir.path().join("certs")).provider_files("localhost");
    let mut gw = apns_sim::client::BinaryClient::connect(
        &gateway,
        "localhost",
        files.client_config(Vec::new()).unwrap(),
    )
    .await
    .unwrap();
    // Once the demo device shows this notification, the connection is being served.
    gw.send(&common::frame(
        token.as_bytes(),
        &common::alert("before"),
        77,
        0,
        10,
    ))
    .await
    .unwrap();
    line_where(&mut lines, |l| l.contains("shows a notification")).await;
    let pid = serve.id().unwrap().to_string();
    // The shell's own `kill`, so no extra package is needed.
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let answer = gw.finish(TIMEOUT).await.unwrap();
    assert_eq!(
        answer,
        apns_sim::client::GatewayAnswer::Error(apns_sim::protocol::error_response::ErrorResponse {
            status: apns_sim::protocol::error_response::Status::Shutdown,
            identifier: 77u32.to_be_bytes(),
        })
    );
    line_where(&mut lines, |l| l.contains("shutting down")).await;
    let status = tokio::time::timeout(TIMEOUT, serve.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// How a test names the certificate folder to a client command.
#[derive(Debug, Clone, Copy)]
enum CertsFrom {
    /// `--certs DIR`.
    Flag,
    /// `APNS_SIM_CERTS=DIR`.
    Env,
}

impl CertsFrom {
    /// `apns-sim ARGS…` run in `cwd`, told about `certs` the way this value says.
    fn command(self, cwd: &Path, certs: &Path, args: &[&str]) -> Command {
        let mut cmd = apns_sim(cwd);
        cmd.args(args);
        match self {
            CertsFrom::Flag => {
                cmd.arg("--certs").arg(certs);
            }
            CertsFrom::Env => {
                cmd.env("APNS_SIM_CERTS", certs);
            }
        }
        cmd
    }
}

/// `device`, `push` (binary, HTTP/2 with the certificate and with a token) and `feedback`
/// run in a folder without `certs/` and find every file through the certificate folder
/// they are told about.
async fn client_commands_find_their_files(from: CertsFrom) {
    let t = common::start().await;
    let home = tempfile::tempdir().unwrap();
    let certs = home.path().join("sim-certs");
    t.pki.write(&certs).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cwd = elsewhere.path();
    let addrs = *t.sim.addrs();
    let (devices, gateway, api, feedback) = (
        addrs.devices.to_string(),
        addrs.gateway.to_string(),
        addrs.http2.to_string(),
        addrs.feedback.to_string(),
    );

    let device_args = ["device", "--server", &devices, "--serial", "AWAY-1"];
    let (mut device, mut stdin, mut lines, registered) =
        spawn_device(&mut from.command(cwd, &certs, &device_args)).await;
    let token = registered["token"].as_str().unwrap().to_owned();

    let binary = [
        "push",
        "--token",
        &token,
        "--gateway",
        &gateway,
        "--wait-ms",
        "300",
    ];
    let (ok, out, err) = run(&mut from.command(cwd, &certs, &binary)).await;
    assert!(
        ok && out.contains("accepted"),
        "{from:?} binary: {out}{err}"
    );
    line_where(&mut lines, |l| l.contains("\"notification\"")).await;

    for auth in ["cert", "token"] {
        let args = [
            "push", "--http2", "--auth", auth, "--token", &token, "--api", &api,
        ];
        let (ok, out, err) = run(&mut from.command(cwd, &certs, &args)).await;
        assert!(ok, "{from:?} --auth {auth}: {out}{err}");
        assert!(out.starts_with(&format!("{token}: 200")), "{out}");
        line_where(&mut lines, |l| l.contains("\"notification\"")).await;
    }

    let mut events = t.sim.hub().subscribe();
    stdin
        .write_all(format!("uninstall {DEFAULT_TOPIC}\n").as_bytes())
        .await
        .unwrap();
    line_where(&mut lines, |l| l.contains("\"uninstalled\"")).await;
    let (ok, out, err) = run(&mut from.command(cwd, &certs, &binary)).await;
    assert!(ok, "{out}{err}");
    common::next_hub_event(&mut events, |e| {
        matches!(
            e,
            apns_sim::hub::Event::Notification {
                outcome: apns_sim::hub::Outcome::NotInstalled,
                ..
            }
        )
    })
    .await;
    let (ok, out, err) =
        run(&mut from.command(cwd, &certs, &["feedback", "--feedback", &feedback])).await;
    assert!(ok, "{from:?} feedback: {err}");
    assert!(out.trim_end().ends_with(&format!(" {token}")), "{out}");

    stdin.write_all(b"quit\n").await.unwrap();
    let status = tokio::time::timeout(TIMEOUT, device.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(
        !cwd.join("certs").exists(),
        "nothing was written to the working folder"
    );
    t.stop().await;
}

#[tokio::test]
async fn client_commands_take_the_certs_flag_from_any_folder() {
    client_commands_find_their_files(CertsFrom::Flag).await;
}

#[tokio::test]
async fn client_commands_take_apns_sim_certs_from_any_folder() {
    client_commands_find_their_files(CertsFrom::Env).await;
}

/// Every refused `push` combination: (extra arguments, the flag refused, words of the reason).
#[rustfmt::skip] // one case per line reads as the table it is
const REFUSED: &[(&str, &str, &str)] = &[
    ("--collapse-id score", "--collapse-id", "cannot collapse"),
    ("--push-type alert", "--push-type", "no push type"),
    ("--apns-id 123e4567-e89b-12d3-a456-426614174000", "--apns-id", "with --id"),
    ("--auth token", "--auth", "provider certificate only"),
    ("--auth-key k.p8", "--auth-key", "exist only on the HTTP/2 API"),
    ("--key-id ABCDEFGHIJ", "--key-id", "exist only on the HTTP/2 API"),
    ("--team-id ABCDEFGHIJ", "--team-id", "exist only on the HTTP/2 API"),
    ("--api 127.0.0.1:1", "--api", "the binary gateway's is --gateway"),
    ("--topic com.example.app", "--topic", "from the provider certificate"),
    ("--http2 --format frame", "--format", "one request format"),
    ("--http2 --id 3", "--id", "with --apns-id"),
    ("--http2 --gateway 127.0.0.1:1", "--gateway", "the HTTP/2 API's is --api"),
    ("--http2 --wait-ms 5", "--wait-ms", "answers every request"),
    ("--format simple --priority 5", "--priority", "carry no priority"),
    ("--format enhanced --priority 10", "--priority", "carry no priority"),
    ("--format simple --expiry 0", "--expiry", "carries no expiry"),
    ("--http2 --key-id ABCDEFGHIJ", "--key-id", "signs no provider token"),
    ("--http2 --auth-key k.p8", "--auth-key", "signs no provider token"),
    ("--http2 --team-id ABCDEFGHIJ", "--team-id", "signs no provider token"),
    ("--http2 --auth token --cert c.pem", "--cert", "no client certificate"),
    ("--http2 --auth token --key k.pem", "--key", "no client certificate"),
];

/// Every flag typed for the API, format or authentication not chosen is refused before
/// anything is read or sent: exit code 2, clap's usage line, the flag and the reason.
#[tokio::test]
async fn push_refuses_flags_of_the_other_api_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let token = "ab".repeat(32);
    for (extra, flag, why) in REFUSED {
        let mut push = apns_sim(dir.path());
        push.args(["push", "--token", &token])
            .args(extra.split_whitespace());
        let (code, out, err) = run_code(&mut push).await;
        let line = err.lines().next().unwrap_or_default();
        assert_eq!(code, Some(2), "{extra:?}: {out}{err}");
        assert!(
            line.starts_with(&format!("error: {flag} is for ")) && line.contains(why),
            "{extra:?}: {err}"
        );
        assert!(err.contains("Usage: apns-sim push"), "{extra:?}: {err}");
    }
    // What was allowed still runs: here it fails on the missing certificate folder instead.
    let (code, _, err) = run_code(apns_sim(dir.path()).args([
        "push", "--token", &token, "--format", "enhanced", "--expiry", "0",
    ]))
    .await;
    assert_eq!(code, Some(2));
    assert!(err.contains("provider.pem"), "{err}");
}

/// An `APNS_SIM_*` variable of the other API is set for both modes, so it is not refused.
#[tokio::test]
async fn push_accepts_variables_of_the_other_api() {
    let t = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    t.pki.write(&certs).unwrap();
    let (mut device, tokens) = t
        .device(
            "ENV-1",
            apns_sim::protocol::Environment::Sandbox,
            &[DEFAULT_TOPIC],
        )
        .await;
    let token = tokens[DEFAULT_TOPIC].to_hex();
    let addrs = *t.sim.addrs();

    let (ok, out, err) = run(apns_sim(dir.path())
        .args([
            "push",
            "--token",
            &token,
            "--gateway",
            &addrs.gateway.to_string(),
        ])
        .args(["--wait-ms", "300"])
        .env("APNS_SIM_API", addrs.http2.to_string())
        .env("APNS_SIM_TOPIC", DEFAULT_TOPIC)
        .env("APNS_SIM_AUTH", "token")
        .env("APNS_SIM_AUTH_KEY", certs.join("AuthKey_SIMKEY0001.p8"))
        .env("APNS_SIM_KEY_ID", "SIMKEY0001")
        .env("APNS_SIM_TEAM_ID", "SIMTEAM001"))
    .await;
    assert!(ok && out.contains("accepted"), "{out}{err}");
    common::next_notification(&mut device).await;

    let (ok, out, err) = run(apns_sim(dir.path())
        .args([
            "push",
            "--http2",
            "--token",
            &token,
            "--api",
            &addrs.http2.to_string(),
        ])
        .env("APNS_SIM_GATEWAY", "127.0.0.1:1")
        .env("APNS_SIM_WAIT_MS", "5"))
    .await;
    assert!(ok && out.contains(": 200"), "{out}{err}");
    common::next_notification(&mut device).await;
    t.stop().await;
}

/// With a certificate folder other than `certs`, the banner's push commands name it with
/// `--certs` (not three file flags) and work from any folder.
#[tokio::test]
async fn serve_banner_names_a_custom_certs_folder() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("elsewhere").join("sim-certs");
    let certs_arg = certs.to_str().expect("temporary paths are UTF-8");
    let mut serve = spawn_serve(dir.path(), &["--devices", "1", "--certs", certs_arg]);
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let other = tempfile::tempdir().unwrap();
    for prefix in ["cargo run -- push --token", "cargo run -- push --http2"] {
        let command = line_where(&mut lines, |l| l.trim_start().starts_with(prefix)).await;
        let args = shell_words(command.trim().trim_start_matches("cargo run -- "));
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--certs" && Path::new(&w[1]) == certs),
            "{command}"
        );
        for file_flag in ["--cert", "--key", "--ca"] {
            assert!(!args.iter().any(|a| a == file_flag), "{command}");
        }
        let (ok, out, err) = run(apns_sim(other.path()).args(&args)).await;
        assert!(ok, "{command}: {out}{err}");
    }
    let shown = line_where(&mut lines, |l| l.contains("shows a notification")).await;
    assert!(shown.contains("Hello"), "{shown}");
    line_where(&mut lines, |l| l.contains("shows a notification")).await;
    serve.kill().await.unwrap();
}

/// `--devices` and `--scenario` both choose the demo fleet: the one typed on the command
/// line wins over the other's variable, and two from the same source are refused.
#[tokio::test]
async fn serve_fleet_flag_wins_over_the_other_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = apns_sim(dir.path())
        .env("RUST_LOG", "info")
        .env(
            "APNS_SIM_SCENARIO",
            dir.path().join("no-such-scenario.toml"),
        )
        .args(["serve", "--gateway-port", "0", "--feedback-port", "0"])
        .args([
            "--http2-port",
            "0",
            "--device-port",
            "0",
            "--control-port",
            "0",
        ])
        .args(["--devices", "1"])
        .spawn()
        .expect("serve started");
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    line_where(&mut lines, |l| l.trim_start().starts_with("DEMO-0001")).await;
    serve.kill().await.unwrap();

    let mut both_typed = apns_sim(dir.path());
    both_typed
        .args(["serve", "--devices", "1"])
        .args(["--scenario", "no-such-scenario.toml"]);
    let mut both_set = apns_sim(dir.path());
    both_set
        .arg("serve")
        .env("APNS_SIM_DEVICES", "1")
        .env("APNS_SIM_SCENARIO", "no-such-scenario.toml");
    for cmd in [&mut both_typed, &mut both_set] {
        let (code, out, err) = run_code(cmd).await;
        assert_eq!(code, Some(2), "{out}{err}");
        assert!(err.contains("--devices and --scenario"), "{err}");
    }
}

/// Without a control token, `serve` refuses a `--bind` that is not loopback before it
/// mints or binds anything, and says why.
#[tokio::test]
async fn serve_refuses_a_non_loopback_bind_for_the_control_api() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_code(
        apns_sim(dir.path())
            .args(["serve", "--bind", "0.0.0.0", "--control-port", "0"])
            .args(["--gateway-port", "0", "--feedback-port", "0"])
            .args(["--http2-port", "0", "--device-port", "0"]),
    )
    .await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("--control-token") && err.contains("0.0.0.0"),
        "{err}"
    );
    assert!(!dir.path().join("certs").exists(), "nothing minted");
}

/// The banner names the control API's address, and it answers there.
#[tokio::test]
async fn serve_banner_names_the_control_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = spawn_serve(dir.path(), &["--devices", "0"]);
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let line = line_where(&mut lines, |l| l.starts_with("  control API      ")).await;
    let addr: std::net::SocketAddr = line
        .trim_start_matches("  control API      ")
        .trim()
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback(), "{line}");
    let (status, health) = crate::control::get_at(addr, "/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["endpoints"]["control"], addr.to_string());
    serve.kill().await.unwrap();
}

/// The demo fleet of `serve` is driven through the control API: a test push reaches a demo
/// device, its inbox entry downloads as an `.apns` file, and `apns-sim push --file` sends
/// that file again (the bundle in the file as the topic), which the device shows as well.
#[tokio::test]
async fn an_inbox_download_is_sent_again_by_push_file() {
    use crate::control_devices::{call, call_raw};
    use http::Method;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let mut serve = spawn_serve(dir.path(), &["--devices", "1"]);
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let addr_after = |line: &str, label: &str| -> std::net::SocketAddr {
        line.trim_start_matches(label)
            .trim()
            .parse()
            .expect("an address")
    };
    let http2 = line_where(&mut lines, |l| l.starts_with("  HTTP/2 API       ")).await;
    let http2 = addr_after(&http2, "  HTTP/2 API       ");
    let control = line_where(&mut lines, |l| l.starts_with("  control API      ")).await;
    let control = addr_after(&control, "  control API      ");
    line_where(&mut lines, |l| l.starts_with("demo devices:")).await;

    let (status, list) = call(control, Method::GET, "/v1/devices", None).await;
    assert_eq!(status, 200, "{list}");
    let device = &list["devices"][0];
    assert_eq!(device["managed"], true, "{list}");
    let serial = device["serial"].as_str().unwrap().to_owned();
    let token = device["apps"][0]["token"].as_str().unwrap().to_owned();

    let payload = json!({"aps": {"alert": "again"}, "id": 7});
    let (status, answer) = call(
        control,
        Method::POST,
        "/v1/push",
        Some(json!({"token": token, "payload": payload})),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_u64()),
        (200, Some(200)),
        "{answer}"
    );
    let wait = format!("/v1/notifications/wait?token={token}&outcome=acknowledged&count=1");
    let (status, _) = call(control, Method::GET, &wait, None).await;
    assert_eq!(status, 200);
    line_where(&mut lines, |l| {
        l.contains("shows a notification") && l.contains("again")
    })
    .await;
    let (_, inbox) = call(
        control,
        Method::GET,
        &format!("/v1/devices/{serial}/inbox"),
        None,
    )
    .await;
    let index = inbox["notifications"][0]["index"]
        .as_u64()
        .expect("an index");
    let (status, _, file) = call_raw(
        control,
        Method::GET,
        &format!("/v1/devices/{serial}/inbox/{index}/apns"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let path = dir.path().join("again.apns");
    std::fs::write(&path, &file).unwrap();

    let (ok, out, err) = run(apns_sim(dir.path()).args([
        "push",
        "--http2",
        "--api",
        &http2.to_string(),
        "--token",
        &token,
        "--file",
        path.to_str().unwrap(),
    ]))
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(": 200 "), "{out}");
    let wait = format!("/v1/notifications/wait?token={token}&outcome=acknowledged&count=2");
    let (status, _) = call(control, Method::GET, &wait, None).await;
    assert_eq!(status, 200);
    // The device saw the same payload twice.
    line_where(&mut lines, |l| {
        l.contains("shows a notification") && l.contains("again")
    })
    .await;

    // A bad file is refused with the reason, naming the file.
    let bad = dir.path().join("bad.apns");
    std::fs::write(&bad, "[1, 2]").unwrap();
    let (ok, _, err) = run(apns_sim(dir.path()).args([
        "push",
        "--http2",
        "--api",
        &http2.to_string(),
        "--token",
        &token,
        "--file",
        bad.to_str().unwrap(),
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("bad.apns") && err.contains("not an object"),
        "{err}"
    );
    serve.kill().await.unwrap();
}
