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
