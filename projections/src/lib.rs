//! The pure core of chorus projections: views as deterministic folds of
//! committed events.
//!
//! # What it does
//! Every committed event of the log is a [`chorus_schema::EventRecord`]. A
//! [`Projection`] folds one record into every view through a storage
//! transaction ([`store::Txn`]) and returns the [`Effect`]s to run once that
//! transaction has committed. The views:
//! - [`fold::roster`]: each chat's kind, last seq, members and admins, and the
//!   [`Effect::Deliver`] of each timeline item (who receives it, as of its seq).
//! - [`fold::chat_list`]: per user and chat, `last_seq`, unread messages, the last
//!   message and the chat kind.
//! - [`fold::cursors`]: per (chat, user, device), the cumulative delivered and read
//!   cursors.
//! - [`fold::receipt_status`]: per sender and chat, the aggregate ticks (sent,
//!   delivered, read) of their messages, and [`Effect::ReceiptChanged`].
//! - [`fold::inbox`]: per user and chat, the timeline items the user receives
//!   (the recipients of each [`Effect::Deliver`]) with their log offsets.
//! - [`fold::directory`]: registered users, their linked devices, and each
//!   device's live session (token hash).
//! - [`fold::receipt_log`]: per (chat, user), the steps of the user's best
//!   delivered and read cursors with their commit times ("message info": who
//!   received and read a message, and when).
//! - [`fold::contacts`]: each user's contact list (user → contact ids).
//! - [`fold::profile`]: profiles, privacy settings and blocks; a profile is
//!   answered as its reader may see it.
//! - [`fold::status`]: live status posts and their viewers, expired by the
//!   log's own time (and filtered by the reader's clock at query time).
//! - [`fold::contact_index`]: the keyed contact-sync hash of every registered
//!   phone → its user ([`Projection::with_contact_key`]).
//!
//! The same records always give the same store, byte for byte, whether folded in
//! one go, in pieces, or again after a crash: [`rebuild`] is the reference that a
//! live projector must equal (ARCHITECTURE.md invariant 6). The projector's cursor (next
//! offset per partition) is itself a key of the store, written in the same
//! transaction as the views, so a backend that commits atomically (see
//! [`store`]) makes resuming exact.
//!
//! The process around the folds is [`projector`]: it tails every partition of
//! the log from its cursor, folds batches into one RocksDB transaction
//! ([`store::RocksStore`]) with the cursor, commits, then publishes the
//! effects on the bus (`chorus_schema::bus` has the payloads and subjects) and answers
//! view queries over bus request/reply. [`rebuild_from_log`] replays the
//! whole log into a fresh store (`chorus replay --view`).
//!
//! # What it leaves out (next steps)
//! - Views of presence and last seen and of prekeys, message content (edits, deletes, reactions), and pruning of
//!   the chat list's message index.
//! - Spreading partitions over several projector processes (see [`projector`]).

//! # Module map
//! - [`store`]: the [`store::Txn`] and [`store::Store`] traits and their
//!   durability promise, [`store::keys`] (key layout of every view),
//!   [`store::MemStore`] (in memory) and [`store::RocksStore`] (RocksDB).
//! - [`fold`]: [`Effect`] and one module per view.
//! - `projection`: [`Projection`], [`Applied`], [`rebuild`], [`fold_into`].
//! - [`projector`]: [`Projector`] (`Config` → `run(shutdown)`), [`Handle`],
//!   view query answers, [`rebuild_from_log`].
//! - `error`: [`Error`], [`Result`].
//!
//! # Dataflow
//! ```text
//!  log (per partition, by offset) ──EventRecord──▶ Projection::apply(txn, record, &mut effects)
//!                                                     │ cursor check (skip < next, gap > next)
//!                                                     │ roster ─▶ cursors ─▶ chat_list ─▶ receipt_status
//!                                                     │   ─▶ inbox ─▶ directory
//!                                                     │ put cursor = offset + 1
//!                                                     ▼
//!                         txn.commit()  (views + cursor, atomically)
//!                                                     │
//!                                                     ▼
//!                         effects: Deliver / ReceiptChanged ──▶ bus (NATS) ──▶ edges
//! ```

pub mod bus_auth;
mod error;
pub mod fold;
pub mod metrics;
mod projection;
pub mod projector;
pub mod push;
pub mod replay;
pub mod seal;
pub mod store;
mod view;

pub use chorus_schema::bus::ReceiptStatus;
pub use error::{Error, Result};
pub use fold::Effect;
pub use projection::{fold_into, rebuild, rebuild_only, Applied, Projection};
pub use projector::{Config, Handle, Projector};
pub use replay::{compare, rebuild_from_log, rebuild_views_from_log, rebuild_views_with_contact_key, Comparison};
pub use view::{UnknownView, View, Views};
