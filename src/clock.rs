//! The simulator's clock: wall time in production, a hand-driven clock in tests.
//!
//! Everything that depends on time (notification expiry, feedback timestamps, the 410
//! `timestamp`, JWT `iat` checks and the 20-minute token-update rule) reads this clock rather
//! than `SystemTime`, so that a test can move time forward by an hour without waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cheap-to-clone clock handle. Wall time plus an offset that tests may move.
///
/// The offset is shared by every clone, so advancing the clock that a test holds moves the
/// clock that the running simulator reads.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; only tests change it.
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The real clock (no offset).
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the UNIX epoch, as this clock sees them.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        (wall + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Seconds since the UNIX epoch (the unit of binary expiry and feedback timestamps).
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Moves this clock (and every clone of it) forward. For tests of expiry and JWT rules.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_every_clone() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.now_secs();
        clock.advance(Duration::from_secs(3600));
        assert!(other.now_secs() >= before + 3600);
    }
}
