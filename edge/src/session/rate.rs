//! A token bucket on a caller-supplied clock.

/// Allows `burst` frames at once and `per_sec` frames per second sustained.
/// Tokens are kept in thousandths so that refills of a few milliseconds count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    capacity_milli: u64,
    per_sec: u64,
    tokens_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_sec: u32) -> Self {
        let capacity_milli = u64::from(burst) * 1000;
        TokenBucket { capacity_milli, per_sec: u64::from(per_sec), tokens_milli: capacity_milli, last_ms: 0 }
    }

    /// Takes one token if there is one. A clock that goes backwards refills nothing.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        if now_ms > self.last_ms {
            let refill = (now_ms - self.last_ms).saturating_mul(self.per_sec);
            self.tokens_milli = self.tokens_milli.saturating_add(refill).min(self.capacity_milli);
            self.last_ms = now_ms;
        }
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let mut b = TokenBucket::new(3, 10);
        assert!((0..3).all(|_| b.try_take(1000)));
        assert!(!b.try_take(1000));
        assert!(!b.try_take(1099));
        assert!(b.try_take(1100));
        assert!(!b.try_take(1100));
        // Backwards clock: nothing refilled.
        assert!(!b.try_take(500));
        // Long idle: capped at the burst.
        assert!((0..3).all(|_| b.try_take(100_000)));
        assert!(!b.try_take(100_000));
    }
}
