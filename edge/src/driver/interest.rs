//! [`Interests`]: the bus subjects this edge takes, and for which connections.
//!
//! An edge takes only what its logged-in connections need: per connected
//! user, `chorus.joined.<user>` (the chats they join); per chat of a
//! connected user, `chorus.deliver.<chat>` (its timeline items, published once
//! per item whatever the chat's size). A subject is subscribed while at least
//! one connection holds it and unsubscribed when the last one ends.
//! (Receipt changes and account updates are still taken edge-wide, by
//! wildcard: they are per user and small.)
//!
//! # No item falls between a subscription and a sync
//! - **Login**: a connection first holds its user's `joined` subject, then
//!   reads the user's chats from the views and holds each chat's subject,
//!   and waits until the bus has every subscription (a flush) before the
//!   session goes on. The client's sync comes after: an item published before
//!   a subscription was in place was folded into the views before it was
//!   published, so the sync has it; one published after reaches the
//!   connection live.
//! - **A chat joined while connected**: the projector publishes a
//!   [`ChatJoined`] on the user's subject; every connection holding it then
//!   holds the chat's subject and, once the bus has it, is told
//!   [`Routed::Joined`]: its session fills the chat from the views (what
//!   was published before the subscription), and live items follow.
//!
//! Every change goes through one async lock: subscribing is a local call on
//! NATS (the SUB is queued on the connection), the flush after it is one
//! round trip to the server and happens outside the lock.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use chorus_bus::Subscription;
use chorus_schema::bus::{subject, ChatJoined};
use chorus_schema::{ChatId, UserId};
use tracing::{debug, warn};

use super::mailbox::Mailbox;
use super::router::Routed;
use super::Ctx;

/// One subject held by some connections.
struct Held {
    conns: HashMap<u64, Arc<Mailbox>>,
    /// Forwards the subject's messages to the router; aborted (which drops
    /// the subscription, unsubscribing) when the last connection lets go.
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    subjects: HashMap<String, Held>,
    by_conn: HashMap<u64, Vec<String>>,
}

/// The subjects this edge holds. See the module docs.
pub(crate) struct Interests {
    state: tokio::sync::Mutex<State>,
    /// Joins heard on held subjects, for [`run_joins`].
    joins: tokio::sync::mpsc::UnboundedSender<ChatJoined>,
}

/// The joins [`Interests`] hears, for [`run_joins`].
pub(crate) type Joins = tokio::sync::mpsc::UnboundedReceiver<ChatJoined>;

impl Interests {
    pub(crate) fn new() -> (Interests, Joins) {
        let (joins, rx) = tokio::sync::mpsc::unbounded_channel();
        (Interests { state: tokio::sync::Mutex::default(), joins }, rx)
    }

    /// Makes `conn` (whose mail goes to `mailbox`) hold `subjects`, and
    /// returns once the bus has every subscription. Holding a subject twice
    /// is holding it once.
    ///
    /// # Errors
    /// The bus's, if it cannot subscribe or flush.
    pub(crate) async fn hold(
        &self,
        ctx: &Arc<Ctx>,
        conn: u64,
        mailbox: &Arc<Mailbox>,
        subjects: impl IntoIterator<Item = String>,
    ) -> Result<(), chorus_bus::Error> {
        {
            let mut state = self.state.lock().await;
            let State { subjects: held, by_conn } = &mut *state;
            for s in subjects {
                let key = s.clone();
                let entry = match held.entry(s) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(v) => {
                        let subscription = ctx.bus.subscribe(v.key()).await?;
                        let task = tokio::spawn(forward(ctx.clone(), subscription));
                        v.insert(Held { conns: HashMap::new(), task })
                    }
                };
                if entry.conns.insert(conn, mailbox.clone()).is_none() {
                    by_conn.entry(conn).or_default().push(key);
                }
            }
        }
        // Even if nothing was new here: another connection may have just
        // subscribed a subject this one holds, and not flushed yet.
        ctx.bus.flush().await
    }

    /// `conn` lets go of everything it holds; subjects no one holds any
    /// more are unsubscribed.
    pub(crate) async fn release(&self, conn: u64) {
        let mut state = self.state.lock().await;
        let State { subjects, by_conn } = &mut *state;
        for s in by_conn.remove(&conn).unwrap_or_default() {
            if let Some(held) = subjects.get_mut(&s) {
                held.conns.remove(&conn);
                if held.conns.is_empty() {
                    held.task.abort();
                    subjects.remove(&s);
                }
            }
        }
    }

    /// The connections holding `subject`.
    async fn holders(&self, subject: &str) -> Vec<(u64, Arc<Mailbox>)> {
        let state = self.state.lock().await;
        state.subjects.get(subject).map_or_else(Vec::new, |h| h.conns.iter().map(|(c, m)| (*c, m.clone())).collect())
    }

    /// How many subjects are held (`None` while the lock is taken).
    pub(crate) fn subjects(&self) -> Option<usize> {
        self.state.try_lock().ok().map(|s| s.subjects.len())
    }
}

/// Everything a connection of `user` holds at login: the user's joins, then
/// every chat the views list for them. Returns once the bus has them all.
///
/// # Errors
/// When the views or the bus fail (the connection then closes, and its
/// client reconnects).
pub(crate) async fn hold_at_login(
    ctx: &Arc<Ctx>,
    conn: u64,
    mailbox: &Arc<Mailbox>,
    user: UserId,
    chats: impl std::future::Future<Output = Result<Vec<ChatId>, String>>,
) -> Result<(), String> {
    let interests = &ctx.interests;
    // Joins first: a chat joined from here on is heard of; one joined before
    // is in the views read next.
    interests.hold(ctx, conn, mailbox, [subject::joined(user)]).await.map_err(|e| e.to_string())?;
    let chats = chats.await?;
    interests.hold(ctx, conn, mailbox, chats.iter().map(subject::deliver)).await.map_err(|e| e.to_string())?;
    if mailbox.is_closed() {
        // The connection ended meanwhile, and may have released before this
        // held: release again (releasing is idempotent).
        interests.release(conn).await;
    }
    Ok(())
}

/// The messages of one held subject, to the router (deliveries) or to
/// [`run_joins`].
async fn forward(ctx: Arc<Ctx>, mut subscription: Subscription) {
    while let Some(msg) = subscription.next().await {
        if msg.subject.starts_with(subject::JOINED_PREFIX) {
            match ChatJoined::decode(&msg.payload) {
                Ok(j) => {
                    let _ = ctx.interests.joins.send(j);
                }
                Err(e) => warn!(subject = %msg.subject, error = %e, "undecodable chat join"),
            }
        } else {
            ctx.router.dispatch(&msg.subject, &msg.payload);
        }
    }
    debug!("bus subscription ended");
}

/// Carries out the joins the held subjects hear, each in a task of its own
/// (runs for the edge's life).
pub(crate) async fn run_joins(ctx: Arc<Ctx>, mut joins: Joins) {
    while let Some(j) = joins.recv().await {
        let ctx = ctx.clone();
        tokio::spawn(async move { joined(&ctx, j).await });
    }
}

/// `j.user` joined `j.chat`: every connection holding the user's joins
/// holds the chat, then catches up on it.
async fn joined(ctx: &Arc<Ctx>, j: ChatJoined) {
    let chat_subject = subject::deliver(&j.chat);
    for (conn, mailbox) in ctx.interests.holders(&subject::joined(j.user)).await {
        match ctx.interests.hold(ctx, conn, &mailbox, [chat_subject.clone()]).await {
            Ok(()) => {
                mailbox.offer(Routed::Joined(j.chat));
            }
            Err(e) => {
                // The connection would miss the chat's items: it must
                // reconnect (and sync, and hold the chat at login).
                warn!(chat = %j.chat, error = %e, "cannot take a joined chat's deliveries");
                mailbox.offer(Routed::JoinFailed(j.chat));
            }
        }
        if mailbox.is_closed() {
            ctx.interests.release(conn).await;
        }
    }
}
