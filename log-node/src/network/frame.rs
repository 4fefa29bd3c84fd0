//! Length-prefixed frames on QUIC streams: a 4-byte big-endian length, then the
//! payload. A length over the limit is refused before anything is allocated.

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

/// Reads one frame; `Ok(None)` when the stream finished cleanly before a frame began.
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
    let mut buf = vec![0u8; len];
    match recv.read_exact(&mut buf).await {
        Ok(()) => Ok(Some(buf)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(Error::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// Writes one frame.
///
/// # Errors
/// When the peer stopped the stream or the connection is lost.
pub async fn write(send: &mut SendStream, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| Error::TooLarge { len: payload.len(), limit: u32::MAX as usize })?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(payload).await?;
    Ok(())
}
