//! `apns-sim test --scenario FILE -- COMMAND…` through the real binary, with COMMAND a
//! shell script that uses the `APNS_SIM_*` variables (and the binary's own `push` as its
//! provider): a pass (exit 0, reports written), a COMMAND that fails (its code passed
//! through, 128 + N for a signal), an expectation that fails (exit 1, expected and seen
//! printed; a push the simulator refused fails `nothing_else`), the `APNS_SIM_INFO` file
//! read back and checked against the variables, a scenario with provider steps refused
//! at their line, and the scenario's timeline running alongside COMMAND (a step takes a
//! device offline, COMMAND waits for it on the control API and pushes to it).

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// One device with the default app, an auth key for token auth, and what the device must
/// show: `{count}` notifications, the first saying "binary".
fn scenario(count: u32) -> String {
    format!(
        r#"
name = "a provider of the user's"

[[app]]
bundle = "com.example.app"
key_id = "TESTKEY001"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[expect]]
name = "the phone shows what COMMAND pushed"
shows = {{ device = "PHONE-1", app = "com.example.app", count = {count}, payloads = [{{ aps = {{ alert = "binary" }} }}] }}

[[expect]]
nothing_else = true
"#
    )
}

/// A binary push (command 2) of `{"aps":{"alert":"binary"}}` to APNS_SIM_TOKEN through
/// APNS_SIM_GATEWAY with the provider certificate the variables name.
fn binary_push() -> String {
    format!(
        r#"{BIN} push --gateway "$APNS_SIM_GATEWAY" --token "$APNS_SIM_TOKEN" \
            --cert "$APNS_SIM_CERT_FILE" --key "$APNS_SIM_KEY_FILE" --ca "$APNS_SIM_CA_FILE" \
            --payload '{{"aps":{{"alert":"binary"}}}}' --wait-ms 300"#
    )
}

/// Runs `apns-sim test` on `text` (written to `dir`) with `/bin/sh -c script` as COMMAND.
async fn test(dir: &Path, text: &str, extra: &[&str], script: &str) -> Output {
    let file = dir.join("scenario.toml");
    std::fs::write(&file, text).unwrap();
    Command::new(BIN)
        .arg("test")
        .arg("--scenario")
        .arg(&file)
        .args(extra)
        .args(["--", "/bin/sh", "-c", script])
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("apns-sim test runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// COMMAND pushes over the binary gateway (certificate) and over HTTP/2 (provider token),
/// every expectation holds: exit 0, and the JSON and JUnit reports say so.
#[tokio::test]
async fn a_passing_command_and_expectations_exit_0_with_reports() {
    let dir = tempfile::tempdir().unwrap();
    let http2 = format!(
        r#"{BIN} push --http2 --api "$APNS_SIM_HTTP2" --auth token \
            --auth-key "$APNS_SIM_AUTH_KEY_FILE" --key-id "$APNS_SIM_KEY_ID" \
            --team-id "$APNS_SIM_TEAM_ID" --ca "$APNS_SIM_CA_FILE" --token "$APNS_SIM_TOKEN" \
            --payload '{{"aps":{{"alert":"http2"}}}}'"#
    );
    let script = format!("set -e; {} && {http2}", binary_push());
    let mut text = scenario(2);
    text = text.replace(
        r#"payloads = [{ aps = { alert = "binary" } }]"#,
        r#"payloads = [{ aps = { alert = "binary" } }, { aps = { alert = "http2" } }]"#,
    );
    let out = test(
        dir.path(),
        &text,
        &["--json", "report.json", "--junit", "report.xml"],
        &script,
    )
    .await;
    let printed = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("200"),
        "the HTTP/2 push's answer: {printed}"
    );
    assert!(
        printed.contains("PASS the phone shows what COMMAND pushed"),
        "{printed}"
    );
    assert!(
        printed.contains("PASSED (3 of 3 expectations hold"),
        "{printed}"
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["command"]["exited"], 0);
    assert_eq!(json["passed"], true);
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    assert!(xml.contains("testcase"), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

/// A COMMAND that fails decides the exit code, whatever the verdicts; a signal reads as
/// 128 + its number.
#[tokio::test]
async fn a_failing_command_passes_its_exit_code_through() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!("{} >/dev/null; exit 7", binary_push());
    let out = test(dir.path(), &scenario(1), &[], &script).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(7), "{printed}");
    assert!(
        printed.contains("FAILED command: exited with code 7"),
        "{printed}"
    );
    // The push did reach the phone: the expectations were checked all the same.
    assert!(
        printed.contains("PASS the phone shows what COMMAND pushed"),
        "{printed}"
    );
    assert!(printed.contains("FAIL COMMAND"), "{printed}");

    let out = test(dir.path(), &scenario(1), &[], "kill -9 $$").await;
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("killed by signal 9"),
        "{}",
        stdout(&out)
    );
}

/// COMMAND succeeds but pushes one notification where the scenario expects two: exit 1,
/// with what was expected, what was seen and the closest record.
#[tokio::test]
async fn a_failing_expectation_exits_1_with_expected_and_seen() {
    let dir = tempfile::tempdir().unwrap();
    let out = test(dir.path(), &scenario(2), &[], &binary_push()).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("PASS COMMAND"), "{printed}");
    assert!(
        printed.contains("FAIL the phone shows what COMMAND pushed"),
        "{printed}"
    );
    assert!(
        printed.contains("expected: PHONE-1 shows of com.example.app 2 notification(s)"),
        "{printed}"
    );
    assert!(
        printed.contains("seen:     PHONE-1 shows 1 notification(s)"),
        "{printed}"
    );
    assert!(
        printed.contains(r#"{"aps":{"alert":"binary"}}"#),
        "{printed}"
    );

    // A push the simulator refused (a token nobody holds) is "something else" under test,
    // even when COMMAND shrugs it off.
    let refused = format!(
        "{} >/dev/null; {} || true",
        binary_push(),
        binary_push().replace("\"$APNS_SIM_TOKEN\"", &"ab".repeat(32))
    );
    let out = test(dir.path(), &scenario(1), &[], &refused).await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("PASS the phone shows what COMMAND pushed"),
        "{printed}"
    );
    assert!(printed.contains("FAIL nothing else happened"), "{printed}");
    assert!(
        printed.contains(&format!(
            "a binary push to {} was rejected",
            "ab".repeat(32)
        )),
        "{printed}"
    );
}

/// The info file holds every variable's value, every app with its files and every token
/// of every device; the files exist while COMMAND runs and are gone afterwards.
#[tokio::test]
async fn the_info_file_and_the_variables_describe_the_world() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[[app]]
bundle = "com.example.app"
key_id = "TESTKEY002"

[[app]]
bundle = "com.example.sandboxonly"
team = "OTHERTEAM1"
certificate = "sandbox"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app", "com.example.app:voip"]

[[device]]
serial = "FLEET"
environment = "production"
count = 2
apps = ["com.example.sandboxonly"]

[[expect]]
nothing_else = true
"#;
    let script = r#"set -e
cp "$APNS_SIM_INFO" info.json
env | grep '^APNS_SIM_' | sort > env.txt
for f in "$APNS_SIM_CERT_FILE" "$APNS_SIM_KEY_FILE" "$APNS_SIM_CA_FILE" "$APNS_SIM_AUTH_KEY_FILE"; do
  test -s "$f"
done"#;
    let out = test(dir.path(), text, &[], script).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("info.json")).unwrap())
            .unwrap();
    let env: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(dir.path().join("env.txt"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    for (var, key) in [
        ("APNS_SIM_GATEWAY", "gateway"),
        ("APNS_SIM_FEEDBACK", "feedback"),
        ("APNS_SIM_HTTP2", "http2"),
        ("APNS_SIM_CONTROL_URL", "control_url"),
        ("APNS_SIM_TOKEN", "token"),
        ("APNS_SIM_CERT_FILE", "cert_file"),
        ("APNS_SIM_KEY_FILE", "key_file"),
        ("APNS_SIM_CA_FILE", "ca_file"),
        ("APNS_SIM_AUTH_KEY_FILE", "auth_key_file"),
        ("APNS_SIM_KEY_ID", "key_id"),
        ("APNS_SIM_TEAM_ID", "team_id"),
    ] {
        assert_eq!(
            env.get(var).map(String::as_str),
            info[key].as_str(),
            "{var} and info.{key}"
        );
    }
    for var in ["APNS_SIM_GATEWAY", "APNS_SIM_FEEDBACK", "APNS_SIM_HTTP2"] {
        let addr: std::net::SocketAddr = env[var].parse().expect("host:port");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{var}");
    }
    assert!(env["APNS_SIM_CONTROL_URL"].starts_with("http://127.0.0.1:"));
    assert_eq!(info["key_id"], "TESTKEY002");
    assert_eq!(info["team_id"], "SIMTEAM001");
    assert!(env["APNS_SIM_AUTH_KEY_FILE"].ends_with("AuthKey_TESTKEY002.p8"));

    let devices = info["devices"].as_array().unwrap();
    let rows: Vec<(String, String, String, String)> = devices
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("serial"), s("environment"), s("app"), s("kind"))
        })
        .collect();
    let row = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    assert_eq!(
        rows,
        [
            row("PHONE-1", "sandbox", "com.example.app", "remote"),
            row("PHONE-1", "sandbox", "com.example.app", "voip"),
            row(
                "FLEET-0001",
                "production",
                "com.example.sandboxonly",
                "remote"
            ),
            row(
                "FLEET-0002",
                "production",
                "com.example.sandboxonly",
                "remote"
            ),
        ]
    );
    assert_eq!(info["token"], devices[0]["token"]);
    let tokens: std::collections::HashSet<&str> = devices
        .iter()
        .map(|d| d["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 4, "every token is its own");

    let apps = info["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[1]["topic"], "com.example.sandboxonly");
    assert_eq!(apps[1]["team_id"], "OTHERTEAM1");
    assert_eq!(apps[1]["environment"], "sandbox");
    assert!(apps[1]["auth_key_file"].is_null());
    assert!(apps[1]["cert_file"]
        .as_str()
        .unwrap()
        .ends_with("provider-com.example.sandboxonly-sandbox.pem"));
    assert_eq!(apps[0]["cert_file"], info["cert_file"]);
    // The credentials lived only as long as the test.
    let folder = Path::new(info["ca_file"].as_str().unwrap())
        .parent()
        .unwrap();
    assert!(!folder.exists(), "{} was removed", folder.display());
}

/// A scenario whose own provider pushes is refused under `test` at the step's line and
/// field (exit 2), and COMMAND does not run.
#[tokio::test]
async fn provider_steps_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[step]]
name = "push-1"
push = { device = "PHONE-1", app = "com.example.app" }
"#;
    let out = test(dir.path(), text, &[], "touch ran").await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("scenario.toml:8: step[1].push:"),
        "{printed}"
    );
    assert!(printed.contains("COMMAND is the provider"), "{printed}");
    assert!(!dir.path().join("ran").exists(), "COMMAND did not run");
}

/// Starts `apns-sim test` on a one-phone scenario written to `dir`, with the shell script
/// `script` as COMMAND (meant to run until it is killed), its standard output piped.
fn long_test(dir: &Path, script: &str) -> tokio::process::Child {
    let file = dir.join("scenario.toml");
    std::fs::write(&file, scenario(1)).unwrap();
    Command::new(BIN)
        .arg("test")
        .arg("--scenario")
        .arg(&file)
        .args(["--", "/bin/sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("apns-sim test runs")
}

/// Ctrl-C (SIGINT) while COMMAND runs: COMMAND is killed, the temporary folder with the
/// credentials is removed, and `apns-sim test` exits 130 as a shell reports an
/// interrupted command.
#[tokio::test]
async fn an_interrupted_test_kills_command_and_removes_its_folder() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let mut child = long_test(
        dir.path(),
        r#"echo "READY $(dirname "$APNS_SIM_INFO")"; exec sleep 600"#,
    );
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    // COMMAND says it runs and where its credentials are.
    let folder = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(folder) = line.strip_prefix("READY ") {
                return std::path::PathBuf::from(folder);
            }
        }
        panic!("no READY line: {printed}");
    })
    .await
    .expect("COMMAND started");
    assert!(folder.join("apns-sim-info.json").exists(), "{printed}");

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
        }
        child.wait().await.unwrap()
    })
    .await;
    // If it hangs, say where: whether apns-sim is still running (or only COMMAND, holding
    // standard output open), and what it printed.
    let Ok(status) = ended else {
        panic!(
            "apns-sim test had not ended 60 s after Ctrl-C (apns-sim: {:?}; folder left: {}); printed:\n{printed}",
            child.try_wait(),
            folder.exists()
        );
    };
    assert_eq!(status.code(), Some(130), "{printed}");
    assert!(printed.contains("stopped by the user"), "{printed}");
    assert!(!folder.exists(), "{} is left behind", folder.display());
}

/// Ctrl-C at the first moment COMMAND runs (COMMAND itself sends SIGINT to `apns-sim test`
/// before anything else): the handler is installed before COMMAND starts, so the signal
/// is caught, COMMAND killed and its folder removed, not the process ended by the signal's
/// default with COMMAND left running and holding its standard output open.
#[tokio::test]
async fn a_ctrl_c_as_command_starts_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let child = long_test(
        dir.path(),
        r#"kill -INT $PPID; echo "READY $(dirname "$APNS_SIM_INFO")"; exec sleep 600"#,
    );
    // Standard output ends only when both apns-sim and COMMAND are gone.
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("apns-sim test and COMMAND exit after Ctrl-C")
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{printed}");
    assert!(printed.contains("stopped by the user"), "{printed}");
    let folder = printed
        .lines()
        .find_map(|l| l.strip_prefix("READY "))
        .map(std::path::PathBuf::from);
    if let Some(folder) = folder {
        assert!(!folder.exists(), "{} is left behind", folder.display());
    }
}

/// A Python script (standard library only) that waits on the control API's event stream,
/// which replays from the start, until `TABLET-1` has gone offline, at most 20 s, then
/// prints its token; it exits 3 if the tablet never goes.
const AWAIT_TABLET_OFFLINE: &str = r#"import json, os, sys, time, urllib.request
deadline = time.monotonic() + 20
url = os.environ["APNS_SIM_CONTROL_URL"] + "/v1/events?since=0"
try:
    with urllib.request.urlopen(url, timeout=20) as stream:
        event = None
        while time.monotonic() < deadline:
            line = stream.readline().decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "device_offline":
                if json.loads(line.split(":", 1)[1])["serial"] == "TABLET-1":
                    info = json.load(open(os.environ["APNS_SIM_INFO"]))
                    tablet = [d for d in info["devices"] if d["serial"] == "TABLET-1"]
                    print(tablet[0]["token"])
                    sys.exit(0)
except TimeoutError:
    pass
sys.exit(3)
"#;

/// The scenario's timeline runs alongside COMMAND: its step takes the tablet offline,
/// COMMAND waits until the control API says so and then pushes to the tablet a
/// notification that is for now or never (expiry 0), which an offline device never
/// shows. Were the step not run, COMMAND would wait in vain (exit 3), and had it pushed
/// anyway the online tablet would show it, failing the tablet's `shows`.
#[tokio::test]
async fn the_timeline_runs_alongside_command() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[[app]]
bundle = "com.example.app"

[[device]]
serial = "PHONE-1"
apps = ["com.example.app"]

[[device]]
serial = "TABLET-1"
apps = ["com.example.app"]

[[step]]
name = "away"
offline = "TABLET-1"

[[expect]]
name = "the phone shows what COMMAND pushed"
shows = { device = "PHONE-1", count = 1, payloads = [{ aps = { alert = "binary" } }] }

[[expect]]
name = "the tablet, offline when COMMAND pushed, shows nothing"
shows = { device = "TABLET-1", count = 0 }

[[expect]]
nothing_else = true
"#;
    let to_tablet = binary_push()
        .replace("\"$APNS_SIM_TOKEN\"", "\"$TABLET\"")
        .replace("--wait-ms 300", "--expiry 0 --wait-ms 300");
    std::fs::write(dir.path().join("await_offline.py"), AWAIT_TABLET_OFFLINE).unwrap();
    let script = format!(
        "set -e\nTABLET=$(python3 await_offline.py)\n{to_tablet}\n{}",
        binary_push()
    );
    let out = test(dir.path(), text, &["--json", "report.json"], &script).await;
    let printed = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("away: TABLET-1 offline"), "{printed}");
    assert!(
        printed.contains("PASS the tablet, offline when COMMAND pushed, shows nothing"),
        "{printed}"
    );
    // The tablet's notification reached the simulator and was discarded, not shown.
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], true, "{json}");

    // Without the step, COMMAND's wait for the tablet's offline is in vain: exit 3.
    let without = text.replace("[[step]]\nname = \"away\"\noffline = \"TABLET-1\"\n", "");
    let out = test(dir.path(), &without, &[], &script).await;
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
}
