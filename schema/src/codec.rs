//! Shared plumbing between the domain types and the generated flatbuffers code.

use flatbuffers::{FlatBufferBuilder, Follow, ForwardsUOffset, Vector, Verifiable, VerifierOptions, WIPOffset};

use crate::fb;
use crate::ids::{ChatId, Seq, UserId};
use crate::types::{MediaRef, Origin, Prekey, ReceiptKind, Visibility};
use crate::{ClientMsgId, DeviceId, Error, Result};

/// File identifiers (bytes 4..8 of a buffer) of each root type, so that a buffer of
/// one type is never decoded as another.
pub(crate) mod ident {
    pub(crate) const COMMAND: &str = "CCMD";
    pub(crate) const EVENT: &str = "CEVT";
    pub(crate) const EVENT_RECORD: &str = "CREC";
    pub(crate) const COMMAND_RESULT: &str = "CRES";
    pub(crate) const REQUEST: &str = "CREQ";
    pub(crate) const RESPONSE: &str = "CRSP";
}

/// Verifies `buf` as a `T` root: size limit, file identifier, then the flatbuffers
/// verifier bounded by `limit` bytes and `max_tables` tables.
pub(crate) fn root<'b, T>(
    buf: &'b [u8],
    what: &'static str,
    ident: &str,
    limit: usize,
    max_tables: usize,
) -> Result<T::Inner>
where
    T: 'b + Follow<'b> + Verifiable,
{
    crate::error::check_len(what, buf.len(), limit)?;
    if buf.get(4..8) != Some(ident.as_bytes()) {
        return Err(Error::malformed(what, format!("missing file identifier {ident:?}")));
    }
    let opts = VerifierOptions {
        max_depth: crate::limits::VERIFIER_MAX_DEPTH,
        max_tables,
        // The verifier counts a shared vtable once per table that uses it, so the
        // apparent size of a legitimate buffer slightly exceeds its length; twice the
        // limit still bounds what a crafted DAG can make a decoder allocate.
        max_apparent_size: limit.saturating_mul(2),
        ignore_missing_null_terminator: false,
    };
    flatbuffers::root_with_opts::<T>(&opts, buf).map_err(|e| Error::malformed(what, e.to_string()))
}

/// Finishes `fbb` with `root` and the file identifier, returning the bytes.
pub(crate) fn finish<T>(mut fbb: FlatBufferBuilder<'_>, root: WIPOffset<T>, ident: &str) -> Vec<u8> {
    fbb.finish(root, Some(ident));
    fbb.finished_data().to_vec()
}

/// As [`finish`], without copying the finished bytes out of the builder: the
/// result is a view of the builder's own buffer (for large payloads that are
/// shared as they are, e.g. a delivery).
pub(crate) fn finish_shared<T>(mut fbb: FlatBufferBuilder<'_>, root: WIPOffset<T>, ident: &str) -> bytes::Bytes {
    fbb.finish(root, Some(ident));
    let (buf, head) = fbb.collapse();
    bytes::Bytes::from(buf).slice(head..)
}

pub(crate) type Builder<'a> = FlatBufferBuilder<'a>;

// ---- domain -> flatbuffers ------------------------------------------------------

pub(crate) fn chat_fb(c: &ChatId) -> fb::ChatId {
    fb::ChatId(c.0)
}

pub(crate) fn origin_fb(o: &Origin) -> fb::Origin {
    fb::Origin::new(o.user.0, o.device.0, o.client_msg_id.0)
}

pub(crate) fn users_fb<'a>(fbb: &mut Builder<'a>, users: &[UserId]) -> WIPOffset<Vector<'a, u64>> {
    fbb.create_vector_from_iter(users.iter().map(|u| u.0))
}

pub(crate) fn media_fb<'a>(fbb: &mut Builder<'a>, m: &MediaRef) -> WIPOffset<fb::MediaRef<'a>> {
    let mime = fbb.create_string(&m.mime);
    let digest = fb::Blake3Digest(m.blake3);
    fb::MediaRef::create(fbb, &fb::MediaRefArgs { blake3: Some(&digest), size: m.size, mime: Some(mime) })
}

pub(crate) fn opt_media_fb<'a>(fbb: &mut Builder<'a>, m: &Option<MediaRef>) -> Option<WIPOffset<fb::MediaRef<'a>>> {
    m.as_ref().map(|m| media_fb(fbb, m))
}

pub(crate) fn prekey_fb<'a>(fbb: &mut Builder<'a>, p: &Prekey) -> WIPOffset<fb::Prekey<'a>> {
    let key = fbb.create_vector(&p.key);
    fb::Prekey::create(fbb, &fb::PrekeyArgs { id: p.id, key: Some(key) })
}

pub(crate) fn prekeys_fb<'a>(
    fbb: &mut Builder<'a>,
    ps: &[Prekey],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::Prekey<'a>>>> {
    let items: Vec<_> = ps.iter().map(|p| prekey_fb(fbb, p)).collect();
    fbb.create_vector(&items)
}

pub(crate) fn receipt_kind_fb(k: ReceiptKind) -> fb::ReceiptKind {
    match k {
        ReceiptKind::Delivered => fb::ReceiptKind::Delivered,
        ReceiptKind::Read => fb::ReceiptKind::Read,
    }
}

pub(crate) fn visibility_fb(v: Visibility) -> fb::Visibility {
    match v {
        Visibility::Everyone => fb::Visibility::Everyone,
        Visibility::Contacts => fb::Visibility::Contacts,
        Visibility::Nobody => fb::Visibility::Nobody,
    }
}

// ---- flatbuffers -> domain --------------------------------------------------------

pub(crate) fn chat(c: &fb::ChatId) -> ChatId {
    ChatId(c.0)
}

pub(crate) fn seq(s: u64) -> Seq {
    Seq(s)
}

pub(crate) fn origin(o: &fb::Origin) -> Origin {
    Origin { user: UserId(o.user()), device: DeviceId(o.device()), client_msg_id: ClientMsgId(o.client_msg_id()) }
}

pub(crate) fn users(v: Vector<'_, u64>) -> Vec<UserId> {
    v.iter().map(UserId).collect()
}

pub(crate) fn media(m: fb::MediaRef<'_>) -> MediaRef {
    MediaRef { blake3: m.blake3().0, size: m.size(), mime: m.mime().to_owned() }
}

pub(crate) fn opt_media(m: Option<fb::MediaRef<'_>>) -> Option<MediaRef> {
    m.map(media)
}

pub(crate) fn prekey(p: fb::Prekey<'_>) -> Prekey {
    Prekey { id: p.id(), key: p.key().bytes().to_vec() }
}

pub(crate) fn prekeys(v: Vector<'_, ForwardsUOffset<fb::Prekey<'_>>>) -> Vec<Prekey> {
    v.iter().map(prekey).collect()
}

pub(crate) fn receipt_kind(k: fb::ReceiptKind) -> Result<ReceiptKind> {
    match k {
        fb::ReceiptKind::Delivered => Ok(ReceiptKind::Delivered),
        fb::ReceiptKind::Read => Ok(ReceiptKind::Read),
        other => Err(Error::malformed("receipt kind", format!("unknown value {}", other.0))),
    }
}

pub(crate) fn visibility(v: fb::Visibility) -> Result<Visibility> {
    match v {
        fb::Visibility::Everyone => Ok(Visibility::Everyone),
        fb::Visibility::Contacts => Ok(Visibility::Contacts),
        fb::Visibility::Nobody => Ok(Visibility::Nobody),
        other => Err(Error::malformed("visibility", format!("unknown value {}", other.0))),
    }
}

/// The error for a union member whose type tag is unknown to this version or whose
/// table is absent.
pub(crate) fn bad_union(what: &'static str, tag: u8) -> Error {
    Error::malformed(what, format!("unknown or missing union member (type {tag})"))
}
