//! End-to-end encryption (vodozemac's Olm and Megolm), pure logic: the
//! server only ever sees envelopes ([`envelope`]).
//!
//! - Each device has a vodozemac `Account` ([`Crypto::new`], created before
//!   registration): its identity key ([`IdentityKey`], Curve25519 ‖ Ed25519,
//!   64 bytes) is what the device registers; it publishes one-time keys and
//!   a fallback key signed with its Ed25519 key ([`Crypto::keys_to_upload`]).
//! - Direct messages: an Olm (double ratchet) session per pair of devices,
//!   created from a claimed one-time key (or the fallback key, whose
//!   signature is checked); the envelope carries one Olm ciphertext per
//!   recipient device, the sender's other devices included.
//! - Groups: WhatsApp-style sender keys. Each device has one Megolm session
//!   per group; its session key goes to every recipient device over Olm, in
//!   the first message that device gets from the session. It is rotated when
//!   a device leaves the roster (a removed member cannot decrypt what
//!   follows); a new device gets the key at the current index (it cannot
//!   decrypt what came before).
//! - [`store`]: the state pickled (encrypted with the app's key) on disk.
//! - [`safety`]: safety numbers (60 digits) to compare identity keys.

pub mod envelope;
mod machine;
pub mod safety;
pub mod sdk;
pub mod store;

pub use machine::{show, Crypto, Decrypted, IdentityKey, PeerKeys, Shares, Upload, ONE_TIME_KEYS_TARGET};
pub use safety::{format_safety_number, safety_number};
pub use sdk::{prepare, MAX_SEND_ATTEMPTS};
pub use store::CryptoStore;

use chorus_schema::{DeviceId, UserId};

/// A device: (user, device).
pub type Address = (UserId, DeviceId);

/// Why encrypting or decrypting failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("no Olm session with {}", show(*.0))]
    NoSession(Address),
    #[error("device {} gave neither a one-time key nor a fallback key", show(*.0))]
    NoKeys(Address),
    #[error("the fallback key of {} is not signed by its identity key", show(*.0))]
    BadSignature(Address),
    #[error("unknown sender device {} (fetch its identity key)", show(*.0))]
    UnknownDevice(Address),
    #[error("the envelope's sender key is not the identity key of {}", show(*.0))]
    IdentityMismatch(Address),
    #[error("the envelope has nothing for this device")]
    NotForThisDevice,
    #[error("unknown group session {0} (its key never reached this device)")]
    UnknownGroupSession(String),
    #[error("the message was encrypted for another chat")]
    WrongChat,
    #[error("olm: {0}")]
    Olm(String),
    #[error("megolm: {0}")]
    Megolm(String),
    #[error("store: {0}")]
    Store(String),
}
