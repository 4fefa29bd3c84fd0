//! [`Pseudonymizer`]: keyed BLAKE3 pseudonyms for user ids, devices, chats
//! and phone numbers (`chorus export --pseudonymize KEY`).

use chorus_schema::{ChatId, DeviceId, UserId};

/// Replaces identifiers by keyed BLAKE3 pseudonyms.
///
/// The hash key is `blake3::derive_key("chorus analytics pseudonym v1", KEY)`
/// of the operator's key string, so the same key gives the same pseudonyms
/// in every export (rows of separate exports join on them), another key gives
/// unrelated ones, and without the key nobody can map a pseudonym back by
/// hashing guessed ids (user ids and phone numbers are small spaces). Each
/// kind of identifier is hashed with its own domain tag, so a user id and a
/// device never share a pseudonym by construction.
///
/// A user is pseudonymized to a `u64` (the first 8 bytes of the hash), so the
/// column keeps its type; collisions are negligible below billions of users.
/// A device is pseudonymized as the pair (user, device): device numbers are
/// small per-user counters. Chats and phone numbers become 32 hex characters.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Pseudonymizer").field("key_id", &self.key_id()).finish()
    }
}

const CONTEXT: &str = "chorus analytics pseudonym v1";

impl Pseudonymizer {
    /// A pseudonymizer for the operator's key string.
    pub fn new(key: &str) -> Pseudonymizer {
        Pseudonymizer { key: blake3::derive_key(CONTEXT, key.as_bytes()) }
    }

    fn hash(&self, tag: &[u8], data: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(tag);
        h.update(data);
        h.finalize()
    }

    fn hash_u64(&self, tag: &[u8], data: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.hash(tag, data).as_bytes()[..8]);
        u64::from_le_bytes(b)
    }

    fn hash_hex(&self, tag: &[u8], data: &[u8]) -> String {
        crate::row::hex(&self.hash(tag, data).as_bytes()[..16])
    }

    pub fn user(&self, user: UserId) -> u64 {
        self.hash_u64(b"user\0", &user.0.to_le_bytes())
    }

    pub fn device(&self, user: UserId, device: DeviceId) -> u64 {
        let mut data = [0u8; 12];
        data[..8].copy_from_slice(&user.0.to_le_bytes());
        data[8..].copy_from_slice(&device.0.to_le_bytes());
        self.hash_u64(b"device\0", &data)
    }

    pub fn chat(&self, chat: &ChatId) -> crate::row::ChatKey {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.hash(b"chat\0", &chat.0).as_bytes()[..16]);
        crate::row::ChatKey(b)
    }

    pub fn phone(&self, phone: &str) -> String {
        self.hash_hex(b"phone\0", phone.as_bytes())
    }

    /// A fingerprint of the key (not the key): a manifest records it so that
    /// a resumed export refuses a different key.
    pub fn key_id(&self) -> String {
        self.hash_hex(b"key id\0", &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_pseudonyms_other_key_other() {
        let a = Pseudonymizer::new("k1");
        let b = Pseudonymizer::new("k1");
        let c = Pseudonymizer::new("k2");
        assert_eq!(a.user(UserId(7)), b.user(UserId(7)));
        assert_ne!(a.user(UserId(7)), c.user(UserId(7)));
        assert_ne!(a.user(UserId(7)), a.user(UserId(8)));
        assert_eq!(a.phone("+1555"), b.phone("+1555"));
        assert_ne!(a.phone("+1555"), c.phone("+1555"));
        assert_ne!(a.device(UserId(1), DeviceId(1)), a.device(UserId(2), DeviceId(1)));
        assert_eq!(a.key_id(), b.key_id());
        assert_ne!(a.key_id(), c.key_id());
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.key)));
    }
}
