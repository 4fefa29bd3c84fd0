//! Small value types shared by commands, events and results.

use serde::{Deserialize, Serialize};

use crate::error::check_len;
use crate::ids::{ClientMsgId, DeviceId, UserId};
use crate::limits::{MAX_KEY_BYTES, MAX_MIME_BYTES};
use crate::Result;

/// Who issued a command (and so, who caused an event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub user: UserId,
    pub device: DeviceId,
    /// Unique per (user, device); a retry reuses it. See the dedup table of the partition.
    pub client_msg_id: ClientMsgId,
}

/// A media object in the content-addressed store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// BLAKE3 of the uploaded ciphertext.
    pub blake3: [u8; 32],
    pub size: u64,
    pub mime: String,
}

impl MediaRef {
    /// Checks the field limits.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] if the MIME type is too long.
    pub fn validate(&self) -> Result<()> {
        check_len("media mime type", self.mime.len(), MAX_MIME_BYTES)
    }
}

/// Kind of a cumulative receipt. `Read` implies `Delivered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// Who may see a piece of a user's profile or presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Visibility {
    Everyone,
    Contacts,
    Nobody,
}

/// A one-time prekey of a device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Prekey {
    pub id: u32,
    pub key: Vec<u8>,
}

impl Prekey {
    /// Checks the field limits.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] if the key is too long.
    pub fn validate(&self) -> Result<()> {
        check_len("prekey", self.key.len(), MAX_KEY_BYTES)
    }
}

// ---- chat state shared by the partition state machine and the projections -------
//
// Defined once here: the partition stores them as records, the projections as
// views (both with bincode over these serde shapes, so moving a type here does not
// change a stored byte), and the bus carries some of them to edges.

/// Direct (a fixed pair) or group (a roster with admins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatKind {
    Direct,
    Group,
}

/// A member of a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The seq of the event that (last) made them a member: 0 in a direct chat,
    /// 1 for a group's founding members (the longest-standing member has the
    /// smallest `since`).
    pub since: crate::Seq,
    pub admin: bool,
}

/// The cumulative receipt cursors of one device (or the largest of a user's
/// devices) in one chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub delivered: crate::Seq,
    pub read: crate::Seq,
}

impl Cursors {
    /// The cursor of one kind.
    pub fn get(&self, kind: ReceiptKind) -> crate::Seq {
        match kind {
            ReceiptKind::Delivered => self.delivered,
            ReceiptKind::Read => self.read,
        }
    }

    /// The cursors after a receipt of `kind` up to `up_to_seq` (read implies
    /// delivered).
    #[must_use]
    pub fn advance(self, kind: ReceiptKind, up_to_seq: crate::Seq) -> Cursors {
        match kind {
            ReceiptKind::Delivered => Cursors { delivered: self.delivered.max(up_to_seq), read: self.read },
            ReceiptKind::Read => Cursors { delivered: self.delivered.max(up_to_seq), read: self.read.max(up_to_seq) },
        }
    }

    /// The larger of each cursor.
    #[must_use]
    pub fn max(self, other: Cursors) -> Cursors {
        Cursors { delivered: self.delivered.max(other.delivered), read: self.read.max(other.read) }
    }
}
