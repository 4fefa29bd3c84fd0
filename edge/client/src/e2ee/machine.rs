//! [`Crypto`]: one device's end-to-end encryption state (its vodozemac
//! `Account`, its Olm sessions with other devices, its Megolm sessions),
//! pure logic without IO: the SDK feeds it the key directory's answers and
//! stores it ([`super::store`]) after every change.

use std::collections::{BTreeSet, HashMap};

use chorus_schema::{ChatId, DeviceId, UserId};
use vodozemac::megolm::{self, GroupSession, InboundGroupSession, MegolmMessage, SessionKey};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

use super::envelope::{decode_envelope, decode_payload, Envelope, Payload, Slot};
use super::{Address, CryptoError};

/// One-time keys the device keeps published: refilled up to this many
/// (vodozemac keeps the 5000 newest private one-time keys, so a key
/// claimed but not yet used is never forgotten).
pub const ONE_TIME_KEYS_TARGET: u32 = 50;
/// Olm sessions kept per peer device (the newest).
const SESSIONS_PER_PEER: usize = 5;

/// A device's identity key as registered: Curve25519 ‖ Ed25519 (64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityKey {
    pub curve: Curve25519PublicKey,
    pub ed: Ed25519PublicKey,
}

impl IdentityKey {
    pub const LEN: usize = 64;

    /// # Errors
    /// [`CryptoError::Malformed`] unless 64 bytes of two valid keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<IdentityKey, CryptoError> {
        let bad = || CryptoError::Malformed(format!("identity key: {} bytes, want 64 valid", bytes.len()));
        let (c, e) = (bytes.get(..32).ok_or_else(bad)?, bytes.get(32..).ok_or_else(bad)?);
        let e: &[u8; 32] = e.try_into().map_err(|_| bad())?;
        Ok(IdentityKey {
            curve: Curve25519PublicKey::from_slice(c).map_err(|_| bad())?,
            ed: Ed25519PublicKey::from_slice(e).map_err(|_| bad())?,
        })
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.curve.as_bytes());
        out[32..].copy_from_slice(self.ed.as_bytes());
        out
    }
}

/// A peer device's keys, as the key directory hands them out
/// (`DeviceKeys` of `ClaimKeys`/`GetDeviceKeys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerKeys {
    pub address: Address,
    pub identity_key: Vec<u8>,
    pub one_time_key: Option<Vec<u8>>,
    pub fallback_key: Option<Vec<u8>>,
    pub fallback_signature: Option<Vec<u8>>,
}

/// Keys to publish (`UploadKeys`): one-time keys `(id, key)`, and a new
/// fallback key `(id, key, ed25519 signature over key)` when due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upload {
    pub one_time: Vec<(u32, Vec<u8>)>,
    pub fallback: Option<(u32, Vec<u8>, Vec<u8>)>,
}

impl Upload {
    pub fn is_empty(&self) -> bool {
        self.one_time.is_empty() && self.fallback.is_none()
    }
}

/// This device's Megolm session for a chat (its "sender key").
pub(crate) struct Outbound {
    pub(crate) session: GroupSession,
    /// The devices the session was created for; a device leaving this set
    /// rotates the session.
    pub(crate) roster: BTreeSet<Address>,
    /// The devices that received the session key in a committed message.
    pub(crate) shared: BTreeSet<Address>,
}

/// A Megolm session received from `sender_key` for `chat`.
pub(crate) struct Inbound {
    pub(crate) session: InboundGroupSession,
    pub(crate) sender_key: [u8; 32],
    pub(crate) chat: ChatId,
}

/// The shares a group envelope carried: confirm them with
/// [`Crypto::confirm_shared`] once the message is committed (a refused send
/// shared nothing, and the next attempt shares again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shares {
    pub chat: ChatId,
    pub session_id: String,
    pub devices: Vec<Address>,
}

/// What [`Crypto::decrypt`] changed besides giving the plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decrypted {
    pub body: Vec<u8>,
    /// A new Olm session was created from a pre-key message.
    pub new_session: bool,
    /// The message used this device's fallback key: upload a new one.
    pub fallback_used: bool,
}

/// One device's end-to-end encryption state.
pub struct Crypto {
    pub(crate) account: Account,
    pub(crate) me: Option<Address>,
    pub(crate) next_prekey_id: u32,
    /// The published fallback key, and whether a peer used it.
    pub(crate) fallback_public: Option<[u8; 32]>,
    pub(crate) fallback_used: bool,
    /// Olm sessions by the peer device's Curve25519 identity key, newest last.
    pub(crate) olm: HashMap<[u8; 32], Vec<Session>>,
    /// The identity keys of the devices this one talks to.
    pub(crate) known: HashMap<Address, IdentityKey>,
    pub(crate) outbound: HashMap<ChatId, Outbound>,
    pub(crate) inbound: HashMap<String, Inbound>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("me", &self.me)
            .field("olm_peers", &self.olm.len())
            .field("outbound", &self.outbound.len())
            .field("inbound", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl Default for Crypto {
    fn default() -> Self {
        Crypto::new()
    }
}

impl Crypto {
    /// A new device: a fresh account (identity keys), before registration.
    pub fn new() -> Crypto {
        Crypto {
            account: Account::new(),
            me: None,
            next_prekey_id: 1,
            fallback_public: None,
            fallback_used: false,
            olm: HashMap::new(),
            known: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
        }
    }

    /// The identity key to register (`identity_key` of `VerifyOtp`/`PairRequest`).
    pub fn identity_key(&self) -> IdentityKey {
        IdentityKey { curve: self.account.curve25519_key(), ed: self.account.ed25519_key() }
    }

    /// Sets this device's address once registered.
    pub fn set_address(&mut self, me: Address) {
        self.me = Some(me);
    }

    /// Whether keys were ever handed out for upload ([`Crypto::keys_to_upload`]).
    pub fn published(&self) -> bool {
        self.next_prekey_id > 1
    }

    pub fn address(&self) -> Option<Address> {
        self.me
    }

    /// The keys to upload: one-time keys up to [`ONE_TIME_KEYS_TARGET`]
    /// given `left` on the server (`None`: none uploaded yet), and a new
    /// signed fallback key if there is none or the current one was used.
    /// The keys count as published from here on (an upload that fails is
    /// simply followed by another one).
    pub fn keys_to_upload(&mut self, left: Option<u32>) -> Upload {
        let want = ONE_TIME_KEYS_TARGET.saturating_sub(left.unwrap_or(0));
        let mut up = Upload::default();
        if want > 0 {
            self.account.generate_one_time_keys(usize::try_from(want).unwrap_or(0));
            let mut keys: Vec<_> = self.account.one_time_keys().into_iter().collect();
            keys.sort_by_key(|(id, _)| id.to_base64());
            for (_, key) in keys {
                up.one_time.push((self.next_prekey_id, key.to_vec()));
                self.next_prekey_id = self.next_prekey_id.saturating_add(1);
            }
        }
        if self.fallback_public.is_none() || self.fallback_used {
            self.account.generate_fallback_key();
            if let Some(key) = self.account.fallback_key().into_values().next() {
                let sig = self.account.sign(key.as_bytes()).to_bytes().to_vec();
                up.fallback = Some((self.next_prekey_id, key.to_vec(), sig));
                self.next_prekey_id = self.next_prekey_id.saturating_add(1);
                self.fallback_public = Some(key.to_bytes());
                self.fallback_used = false;
            }
        }
        self.account.mark_keys_as_published();
        up
    }

    /// Remembers a device's identity key (from `GetDeviceKeys`).
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for a bad key.
    pub fn learn(&mut self, address: Address, identity_key: &[u8]) -> Result<IdentityKey, CryptoError> {
        let key = IdentityKey::from_bytes(identity_key)?;
        self.known.insert(address, key);
        Ok(key)
    }

    pub fn known_identity(&self, address: Address) -> Option<IdentityKey> {
        self.known.get(&address).copied()
    }

    /// Whether this device has an Olm session with `address`.
    pub fn has_session(&self, address: Address) -> bool {
        self.known.get(&address).is_some_and(|k| self.olm.get(k.curve.as_bytes()).is_some_and(|s| !s.is_empty()))
    }

    /// The devices of `to` without an Olm session (claim their keys).
    pub fn missing_sessions(&self, to: &[Address]) -> Vec<Address> {
        to.iter().copied().filter(|a| !self.has_session(*a)).collect()
    }

    /// Creates an Olm session with a claimed device: from its one-time key,
    /// else from its fallback key (whose signature must verify against its
    /// identity key). A device that already has a session is only learnt.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for bad keys, [`CryptoError::BadSignature`],
    /// [`CryptoError::NoKeys`] when the device gave neither key.
    pub fn add_peer(&mut self, peer: &PeerKeys) -> Result<(), CryptoError> {
        let identity = self.learn(peer.address, &peer.identity_key)?;
        if self.has_session(peer.address) {
            return Ok(());
        }
        let key = if let Some(otk) = &peer.one_time_key {
            Curve25519PublicKey::from_slice(otk).map_err(|_| CryptoError::Malformed("one-time key".into()))?
        } else if let Some(fb) = &peer.fallback_key {
            let sig = peer
                .fallback_signature
                .as_deref()
                .and_then(|s| Ed25519Signature::from_slice(s).ok())
                .ok_or(CryptoError::BadSignature(peer.address))?;
            identity.ed.verify(fb, &sig).map_err(|_| CryptoError::BadSignature(peer.address))?;
            Curve25519PublicKey::from_slice(fb).map_err(|_| CryptoError::Malformed("fallback key".into()))?
        } else {
            return Err(CryptoError::NoKeys(peer.address));
        };
        let session = self.account.create_outbound_session(SessionConfig::version_2(), identity.curve, key);
        self.push_session(identity.curve.to_bytes(), session);
        Ok(())
    }

    fn push_session(&mut self, peer: [u8; 32], session: Session) {
        let list = self.olm.entry(peer).or_default();
        list.push(session);
        if list.len() > SESSIONS_PER_PEER {
            list.remove(0);
        }
    }

    fn olm_encrypt(&mut self, to: Address, inner: &Payload) -> Result<Slot, CryptoError> {
        let key = self.known.get(&to).ok_or(CryptoError::NoSession(to))?;
        let session =
            self.olm.get_mut(key.curve.as_bytes()).and_then(|s| s.last_mut()).ok_or(CryptoError::NoSession(to))?;
        let (olm_type, olm) = session.encrypt(inner.encode()).to_parts();
        Ok(Slot { to, olm_type: u8::try_from(olm_type).unwrap_or(u8::MAX), olm })
    }

    /// A direct message in `chat` for the devices `to` (the recipient's and
    /// this user's other devices): one Olm ciphertext each.
    ///
    /// # Errors
    /// [`CryptoError::NoSession`] for a device without a session (nothing
    /// was encrypted for anyone).
    pub fn encrypt_direct(&mut self, chat: ChatId, to: &[Address], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if let Some(a) = self.missing_sessions(to).first() {
            return Err(CryptoError::NoSession(*a));
        }
        let inner = Payload::Direct { chat, body: body.to_vec() };
        let mut slots = Vec::with_capacity(to.len());
        for a in dedup(to) {
            slots.push(self.olm_encrypt(a, &inner)?);
        }
        Ok(Envelope { sender_key: self.account.curve25519_key().to_bytes(), slots, group: None }.encode())
    }

    /// A group message in `chat` for the devices `to` (every device of every
    /// member but this one). This device's Megolm session for the chat is
    /// rotated (a new one) when a device of the previous roster is missing
    /// from `to`, so a removed member cannot read what follows; a device that
    /// does not hold the session yet gets its key, at the current index (it
    /// cannot read earlier messages), in an Olm share.
    ///
    /// # Errors
    /// [`CryptoError::NoSession`] for a device that needs a share but has no
    /// Olm session.
    pub fn encrypt_group(
        &mut self,
        chat: ChatId,
        to: &[Address],
        body: &[u8],
    ) -> Result<(Vec<u8>, Shares), CryptoError> {
        let roster: BTreeSet<Address> = to.iter().copied().collect();
        let rotate = self.outbound.get(&chat).is_none_or(|o| !o.roster.is_subset(&roster));
        if rotate {
            let session = GroupSession::new(megolm::SessionConfig::version_2());
            // Keep an inbound copy: this user's messages come back to this device.
            let own = InboundGroupSession::new(&session.session_key(), megolm::SessionConfig::version_2());
            self.inbound.insert(
                session.session_id(),
                Inbound { session: own, sender_key: self.account.curve25519_key().to_bytes(), chat },
            );
            self.outbound.insert(chat, Outbound { session, roster: roster.clone(), shared: BTreeSet::new() });
        }
        let needs: Vec<Address> = {
            let o = self.outbound.get(&chat).ok_or(CryptoError::Malformed("outbound".into()))?;
            roster.difference(&o.shared).copied().collect()
        };
        if let Some(a) = self.missing_sessions(&needs).first() {
            return Err(CryptoError::NoSession(*a));
        }
        let (session_key, session_id) = {
            let o = self.outbound.get_mut(&chat).ok_or(CryptoError::Malformed("outbound".into()))?;
            o.roster = roster;
            (o.session.session_key(), o.session.session_id())
        };
        let share = Payload::Share { chat, session_key: session_key.to_bytes() };
        let mut slots = Vec::with_capacity(needs.len());
        for a in &needs {
            slots.push(self.olm_encrypt(*a, &share)?);
        }
        let o = self.outbound.get_mut(&chat).ok_or(CryptoError::Malformed("outbound".into()))?;
        let megolm = o.session.encrypt(Payload::Group { chat, body: body.to_vec() }.encode()).to_bytes();
        let bytes = Envelope {
            sender_key: self.account.curve25519_key().to_bytes(),
            slots,
            group: Some((session_id.clone(), megolm)),
        }
        .encode();
        Ok((bytes, Shares { chat, session_id, devices: needs }))
    }

    /// Records that a committed group message carried `shares`.
    pub fn confirm_shared(&mut self, shares: &Shares) {
        if let Some(o) = self.outbound.get_mut(&shares.chat) {
            if o.session.session_id() == shares.session_id {
                o.shared.extend(shares.devices.iter().copied());
            }
        }
    }

    /// Forgets this device's Megolm session for `chat`: the next group
    /// message starts a new one (e.g. after a member left).
    pub fn rotate(&mut self, chat: ChatId) {
        self.outbound.remove(&chat);
    }

    /// Decrypts an envelope that `from` sent in `chat` to this device.
    /// The sender's identity key must be known ([`Crypto::learn`]) and match
    /// the envelope's.
    ///
    /// # Errors
    /// [`CryptoError::UnknownDevice`] (learn its key and retry),
    /// [`CryptoError::IdentityMismatch`], [`CryptoError::NotForThisDevice`],
    /// [`CryptoError::UnknownGroupSession`], [`CryptoError::WrongChat`],
    /// [`CryptoError::Malformed`], [`CryptoError::Olm`], [`CryptoError::Megolm`].
    pub fn decrypt(&mut self, chat: ChatId, from: Address, bytes: &[u8]) -> Result<Decrypted, CryptoError> {
        let env = decode_envelope(bytes)?;
        let me = self.me.ok_or(CryptoError::NotForThisDevice)?;
        let sender = if Some(from) == self.me {
            self.identity_key()
        } else {
            *self.known.get(&from).ok_or(CryptoError::UnknownDevice(from))?
        };
        if sender.curve.to_bytes() != env.sender_key {
            return Err(CryptoError::IdentityMismatch(from));
        }
        let mut out = Decrypted::default();
        let mut direct = None;
        // A group message whose session this device holds needs no share
        // (a share read again, e.g. after a restart, would not decrypt: Olm
        // keys are used once).
        let have_group = env.group.as_ref().is_some_and(|(id, _)| self.inbound.contains_key(id));
        for slot in env.slots.iter().filter(|s| s.to == me && !have_group) {
            let inner = self.olm_decrypt(sender.curve, slot, &mut out)?;
            match inner {
                Payload::Direct { chat: c, body } if env.group.is_none() => {
                    if c != chat {
                        return Err(CryptoError::WrongChat);
                    }
                    direct = Some(body);
                }
                Payload::Share { chat: c, session_key } if env.group.is_some() => {
                    if c != chat {
                        return Err(CryptoError::WrongChat);
                    }
                    let key = SessionKey::from_bytes(&session_key)
                        .map_err(|e| CryptoError::Malformed(format!("session key: {e}")))?;
                    let session = InboundGroupSession::new(&key, megolm::SessionConfig::version_2());
                    let id = session.session_id();
                    match self.inbound.get(&id) {
                        Some(have) if have.sender_key != env.sender_key || have.chat != chat => {
                            return Err(CryptoError::IdentityMismatch(from));
                        }
                        Some(_) => {}
                        None => {
                            self.inbound.insert(id, Inbound { session, sender_key: env.sender_key, chat });
                        }
                    }
                }
                _ => return Err(CryptoError::Malformed("payload does not match the envelope kind".into())),
            }
        }
        match env.group {
            None => {
                out.body = direct.ok_or(CryptoError::NotForThisDevice)?;
                Ok(out)
            }
            Some((id, megolm)) => {
                let inbound = self.inbound.get_mut(&id).ok_or_else(|| CryptoError::UnknownGroupSession(id.clone()))?;
                if inbound.sender_key != env.sender_key || inbound.chat != chat {
                    return Err(CryptoError::WrongChat);
                }
                let msg = MegolmMessage::from_bytes(&megolm).map_err(|e| CryptoError::Malformed(e.to_string()))?;
                let plain = inbound.session.decrypt(&msg).map_err(|e| CryptoError::Megolm(e.to_string()))?;
                let Payload::Group { chat: c, body } = decode_payload(&plain.plaintext)? else {
                    return Err(CryptoError::Malformed("a Megolm payload that is not a group message".into()));
                };
                if c != chat {
                    return Err(CryptoError::WrongChat);
                }
                out.body = body;
                Ok(out)
            }
        }
    }

    fn olm_decrypt(
        &mut self,
        sender: Curve25519PublicKey,
        slot: &Slot,
        out: &mut Decrypted,
    ) -> Result<Payload, CryptoError> {
        let msg = OlmMessage::from_parts(usize::from(slot.olm_type), &slot.olm)
            .map_err(|e| CryptoError::Malformed(format!("olm: {e}")))?;
        let mut last_err = None;
        if let Some(sessions) = self.olm.get_mut(sender.as_bytes()) {
            // Newest first: the likeliest.
            for s in sessions.iter_mut().rev() {
                if let OlmMessage::PreKey(p) = &msg {
                    if p.session_id() != s.session_id() {
                        continue;
                    }
                }
                match s.decrypt(&msg) {
                    Ok(plain) => return decode_payload(&plain),
                    Err(e) => last_err = Some(e.to_string()),
                }
            }
        }
        let OlmMessage::PreKey(pre) = &msg else {
            return Err(CryptoError::Olm(last_err.unwrap_or_else(|| "no session with the sender".into())));
        };
        let used_fallback = self.fallback_public == Some(pre.one_time_key().to_bytes());
        let created = self.account.create_inbound_session(sender, pre).map_err(|e| CryptoError::Olm(e.to_string()))?;
        self.push_session(sender.to_bytes(), created.session);
        out.new_session = true;
        if used_fallback {
            self.fallback_used = true;
            out.fallback_used = true;
        }
        decode_payload(&created.plaintext)
    }
}

fn dedup(to: &[Address]) -> Vec<Address> {
    let set: BTreeSet<Address> = to.iter().copied().collect();
    set.into_iter().collect()
}

/// An address as `user:device` (for logs and errors).
pub fn show(a: Address) -> String {
    let (UserId(u), DeviceId(d)) = a;
    format!("{u}:{d}")
}
