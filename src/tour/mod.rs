//! `apns-sim tour`: a guided walk through the push flow, on a real simulator in this process.
//!
//! Five steps, each narrated in plain words, naming the part of the system that acts
//! (provider, gateway, hub, device, feedback service, HTTP/2 API) and showing the bytes on
//! the wire in hex with each field labelled ([`wire`]):
//!
//! 1. registration: a device says hello, the hub mints a token, the app server gets it;
//! 2. a push: a provider connects with its certificate, sends a command-2 frame, the hub
//!    routes it, the device shows and acknowledges it; then the same over the HTTP/2 API,
//!    answered 200 with its apns-id;
//! 3. uninstall: the next push is reported "not installed", the feedback service hands the
//!    token over, an HTTP/2 push to it gets 410 Unregistered;
//! 4. offline: a push is stored, one with expiry 0 discarded, the stored one delivered on
//!    return, and one whose expiry passes (the simulator's clock is moved) expired;
//! 5. an error response: a bad notification in a batch gets command 8, the connection closes
//!    and the notifications after it are discarded.
//!
//! Nothing is canned: every sentence about what happened is printed after the tour has seen
//! it happen (a hub event, a client's answer, the bytes read), and the bytes shown are the
//! bytes written or read. A step that does not go as described stops the tour with an error
//! naming what was expected and what was seen.
//!
//! The HTTP/2 pushes of steps 2 and 3 are shown the same way, as the bytes the tour's HTTP/2 client
//! wrote and read (recorded from its stream, `h2`), cut into the preface and frames and
//! labelled field by field, HPACK included, by [`crate::protocol::h2wire`].
//!
//! The tour's own simulator listens on 127.0.0.1 with ports chosen by the system, except the
//! control API, which takes [`TourConfig::control_port`] so its dashboard can be opened
//! before the tour starts: it shows the same events live. With [`TourConfig::linger`] the
//! simulator stays up after the last step, so the dashboard can still be looked at.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Stdin};
use tokio::sync::broadcast;

use crate::hub::{Event, Logged};

mod device;
mod h2;
mod steps;
pub mod wire;

/// How long the tour waits for the hub to report what a step did.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many hub events the tour keeps while it waits for another one (events of other
/// parts of a step may arrive first, in any order).
const BACKLOG: usize = 1024;

/// How the tour moves from one step to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Straight through (`--fast`, and whenever stdin is not a terminal).
    Straight,
    /// "Press Enter to go on" after each step, reading a line from stdin.
    Enter,
}

/// What [`Pace::before_step`] returns: the wait, however it is done.
pub type PauseFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<()>> + 'a>>;

/// Pacing of one's own, for [`run_with`]: called before each step with the control API's
/// address, so a program (a test) can act on the running simulator between steps, as a
/// person at the dashboard could.
pub trait Pace {
    /// Waits, or acts, before step `next` (1 to 5) starts; with [`LINGER`], after the last
    /// step, before the simulator stops (when the tour lingers).
    fn before_step(&mut self, next: u8, control: SocketAddr) -> PauseFuture<'_>;
}

/// What the tour needs from the command line.
#[derive(Debug, Clone, Copy)]
pub struct TourConfig {
    /// Port of the control API and its dashboard on 127.0.0.1 (0: chosen by the system).
    pub control_port: u16,
    /// Whether to wait for Enter between steps.
    pub pacing: Pacing,
    /// Whether the simulator stays up after the last step, until Enter or the end of stdin
    /// (with [`run_with`], until the hook's call for step [`LINGER`] returns), so that its
    /// dashboard can still be looked at.
    pub linger: bool,
}

/// The `next` that [`Pace::before_step`] is called with once the steps are over, when the
/// tour lingers ([`TourConfig::linger`]): the simulator is still up, everything done.
pub const LINGER: u8 = 6;

/// Why the tour stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    /// The simulator could not start (a busy control port, most often).
    #[error("starting the tour's simulator: {0}")]
    Start(String),
    /// The narration could not be written (or stdin read). The message carries the cause
    /// rather than chaining it as a `source`, so the CLI's `{:#}` says it once.
    #[error("writing the tour: {0}")]
    Output(std::io::Error),
    /// Something did not happen as the step describes; the message says what was seen.
    #[error("{0}")]
    Failed(String),
    /// A step failed; the tour said so in its output too.
    #[error("step {step} ({title}) failed: {why}")]
    Step {
        /// Its number, 1 to 5.
        step: u8,
        /// Its title.
        title: &'static str,
        /// What went wrong.
        why: Box<TourError>,
    },
}

impl From<std::io::Error> for TourError {
    fn from(e: std::io::Error) -> Self {
        TourError::Output(e)
    }
}

/// Runs the whole tour, writing the narration to `out`. Returns once every step has been
/// seen to happen, or with the first that did not (after saying so in `out`).
pub async fn run(config: TourConfig, out: &mut dyn Write) -> Result<(), TourError> {
    let pacer = match config.pacing {
        Pacing::Straight => Pacer::Straight,
        Pacing::Enter => Pacer::Enter(None),
    };
    steps::Tour::start(config, Narrator::new(out, pacer))
        .await?
        .run()
        .await
}

/// [`run`] with `pace` called before each step instead of [`TourConfig::pacing`].
pub async fn run_with(
    config: TourConfig,
    out: &mut dyn Write,
    pace: &mut dyn Pace,
) -> Result<(), TourError> {
    steps::Tour::start(config, Narrator::new(out, Pacer::Hook(pace)))
        .await?
        .run()
        .await
}

/// How the narrator waits between steps.
enum Pacer<'a> {
    /// Not at all.
    Straight,
    /// For Enter on stdin (opened at the first pause).
    Enter(Option<BufReader<Stdin>>),
    /// As the caller says.
    Hook(&'a mut dyn Pace),
}

/// Waits for a line on `stdin` (opening it if needed); end of input counts as one.
async fn read_line(stdin: &mut Option<BufReader<Stdin>>) -> std::io::Result<usize> {
    let stdin = stdin.get_or_insert_with(|| BufReader::new(tokio::io::stdin()));
    let mut line = String::new();
    stdin.read_line(&mut line).await
}

/// Writes the narration and paces it.
struct Narrator<'a> {
    out: &'a mut dyn Write,
    pacer: Pacer<'a>,
}

impl<'a> Narrator<'a> {
    fn new(out: &'a mut dyn Write, pacer: Pacer<'a>) -> Self {
        Narrator { out, pacer }
    }

    /// A line as it is.
    fn line(&mut self, text: &str) -> Result<(), TourError> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    /// A step's heading.
    fn heading(&mut self, step: u8, title: &str) -> Result<(), TourError> {
        let text = format!("Step {step} of {}: {title}", steps::STEPS);
        writeln!(self.out, "\n{text}\n{}", "=".repeat(text.chars().count()))?;
        Ok(())
    }

    /// A sentence said by (about) one part of the system.
    fn say(&mut self, who: &str, text: &str) -> Result<(), TourError> {
        writeln!(self.out, "\n[{who}] {text}")?;
        Ok(())
    }

    /// Bytes on the wire: a title, the hex dump and each field.
    fn bytes(
        &mut self,
        title: &str,
        bytes: &[u8],
        labels: &[wire::Label],
    ) -> Result<(), TourError> {
        writeln!(self.out, "  {title}, {} bytes:", bytes.len())?;
        write!(self.out, "{}", wire::render(bytes, labels, "    "))?;
        Ok(())
    }

    /// One HTTP/2 unit (the preface or a frame) that went `arrow` (`provider → HTTP/2 API`).
    fn h2(&mut self, arrow: &str, unit: &crate::protocol::h2wire::Unit) -> Result<(), TourError> {
        writeln!(self.out, "  {arrow}: {}, {} bytes:", unit.title, unit.total)?;
        write!(self.out, "{}", wire::render_h2(unit, "    "))?;
        Ok(())
    }

    /// Waits before step `next`: for Enter when pacing for a person, for the caller's hook
    /// when it has one.
    async fn pause(&mut self, next: u8, control: SocketAddr) -> Result<(), TourError> {
        match &mut self.pacer {
            Pacer::Straight => Ok(()),
            Pacer::Hook(pace) => Ok(pace.before_step(next, control).await?),
            Pacer::Enter(stdin) => {
                write!(self.out, "\nPress Enter to go on ")?;
                self.out.flush()?;
                if read_line(stdin).await? == 0 {
                    // End of input: nobody is there to press Enter any more.
                    self.pacer = Pacer::Straight;
                }
                Ok(())
            }
        }
    }
}

impl Narrator<'_> {
    /// Keeps the caller waiting after the last step, the simulator still up: until Enter or
    /// the end of stdin, or for as long as the caller's hook takes.
    async fn linger(&mut self, control: SocketAddr) -> Result<(), TourError> {
        if let Pacer::Hook(pace) = &mut self.pacer {
            return Ok(pace.before_step(LINGER, control).await?);
        }
        self.lingering(control)?;
        let mut unopened = None;
        let stdin = match &mut self.pacer {
            Pacer::Enter(stdin) => stdin,
            _ => &mut unopened,
        };
        read_line(stdin).await?;
        Ok(())
    }

    /// Says that the simulator stays up, and how to stop it.
    fn lingering(&mut self, control: SocketAddr) -> Result<(), TourError> {
        writeln!(
            self.out,
            "\nThe simulator stays up so you can look around: the dashboard at http://{control}/ \
             shows every step above. Press Enter (or end the input) to stop it."
        )?;
        self.out.flush()?;
        Ok(())
    }
}

/// The hub's events as the tour hears them: subscribed before anything happens, and kept
/// while the tour waits for a particular one.
struct Watch {
    rx: broadcast::Receiver<Logged>,
    backlog: VecDeque<Event>,
}

impl Watch {
    fn new(rx: broadcast::Receiver<Logged>) -> Self {
        Watch {
            rx,
            backlog: VecDeque::new(),
        }
    }

    /// The first event `pick` takes (from those heard already, then live), within
    /// [`EVENT_TIMEOUT`]; `what` names it for the error when it does not come.
    async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, TourError> {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            if let Some(found) = self.backlog.remove(i).and_then(|e| pick(&e)) {
                return Ok(found);
            }
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => {
                    return Err(TourError::Failed(format!(
                        "the hub did not report {what} within {EVENT_TIMEOUT:?}"
                    )))
                }
                Ok(Ok(logged)) => {
                    if let Some(found) = pick(&logged.event) {
                        return Ok(found);
                    }
                    if self.backlog.len() == BACKLOG {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(logged.event);
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(TourError::Failed(format!(
                        "the hub stopped before reporting {what}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(serial: &str, seq: u64) -> Logged {
        Logged {
            seq,
            event: Event::DeviceOnline {
                at_ms: 0,
                serial: serial.to_owned(),
                environment: crate::protocol::Environment::Sandbox,
            },
        }
    }

    fn serial_of(e: &Event) -> Option<String> {
        match e {
            Event::DeviceOnline { serial, .. } => Some(serial.clone()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_whose_event_never_comes_fails_naming_it() {
        let (tx, rx) = broadcast::channel(8);
        let mut watch = Watch::new(rx);
        let err = watch
            .until("the device coming online", serial_of)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the hub did not report the device coming online within 10s"
        );
        drop(tx);
    }

    #[tokio::test]
    async fn events_heard_while_waiting_for_another_are_kept() {
        let (tx, rx) = broadcast::channel(8);
        let mut watch = Watch::new(rx);
        tx.send(online("A", 1)).unwrap();
        tx.send(online("B", 2)).unwrap();
        let b = watch
            .until("B", |e| serial_of(e).filter(|s| s == "B"))
            .await
            .unwrap();
        assert_eq!(b, "B");
        let a = watch
            .until("A", |e| serial_of(e).filter(|s| s == "A"))
            .await
            .unwrap();
        assert_eq!(a, "A");
        drop(tx);
        let err = watch.until("C", serial_of).await.unwrap_err();
        assert!(
            err.to_string().contains("stopped before reporting C"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn straight_pacing_never_reads_stdin() {
        let mut out = Vec::new();
        let mut n = Narrator::new(&mut out, Pacer::Straight);
        n.heading(1, "title").unwrap();
        n.pause(2, "127.0.0.1:1".parse().unwrap()).await.unwrap();
        assert!(matches!(n.pacer, Pacer::Straight));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "\nStep 1 of 5: title\n==================\n");
    }
}
