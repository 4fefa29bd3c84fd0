//! [`View`]: the views by name, with the key families each owns and the views
//! its fold reads; [`Views`]: a set of them, for a [`Projection`](crate::Projection)
//! that folds only some (the replay of one view).

use std::fmt;
use std::str::FromStr;

use crate::store::keys;

/// One view of the store (see [`crate::fold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum View {
    Roster,
    Cursors,
    ChatList,
    ReceiptStatus,
    Inbox,
    Directory,
    ReceiptLog,
    // issue 12
    Presence,
    Privacy,
    Contacts,
    Profile,
    Status,
    ContactIndex,
    // ---- push and reports (issue 14) ----
    PushTokens,
    Reports,
    // ---- media (issue 14) ----
    Media,
}

impl View {
    /// Every view, in the order a projection folds them.
    pub const ALL: [View; 16] = [
        View::Roster,
        View::Cursors,
        View::ChatList,
        View::ReceiptStatus,
        View::Inbox,
        View::Directory,
        View::ReceiptLog,
        View::Presence,
        View::Privacy,
        View::Contacts,
        View::Profile,
        View::Status,
        View::ContactIndex,
        View::PushTokens,
        View::Reports,
        View::Media,
    ];

    /// The view's name (`chorus replay --view <name>`).
    pub fn name(self) -> &'static str {
        match self {
            View::Roster => "roster",
            View::Cursors => "cursors",
            View::ChatList => "chat_list",
            View::ReceiptStatus => "receipt_status",
            View::Inbox => "inbox",
            View::Directory => "directory",
            View::ReceiptLog => "receipt_log",
            View::Presence => "presence",
            View::Privacy => "privacy",
            View::Contacts => "contacts",
            View::Profile => "profile",
            View::Status => "status",
            View::ContactIndex => "contact_index",
            View::PushTokens => "push_tokens",
            View::Reports => "reports",
            View::Media => "media",
        }
    }

    /// The tags of the key families the view owns (see [`keys`]): its keys
    /// are exactly those whose first byte is one of them.
    pub fn tags(self) -> &'static [u8] {
        match self {
            View::Roster => &[keys::ROSTER_CHAT, keys::ROSTER_MEMBER, keys::ROSTER_INFO],
            View::Cursors => &[keys::CURSORS],
            View::ChatList => &[keys::CHAT_LIST, keys::MESSAGES],
            View::ReceiptStatus => &[keys::TICKS, keys::PENDING],
            View::Inbox => &[keys::INBOX],
            View::Directory => &[keys::USERS, keys::DEVICES, keys::DEVICE_INFO, keys::DEVICE_KEYS],
            View::ReceiptLog => &[keys::RECEIPT_BEST, keys::RECEIPT_STEP],
            View::Presence => &[keys::PRESENCE],
            View::Privacy => &[keys::PRIVACY, keys::BLOCKS],
            View::Contacts => &[keys::CONTACTS],
            View::Profile => &[keys::PROFILE, keys::PROFILE_BLOCKS],
            View::Status => &[keys::STATUS, keys::STATUS_EXPIRY],
            View::ContactIndex => &[keys::CONTACT_INDEX],
            View::PushTokens => &[keys::PUSH_TOKENS],
            View::Reports => &[keys::REPORT_SUMMARY, keys::REPORTS],
            View::Media => &[crate::fold::media::MEDIA, crate::fold::media::MEDIA_HOLDER],
        }
    }

    /// The views whose keys this view's fold reads: they must be folded with
    /// it, before it, for it to be right.
    pub fn reads(self) -> &'static [View] {
        match self {
            View::ChatList | View::Inbox => &[View::Roster],
            View::ReceiptStatus => &[View::Roster, View::Cursors],
            // The social views read each other only when answering queries.
            View::Roster
            | View::Cursors
            | View::Directory
            | View::ReceiptLog
            | View::Presence
            | View::Privacy
            | View::Contacts
            | View::Profile
            | View::Status
            | View::ContactIndex
            | View::PushTokens
            | View::Reports
            | View::Media => &[],
        }
    }

    /// Whether `key` is one of this view's keys.
    pub fn owns(self, key: &[u8]) -> bool {
        key.first().is_some_and(|tag| self.tags().contains(tag))
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no view is named {name:?} (views: roster, cursors, chat_list, receipt_status, inbox, directory, receipt_log, presence, privacy, contacts, profile, status, contact_index, push_tokens, reports, media)"
)]
pub struct UnknownView {
    pub name: String,
}

impl FromStr for View {
    type Err = UnknownView;

    fn from_str(s: &str) -> Result<View, UnknownView> {
        View::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| UnknownView { name: s.to_string() })
    }
}

/// A set of views.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Views(u32);

impl Views {
    /// Every view.
    pub fn all() -> Views {
        View::ALL.into_iter().collect()
    }

    /// Just `view`.
    pub fn one(view: View) -> Views {
        Views(view.bit())
    }

    /// Whether `view` is in the set.
    pub fn contains(self, view: View) -> bool {
        self.0 & view.bit() != 0
    }

    /// Whether the set is every view.
    pub fn is_all(self) -> bool {
        self == Views::all()
    }

    /// The set with every view that a view of it reads (transitively): what a
    /// projection must fold to build these views right.
    #[must_use]
    pub fn with_reads(self) -> Views {
        let mut out = self;
        loop {
            let more: Views = out.iter().flat_map(|v| v.reads().iter().copied()).chain(out.iter()).collect();
            if more == out {
                return out;
            }
            out = more;
        }
    }

    /// The views of the set, in fold order.
    pub fn iter(self) -> impl Iterator<Item = View> {
        View::ALL.into_iter().filter(move |v| self.contains(*v))
    }

    /// Whether `key` belongs to a view of the set.
    pub fn owns(self, key: &[u8]) -> bool {
        self.iter().any(|v| v.owns(key))
    }
}

impl FromIterator<View> for Views {
    fn from_iter<I: IntoIterator<Item = View>>(iter: I) -> Views {
        Views(iter.into_iter().fold(0, |bits, v| bits | v.bit()))
    }
}

impl fmt::Debug for Views {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// `all`, or the names joined by `,`.
impl fmt::Display for Views {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.iter().map(View::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Parses `all` or one or more view names joined by `,`.
impl FromStr for Views {
    type Err = UnknownView;

    fn from_str(s: &str) -> Result<Views, UnknownView> {
        if s == "all" {
            return Ok(Views::all());
        }
        s.split(',').map(View::from_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_families_are_disjoint() {
        let mut tags = std::collections::BTreeSet::new();
        for v in View::ALL {
            assert_eq!(v.name().parse::<View>().unwrap(), v);
            for t in v.tags() {
                assert!(tags.insert(*t), "tag {t:#x} owned twice");
                assert!(v.owns(&[*t, 1, 2]));
            }
            assert!(!v.owns(&[keys::APPLIED, 0, 1]), "the cursor is no view's");
            assert!(!v.owns(&[]));
        }
        assert!("inboxes".parse::<View>().is_err());
        assert_eq!("all".parse::<Views>().unwrap(), Views::all());
        let two: Views = "inbox,roster".parse().unwrap();
        assert_eq!(two.iter().collect::<Vec<_>>(), vec![View::Roster, View::Inbox]);
        assert_eq!(two.to_string(), "roster,inbox");
        assert_eq!(Views::all().to_string(), "all");
        assert!("roster,".parse::<Views>().is_err());
    }

    #[test]
    fn reads_close_over_dependencies() {
        assert_eq!(Views::one(View::Directory).with_reads(), Views::one(View::Directory));
        assert_eq!(
            Views::one(View::ReceiptStatus).with_reads(),
            [View::Roster, View::Cursors, View::ReceiptStatus].into_iter().collect()
        );
        assert_eq!(Views::one(View::Inbox).with_reads(), [View::Roster, View::Inbox].into_iter().collect());
        assert_eq!(Views::all().with_reads(), Views::all());
        // A view reads only views folded before it.
        for v in View::ALL {
            for r in v.reads() {
                assert!(r < &v, "{v} reads {r}, folded after it");
            }
        }
    }
}
