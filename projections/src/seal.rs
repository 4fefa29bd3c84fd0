//! View replies an edge can trust: every view request carries a fresh nonce,
//! and every reply a keyed BLAKE3 tag over the subject, the request and the
//! reply, made with the *view key* that projectors and edges share (and the
//! bus does not hold). A login then never rests on an unauthenticated bus
//! answer: whoever can publish on the bus but lacks the key cannot forge a
//! session, and cannot replay an old reply (say, of a session since revoked)
//! to a new request.
//!
//! ```text
//! request  = nonce (16 bytes) ‖ query
//! reply    = answer ‖ tag (32 bytes)
//! tag      = BLAKE3-keyed(view key, "chorus view v1" ‖ len(subject) ‖ subject ‖ nonce ‖ len(query) ‖ query ‖ answer)
//! ```
//!
//! The key is 32 random bytes, stored hex-encoded in a file of mode 0600
//! ([`ViewKey::create`]); `chorus dev` makes one in `data/tls/view.key`.

use std::path::Path;

/// Bytes of the nonce in front of each request.
pub const NONCE_BYTES: usize = 16;
/// Bytes of the tag behind each reply.
pub const TAG_BYTES: usize = 32;

const CONTEXT: &[u8] = b"chorus view v1";

/// Why a sealed message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("request shorter than its nonce")]
    ShortRequest,
    #[error("reply shorter than its tag")]
    ShortReply,
    #[error("reply tag does not match: not from a projector holding the view key, or not for this request")]
    BadTag,
    #[error("view key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// The shared secret of projectors and edges.
#[derive(Clone)]
pub struct ViewKey([u8; 32]);

impl std::fmt::Debug for ViewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewKey(…)")
    }
}

impl ViewKey {
    /// The deployment's contact-sync key, derived one way from this key:
    /// edges hand it to clients (`LoggedIn`), projectors index phone hashes
    /// with it (`contact_index`); it reveals nothing of the view key.
    pub fn contact_key(&self) -> [u8; 32] {
        chorus_schema::social::derive_contact_key(&self.0)
    }

    /// A fresh random key.
    pub fn random() -> ViewKey {
        ViewKey(rand::random())
    }

    /// Reads a key written by [`ViewKey::create`].
    ///
    /// # Errors
    /// [`SealError::Key`] when the file is unreadable or not 64 hex digits.
    pub fn load(path: &Path) -> Result<ViewKey, SealError> {
        let err = |reason: String| SealError::Key { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|e| err(format!("not hex: {e}")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| err("not 32 bytes".into()))?;
        Ok(ViewKey(key))
    }

    /// Writes a new random key to `path` (mode 0600) unless a key is there
    /// already; returns the key in the file.
    ///
    /// # Errors
    /// [`SealError::Key`] on IO failure or an unreadable existing file.
    pub fn create(path: &Path) -> Result<ViewKey, SealError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if path.exists() {
            return ViewKey::load(path);
        }
        let err = |e: std::io::Error| SealError::Key { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let key = ViewKey::random();
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(err)?;
        f.write_all(hex::encode(key.0).as_bytes()).map_err(err)?;
        Ok(key)
    }

    fn tag(&self, subject: &str, nonce: &[u8], query: &[u8], answer: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(CONTEXT);
        h.update(&(subject.len() as u64).to_le_bytes());
        h.update(subject.as_bytes());
        h.update(nonce);
        h.update(&(query.len() as u64).to_le_bytes());
        h.update(query);
        h.update(answer);
        h.finalize()
    }

    /// The reply to the sealed `request` on `subject`: `answer ‖ tag`.
    pub fn seal_reply(&self, subject: &str, request: &[u8], answer: &[u8]) -> Vec<u8> {
        let (nonce, query) = request.split_at(NONCE_BYTES.min(request.len()));
        let mut out = Vec::with_capacity(answer.len() + TAG_BYTES);
        out.extend_from_slice(answer);
        out.extend_from_slice(self.tag(subject, nonce, query, answer).as_bytes());
        out
    }

    /// The answer inside `reply`, if its tag is right for `request`.
    ///
    /// # Errors
    /// [`SealError::ShortReply`], [`SealError::BadTag`].
    pub fn open_reply<'a>(&self, subject: &str, request: &[u8], reply: &'a [u8]) -> Result<&'a [u8], SealError> {
        let (Some((answer, tag)), Some((nonce, query))) =
            (reply.split_last_chunk::<TAG_BYTES>(), request.split_at_checked(NONCE_BYTES))
        else {
            return Err(SealError::ShortReply);
        };
        let tag: [u8; TAG_BYTES] = *tag;
        // blake3::Hash compares in constant time.
        if self.tag(subject, nonce, query, answer) == blake3::Hash::from(tag) {
            Ok(answer)
        } else {
            Err(SealError::BadTag)
        }
    }
}

/// `nonce ‖ query` with a fresh random nonce.
pub fn seal_request(query: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let mut out = Vec::with_capacity(NONCE_BYTES + query.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(query);
    out
}

/// The query inside a sealed request.
///
/// # Errors
/// [`SealError::ShortRequest`].
pub fn open_request(request: &[u8]) -> Result<&[u8], SealError> {
    request.get(NONCE_BYTES..).ok_or(SealError::ShortRequest)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_reply_opens_only_for_its_request_subject_and_key() {
        let key = ViewKey::random();
        let req = seal_request(b"session of user 1 device 2");
        assert_eq!(open_request(&req).unwrap(), b"session of user 1 device 2");
        let reply = key.seal_reply("chorus.view.session", &req, b"token hash");
        assert_eq!(key.open_reply("chorus.view.session", &req, &reply).unwrap(), b"token hash");
        // Another key (a forger on the bus), another subject, another
        // request (a replay), a changed answer: refused.
        assert_eq!(ViewKey::random().open_reply("chorus.view.session", &req, &reply), Err(SealError::BadTag));
        assert_eq!(key.open_reply("chorus.view.user", &req, &reply), Err(SealError::BadTag));
        let again = seal_request(b"session of user 1 device 2");
        assert_eq!(key.open_reply("chorus.view.session", &again, &reply), Err(SealError::BadTag));
        let mut changed = reply.clone();
        changed[0] ^= 1;
        assert_eq!(key.open_reply("chorus.view.session", &req, &changed), Err(SealError::BadTag));
        assert_eq!(key.open_reply("chorus.view.session", &req, &reply[..10]), Err(SealError::ShortReply));
        assert_eq!(open_request(b"short"), Err(SealError::ShortRequest));
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/view.key");
        let a = ViewKey::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = ViewKey::create(&path).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(ViewKey::load(&path).unwrap().0, a.0);
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(ViewKey::load(&path), Err(SealError::Key { .. })));
    }

    proptest! {
        #[test]
        fn any_change_to_a_sealed_reply_is_refused(query in proptest::collection::vec(any::<u8>(), 0..64),
                                                   answer in proptest::collection::vec(any::<u8>(), 0..64),
                                                   flip in any::<usize>()) {
            let key = ViewKey::random();
            let req = seal_request(&query);
            let reply = key.seal_reply("s", &req, &answer);
            prop_assert_eq!(key.open_reply("s", &req, &reply).unwrap(), &answer[..]);
            let mut bad = reply.clone();
            let i = flip % bad.len();
            bad[i] ^= 0x80;
            prop_assert!(key.open_reply("s", &req, &bad).is_err());
        }
    }
}
