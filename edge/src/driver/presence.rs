//! [`PresenceHub`]: who on this edge watches whose presence, one bus
//! subscription per watched user, and what each watcher may see.
//!
//! A connection's `SubscribePresence` names its targets. The hub subscribes
//! to `chorus.presence.<target>` once per target however many connections
//! here watch it (a reference count: the subscription ends with the last
//! watcher). The projector publishes there once per change of the target's
//! presence, and once (an `audience` update) whenever who may see it may
//! have changed: the target's privacy settings, blocks or contacts.
//!
//! **Permissions are cached per watcher.** When a watcher is added, and on
//! every `audience` update of its target, the hub asks the presence view
//! once for that (target, viewer) pair (`PresenceRequest`: the projector
//! applies the target's privacy, contacts and blocks) and keeps the answer's
//! `visible`. A presence change is then handed to every watcher whose
//! cached permission says visible, with no query per event per viewer; the
//! others get nothing. So a blocked viewer, or one outside "my contacts",
//! gets one withheld `Presence` frame when they subscribe and nothing after.
//!
//! Races: the query of a new watcher is sent only after the target's
//! subscription is in place (an update published before it is in the
//! answer), and the newest state seen on the bus is kept per target, so an
//! answer older than an update already seen does not take the watcher back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chorus_schema::bus::{subject, PresenceInfo, PresenceRequest, PresenceUpdate};
use chorus_schema::UserId;
use tracing::{debug, warn};

use super::mailbox::Mailbox;
use super::router::Routed;
use super::Ctx;

/// One connection watching one target.
struct Watcher {
    viewer: UserId,
    mailbox: Arc<Mailbox>,
    /// The presence view's verdict for (target, viewer); `None` until it answers.
    visible: Option<bool>,
    /// The last seen time last handed over (a stale answer never goes back).
    sent_ms: u64,
    /// Bumped for each query, so that only the answer of the newest counts.
    generation: u64,
}

struct Target {
    /// The bus subscription's task (aborting it unsubscribes).
    task: tokio::task::JoinHandle<()>,
    /// Whether the subscription is in place (queries wait for it).
    subscribed: bool,
    /// The newest presence seen on the bus: (online, last_seen_ms).
    latest: Option<(bool, u64)>,
    watchers: HashMap<u64, Watcher>,
}

#[derive(Default)]
struct Inner {
    targets: HashMap<UserId, Target>,
    by_conn: HashMap<u64, Vec<UserId>>,
}

/// Presence watchers of this edge (see the module docs).
#[derive(Default)]
pub(crate) struct PresenceHub {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PresenceHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = crate::lock(&self.inner);
        f.debug_struct("PresenceHub").field("targets", &inner.targets.len()).finish()
    }
}

/// A query to send: (target, conn, viewer, generation).
type Ask = (UserId, u64, UserId, u64);

impl PresenceHub {
    /// Connection `conn` of `viewer` now watches exactly `users`.
    pub(crate) fn watch(&self, ctx: &Arc<Ctx>, conn: u64, viewer: UserId, users: Vec<UserId>, mailbox: &Arc<Mailbox>) {
        let mut asks = Vec::new();
        {
            let mut inner = crate::lock(&self.inner);
            let old = inner.by_conn.remove(&conn).unwrap_or_default();
            for t in old.iter().filter(|t| !users.contains(t)) {
                inner.drop_watcher(*t, conn);
            }
            for user in &users {
                let target = inner.targets.entry(*user).or_insert_with(|| Target {
                    task: tokio::spawn(subscription(ctx.clone(), *user)),
                    subscribed: false,
                    latest: None,
                    watchers: HashMap::new(),
                });
                // Every listed target's state now, also for one watched already.
                let w = target.watchers.entry(conn).or_insert_with(|| Watcher {
                    viewer,
                    mailbox: mailbox.clone(),
                    visible: None,
                    sent_ms: 0,
                    generation: 0,
                });
                w.visible = None;
                w.generation += 1;
                if target.subscribed {
                    asks.push((*user, conn, viewer, w.generation));
                }
            }
            if !users.is_empty() {
                inner.by_conn.insert(conn, users);
            }
        }
        ask_all(ctx, asks);
    }

    /// Connection `conn` ended: it watches nothing.
    pub(crate) fn unwatch(&self, conn: u64) {
        let mut inner = crate::lock(&self.inner);
        for t in inner.by_conn.remove(&conn).unwrap_or_default() {
            inner.drop_watcher(t, conn);
        }
    }

    /// Targets with a subscription (tests, stats).
    pub(crate) fn targets(&self) -> usize {
        crate::lock(&self.inner).targets.len()
    }

    /// The subscription of `target` is in place: ask for its watchers.
    fn subscribed(&self, ctx: &Arc<Ctx>, target: UserId) {
        let mut asks = Vec::new();
        {
            let mut inner = crate::lock(&self.inner);
            let Some(t) = inner.targets.get_mut(&target) else { return };
            t.subscribed = true;
            for (conn, w) in &mut t.watchers {
                w.generation += 1;
                asks.push((target, *conn, w.viewer, w.generation));
            }
        }
        ask_all(ctx, asks);
    }

    /// A message of `chorus.presence.<target>`.
    fn update(&self, ctx: &Arc<Ctx>, update: PresenceUpdate) {
        let mut asks = Vec::new();
        {
            let mut inner = crate::lock(&self.inner);
            let Some(t) = inner.targets.get_mut(&update.user) else { return };
            if update.audience {
                for (conn, w) in &mut t.watchers {
                    w.generation += 1;
                    asks.push((update.user, *conn, w.viewer, w.generation));
                }
            } else {
                if t.latest.is_none_or(|(_, ms)| ms <= update.last_seen_ms) {
                    t.latest = Some((update.online, update.last_seen_ms));
                }
                for w in t.watchers.values_mut() {
                    if w.visible == Some(true) && update.last_seen_ms >= w.sent_ms {
                        w.sent_ms = update.last_seen_ms;
                        offer(&w.mailbox, update.user, true, update.online, update.last_seen_ms);
                    }
                }
            }
        }
        ask_all(ctx, asks);
    }

    /// The presence view's answer for a watcher.
    fn answered(&self, target: UserId, conn: u64, generation: u64, info: PresenceInfo) {
        let mut inner = crate::lock(&self.inner);
        let Some(t) = inner.targets.get_mut(&target) else { return };
        let latest = t.latest;
        let Some(w) = t.watchers.get_mut(&conn) else { return };
        if w.generation != generation {
            return;
        }
        let was = w.visible.replace(info.visible);
        if info.visible {
            // The newer of the answer and what the bus said since.
            let (online, ms) = match latest {
                Some((online, ms)) if ms > info.last_seen_ms => (online, ms),
                _ => (info.online, info.last_seen_ms),
            };
            if ms >= w.sent_ms || was != Some(true) {
                w.sent_ms = ms;
                offer(&w.mailbox, target, true, online, ms);
            }
        } else if was != Some(false) {
            w.sent_ms = 0;
            offer(&w.mailbox, target, false, false, 0);
        }
    }
}

impl Inner {
    fn drop_watcher(&mut self, target: UserId, conn: u64) {
        if let Some(t) = self.targets.get_mut(&target) {
            t.watchers.remove(&conn);
            if t.watchers.is_empty() {
                t.task.abort();
                self.targets.remove(&target);
            }
        }
    }
}

fn offer(mailbox: &Mailbox, user: UserId, visible: bool, online: bool, last_seen_ms: u64) {
    // A full mailbox marks the connection lagged (it closes and resyncs);
    // presence is state, so the client gets it again when it resubscribes.
    let _ = mailbox.offer(Routed::Presence { user, visible, online, last_seen_ms });
}

fn ask_all(ctx: &Arc<Ctx>, asks: Vec<Ask>) {
    for (target, conn, viewer, generation) in asks {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match super::views::query(&ctx, PresenceRequest { user: target, viewer }).await {
                Ok(info) => ctx.presence.answered(target, conn, generation, info),
                Err(e) => debug!(%target, error = %e, "presence query failed"),
            }
        });
    }
}

/// The bus subscription of one target, until the hub aborts it.
async fn subscription(ctx: Arc<Ctx>, target: UserId) {
    let mut sub = match ctx.bus.subscribe(&subject::presence(target)).await {
        Ok(s) => s,
        Err(e) => return warn!(%target, error = %e, "presence subscription failed"),
    };
    ctx.presence.subscribed(&ctx, target);
    while let Some(msg) = sub.next().await {
        match PresenceUpdate::decode(&msg.payload) {
            Ok(update) if update.user == target => ctx.presence.update(&ctx, update),
            Ok(update) => warn!(%target, user = %update.user, "presence update of another user"),
            Err(e) => warn!(%target, error = %e, "undecodable presence update"),
        }
    }
}
