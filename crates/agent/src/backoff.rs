//! Reconnect delays: exponential, capped, with jitter so that thousands
//! of devices cut off by one relay restart do not return in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": each delay is between half and
/// all of the current step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, step: min }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Back to the first step (after a connection that worked).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d2 = b.next_delay();
        assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
