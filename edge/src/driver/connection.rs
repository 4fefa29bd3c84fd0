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
use tracing::{debug, warn};

use super::mailbox::{Bounds, Mail, Mailbox, Room};
use super::router::{receipt_kind, Route, Routed};
use super::views;
use super::{Ctx, Input};
use crate::session::{Action, AppendError, Identity, RecipientVerdict, SeededEntropy, Session};

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
    /// client to allow the delivery stream; the session's next actions wait
    /// with it.
    subscribing: Option<(Identity, tokio::time::Instant)>,
    /// Most bytes queued on the delivery stream (half the connection's
    /// `delivery_queue_bytes_max`; the mailbox holds the other half).
    deliveries_bytes_max: usize,
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
        mailbox: Arc::new(Mailbox::new(bounds, ctx.queued_bytes_peak.clone())),
        deliveries_bytes_max: budget - 2 * (budget / 4),
        ctx: ctx.clone(),
        quic,
        session,
        control: Outgoing::new(send),
        deliveries: None,
        identity: None,
        subscribing: None,
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
    Wrote { stream: &'static str, result: Result<(), quinn::WriteError> },
    Opened(Result<Result<quinn::SendStream, quinn::ConnectionError>, tokio::time::error::Elapsed>),
    Closed(quinn::ConnectionError),
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
                tokio::select! {
                    opened = tokio::time::timeout_at(deadline, self.quic.open_uni()) => Step::Opened(opened),
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
                Step::Closed(e) => {
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
                Mail::Routed(routed) => self.routed(routed),
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
        }
        None
    }

    fn routed(&mut self, routed: Routed) {
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
        }
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
                Action::Send(frame) => self.control.push(&frame),
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
                    self.mailbox.set_outgoing_bytes(deliveries.bytes);
                }
                Action::Append { correlation, command } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let result = append(&ctx, command).await;
                        let _ = to.put(Input::Appended(correlation, result)).await;
                    });
                }
                Action::SendSms { phone, text } => self.ctx.sms.spawn_send(phone, text),
                Action::VerifyToken { user, device, token_hash } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let verdict = views::verify_token(&ctx, user, device, token_hash).await;
                        let _ = to.put(Input::TokenVerified(verdict)).await;
                    });
                }
                Action::CheckRecipient { correlation, user } => {
                    let (ctx, to) = (self.ctx.clone(), self.mailbox.clone());
                    tokio::spawn(async move {
                        let verdict = match views::user_exists(&ctx, user).await {
                            Ok(true) => RecipientVerdict::Registered,
                            Ok(false) => RecipientVerdict::Unknown,
                            Err(e) => {
                                debug!(error = %e, "recipient check");
                                RecipientVerdict::Unavailable
                            }
                        };
                        let _ = to.put(Input::RecipientChecked(correlation, verdict)).await;
                    });
                }
                Action::Subscribe(identity) => {
                    self.subscribing = Some((identity, tokio::time::Instant::now() + OPEN_TIMEOUT));
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
        // `Step::Opened` only comes while subscribing.
        let (identity, _) = self.subscribing.take()?;
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
        self.deliveries = Some(Outgoing::new(stream));
        let route = Route { conn: self.id, device: identity.device, mailbox: self.mailbox.clone() };
        let caps = super::router::Caps {
            per_device: self.ctx.config.connections_per_device_max,
            per_user: self.ctx.config.connections_per_user_max,
        };
        self.ctx.router.register(identity.user, route, caps);
        self.identity = Some(identity);
        self.perform()
    }

    async fn finish(mut self, close: Option<Close>) {
        if let Some(id) = self.identity {
            self.ctx.router.unregister(id.user, self.id);
        }
        self.mailbox.close();
        if let Some(c) = &close {
            debug!(code = ?c.code, reason = %c.reason, "closing connection");
            if c.tell {
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
