//! `apns-sim completions SHELL` and `apns-sim man`: each output is a script or page of its
//! kind that names the commands and flags, and parses: `bash -n` on the bash script, and the
//! man page formatted by `man -l` (groff) without a warning. zsh and fish are not installed
//! on the CI machine, so their scripts are checked for the shape each shell loads.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::TIMEOUT;

const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// Runs `apns-sim ARGS`; returns stdout, panicking with stderr when it fails.
async fn apns_sim(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        TIMEOUT,
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("finished in time")
    .expect("apns-sim ran");
    assert!(
        output.status.success(),
        "apns-sim {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// Runs `program ARGS` with `input` on stdin: (success, stdout, stderr). A missing program
/// fails the test with what to install.
async fn pipe(
    program: &str,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut child = match Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not installed (Debian: apt-get install {program})")
        }
        Err(e) => panic!("{program}: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("finished in time")
        .expect("ran");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bash_completion_parses_and_knows_the_commands() {
    let script = apns_sim(&["completions", "bash"]).await;
    assert!(script.lines().count() > 100, "{script}");
    for word in [
        "serve",
        "certs",
        "export",
        "--format",
        "--legacy",
        "completions",
        "man",
    ] {
        assert!(script.contains(word), "{word} missing");
    }
    assert!(
        script.contains("complete -F _apns__sim"),
        "registers its function"
    );
    let (ok, _, err) = pipe("bash", &["-n"], &script, &[]).await;
    assert!(ok, "bash -n: {err}");
    // The check can fail: a truncated script does not parse.
    let cut = &script[..script.len() / 2];
    let (ok, _, _) = pipe("bash", &["-n"], cut, &[]).await;
    assert!(!ok, "bash -n accepted half a script");
}

#[tokio::test]
async fn zsh_and_fish_completions_have_their_shape() {
    let zsh = apns_sim(&["completions", "zsh"]).await;
    assert!(zsh.starts_with("#compdef apns-sim\n"), "{zsh}");
    assert!(zsh.contains("_apns-sim()"), "defines its function");
    assert!(
        zsh.contains("'--legacy[") && zsh.contains("export:"),
        "{zsh}"
    );
    let fish = apns_sim(&["completions", "fish"]).await;
    let completions = fish
        .lines()
        .filter(|l| l.starts_with("complete -c apns-sim "))
        .count();
    assert!(completions > 100, "{fish}");
    assert!(
        fish.contains("__fish_seen_subcommand_from export\" -l legacy"),
        "{fish}"
    );
}

#[tokio::test]
async fn man_pages_format_without_warnings() {
    for (args, title, words) in [
        (
            &["man"][..],
            "apns-sim",
            &["certs", "completions", "--verbose"][..],
        ),
        (
            &["man", "certs", "export"],
            "apns-sim-certs-export",
            &["--format", "--password", "--legacy", "--out"],
        ),
    ] {
        let page = apns_sim(args).await;
        assert!(
            page.starts_with(".ie") || page.contains(&format!(".TH {title} 1")),
            "{args:?}: {page}"
        );
        assert!(page.contains(".SH NAME"), "{args:?}: {page}");
        assert!(page.contains(".SH SYNOPSIS"), "{args:?}: {page}");
        // man -l formats it (with groff's warnings on); nothing may be warned about.
        let (ok, text, err) = pipe(
            "man",
            &["-l", "-"],
            &page,
            &[("MANWIDTH", "100"), ("MANROFFOPT", "-ww")],
        )
        .await;
        assert!(ok, "{args:?}: man -l: {err}");
        assert!(err.is_empty(), "{args:?}: groff warned: {err}");
        for word in words {
            assert!(text.contains(word), "{args:?}: {word} missing from\n{text}");
        }
    }
    let output = Command::new(BIN)
        .args(["man", "no-such-command"])
        .output()
        .await
        .expect("ran");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no command \"no-such-command\""), "{err}");
}
