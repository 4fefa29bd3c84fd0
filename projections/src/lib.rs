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
//!
//! The same records always give the same store, byte for byte, whether folded in
//! one go, in pieces, or again after a crash: [`rebuild`] is the reference that a
//! live projector must equal (DESIGN invariant 6). The projector's cursor (next
//! offset per partition) is itself a key of the store, written in the same
//! transaction as the views, so a backend that commits atomically (see
//! [`store`]) makes resuming exact.
//!
//! # What it leaves out (next steps)
//! - **RocksDB backend**: a [`store::Txn`] over a `WriteBatchWithIndex` (reads see
//!   the batch), one batch per commit, passing the same tests as [`store::MemStore`].
//! - **Projector process**: tails each partition's committed log from
//!   [`Projection::next_offset`], folds batches of records into one transaction,
//!   commits, then runs the effects; skips nothing and needs no dedup because the
//!   cursor commits with the views.
//! - **Bus publication**: turning [`Effect::Deliver`] and
//!   [`Effect::ReceiptChanged`] into NATS messages (`projections/bus`).
//! - **View queries over NATS**: request/reply on top of the read functions of each
//!   view module (`chat_list::list`, `roster::members`, `receipt_status::status`…).
//! - Views of user-partition events (profiles, presence and last seen, status
//!   feeds, prekeys), message content (edits, deletes, reactions), and pruning of
//!   the chat list's message index.
//!
//! # Module map
//! - [`store`]: the [`store::Txn`] trait and its durability promise, [`store::keys`]
//!   (key layout of every view), [`store::MemStore`] (in-memory backend).
//! - [`fold`]: [`Effect`] and one module per view.
//! - `projection`: [`Projection`], [`Applied`], [`rebuild`], [`fold_into`].
//! - `error`: [`Error`], [`Result`].
//!
//! # Dataflow
//! ```text
//!  log (per partition, by offset) ──EventRecord──▶ Projection::apply(txn, record, &mut effects)
//!                                                     │ cursor check (skip < next, gap > next)
//!                                                     │ roster ─▶ cursors ─▶ chat_list ─▶ receipt_status
//!                                                     │ put cursor = offset + 1
//!                                                     ▼
//!                         txn.commit()  (views + cursor, atomically)
//!                                                     │
//!                                                     ▼
//!                         effects: Deliver / ReceiptChanged ──▶ bus (NATS) ──▶ edges
//! ```

mod error;
pub mod fold;
mod projection;
pub mod store;

pub use error::{Error, Result};
pub use fold::receipt_status::Status as ReceiptStatus;
pub use fold::Effect;
pub use projection::{fold_into, rebuild, Applied, Projection};
