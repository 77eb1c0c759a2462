//! Exponential backoff with jitter for reconnects and upload retries.

use std::time::Duration;

/// Delays of 0.5 s doubling up to a cap, each with up to ±25 % jitter so that
/// many streamers do not hammer a recovering server in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay (and counts the attempt).
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let d = exp.min(self.cap);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        d.mul_f64(jitter)
    }

    /// Attempts so far since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(37_500), "{d:?}");
        }
        assert!(b.next_delay() >= Duration::from_millis(22_500));
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
