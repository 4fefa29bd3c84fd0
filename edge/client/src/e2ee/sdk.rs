//! The SDK's end-to-end encryption: a [`Client`] connected with
//! [`Client::connect`] encrypts what [`Client::send`] sends and
//! decrypts what it receives before the app sees it.
//!
//! Sending: the device list of the chat (for a direct message, every device
//! of the recipient and of this user but this device; for a group, every
//! device of every member but this one) is the one the server last
//! accepted for the chat (none at first). Devices without an Olm session
//! get their keys claimed (`ClaimKeys`); the message is encrypted for the
//! list and sent with the list's digest. A `StaleDevices` answer (nothing
//! was appended) gives the current list: keys are claimed for the new
//! devices, the message is encrypted again and sent with the same
//! `client_msg_id`, at most [`MAX_SEND_ATTEMPTS`] times. A group's Megolm
//! session is rotated when a device left the list. A device whose keys are
//! unusable (none uploaded, a fallback key not signed by its identity key)
//! gets nothing it can open, and the others still get the message.
//!
//! Receiving: every message is decrypted (the sender's identity key is
//! fetched with `GetDeviceKeys` the first time) and the store is saved
//! before the plaintext goes to the app; one that cannot be decrypted
//! becomes [`Event::Undecryptable`]. `KeysLow` refills the one-time keys.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use chorus_schema::{ChatId, ClientMsgId, EdgeErrorCode, Prekey, Recipient, UserId};
use tokio::sync::mpsc;

use super::{Address, Crypto, CryptoError, CryptoStore, PeerKeys, Upload};
use crate::client::{lock, Client, WeakClient};
use crate::config::ClientConfig;
use crate::types::{Credentials, Error, Event, Message, Result, Resume, Sent};

/// Encryptions of one message before giving up on a device list that keeps
/// changing.
pub const MAX_SEND_ATTEMPTS: usize = 4;
/// Plaintexts of this device's own recent direct messages, kept in memory
/// for their echo (an Olm message cannot be decrypted by its sender).
const SENT_KEPT: usize = 1024;

/// Creates this device's crypto state in `store` if there is none, and
/// returns the identity key to register with (`verify_otp`, `pair_request`).
///
/// # Errors
/// [`Error::Crypto`] for an unreadable store.
pub fn prepare(store: &CryptoStore) -> Result<Vec<u8>> {
    let crypto = match store.load().map_err(crypto_err)? {
        Some(c) => c,
        None => {
            let c = Crypto::new();
            store.save(&c).map_err(crypto_err)?;
            c
        }
    };
    Ok(crypto.identity_key().to_bytes().to_vec())
}

fn crypto_err(e: CryptoError) -> Error {
    Error::Crypto(e.to_string())
}

/// A client's E2EE state, shared by its handles and its event pump.
pub(crate) struct E2ee {
    me: Address,
    crypto: tokio::sync::Mutex<Crypto>,
    store: CryptoStore,
    /// Per chat, the device list the server last accepted.
    lists: Mutex<HashMap<ChatId, Vec<Address>>>,
    /// Own direct messages' plaintexts, oldest first.
    sent: Mutex<VecDeque<(ClientMsgId, Vec<u8>)>>,
}

impl std::fmt::Debug for E2ee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2ee").field("me", &self.me).field("store", &self.store).finish_non_exhaustive()
    }
}

impl Client {
    /// Logs in with end-to-end encryption, the default (the first time must
    /// succeed), syncs from `resume`, and keeps the connection up:
    /// [`Client::send`] encrypts and the events carry plaintext. `store` must hold the state
    /// [`prepare`] created before this device registered (its identity
    /// key is the registered one). Uploads this device's keys on its first
    /// connection.
    ///
    /// # Errors
    /// As [`Client::connect_raw`]; [`Error::Crypto`] for a missing or unreadable
    /// store, or one of another device.
    pub async fn connect(
        config: ClientConfig,
        credentials: Credentials,
        resume: Resume,
        store: CryptoStore,
    ) -> Result<(Client, mpsc::Receiver<Event>)> {
        let mut crypto = store
            .load()
            .map_err(crypto_err)?
            .ok_or_else(|| Error::Crypto(format!("no crypto store in {}", store.dir().display())))?;
        let me = (credentials.user, credentials.device);
        match crypto.address() {
            Some(a) if a != me => {
                return Err(Error::Crypto(format!(
                    "the crypto store in {} belongs to device {}",
                    store.dir().display(),
                    super::show(a)
                )))
            }
            Some(_) => {}
            None => {
                crypto.set_address(me);
                store.save(&crypto).map_err(crypto_err)?;
            }
        }
        let first_upload = !crypto.published();
        let queue = config.events_queue.max(1);
        let (client, raw) = Client::connect_raw(config, credentials, resume).await?;
        let e2ee = Arc::new(E2ee {
            me,
            crypto: tokio::sync::Mutex::new(crypto),
            store,
            lists: Mutex::new(HashMap::new()),
            sent: Mutex::new(VecDeque::new()),
        });
        let client = client.with_e2ee(e2ee.clone());
        if first_upload {
            e2ee.upload(&client, None).await?;
        }
        let (tx, events) = mpsc::channel(queue);
        tokio::spawn(pump(e2ee, client.downgrade(), raw, tx));
        Ok((client, events))
    }

    /// The safety number of this user and `user` (60 digits in 12 groups of
    /// 5, the same on both sides) from the identity keys of both users'
    /// devices as the server lists them: compare it out of band.
    ///
    /// # Errors
    /// As [`Client::device_keys`].
    pub async fn safety_number(&self, user: UserId) -> Result<String> {
        let mine = self.device_keys(self.credentials().user).await?;
        let theirs = self.device_keys(user).await?;
        let keys = |v: Vec<chorus_schema::keys::DeviceKeys>| v.into_iter().map(|d| d.identity_key).collect::<Vec<_>>();
        let (mine, theirs) = (keys(mine), keys(theirs));
        Ok(super::format_safety_number(&super::safety_number((self.credentials().user, &mine), (user, &theirs))))
    }
}

impl E2ee {
    /// Sends `body` to `to`, encrypted (see the module docs).
    pub(crate) async fn send(
        &self,
        client: &Client,
        to: Recipient,
        id: ClientMsgId,
        body: &[u8],
        media: Option<chorus_schema::MediaRef>,
    ) -> Result<Sent> {
        let chat = match to {
            Recipient::User(u) => ChatId::direct(self.me.0, u),
            Recipient::Group(c) => c,
        };
        let mut list = lock(&self.lists).get(&chat).cloned().unwrap_or_default();
        {
            // Before sending: this device's echo may come before the answer.
            let mut kept = lock(&self.sent);
            kept.push_back((id, body.to_vec()));
            if kept.len() > SENT_KEPT {
                kept.pop_front();
            }
        }
        for _ in 0..MAX_SEND_ATTEMPTS {
            self.ensure_sessions(client, &list).await?;
            let (bytes, shares) = {
                let mut c = self.crypto.lock().await;
                // A device whose keys are unusable (none uploaded, a bad
                // signature) gets nothing it can open; the others still get
                // the message (the digest covers the whole list).
                let reachable: Vec<Address> = list.iter().copied().filter(|a| c.has_session(*a)).collect();
                if reachable.len() < list.len() {
                    tracing::warn!(chat = %chat, skipped = list.len() - reachable.len(), "devices without usable keys");
                }
                let out = match to {
                    Recipient::User(_) => (c.encrypt_direct(chat, &reachable, body).map_err(crypto_err)?, None),
                    Recipient::Group(_) => {
                        let (b, s) = c.encrypt_group(chat, &reachable, body).map_err(crypto_err)?;
                        (b, Some(s))
                    }
                };
                self.store.save(&c).map_err(crypto_err)?;
                out
            };
            let digest = chorus_schema::device_list_digest(&list);
            match client.send_with_digest(to, id, bytes, media.clone(), Some(digest)).await {
                Ok(sent) => {
                    if let Some(s) = shares {
                        let mut c = self.crypto.lock().await;
                        c.confirm_shared(&s);
                        self.store.save(&c).map_err(crypto_err)?;
                    }
                    lock(&self.lists).insert(chat, list);
                    return Ok(sent);
                }
                Err(Error::StaleDevices(current)) => list = current,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Crypto(format!("the device list of {chat} changed {MAX_SEND_ATTEMPTS} times during one send")))
    }

    /// Opens Olm sessions with the devices of `list` that have none,
    /// claiming their users' keys.
    async fn ensure_sessions(&self, client: &Client, list: &[Address]) -> Result<()> {
        let missing = self.crypto.lock().await.missing_sessions(list);
        let users: BTreeSet<UserId> = missing.iter().map(|a| a.0).collect();
        for user in users {
            let bundle = retry_rate_limited(|| client.claim_keys(user)).await?;
            let mut c = self.crypto.lock().await;
            for d in bundle {
                let address = (user, d.device);
                if !missing.contains(&address) {
                    continue;
                }
                let keys = PeerKeys {
                    address,
                    identity_key: d.identity_key,
                    one_time_key: d.one_time_key.map(|k| k.key),
                    fallback_key: d.fallback_key.map(|k| k.key),
                    fallback_signature: Some(d.fallback_signature).filter(|s| !s.is_empty()),
                };
                if let Err(e) = c.add_peer(&keys) {
                    tracing::warn!(device = %super::show(address), error = %e, "no Olm session: unusable keys");
                }
            }
            self.store.save(&c).map_err(crypto_err)?;
        }
        Ok(())
    }

    /// Uploads one-time keys up to the target given `left` (and a fallback
    /// key when due).
    async fn upload(&self, client: &Client, left: Option<u32>) -> Result<()> {
        let up = {
            let mut c = self.crypto.lock().await;
            let up = c.keys_to_upload(left);
            self.store.save(&c).map_err(crypto_err)?;
            up
        };
        if up.is_empty() {
            return Ok(());
        }
        let Upload { one_time, fallback } = up;
        let one_time = one_time.into_iter().map(|(id, key)| Prekey { id, key }).collect();
        let fallback = fallback.map(|(id, key, sig)| (Prekey { id, key }, sig));
        client.upload_keys(one_time, fallback).await.map(|_| ())
    }

    /// Decrypts `m` (sent to this device), saving the store first.
    async fn open(&self, client: &Client, m: &Message) -> std::result::Result<(Vec<u8>, bool), String> {
        let from = (m.sender, m.sender_device);
        if from == self.me {
            if let Some((_, body)) = lock(&self.sent).iter().find(|(id, _)| *id == m.client_msg_id) {
                return Ok((body.clone(), false));
            }
        }
        let mut c = self.crypto.lock().await;
        let mut result = c.decrypt(m.chat, from, &m.ciphertext);
        if let Err(CryptoError::UnknownDevice(_)) = result {
            drop(c);
            let devices = client.device_keys(m.sender).await.map_err(|e| format!("sender's keys: {e}"))?;
            c = self.crypto.lock().await;
            for d in devices {
                // A bad key is skipped: the sender then stays unknown.
                let _ = c.learn((m.sender, d.device), &d.identity_key);
            }
            result = c.decrypt(m.chat, from, &m.ciphertext);
        }
        let d = result.map_err(|e| e.to_string())?;
        self.store.save(&c).map_err(|e| e.to_string())?;
        Ok((d.body, d.fallback_used))
    }
}

/// Runs `f` again after a `RateLimited` refusal's delay (3 tries in all).
async fn retry_rate_limited<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(Error::Refused { code: EdgeErrorCode::RateLimited, retry_after_ms: Some(ms), .. }) if tries < 2 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(ms.min(5_000))).await;
            }
            other => return other,
        }
    }
}

/// Passes the connection's events to the app, decrypting messages. A call
/// to the edge made here (the sender's keys) runs while the raw events go
/// on being read into a backlog, so the worker never waits on this task.
async fn pump(e2ee: Arc<E2ee>, weak: WeakClient, mut raw: mpsc::Receiver<Event>, out: mpsc::Sender<Event>) {
    let mut backlog: VecDeque<Event> = VecDeque::new();
    loop {
        let ev = match backlog.pop_front() {
            Some(ev) => ev,
            None => match raw.recv().await {
                Some(ev) => ev,
                None => return,
            },
        };
        let ev = match ev {
            Event::Message(mut m) => {
                let Some(client) = weak.upgrade() else { return };
                let opened = {
                    let work = e2ee.open(&client, &m);
                    drain_while(work, &mut raw, &mut backlog).await
                };
                match opened {
                    Ok((body, fallback_used)) => {
                        if fallback_used {
                            let work = e2ee.upload(&client, Some(u32::MAX));
                            let _ = drain_while(work, &mut raw, &mut backlog).await;
                        }
                        m.ciphertext = body;
                        Event::Message(m)
                    }
                    Err(reason) => Event::Undecryptable {
                        chat: m.chat,
                        seq: m.seq,
                        sender: m.sender,
                        sender_device: m.sender_device,
                        reason,
                    },
                }
            }
            Event::KeysLow { left } => {
                if let Some(client) = weak.upgrade() {
                    let work = e2ee.upload(&client, Some(left));
                    if let Err(e) = drain_while(work, &mut raw, &mut backlog).await {
                        tracing::warn!(error = %e, "uploading one-time keys failed");
                    }
                }
                Event::KeysLow { left }
            }
            other => other,
        };
        if out.send(ev).await.is_err() {
            return;
        }
    }
}

/// Awaits `work` while moving raw events into `backlog`.
async fn drain_while<T>(
    work: impl Future<Output = T>,
    raw: &mut mpsc::Receiver<Event>,
    backlog: &mut VecDeque<Event>,
) -> T {
    tokio::pin!(work);
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            r = &mut work => return r,
            ev = raw.recv(), if open => match ev {
                Some(ev) => backlog.push_back(ev),
                None => open = false,
            },
        }
    }
}
