//! One client connection, served by one task: it reads the control stream,
//! writes the control and delivery streams, runs the [`Session`], starts the
//! IO the session asks for and takes its results from the [`Mailbox`].
//!
//! An idle logged-in connection holds: this task (its state is the
//! [`Conn`]), the session, an empty mailbox and its route, and quinn's
//! connection. No read buffer (the control stream is read with
//! `read_chunk`; see [`chorus_schema::framing`]), no writer tasks, and no queue
//! buffers (they are freed when they drain).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_schema::framing::{prefixed, FrameSplitter};
use chorus_schema::{EdgeErrorCode, ServerFrame};
use tracing::{debug, warn, Instrument};

use super::mailbox::{Bounds, Mail, Mailbox, Room};
use super::router::{receipt_kind, Route, Routed};
use super::{interest, views};
use super::{Ctx, Input};
use crate::session::{Action, AppendError, ClaimId, Identity, SeededEntropy, Session};

/// Frames queued for the control stream beyond which the edge stops reading
/// the client's frames (flow control then stops the client).
const CONTROL_QUEUE: usize = 1024;
/// The largest delivery frame with its prefix: a connection takes mail that
/// may produce one only while the delivery stream has room for it.
const DELIVERY_FRAME_MAX: usize = chorus_schema::MAX_CIPHERTEXT_BYTES + 4096;
/// How long a new connection may take to open its control stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes taken from the control stream at once (quinn hands out what it
/// has received, as received: no copy).
const READ_CHUNK_MAX: usize = 64 << 10;
/// Mails handled before the task looks at its streams again.
const MAIL_BATCH: usize = 64;
/// How long closing waits for the client to take the queued frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

fn close_code(code: EdgeErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::from(code.value()))
}

/// Encoded frames (with their length prefix) waiting for one stream. The
/// caller bounds the queue; its buffer is freed whenever it drains.
struct Outgoing {
    stream: quinn::SendStream,
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    bytes: usize,
}

impl Outgoing {
    fn new(stream: quinn::SendStream) -> Self {
        Outgoing { stream, queue: VecDeque::new(), bytes: 0 }
    }

    fn push(&mut self, frame: &ServerFrame) {
        self.push_encoded(prefixed(&frame.encode()));
    }

    fn push_encoded(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Hands quinn as much of the queue as it takes now, waiting until it
    /// takes something. Cancel-safe: dropped before it resolves, nothing was
    /// written.
    async fn write(&mut self) -> Result<(), quinn::WriteError> {
        let written = self.stream.write_chunks(self.queue.make_contiguous()).await?;
        self.bytes -= written.bytes;
        // Fully written chunks are the first `written.chunks`; a partly
        // written one was cut to its rest in place.
        self.queue.drain(..written.chunks);
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        Ok(())
    }

    /// Writes everything queued, finishes the stream and waits until the
    /// client has it all (closing the connection discards unsent data).
    async fn finish(&mut self) {
        while !self.queue.is_empty() {
            if self.write().await.is_err() {
                return;
            }
        }
        if self.stream.finish().is_ok() {
            let _ = self.stream.stopped().await;
        }
    }
}

/// The answer of the login's hold (pending forever once taken).
async fn held(holding: &mut Option<tokio::sync::oneshot::Receiver<Result<(), String>>>) -> Result<(), String> {
    match holding {
        Some(rx) => rx.await.unwrap_or_else(|_| Err("the hold stopped".into())),
        None => std::future::pending().await,
    }
}

/// [`Outgoing::write`] of the delivery stream once there is one with frames.
async fn write_deliveries(out: &mut Option<Outgoing>) -> Result<(), quinn::WriteError> {
    match out {
        Some(o) if o.len() > 0 => o.write().await,
        _ => std::future::pending().await,
    }
}

/// What a failed append tells the session, from the log client's typed
/// error: only the log's refusal ([`Error::Refused`](chorus_log_node::client::Error::Refused):
/// malformed, invalid, forbidden for the edge's role) is final; anything else
/// — the outcome is unknown, or the log was unavailable, or the log client's
/// queue stayed full — is `Unavailable`, which the client retries with the
/// same `client_msg_id` (the log deduplicates it).
///
/// Found by the Jepsen harness (`chorus jepsen --nemesis all --seed 2`) when
/// this was read from strings: a batch the log client gave up on reached every
/// waiter as a `BadResponse`, which became `Internal`, a final refusal for the
/// SDK, although some of those sends had been committed (and were delivered).
fn append_error(e: &chorus_log_node::client::Error) -> AppendError {
    use chorus_log_node::client::Error;
    match e {
        Error::Refused { .. } => AppendError::Internal(e.to_string()),
        _ => AppendError::Unavailable(e.to_string()),
    }
}

async fn append(ctx: &Ctx, command: chorus_schema::Command) -> Result<chorus_schema::CommandResult, AppendError> {
    ctx.log.append(&command).await.map_err(|e| append_error(&e))
}

/// A connection's state: everything its task holds.
struct Conn {
    ctx: Arc<Ctx>,
    id: u64,
    quic: quinn::Connection,
    session: Session,
    mailbox: Arc<Mailbox>,
    control: Outgoing,
    deliveries: Option<Outgoing>,
    identity: Option<Identity>,
    /// Logged in as this identity, waiting (until the instant) for the
    /// client to allow the delivery stream and for the bus to hold the
    /// user's chats (see [`super::interest`]); the session's next actions
    /// wait with them.
    subscribing: Option<(Identity, tokio::time::Instant)>,
    /// While subscribing: the delivery stream, once open...
    opened_stream: Option<quinn::SendStream>,
    /// ...and the answer of the login's hold, until it comes.
    holding: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    /// Most bytes queued on the delivery stream (half the connection's
    /// `delivery_queue_bytes_max`; the mailbox holds the other half).
    deliveries_bytes_max: usize,
    // ---- linked devices (issue 12) ----
    /// The task taking claims of this connection's pairing code.
    pairing: Option<tokio::task::AbortHandle>,
    /// Claims received, waiting for the session's answer.
    claims: std::collections::HashMap<ClaimId, chorus_bus::Message>,
    next_claim: u64,
    /// The last presence append of this connection: the next one waits for
    /// it, so the log gets its offline after its online.
    presence: Option<tokio::task::JoinHandle<()>>,
}

/// `_slot`: this connection's place in the per-address and edge-wide counts,
/// held from its first packet until it ends.
pub(super) async fn run(ctx: Arc<Ctx>, incoming: quinn::Incoming, _slot: super::limits::Slot) {
    let quic = match incoming.await {
        Ok(c) => c,
        Err(e) => return debug!(error = %e, "handshake failed"),
    };
    let (send, recv) = match tokio::time::timeout(OPEN_TIMEOUT, quic.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(error = %e, "no control stream"),
        Err(_) => {
            quic.close(close_code(EdgeErrorCode::BadFrame), b"open the control stream first");
            return;
        }
    };
    ctx.connections.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(ctx.config.session.clone(), Box::new(SeededEntropy::new(crate::os_random())));
    session.set_limits(ctx.rate_limits.clone(), quic.remote_address().ip());
    session.set_contact_key(ctx.view_key.contact_key());
    let budget = ctx.config.delivery_queue_bytes_max;
    let bounds =
        Bounds { input_bytes_max: budget / 4, routed_max: ctx.config.delivery_queue_max, routed_bytes_max: budget / 4 };
    let mut conn = Conn {
        id: ctx.next_conn_id.fetch_add(1, Ordering::Relaxed),
        mailbox: Arc::new(Mailbox::new(bounds, ctx.queued_bytes_peak.clone()).with_total(ctx.queued_bytes.clone())),
        deliveries_bytes_max: budget - 2 * (budget / 4),
        ctx: ctx.clone(),
        quic,
        session,
        control: Outgoing::new(send),
        deliveries: None,
        identity: None,
        subscribing: None,
        opened_stream: None,
        holding: None,
        pairing: None,
        claims: std::collections::HashMap::new(),
        next_claim: 0,
        presence: None,
    };
    let close = conn.serve(recv).await;
    // Boxed: its state would otherwise be part of every idle connection's task.
    Box::pin(conn.finish(close)).await;
    ctx.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Bytes of a connection's task state (its future), for the startup log: the
/// largest part of an idle connection that is the edge's own.
pub(super) fn task_bytes() -> usize {
    fn output_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    output_size(run)
}

/// What woke the connection's task.
enum Step {
    Mail(Mail),
    Read(Result<Option<quinn::Chunk>, quinn::ReadError>),
    Wrote {
        stream: &'static str,
        result: Result<(), quinn::WriteError>,
    },
    Opened(Result<Result<quinn::SendStream, quinn::ConnectionError>, tokio::time::error::Elapsed>),
    /// The login's hold of the user's subjects is done (or timed out).
    Held(Result<Result<(), String>, tokio::time::error::Elapsed>),
    Closed(quinn::ConnectionError),
    /// A media stream of the logged-in client (issue 14).
    MediaStream(Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>),
}

/// The name of an action, for traces (frames carry tokens and ciphertexts).
fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Send(f) | Action::Deliver(f) => f.kind(),
        Action::DeliverItem(_) => "Deliver",
        Action::Append { .. } => "append",
        Action::SendSms { .. } => "sms",
        Action::VerifyToken { .. } => "verify_token",
        Action::CheckRecipient { .. } => "check_recipient",
        Action::Subscribe(_) => "subscribe",
        Action::Sync { .. } => "sync",
        Action::FillGap { .. } => "fill_gap",
        Action::Close { .. } => "close",
        Action::AwaitPairing { .. } => "await_pairing",
        Action::StopPairing => "stop_pairing",
        Action::AnswerClaim { .. } => "answer_claim",
        Action::ClaimPairing { .. } => "claim_pairing",
        Action::ListDevices { .. } => "list_devices",
        Action::Info { .. } => "info",
        Action::SetPresence(_) => "set_presence",
        Action::WatchPresence { .. } => "watch_presence",
        Action::Typing { .. } => "typing",
        Action::Query { .. } => "query",
    }
}

/// Why the edge closes a connection. `tell`: the session did not already
/// send the `Error` frame.
struct Close {
    code: EdgeErrorCode,
    reason: String,
    tell: bool,
}

impl Close {
    fn driver(code: EdgeErrorCode, reason: &str) -> Close {
        Close { code, reason: reason.to_owned(), tell: true }
    }
}

impl Conn {
    /// Serves the connection until the session, the driver or the client ends
    /// it; returns the edge's reason to close, if it has one.
    ///
    /// Everything but the wait for the delivery stream is synchronous, so
    /// the task's state while idle is just the futures of this `select!`.
    async fn serve(&mut self, mut recv: quinn::RecvStream) -> Option<Close> {
        let mut splitter = FrameSplitter::default();
        // False once the control stream cannot be read on (a bad length).
        let mut readable = true;
        loop {
            let step = if let Some((_, deadline)) = self.subscribing {
                let opening = self.opened_stream.is_none();
                tokio::select! {
                    opened = tokio::time::timeout_at(deadline, self.quic.open_uni()), if opening => Step::Opened(opened),
                    held = tokio::time::timeout_at(deadline, held(&mut self.holding)), if self.holding.is_some() => {
                        Step::Held(held)
                    }
                    result = self.control.write(), if self.control.len() > 0 => Step::Wrote { stream: "control", result },
                    e = self.quic.closed() => Step::Closed(e),
                }
            } else {
                // A client that does not read its answers is not read from.
                let reading = readable && self.control.len() < CONTROL_QUEUE;
                tokio::select! {
                    mail = self.mailbox.take(self.room()) => Step::Mail(mail),
                    chunk = recv.read_chunk(READ_CHUNK_MAX, true), if reading => Step::Read(chunk),
                    result = self.control.write(), if self.control.len() > 0 => Step::Wrote { stream: "control", result },
                    result = write_deliveries(&mut self.deliveries) => Step::Wrote { stream: "delivery", result },
                    // Only logged in does the connection allow more than the
                    // control stream (see `subscribed`).
                    stream = self.quic.accept_bi(), if self.identity.is_some() => Step::MediaStream(stream),
                    e = self.quic.closed() => Step::Closed(e),
                }
            };
            let close = match step {
                Step::Mail(mail) => self.mail(mail),
                Step::Read(Ok(Some(chunk))) => {
                    let mut frames = Vec::new();
                    let split = splitter.push(chunk.bytes, &mut frames);
                    let mut close = self.frames(frames);
                    if let (None, Err(e)) = (&close, split) {
                        // The stream cannot be resynchronized after a bad length.
                        readable = false;
                        self.session.handle_decode_error(&e);
                        close = self.perform();
                    }
                    close
                }
                // The client finished or reset its control stream: it is gone.
                Step::Read(Ok(None) | Err(_)) => return None,
                Step::Wrote { stream: "delivery", result: Ok(()) } => {
                    self.report_outgoing();
                    None
                }
                Step::Wrote { result: Ok(()), .. } => None,
                Step::Wrote { stream, result: Err(e) } => {
                    debug!(stream, error = %e, "write failed");
                    Some(Close::driver(EdgeErrorCode::Unavailable, &format!("{stream} stream closed")))
                }
                Step::Opened(opened) => self.opened(opened),
                Step::Held(held) => self.held(held),
                Step::Closed(e) => {
                    debug!(error = %e, "connection closed");
                    return None;
                }
                Step::MediaStream(Ok((send, recv))) => {
                    if let Some(identity) = self.identity {
                        let (ctx, store) = (self.ctx.clone(), self.ctx.media.clone());
                        tokio::spawn(super::media::serve(ctx, store, identity, send, recv));
                    }
                    None
                }
                Step::MediaStream(Err(e)) => {
                    debug!(error = %e, "connection closed");
                    return None;
                }
            };
            if close.is_some() {
                return close;
            }
        }
    }

    /// Handles `first` and what else is in the mailbox, up to a batch (or
    /// until the session waits for the delivery stream).
    fn mail(&mut self, first: Mail) -> Option<Close> {
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(mail) = next {
            match mail {
                Mail::Lagged => {
                    return Some(Close::driver(
                        EdgeErrorCode::Unavailable,
                        "too slow to read deliveries: reconnect and sync",
                    ))
                }
                Mail::Evicted(reason) => return Some(Close::driver(EdgeErrorCode::RateLimited, &reason)),
                Mail::Input(input) => {
                    if let Some(close) = self.input(input) {
                        return Some(close);
                    }
                }
                Mail::Routed(routed) => {
                    if let Some(close) = self.routed(routed) {
                        return Some(close);
                    }
                }
            }
            if let Some(close) = self.perform() {
                return Some(close);
            }
            handled += 1;
            next = if handled < MAIL_BATCH && self.subscribing.is_none() {
                self.mailbox.try_take(self.room())
            } else {
                None
            };
        }
        None
    }

    /// Whether the delivery stream has room for the largest frame: mail (which
    /// may produce a delivery) is taken only then, so that a client that stops
    /// reading stops the work done for it, and its sync waits.
    fn room(&self) -> Room {
        match &self.deliveries {
            Some(d)
                if d.bytes + DELIVERY_FRAME_MAX > self.deliveries_bytes_max
                    || d.len() >= self.ctx.config.delivery_queue_max =>
            {
                Room::Full
            }
            _ => Room::Free,
        }
    }

    /// Tells the mailbox the delivery stream's queued bytes (they count
    /// towards the connection's peak).
    fn report_outgoing(&self) {
        self.mailbox.set_outgoing_bytes(self.deliveries.as_ref().map_or(0, |d| d.bytes));
    }

    /// Client frames, in order.
    fn frames(&mut self, frames: Vec<Bytes>) -> Option<Close> {
        for frame in frames {
            let now = crate::now_ms();
            {
                let mut registry = crate::lock(&self.ctx.otp);
                self.session.handle_bytes(now, &frame, &mut registry);
            }
            if let Some(close) = self.perform() {
                return Some(close);
            }
        }
        None
    }

    fn input(&mut self, input: Input) -> Option<Close> {
        let now = crate::now_ms();
        match input {
            Input::Appended(correlation, result) => self.session.handle_append_result(now, correlation, result),
            Input::Queried(correlation, result) => self.session.handle_query_result(correlation, result),
            Input::TokenVerified(verdict) => self.session.handle_token_verified(verdict),
            Input::RecipientChecked(correlation, verdict) => {
                self.session.handle_recipient_checked(correlation, verdict)
            }
            Input::Recovered(item) => self.session.handle_recovered(&item),
            Input::SyncDone { positions, with_news } => self.session.handle_sync_done(&positions, with_news),
            Input::SyncFailed => self.session.handle_sync_failed(),
            Input::FillDone(chat) => self.session.handle_fill_done(chat),
            Input::Info(correlation, answer) => self.session.handle_info(correlation, answer),
            Input::TypingRefused { chat, not_member } => self.session.handle_typing_refused(chat, not_member),
            Input::FillFailed(chat) => {
                // Live delivery must not move on past the gap: the client
                // would take the next item's seq as its position and its next
                // sync would start after the gap, never recovering it (found
                // by the Jepsen harness: a device's live stream skipped 18
                // messages after a fill failed during a leader kill). Closing
                // makes it reconnect and sync from the position it really has.
                let reason = format!("could not recover a gap in chat {chat}: reconnect and sync");
                return Some(Close::driver(EdgeErrorCode::Unavailable, &reason));
            }
            Input::PairingReady(ok) => self.session.handle_pairing_ready(now, ok),
            Input::PairingExpired => self.session.handle_pairing_expired(now),
            Input::PairClaimed(claim, msg) => {
                let id = ClaimId(self.next_claim);
                self.next_claim += 1;
                self.claims.insert(id, msg);
                self.session.handle_pair_claim(now, id, claim);
            }
            Input::PairAnswered(correlation, answer) => self.session.handle_pair_answered(correlation, answer),
            Input::DevicesListed(client_msg_id, devices) => self.session.handle_devices_listed(client_msg_id, devices),
        }
        None
    }

    fn routed(&mut self, routed: Routed) -> Option<Close> {
        match routed {
            Routed::Delivery(item) => self.session.handle_delivery(&item),
            Routed::Receipt(update) => {
                if let Some(kind) = receipt_kind(update.status) {
                    self.session.handle_receipt(update.chat, update.up_to_seq, kind);
                }
            }
            Routed::Account(update) => {
                self.session.handle_device_notice(update.change, update.device, update.at_ms);
            }
            Routed::KeysLow(update) => self.session.handle_keys_low(update.device, update.one_time_keys_left),
            Routed::Joined(chat) => self.session.handle_joined(chat),
            Routed::JoinFailed(chat) => {
                let reason = format!("cannot take the deliveries of chat {chat}: reconnect and sync");
                return Some(Close::driver(EdgeErrorCode::Unavailable, &reason));
            }
            Routed::Presence { user, visible, online, last_seen_ms } => {
                self.session.handle_presence(user, visible, online, last_seen_ms)
            }
            Routed::Typing { chat, user, typing } => self.session.handle_typing(chat, user, typing),
        }
        None
    }

    /// Runs the session's actions; returns the close reason if it asked to
    /// close. Stops at a `Subscribe`: the actions after it wait until the
    /// delivery stream is open (see [`Conn::opened`]).
    fn perform(&mut self) -> Option<Close> {
        if self.subscribing.is_some() {
            return None;
        }
        while let Some(action) = self.session.poll_action() {
            tracing::trace!(conn = self.id, action = action_kind(&action), "action");
            match action {
                Action::Send(frame) => {
                    self.ctx.metrics.answered(&frame);
                    self.control.push(&frame);
                }
                Action::Deliver(_) | Action::DeliverItem(_) => {
                    let Some(deliveries) = &mut self.deliveries else {
                        warn!(kind = action_kind(&action), "delivery before the delivery stream opened");
                        continue;
                    };
                    // An item's frame is shared by every connection that
                    // receives it: a reference count, no copy.
                    let encoded = match &action {
                        Action::DeliverItem(item) => match item.frame() {
                            Some(frame) => frame.clone(),
                            None => continue,
                        },
                        Action::Deliver(frame) => prefixed(&frame.encode()),
                        _ => continue,
                    };
                    // Room was checked before the mail was taken, but one mail
                    // can release many held items (a sync or fill done): past
                    // the budget the client must resync instead.
                    if deliveries.len() >= self.ctx.config.delivery_queue_max
                        || deliveries.bytes + encoded.len() > self.deliveries_bytes_max
                    {
                        return Some(Close::driver(
                            EdgeErrorCode::Unavailable,
                            "too slow to read deliveries: reconnect and sync",
                        ));
                    }
                    deliveries.push_encoded(encoded);
                    if matches!(action, Action::DeliverItem(_) | Action::Deliver(ServerFrame::Deliver { .. })) {
                        self.ctx.metrics.deliveries.increment(1);
                    }
                    self.mailbox.set_outgoing_bytes(deliveries.bytes);
                }
                Action::Append { correlation, command } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    // A span per append (debug: off unless `RUST_LOG` asks,
                    // then exported by OTLP too, see `otlp_endpoint`).
                    let span = tracing::debug_span!("append", conn = self.id, kind = command.kind());
                    tokio::spawn(
                        async move {
                            let result = append(&ctx, command).await;
                            let _ = to.put(Input::Appended(correlation, result)).await;
                        }
                        .instrument(span),
                    );
                }
                Action::SendSms { phone, text } => self.ctx.sms.spawn_send(phone, text),
                Action::VerifyToken { user, device, token_hash } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let verdict = views::verify_token(&ctx, user, device, token_hash).await;
                        let _ = to.put(Input::TokenVerified(verdict)).await;
                    });
                }
                Action::CheckRecipient { correlation, users } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let verdict = views::users_exist(&ctx, users).await;
                        let _ = to.put(Input::RecipientChecked(correlation, verdict)).await;
                    });
                }
                Action::Subscribe(identity) => {
                    self.subscribing = Some((identity, tokio::time::Instant::now() + OPEN_TIMEOUT));
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.holding = Some(rx);
                    let (ctx, mailbox, conn) = (self.ctx.clone(), self.mailbox.clone(), self.id);
                    tokio::spawn(async move {
                        let chats = async {
                            views::chats_of(&ctx, identity.user, identity.device).await.map_err(|e| e.to_string())
                        };
                        let held = interest::hold_at_login(&ctx, conn, &mailbox, identity.user, chats).await;
                        let _ = tx.send(held);
                    });
                    // ---- E2EE (issue 14) ----: runs once the delivery stream is open.
                    self.session.keys_at_login();
                    return None;
                }
                Action::Sync { identity, since } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        if let Err(e) = views::sync(&ctx, identity.user, identity.device, since, &to).await {
                            warn!(user = %identity.user, error = %e, "sync failed");
                            let _ = to.put(Input::SyncFailed).await;
                        }
                    });
                }
                Action::FillGap { identity, chat, after, until } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let done = match views::recover(&ctx, identity.user, chat, after, until, &to).await {
                            Ok(()) => Input::FillDone(chat),
                            Err(e) => {
                                warn!(%chat, error = %e, "gap fill failed; closing the connection so that the client syncs");
                                Input::FillFailed(chat)
                            }
                        };
                        // Gone: the connection closed meanwhile; nothing to tell.
                        let _ = to.put(done).await;
                    });
                }
                Action::Close { code, reason } => return Some(Close { code, reason, tell: false }),
                Action::AwaitPairing { code_hash, ttl_ms } => {
                    if let Some(old) = self.pairing.take() {
                        old.abort();
                    }
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    let task = tokio::spawn(super::pairing::await_claims(ctx, to, code_hash, ttl_ms));
                    self.pairing = Some(task.abort_handle());
                }
                Action::StopPairing => {
                    if let Some(old) = self.pairing.take() {
                        old.abort();
                    }
                }
                Action::AnswerClaim { claim, frame } => {
                    if let Some(msg) = self.claims.remove(&claim) {
                        let ctx = self.ctx.clone();
                        tokio::spawn(async move { super::pairing::answer(&ctx, &msg, &frame).await });
                    }
                }
                Action::ClaimPairing { correlation, code_hash, claim } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let answer = super::pairing::claim(&ctx, code_hash, claim).await;
                        let _ = to.put(Input::PairAnswered(correlation, answer)).await;
                    });
                }
                Action::ListDevices { client_msg_id, user } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let devices = super::pairing::list(&ctx, user).await;
                        let _ = to.put(Input::DevicesListed(client_msg_id, devices)).await;
                    });
                }
                Action::Info { correlation, request } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let answer = views::info(&ctx, request).await;
                        let _ = to.put(Input::Info(correlation, answer)).await;
                    });
                }
                Action::SetPresence(command) => self.set_presence(command),
                Action::WatchPresence { viewer, users } => {
                    self.ctx.presence.watch(&self.ctx, self.id, viewer, users, &self.mailbox);
                }
                Action::Typing { identity, chat, typing } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let not_member = match super::typing::relay(&ctx, identity, chat, typing).await {
                            Ok(()) => return,
                            Err(super::typing::Refused::NotMember) => true,
                            Err(super::typing::Refused::Unavailable(e)) => {
                                debug!(%chat, error = %e, "typing: members unknown");
                                false
                            }
                        };
                        let _ = to.put(Input::TypingRefused { chat, not_member }).await;
                    });
                }
                Action::Query { correlation, query } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let result = views::any_query(&ctx, query).await.map_err(|e| e.to_string());
                        let _ = to.put(Input::Queried(correlation, result)).await;
                    });
                }
            }
        }
        None
    }

    /// The wait for the delivery stream is over: route the identity's
    /// deliveries here and run the actions that waited.
    fn opened(
        &mut self,
        opened: Result<Result<quinn::SendStream, quinn::ConnectionError>, tokio::time::error::Elapsed>,
    ) -> Option<Close> {
        // A client must allow the edge one unidirectional stream; one that
        // does not would stall this connection.
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Some(Close::driver(EdgeErrorCode::Unavailable, &format!("delivery stream: {e}"))),
            Err(_) => {
                let reason = "the client allows no delivery stream (max_concurrent_uni_streams 0)";
                return Some(Close::driver(EdgeErrorCode::Unavailable, reason));
            }
        };
        self.opened_stream = Some(stream);
        self.subscribed()
    }

    /// The login's hold of the user's subjects is done.
    fn held(&mut self, held: Result<Result<(), String>, tokio::time::error::Elapsed>) -> Option<Close> {
        self.holding = None;
        match held {
            Ok(Ok(())) => self.subscribed(),
            Ok(Err(e)) => Some(Close::driver(EdgeErrorCode::Unavailable, &format!("cannot take your chats: {e}"))),
            Err(_) => Some(Close::driver(EdgeErrorCode::Unavailable, "taking your chats timed out")),
        }
    }

    /// Once the delivery stream is open and the bus holds the user's
    /// subjects: routes the user's items here and runs the session's waiting
    /// actions.
    fn subscribed(&mut self) -> Option<Close> {
        if self.holding.is_some() || self.opened_stream.is_none() {
            return None;
        }
        let (identity, _) = self.subscribing.take()?;
        let stream = self.opened_stream.take()?;
        self.deliveries = Some(Outgoing::new(stream));
        let route = Route { conn: self.id, device: identity.device, mailbox: self.mailbox.clone() };
        let caps = super::router::Caps {
            per_device: self.ctx.config.connections_per_device_max,
            per_user: self.ctx.config.connections_per_user_max,
        };
        self.ctx.router.register(identity.user, route, caps);
        self.identity = Some(identity);
        // Logged in: the client may open media streams now (issue 14).
        let streams = 1 + self.ctx.config.media.streams_per_connection;
        self.quic.set_max_concurrent_bi_streams(streams.into());
        self.perform()
    }

    /// Appends a presence change of this connection after the previous one
    /// (retried while the log's answer is unknown: `SetPresence` is idempotent).
    fn set_presence(&mut self, command: chorus_schema::Command) {
        let (ctx, previous) = (self.ctx.clone(), self.presence.take());
        self.presence = Some(tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            for attempt in 0..3u64 {
                match append(&ctx, command.clone()).await {
                    Err(AppendError::Unavailable(e)) => {
                        debug!(attempt, error = %e, "presence append unavailable, retrying");
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                    Ok(Err(r)) => return debug!(code = ?r.code, message = %r.message, "presence refused"),
                    _ => return,
                }
            }
        }));
    }

    async fn finish(mut self, close: Option<Close>) {
        if let Some(id) = self.identity {
            self.ctx.router.unregister(id.user, self.id);
        }
        if let Some(task) = self.pairing.take() {
            task.abort();
        }
        // Claims the session did not answer: the new device is gone.
        for (_, msg) in self.claims.drain() {
            let frame = ServerFrame::Error {
                code: EdgeErrorCode::BadPairingCode,
                message: "the new device disconnected".into(),
                client_msg_id: chorus_schema::bus::PairClaim::decode(&msg.payload).ok().map(|c| c.client_msg_id),
                retry_after_ms: None,
            };
            let ctx = self.ctx.clone();
            tokio::spawn(async move { super::pairing::answer(&ctx, &msg, &frame).await });
        }
        self.ctx.presence.unwatch(self.id);
        if let Some(offline) = self.session.offline_command() {
            self.set_presence(offline);
        }
        // Closed first: a hold still running for this connection sees it
        // and releases after itself (see `interest::hold_at_login`).
        self.mailbox.close();
        self.ctx.interests.release(self.id).await;
        if let Some(c) = &close {
            debug!(code = ?c.code, reason = %c.reason, "closing connection");
            if c.tell {
                crate::metrics::refused(c.code);
                let frame = ServerFrame::Error {
                    code: c.code,
                    message: c.reason.clone(),
                    client_msg_id: None,
                    retry_after_ms: None,
                };
                self.control.push(&frame);
            }
        }
        // Let the client take what is queued (bounded: a client that does not
        // read is cut off by the close below).
        let Conn { control, deliveries, .. } = &mut self;
        let flush = async {
            tokio::join!(control.finish(), async {
                if let Some(d) = deliveries {
                    d.finish().await;
                }
            })
        };
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, flush).await;
        if let Some(c) = close {
            self.quic.close(close_code(c.code), c.reason.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use chorus_log_node::client::Error;
    use chorus_schema::ErrorCode;

    use super::append_error;
    use crate::session::AppendError;

    #[test]
    fn only_a_nodes_own_refusal_is_final_any_other_append_failure_is_retried() {
        let retried = [
            Error::UnknownOutcome { attempts: 3, last: "127.0.0.1:1: no response within 2s".into() },
            Error::Unavailable { attempts: 5, last: "PartitionUnavailable".into() },
            Error::Overloaded { group: chorus_schema::GroupId(0), queued: 8 },
            Error::Protocol("3 results for 2 commands".into()),
        ];
        for e in retried {
            assert!(matches!(append_error(&e), AppendError::Unavailable(_)), "{e} must be retried");
        }
        for code in [ErrorCode::InvalidCommand, ErrorCode::Forbidden, ErrorCode::MixedGroups] {
            let refused = Error::Refused { code, message: "bad".into() };
            assert!(matches!(append_error(&refused), AppendError::Internal(_)), "{code:?} is final");
        }
    }
}
