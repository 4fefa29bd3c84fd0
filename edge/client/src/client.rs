//! [`Client`]: the app's handle on a logged-in device. Its calls go to the
//! worker task (`worker.rs`) that drives the connection [`crate::conn::Core`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chorus_schema::{
    ChatId, ClientMsgId, DeviceId, EdgeErrorCode, GroupOp, ReceiptKind, Recipient, Seq, UserId, Visibility,
};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::ClientConfig;
use crate::conn::{Core, Request};
use crate::link::{endpoint, quic_config};
use crate::types::{Credentials, Error, Event, Result, Resume, Sent};
use crate::worker::Worker;

/// Counters of a client.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub connects: AtomicU64,
    pub resent: AtomicU64,
    pub duplicates_dropped: AtomicU64,
}

/// A call that waits for its answer; `permit` is its slot of
/// [`ClientConfig::commands_queue`], held until it is answered.
pub(crate) enum Command {
    Send {
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<chorus_schema::MediaRef>,
        devices_digest: Option<[u8; 32]>,
        reply: oneshot::Sender<Result<Sent>>,
        permit: OwnedSemaphorePermit,
    },
    Request {
        client_msg_id: ClientMsgId,
        request: Request,
        reply: oneshot::Sender<Result<crate::types::Answer>>,
        permit: OwnedSemaphorePermit,
    },
    // ---- linked devices (issue 12) ----
    Devices {
        client_msg_id: ClientMsgId,
        reply: oneshot::Sender<Result<Vec<chorus_schema::edge::DeviceInfo>>>,
        permit: OwnedSemaphorePermit,
    },
}

/// The fire-and-forget calls, coalesced until the worker takes them: they
/// never wait and need no queue (acks are cumulative: one per chat and kind).
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) acks: BTreeMap<(ChatId, ReceiptKind), Seq>,
    pub(crate) sync: bool,
    /// The latest presence watch list asked for.
    pub(crate) watch: Option<Vec<UserId>>,
    /// Typing signals not yet written, in order.
    pub(crate) typing: Vec<(ChatId, bool)>,
    pub(crate) reconnect: bool,
    pub(crate) close: bool,
}

/// What the handles and the worker share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) signals: Mutex<Signals>,
    pub(crate) signalled: Notify,
    /// The positions passed on (a copy of the core's, for [`Client::positions`]).
    pub(crate) positions: Mutex<HashMap<ChatId, Seq>>,
    pub(crate) stats: ClientStats,
    /// The logged-in QUIC connection, for media streams (issue 14).
    pub(crate) media_conn: Mutex<Option<quinn::Connection>>,
    pub(crate) connected: Notify,
}

/// A poisoned lock only means a thread panicked while holding it; the maps
/// inside stay consistent (every update is one insert).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn signal(&self, f: impl FnOnce(&mut Signals)) {
        f(&mut lock(&self.signals));
        self.signalled.notify_one();
    }
}

/// A logged-in device with a self-healing connection. Cheap to clone; the
/// connection closes when the last clone is dropped (or on [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    slots: Arc<Semaphore>,
    next_id: Arc<AtomicU64>,
    shared: Arc<Shared>,
    credentials: Credentials,
    /// End-to-end encryption ([`Client::connect`]); `None`: raw.
    e2ee: Option<Arc<crate::e2ee::sdk::E2ee>>,
}

/// A handle that does not keep the connection open (the E2EE event pump's).
#[derive(Clone)]
pub(crate) struct WeakClient {
    commands: mpsc::WeakSender<Command>,
    slots: Arc<Semaphore>,
    next_id: Arc<AtomicU64>,
    shared: Arc<Shared>,
    credentials: Credentials,
    e2ee: Option<Arc<crate::e2ee::sdk::E2ee>>,
}

impl WeakClient {
    pub(crate) fn upgrade(&self) -> Option<Client> {
        Some(Client {
            commands: self.commands.upgrade()?,
            slots: self.slots.clone(),
            next_id: self.next_id.clone(),
            shared: self.shared.clone(),
            credentials: self.credentials,
            e2ee: self.e2ee.clone(),
        })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("credentials", &self.credentials).finish_non_exhaustive()
    }
}

impl Client {
    /// Logs in **without end-to-end encryption** (the first time must
    /// succeed: bad credentials are an error, not a retry loop), syncs from
    /// `resume`, and keeps the connection up: [`Client::send`] sends the bytes
    /// as given and events carry them as received. For load generators and
    /// tests that measure or check the server (`chorus bench`, Jepsen); an app
    /// uses [`Client::connect`], which encrypts.
    ///
    /// # Errors
    /// [`Error::Refused`] (`Unauthenticated`: unknown device or revoked token)
    /// or a connection error when no edge answers.
    pub async fn connect_raw(
        config: ClientConfig,
        credentials: Credentials,
        resume: Resume,
    ) -> Result<(Client, mpsc::Receiver<Event>)> {
        Client::connect_raw_on(endpoint()?, config, credentials, resume).await
    }

    /// As [`Client::connect_raw`], on a QUIC endpoint (UDP socket) the
    /// caller may share among clients: for a process that runs many devices,
    /// such as a benchmark; each client still has its own QUIC connection.
    ///
    /// # Errors
    /// As [`Client::connect_raw`].
    pub async fn connect_raw_on(
        endpoint: quinn::Endpoint,
        config: ClientConfig,
        credentials: Credentials,
        resume: Resume,
    ) -> Result<(Client, mpsc::Receiver<Event>)> {
        let quic = quic_config(&config)?;
        let slots = config.commands_queue.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared::default());
        *lock(&shared.positions) = resume.positions.iter().copied().collect::<HashMap<_, _>>();
        let (events_tx, events) = mpsc::channel(config.events_queue.max(1));
        let (commands, commands_rx) = mpsc::channel(slots);
        let (ready_tx, ready) = oneshot::channel();
        // The worker's clock starts at 0 with the core.
        let core = Core::new(&config, credentials, resume, 0);
        let worker = Worker::new(core, endpoint, quic, events_tx, commands_rx, shared.clone(), ready_tx);
        tokio::spawn(worker.run());
        // Dropping this future drops `commands`: the worker then stops.
        ready.await.map_err(|_| Error::Closed)??;
        Ok((Client::handle(commands, slots, shared, credentials), events))
    }

    /// The handle on a worker that takes `commands`, with `slots` of them.
    fn handle(commands: mpsc::Sender<Command>, slots: usize, shared: Arc<Shared>, credentials: Credentials) -> Client {
        // Random 62-bit start: a device's ids must not repeat across restarts
        // within the dedup window; the top bit is the edge's.
        let start = rand::rngs::OsRng.next_u64() >> 2;
        Client {
            commands,
            slots: Arc::new(Semaphore::new(slots)),
            next_id: Arc::new(AtomicU64::new(start)),
            shared,
            credentials,
            e2ee: None,
        }
    }

    pub(crate) fn with_e2ee(mut self, e2ee: Arc<crate::e2ee::sdk::E2ee>) -> Client {
        self.e2ee = Some(e2ee);
        self
    }

    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient {
            commands: self.commands.downgrade(),
            slots: self.slots.clone(),
            next_id: self.next_id.clone(),
            shared: self.shared.clone(),
            credentials: self.credentials,
            e2ee: self.e2ee.clone(),
        }
    }

    /// Whether [`Client::send`] encrypts (a client of [`Client::connect`]).
    pub fn is_e2ee(&self) -> bool {
        self.e2ee.is_some()
    }

    pub fn credentials(&self) -> Credentials {
        self.credentials
    }

    pub fn stats(&self) -> &ClientStats {
        &self.shared.stats
    }

    /// A fresh client message id.
    pub fn next_client_msg_id(&self) -> ClientMsgId {
        ClientMsgId(self.next_id.fetch_add(1, Ordering::Relaxed) & !chorus_schema::edge::CLIENT_MSG_ID_RESERVED_BIT)
    }

    /// Sends `ciphertext` to `to` and waits until it is committed. Waits
    /// first for a slot when [`ClientConfig::commands_queue`] sends and
    /// requests are unanswered (back-pressure).
    ///
    /// # Errors
    /// [`Error::Refused`] for a final refusal (unknown recipient, not a member,
    /// too large…); [`Error::Closed`] if the client was closed first.
    ///
    /// On a client of [`Client::connect`], `ciphertext` is the
    /// plaintext: it is encrypted end to end for every device of the chat
    /// (see [`crate::e2ee`]); otherwise it goes as it is ([`Client::send_raw`]).
    pub async fn send(&self, to: Recipient, ciphertext: Vec<u8>) -> Result<Sent> {
        self.send_with_id(to, self.next_client_msg_id(), ciphertext).await
    }

    /// Sends the bytes as they are, never encrypted: for load generators and
    /// tests that measure or check the server (`chorus bench`, Jepsen).
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_raw(&self, to: Recipient, ciphertext: Vec<u8>) -> Result<Sent> {
        self.send_raw_with_id(to, self.next_client_msg_id(), ciphertext).await
    }

    /// As [`Client::send`] with the caller's `client_msg_id` (a retry of an
    /// earlier send must use the same one).
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_with_id(&self, to: Recipient, client_msg_id: ClientMsgId, ciphertext: Vec<u8>) -> Result<Sent> {
        match &self.e2ee {
            Some(e2ee) => e2ee.send(self, to, client_msg_id, &ciphertext, None).await,
            None => self.send_with_digest(to, client_msg_id, ciphertext, None, None).await,
        }
    }

    /// As [`Client::send_raw`] with the caller's `client_msg_id`.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_raw_with_id(
        &self,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
    ) -> Result<Sent> {
        self.send_with_digest(to, client_msg_id, ciphertext, None, None).await
    }

    /// Sends the bytes as they are (never encrypted), with a media reference
    /// and the digest of the device list the message was encrypted for
    /// ([`chorus_schema::device_list_digest`]; `None`: no check): the raw
    /// send under the E2EE one.
    ///
    /// # Errors
    /// As [`Client::send`]; [`Error::StaleDevices`] with the current list
    /// when the digest is stale (nothing was sent: encrypt for that list and
    /// send again with the same `client_msg_id`).
    pub async fn send_with_digest(
        &self,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<chorus_schema::MediaRef>,
        devices_digest: Option<[u8; 32]>,
    ) -> Result<Sent> {
        if ciphertext.len() > chorus_schema::MAX_CIPHERTEXT_BYTES {
            return Err(Error::Refused {
                code: EdgeErrorCode::CiphertextTooLarge,
                message: format!("ciphertext {} > {} bytes", ciphertext.len(), chorus_schema::MAX_CIPHERTEXT_BYTES),
                retry_after_ms: None,
            });
        }
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        let command = Command::Send { to, client_msg_id, ciphertext, media, devices_digest, reply, permit };
        self.commands.send(command).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// As [`Client::send`], with the media reference of an uploaded
    /// attachment (see [`crate::media`]): the server sees its hash, size and
    /// type; the ciphertext carries the key.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_with_media(
        &self,
        to: Recipient,
        ciphertext: Vec<u8>,
        media: chorus_schema::MediaRef,
    ) -> Result<Sent> {
        let client_msg_id = self.next_client_msg_id();
        match &self.e2ee {
            Some(e2ee) => e2ee.send(self, to, client_msg_id, &ciphertext, Some(media)).await,
            None => self.send_with_digest(to, client_msg_id, ciphertext, Some(media), None).await,
        }
    }

    /// The current logged-in QUIC connection, waiting up to `timeout_ms` for one.
    pub(crate) async fn media_connection(&self, timeout_ms: u64) -> Result<quinn::Connection> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        loop {
            let notified = self.shared.connected.notified();
            if let Some(c) = lock(&self.shared.media_conn).clone().filter(|c| c.close_reason().is_none()) {
                return Ok(c);
            }
            if self.commands.is_closed() {
                return Err(Error::Closed);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Connection("not connected".into()));
            }
        }
    }

    async fn request(&self, request: Request) -> Result<Option<(ChatId, Seq)>> {
        match self.ask(request).await? {
            crate::types::Answer::Done(at) => Ok(at),
            other => Err(Error::Protocol(format!("a request answered with {other:?}"))),
        }
    }

    // ---- E2EE (issue 14) ----

    /// Publishes this device's one-time keys (ids above every id it uploaded
    /// before) and/or its fallback key with its signature (replacing the
    /// earlier one). Returns its unclaimed one-time keys now.
    ///
    /// # Errors
    /// As [`Client::set_pin`]; `BadFrame` for reused or repeated ids, too
    /// many keys, or nothing to upload.
    pub async fn upload_keys(
        &self,
        one_time_keys: Vec<chorus_schema::Prekey>,
        fallback: Option<(chorus_schema::Prekey, Vec<u8>)>,
    ) -> Result<u32> {
        match self.ask(Request::UploadKeys { one_time_keys, fallback }).await? {
            crate::types::Answer::KeysUploaded(left) => Ok(left),
            other => Err(Error::Protocol(format!("UploadKeys answered with {other:?}"))),
        }
    }

    /// Claims one key of every device of `user`: its one-time key (handed
    /// out to this caller only), or its fallback key when it has none left.
    ///
    /// # Errors
    /// As [`Client::set_pin`]; `UnknownRecipient` for an unknown user,
    /// `BadFrame` for a user without devices, `RateLimited` (with
    /// `retry_after_ms`) past the claim budget.
    pub async fn claim_keys(&self, user: UserId) -> Result<Vec<chorus_schema::DeviceKeys>> {
        match self.ask(Request::ClaimKeys { user }).await? {
            crate::types::Answer::KeyBundle(devices) => Ok(devices),
            other => Err(Error::Protocol(format!("ClaimKeys answered with {other:?}"))),
        }
    }

    /// The devices of `user` with their identity and fallback keys (claims nothing).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn device_keys(&self, user: UserId) -> Result<Vec<chorus_schema::DeviceKeys>> {
        match self.ask(Request::GetDeviceKeys { user }).await? {
            crate::types::Answer::DeviceKeys(devices) => Ok(devices),
            other => Err(Error::Protocol(format!("GetDeviceKeys answered with {other:?}"))),
        }
    }

    async fn ask(&self, request: Request) -> Result<crate::types::Answer> {
        let client_msg_id = self.next_client_msg_id();
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request { client_msg_id, request, reply, permit })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sets the account's registration PIN (empty: removes it): registering
    /// the number on a new device then needs it ([`crate::verify_otp_with_pin`]).
    ///
    /// # Errors
    /// [`Error::Refused`] (a PIN shorter than 4 characters), or
    /// [`Error::Connection`] if the connection broke before the answer.
    pub async fn set_pin(&self, pin: &str) -> Result<()> {
        self.request(Request::SetPin { pin: pin.to_owned() }).await.map(|_| ())
    }

    /// Unlinks `device` of this user; its connections close at every edge.
    /// Unlinking this device ends this client too.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn unlink_device(&self, device: DeviceId) -> Result<()> {
        self.request(Request::UnlinkDevice { device }).await.map(|_| ())
    }

    /// Blocks (`blocked`) or unblocks `user`: the log then refuses their
    /// direct messages to this user (`Forbidden` for them).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn block(&self, user: UserId, blocked: bool) -> Result<()> {
        self.request(Request::Block { user, blocked }).await.map(|_| ())
    }

    /// Creates a group named `name` with this user as its admin and `members`
    /// (the others, at most [`chorus_schema::MAX_GROUP_MEMBERS`] in all), under
    /// a fresh random id, which it returns. Send to it with
    /// [`Recipient::Group`].
    ///
    /// # Errors
    /// As [`Client::group`].
    pub async fn create_group(&self, name: &str, members: Vec<UserId>) -> Result<ChatId> {
        let chat = ChatId::group(rand::random());
        self.group(chat, GroupOp::Create { name: name.to_owned(), members }).await?;
        Ok(chat)
    }

    /// A group request: add, remove, promote or demote a member, leave, or
    /// change the name and description. The group's partition decides.
    /// Returns the seq of the change in the group's timeline: a member
    /// removed at seq s gets nothing after s.
    ///
    /// # Errors
    /// [`Error::Refused`] with the partition's reason in its message and the
    /// edge's code: `Forbidden` for an edit by a non-admin, `NotMember`,
    /// `UnknownRecipient` for an unknown group, `BadFrame` for a broken rule
    /// (over the size limit, the last admin demoted, a member added twice);
    /// or [`Error::Connection`] if the connection broke before the answer.
    pub async fn group(&self, chat: ChatId, op: GroupOp) -> Result<Seq> {
        match self.request(Request::Group { chat, op }).await? {
            Some((c, seq)) if c == chat => Ok(seq),
            other => Err(Error::Protocol(format!("a group request on {chat} answered with position {other:?}"))),
        }
    }

    // ---- group info and message info (issue 12) ----

    /// A group's name, description and members (with their admin standing
    /// and the seq that made each a member), as of its `last_seq`. Only
    /// members may ask.
    ///
    /// # Errors
    /// [`Error::Refused`] with `NotMember` for a non-member,
    /// `UnknownRecipient` for an unknown group, `BadFrame` for a direct
    /// chat; `Unavailable` if the views did not answer.
    pub async fn group_info(&self, chat: ChatId) -> Result<chorus_schema::GroupInfo> {
        match self.ask(Request::GroupInfo { chat }).await? {
            crate::types::Answer::GroupInfo(info) => Ok(info),
            other => Err(Error::Protocol(format!("group info of {chat} answered with {other:?}"))),
        }
    }

    /// Who received and who read this user's message at `seq` of `chat`,
    /// and when (WhatsApp's "message info"): one entry per current member
    /// other than the sender who was a member when it was sent, in user id
    /// order; the times are the commit times of the receipts that first
    /// covered the message. Only the message's sender may ask.
    ///
    /// # Errors
    /// [`Error::Refused`] with `Forbidden` for another's message, `BadFrame`
    /// for a seq that is not a message, `NotMember`, `UnknownRecipient`.
    pub async fn message_info(&self, chat: ChatId, seq: Seq) -> Result<Vec<chorus_schema::MessageReceipt>> {
        match self.ask(Request::MessageInfo { chat, seq }).await? {
            crate::types::Answer::MessageInfo(entries) => Ok(entries),
            other => Err(Error::Protocol(format!("message info of {chat} {seq} answered with {other:?}"))),
        }
    }

    /// Sets this user's profile: name, about text and picture (a media reference).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn set_profile(&self, name: &str, about: &str, avatar: Option<chorus_schema::MediaRef>) -> Result<()> {
        let request = Request::SetProfile { name: name.to_owned(), about: about.to_owned(), avatar };
        self.request(request).await.map(|_| ())
    }

    /// `user`'s profile as this user may see it (privacy settings and blocks
    /// applied by the server).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn profile(&self, user: UserId) -> Result<chorus_schema::Profile> {
        match self.ask(Request::GetProfile { user }).await? {
            crate::types::Answer::Profile(p) => Ok(p),
            other => Err(Error::Protocol(format!("GetProfile answered with {other:?}"))),
        }
    }

    /// Posts a status story: text and/or a media reference (a picture or a
    /// video uploaded elsewhere, by its BLAKE3 address), for its audience.
    ///
    /// # Errors
    /// As [`Client::set_pin`]; `BadFrame` for a status id used before or a
    /// media reference over its limits.
    pub async fn post_status(&self, post: crate::types::StatusPost) -> Result<()> {
        self.request(Request::PostStatus(post)).await.map(|_| ())
    }

    /// The live statuses this user may see: of `author`, or (`None`) of every
    /// contact and this user's own (with their viewers).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn statuses(&self, author: Option<UserId>) -> Result<Vec<chorus_schema::StatusEntry>> {
        match self.ask(Request::ListStatus { author }).await? {
            crate::types::Answer::Statuses(s) => Ok(s),
            other => Err(Error::Protocol(format!("ListStatus answered with {other:?}"))),
        }
    }

    /// Marks `author`'s status as viewed (the author sees who viewed it).
    ///
    /// # Errors
    /// [`Error::Refused`] `Expired` for an expired post, `UnknownRecipient`
    /// for one that does not exist or is not for this user; as [`Client::set_pin`].
    pub async fn view_status(&self, author: UserId, status_id: u64) -> Result<()> {
        self.request(Request::ViewStatus { author, status_id }).await.map(|_| ())
    }

    // ---- push and reports (issue 14) ----

    /// Registers this device's push token for `platform` (e.g. `fcm`,
    /// `apns`); an empty token clears it. While none of the user's devices
    /// is online, new messages are pushed to the tokens of their devices
    /// (see `docs/push-webhook.md`).
    ///
    /// # Errors
    /// [`Error::Refused`] `BadFrame` for a token over
    /// [`chorus_schema::push::MAX_PUSH_TOKEN_BYTES`]; as [`Client::set_pin`].
    pub async fn register_push(&self, token: &str, platform: &str) -> Result<()> {
        let request = Request::RegisterPush { token: token.to_owned(), platform: platform.to_owned() };
        self.request(request).await.map(|_| ())
    }

    /// Reports `user` as abusive (in `chat`, if given), revealing `messages`
    /// this device decrypted (plaintext it chooses to show the operators; at
    /// most [`chorus_schema::push::MAX_REPORT_MESSAGES`] of at most
    /// [`chorus_schema::push::MAX_REPORT_TEXT_BYTES`] each).
    ///
    /// # Errors
    /// [`Error::Refused`] `UnknownRecipient` for an unknown user, `BadFrame`
    /// for a self-report or attachments over the limits; as [`Client::set_pin`].
    pub async fn report(
        &self,
        user: UserId,
        chat: Option<chorus_schema::ChatId>,
        reason: &str,
        messages: Vec<chorus_schema::push::ReportedMessage>,
    ) -> Result<()> {
        let request = Request::Report { user, chat, reason: reason.to_owned(), messages };
        self.request(request).await.map(|_| ())
    }

    /// Uploads phone numbers (hashed here with the deployment's key) and
    /// returns the registered ones with their user ids; they become this
    /// user's contacts (replacing the previous list).
    ///
    /// # Errors
    /// [`Error::Refused`] `RateLimited` (with `retry_after_ms`) past the
    /// day's allowance; `BadFrame` for a number that is not E.164; as
    /// [`Client::set_pin`].
    pub async fn sync_contacts(&self, phones: &[String]) -> Result<Vec<chorus_schema::ContactMatch>> {
        match self.ask(Request::SyncContacts { phones: phones.to_vec() }).await? {
            crate::types::Answer::Contacts(m) => Ok(m),
            other => Err(Error::Protocol(format!("SyncContacts answered with {other:?}"))),
        }
    }

    /// Ends this device's session: its connections close at every edge and
    /// the token no longer logs in. This client stops.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn logout(&self) -> Result<()> {
        self.request(Request::Logout).await.map(|_| ())
    }

    // ---- linked devices (issue 12) ----

    /// Links the new device that shows `code` (from its
    /// [`crate::pair_request`]) to this user: the new device then gets its
    /// credentials. At most [`chorus_schema::MAX_DEVICES_PER_USER`] devices
    /// (the primary and 4 companions).
    ///
    /// # Errors
    /// [`Error::Refused`] with `BadPairingCode` (a wrong, expired or used
    /// code) or `TooManyDevices` (nothing changed; unlink one first), or
    /// [`Error::Connection`] if the connection broke before the answer.
    pub async fn link_device(&self, code: &str) -> Result<()> {
        self.request(Request::LinkDevice { code: code.to_owned() }).await.map(|_| ())
    }

    /// This user's linked devices (id, name, link time), in id order.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn devices(&self) -> Result<Vec<chorus_schema::edge::DeviceInfo>> {
        let client_msg_id = self.next_client_msg_id();
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Devices { client_msg_id, reply, permit }).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Unlinks `device` (this one or another) of this user: as
    /// [`Client::unlink_device`].
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn unlink(&self, device: DeviceId) -> Result<()> {
        self.unlink_device(device).await
    }

    /// A cumulative receipt (fire and forget; re-sent after a reconnect).
    /// Never waits: acks not yet written are merged per (chat, kind).
    pub fn ack(&self, chat: ChatId, kind: ReceiptKind, up_to_seq: Seq) {
        self.shared.signal(|s| {
            let e = s.acks.entry((chat, kind)).or_insert(up_to_seq);
            *e = (*e).max(up_to_seq);
        });
    }

    /// Watches the presence of `users` (replacing the list; at most
    /// [`chorus_schema::MAX_WATCHED_USERS`]): an [`Event::Presence`](crate::Event::Presence)
    /// for each now and on every change, kept across reconnects. What each
    /// shows follows that user's privacy settings and blocks.
    pub fn subscribe_presence(&self, users: Vec<UserId>) {
        self.shared.signal(|s| s.watch = Some(users));
    }

    /// Tells `chat`'s other members this user is typing (`true`; repeat it
    /// at least every few seconds while typing: it lapses after
    /// [`chorus_schema::edge::TYPING_EXPIRY_MS`]) or stopped (`false`).
    /// Fire and forget: dropped while disconnected; a chat the user is not
    /// in is answered with an [`Event::Error`](crate::Event::Error) `NotMember`.
    pub fn typing(&self, chat: ChatId, typing: bool) {
        self.shared.signal(|s| s.typing.push((chat, typing)));
    }

    /// Sets who sees this user's last seen and online status, profile photo
    /// and about (everyone, their contacts, nobody), and whether they send
    /// read receipts. Watchers' views change at once.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn set_privacy(
        &self,
        last_seen: Visibility,
        profile_photo: Visibility,
        about: Visibility,
        read_receipts: bool,
    ) -> Result<()> {
        self.request(Request::SetPrivacy { last_seen, profile_photo, about, read_receipts }).await.map(|_| ())
    }

    /// Asks for a sync now (one runs after every (re)connect anyway).
    pub fn sync(&self) {
        self.shared.signal(|s| s.sync = true);
    }

    /// The last seq passed on per chat: save it and pass it as [`Resume`].
    pub fn positions(&self) -> Vec<(ChatId, Seq)> {
        let mut p: Vec<_> = lock(&self.shared.positions).iter().map(|(c, s)| (*c, *s)).collect();
        p.sort();
        p
    }

    /// Drops the current connection and connects again (to the next edge),
    /// as after a network change: unacknowledged sends are resent with their
    /// `client_msg_id`, the latest acks re-sent, and the client syncs from its
    /// positions. Pending sends stay pending. Ignored while disconnected.
    pub fn reconnect(&self) {
        self.shared.signal(|s| s.reconnect = true);
    }

    /// Closes the connection; pending sends fail with [`Error::Closed`].
    pub fn close(&self) {
        self.shared.signal(|s| s.close = true);
    }
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ChatId, ClientMsgId, Seq};

    use super::*;

    const ME: Credentials = Credentials { user: UserId(1), device: DeviceId(2), token: [7; 32] };

    /// Lets every other task of the current-thread runtime run until it waits.
    async fn let_others_run() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_commands_queue_makes_send_wait_for_an_answer_and_acks_never_wait() {
        // No worker: the test takes the commands and answers them.
        let (tx, mut rx) = mpsc::channel(2);
        let client = Client::handle(tx, 2, Arc::default(), ME);
        let send = |c: Client, id: u64| {
            tokio::spawn(async move { c.send_with_id(Recipient::User(UserId(5)), ClientMsgId(id), vec![]).await })
        };
        let first = send(client.clone(), 1);
        let _second = send(client.clone(), 2);
        let mut taken = Vec::new();
        for _ in 0..2 {
            taken.push(rx.recv().await.expect("a command"));
        }
        let third = send(client.clone(), 3);
        let_others_run().await;
        assert!(rx.try_recv().is_err(), "the third send waits for a slot");
        // Acks go around the queue, merged.
        client.ack(ChatId([1; 16]), ReceiptKind::Read, Seq(4));
        client.ack(ChatId([1; 16]), ReceiptKind::Read, Seq(3));
        assert_eq!(lock(&client.shared.signals).acks.get(&(ChatId([1; 16]), ReceiptKind::Read)), Some(&Seq(4)));
        // Answering the first frees its slot for the third.
        let Command::Send { client_msg_id, reply, permit, .. } = taken.remove(0) else { panic!("a send") };
        let sent = Sent { client_msg_id, chat: ChatId([1; 16]), seq: Seq(1), server_time_ms: 0 };
        assert!(reply.send(Ok(sent)).is_ok());
        drop(permit);
        assert_eq!(first.await.ok().and_then(Result::ok), Some(sent));
        match rx.recv().await {
            Some(Command::Send { client_msg_id, .. }) => assert_eq!(client_msg_id, ClientMsgId(3)),
            _ => panic!("the third send should come through"),
        }
        // A worker gone: calls fail with `Closed`.
        drop(rx);
        drop(taken);
        assert_eq!(third.await.ok(), Some(Err(Error::Closed)));
    }
}
