//! What a request to the log came to, when it did not succeed.
//!
//! The caller's question after a failed append is "did it happen?", and the
//! answer decides whether to report a failure, retry with the same
//! `client_msg_id`, or record the outcome as unknown (Jepsen's `info`). So the
//! error says it in its type rather than in a string:
//!
//! | variant | applied? | retry? |
//! | --- | --- | --- |
//! | [`Error::Refused`] | no: the log refused it | no, the same request is refused again |
//! | [`Error::Unavailable`] | no: never sent, or every node that got it said it did not take it | yes |
//! | [`Error::Overloaded`] | no: it never left this client's queue | yes, later |
//! | [`Error::UnknownOutcome`] | perhaps: sent, and no answer said which | yes, with the same `client_msg_id` |
//! | [`Error::Protocol`] | perhaps (a request other than an append) | no |
//! | [`Error::Tls`], [`Error::Config`] | no: nothing was sent | no |

use chorus_schema::{ErrorCode, GroupId};

use crate::network::tls;

/// Why a request to the log did not succeed; see the module documentation for
/// what each variant says about whether it was applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log refused the request before doing anything: it is malformed,
    /// invalid, or the caller's role may not make it (`Forbidden`). Final.
    #[error("refused with {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// The request was not applied: no node took it before the deadline
    /// (none reachable, or none leading its group). Retrying later may work.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    /// The request was sent at least once and may have been applied, but no
    /// answer said so before the deadline (a timeout, a connection lost after
    /// sending). An append retried with the same `client_msg_id` is applied
    /// at most once: the log deduplicates it.
    #[error("outcome unknown after {attempts} attempts: {last}")]
    UnknownOutcome { attempts: u32, last: String },
    /// The append waited for room in its group's queue in this client until
    /// its deadline: it was never sent.
    #[error("overloaded: the queue of group {group} ({queued} appends) stayed full until the deadline")]
    Overloaded { group: GroupId, queued: usize },
    /// A node answered with something that is no answer to the request
    /// (undecodable, another kind, another number of results). A failed
    /// append is never `Protocol`: it is `UnknownOutcome`.
    #[error("bad response: {0}")]
    Protocol(String),
    /// The client's TLS material is unusable (at connect).
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The client's settings are out of range (at connect).
    #[error("log client config: {0}")]
    Config(String),
}

/// What an error says about whether the request took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Certainly not applied.
    No,
    /// Perhaps applied.
    Unknown,
}

impl Error {
    /// Whether the request certainly did not take effect, or perhaps did.
    pub fn applied(&self) -> Applied {
        match self {
            Error::Refused { .. }
            | Error::Unavailable { .. }
            | Error::Overloaded { .. }
            | Error::Tls(_)
            | Error::Config(_) => Applied::No,
            Error::UnknownOutcome { .. } | Error::Protocol(_) => Applied::Unknown,
        }
    }

    /// Whether retrying the same request (for an append: with the same
    /// `client_msg_id`) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::UnknownOutcome { .. } | Error::Overloaded { .. })
    }

    /// The log's code of a refusal.
    pub fn refusal(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The same error for another waiter of a batch (a TLS error cannot
    /// happen after connect; it becomes a protocol error there).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Refused { code, message } => Error::Refused { code: *code, message: message.clone() },
            Error::Unavailable { attempts, last } => Error::Unavailable { attempts: *attempts, last: last.clone() },
            Error::UnknownOutcome { attempts, last } => {
                Error::UnknownOutcome { attempts: *attempts, last: last.clone() }
            }
            Error::Overloaded { group, queued } => Error::Overloaded { group: *group, queued: *queued },
            Error::Protocol(m) => Error::Protocol(m.clone()),
            Error::Tls(e) => Error::Protocol(e.to_string()),
            Error::Config(m) => Error::Config(m.clone()),
        }
    }

    /// The error of a request to one named node that the node answered with
    /// an error response: a refusal, or unavailable for codes that a retry
    /// (perhaps elsewhere) may cure.
    pub(crate) fn of_response(code: ErrorCode, message: String) -> Error {
        if code.retryable() {
            Error::Unavailable { attempts: 1, last: format!("{code:?}: {message}") }
        } else {
            Error::Refused { code, message }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_outcome_may_have_applied_and_only_a_refusal_is_final() {
        let refused = Error::Refused { code: ErrorCode::Forbidden, message: "role".into() };
        let unavailable = Error::Unavailable { attempts: 3, last: "no leader".into() };
        let unknown = Error::UnknownOutcome { attempts: 2, last: "timed out".into() };
        let overloaded = Error::Overloaded { group: GroupId(1), queued: 8 };
        assert_eq!(refused.applied(), Applied::No);
        assert!(!refused.retryable());
        assert_eq!(refused.refusal(), Some(ErrorCode::Forbidden));
        for e in [&unavailable, &overloaded] {
            assert_eq!(e.applied(), Applied::No, "{e}");
            assert!(e.retryable(), "{e}");
        }
        assert_eq!(unknown.applied(), Applied::Unknown);
        assert!(unknown.retryable());
        assert_eq!(unknown.duplicate().applied(), Applied::Unknown);
        assert!(matches!(Error::of_response(ErrorCode::PartitionUnavailable, "x".into()), Error::Unavailable { .. }));
        assert!(matches!(
            Error::of_response(ErrorCode::InvalidCommand, "x".into()),
            Error::Refused { code: ErrorCode::InvalidCommand, .. }
        ));
    }
}
