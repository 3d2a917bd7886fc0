//! The `apns-sim` binary as a child process, for the tests that drive it that way (`cli`,
//! `config`, `output`, `durable`): started in a folder of the test's with none of the caller's
//! `APNS_SIM_*` variables, run to completion, or read line by line until a line comes.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::common::TIMEOUT;

/// The binary cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_apns-sim");

/// The binary, run in `dir`, with none of the caller's `APNS_SIM_*` variables (each test
/// sets the ones it is about) and `RUST_LOG=warn` unless the test sets another.
pub(crate) fn apns_sim(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("APNS_SIM_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion; returns (exit code, stdout, stderr).
pub(crate) async fn run_code(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads stdout lines until one satisfies `pred`.
pub(crate) async fn line_where(
    lines: &mut Lines<BufReader<ChildStdout>>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let wait = async {
        loop {
            match lines.next_line().await.expect("read stdout") {
                Some(l) if pred(&l) => return l,
                Some(_) => {}
                None => panic!("process ended before the expected line"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("line in time")
}
