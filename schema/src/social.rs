//! Profiles, status posts and contact sync: the values the edge frames and the
//! view answers share, the audience rule of a status, and the contact hash.
//!
//! The flatbuffers tables (`Profile`, `StatusList`, `ContactsMatched` of
//! `edge.fbs`) are both server frames and view answers (`bus.fbs` names them
//! `ProfileInfo`, `StatusPage`, `ContactMatches`), so their encoders and
//! decoders live here once.

use flatbuffers::WIPOffset;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Builder};
use crate::error::check_len;
use crate::fb;
use crate::fb::edge as fe;
use crate::ids::{ClientMsgId, UserId};
use crate::limits::{MAX_ABOUT_BYTES, MAX_ACL, MAX_CIPHERTEXT_BYTES, MAX_NAME_BYTES};
use crate::types::MediaRef;
use crate::{Error, Result};

/// Phone hashes one `SyncContacts` frame may carry.
pub const MAX_CONTACT_HASHES_PER_SYNC: usize = 1000;
/// Status posts one list answer carries at most (the newest first are kept).
pub const MAX_STATUS_LIST: usize = 256;

/// Who sees a status post (with the post's user list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StatusAudience {
    /// Only the listed users (contacts or not).
    OnlyShareWith,
    /// The poster's contacts (the list is ignored).
    Contacts,
    /// The poster's contacts but the listed ones.
    ContactsExcept,
}

impl StatusAudience {
    /// Whether `viewer` may see a post with this audience and `list` (sorted),
    /// when `is_contact` says whether the viewer is in the poster's contact list.
    /// Blocks are checked apart: a blocked user sees nothing whatever the audience.
    pub fn admits(self, viewer: UserId, list: &[UserId], is_contact: bool) -> bool {
        match self {
            StatusAudience::OnlyShareWith => list.binary_search(&viewer).is_ok(),
            StatusAudience::Contacts => is_contact,
            StatusAudience::ContactsExcept => is_contact && list.binary_search(&viewer).is_err(),
        }
    }

    pub(crate) fn to_fb(self) -> fb::StatusAudience {
        match self {
            StatusAudience::OnlyShareWith => fb::StatusAudience::OnlyShareWith,
            StatusAudience::Contacts => fb::StatusAudience::Contacts,
            StatusAudience::ContactsExcept => fb::StatusAudience::ContactsExcept,
        }
    }

    pub(crate) fn from_fb(a: fb::StatusAudience) -> Result<StatusAudience> {
        match a {
            fb::StatusAudience::OnlyShareWith => Ok(StatusAudience::OnlyShareWith),
            fb::StatusAudience::Contacts => Ok(StatusAudience::Contacts),
            fb::StatusAudience::ContactsExcept => Ok(StatusAudience::ContactsExcept),
            other => Err(Error::malformed("status audience", format!("unknown value {}", other.0))),
        }
    }
}

/// A profile as one user may see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub user: UserId,
    /// Whether the user ever set a profile.
    pub found: bool,
    pub name: String,
    /// `None`: hidden (privacy or a block) or never set.
    pub about: Option<String>,
    /// `None`: hidden (privacy or a block) or never set.
    pub avatar: Option<MediaRef>,
}

/// One live status post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub author: UserId,
    pub status_id: u64,
    pub posted_at_ms: u64,
    pub expires_at_ms: u64,
    pub ciphertext: Vec<u8>,
    pub media: Option<MediaRef>,
    /// Who viewed it, in id order: only in the author's own list.
    pub viewers: Vec<UserId>,
}

/// A registered user whose phone hash was uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactMatch {
    pub hash: [u8; 32],
    pub user: UserId,
}

/// The contact-sync hash of a phone number: `blake3::keyed_hash(key, E.164)`.
/// The key is the deployment's (edges hand it out in `LoggedIn`).
///
/// # Errors
/// As [`crate::edge::normalize_phone`].
pub fn contact_hash(key: &[u8; 32], phone: &str) -> Result<[u8; 32]> {
    let phone = crate::edge::normalize_phone(phone)?;
    Ok(*blake3::keyed_hash(key, phone.as_bytes()).as_bytes())
}

/// The deployment's contact-sync key, derived from a secret of the deployment
/// (the view key): one-way, so handing it to clients reveals nothing of the secret.
pub fn derive_contact_key(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("chorus 2026 contact sync key v1", secret)
}

// ---- flatbuffers --------------------------------------------------------------------

pub(crate) fn profile_fb<'a>(fbb: &mut Builder<'a>, id: ClientMsgId, p: &Profile) -> WIPOffset<fe::Profile<'a>> {
    let name = fbb.create_string(&p.name);
    let about = p.about.as_ref().map(|a| fbb.create_string(a));
    let avatar = codec::opt_media_fb(fbb, &p.avatar);
    fe::Profile::create(
        fbb,
        &fe::ProfileArgs { client_msg_id: id.0, user: p.user.0, found: p.found, name: Some(name), about, avatar },
    )
}

pub(crate) fn profile(p: fe::Profile<'_>) -> Result<Profile> {
    let name = p.name().unwrap_or_default().to_owned();
    check_len("profile name", name.len(), MAX_NAME_BYTES)?;
    let about = p.about().map(str::to_owned);
    check_len("profile about", about.as_ref().map_or(0, String::len), MAX_ABOUT_BYTES)?;
    let avatar = codec::opt_media(p.avatar());
    if let Some(a) = &avatar {
        a.validate()?;
    }
    Ok(Profile { user: UserId(p.user()), found: p.found(), name, about, avatar })
}

pub(crate) fn status_list_fb<'a>(
    fbb: &mut Builder<'a>,
    id: ClientMsgId,
    entries: &[StatusEntry],
) -> WIPOffset<fe::StatusList<'a>> {
    let items: Vec<_> = entries
        .iter()
        .map(|e| {
            let ciphertext = fbb.create_vector(&e.ciphertext);
            let media = codec::opt_media_fb(fbb, &e.media);
            let viewers = (!e.viewers.is_empty()).then(|| codec::users_fb(fbb, &e.viewers));
            fe::StatusEntry::create(
                fbb,
                &fe::StatusEntryArgs {
                    author: e.author.0,
                    status_id: e.status_id,
                    posted_at_ms: e.posted_at_ms,
                    expires_at_ms: e.expires_at_ms,
                    ciphertext: Some(ciphertext),
                    media,
                    viewers,
                },
            )
        })
        .collect();
    let entries = fbb.create_vector(&items);
    fe::StatusList::create(fbb, &fe::StatusListArgs { client_msg_id: id.0, entries: Some(entries) })
}

pub(crate) fn status_list(l: fe::StatusList<'_>) -> Result<Vec<StatusEntry>> {
    check_len("status list", l.entries().len(), MAX_STATUS_LIST)?;
    l.entries()
        .iter()
        .map(|e| {
            check_len("ciphertext", e.ciphertext().len(), MAX_CIPHERTEXT_BYTES)?;
            let viewers = e.viewers().map(codec::users).unwrap_or_default();
            check_len("status viewers", viewers.len(), MAX_ACL)?;
            Ok(StatusEntry {
                author: UserId(e.author()),
                status_id: e.status_id(),
                posted_at_ms: e.posted_at_ms(),
                expires_at_ms: e.expires_at_ms(),
                ciphertext: e.ciphertext().bytes().to_vec(),
                media: codec::opt_media(e.media()),
                viewers,
            })
        })
        .collect()
}

pub(crate) fn matches_fb<'a>(
    fbb: &mut Builder<'a>,
    id: ClientMsgId,
    matches: &[ContactMatch],
) -> WIPOffset<fe::ContactsMatched<'a>> {
    let items: Vec<fe::ContactMatch> =
        matches.iter().map(|m| fe::ContactMatch::new(&fb::Blake3Digest(m.hash), m.user.0)).collect();
    let matches = fbb.create_vector(&items);
    fe::ContactsMatched::create(fbb, &fe::ContactsMatchedArgs { client_msg_id: id.0, matches: Some(matches) })
}

pub(crate) fn matches(m: fe::ContactsMatched<'_>) -> Result<Vec<ContactMatch>> {
    check_len("contact matches", m.matches().len(), MAX_CONTACT_HASHES_PER_SYNC)?;
    Ok(m.matches().iter().map(|c| ContactMatch { hash: c.hash().0, user: UserId(c.user()) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        let (a, b, c) = (UserId(1), UserId(2), UserId(3));
        let list = [a, c];
        assert!(StatusAudience::OnlyShareWith.admits(a, &list, false));
        assert!(!StatusAudience::OnlyShareWith.admits(b, &list, true));
        assert!(StatusAudience::Contacts.admits(b, &list, true));
        assert!(!StatusAudience::Contacts.admits(b, &list, false));
        assert!(StatusAudience::ContactsExcept.admits(b, &list, true));
        assert!(!StatusAudience::ContactsExcept.admits(a, &list, true));
        assert!(!StatusAudience::ContactsExcept.admits(b, &list, false));
    }

    #[test]
    fn contact_hash_normalizes_and_depends_on_the_key() {
        let k = derive_contact_key(b"secret");
        assert_eq!(contact_hash(&k, "+1 555 010 0001").unwrap(), contact_hash(&k, "+15550100001").unwrap());
        assert_ne!(contact_hash(&k, "+15550100001").unwrap(), contact_hash(&[0; 32], "+15550100001").unwrap());
        assert!(contact_hash(&k, "nope").is_err());
    }
}
