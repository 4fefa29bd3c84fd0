//! [`Projection`]: every view (or some) over one event in one transaction,
//! with the projector's cursor; [`rebuild`]: a fresh in-memory fold of a log.

use chorus_schema::{EventRecord, Offset, PartitionId};

use crate::fold::{
    chat_list, contact_index, contacts, cursors, directory, inbox, media, presence, privacy, profile, receipt_log,
    receipt_status, roster, status, Effect,
};
use crate::store::{get_value, keys, put_value, MemStore, Store, Txn};
use crate::view::{View, Views};
use crate::{Error, Result};

/// What [`Projection::apply`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Folded into every view; the cursor moved past it.
    Folded,
    /// Below the cursor: folded before (a re-read after a restart); nothing changed.
    AlreadyFolded,
}

/// Runs every view (or a set of them, see [`Projection::only`]), in their
/// fixed order, over one committed event.
///
/// Stateless: all state is in the store, so one value serves any number of
/// partitions and transactions.
#[derive(Clone, Copy, Debug)]
pub struct Projection {
    views: Views,
    /// The deployment's contact-sync key ([`contact_index`]); all zero by default.
    contact_key: [u8; 32],
}

impl Default for Projection {
    fn default() -> Projection {
        Projection { views: Views::all(), contact_key: [0; 32] }
    }
}

impl Projection {
    /// Folds every view: what a projector runs.
    pub fn new() -> Projection {
        Projection::default()
    }

    /// Folds `views` and the views they read ([`Views::with_reads`]), and no
    /// other. Each of `views` comes out as in a projection of every view: a
    /// view's keys depend only on the events and the views it reads. The
    /// effects are those of the folded views. For the replay of one view.
    pub fn only(views: Views) -> Projection {
        Projection { views: views.with_reads(), contact_key: [0; 32] }
    }

    /// The same projection with the deployment's contact-sync key (what the
    /// contact index hashes phone numbers with: a projector and a replay that
    /// must agree use the same key).
    #[must_use]
    pub fn with_contact_key(self, contact_key: [u8; 32]) -> Projection {
        Projection { contact_key, ..self }
    }

    /// The views this projection folds.
    pub fn views(&self) -> Views {
        self.views
    }

    /// Folds `record` into every view within `txn` and moves the cursor of its
    /// partition ([`keys::applied`]) past it, in the same transaction; pushes the
    /// record's effects to `effects` (nothing on error or when already folded).
    ///
    /// Records must come in offset order per partition, starting at the cursor
    /// ([`Projection::next_offset`], 0 for a partition never folded). A record
    /// below the cursor is skipped, so a projector may re-read from any point at
    /// or before its cursor. Several records may share one transaction.
    ///
    /// The caller commits `txn` and only then runs the effects; on error it drops
    /// the transaction (its writes may be partial) and the effects.
    ///
    /// # Errors
    /// [`Error::OffsetGap`] for a record above the cursor; [`Error::Inconsistent`]
    /// for an event that contradicts the views; [`Error::Store`] if the store fails.
    pub fn apply<T: Txn + ?Sized>(
        &self,
        txn: &mut T,
        record: &EventRecord,
        effects: &mut Vec<Effect>,
    ) -> Result<Applied> {
        let cursor = keys::applied(record.partition);
        let next: Offset = get_value(txn, &cursor)?.unwrap_or_default();
        if record.offset < next {
            return Ok(Applied::AlreadyFolded);
        }
        if record.offset > next {
            return Err(Error::OffsetGap { partition: record.partition, expected: next, got: record.offset });
        }
        let mut out = Vec::new();
        // The order matters (`Views::iter` is `View::ALL`'s order): the chat
        // list, the ticks and the inbox read the roster after the event, and the
        // ticks read the cursors after it.
        for view in self.views.iter() {
            match view {
                View::Roster => roster::apply(txn, record, &mut out)?,
                View::Cursors => cursors::apply(txn, record, &mut out)?,
                View::ChatList => chat_list::apply(txn, record, &mut out)?,
                View::ReceiptStatus => receipt_status::apply(txn, record, &mut out)?,
                View::Inbox => inbox::apply(txn, record, &mut out)?,
                View::Directory => directory::apply(txn, record, &mut out)?,
                View::ReceiptLog => receipt_log::apply(txn, record, &mut out)?,
                View::Presence => presence::apply(txn, record, &mut out)?,
                View::Privacy => privacy::apply(txn, record, &mut out)?,
                View::Contacts => contacts::apply(txn, record, &mut out)?,
                View::Profile => profile::apply(txn, record, &mut out)?,
                View::Status => status::apply(txn, record, &mut out)?,
                View::ContactIndex => contact_index::apply(txn, &self.contact_key, record, &mut out)?,
                // ---- push and reports (issue 14) ----
                View::PushTokens => crate::fold::push_tokens::apply(txn, record, &mut out)?,
                View::Reports => crate::fold::reports::apply(txn, record, &mut out)?,
                View::Media => media::apply(txn, record, &mut out)?,
            }
        }
        put_value(txn, &cursor, &next.next());
        effects.append(&mut out);
        Ok(Applied::Folded)
    }

    /// The next offset of `partition` to fold: one past the last folded record.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub fn next_offset<T: Txn + ?Sized>(txn: &T, partition: PartitionId) -> Result<Offset> {
        Ok(get_value(txn, &keys::applied(partition))?.unwrap_or_default())
    }
}

/// Folds `records` into `store` (either backend), one committed transaction per
/// record, and collects their effects into `effects`.
///
/// # Errors
/// As [`Projection::apply`], or a failed commit; the records before the
/// failing one stay committed.
pub fn fold_into<'a, S: Store>(
    store: &mut S,
    records: impl IntoIterator<Item = &'a EventRecord>,
    effects: &mut Vec<Effect>,
) -> Result<()> {
    fold_with(Projection::new(), store, records, effects)
}

fn fold_with<'a, S: Store>(
    projection: Projection,
    store: &mut S,
    records: impl IntoIterator<Item = &'a EventRecord>,
    effects: &mut Vec<Effect>,
) -> Result<()> {
    for record in records {
        let mut txn = store.begin_txn();
        let mut out = Vec::new();
        projection.apply(&mut txn, record, &mut out)?;
        S::commit_txn(txn)?;
        effects.append(&mut out);
    }
    Ok(())
}

/// A fresh in-memory fold of `records` (effects off): what every view is after
/// these events. Equal to the live views at the same cursor (ARCHITECTURE.md invariant 6).
///
/// # Errors
/// As [`Projection::apply`].
pub fn rebuild<'a>(records: impl IntoIterator<Item = &'a EventRecord>) -> Result<MemStore> {
    let mut store = MemStore::new();
    fold_into(&mut store, records, &mut Vec::new())?;
    Ok(store)
}

/// A fresh in-memory fold of `records` for `views` only (effects off): the
/// entries of those views, equal to theirs in [`rebuild`], and the cursors;
/// the views they read are folded too, then dropped.
///
/// # Errors
/// As [`Projection::apply`].
pub fn rebuild_only<'a>(records: impl IntoIterator<Item = &'a EventRecord>, views: Views) -> Result<MemStore> {
    let mut store = MemStore::new();
    fold_with(Projection::only(views), &mut store, records, &mut Vec::new())?;
    let read_only: Vec<Vec<u8>> = store
        .entries()
        .filter(|(k, _)| k.first() != Some(&keys::APPLIED) && !views.owns(k))
        .map(|(k, _)| k.to_vec())
        .collect();
    let mut txn = store.begin();
    for k in read_only {
        txn.delete(&k);
    }
    txn.commit();
    Ok(store)
}
