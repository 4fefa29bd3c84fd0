//! The views: one module per view, each a pure fold of committed events through a
//! [`Txn`](crate::store::Txn).
//!
//! Each view has `apply(txn, &EventRecord, &mut Vec<Effect>) -> Result<()>` and
//! read functions over the same transaction trait. Views may read each other's
//! keys, so [`Projection`](crate::Projection) applies them in a fixed order:
//! [`roster`] (membership after the event), [`cursors`], [`chat_list`] (reads the
//! roster), [`receipt_status`] (reads the roster and the cursors), [`inbox`]
//! (reads the roster), [`directory`] (reads only its own keys), [`receipt_log`]
//! (reads only its own keys), then the views of user-partition events, each
//! folding only its own keys: [`presence`], [`privacy`] (privacy settings and
//! blocks), [`contacts`], [`profile`] (with blocks), [`status`] (expiring
//! posts by the log's time) and [`contact_index`] (keyed contact hashes of
//! phones).

pub mod chat_list;
pub mod contact_index;
pub mod contacts;
pub mod cursors;
pub mod device_keys;
pub mod directory;
pub mod inbox;
pub mod media;
pub mod presence;
pub mod privacy;
pub mod profile;
pub mod push_tokens;
pub mod receipt_log;
pub mod receipt_status;
pub mod reports;
pub mod roster;
pub mod status;

use chorus_schema::{ChatId, DeviceId, Seq, UserId};

/// Work for the projector to do after the transaction that produced it has
/// committed (never before: an effect must not announce state that a crash could
/// still lose). Replay and rebuild drop effects. After a crash between commit and
/// effects, the effects of the last transaction are lost, so consumers rely on the
/// views (sync by cursor) and treat effects as a fast path, as the bus is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A new timeline item `(chat, seq)` for the devices of `recipients`: the
    /// members just before or just after the item (so an added member gets
    /// their own `MemberAdded`, a removed member gets their own `MemberRemoved`
    /// and nothing after it), sorted. The origin user is included: their other
    /// devices need the item too (multi-device); whoever pushes to devices
    /// skips the origin *device*, which has it already. See
    /// [`roster::audience`].
    Deliver { chat: ChatId, seq: Seq, recipients: Vec<UserId> },
    /// Every message of `sender` in `chat` with seq ≤ `up_to_seq` now has at
    /// least `status` (`Delivered` or `Read`, never `Sent`), for the sender's
    /// devices. `up_to_seq` is the seq of one of the sender's messages. See
    /// [`receipt_status`] for the exact rule.
    ReceiptChanged { chat: ChatId, sender: UserId, up_to_seq: Seq, status: chorus_schema::bus::ReceiptStatus },
    /// A device of `user` was linked, unlinked or logged out (see
    /// [`directory`]): edges close the sessions of a device that is gone and
    /// tell the user's other devices.
    Account { user: UserId, device: DeviceId, change: chorus_schema::DeviceNoticeKind },
    /// `users` became members of `chat` at `seq` (0: a direct chat opened;
    /// its first message follows), see [`roster`]: edges holding their
    /// devices start taking the chat's deliveries.
    Joined { chat: ChatId, seq: Seq, users: Vec<UserId> },
    /// `user`'s presence changed (`Some`: see [`presence`]), or who may see it
    /// did (`None`: their privacy settings, blocks or contacts changed; see
    /// [`privacy`], [`contacts`]). Published on `chorus.presence.<user>`.
    Presence { user: UserId, presence: Option<presence::Presence> },
    // ---- E2EE (issue 14) ----
    /// A claim took `device` of `user` below the low watermark of unclaimed
    /// one-time keys (see [`device_keys`]): published on `chorus.keys.<user>`.
    KeysLow { user: UserId, device: DeviceId, left: u32 },
}
