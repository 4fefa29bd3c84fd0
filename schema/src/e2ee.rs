//! The end-to-end encryption envelope (issue 14; `fbs/e2ee.fbs`): what the
//! client SDK puts in a message's `ciphertext`, and what its Olm and Megolm
//! ciphertexts decrypt to. The server never decodes these.

use crate::codec;
use crate::fb::e_2ee as fx;
use crate::ids::{ChatId, DeviceId, UserId};
use crate::keys::MAX_DEVICE_LIST;
use crate::limits::MAX_CIPHERTEXT_BYTES;
use crate::{Error, Result};

/// The envelope version this code writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
const ENVELOPE_IDENT: &str = "CE2E";
const PAYLOAD_IDENT: &str = "CE2P";

/// One Olm ciphertext for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OlmSlot {
    pub to: (UserId, DeviceId),
    /// vodozemac's message type: 0 pre-key, 1 normal.
    pub olm_type: u8,
    pub olm: Vec<u8>,
}

/// A message's ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The sending device's Curve25519 identity key.
    pub sender_key: [u8; 32],
    pub slots: Vec<OlmSlot>,
    /// A group message: (Megolm session id, Megolm ciphertext).
    pub group: Option<(String, Vec<u8>)>,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = codec::Builder::with_capacity(
            128 + self.slots.iter().map(|s| 32 + s.olm.len()).sum::<usize>()
                + self.group.as_ref().map_or(0, |(id, m)| 16 + id.len() + m.len()),
        );
        let slots: Vec<_> = self
            .slots
            .iter()
            .map(|s| {
                let olm = fbb.create_vector(&s.olm);
                fx::OlmSlot::create(
                    &mut fbb,
                    &fx::OlmSlotArgs { user: s.to.0 .0, device: s.to.1 .0, olm_type: s.olm_type, olm: Some(olm) },
                )
            })
            .collect();
        let slots = fbb.create_vector(&slots);
        let sender_key = fbb.create_vector(&self.sender_key);
        let (megolm_session, megolm) = match &self.group {
            Some((id, m)) => (Some(fbb.create_string(id)), Some(fbb.create_vector(m))),
            None => (None, None),
        };
        let root = fx::Envelope::create(
            &mut fbb,
            &fx::EnvelopeArgs {
                version: ENVELOPE_VERSION,
                sender_key: Some(sender_key),
                slots: Some(slots),
                megolm_session,
                megolm,
            },
        );
        codec::finish(fbb, root, ENVELOPE_IDENT)
    }

    /// # Errors
    /// [`Error::Malformed`] for anything but a verified version-1 envelope.
    pub fn decode(buf: &[u8]) -> Result<Envelope> {
        let e = codec::root::<fx::Envelope>(
            buf,
            "e2ee envelope",
            ENVELOPE_IDENT,
            MAX_CIPHERTEXT_BYTES,
            MAX_DEVICE_LIST + 4,
        )?;
        if e.version() != ENVELOPE_VERSION {
            return Err(Error::malformed("e2ee envelope", format!("version {}", e.version())));
        }
        let sender_key: [u8; 32] = e
            .sender_key()
            .bytes()
            .try_into()
            .map_err(|_| Error::malformed("e2ee envelope", "sender key: want 32 bytes"))?;
        let slots = e
            .slots()
            .map(|v| {
                v.iter()
                    .map(|s| OlmSlot {
                        to: (UserId(s.user()), DeviceId(s.device())),
                        olm_type: s.olm_type(),
                        olm: s.olm().bytes().to_vec(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let group = match (e.megolm_session(), e.megolm()) {
            (Some(id), Some(m)) => Some((id.to_owned(), m.bytes().to_vec())),
            (None, None) => None,
            _ => return Err(Error::malformed("e2ee envelope", "a Megolm session without a ciphertext, or back")),
        };
        Ok(Envelope { sender_key, slots, group })
    }
}

/// What an Olm or Megolm ciphertext decrypts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A direct message's body (Olm).
    Direct { chat: ChatId, body: Vec<u8> },
    /// The sender's Megolm session key for `chat` (Olm).
    Share { chat: ChatId, session_key: Vec<u8> },
    /// A group message's body (Megolm).
    Group { chat: ChatId, body: Vec<u8> },
}

impl Payload {
    pub fn chat(&self) -> ChatId {
        match self {
            Payload::Direct { chat, .. } | Payload::Share { chat, .. } | Payload::Group { chat, .. } => *chat,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (kind, chat, body) = match self {
            Payload::Direct { chat, body } => (fx::PayloadKind::Direct, chat, body),
            Payload::Share { chat, session_key } => (fx::PayloadKind::Share, chat, session_key),
            Payload::Group { chat, body } => (fx::PayloadKind::Group, chat, body),
        };
        let mut fbb = codec::Builder::with_capacity(64 + body.len());
        let body = fbb.create_vector(body);
        let chat = codec::chat_fb(chat);
        let root = fx::Payload::create(&mut fbb, &fx::PayloadArgs { kind, chat: Some(&chat), body: Some(body) });
        codec::finish(fbb, root, PAYLOAD_IDENT)
    }

    /// # Errors
    /// [`Error::Malformed`] unless a verified payload of a known kind with a chat.
    pub fn decode(buf: &[u8]) -> Result<Payload> {
        let p = codec::root::<fx::Payload>(buf, "e2ee payload", PAYLOAD_IDENT, MAX_CIPHERTEXT_BYTES, 4)?;
        let chat = codec::chat(p.chat().ok_or_else(|| Error::malformed("e2ee payload", "no chat"))?);
        let body = p.body().map(|b| b.bytes().to_vec()).unwrap_or_default();
        Ok(match p.kind() {
            fx::PayloadKind::Direct => Payload::Direct { chat, body },
            fx::PayloadKind::Share => Payload::Share { chat, session_key: body },
            fx::PayloadKind::Group => Payload::Group { chat, body },
            other => return Err(Error::malformed("e2ee payload", format!("kind {}", other.0))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_payloads_round_trip_and_garbage_is_refused() {
        let e = Envelope {
            sender_key: [7; 32],
            slots: vec![OlmSlot { to: (UserId(1), DeviceId(2)), olm_type: 0, olm: vec![1, 2, 3] }],
            group: Some(("sid".into(), vec![9; 40])),
        };
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        let direct = Envelope { group: None, ..e };
        assert_eq!(Envelope::decode(&direct.encode()).unwrap(), direct);
        for cut in [0, 4, 8, bytes.len() / 2] {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Envelope::decode(b"hello there, not an envelope").is_err());
        for p in [
            Payload::Direct { chat: ChatId([3; 16]), body: b"hi".to_vec() },
            Payload::Share { chat: ChatId([4; 16]), session_key: vec![5; 10] },
            Payload::Group { chat: ChatId([5; 16]), body: vec![] },
        ] {
            assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
        }
        // One kind is never read as the other.
        assert!(Payload::decode(&bytes).is_err());
        assert!(Envelope::decode(&Payload::Group { chat: ChatId([5; 16]), body: vec![] }.encode()).is_err());
    }
}
