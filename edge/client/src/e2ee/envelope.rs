//! The envelope: the bytes that travel as a message's `ciphertext` when it
//! is end-to-end encrypted, a flatbuffers table of `schema/fbs/e2ee.fbs`
//! (`chorus_schema::e2ee`, re-exported here). The server never parses them.
//!
//! Direct: one Olm ciphertext of a [`Payload::Direct`] per recipient device.
//! Group: one Megolm ciphertext of a [`Payload::Group`], plus, for each
//! device that does not hold the sender's current session yet, one Olm
//! ciphertext of a [`Payload::Share`] (the Megolm session key). Every
//! payload names its chat, checked on decryption (no replay into another
//! chat).

pub use chorus_schema::e2ee::{Envelope, OlmSlot as Slot, Payload, ENVELOPE_VERSION as VERSION};

use super::CryptoError;

/// # Errors
/// [`CryptoError::Malformed`] for anything but a verified envelope.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CryptoError> {
    Envelope::decode(bytes).map_err(|e| CryptoError::Malformed(e.to_string()))
}

/// # Errors
/// [`CryptoError::Malformed`] for anything but a verified payload.
pub fn decode_payload(bytes: &[u8]) -> Result<Payload, CryptoError> {
    Payload::decode(bytes).map_err(|e| CryptoError::Malformed(e.to_string()))
}
