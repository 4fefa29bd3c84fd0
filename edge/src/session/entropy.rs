//! Injected randomness: OTP codes, device ids and login tokens.

/// A source of random bytes. Production seeds a [`SeededEntropy`] from the OS
/// (e.g. `getrandom`) per connection; tests seed it with a constant.
pub trait Entropy: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A deterministic cryptographic stream: BLAKE3 in keyed XOF mode over a counter.
/// As unpredictable as its 256-bit seed.
#[derive(Clone)]
pub struct SeededEntropy {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for SeededEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededEntropy").field("counter", &self.counter).finish_non_exhaustive()
    }
}

impl SeededEntropy {
    pub fn new(seed: [u8; 32]) -> Self {
        SeededEntropy { key: seed, counter: 0 }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&self.counter.to_le_bytes());
        self.counter += 1;
        h.finalize_xof().fill(buf);
    }
}
