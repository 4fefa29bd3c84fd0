//! Media stream frames (issue 14): [`MediaRequest`] (client → edge, file
//! identifier `CMRQ`) and [`MediaReply`] (edge → client, `CMRP`), each a `u32`
//! big-endian length and one flatbuffer of at most [`MAX_MEDIA_FRAME_BYTES`].
//! See `fbs/media.fbs` for the exchange.

use crate::codec::{self, Builder};
use crate::fb;
use crate::fb::media as fm;
use crate::limits::MAX_MIME_BYTES;
use crate::{EdgeErrorCode, Error, Result};

const REQUEST_IDENT: &str = "CMRQ";
const REPLY_IDENT: &str = "CMRP";

/// Most data bytes in one [`Chunk`].
pub const MAX_MEDIA_CHUNK_BYTES: usize = 1 << 20;
/// One media frame without its length prefix: a chunk and its header.
pub const MAX_MEDIA_FRAME_BYTES: usize = MAX_MEDIA_CHUNK_BYTES + 1024;
/// Longest error message carried by a [`MediaReply::Error`].
const MAX_MESSAGE_BYTES: usize = 1024;

/// `data` at `offset` of an object, with the BLAKE3 of `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub blake3: [u8; 32],
    pub data: bytes::Bytes,
}

impl Chunk {
    /// The chunk of `data` at `offset`, hashed.
    pub fn new(offset: u64, data: bytes::Bytes) -> Chunk {
        Chunk { offset, blake3: *blake3::hash(&data).as_bytes(), data }
    }

    /// Whether `blake3` is the hash of `data`.
    pub fn intact(&self) -> bool {
        blake3::hash(&self.data) == blake3::Hash::from_bytes(self.blake3)
    }
}

/// What a client sends on a media stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRequest {
    UploadStart { blake3: [u8; 32], size: u64, mime: String },
    DownloadStart { blake3: [u8; 32], offset: u64 },
    Chunk(Chunk),
}

/// What an edge answers on a media stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaReply {
    UploadReady {
        have: u64,
        chunk_max: u32,
    },
    ChunkAck {
        have: u64,
    },
    UploadDone {
        blake3: [u8; 32],
        size: u64,
        deduplicated: bool,
    },
    DownloadReady {
        size: u64,
        mime: String,
    },
    /// `have`: for [`EdgeErrorCode::BadChunk`], where to re-send from.
    Error {
        code: EdgeErrorCode,
        message: String,
        have: u64,
    },
    Chunk(Chunk),
}

fn digest(d: &[u8; 32]) -> fb::Blake3Digest {
    fb::Blake3Digest::new(d)
}

fn chunk_fb<'a>(fbb: &mut Builder<'a>, c: &Chunk) -> flatbuffers::WIPOffset<fm::Chunk<'a>> {
    // A byte string (a `[ubyte]` vector with a trailing 0 past its length):
    // one copy, where `create_vector` pushes byte by byte (slow in debug builds).
    let data = flatbuffers::WIPOffset::new(fbb.create_byte_string(&c.data).value());
    fm::Chunk::create(fbb, &fm::ChunkArgs { offset: c.offset, blake3: Some(&digest(&c.blake3)), data: Some(data) })
}

fn chunk(c: fm::Chunk<'_>) -> Chunk {
    Chunk { offset: c.offset(), blake3: c.blake3().0, data: bytes::Bytes::copy_from_slice(c.data().bytes()) }
}

fn builder(hint: usize) -> Builder<'static> {
    Builder::with_capacity(hint + 256)
}

impl MediaRequest {
    /// Encodes (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let hint = if let MediaRequest::Chunk(c) = self { c.data.len() } else { 0 };
        let mut fbb = builder(hint);
        let (tag, body) = match self {
            MediaRequest::UploadStart { blake3, size, mime } => {
                let mime = fbb.create_string(mime);
                let t = fm::UploadStart::create(
                    &mut fbb,
                    &fm::UploadStartArgs { blake3: Some(&digest(blake3)), size: *size, mime: Some(mime) },
                );
                (fm::MediaRequestBody::UploadStart, t.as_union_value())
            }
            MediaRequest::DownloadStart { blake3, offset } => {
                let t = fm::DownloadStart::create(
                    &mut fbb,
                    &fm::DownloadStartArgs { blake3: Some(&digest(blake3)), offset: *offset },
                );
                (fm::MediaRequestBody::DownloadStart, t.as_union_value())
            }
            MediaRequest::Chunk(c) => (fm::MediaRequestBody::Chunk, chunk_fb(&mut fbb, c).as_union_value()),
        };
        let root = fm::MediaRequest::create(&mut fbb, &fm::MediaRequestArgs { body_type: tag, body: Some(body) });
        codec::finish(fbb, root, REQUEST_IDENT)
    }

    /// Decodes and checks the limits.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_MEDIA_FRAME_BYTES`], a chunk above
    /// [`MAX_MEDIA_CHUNK_BYTES`] or a MIME type above its limit;
    /// [`Error::Malformed`] otherwise.
    pub fn decode(buf: &[u8]) -> Result<MediaRequest> {
        let f = codec::root::<fm::MediaRequest>(buf, "media request", REQUEST_IDENT, MAX_MEDIA_FRAME_BYTES, 8)?;
        let tag = f.body_type();
        let bad = || codec::bad_union("media request body", tag.0);
        let r = match tag {
            fm::MediaRequestBody::UploadStart => {
                let b = f.body_as_upload_start().ok_or_else(bad)?;
                crate::error::check_len("media mime type", b.mime().len(), MAX_MIME_BYTES)?;
                MediaRequest::UploadStart { blake3: b.blake3().0, size: b.size(), mime: b.mime().to_owned() }
            }
            fm::MediaRequestBody::DownloadStart => {
                let b = f.body_as_download_start().ok_or_else(bad)?;
                MediaRequest::DownloadStart { blake3: b.blake3().0, offset: b.offset() }
            }
            fm::MediaRequestBody::Chunk => {
                let b = f.body_as_chunk().ok_or_else(bad)?;
                crate::error::check_len("media chunk", b.data().len(), MAX_MEDIA_CHUNK_BYTES)?;
                MediaRequest::Chunk(chunk(b))
            }
            _ => return Err(bad()),
        };
        Ok(r)
    }
}

impl MediaReply {
    /// Encodes (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let hint = if let MediaReply::Chunk(c) = self { c.data.len() } else { 0 };
        let mut fbb = builder(hint);
        let (tag, body) = match self {
            MediaReply::UploadReady { have, chunk_max } => {
                let t = fm::UploadReady::create(&mut fbb, &fm::UploadReadyArgs { have: *have, chunk_max: *chunk_max });
                (fm::MediaReplyBody::UploadReady, t.as_union_value())
            }
            MediaReply::ChunkAck { have } => {
                let t = fm::ChunkAck::create(&mut fbb, &fm::ChunkAckArgs { have: *have });
                (fm::MediaReplyBody::ChunkAck, t.as_union_value())
            }
            MediaReply::UploadDone { blake3, size, deduplicated } => {
                let t = fm::UploadDone::create(
                    &mut fbb,
                    &fm::UploadDoneArgs { blake3: Some(&digest(blake3)), size: *size, deduplicated: *deduplicated },
                );
                (fm::MediaReplyBody::UploadDone, t.as_union_value())
            }
            MediaReply::DownloadReady { size, mime } => {
                let mime = fbb.create_string(mime);
                let t = fm::DownloadReady::create(&mut fbb, &fm::DownloadReadyArgs { size: *size, mime: Some(mime) });
                (fm::MediaReplyBody::DownloadReady, t.as_union_value())
            }
            MediaReply::Error { code, message, have } => {
                let cut = truncate_utf8(message, MAX_MESSAGE_BYTES);
                let message = fbb.create_string(cut);
                let t = fm::MediaError::create(
                    &mut fbb,
                    &fm::MediaErrorArgs { code: code.value(), message: Some(message), have: *have },
                );
                (fm::MediaReplyBody::MediaError, t.as_union_value())
            }
            MediaReply::Chunk(c) => (fm::MediaReplyBody::Chunk, chunk_fb(&mut fbb, c).as_union_value()),
        };
        let root = fm::MediaReply::create(&mut fbb, &fm::MediaReplyArgs { body_type: tag, body: Some(body) });
        codec::finish(fbb, root, REPLY_IDENT)
    }

    /// Decodes and checks the limits.
    ///
    /// # Errors
    /// As [`MediaRequest::decode`]; an unknown error code is malformed.
    pub fn decode(buf: &[u8]) -> Result<MediaReply> {
        let f = codec::root::<fm::MediaReply>(buf, "media reply", REPLY_IDENT, MAX_MEDIA_FRAME_BYTES, 8)?;
        let tag = f.body_type();
        let bad = || codec::bad_union("media reply body", tag.0);
        let r = match tag {
            fm::MediaReplyBody::UploadReady => {
                let b = f.body_as_upload_ready().ok_or_else(bad)?;
                MediaReply::UploadReady { have: b.have(), chunk_max: b.chunk_max() }
            }
            fm::MediaReplyBody::ChunkAck => {
                MediaReply::ChunkAck { have: f.body_as_chunk_ack().ok_or_else(bad)?.have() }
            }
            fm::MediaReplyBody::UploadDone => {
                let b = f.body_as_upload_done().ok_or_else(bad)?;
                MediaReply::UploadDone { blake3: b.blake3().0, size: b.size(), deduplicated: b.deduplicated() }
            }
            fm::MediaReplyBody::DownloadReady => {
                let b = f.body_as_download_ready().ok_or_else(bad)?;
                crate::error::check_len("media mime type", b.mime().len(), MAX_MIME_BYTES)?;
                MediaReply::DownloadReady { size: b.size(), mime: b.mime().to_owned() }
            }
            fm::MediaReplyBody::MediaError => {
                let b = f.body_as_media_error().ok_or_else(bad)?;
                crate::error::check_len("media error message", b.message().len(), MAX_MESSAGE_BYTES)?;
                let code = EdgeErrorCode::from_value(b.code())
                    .ok_or_else(|| Error::malformed("media error", format!("unknown code {}", b.code())))?;
                MediaReply::Error { code, message: b.message().to_owned(), have: b.have() }
            }
            fm::MediaReplyBody::Chunk => {
                let b = f.body_as_chunk().ok_or_else(bad)?;
                crate::error::check_len("media chunk", b.data().len(), MAX_MEDIA_CHUNK_BYTES)?;
                MediaReply::Chunk(chunk(b))
            }
            _ => return Err(bad()),
        };
        Ok(r)
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// `frame` with its `u32` big-endian length prefix.
pub fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(frame);
    out
}

/// The length of the frame whose prefix is `prefix`.
///
/// # Errors
/// [`Error::TooLarge`] above [`MAX_MEDIA_FRAME_BYTES`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    crate::error::check_len("media frame", len, MAX_MEDIA_FRAME_BYTES)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let c = Chunk::new(7, bytes::Bytes::from_static(b"hello"));
        assert!(c.intact());
        for r in [
            MediaRequest::UploadStart { blake3: [1; 32], size: 9, mime: "image/jpeg".into() },
            MediaRequest::DownloadStart { blake3: [2; 32], offset: 3 },
            MediaRequest::Chunk(c.clone()),
        ] {
            assert_eq!(MediaRequest::decode(&r.encode()).unwrap(), r);
        }
        for r in [
            MediaReply::UploadReady { have: 1, chunk_max: 2 },
            MediaReply::ChunkAck { have: 5 },
            MediaReply::UploadDone { blake3: [3; 32], size: 4, deduplicated: true },
            MediaReply::DownloadReady { size: 4, mime: "a/b".into() },
            MediaReply::Error { code: EdgeErrorCode::BadChunk, message: "x".into(), have: 4 },
            MediaReply::Chunk(c),
        ] {
            assert_eq!(MediaReply::decode(&r.encode()).unwrap(), r);
        }
        // A request is not a reply.
        assert!(MediaReply::decode(&MediaRequest::DownloadStart { blake3: [0; 32], offset: 0 }.encode()).is_err());
    }

    #[test]
    fn a_tampered_chunk_is_not_intact() {
        let mut c = Chunk::new(0, bytes::Bytes::from_static(b"hello"));
        c.data = bytes::Bytes::from_static(b"jello");
        assert!(!c.intact());
    }
}
