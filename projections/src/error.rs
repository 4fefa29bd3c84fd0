//! The errors of folding and of the projection.

use chorus_schema::{ChatId, Key, Offset, PartitionId, UserId};

use crate::store;

/// Why an event could not be folded. Every variant is fatal for the transaction:
/// drop it (nothing is committed) and stop or retry from the cursor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed, or holds a value that does not decode.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// An event arrived out of order: the projector must feed each partition's
    /// events in offset order from the cursor ([`crate::Projection::next_offset`]).
    /// Events below the cursor are skipped, not errors.
    #[error("partition {partition}: next offset to fold is {expected}, got {got}")]
    OffsetGap { partition: PartitionId, expected: Offset, got: Offset },
    /// The event contradicts the views (an unknown chat, a seq that is not the
    /// next, a chat created twice, a device of an unregistered user): the views
    /// were not folded from the start of this log, or the log is corrupt.
    /// Rebuild the views from offset 0. `key` is the event's chat or user.
    #[error("{key}: {kind} contradicts the views: {detail}")]
    Inconsistent { key: Key, kind: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn inconsistent(chat: ChatId, kind: &'static str, detail: impl Into<String>) -> Error {
        Error::Inconsistent { key: Key::Chat(chat), kind, detail: detail.into() }
    }

    pub(crate) fn inconsistent_user(user: UserId, kind: &'static str, detail: impl Into<String>) -> Error {
        Error::Inconsistent { key: Key::User(user), kind, detail: detail.into() }
    }
}
