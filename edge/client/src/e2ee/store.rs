//! Persistence of a device's [`Crypto`]: one file, `crypto.json`, in a
//! directory per device. The vodozemac account and sessions are pickled and
//! each pickle is encrypted with the app's 32-byte store key; the file is
//! written to a temporary name, fsynced and renamed (then the directory is
//! fsynced), so a crash leaves the old state or the new one.
//!
//! The SDK saves after every change and before it hands a decrypted message
//! to the app: a message the server already counts as delivered can always
//! be decrypted again after a crash (its session is on disk).
//!
//! Not encrypted (metadata): the device's address, the addresses and
//! identity keys of the devices it has sessions with, the chats of its
//! Megolm sessions.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use chorus_schema::{ChatId, DeviceId, UserId};
use serde::{Deserialize, Serialize};
use vodozemac::megolm::{GroupSession, GroupSessionPickle, InboundGroupSession, InboundGroupSessionPickle};
use vodozemac::olm::{Account, AccountPickle, Session, SessionPickle};

use super::machine::{Crypto, IdentityKey, Inbound, Outbound};
use super::{Address, CryptoError};

const FILE: &str = "crypto.json";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Pickled {
    format: u32,
    me: Option<(u64, u32)>,
    next_prekey_id: u32,
    fallback_public: Option<String>,
    fallback_used: bool,
    account: String,
    olm: Vec<(String, Vec<String>)>,
    known: Vec<(u64, u32, String)>,
    outbound: Vec<PickledOutbound>,
    inbound: Vec<PickledInbound>,
}

#[derive(Serialize, Deserialize)]
struct PickledOutbound {
    chat: String,
    session: String,
    roster: Vec<(u64, u32)>,
    shared: Vec<(u64, u32)>,
}

#[derive(Serialize, Deserialize)]
struct PickledInbound {
    session: String,
    sender_key: String,
    chat: String,
}

fn addr_out(a: &Address) -> (u64, u32) {
    (a.0 .0, a.1 .0)
}

fn addr_in((u, d): (u64, u32)) -> Address {
    (UserId(u), DeviceId(d))
}

fn bad(what: &str) -> CryptoError {
    CryptoError::Store(format!("corrupt store: {what}"))
}

fn unhex<const N: usize>(s: &str) -> Result<[u8; N], CryptoError> {
    hex::decode(s).ok().and_then(|v| <[u8; N]>::try_from(v).ok()).ok_or_else(|| bad("hex"))
}

/// Pickles `crypto`, each vodozemac pickle encrypted with `key`.
///
/// # Errors
/// [`CryptoError::Store`] if serializing fails.
pub fn pickle(crypto: &Crypto, key: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
    let p = Pickled {
        format: FORMAT,
        me: crypto.me.as_ref().map(addr_out),
        next_prekey_id: crypto.next_prekey_id,
        fallback_public: crypto.fallback_public.map(hex::encode),
        fallback_used: crypto.fallback_used,
        account: crypto.account.pickle().encrypt(key),
        olm: crypto
            .olm
            .iter()
            .map(|(k, v)| (hex::encode(k), v.iter().map(|s| s.pickle().encrypt(key)).collect()))
            .collect(),
        known: crypto.known.iter().map(|(a, k)| (a.0 .0, a.1 .0, hex::encode(k.to_bytes()))).collect(),
        outbound: crypto
            .outbound
            .iter()
            .map(|(chat, o)| PickledOutbound {
                chat: hex::encode(chat.0),
                session: o.session.pickle().encrypt(key),
                roster: o.roster.iter().map(addr_out).collect(),
                shared: o.shared.iter().map(addr_out).collect(),
            })
            .collect(),
        inbound: crypto
            .inbound
            .values()
            .map(|i| PickledInbound {
                session: i.session.pickle().encrypt(key),
                sender_key: hex::encode(i.sender_key),
                chat: hex::encode(i.chat.0),
            })
            .collect(),
    };
    serde_json::to_vec(&p).map_err(|e| CryptoError::Store(e.to_string()))
}

/// The inverse of [`pickle`].
///
/// # Errors
/// [`CryptoError::Store`] for a corrupt file or a wrong key.
pub fn unpickle(bytes: &[u8], key: &[u8; 32]) -> Result<Crypto, CryptoError> {
    let p: Pickled = serde_json::from_slice(bytes).map_err(|e| CryptoError::Store(format!("corrupt store: {e}")))?;
    if p.format != FORMAT {
        return Err(CryptoError::Store(format!("store format {} (want {FORMAT})", p.format)));
    }
    let wrong_key = |_| CryptoError::Store("cannot decrypt the store (wrong key?)".into());
    let account = Account::from_pickle(AccountPickle::from_encrypted(&p.account, key).map_err(wrong_key)?);
    let mut olm = HashMap::new();
    for (k, sessions) in p.olm {
        let mut v = Vec::with_capacity(sessions.len());
        for s in sessions {
            v.push(Session::from_pickle(SessionPickle::from_encrypted(&s, key).map_err(wrong_key)?));
        }
        olm.insert(unhex::<32>(&k)?, v);
    }
    let mut known = HashMap::new();
    for (u, d, k) in p.known {
        known.insert(addr_in((u, d)), IdentityKey::from_bytes(&unhex::<64>(&k)?)?);
    }
    let mut outbound = HashMap::new();
    for o in p.outbound {
        let session =
            GroupSession::from_pickle(GroupSessionPickle::from_encrypted(&o.session, key).map_err(wrong_key)?);
        let roster: BTreeSet<Address> = o.roster.into_iter().map(addr_in).collect();
        let shared: BTreeSet<Address> = o.shared.into_iter().map(addr_in).collect();
        outbound.insert(ChatId(unhex::<16>(&o.chat)?), Outbound { session, roster, shared });
    }
    let mut inbound = HashMap::new();
    for i in p.inbound {
        let session = InboundGroupSession::from_pickle(
            InboundGroupSessionPickle::from_encrypted(&i.session, key).map_err(wrong_key)?,
        );
        inbound.insert(
            session.session_id(),
            Inbound { session, sender_key: unhex::<32>(&i.sender_key)?, chat: ChatId(unhex::<16>(&i.chat)?) },
        );
    }
    Ok(Crypto {
        account,
        me: p.me.map(addr_in),
        next_prekey_id: p.next_prekey_id,
        fallback_public: p.fallback_public.as_deref().map(unhex::<32>).transpose()?,
        fallback_used: p.fallback_used,
        olm,
        known,
        outbound,
        inbound,
    })
}

/// A device's crypto store on disk.
#[derive(Clone)]
pub struct CryptoStore {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for CryptoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl CryptoStore {
    /// The store in `dir` (created on the first save), its pickles
    /// encrypted with `key`.
    pub fn new(dir: impl Into<PathBuf>, key: [u8; 32]) -> CryptoStore {
        CryptoStore { dir: dir.into(), key }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state, `None` if nothing was saved yet.
    ///
    /// # Errors
    /// [`CryptoError::Store`] for an unreadable or corrupt store, or a wrong key.
    pub fn load(&self) -> Result<Option<Crypto>, CryptoError> {
        match std::fs::read(self.dir.join(FILE)) {
            Ok(bytes) => unpickle(&bytes, &self.key).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CryptoError::Store(format!("{}: {e}", self.dir.display()))),
        }
    }

    /// Saves `crypto` durably (write, fsync, rename, fsync the directory).
    ///
    /// # Errors
    /// [`CryptoError::Store`] on an IO error.
    pub fn save(&self, crypto: &Crypto) -> Result<(), CryptoError> {
        let io = |e: std::io::Error| CryptoError::Store(format!("{}: {e}", self.dir.display()));
        let bytes = pickle(crypto, &self.key)?;
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, self.dir.join(FILE)).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}
