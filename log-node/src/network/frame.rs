//! Length-prefixed frames on QUIC streams: a 4-byte big-endian length, then the
//! payload. A length over the limit is refused before anything is allocated,
//! and a frame's buffer grows as its bytes arrive, never from the prefix.

use quinn::{RecvStream, SendStream};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of one frame as it arrives. Its buffer grows with the bytes that
/// actually came (doubling, as a `Vec` does), never sized up front from the
/// length prefix: a peer that announces 16 MiB and sends 10 bytes makes the
/// reader hold a few bytes, not 16 MiB.
#[derive(Debug)]
pub(crate) struct Body {
    buf: Vec<u8>,
    len: usize,
}

impl Body {
    /// A body of `len` bytes, none arrived yet.
    pub(crate) fn new(len: usize) -> Body {
        Body { buf: Vec::new(), len }
    }

    /// Bytes still missing.
    pub(crate) fn remaining(&self) -> usize {
        self.len - self.buf.len()
    }

    /// Appends what arrived; returns what lies past the body (the caller asks
    /// for at most [`Body::remaining`], so normally nothing).
    pub(crate) fn extend<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (mine, rest) = bytes.split_at(self.remaining().min(bytes.len()));
        self.buf.extend_from_slice(mine);
        rest
    }

    /// The whole body, once [`Body::remaining`] is 0.
    pub(crate) fn into_inner(self) -> Vec<u8> {
        debug_assert_eq!(self.remaining(), 0, "body complete");
        self.buf
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Most bytes taken from the stream at once.
const READ_CHUNK_MAX: usize = 64 << 10;

/// Reads one frame; `Ok(None)` when the stream finished cleanly before a frame began.
/// The frame's buffer grows as its bytes arrive (see [`Body`]).
///
/// # Errors
/// When the frame is over `limit`, the stream ends inside it, or the peer reset it.
pub async fn read(recv: &mut RecvStream, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(Error::Truncated),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(Error::TooLarge { len, limit });
    }
    let mut body = Body::new(len);
    while body.remaining() > 0 {
        match recv.read_chunk(body.remaining().min(READ_CHUNK_MAX), true).await {
            Ok(Some(chunk)) => {
                let rest = body.extend(&chunk.bytes);
                debug_assert!(rest.is_empty(), "read_chunk returns at most what was asked");
            }
            Ok(None) => return Err(Error::Truncated),
            Err(e) => return Err(Error::Read(quinn::ReadExactError::ReadError(e))),
        }
    }
    Ok(Some(body.into_inner()))
}

/// Writes one frame.
///
/// # Errors
/// When the peer stopped the stream or the connection is lost.
pub async fn write(send: &mut SendStream, payload: &[u8]) -> Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| Error::TooLarge { len: payload.len(), limit: u32::MAX as usize })?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(payload).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_holds_what_arrived_not_what_the_prefix_announced() {
        let mut body = Body::new(16 << 20);
        assert_eq!(body.extend(&[7; 10]), &[] as &[u8]);
        assert_eq!(body.remaining(), (16 << 20) - 10);
        assert!(body.capacity() <= 64, "10 bytes arrived, {} allocated", body.capacity());
        // Growing as data arrives stays within twice what arrived.
        for _ in 0..1000 {
            body.extend(&[1; 1200]);
        }
        let arrived = 10 + 1000 * 1200;
        assert!(body.capacity() <= 2 * arrived, "{} for {arrived}", body.capacity());
    }

    #[test]
    fn a_body_takes_exactly_its_length() {
        let mut body = Body::new(5);
        assert_eq!(body.extend(b"abc"), b"");
        assert_eq!(body.extend(b"defgh"), b"fgh");
        assert_eq!(body.remaining(), 0);
        assert_eq!(body.into_inner(), b"abcde");
        assert_eq!(Body::new(0).into_inner(), Vec::<u8>::new());
    }
}
