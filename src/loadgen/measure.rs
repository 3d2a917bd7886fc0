//! What `apns-sim bench` reads about the simulator besides its answers: CPU time and
//! resident memory from /proc (per thread for an in-process simulator, per process for a
//! child or a running one), and the raw TLS loopback limit of the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Linux's `USER_HZ`: /proc counts CPU time in hundredths of a second.
const TICKS_PER_SEC: f64 = 100.0;

/// Whose CPU time and memory are the simulator's.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// The simulator runs in this process on threads whose name starts with this prefix:
    /// CPU from `/proc/self/task/*/stat` of those threads, memory from /proc/self/status
    /// (which then also holds the load generator's own share).
    Threads(&'static str),
    /// The simulator is this process: `/proc/PID/stat` and `/proc/PID/status`.
    Process(u32),
    /// Nothing to read (a target on another machine, or no pid given).
    None,
}

impl Probe {
    /// Where the figures come from, in words, for the summary.
    pub(crate) fn source(&self) -> String {
        match self {
            Probe::Threads(prefix) => format!(
                "in-process: CPU of the {prefix}* threads (/proc/self/task/*/stat), RSS of this whole process (/proc/self/status)"
            ),
            Probe::Process(pid) => {
                format!("simulator process {pid}: /proc/{pid}/stat and /proc/{pid}/status")
            }
            Probe::None => "not measured (no simulator process to read)".into(),
        }
    }

    /// CPU seconds (user + system) used so far, `None` when not measurable.
    pub(crate) fn cpu_secs(&self) -> Option<f64> {
        match self {
            Probe::Threads(prefix) => threads_cpu(prefix).ok(),
            Probe::Process(pid) => {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                stat_cpu(&stat).map(|(_, secs)| secs)
            }
            Probe::None => None,
        }
    }

    /// Resident set size in KiB, `None` when not measurable.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let path = match self {
            Probe::Threads(_) => "/proc/self/status".to_owned(),
            Probe::Process(pid) => format!("/proc/{pid}/status"),
            Probe::None => return None,
        };
        let status = std::fs::read_to_string(path).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// The thread name and CPU seconds of one `stat` line (`pid (name) state … utime stime …`).
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // After the name: state is field 3 of the line, utime field 14 and stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> Result<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        if let Some((name, secs)) = stat_cpu(&stat) {
            if name.starts_with(prefix) {
                total += secs;
            }
        }
    }
    Ok(total)
}

/// The raw TLS loopback limit: one connection, fixed-size frames.
#[derive(Debug, Clone, Serialize)]
pub struct RawTls {
    /// Frames carried.
    pub frames: u64,
    /// Bytes per frame (the load generator's command-2 frame size).
    pub frame_len: usize,
    /// Frames per second, first write to last frame read.
    pub frames_per_sec: f64,
    /// Megabytes (10^6) per second.
    pub mb_per_sec: f64,
}

/// One TLS connection on loopback (the simulator's own TLS configs), `frame_len`-byte frames
/// written in 64,000-byte chunks and split again by a read loop that checks every frame: the
/// ceiling for anything that reads frames over TLS on this machine.
pub(crate) async fn raw_tls(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    frames: u64,
    frame_len: usize,
    timeout: Duration,
) -> Result<RawTls> {
    /// Frames per write: 64,000 bytes of 160-byte frames.
    const CHUNK_BYTES: usize = 64_000;
    let chunk_frames = (CHUNK_BYTES / frame_len).max(1) as u64;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let mut buf = BytesMut::with_capacity(128 * 1024);
        let mut got = 0u64;
        while got < frames {
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            if tls.read_buf(&mut buf).await? == 0 {
                bail!("raw TLS writer closed after {got} frames");
            }
            let whole = buf.len() / frame_len * frame_len;
            for frame in buf[..whole].chunks_exact(frame_len) {
                if frame[0] != 2 {
                    bail!("raw TLS frame {got} is corrupt");
                }
                got += 1;
            }
            buf.advance(whole);
        }
        anyhow::Ok(Instant::now())
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
    let mut chunk = Vec::with_capacity(chunk_frames as usize * frame_len);
    for i in 0..chunk_frames {
        let mut frame = vec![0x5Au8; frame_len];
        frame[0] = 2;
        frame[1..5].copy_from_slice(&(i as u32).to_be_bytes());
        chunk.extend_from_slice(&frame);
    }
    let start = Instant::now();
    let mut sent = 0;
    while sent < frames {
        let n = chunk_frames.min(frames - sent) as usize;
        tls.write_all(&chunk[..n * frame_len]).await?;
        sent += n as u64;
    }
    tls.flush().await?;
    let end = tokio::time::timeout(timeout, reader)
        .await
        .context("raw TLS reader too slow")???;
    let _ = tls.shutdown().await;
    let secs = (end - start).as_secs_f64().max(1e-9);
    Ok(RawTls {
        frames,
        frame_len,
        frames_per_sec: frames as f64 / secs,
        mb_per_sec: (frames * frame_len as u64) as f64 / secs / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_name_and_cpu() {
        // pid (name with ) inside) state ppid … utime=250 stime=50 …
        let line = "42 (sim-worker (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let (name, secs) = stat_cpu(line).unwrap();
        assert_eq!(name, "sim-worker (x)");
        assert!((secs - 3.0).abs() < 1e-9);
        assert_eq!(stat_cpu("garbage"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = Probe::Threads("nothing-").rss_kib().unwrap();
        assert!(rss > 0);
        assert_eq!(Probe::None.rss_kib(), None);
    }
}
