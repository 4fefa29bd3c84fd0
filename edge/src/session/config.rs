//! Per-session limits.

use chorus_schema::MAX_CIPHERTEXT_BYTES;
use serde::{Deserialize, Serialize};

use super::limits::LimitsConfig;
use super::otp::OtpConfig;

/// Limits of one client connection. `Default` is the production setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest accepted `Send` ciphertext; at most [`MAX_CIPHERTEXT_BYTES`].
    pub ciphertext_bytes_max: usize,
    /// Frames (`Send`, `Ack`, `Sync`) a logged-in device may send at once...
    pub frames_burst: u32,
    /// ...and per second sustained (token bucket; `RateLimited` beyond).
    pub frames_per_sec: u32,
    /// Appends of one session awaiting their result (`RateLimited` beyond).
    pub in_flight_max: usize,
    /// Undecodable frames tolerated before the connection is closed.
    pub bad_frames_max: u32,
    /// Refused logins tolerated before the connection is closed.
    pub logins_failed_max: u32,
    /// How long a login token is valid after registration (`TokenExpired`
    /// after that: the device registers again).
    pub token_lifetime_ms: u64,
    /// Edge-wide rate limits of logins and codes (see [`super::Limits`]).
    pub limits: LimitsConfig,
    /// The edge's one-time codes (see [`super::OtpRegistry`]).
    pub otp: OtpConfig,
    /// How long a pairing code (`PairRequest`, issue 12) can link its device.
    pub pairing_code_ttl_ms: u64,
    /// `Typing` frames a connection may send at once...
    pub typing_burst: u32,
    /// ...and per second sustained (`RateLimited` beyond; nothing relayed).
    pub typing_per_sec: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ciphertext_bytes_max: MAX_CIPHERTEXT_BYTES,
            frames_burst: 100,
            frames_per_sec: 50,
            in_flight_max: 256,
            bad_frames_max: 8,
            logins_failed_max: 3,
            token_lifetime_ms: 90 * 24 * 60 * 60 * 1000,
            limits: LimitsConfig::default(),
            otp: OtpConfig::default(),
            pairing_code_ttl_ms: 60_000,
            typing_burst: 10,
            typing_per_sec: 2,
        }
    }
}

impl Config {
    /// Checks that the limits make sense.
    ///
    /// # Errors
    /// A message naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.ciphertext_bytes_max > MAX_CIPHERTEXT_BYTES {
            return Err(format!("ciphertext_bytes_max {} > {MAX_CIPHERTEXT_BYTES}", self.ciphertext_bytes_max));
        }
        if self.frames_burst == 0 || self.frames_per_sec == 0 {
            return Err("frames_burst and frames_per_sec must be positive".into());
        }
        if self.typing_burst == 0 || self.typing_per_sec == 0 {
            return Err("typing_burst and typing_per_sec must be positive".into());
        }
        if self.in_flight_max == 0 {
            return Err("in_flight_max must be positive".into());
        }
        if self.pairing_code_ttl_ms == 0 {
            return Err("pairing_code_ttl_ms must be positive".into());
        }
        if self.token_lifetime_ms == 0 {
            return Err("token_lifetime_ms must be positive".into());
        }
        self.limits.validate()
    }
}
