//! [`Limits`]: the edge-wide rate limits of the unauthenticated requests
//! (logins, code requests, code attempts), with `governor`.
//!
//! One `Limits` per edge process, shared by its sessions (the limiters are
//! internally synchronized). Each check names what it limits by:
//! - **logins** per source address;
//! - **code requests** per source address, per phone prefix (the country
//!   code and the first digits: toll fraud pumps ranges of premium numbers)
//!   and a global budget of texts per edge;
//! - **code attempts** per source address and per phone.
//!
//! These are per edge; the count of wrong codes that locks a phone is kept
//! by the log, across edges and resends (`RecordOtpFailure`).
//!
//! A refused check tells when to retry ([`Refused::retry_after_ms`]), which
//! the client gets in its `Error` frame.
//!
//! Keyed limiters forget idle keys ([`Limits::prune`], also done when a
//! limiter holds more than [`KEYS_MAX`] keys), so memory is bounded by the
//! keys active within one refill period.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use chorus_schema::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// Keys one keyed limiter holds before it drops the idle ones.
pub(super) const KEYS_MAX: usize = 100_000;

/// A rate: `burst` at once, then `per_hour` sustained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub burst: u32,
    pub per_hour: u32,
}

impl Rate {
    pub const fn new(burst: u32, per_hour: u32) -> Rate {
        Rate { burst, per_hour }
    }

    fn quota(&self) -> Result<Quota, String> {
        let burst = NonZeroU32::new(self.burst).ok_or("a rate needs a positive burst")?;
        if self.per_hour == 0 {
            return Err("a rate needs a positive per_hour".into());
        }
        let period = Duration::from_secs(3600) / self.per_hour;
        Quota::with_period(period).map(|q| q.allow_burst(burst)).ok_or_else(|| "rate too high".into())
    }
}

/// The limits; `Default` is the production setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    pub logins_per_source: Rate,
    pub otp_requests_per_source: Rate,
    pub otp_requests_per_prefix: Rate,
    /// Digits of the phone number (after the `+`) that make its prefix.
    pub otp_prefix_digits: usize,
    /// Codes this edge texts in all.
    pub otp_requests_global: Rate,
    pub otp_attempts_per_source: Rate,
    pub otp_attempts_per_phone: Rate,
    // ---- E2EE (issue 14) ----
    /// Key claims (`ClaimKeys`) per requesting user, at this edge.
    pub key_claims_per_user: Rate,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            logins_per_source: Rate::new(30, 600),
            otp_requests_per_source: Rate::new(5, 20),
            otp_requests_per_prefix: Rate::new(20, 200),
            otp_prefix_digits: 5,
            otp_requests_global: Rate::new(200, 20_000),
            otp_attempts_per_source: Rate::new(10, 60),
            otp_attempts_per_phone: Rate::new(5, 20),
            key_claims_per_user: Rate::new(60, 3600),
        }
    }
}

impl LimitsConfig {
    /// Limits no test or benchmark reaches: for harnesses that register
    /// thousands of devices from one address (the loopback), never for a
    /// deployment.
    pub fn unlimited() -> Self {
        let r = Rate::new(1_000_000, 1_000_000_000);
        LimitsConfig {
            logins_per_source: r,
            otp_requests_per_source: r,
            otp_requests_per_prefix: r,
            otp_prefix_digits: 5,
            otp_requests_global: r,
            otp_attempts_per_source: r,
            otp_attempts_per_phone: r,
            key_claims_per_user: r,
        }
    }

    /// # Errors
    /// A message naming the first bad rate.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("logins_per_source", self.logins_per_source),
            ("otp_requests_per_source", self.otp_requests_per_source),
            ("otp_requests_per_prefix", self.otp_requests_per_prefix),
            ("otp_requests_global", self.otp_requests_global),
            ("otp_attempts_per_source", self.otp_attempts_per_source),
            ("otp_attempts_per_phone", self.otp_attempts_per_phone),
            ("key_claims_per_user", self.key_claims_per_user),
        ] {
            rate.quota().map_err(|e| format!("limits.{name}: {e}"))?;
        }
        if self.otp_prefix_digits == 0 {
            return Err("limits.otp_prefix_digits must be positive".into());
        }
        Ok(())
    }
}

/// A refused request: what was limited, and when it is allowed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub what: &'static str,
    pub retry_after_ms: u64,
}

/// The edge's limiters. See the module docs.
pub struct Limits {
    prefix_digits: usize,
    logins_per_source: DefaultKeyedRateLimiter<IpAddr>,
    otp_requests_per_source: DefaultKeyedRateLimiter<IpAddr>,
    otp_requests_per_prefix: DefaultKeyedRateLimiter<String>,
    otp_requests_global: DefaultDirectRateLimiter,
    otp_attempts_per_source: DefaultKeyedRateLimiter<IpAddr>,
    otp_attempts_per_phone: DefaultKeyedRateLimiter<UserId>,
    key_claims_per_user: DefaultKeyedRateLimiter<UserId>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

fn check_keyed<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    what: &'static str,
) -> Result<(), Refused> {
    if limiter.len() > KEYS_MAX {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    limiter.check_key(key).map_err(|not_until| refused(what, not_until.wait_time_from(DefaultClock::default().now())))
}

fn refused(what: &'static str, wait: Duration) -> Refused {
    // At least 1 ms: zero would read as "retry at once".
    Refused { what, retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1) }
}

impl Limits {
    /// # Errors
    /// If `config` does not validate.
    pub fn new(config: &LimitsConfig) -> Result<Limits, String> {
        config.validate()?;
        // Validated above: no error here.
        let q = |r: Rate| r.quota();
        Ok(Limits {
            prefix_digits: config.otp_prefix_digits,
            logins_per_source: RateLimiter::keyed(q(config.logins_per_source)?),
            otp_requests_per_source: RateLimiter::keyed(q(config.otp_requests_per_source)?),
            otp_requests_per_prefix: RateLimiter::keyed(q(config.otp_requests_per_prefix)?),
            otp_requests_global: RateLimiter::direct(q(config.otp_requests_global)?),
            otp_attempts_per_source: RateLimiter::keyed(q(config.otp_attempts_per_source)?),
            otp_attempts_per_phone: RateLimiter::keyed(q(config.otp_attempts_per_phone)?),
            key_claims_per_user: RateLimiter::keyed(q(config.key_claims_per_user)?),
        })
    }

    /// A login from `source`.
    ///
    /// # Errors
    /// [`Refused`] when over the limit.
    pub fn login(&self, source: IpAddr) -> Result<(), Refused> {
        check_keyed(&self.logins_per_source, &source, "logins from this address")
    }

    /// A code texted to `phone` (normalized) for `source`: the address, the
    /// number's prefix and the edge's budget must all allow it.
    ///
    /// # Errors
    /// [`Refused`] naming the first limit that refused.
    pub fn otp_request(&self, source: IpAddr, phone: &str) -> Result<(), Refused> {
        check_keyed(&self.otp_requests_per_source, &source, "code requests from this address")?;
        let prefix: String = phone.chars().take(1 + self.prefix_digits).collect();
        check_keyed(&self.otp_requests_per_prefix, &prefix, "code requests for this number range")?;
        self.otp_requests_global
            .check()
            .map_err(|n| refused("code requests at this edge", n.wait_time_from(DefaultClock::default().now())))
    }

    /// A code (or PIN) tried for `phone` (its user id) from `source`.
    ///
    /// # Errors
    /// [`Refused`] naming the first limit that refused.
    pub fn otp_attempt(&self, source: IpAddr, phone: UserId) -> Result<(), Refused> {
        check_keyed(&self.otp_attempts_per_source, &source, "code attempts from this address")?;
        check_keyed(&self.otp_attempts_per_phone, &phone, "code attempts for this number")
    }

    /// A key claim (`ClaimKeys`) by `user`.
    ///
    /// # Errors
    /// [`Refused`] when over the limit.
    pub fn key_claim(&self, user: UserId) -> Result<(), Refused> {
        check_keyed(&self.key_claims_per_user, &user, "key claims by this user")
    }

    /// Forgets keys whose limit is back to full (the driver calls it now and then).
    pub fn prune(&self) {
        self.key_claims_per_user.retain_recent();
        self.logins_per_source.retain_recent();
        self.otp_requests_per_source.retain_recent();
        self.otp_requests_per_prefix.retain_recent();
        self.otp_attempts_per_source.retain_recent();
        self.otp_attempts_per_phone.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn code_requests_are_limited_per_source_per_prefix_and_in_all() {
        let config = LimitsConfig {
            otp_requests_per_source: Rate::new(2, 1),
            otp_requests_per_prefix: Rate::new(3, 1),
            otp_requests_global: Rate::new(5, 1),
            ..LimitsConfig::default()
        };
        let l = Limits::new(&config).unwrap();
        assert_eq!(l.otp_request(ip(1), "+15550100001"), Ok(()));
        assert_eq!(l.otp_request(ip(1), "+15550100002"), Ok(()));
        let r = l.otp_request(ip(1), "+15550100003").unwrap_err();
        assert_eq!(r.what, "code requests from this address");
        // An hour per request: the wait is most of it.
        assert!(r.retry_after_ms > 3_000_000 && r.retry_after_ms <= 3_600_000, "{r:?}");
        // Another address, same range (+1555…): the prefix budget (3) runs out.
        assert_eq!(l.otp_request(ip(2), "+15550999999"), Ok(()));
        assert_eq!(l.otp_request(ip(3), "+15550000000").unwrap_err().what, "code requests for this number range");
        // Other ranges, other addresses: the global budget (5) runs out.
        assert_eq!(l.otp_request(ip(4), "+4930000001"), Ok(()));
        assert_eq!(l.otp_request(ip(5), "+4420000001"), Ok(()));
        assert_eq!(l.otp_request(ip(6), "+3310000001").unwrap_err().what, "code requests at this edge");
    }

    #[test]
    fn attempts_and_logins() {
        let config = LimitsConfig {
            otp_attempts_per_source: Rate::new(3, 1),
            otp_attempts_per_phone: Rate::new(2, 1),
            logins_per_source: Rate::new(1, 1),
            ..LimitsConfig::default()
        };
        let l = Limits::new(&config).unwrap();
        let phone = UserId(7);
        assert!(l.otp_attempt(ip(1), phone).is_ok());
        assert!(l.otp_attempt(ip(2), phone).is_ok());
        assert_eq!(l.otp_attempt(ip(3), phone).unwrap_err().what, "code attempts for this number");
        assert!(l.login(ip(1)).is_ok());
        assert!(l.login(ip(1)).is_err());
        assert!(l.login(ip(2)).is_ok());
    }

    #[test]
    fn bad_rates_are_refused() {
        let config = LimitsConfig { otp_requests_global: Rate::new(0, 1), ..LimitsConfig::default() };
        assert!(Limits::new(&config).unwrap_err().contains("otp_requests_global"));
        let config = LimitsConfig { logins_per_source: Rate::new(1, 0), ..LimitsConfig::default() };
        assert!(Limits::new(&config).is_err());
    }
}
