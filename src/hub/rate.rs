//! The opt-in per-token push limit (`serve --rate-limit PUSHES/SECONDS`): a sliding window of
//! recent push times per device token. Apple throttles a provider that pushes too often to
//! one device; without a limit set, this costs nothing.

use std::collections::{HashMap, VecDeque};

use crate::protocol::token::DeviceToken;
use crate::settings::RateLimit;

use super::PushError;

/// Counts pushes per token against an optional [`RateLimit`].
#[derive(Debug)]
pub(super) struct RateLimiter {
    /// The limit; `None` lets every push through and records nothing.
    limit: Option<RateLimit>,
    /// Recent push times (ms) per token, kept only while a limit is set; at most
    /// `RateLimit::pushes` entries per token (bounded by
    /// [`crate::settings::MAX_RATE_LIMIT_PUSHES`]), and only for tokens the hub minted, since
    /// a push is counted only after its token checks passed.
    recent: HashMap<DeviceToken, VecDeque<u64>>,
}

impl RateLimiter {
    /// A limiter enforcing `limit`, or none.
    pub(super) fn new(limit: Option<RateLimit>) -> Self {
        RateLimiter {
            limit,
            recent: HashMap::new(),
        }
    }

    /// Forgets every token's recent pushes (a reset); returns how many tokens had some.
    pub(super) fn clear(&mut self) -> u64 {
        let tokens = self.recent.len() as u64;
        self.recent.clear();
        tokens
    }

    /// Counts a push to `token` at `now_ms`, or refuses it when the token had its limit's
    /// worth of pushes within the window already (a refused push is not counted).
    pub(super) fn check(&mut self, token: &DeviceToken, now_ms: u64) -> Result<(), PushError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let window_ms = limit.per.as_millis() as u64;
        let times = self.recent.entry(*token).or_default();
        while times.front().is_some_and(|&t| t + window_ms <= now_ms) {
            times.pop_front();
        }
        if times.len() >= limit.pushes as usize {
            return Err(PushError::TooManyRequests {
                pushes: limit.pushes,
                per_secs: limit.per.as_secs(),
            });
        }
        times.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_limit_is_per_token_and_its_window_slides() {
        let mut rate = RateLimiter::new(Some(RateLimit {
            pushes: 2,
            per: Duration::from_secs(60),
        }));
        let token = DeviceToken::from_bytes([1; 32]);
        let other = DeviceToken::from_bytes([2; 32]);
        let now = 1_000_000;
        assert_eq!(rate.check(&token, now), Ok(()));
        assert_eq!(rate.check(&token, now), Ok(()));
        assert_eq!(
            rate.check(&token, now),
            Err(PushError::TooManyRequests {
                pushes: 2,
                per_secs: 60
            })
        );
        // Other tokens are not affected.
        assert_eq!(rate.check(&other, now), Ok(()));
        // The window slides.
        assert_eq!(rate.check(&token, now + 61_000), Ok(()));
    }

    #[test]
    fn without_a_limit_nothing_is_counted() {
        let mut rate = RateLimiter::new(None);
        let token = DeviceToken::from_bytes([1; 32]);
        for _ in 0..10 {
            assert_eq!(rate.check(&token, 0), Ok(()));
        }
        assert!(rate.recent.is_empty());
    }
}
