//! Progress bars for long work: starting a fleet of devices (the worlds of `serve`,
//! `apns-sim test` and `apns-sim run`, and `apns-sim device --count N`) and the load
//! generator's pump. One style for every bar ([`bar`]), drawn only where a person watches:
//! on a terminal ([`Draw`]), never into a pipe or a file, so scripts and tests reading the
//! output see no escape codes; a hidden bar costs an atomic add per step.
//!
//! [`FleetProgress`] counts a fleet's devices as they connect and as they register their
//! apps, against the fleet's size, and ends with a one-line summary.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a bar is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// Nowhere: library callers and tests, which read what they need from return values.
    Hidden,
    /// On standard output, when it is a terminal (the load generator, whose report goes
    /// there too).
    Stdout,
    /// On standard error, when it is a terminal (fleets: standard output carries the
    /// banners and events that scripts read).
    Stderr,
}

impl Draw {
    /// The indicatif target: the stream when it is a terminal, hidden otherwise.
    pub fn target(self) -> ProgressDrawTarget {
        match self {
            Draw::Stdout if std::io::stdout().is_terminal() => ProgressDrawTarget::stdout(),
            Draw::Stderr if std::io::stderr().is_terminal() => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        }
    }
}

/// A bar of `len` steps drawn on `target` in the one style, `BAR POS/LEN COUNTED, DETAIL,
/// ELAPSED elapsed`: `counted` says what a step is (`accepted`, `registered`), `detail` is
/// an indicatif template fragment (`{per_sec}`, `{msg}`).
pub fn bar(len: u64, counted: &str, detail: &str, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {counted}, {detail}, {{elapsed}} elapsed");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// A fleet's start: how many of its devices have connected and how many have registered
/// every app, against its size, on a bar whose position is the registered count. It
/// finishes by itself once every device has registered, or when the last clone is dropped
/// (a start that failed half-way), either way replacing the bar with [`FleetProgress::summary`].
/// Clone it freely: every clone counts on the same bar.
#[derive(Debug, Clone)]
pub struct FleetProgress {
    /// What every clone shares.
    inner: Arc<Fleet>,
}

/// The one copy behind every [`FleetProgress`] clone.
#[derive(Debug)]
struct Fleet {
    /// The bar (hidden when not on a terminal).
    bar: ProgressBar,
    /// The fleet's size.
    total: u64,
    /// Devices that have come online at least once.
    connected: AtomicU64,
    /// Devices that have registered every app.
    registered: AtomicU64,
    /// The bar has been replaced by the summary.
    finished: AtomicBool,
    /// When counting began, for the summary's time.
    started: Instant,
}

impl FleetProgress {
    /// Counts a fleet of `total` devices on a bar drawn as `draw` says.
    pub fn new(total: usize, draw: Draw) -> Self {
        Self::with_target(total, draw.target())
    }

    /// Counts a fleet of `total` devices on `target` (tests draw into a terminal of their
    /// own, [`ProgressDrawTarget::term_like`]). An empty fleet draws nothing.
    pub fn with_target(total: usize, target: ProgressDrawTarget) -> Self {
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        let target = if total == 0 {
            ProgressDrawTarget::hidden()
        } else {
            target
        };
        let bar = bar(total, "registered", "{msg}", target);
        bar.set_message("0 connected");
        FleetProgress {
            inner: Arc::new(Fleet {
                bar,
                total,
                connected: AtomicU64::new(0),
                registered: AtomicU64::new(0),
                finished: AtomicBool::new(false),
                started: Instant::now(),
            }),
        }
    }

    /// One more device has come online (call once per device).
    pub fn connected(&self) {
        let n = self.inner.connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.bar.set_message(format!("{n} connected"));
    }

    /// One more device has registered every app (call once per device); the last one
    /// finishes the bar.
    pub fn registered(&self) {
        let n = self.inner.registered.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.bar.inc(1);
        if n >= self.inner.total {
            self.finish();
        }
    }

    /// How many devices have come online.
    pub fn connected_count(&self) -> u64 {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many devices have registered every app.
    pub fn registered_count(&self) -> u64 {
        self.inner.registered.load(Ordering::Relaxed)
    }

    /// The fleet's line: `fleet of N: C connected, R registered in T`.
    pub fn summary(&self) -> String {
        self.inner.summary()
    }

    /// Replaces the bar with [`FleetProgress::summary`] (once; later calls do nothing).
    pub fn finish(&self) {
        self.inner.finish();
    }

    /// Runs `f` (a print to the terminal the bar is on) with the bar cleared, then draws
    /// the bar again, so the two do not garble each other.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inner.bar.suspend(f)
    }
}

impl Fleet {
    /// See [`FleetProgress::summary`].
    fn summary(&self) -> String {
        format!(
            "fleet of {}: {} connected, {} registered in {:.1?}",
            self.total,
            self.connected.load(Ordering::Relaxed),
            self.registered.load(Ordering::Relaxed),
            self.started.elapsed()
        )
    }

    /// See [`FleetProgress::finish`].
    fn finish(&self) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.bar.finish_and_clear();
        // Printed above where the bar was; nothing when the bar is hidden.
        self.bar.println(self.summary());
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One device's share of a [`FleetProgress`]: counts it as connected at its first
/// `online` and as registered once it holds a token for every app it was started with,
/// each once, whatever comes after (a reconnect, a re-registration). Its events come one
/// at a time, from the task that reads them.
#[derive(Debug)]
pub struct DeviceProgress {
    /// The fleet's counts.
    fleet: FleetProgress,
    /// Counted as connected.
    online: bool,
    /// The apps (and kinds) not registered yet; `None` once counted as registered.
    pending: Option<HashSet<String>>,
}

impl DeviceProgress {
    /// A device of `fleet` that registers `apps` (any names that tell its tokens apart:
    /// `APP` or `APP:KIND`). A device with no app counts as registered when it connects.
    pub fn new(fleet: FleetProgress, apps: impl IntoIterator<Item = String>) -> Self {
        DeviceProgress {
            fleet,
            online: false,
            pending: Some(apps.into_iter().collect()),
        }
    }

    /// The device came online.
    pub fn online(&mut self) {
        if !self.online {
            self.online = true;
            self.fleet.connected();
        }
        self.check(None);
    }

    /// The device registered `app` (named as in [`DeviceProgress::new`]).
    pub fn registered(&mut self, app: &str) {
        self.check(Some(app));
    }

    /// Removes `app` from the pending ones; counts the device as registered when none is
    /// left and it is online.
    fn check(&mut self, app: Option<&str>) {
        let Some(left) = self.pending.as_mut() else {
            return;
        };
        if let Some(app) = app {
            left.remove(app);
        }
        if left.is_empty() && self.online {
            self.pending = None;
            self.fleet.registered();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::TermLike;
    use std::io;
    use std::sync::Mutex;

    /// A terminal that records every line and string drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Recorder {
        /// Everything drawn, in order.
        fn text(&self) -> String {
            self.0.lock().unwrap().join("")
        }

        /// What the terminal shows last: the text drawn after the last cleared line.
        fn last(&self) -> String {
            let text = self.text();
            text.rsplit(CLEAR)
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
    }

    /// What [`Recorder`] records for a cleared line.
    const CLEAR: &str = "<clear>";

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().push(format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            self.0.lock().unwrap().push(CLEAR.to_owned());
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_fleet_bar_counts_to_n_and_ends_with_its_summary() {
        let term = Recorder::default();
        let fleet =
            FleetProgress::with_target(3, ProgressDrawTarget::term_like(Box::new(term.clone())));
        let mut devices: Vec<DeviceProgress> = (0..3)
            .map(|_| {
                DeviceProgress::new(
                    fleet.clone(),
                    [
                        "com.example.app".to_owned(),
                        "com.example.app:voip".to_owned(),
                    ],
                )
            })
            .collect();
        for d in &mut devices {
            d.online();
        }
        // A reconnect counts no second time.
        devices[0].online();
        assert_eq!(fleet.connected_count(), 3);
        assert_eq!(fleet.registered_count(), 0);
        for d in &mut devices {
            d.registered("com.example.app");
        }
        assert_eq!(
            fleet.registered_count(),
            0,
            "one app of two is not registered"
        );
        for d in &mut devices[..2] {
            d.registered("com.example.app:voip");
        }
        let drawn = term.text();
        assert!(drawn.contains("2/3 registered, 3 connected"), "{drawn}");
        assert!(!drawn.contains("fleet of 3"), "not finished yet: {drawn}");
        devices[2].registered("com.example.app:voip");
        // A re-registration counts no second time.
        devices[2].registered("com.example.app:voip");
        assert_eq!(fleet.registered_count(), 3);
        let drawn = term.text();
        assert!(drawn.contains("3/3 registered, 3 connected"), "{drawn}");
        let last = term.last();
        assert!(
            last.starts_with("fleet of 3: 3 connected, 3 registered in "),
            "the summary ends it: {drawn}"
        );
        assert!(!last.contains("3/3"), "the bar is cleared: {drawn}");
        // Finishing again (or dropping the last clone) prints nothing more.
        fleet.finish();
        drop(devices);
        drop(fleet);
        assert_eq!(term.text(), drawn);
    }

    #[test]
    fn a_fleet_that_stops_half_way_says_so_when_dropped() {
        let term = Recorder::default();
        let fleet =
            FleetProgress::with_target(4, ProgressDrawTarget::term_like(Box::new(term.clone())));
        let mut device = DeviceProgress::new(fleet.clone(), Vec::new());
        device.online();
        assert_eq!(
            fleet.registered_count(),
            1,
            "no app: registered once online"
        );
        drop(device);
        drop(fleet);
        let last = term.last();
        assert!(
            last.starts_with("fleet of 4: 1 connected, 1 registered in "),
            "{}",
            term.text()
        );
    }

    #[test]
    fn a_hidden_bar_draws_nothing_but_still_counts() {
        let fleet = FleetProgress::new(2, Draw::Hidden);
        fleet.connected();
        fleet.registered();
        assert_eq!((fleet.connected_count(), fleet.registered_count()), (1, 1));
        assert!(fleet.inner.bar.is_hidden());
    }
}
