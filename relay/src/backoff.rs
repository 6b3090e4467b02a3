//! Reconnect backoff: exponential from 100 ms to 30 s, each delay jittered by ±20 % so that
//! relays restarted together do not reconnect in lockstep.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(30);
/// The jitter, as a fraction of the delay (either way).
pub const JITTER: f64 = 0.2;

/// The state of one connection's backoff.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// `seed`: the jitter's random state (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed: neighbouring seeds start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Backoff {
            attempt: 0,
            rng: (z ^ (z >> 31)) | 1,
        }
    }

    /// A backoff seeded from the clock and the process id.
    pub fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Backoff::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// The base (unjittered) delay of failure number `attempt` (0-based).
    pub fn base(attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.min(32));
        let ms = (INITIAL.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(MAX)
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = Self::base(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: uniform enough for jitter, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
        base.mul_f64(factor)
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A success: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_100ms_to_30s_within_jitter() {
        let mut b = Backoff::new(42);
        let mut seen = Vec::new();
        for attempt in 0..20 {
            let base = Backoff::base(attempt);
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{attempt}: {d:?} vs {base:?}"
            );
            seen.push(d);
        }
        assert_eq!(Backoff::base(0), Duration::from_millis(100));
        assert_eq!(Backoff::base(1), Duration::from_millis(200));
        assert_eq!(Backoff::base(8), Duration::from_millis(25_600));
        assert_eq!(Backoff::base(9), MAX);
        assert_eq!(Backoff::base(1000), MAX);
        assert!(seen[19] <= MAX.mul_f64(1.2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: Vec<Duration> = (1..50).map(|s| Backoff::new(s).next_delay()).collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(20), "{min:?}..{max:?}");
    }
}
