//! The upload state machine of one media stream, sans IO: the header's
//! checks, the resume point, and each chunk's verdict. The driver
//! ([`super::stream`]) stores what it accepts and answers what it says.

use chorus_schema::media::Chunk;
use chorus_schema::EdgeErrorCode;

/// Why a header or a chunk is refused: the code and a message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: EdgeErrorCode,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: EdgeErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

/// The limits an upload is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest object.
    pub file_bytes_max: u64,
    /// Largest chunk.
    pub chunk_max: u32,
}

/// A checked upload header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub blake3: [u8; 32],
    pub size: u64,
    pub mime: String,
}

impl Header {
    /// Checks an `UploadStart`.
    ///
    /// # Errors
    /// `MediaTooLarge` above the per-file limit; `BadMediaHeader` for an empty
    /// object or MIME type.
    pub fn check(blake3: [u8; 32], size: u64, mime: &str, limits: &Limits) -> Result<Header, Refusal> {
        if size > limits.file_bytes_max {
            return Err(Refusal::new(
                EdgeErrorCode::MediaTooLarge,
                format!("{size} bytes is above the limit of {} bytes per file", limits.file_bytes_max),
            ));
        }
        if size == 0 {
            return Err(Refusal::new(EdgeErrorCode::BadMediaHeader, "an empty object"));
        }
        if mime.is_empty() || !mime.contains('/') {
            return Err(Refusal::new(EdgeErrorCode::BadMediaHeader, format!("not a MIME type: {mime:?}")));
        }
        Ok(Header { blake3, size, mime: mime.to_owned() })
    }
}

/// One upload in progress: the edge holds the first `have` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    header: Header,
    have: u64,
    chunk_max: u32,
}

impl Upload {
    /// Resumes after `staged` bytes already held. More staged bytes than the
    /// object has (a stale file) restart it: the caller truncates to
    /// [`Upload::have`].
    pub fn resume(header: Header, staged: u64, limits: &Limits) -> Upload {
        let have = if staged > header.size { 0 } else { staged };
        Upload { header, have, chunk_max: limits.chunk_max.max(1) }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes held.
    pub fn have(&self) -> u64 {
        self.have
    }

    pub fn chunk_max(&self) -> u32 {
        self.chunk_max
    }

    /// Every byte is held: the whole hash is checked next.
    pub fn complete(&self) -> bool {
        self.have == self.header.size
    }

    /// The verdict on `chunk`: accepted (the caller stores its data at the
    /// old `have`, which moved past it), or refused with `BadChunk` (nothing
    /// changes; the client re-sends from [`Upload::have`]).
    ///
    /// # Errors
    /// `BadChunk`: at another offset than `have`, empty, longer than
    /// `chunk_max` or past the declared size, or its BLAKE3 does not match.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<(), Refusal> {
        let bad = |m: String| Err(Refusal::new(EdgeErrorCode::BadChunk, m));
        let len = chunk.data.len() as u64;
        if chunk.offset != self.have {
            return bad(format!("a chunk at {} but the edge holds {} bytes: send from there", chunk.offset, self.have));
        }
        if len == 0 || len > u64::from(self.chunk_max) {
            return bad(format!("a chunk of {len} bytes (1 to {} bytes)", self.chunk_max));
        }
        if self.have + len > self.header.size {
            return bad(format!("a chunk past the declared size of {} bytes", self.header.size));
        }
        if !chunk.intact() {
            return bad(format!("the chunk at {} does not match its BLAKE3: re-send it", chunk.offset));
        }
        self.have += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Limits = Limits { file_bytes_max: 1000, chunk_max: 64 };

    fn header(size: u64) -> Header {
        Header::check([7; 32], size, "application/octet-stream", &LIMITS).unwrap()
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(Header::check([0; 32], 1001, "a/b", &LIMITS).unwrap_err().code, EdgeErrorCode::MediaTooLarge);
        assert_eq!(Header::check([0; 32], 0, "a/b", &LIMITS).unwrap_err().code, EdgeErrorCode::BadMediaHeader);
        assert_eq!(Header::check([0; 32], 5, "", &LIMITS).unwrap_err().code, EdgeErrorCode::BadMediaHeader);
        assert!(Header::check([0; 32], 1000, "a/b", &LIMITS).is_ok());
    }

    #[test]
    fn a_corrupted_chunk_is_refused_and_changes_nothing() {
        let mut up = Upload::resume(header(10), 0, &LIMITS);
        let mut c = Chunk::new(0, Bytes::from_static(b"hello"));
        c.data = Bytes::from_static(b"jello");
        let before = up.clone();
        assert_eq!(up.accept(&c).unwrap_err().code, EdgeErrorCode::BadChunk);
        assert_eq!(up, before);
        up.accept(&Chunk::new(0, Bytes::from_static(b"hello"))).unwrap();
        assert_eq!(up.have(), 5);
        // A chunk again at 0 (a duplicate), or beyond the size, is refused.
        assert!(up.accept(&Chunk::new(0, Bytes::from_static(b"hello"))).is_err());
        assert!(up.accept(&Chunk::new(5, Bytes::from_static(b"world!"))).is_err());
        up.accept(&Chunk::new(5, Bytes::from_static(b"world"))).unwrap();
        assert!(up.complete());
    }

    #[test]
    fn resuming_starts_at_the_staged_bytes_unless_they_are_too_many() {
        assert_eq!(Upload::resume(header(10), 4, &LIMITS).have(), 4);
        assert_eq!(Upload::resume(header(10), 10, &LIMITS).have(), 10);
        assert_eq!(Upload::resume(header(10), 11, &LIMITS).have(), 0);
    }

    /// What a client may send: a chunk of the object at some offset, maybe corrupted.
    #[derive(Clone, Debug)]
    struct Sent {
        offset: usize,
        len: usize,
        corrupt: bool,
    }

    proptest! {
        /// Whatever chunks arrive (duplicates, gaps, corruptions, resumes),
        /// the bytes accepted are exactly the object's prefix of `have`
        /// bytes, and `have` never passes the size.
        #[test]
        fn accepted_bytes_are_always_the_objects_prefix(
            object in proptest::collection::vec(any::<u8>(), 1..600),
            sent in proptest::collection::vec((0usize..700, 0usize..100, any::<bool>()).prop_map(|(offset, len, corrupt)| Sent { offset, len, corrupt }), 0..60),
            resume_at in proptest::option::of(0usize..60),
        ) {
            let size = object.len() as u64;
            let mut up = Upload::resume(header(size), 0, &LIMITS);
            let mut stored: Vec<u8> = Vec::new();
            for (i, s) in sent.iter().enumerate() {
                if resume_at == Some(i) {
                    // The connection dropped: a new stream resumes from what is staged.
                    up = Upload::resume(header(size), stored.len() as u64, &LIMITS);
                }
                let end = (s.offset + s.len).min(object.len());
                let start = s.offset.min(end);
                let mut chunk = Chunk::new(s.offset as u64, Bytes::copy_from_slice(&object[start..end]));
                if s.corrupt && !chunk.data.is_empty() {
                    let mut d = chunk.data.to_vec();
                    d[0] ^= 1;
                    chunk.data = Bytes::from(d);
                }
                let offset_before = up.have();
                if up.accept(&chunk).is_ok() {
                    prop_assert_eq!(chunk.offset, offset_before);
                    stored.extend_from_slice(&chunk.data);
                }
                prop_assert_eq!(up.have(), stored.len() as u64);
                prop_assert!(up.have() <= size);
                prop_assert_eq!(&stored[..], &object[..stored.len()]);
            }
            // And sending the rest in order completes it.
            let mut at = stored.len();
            while at < object.len() {
                let end = (at + 64).min(object.len());
                up.accept(&Chunk::new(at as u64, Bytes::copy_from_slice(&object[at..end]))).unwrap();
                at = end;
            }
            prop_assert!(up.complete());
        }
    }
}
