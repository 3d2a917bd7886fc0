//! The `apns-sim` binary: parses the command line, sets up logging and the runtime, runs one
//! subcommand (each lives in `cli/`) and turns its outcome into the exit code: 0 when it
//! worked, 1 when a push was answered with an error or a scenario failed, 2 for any other error (usage errors
//! included, as clap reports them); `apns-sim test` passes its COMMAND's failure through.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use tracing_subscriber::EnvFilter;

mod cli;

/// mimalloc instead of the C library's malloc, for every subcommand (`serve` and the load
/// generator alike): the simulator allocates per notification (its delivery record, the
/// device frame, the session's queue entry), and glibc's malloc and free were a seventh of
/// its samples under load. Only the binary sets it: the library leaves the choice to whoever
/// embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A full simulator of Apple Push Notification service: binary and HTTP/2 provider APIs,
/// simulated devices, and the feedback service.
#[derive(Debug, Parser)]
#[command(name = "apns-sim", version)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines as text, or as one JSON object per line (RUST_LOG filters either)
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true, env = "APNS_SIM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: cli::Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format): `timestamp`, `level`,
    /// `fields` (with `message`), `target`.
    Json,
}

/// Bytes of log lines the writer thread gathers before one write: the lines of a busy
/// moment go out in a few large writes instead of one system call each (the thread also
/// writes whenever it has drained every line queued, so a quiet log is not held back).
const LOG_BUFFER: usize = 64 * 1024;

/// Exit code of an error that is not a push refused by the simulator.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    if let Err(e) = cli.command.check(&mut command, &matches) {
        e.exit();
    }
    // Before the log writer and the runtime start their threads (`run`'s namespaces).
    if let Err(e) = cli.command.before_threads() {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_ERROR);
    }

    let default_level = match cli.verbose {
        0 => cli.command.default_log_level(),
        1 => "debug",
        _ => "trace",
    };
    // Log lines are written by a background thread, so a busy simulator's connection tasks
    // format their line and move on instead of each making a write system call. Not lossy:
    // when the writer falls behind, loggers wait. The thread writes through a buffer that it
    // flushes each time it has drained the queue: lines are written in batches. The guard
    // flushes what is left at exit.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER,
            std::io::stderr(),
        ));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text => logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logger.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(cli::Outcome::PushRefused | cli::Outcome::Failed) => ExitCode::from(1),
        Ok(cli::Outcome::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
