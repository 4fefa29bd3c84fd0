//! The envelope: the bytes that travel as a message's `ciphertext` when it
//! is end-to-end encrypted. The server never parses them.
//!
//! Version 1, all integers big-endian:
//!
//! ```text
//! version:u8 = 1
//! kind:u8            1 = direct (Olm), 2 = group (Megolm)
//! sender_key:[u8;32] the sender device's Curve25519 identity key
//! n:u16, then n × { user:u64, device:u32, olm_type:u8, len:u32, olm:[u8;len] }
//! group only:
//!   session_id_len:u16, session_id (utf-8), len:u32, megolm:[u8;len]
//! ```
//!
//! Direct: one Olm ciphertext of the [`Inner::Direct`] payload per recipient
//! device. Group: one Megolm ciphertext, plus, for each device that does not
//! hold the sender's current session yet, one Olm ciphertext of an
//! [`Inner::Share`] (the Megolm session key). Decoding checks every length
//! and never panics.

use chorus_schema::{ChatId, DeviceId, UserId};

use super::{Address, CryptoError};

pub const VERSION: u8 = 1;
const KIND_DIRECT: u8 = 1;
const KIND_GROUP: u8 = 2;

/// One Olm ciphertext for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub to: Address,
    /// vodozemac's message type: 0 pre-key, 1 normal.
    pub olm_type: u8,
    pub olm: Vec<u8>,
}

/// A decoded envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub sender_key: [u8; 32],
    pub slots: Vec<Slot>,
    /// `Some` for a group message: (Megolm session id, Megolm ciphertext).
    pub group: Option<(String, Vec<u8>)>,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            40 + self.slots.iter().map(|s| 17 + s.olm.len()).sum::<usize>()
                + self.group.as_ref().map_or(0, |(id, m)| 6 + id.len() + m.len()),
        );
        out.push(VERSION);
        out.push(if self.group.is_some() { KIND_GROUP } else { KIND_DIRECT });
        out.extend_from_slice(&self.sender_key);
        out.extend_from_slice(&u16::try_from(self.slots.len()).unwrap_or(u16::MAX).to_be_bytes());
        for s in self.slots.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&s.to.0 .0.to_be_bytes());
            out.extend_from_slice(&s.to.1 .0.to_be_bytes());
            out.push(s.olm_type);
            out.extend_from_slice(&len32(s.olm.len()).to_be_bytes());
            out.extend_from_slice(&s.olm);
        }
        if let Some((id, megolm)) = &self.group {
            out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
            if id.len() <= usize::from(u16::MAX) {
                out.extend_from_slice(id.as_bytes());
            }
            out.extend_from_slice(&len32(megolm.len()).to_be_bytes());
            out.extend_from_slice(megolm);
        }
        out
    }

    /// # Errors
    /// [`CryptoError::Malformed`] for anything but a whole, well-formed
    /// version-1 envelope.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, CryptoError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(CryptoError::Malformed(format!("envelope version {version}")));
        }
        let kind = r.u8()?;
        if kind != KIND_DIRECT && kind != KIND_GROUP {
            return Err(CryptoError::Malformed(format!("envelope kind {kind}")));
        }
        let sender_key: [u8; 32] = r.take(32)?.try_into().map_err(|_| malformed("sender key"))?;
        let n = r.u16()?;
        let mut slots = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let user = UserId(r.u64()?);
            let device = DeviceId(r.u32()?);
            let olm_type = r.u8()?;
            let len = r.u32()?;
            let olm = r.take(usize::try_from(len).map_err(|_| malformed("length"))?)?.to_vec();
            slots.push(Slot { to: (user, device), olm_type, olm });
        }
        let group = if kind == KIND_GROUP {
            let id_len = r.u16()?;
            let id = std::str::from_utf8(r.take(usize::from(id_len))?).map_err(|_| malformed("session id"))?;
            let len = r.u32()?;
            let megolm = r.take(usize::try_from(len).map_err(|_| malformed("length"))?)?.to_vec();
            Some((id.to_owned(), megolm))
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        Ok(Envelope { sender_key, slots, group })
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn malformed(what: &str) -> CryptoError {
    CryptoError::Malformed(format!("envelope: bad {what}"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        if self.0.len() < n {
            return Err(malformed("length (truncated)"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CryptoError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self) -> Result<u16, CryptoError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| malformed("u16"))?))
    }
    fn u32(&mut self) -> Result<u32, CryptoError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| malformed("u32"))?))
    }
    fn u64(&mut self) -> Result<u64, CryptoError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| malformed("u64"))?))
    }
}

/// What an Olm ciphertext carries (its plaintext), tagged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inner {
    /// A direct message's body in `chat`.
    Direct { chat: ChatId, body: Vec<u8> },
    /// The sender's Megolm session key for `chat`.
    Share { chat: ChatId, session_key: Vec<u8> },
}

const INNER_DIRECT: u8 = 1;
const INNER_SHARE: u8 = 2;

impl Inner {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, chat, body) = match self {
            Inner::Direct { chat, body } => (INNER_DIRECT, chat, body),
            Inner::Share { chat, session_key } => (INNER_SHARE, chat, session_key),
        };
        let mut out = Vec::with_capacity(17 + body.len());
        out.push(tag);
        out.extend_from_slice(&chat.0);
        out.extend_from_slice(body);
        out
    }

    /// # Errors
    /// [`CryptoError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Inner, CryptoError> {
        let mut r = Reader(bytes);
        let tag = r.u8()?;
        let chat = ChatId(r.take(16)?.try_into().map_err(|_| malformed("chat"))?);
        let body = r.0.to_vec();
        match tag {
            INNER_DIRECT => Ok(Inner::Direct { chat, body }),
            INNER_SHARE => Ok(Inner::Share { chat, session_key: body }),
            t => Err(CryptoError::Malformed(format!("payload tag {t}"))),
        }
    }
}

/// A group message's Megolm plaintext: the chat (bound, so a ciphertext
/// cannot be replayed into another chat) and the body.
pub fn group_plaintext(chat: ChatId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&chat.0);
    out.extend_from_slice(body);
    out
}

/// # Errors
/// [`CryptoError::Malformed`] when shorter than a chat id.
pub fn split_group_plaintext(bytes: &[u8]) -> Result<(ChatId, Vec<u8>), CryptoError> {
    let mut r = Reader(bytes);
    let chat = ChatId(r.take(16)?.try_into().map_err(|_| malformed("chat"))?);
    Ok((chat, r.0.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let e = Envelope {
            sender_key: [7; 32],
            slots: vec![Slot { to: (UserId(1), DeviceId(2)), olm_type: 0, olm: vec![1, 2, 3] }],
            group: Some(("sid".into(), vec![9; 40])),
        };
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Envelope::decode(&extra).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert!(matches!(Envelope::decode(&v2), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn inner_round_trips() {
        let i = Inner::Share { chat: ChatId([3; 16]), session_key: vec![5; 10] };
        assert_eq!(Inner::decode(&i.encode()).unwrap(), i);
        assert!(Inner::decode(&[9; 20]).is_err());
        assert!(Inner::decode(&[1; 5]).is_err());
    }
}
