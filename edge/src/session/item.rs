//! [`Item`]: one timeline item as the connections of an edge share it.
//!
//! An item reaches an edge once (one bus message, or one log read of a sync
//! or a fill) and may go to many connections: every device of every
//! recipient logged in here. So it is decoded once, its `Deliver` frame is
//! encoded once (length prefix included, [`chorus_schema::edge::deliver_frame`]),
//! and each connection holds an [`Arc`] of it: no connection copies the
//! record or its ciphertext, and the frame bytes go to each delivery stream
//! as the same [`Bytes`].

use std::sync::Arc;

use bytes::Bytes;
use chorus_schema::{ChatId, EventRecord, Seq, ServerFrame};

/// A committed timeline item and its frame. See the module docs.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    record: EventRecord,
    /// The `Deliver` frame with its length prefix; `None` for items that are
    /// not messages (membership changes, receipts, …): they only move the
    /// timeline.
    frame: Option<Bytes>,
}

impl Item {
    /// Wraps `record`, encoding its frame.
    pub fn new(record: EventRecord) -> Arc<Item> {
        let frame = chorus_schema::edge::deliver_frame(&record);
        Arc::new(Item { record, frame })
    }

    pub fn record(&self) -> &EventRecord {
        &self.record
    }

    /// The length-prefixed `Deliver` frame, for a message.
    pub fn frame(&self) -> Option<&Bytes> {
        self.frame.as_ref()
    }

    /// The frame decoded again (tests and logs: the driver writes [`Item::frame`]).
    pub fn server_frame(&self) -> Option<ServerFrame> {
        ServerFrame::decode(self.frame.as_ref()?.get(4..)?).ok()
    }

    /// The item's place in its chat.
    pub(crate) fn position(&self) -> Option<(ChatId, Seq)> {
        Some((self.record.event.body.chat()?, self.record.event.body.seq()?))
    }

    /// Bytes the item is charged in queues: its ciphertext and a generous
    /// allowance for the rest (ids, seqs, the frame around it).
    pub fn weight(&self) -> usize {
        use chorus_schema::EventBody::{MessageEdited, MessageSent};
        256 + match &self.record.event.body {
            MessageSent { ciphertext, .. } | MessageEdited { ciphertext, .. } => ciphertext.len(),
            _ => 0,
        }
    }
}
