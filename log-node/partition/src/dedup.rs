//! The dedup table: the outcome of recent commands that produced events, by origin.
//!
//! # Why it is bounded, and by what
//! A client retries only the commands it has not seen acknowledged: its in-flight
//! window, which the client SDK keeps well below [`DEDUP_PER_DEVICE_MAX`] commands
//! per device. A client that has been away longer than [`DEDUP_RETENTION_MS`] does
//! not resend blindly: it reconciles by reading its chat history (its own messages
//! carry their origin) and resends only what is missing. So the table keeps, per
//! `(user, device)`, at most [`DEDUP_PER_DEVICE_MAX`] outcomes, and none older than
//! [`DEDUP_RETENTION_MS`] behind the partition's newest event time. That bounds the
//! table by the partition's traffic of one day and by its number of devices, instead
//! of growing with its whole history.
//!
//! A retry that arrives after its entry was pruned or evicted is evaluated as a new
//! command (a send appends a second message).

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{ClientMsgId, DeviceId, Origin, Outcome, UserId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How long a command's outcome is remembered, relative to the newest `at_ms`
/// folded into the partition.
pub const DEDUP_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// How many outcomes are remembered per (user, device): beyond it the device's
/// oldest (smallest `at_ms`, then smallest `client_msg_id`) is evicted.
pub const DEDUP_PER_DEVICE_MAX: usize = 4096;

/// The identity of a command for idempotency: its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DedupKey {
    pub user: UserId,
    pub device: DeviceId,
    pub client_msg_id: ClientMsgId,
}

impl From<&Origin> for DedupKey {
    fn from(o: &Origin) -> Self {
        DedupKey { user: o.user, device: o.device, client_msg_id: o.client_msg_id }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    at_ms: u64,
    outcome: Outcome,
}

type DeviceKey = (UserId, DeviceId);

/// The remembered outcomes of one (user, device). Never empty inside [`Dedup`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DeviceTable {
    entries: BTreeMap<ClientMsgId, Entry>,
    by_time: BTreeSet<(u64, ClientMsgId)>,
}

impl DeviceTable {
    fn oldest_at_ms(&self) -> Option<u64> {
        self.by_time.first().map(|&(at_ms, _)| at_ms)
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.by_time.pop_first() {
            self.entries.remove(&id);
        }
    }
}

/// Outcomes by origin, bounded by age and per device.
///
/// The table is a pure function of the folded events, so a replica that replays
/// the log, or restores a snapshot, holds exactly the live table:
/// - [`Dedup::record`] is called for every folded event, with the partition's
///   `newest_at_ms` (the largest `at_ms` folded so far, kept by the state). Events
///   that carry an outcome insert it (a later event of the same command overwrites,
///   so the last event's outcome counts); if the device then has more than
///   [`DEDUP_PER_DEVICE_MAX`] entries its oldest is evicted.
/// - Every call then prunes entries with `at_ms + DEDUP_RETENTION_MS < newest_at_ms`.
///
/// Costs: entries are grouped per device, each device with its own time index, and
/// a partition-wide index orders the devices by their oldest entry. A record is a
/// lookup of the device and O(log n) in its table; the device index changes only
/// when a device's oldest entry does. Each entry is pruned or evicted once, so
/// pruning is amortized O(log n) per event. Time is each entry's own `at_ms`: a
/// leader clock that goes backwards only makes entries expire (or be evicted)
/// sooner, possibly at once.
///
/// Serialized as the entries in key order; the indexes are rebuilt on deserialize.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dedup {
    devices: BTreeMap<DeviceKey, DeviceTable>,
    /// `(oldest at_ms, device)` for every device in `devices`.
    by_oldest: BTreeSet<(u64, DeviceKey)>,
    len: usize,
}

impl Dedup {
    pub(crate) fn get(&self, origin: &Origin) -> Option<&Outcome> {
        self.devices.get(&(origin.user, origin.device))?.entries.get(&origin.client_msg_id).map(|e| &e.outcome)
    }

    pub(crate) fn record(&mut self, origin: &Origin, at_ms: u64, outcome: Option<Outcome>, newest_at_ms: u64) {
        if let Some(outcome) = outcome {
            self.insert(origin, at_ms, outcome);
        }
        self.prune(newest_at_ms);
    }

    fn insert(&mut self, origin: &Origin, at_ms: u64, outcome: Outcome) {
        let device = (origin.user, origin.device);
        let id = origin.client_msg_id;
        let table = self.devices.entry(device).or_default();
        let oldest_before = table.oldest_at_ms();
        match table.entries.insert(id, Entry { at_ms, outcome }) {
            Some(old) => {
                table.by_time.remove(&(old.at_ms, id));
            }
            None => self.len += 1,
        }
        table.by_time.insert((at_ms, id));
        if table.entries.len() > DEDUP_PER_DEVICE_MAX {
            table.pop_oldest();
            self.len -= 1;
        }
        let oldest_after = table.oldest_at_ms();
        if oldest_before != oldest_after {
            if let Some(t) = oldest_before {
                self.by_oldest.remove(&(t, device));
            }
            if let Some(t) = oldest_after {
                self.by_oldest.insert((t, device));
            }
        }
    }

    /// Forgets the entries with `at_ms + DEDUP_RETENTION_MS < newest_at_ms`.
    fn prune(&mut self, newest_at_ms: u64) {
        let horizon = newest_at_ms.saturating_sub(DEDUP_RETENTION_MS);
        while let Some(&(oldest, device)) = self.by_oldest.first() {
            if oldest >= horizon {
                break;
            }
            self.by_oldest.pop_first();
            let table = self.devices.get_mut(&device).expect("dedup: indexed device without a table");
            while table.oldest_at_ms().is_some_and(|t| t < horizon) {
                table.pop_oldest();
                self.len -= 1;
            }
            match table.oldest_at_ms() {
                Some(t) => {
                    self.by_oldest.insert((t, device));
                }
                None => {
                    self.devices.remove(&device);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The serialized form: a sequence of `(key, at_ms, outcome)` in key order, with
/// its length up front (non-self-describing formats such as bincode need it).
impl Serialize for Dedup {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for (&(user, device), table) in &self.devices {
            for (&client_msg_id, e) in &table.entries {
                seq.serialize_element(&(DedupKey { user, device, client_msg_id }, e.at_ms, &e.outcome))?;
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<(DedupKey, u64, Outcome)>::deserialize(deserializer)?;
        let mut d = Dedup::default();
        for (key, at_ms, outcome) in entries {
            let table = d.devices.entry((key.user, key.device)).or_default();
            match table.entries.insert(key.client_msg_id, Entry { at_ms, outcome }) {
                Some(old) => {
                    table.by_time.remove(&(old.at_ms, key.client_msg_id));
                }
                None => d.len += 1,
            }
            table.by_time.insert((at_ms, key.client_msg_id));
        }
        d.by_oldest =
            d.devices.iter().filter_map(|(device, table)| table.oldest_at_ms().map(|t| (t, *device))).collect();
        Ok(d)
    }
}
