//! The key layout of every view: a one-byte view tag, then the ids that locate
//! the value, fixed width and big endian, so that byte order is id order and every
//! "all X of Y" question is one prefix scan.
//!
//! | tag | key | value | owner |
//! | --- | --- | --- | --- |
//! | `0x00` | `00 ‖ partition u16` | next offset to fold, `u64` | [`crate::Projection`] |
//! | `0x01` | `01` | the names of the views of a store rebuilt for some views only (`String`) | [`crate::replay`] |
//! | `0x10` | `10 ‖ chat [16]` | [`roster::Chat`](crate::fold::roster::Chat) | roster |
//! | `0x11` | `11 ‖ chat ‖ user u64` | [`roster::Member`](crate::fold::roster::Member) | roster |
//! | `0x20` | `20 ‖ chat ‖ user ‖ device u32` | [`cursors::Cursors`](crate::fold::cursors::Cursors) | cursors |
//! | `0x30` | `30 ‖ user ‖ chat` | [`chat_list::ChatListEntry`](crate::fold::chat_list::ChatListEntry) | chat_list |
//! | `0x31` | `31 ‖ chat ‖ seq u64` | sender `UserId` of the message at seq | chat_list |
//! | `0x40` | `40 ‖ chat ‖ sender` | [`receipt_status::Ticks`](crate::fold::receipt_status::Ticks) | receipt_status |
//! | `0x41` | `41 ‖ chat ‖ sender ‖ seq` | `()`: a message of sender not yet read by all | receipt_status |
//! | `0x50` | `50 ‖ user` | `()`: the user is registered | directory |
//! | `0x51` | `51 ‖ user ‖ device` | [`directory::Device`](crate::fold::directory::Device): a linked device and its session | directory |
//! | `0x52` | `52 ‖ user ‖ device` | [`directory::DeviceInfo`](crate::fold::directory::DeviceInfo): a linked device's name and link time | directory |
//! | `0x53` | `53 ‖ user ‖ device` | [`device_keys::Entry`](crate::fold::device_keys::Entry): a linked device's identity and fallback keys and unclaimed one-time key count (issue 14) | directory |
//! | `0x60` | `60 ‖ user ‖ chat ‖ seq` | offset `u64` of the item's record in the chat's partition | inbox |
//! | `0x12` | `12 ‖ chat` | [`roster::Details`](crate::fold::roster::Details): a group's name and description | roster |
//! | `0x28` | `28 ‖ chat ‖ user` | the user's best [`Cursors`](chorus_schema::Cursors) over their devices | receipt_log |
//! | `0x29` | `29 ‖ chat ‖ user ‖ kind u8 ‖ seq` | `at_ms` `u64`: the user's best cursor of `kind` (0 delivered, 1 read) reached seq | receipt_log |
//! | `0xa0` | `a0 ‖ user` | [`presence::Presence`](crate::fold::presence::Presence) | presence |
//! | `0xa1` | `a1 ‖ user` | [`privacy::Privacy`](crate::fold::privacy::Privacy): the user's privacy settings | privacy |
//! | `0xa2` | `a2 ‖ user ‖ target` | `()`: `user` blocks `target` | privacy |
//! | `0xa8` | `a8 ‖ user ‖ contact` | `()`: `contact` is in `user`'s contact list | contacts |
//! | `0x80` | `80 ‖ user` | [`profile::Stored`](crate::fold::profile::Stored): profile and privacy settings | profile |
//! | `0x81` | `81 ‖ user ‖ target` | `()`: `user` blocks `target` (what profile reads check) | profile |
//! | `0x90` | `90 ‖ author ‖ status id` | [`status::Post`](crate::fold::status::Post) | status |
//! | `0x91` | `91 ‖ partition ‖ expires_at u64 ‖ author ‖ status id` | `()`: expiry index | status |
//! | `0xb0` | `b0 ‖ contact hash [32]` | the `UserId` registered with that phone | contact_index |
//!
//! Tags are spaced so that a view can add a key family next to its own. A tag is
//! never reused for another meaning; a change of value format takes a new tag.

use chorus_schema::{ChatId, DeviceId, PartitionId, Seq, UserId};

/// The projector's cursor per partition.
pub const APPLIED: u8 = 0x00;
/// The mark of a store that holds only some views (a projector refuses it).
pub const PARTIAL: u8 = 0x01;
pub const ROSTER_CHAT: u8 = 0x10;
pub const ROSTER_MEMBER: u8 = 0x11;
pub const CURSORS: u8 = 0x20;
pub const CHAT_LIST: u8 = 0x30;
pub const MESSAGES: u8 = 0x31;
pub const TICKS: u8 = 0x40;
pub const PENDING: u8 = 0x41;
pub const USERS: u8 = 0x50;
pub const DEVICES: u8 = 0x51;
/// Linked devices' names and link times (issue 12).
pub const DEVICE_INFO: u8 = 0x52;
/// `53 ‖ user ‖ device`: the E2EE key directory (issue 14).
pub const DEVICE_KEYS: u8 = 0x53;
pub const INBOX: u8 = 0x60;
// ---- group info and message info (issue 12) ----
pub const ROSTER_INFO: u8 = 0x12;
pub const RECEIPT_BEST: u8 = 0x28;
pub const RECEIPT_STEP: u8 = 0x29;
// issue 12: presence, privacy, contacts
pub const PRESENCE: u8 = 0xa0;
pub const PRIVACY: u8 = 0xa1;
pub const BLOCKS: u8 = 0xa2;
pub const CONTACTS: u8 = 0xa8;
// issue 12: profiles, status, contact sync
pub const PROFILE: u8 = 0x80;
pub const PROFILE_BLOCKS: u8 = 0x81;
pub const STATUS: u8 = 0x90;
pub const STATUS_EXPIRY: u8 = 0x91;
pub const CONTACT_INDEX: u8 = 0xb0;

struct Key(Vec<u8>);

impl Key {
    fn new(tag: u8) -> Key {
        let mut v = Vec::with_capacity(1 + 16 + 8 + 8);
        v.push(tag);
        Key(v)
    }
    fn chat(mut self, chat: &ChatId) -> Key {
        self.0.extend_from_slice(chat.as_bytes());
        self
    }
    fn user(mut self, user: UserId) -> Key {
        self.0.extend_from_slice(&user.0.to_be_bytes());
        self
    }
    fn device(mut self, device: DeviceId) -> Key {
        self.0.extend_from_slice(&device.0.to_be_bytes());
        self
    }
    fn seq(mut self, seq: Seq) -> Key {
        self.0.extend_from_slice(&seq.0.to_be_bytes());
        self
    }
}

/// `00 ‖ partition`: the next offset of `partition` to fold.
pub fn applied(partition: PartitionId) -> Vec<u8> {
    let mut k = Key::new(APPLIED);
    k.0.extend_from_slice(&partition.0.to_be_bytes());
    k.0
}

/// `01`: present in a store rebuilt for some views only.
pub fn partial() -> Vec<u8> {
    vec![PARTIAL]
}

/// `10 ‖ chat`.
pub fn roster_chat(chat: &ChatId) -> Vec<u8> {
    Key::new(ROSTER_CHAT).chat(chat).0
}

/// `11 ‖ chat ‖ user`.
pub fn roster_member(chat: &ChatId, user: UserId) -> Vec<u8> {
    Key::new(ROSTER_MEMBER).chat(chat).user(user).0
}

/// `11 ‖ chat`: every member of a chat.
pub fn roster_members(chat: &ChatId) -> Vec<u8> {
    Key::new(ROSTER_MEMBER).chat(chat).0
}

/// `20 ‖ chat ‖ user ‖ device`.
pub fn cursors(chat: &ChatId, user: UserId, device: DeviceId) -> Vec<u8> {
    Key::new(CURSORS).chat(chat).user(user).device(device).0
}

/// `20 ‖ chat ‖ user`: every device of a user in a chat.
pub fn cursors_of_user(chat: &ChatId, user: UserId) -> Vec<u8> {
    Key::new(CURSORS).chat(chat).user(user).0
}

/// `20 ‖ chat`: every device of every user in a chat.
pub fn cursors_of_chat(chat: &ChatId) -> Vec<u8> {
    Key::new(CURSORS).chat(chat).0
}

/// `30 ‖ user ‖ chat`.
pub fn chat_list(user: UserId, chat: &ChatId) -> Vec<u8> {
    Key::new(CHAT_LIST).user(user).chat(chat).0
}

/// `30 ‖ user`: a user's whole chat list.
pub fn chat_list_of(user: UserId) -> Vec<u8> {
    Key::new(CHAT_LIST).user(user).0
}

/// `31 ‖ chat ‖ seq`.
pub fn message(chat: &ChatId, seq: Seq) -> Vec<u8> {
    Key::new(MESSAGES).chat(chat).seq(seq).0
}

/// `40 ‖ chat ‖ sender`.
pub fn ticks(chat: &ChatId, sender: UserId) -> Vec<u8> {
    Key::new(TICKS).chat(chat).user(sender).0
}

/// `40 ‖ chat`: the ticks of every sender of a chat.
pub fn ticks_of_chat(chat: &ChatId) -> Vec<u8> {
    Key::new(TICKS).chat(chat).0
}

/// `41 ‖ chat ‖ sender ‖ seq`.
pub fn pending(chat: &ChatId, sender: UserId, seq: Seq) -> Vec<u8> {
    Key::new(PENDING).chat(chat).user(sender).seq(seq).0
}

/// `41 ‖ chat ‖ sender`: a sender's messages not yet read by all.
pub fn pending_of(chat: &ChatId, sender: UserId) -> Vec<u8> {
    Key::new(PENDING).chat(chat).user(sender).0
}

/// `50 ‖ user`: present once the user is registered.
pub fn user(user: UserId) -> Vec<u8> {
    Key::new(USERS).user(user).0
}

/// `51 ‖ user ‖ device`.
pub fn device(user: UserId, device: DeviceId) -> Vec<u8> {
    Key::new(DEVICES).user(user).device(device).0
}

/// `51 ‖ user`: every linked device of a user.
pub fn devices_of(user: UserId) -> Vec<u8> {
    Key::new(DEVICES).user(user).0
}

/// `52 ‖ user ‖ device`.
pub fn device_info(user: UserId, device: DeviceId) -> Vec<u8> {
    Key::new(DEVICE_INFO).user(user).device(device).0
}

/// `52 ‖ user`: the names and link times of a user's linked devices.
pub fn device_infos_of(user: UserId) -> Vec<u8> {
    Key::new(DEVICE_INFO).user(user).0
}

/// `53 ‖ user ‖ device`.
pub fn device_keys(user: UserId, device: DeviceId) -> Vec<u8> {
    Key::new(DEVICE_KEYS).user(user).device(device).0
}

/// `53 ‖ user`: the key directory entries of a user's devices.
pub fn device_keys_of(user: UserId) -> Vec<u8> {
    Key::new(DEVICE_KEYS).user(user).0
}

/// `60 ‖ user ‖ chat ‖ seq`.
pub fn inbox(user: UserId, chat: &ChatId, seq: Seq) -> Vec<u8> {
    Key::new(INBOX).user(user).chat(chat).seq(seq).0
}

/// `60 ‖ user ‖ chat`: every item of a chat that a user receives.
pub fn inbox_of(user: UserId, chat: &ChatId) -> Vec<u8> {
    Key::new(INBOX).user(user).chat(chat).0
}

// ---- group info and message info (issue 12) ----

/// `12 ‖ chat`.
pub fn roster_info(chat: &ChatId) -> Vec<u8> {
    Key::new(ROSTER_INFO).chat(chat).0
}

/// `28 ‖ chat ‖ user`.
pub fn receipt_best(chat: &ChatId, user: UserId) -> Vec<u8> {
    Key::new(RECEIPT_BEST).chat(chat).user(user).0
}

/// `29 ‖ chat ‖ user ‖ kind ‖ seq` (`kind`: 0 delivered, 1 read).
pub fn receipt_step(chat: &ChatId, user: UserId, kind: u8, seq: Seq) -> Vec<u8> {
    let mut k = Key::new(RECEIPT_STEP).chat(chat).user(user);
    k.0.push(kind);
    k.seq(seq).0
}

/// `29 ‖ chat ‖ user ‖ kind`: every step of one cursor of a user.
pub fn receipt_steps(chat: &ChatId, user: UserId, kind: u8) -> Vec<u8> {
    let mut k = Key::new(RECEIPT_STEP).chat(chat).user(user);
    k.0.push(kind);
    k.0
}
/// `a0 ‖ user`.
pub fn presence(user: UserId) -> Vec<u8> {
    Key::new(PRESENCE).user(user).0
}

/// `a1 ‖ user`.
pub fn privacy(user: UserId) -> Vec<u8> {
    Key::new(PRIVACY).user(user).0
}

/// `a2 ‖ user ‖ target`.
pub fn block(user: UserId, target: UserId) -> Vec<u8> {
    Key::new(BLOCKS).user(user).user(target).0
}

/// `a8 ‖ user ‖ contact`.
pub fn contact(user: UserId, contact: UserId) -> Vec<u8> {
    Key::new(CONTACTS).user(user).user(contact).0
}

/// `a8 ‖ user`: every contact of a user.
pub fn contacts_of(user: UserId) -> Vec<u8> {
    Key::new(CONTACTS).user(user).0
}

/// `80 ‖ user`.
pub fn profile(user: UserId) -> Vec<u8> {
    Key::new(PROFILE).user(user).0
}

/// `81 ‖ user ‖ target`.
pub fn profile_block(user: UserId, target: UserId) -> Vec<u8> {
    Key::new(PROFILE_BLOCKS).user(user).user(target).0
}

/// `90 ‖ author ‖ status id`.
pub fn status(author: UserId, status_id: u64) -> Vec<u8> {
    Key::new(STATUS).user(author).seq(Seq(status_id)).0
}

/// `90 ‖ author`: every live post of an author.
pub fn statuses_of(author: UserId) -> Vec<u8> {
    Key::new(STATUS).user(author).0
}

/// `91 ‖ partition ‖ expires_at ‖ author ‖ status id`.
pub fn status_expiry(partition: PartitionId, expires_at_ms: u64, author: UserId, status_id: u64) -> Vec<u8> {
    let mut k = status_expiries(partition);
    k.extend_from_slice(&expires_at_ms.to_be_bytes());
    k.extend_from_slice(&author.0.to_be_bytes());
    k.extend_from_slice(&status_id.to_be_bytes());
    k
}

/// `91 ‖ partition`: the expiry index of a partition, soonest first.
pub fn status_expiries(partition: PartitionId) -> Vec<u8> {
    let mut k = vec![STATUS_EXPIRY];
    k.extend_from_slice(&partition.0.to_be_bytes());
    k
}

/// `b0 ‖ hash`.
pub fn contact_index(hash: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![CONTACT_INDEX];
    k.extend_from_slice(hash);
    k
}

/// The first key after every key that starts with `prefix` (`None` if the
/// prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// ---- decoding the ids at the end of a key ------------------------------------

/// The big-endian `u64` at `key[at..at + 8]`.
///
/// # Panics
/// If the key is too short: a key of a family always has its family's length,
/// because only this module builds keys.
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "documented panic: only this module builds keys, each family with its fixed length"
)]
pub(crate) fn u64_at(key: &[u8], at: usize) -> u64 {
    let bytes: [u8; 8] = key[at..at + 8].try_into().expect("key of a known family is long enough");
    u64::from_be_bytes(bytes)
}

/// The big-endian `u32` at `key[at..at + 4]`.
///
/// # Panics
/// As [`u64_at`].
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "documented panic: only this module builds keys, each family with its fixed length"
)]
pub(crate) fn u32_at(key: &[u8], at: usize) -> u32 {
    let bytes: [u8; 4] = key[at..at + 4].try_into().expect("key of a known family is long enough");
    u32::from_be_bytes(bytes)
}

/// The chat id at `key[at..at + 16]`.
///
/// # Panics
/// As [`u64_at`].
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "documented panic: only this module builds keys, each family with its fixed length"
)]
pub(crate) fn chat_at(key: &[u8], at: usize) -> ChatId {
    let bytes: [u8; 16] = key[at..at + 16].try_into().expect("key of a known family is long enough");
    ChatId(bytes)
}

/// Byte offsets of the ids in the keys above.
pub(crate) const AFTER_TAG: usize = 1;
pub(crate) const AFTER_CHAT: usize = 1 + 16;
pub(crate) const AFTER_CHAT_USER: usize = 1 + 16 + 8;
pub(crate) const AFTER_USER: usize = 1 + 8;
pub(crate) const AFTER_USER_CHAT: usize = 1 + 8 + 16;

/// A key as lowercase hex, for error messages.
pub fn display(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_id_order_and_prefixes_nest() {
        let chat = ChatId([7; 16]);
        assert!(message(&chat, Seq(255)) < message(&chat, Seq(256)));
        assert!(roster_member(&chat, UserId(1)) < roster_member(&chat, UserId(1 << 40)));
        let k = cursors(&chat, UserId(3), DeviceId(9));
        assert!(k.starts_with(&cursors_of_user(&chat, UserId(3))));
        assert!(k.starts_with(&cursors_of_chat(&chat)));
        assert_eq!(u64_at(&k, AFTER_CHAT), 3);
        assert_eq!(u32_at(&k, AFTER_CHAT_USER), 9);
        let cl = chat_list(UserId(5), &chat);
        assert_eq!(chat_at(&cl, AFTER_TAG + 8), chat);
        let d = device(UserId(5), DeviceId(1 << 20));
        assert!(d.starts_with(&devices_of(UserId(5))));
        assert!(device(UserId(5), DeviceId(2)) < d);
        assert_eq!(u32_at(&d, AFTER_USER), 1 << 20);
        assert!(!user(UserId(5)).starts_with(&devices_of(UserId(5))), "families do not nest");
        let i = inbox(UserId(5), &chat, Seq(300));
        assert!(i.starts_with(&inbox_of(UserId(5), &chat)));
        assert!(inbox(UserId(5), &chat, Seq(299)) < i);
        assert_eq!(u64_at(&i, AFTER_USER_CHAT), 300);
        assert_eq!(chat_at(&i, AFTER_USER), chat);
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
