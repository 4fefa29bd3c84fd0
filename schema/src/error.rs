//! The error of every decode, parse and validation in this crate.

/// Why a buffer, an id string or a domain value was refused.
///
/// Every variant names `what` was being decoded or checked, so that a frame error
/// sent back to a client says which field was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a well-formed buffer of the expected type (verifier failure,
    /// wrong file identifier, missing union member, unknown enum value, bad id syntax).
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A buffer, string or vector exceeds its limit (see [`crate::limits`]).
    #[error("{what} too large: {len} > {limit}")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    /// Well-formed but semantically invalid (e.g. a zero partition count).
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed { what, reason: reason.into() }
    }
}

/// Checks `len <= limit`.
pub(crate) fn check_len(what: &'static str, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        Err(Error::TooLarge { what, len, limit })
    } else {
        Ok(())
    }
}
