//! One-time registration codes, shared by all sessions of one edge.
//!
//! # Sharing
//! The registry is the caller's: the driver keeps one per edge process (e.g. in a
//! `std::sync::Mutex`) and passes `&mut` to [`crate::session::Session::handle_frame`]
//! for the duration of the call, which does no IO, so the lock is held for
//! microseconds. Codes are not replicated: a code requested at one edge must be
//! verified at the same edge (the client keeps its connection, or the load
//! balancer routes by phone); elsewhere it is `OtpExpired`.
//!
//! # Rules
//! - A code lives [`OtpConfig::ttl_ms`] (5 min) and allows
//!   [`OtpConfig::attempts_max`] (5) wrong tries; after that the phone is locked
//!   until the code's expiry (`TooManyAttempts`), new code or not. So a guesser
//!   gets 5 tries per 5 minutes per number.
//! - A new code for the same phone replaces the old one, but not within
//!   [`OtpConfig::resend_interval_ms`] (`TooSoon`).
//! - A right code is consumed. Codes are stored as keyed BLAKE3 hashes (the key is
//!   the registry's secret), compared in constant time.
//! - At most [`OtpConfig::pending_max`] phones are pending (`Full`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Limits of the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtpConfig {
    pub ttl_ms: u64,
    pub attempts_max: u32,
    pub resend_interval_ms: u64,
    pub pending_max: usize,
}

impl Default for OtpConfig {
    fn default() -> Self {
        OtpConfig { ttl_ms: 5 * 60 * 1000, attempts_max: 5, resend_interval_ms: 30 * 1000, pending_max: 100_000 }
    }
}

/// Why a code was not issued or not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    #[error("a code was sent less than the resend interval ago")]
    TooSoon,
    #[error("too many registrations pending")]
    Full,
    #[error("no live code for this phone")]
    Expired,
    #[error("wrong code")]
    Wrong,
    #[error("too many wrong codes")]
    TooManyAttempts,
}

#[derive(Clone, Debug)]
struct Pending {
    code_hash: blake3::Hash,
    issued_ms: u64,
    expires_ms: u64,
    attempts: u32,
}

/// Pending one-time codes by normalized phone number.
#[derive(Debug)]
pub struct OtpRegistry {
    config: OtpConfig,
    secret: [u8; 32],
    pending: BTreeMap<String, Pending>,
}

impl OtpRegistry {
    /// An empty registry; `secret` keys the code hashes (random per process).
    pub fn new(config: OtpConfig, secret: [u8; 32]) -> Self {
        OtpRegistry { config, secret, pending: BTreeMap::new() }
    }

    pub fn config(&self) -> &OtpConfig {
        &self.config
    }

    fn hash(&self, phone: &str, code: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(phone.as_bytes());
        h.update(&[0]);
        h.update(code.as_bytes());
        h.finalize()
    }

    /// Stores `code` for `phone` (normalized) and returns its expiry time.
    ///
    /// # Errors
    /// `TooSoon` within the resend interval, `TooManyAttempts` while the phone is
    /// locked, `Full` if too many phones are pending.
    pub fn issue(&mut self, now_ms: u64, phone: &str, code: &str) -> Result<u64, OtpError> {
        if let Some(p) = self.pending.get(phone).filter(|p| p.expires_ms > now_ms) {
            if p.attempts >= self.config.attempts_max {
                return Err(OtpError::TooManyAttempts);
            }
            if now_ms < p.issued_ms.saturating_add(self.config.resend_interval_ms) {
                return Err(OtpError::TooSoon);
            }
        }
        if !self.pending.contains_key(phone) && self.pending.len() >= self.config.pending_max {
            self.prune(now_ms);
            if self.pending.len() >= self.config.pending_max {
                return Err(OtpError::Full);
            }
        }
        let expires_ms = now_ms.saturating_add(self.config.ttl_ms);
        let code_hash = self.hash(phone, code);
        self.pending.insert(phone.to_owned(), Pending { code_hash, issued_ms: now_ms, expires_ms, attempts: 0 });
        Ok(expires_ms)
    }

    /// Checks `code` for `phone` (normalized); a right code is consumed.
    ///
    /// # Errors
    /// `Expired` (none pending, or expired), `TooManyAttempts` (locked), `Wrong`.
    pub fn verify(&mut self, now_ms: u64, phone: &str, code: &str) -> Result<(), OtpError> {
        let hash = self.hash(phone, code);
        let attempts_max = self.config.attempts_max;
        let Some(p) = self.pending.get_mut(phone) else { return Err(OtpError::Expired) };
        if p.expires_ms <= now_ms {
            self.pending.remove(phone);
            return Err(OtpError::Expired);
        }
        if p.attempts >= attempts_max {
            return Err(OtpError::TooManyAttempts);
        }
        // blake3::Hash compares in constant time.
        if p.code_hash == hash {
            self.pending.remove(phone);
            Ok(())
        } else {
            p.attempts += 1;
            Err(if p.attempts >= attempts_max { OtpError::TooManyAttempts } else { OtpError::Wrong })
        }
    }

    /// Forgets expired codes (also done when the registry is full).
    pub fn prune(&mut self, now_ms: u64) {
        self.pending.retain(|_, p| p.expires_ms > now_ms);
    }

    /// Phones with a code pending (expired ones until pruned).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "+15550100001";

    fn reg() -> OtpRegistry {
        OtpRegistry::new(OtpConfig::default(), [7; 32])
    }

    #[test]
    fn a_right_code_is_consumed() {
        let mut r = reg();
        assert_eq!(r.issue(1000, P, "123456"), Ok(1000 + 300_000));
        assert_eq!(r.verify(2000, P, "123456"), Ok(()));
        assert_eq!(r.verify(2000, P, "123456"), Err(OtpError::Expired));
    }

    #[test]
    fn codes_expire() {
        let mut r = reg();
        r.issue(1000, P, "123456").unwrap();
        assert_eq!(r.verify(301_000, P, "123456"), Err(OtpError::Expired));
        assert!(r.is_empty());
    }

    #[test]
    fn five_wrong_codes_lock_the_phone_until_expiry() {
        let mut r = reg();
        r.issue(0, P, "123456").unwrap();
        for _ in 0..4 {
            assert_eq!(r.verify(1, P, "000000"), Err(OtpError::Wrong));
        }
        assert_eq!(r.verify(1, P, "000000"), Err(OtpError::TooManyAttempts));
        assert_eq!(r.verify(1, P, "123456"), Err(OtpError::TooManyAttempts));
        assert_eq!(r.issue(60_000, P, "654321"), Err(OtpError::TooManyAttempts));
        assert_eq!(r.issue(300_000, P, "654321"), Ok(600_000));
        assert_eq!(r.verify(300_001, P, "654321"), Ok(()));
    }

    #[test]
    fn resend_waits_for_the_interval_and_replaces_the_code() {
        let mut r = reg();
        r.issue(0, P, "111111").unwrap();
        assert_eq!(r.issue(29_999, P, "222222"), Err(OtpError::TooSoon));
        r.issue(30_000, P, "222222").unwrap();
        assert_eq!(r.verify(30_001, P, "111111"), Err(OtpError::Wrong));
        assert_eq!(r.verify(30_001, P, "222222"), Ok(()));
    }

    #[test]
    fn the_registry_is_bounded() {
        let mut r = OtpRegistry::new(OtpConfig { pending_max: 2, ..OtpConfig::default() }, [0; 32]);
        r.issue(0, "+15550100001", "1").unwrap();
        r.issue(0, "+15550100002", "1").unwrap();
        assert_eq!(r.issue(0, "+15550100003", "1"), Err(OtpError::Full));
        // Expired entries make room.
        assert!(r.issue(300_000, "+15550100003", "1").is_ok());
        assert_eq!(r.len(), 1);
    }
}
