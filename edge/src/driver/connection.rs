//! One client connection: its streams, its session, and the IO the session asks for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_schema::edge::{write_frame, FrameReader};
use chorus_schema::{CommandBody, EdgeErrorCode, RejectCode, Rejection, ServerFrame};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::router::{receipt_kind, Route, Routed};
use super::views;
use super::{Ctx, Input};
use crate::session::{Action, AppendError, Identity, SeededEntropy, Session};

/// Frames queued for the control stream before the loop waits for the client.
const CONTROL_QUEUE: usize = 1024;
/// Inputs (client frames, IO results) queued for the loop.
const INPUT_QUEUE: usize = 1024;
/// How long a new connection may take to open its control stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a writer coalesces into one write.
const WRITE_BATCH_BYTES: usize = 256 << 10;

fn close_code(code: EdgeErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::from(code.code()))
}

/// Writes queued frames to a stream, coalescing what is queued into one write.
fn spawn_writer(mut stream: quinn::SendStream, capacity: usize) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let task = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(frame) = rx.recv().await {
            buf.clear();
            write_frame(&mut buf, &frame);
            while buf.len() < WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(frame) => write_frame(&mut buf, &frame),
                    Err(_) => break,
                }
            }
            if stream.write_all(&buf).await.is_err() {
                return;
            }
        }
        // Closing the connection discards unsent data: wait until the peer
        // has everything (the caller bounds the wait).
        let _ = stream.finish();
        let _ = stream.stopped().await;
    });
    (tx, task)
}

/// Reads the control stream into frames for the loop.
async fn read_control(mut recv: quinn::RecvStream, to: mpsc::Sender<Input>) {
    let mut reader = FrameReader::new();
    let mut chunk = vec![0u8; 4 << 10];
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if to.send(Input::Frame(Ok(frame))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronized after a bad length.
                    let _ = to.send(Input::Frame(Err(e))).await;
                    return;
                }
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => reader.push(&chunk[..n]),
            Ok(None) | Err(_) => {
                let _ = to.send(Input::ControlClosed).await;
                return;
            }
        }
    }
}

/// What a failed append tells the session. Only a node's refusal of the
/// request before proposing it (malformed, too large, mixed partitions) is final;
/// anything else leaves the outcome unknown — the command may have been
/// committed — and is `Unavailable`, which the client retries with the same
/// `client_msg_id` (the log deduplicates it).
///
/// Found by the Jepsen harness (`chorus jepsen --nemesis all --seed 2`): the
/// log client's batcher hands a batch it gave up on to every waiter as
/// `BadResponse("gave up after N attempts: …")`, which used to become
/// `Internal`, a final refusal for the SDK, although some of those sends had
/// been committed (and were delivered).
fn append_error(e: &chorus_log_node::client::Error) -> AppendError {
    use chorus_log_node::client::Error;
    use chorus_schema::ErrorCode;
    match e {
        Error::Server {
            code: ErrorCode::BadFrame | ErrorCode::FrameTooLarge | ErrorCode::InvalidCommand | ErrorCode::MixedGroups,
            ..
        } => AppendError::Internal(e.to_string()),
        Error::Tls(_) => AppendError::Internal(e.to_string()),
        _ => AppendError::Unavailable(e.to_string()),
    }
}

async fn append(ctx: &Ctx, command: chorus_schema::Command) -> Result<chorus_schema::CommandResult, AppendError> {
    if let CommandBody::SendDirect { recipient, .. } = &command.body {
        match views::user_exists(ctx, *recipient).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Err(Rejection { code: RejectCode::UnknownUser, message: format!("no user {recipient}") }))
            }
            Err(e) => return Err(AppendError::Unavailable(e.to_string())),
        }
    }
    ctx.log.append(&command).await.map_err(|e| append_error(&e))
}

struct Conn {
    ctx: Arc<Ctx>,
    id: u64,
    quic: quinn::Connection,
    session: Session,
    inputs: mpsc::Sender<Input>,
    control: mpsc::Sender<Vec<u8>>,
    deliveries: Option<mpsc::Sender<Vec<u8>>>,
    routes: Option<mpsc::Receiver<Routed>>,
    lagged: Arc<AtomicBool>,
    identity: Option<Identity>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

pub(super) async fn run(ctx: Arc<Ctx>, incoming: quinn::Incoming) {
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
    let (inputs, mut input_rx) = mpsc::channel(INPUT_QUEUE);
    tokio::spawn(read_control(recv, inputs.clone()));
    let (control, control_task) = spawn_writer(send, CONTROL_QUEUE);
    let session = Session::new(ctx.config.session.clone(), Box::new(SeededEntropy::new(crate::os_random())));
    let mut conn = Conn {
        id: ctx.next_conn_id.fetch_add(1, Ordering::Relaxed),
        ctx: ctx.clone(),
        quic: quic.clone(),
        session,
        inputs,
        control,
        deliveries: None,
        routes: None,
        lagged: Arc::new(AtomicBool::new(false)),
        identity: None,
        writers: vec![control_task],
    };
    let close = loop {
        // Frames and IO results first: they free the client and the session.
        let step = tokio::select! {
            biased;
            i = input_rx.recv() => i.map(Step::Input),
            r = recv_routed(&mut conn.routes) => r.map(Step::Routed),
            e = quic.closed() => {
                debug!(error = %e, "connection closed");
                break None;
            }
        };
        match step {
            Some(Step::Input(Input::ControlClosed)) | None => break None,
            Some(Step::Input(input)) => conn.input(input),
            Some(Step::Routed(routed)) => conn.routed(routed),
        }
        if conn.lagged.load(Ordering::Relaxed) {
            break Some(Close::driver(EdgeErrorCode::Unavailable, "too slow to read deliveries: reconnect and sync"));
        }
        if let Some(close) = conn.perform().await {
            break Some(close);
        }
    };
    conn.finish(close).await;
    ctx.connections.fetch_sub(1, Ordering::Relaxed);
}

/// The name of an action, for traces (frames carry tokens and ciphertexts).
fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Send(f) | Action::Deliver(f) => f.kind(),
        Action::Append { .. } => "append",
        Action::SendSms { .. } => "sms",
        Action::VerifyToken { .. } => "verify_token",
        Action::Subscribe(_) => "subscribe",
        Action::Sync { .. } => "sync",
        Action::FillGap { .. } => "fill_gap",
        Action::Close { .. } => "close",
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

enum Step {
    Input(Input),
    Routed(Routed),
}

async fn recv_routed(routes: &mut Option<mpsc::Receiver<Routed>>) -> Option<Routed> {
    match routes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    fn input(&mut self, input: Input) {
        let now = crate::now_ms();
        match input {
            Input::Frame(Ok(bytes)) => {
                let mut registry = self.ctx.otp.lock().expect("otp lock");
                self.session.handle_bytes(now, &bytes, &mut registry);
            }
            Input::Frame(Err(e)) => self.session.handle_decode_error(&e),
            Input::ControlClosed => {}
            Input::Appended(correlation, result) => self.session.handle_append_result(now, correlation, result),
            Input::TokenVerified(verdict) => self.session.handle_token_verified(verdict),
            Input::Recovered(record) => self.session.handle_recovered(&record),
            Input::SyncDone { positions, with_news } => self.session.handle_sync_done(&positions, with_news),
            Input::SyncFailed => self.session.handle_sync_failed(),
            Input::FillDone(chat) => self.session.handle_fill_done(chat),
        }
    }

    fn routed(&mut self, routed: Routed) {
        match routed {
            Routed::Delivery(record) => self.session.handle_delivery(&record),
            Routed::Receipt(update) => {
                if let Some(kind) = receipt_kind(update.status) {
                    self.session.handle_receipt(update.chat, update.up_to_seq, kind);
                }
            }
        }
    }

    /// Runs the session's actions; returns the close reason if it asked to close.
    async fn perform(&mut self) -> Option<Close> {
        while let Some(action) = self.session.poll_action() {
            tracing::trace!(conn = self.id, action = action_kind(&action), "action");
            match action {
                Action::Send(frame) => {
                    if self.control.send(frame.encode()).await.is_err() {
                        return Some(Close::driver(EdgeErrorCode::Unavailable, "control stream closed"));
                    }
                }
                Action::Deliver(frame) => {
                    let Some(deliveries) = &self.deliveries else {
                        warn!(kind = frame.kind(), "delivery before the delivery stream opened");
                        continue;
                    };
                    if deliveries.try_send(frame.encode()).is_err() {
                        return Some(Close::driver(EdgeErrorCode::Unavailable, "too slow to read deliveries: reconnect and sync"));
                    }
                }
                Action::Append { correlation, command } => {
                    let (ctx, to) = (self.ctx.clone(), self.inputs.clone());
                    tokio::spawn(async move {
                        let result = append(&ctx, command).await;
                        let _ = to.send(Input::Appended(correlation, result)).await;
                    });
                }
                Action::SendSms { phone, text } => self.ctx.sms.spawn_send(phone, text),
                Action::VerifyToken { user, device, token_hash } => {
                    let (ctx, to) = (self.ctx.clone(), self.inputs.clone());
                    tokio::spawn(async move {
                        let verdict = views::verify_token(&ctx, user, device, token_hash).await;
                        let _ = to.send(Input::TokenVerified(verdict)).await;
                    });
                }
                Action::Subscribe(identity) => {
                    if let Err(reason) = self.subscribe(identity).await {
                        return Some(Close::driver(EdgeErrorCode::Unavailable, &reason));
                    }
                }
                Action::Sync { identity, since } => {
                    let (ctx, to) = (self.ctx.clone(), self.inputs.clone());
                    tokio::spawn(async move {
                        if let Err(e) = views::sync(&ctx, identity.user, identity.device, since, &to).await {
                            warn!(user = %identity.user, error = %e, "sync failed");
                            let _ = to.send(Input::SyncFailed).await;
                        }
                    });
                }
                Action::FillGap { identity, chat, after, until } => {
                    let (ctx, to) = (self.ctx.clone(), self.inputs.clone());
                    tokio::spawn(async move {
                        if let Err(e) = views::recover(&ctx, identity.user, chat, after, until, &to).await {
                            warn!(%chat, error = %e, "gap fill failed; the client's next sync recovers it");
                        }
                        let _ = to.send(Input::FillDone(chat)).await;
                    });
                }
                Action::Close { code, reason } => return Some(Close { code, reason, tell: false }),
            }
        }
        None
    }

    async fn subscribe(&mut self, identity: Identity) -> Result<(), String> {
        // A client must allow the edge one unidirectional stream; one that does
        // not would stall this connection's loop.
        let stream = match tokio::time::timeout(OPEN_TIMEOUT, self.quic.open_uni()).await {
            Ok(s) => s.map_err(|e| format!("delivery stream: {e}"))?,
            Err(_) => return Err("the client allows no delivery stream (max_concurrent_uni_streams 0)".into()),
        };
        let (deliveries, task) = spawn_writer(stream, self.ctx.config.delivery_queue_max);
        self.deliveries = Some(deliveries);
        self.writers.push(task);
        let (tx, rx) = mpsc::channel(self.ctx.config.delivery_queue_max);
        self.ctx.router.register(identity.user, Route { conn: self.id, tx, lagged: self.lagged.clone() });
        self.routes = Some(rx);
        self.identity = Some(identity);
        Ok(())
    }

    async fn finish(self, close: Option<Close>) {
        if let Some(id) = self.identity {
            self.ctx.router.unregister(id.user, self.id);
        }
        if let Some(c) = &close {
            debug!(code = ?c.code, reason = %c.reason, "closing connection");
            if c.tell {
                let frame = ServerFrame::Error { code: c.code, message: c.reason.clone(), client_msg_id: None };
                let _ = self.control.try_send(frame.encode());
            }
        }
        drop(self.control);
        drop(self.deliveries);
        // Let the writers flush what is queued (bounded: a client that does not
        // read is cut off by the close below).
        for w in self.writers {
            let _ = tokio::time::timeout(Duration::from_secs(1), w).await;
        }
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
        let unknown = [
            Error::BadResponse("gave up after 3 attempts: stream to 127.0.0.1:1: no response within 2s".into()),
            Error::GaveUp { attempts: 5, last: "server error NotLeader".into() },
            Error::Stream { addr: "127.0.0.1:1".into(), reason: "reset".into() },
            Error::NoNode("none".into()),
            Error::Server { code: ErrorCode::Timeout, message: "commit".into() },
            Error::Server { code: ErrorCode::Internal, message: "storage".into() },
        ];
        for e in unknown {
            assert!(matches!(append_error(&e), AppendError::Unavailable(_)), "{e} must be retried");
        }
        let refused = Error::Server { code: ErrorCode::InvalidCommand, message: "bad".into() };
        assert!(matches!(append_error(&refused), AppendError::Internal(_)));
    }
}
