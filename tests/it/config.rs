//! `serve`'s configuration through the binary: a file (`--config`), `APNS_SIM_*` variables
//! and flags override each other in that order, seen in what a running `serve` does (the
//! address it binds, the length of the tokens it mints) and in `serve --print-config`; a bad
//! file is refused with its line and column before anything is minted; `config init` prints
//! a file that reads back as the defaults; the README's table is the library's.

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::process::{apns_sim, line_where, run_code};

/// A file that moves every port to 0, binds 127.0.0.2, mints 40-byte tokens, starts one
/// demo device, sets a deadline and keeps its state in memory (a second start mints afresh).
const FILE: &str = "# a test's configuration\n\
    gateway_port = 0\nfeedback_port = 0\nhttp2_port = 0\ndevice_port = 0\ncontrol_port = 0\n\
    bind = \"127.0.0.2\"\ntoken_len = 40\ndevices = 1\nhello_timeout = \"3s\"\n\
    linger = \"750ms\"\nin_memory = true\n";

/// Starts `serve` with `cmd`'s configuration and returns the address its gateway binds
/// and the token its demo device got.
async fn serve_and_see(cmd: &mut Command) -> (std::net::SocketAddr, String) {
    let mut serve = cmd.spawn().expect("serve started");
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let gateway = line_where(&mut lines, |l| l.starts_with("  binary gateway ")).await;
    let gateway = gateway
        .trim_start_matches("  binary gateway ")
        .trim()
        .parse()
        .expect("an address");
    let device = line_where(&mut lines, |l| l.trim_start().starts_with("DEMO-0001")).await;
    let token = device.split_whitespace().last().unwrap().to_owned();
    serve.kill().await.unwrap();
    (gateway, token)
}

/// file < environment < flag, seen in what `serve` binds and mints.
#[tokio::test]
async fn the_environment_overrides_the_file_and_a_flag_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sim.toml"), FILE).unwrap();

    // The file alone: its address and token length.
    let (gateway, token) =
        serve_and_see(apns_sim(dir.path()).args(["serve", "--config", "sim.toml"])).await;
    assert_eq!(gateway.ip().to_string(), "127.0.0.2");
    assert_eq!(token.len(), 80, "{token}");

    // A variable beats the file (the file named by a variable too).
    let (gateway, token) = serve_and_see(
        apns_sim(dir.path())
            .env("APNS_SIM_CONFIG", "sim.toml")
            .env("APNS_SIM_TOKEN_LEN", "50")
            .arg("serve"),
    )
    .await;
    assert_eq!(gateway.ip().to_string(), "127.0.0.2");
    assert_eq!(token.len(), 100, "{token}");

    // A flag beats both.
    let (gateway, token) = serve_and_see(
        apns_sim(dir.path())
            .env("APNS_SIM_TOKEN_LEN", "50")
            .env("APNS_SIM_BIND", "127.0.0.3")
            .args(["serve", "--config", "sim.toml", "--token-len", "60"])
            .args(["--bind", "127.0.0.1"]),
    )
    .await;
    assert_eq!(gateway.ip().to_string(), "127.0.0.1");
    assert_eq!(token.len(), 120, "{token}");
}

/// `serve --print-config` shows the same precedence for the deadlines, as TOML.
#[tokio::test]
async fn print_config_shows_the_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sim.toml"), FILE).unwrap();
    let (code, out, err) = run_code(
        apns_sim(dir.path())
            .env("APNS_SIM_HELLO_TIMEOUT", "4s")
            .env("APNS_SIM_LINGER", "1s")
            .env("APNS_SIM_DEVICE_HEARTBEAT", "1m")
            .args(["serve", "--config", "sim.toml", "--print-config"])
            .args(["--linger", "250ms", "--accept-uppercase-apns-id", "false"]),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let shown: toml::Table = toml::from_str(&out).expect("the output is TOML");
    let text = |key: &str| shown[key].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("hello_timeout"), "4s", "environment over file");
    assert_eq!(text("linger"), "250ms", "flag over environment and file");
    assert_eq!(text("device_heartbeat"), "1m", "environment over default");
    assert_eq!(text("handshake_timeout"), "5s", "the default");
    assert_eq!(shown["token_len"].as_integer(), Some(40), "the file");
    assert_eq!(shown["accept_uppercase_apns_id"].as_bool(), Some(false));
    assert!(!dir.path().join("certs").exists(), "nothing minted");
}

/// A file with an unknown key, a value of the wrong type or out of bounds, or bad TOML is
/// refused with its line and column (exit code 2), before anything is minted or bound.
#[tokio::test]
async fn a_bad_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "token_len = 40\n\n  tokn_len = 3\n",
            "bad.toml:3:3: unknown key `tokn_len`",
        ),
        (
            "# the timeouts\nhello_timeout = 10\n",
            "bad.toml:2:17: hello_timeout: expected a duration",
        ),
        (
            "bind = \"::1\"\ntoken_len = \"forty\"\n",
            "bad.toml:2:13: token_len: expected a whole number",
        ),
        (
            "default_storage_days = 3651\n",
            "bad.toml:1:24: default_storage_days: 3651 is not within 1 to 3650",
        ),
        ("gateway_port = = 1\n", "bad.toml:1:"),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let (code, out, err) =
            run_code(apns_sim(dir.path()).args(["serve", "--config", "bad.toml"])).await;
        assert_eq!(code, Some(2), "{text}: {out}{err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let (code, _, err) = run_code(
        apns_sim(dir.path())
            .env("APNS_SIM_HANDSHAKE_TIMEOUT", "soon")
            .args(["serve", "--print-config"]),
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(
        err.contains("APNS_SIM_HANDSHAKE_TIMEOUT: \"soon\""),
        "{err}"
    );
    assert!(!dir.path().join("certs").exists(), "nothing minted");
}

/// `config init` prints every setting at its default; read back unchanged it gives the
/// defaults, so `serve --config` of it prints the same file again.
#[tokio::test]
async fn config_init_reads_back_as_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (code, init, err) = run_code(apns_sim(dir.path()).args(["config", "init"])).await;
    assert_eq!(code, Some(0), "{err}");
    for entry in apns_sim::config::ENTRIES {
        assert!(
            init.contains(&format!("\n{} = ", entry.key))
                || init.contains(&format!("\n# {} = ", entry.key)),
            "{} missing from:\n{init}",
            entry.key
        );
        assert!(init.contains(&format!("({}, --{})", entry.env(), entry.flag())));
    }
    std::fs::write(dir.path().join("defaults.toml"), &init).unwrap();
    let (code, shown, err) = run_code(apns_sim(dir.path()).args([
        "serve",
        "--config",
        "defaults.toml",
        "--print-config",
    ]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(shown, init);
    let (code, bare, _) = run_code(apns_sim(dir.path()).args(["serve", "--print-config"])).await;
    assert_eq!(code, Some(0));
    assert_eq!(bare, init);
}

/// The README's table of settings is the one the library makes from its entries.
#[test]
fn readme_lists_every_setting() {
    let readme = include_str!("../../README.md");
    let table = apns_sim::config::markdown_table();
    assert!(
        readme.contains(&table),
        "README's table of settings is out of date; it should read:\n{table}"
    );
}

/// A few of the exit codes README's table documents: 0 for done, 1 for a verdict or an
/// answer that says no, 2 for every other error (usage errors included).
#[tokio::test]
async fn exit_codes_are_the_documented_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad-scenario.toml"), "nonsense = 1\n").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let cases: [(&[&str], i32); 6] = [
        (&["config", "init"], 0),
        (&["serve", "--print-config"], 0),
        (&["scenario", "check", "bad-scenario.toml"], 1),
        (&["no-such-command"], 2),
        (&["serve", "--config", "missing.toml"], 2),
        (&["feedback", "--feedback", &nowhere], 2),
    ];
    for (args, expected) in cases {
        let (code, out, err) = run_code(apns_sim(dir.path()).args(args)).await;
        assert_eq!(code, Some(expected), "{args:?}: {out}{err}");
    }
}
