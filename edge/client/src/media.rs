//! Media transfers (issue 14): uploads and downloads of encrypted files over
//! their own QUIC streams of the logged-in connection, in chunks, resumed
//! after a dropped connection from what the edge holds, checked by BLAKE3
//! chunk by chunk and as a whole.
//!
//! The files are encrypted before upload ([`crate::content::encrypt_file`]):
//! the edge stores only ciphertext, addressed by its BLAKE3.

use bytes::Bytes;
use chorus_schema::media::{frame_len, prefixed, Chunk, MediaReply, MediaRequest};
use chorus_schema::{EdgeErrorCode, MediaRef};

use crate::client::Client;
use crate::types::{Error, Result};

/// How long a transfer waits for the client to be connected (again).
const CONNECT_WAIT_MS: u64 = 15_000;
/// Attempts of one transfer across dropped connections.
const ATTEMPTS: u32 = 6;

/// One media stream: frames up, frames down.
#[derive(Debug)]
pub struct MediaStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl MediaStream {
    /// Writes one request.
    ///
    /// # Errors
    /// A connection error.
    pub async fn send(&mut self, request: &MediaRequest) -> Result<()> {
        self.send.write_all(&prefixed(&request.encode())).await.map_err(|e| Error::Connection(e.to_string()))
    }

    /// Reads one reply.
    ///
    /// # Errors
    /// A connection error, or a reply that does not decode.
    pub async fn recv(&mut self) -> Result<MediaReply> {
        let mut prefix = [0u8; 4];
        self.recv.read_exact(&mut prefix).await.map_err(|e| Error::Connection(e.to_string()))?;
        let len = frame_len(prefix).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut buf = vec![0u8; len];
        self.recv.read_exact(&mut buf).await.map_err(|e| Error::Connection(e.to_string()))?;
        MediaReply::decode(&buf).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Finishes the stream (nothing more to send).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The reference to send with the message.
    pub media: MediaRef,
    /// The edge already had the object: nothing was sent.
    pub deduplicated: bool,
    /// Where each attempt started (the edge's resume point).
    pub starts: Vec<u64>,
    /// Chunk bytes sent in all.
    pub sent_bytes: u64,
}

fn refused(code: EdgeErrorCode, message: String) -> Error {
    Error::Refused { code, message, retry_after_ms: None }
}

/// Whether an attempt's failure is worth another attempt.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Connection(_) => true,
        Error::Refused { code, .. } => code.retryable(),
        _ => false,
    }
}

impl Client {
    /// Opens a media stream on the logged-in connection (waiting for one).
    ///
    /// # Errors
    /// Not connected within 15 s, or the connection failed.
    pub async fn media_stream(&self) -> Result<MediaStream> {
        let conn = self.media_connection(CONNECT_WAIT_MS).await?;
        let (send, recv) = conn.open_bi().await.map_err(|e| Error::Connection(e.to_string()))?;
        Ok(MediaStream { send, recv })
    }

    /// Uploads `ciphertext` (already encrypted), resuming after dropped
    /// connections from what the edge holds.
    ///
    /// # Errors
    /// [`Error::Refused`] with `MediaTooLarge`, `QuotaExceeded`,
    /// `MediaHashMismatch`…; a connection error after the last attempt.
    pub async fn upload(&self, ciphertext: Bytes, mime: &str) -> Result<Uploaded> {
        let blake3 = *blake3::hash(&ciphertext).as_bytes();
        let media = MediaRef { blake3, size: ciphertext.len() as u64, mime: mime.to_owned() };
        let mut report = Uploaded { media, deduplicated: false, starts: Vec::new(), sent_bytes: 0 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_attempt(&ciphertext, &mut report).await {
                Ok(()) => return Ok(report),
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "upload interrupted; resuming");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_attempt(&self, ciphertext: &Bytes, report: &mut Uploaded) -> Result<()> {
        let mut s = self.media_stream().await?;
        let m = &report.media;
        s.send(&MediaRequest::UploadStart { blake3: m.blake3, size: m.size, mime: m.mime.clone() }).await?;
        let (mut have, chunk_max) = match s.recv().await? {
            MediaReply::UploadReady { have, chunk_max } => (have, chunk_max),
            MediaReply::UploadDone { deduplicated, .. } => {
                report.deduplicated = deduplicated;
                report.starts.push(m.size);
                return Ok(());
            }
            MediaReply::Error { code, message, .. } => return Err(refused(code, message)),
            other => return Err(Error::Protocol(format!("UploadStart answered {other:?}"))),
        };
        report.starts.push(have);
        let step = u64::from(chunk_max.max(1));
        // Stop-and-wait per chunk (a chunk is up to 1 MiB: the round trip is
        // small beside its transfer).
        let mut bad_chunks = 0;
        loop {
            if have < m.size {
                let end = (have + step).min(m.size);
                let data = ciphertext
                    .slice(usize::try_from(have).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX));
                report.sent_bytes += end - have;
                s.send(&MediaRequest::Chunk(Chunk::new(have, data))).await?;
            }
            match s.recv().await? {
                MediaReply::ChunkAck { have: h } => have = h,
                MediaReply::UploadDone { deduplicated, .. } => {
                    report.deduplicated = deduplicated;
                    s.finish();
                    return Ok(());
                }
                MediaReply::Error { code: EdgeErrorCode::BadChunk, message, have: h } => {
                    bad_chunks += 1;
                    if bad_chunks > 3 {
                        return Err(refused(EdgeErrorCode::BadChunk, message));
                    }
                    have = h;
                }
                MediaReply::Error { code, message, .. } => return Err(refused(code, message)),
                other => return Err(Error::Protocol(format!("a chunk answered {other:?}"))),
            }
        }
    }

    /// Downloads the object of `media`, resuming after dropped connections,
    /// and checks its BLAKE3.
    ///
    /// # Errors
    /// [`Error::Refused`] with `UnknownMedia`; [`Error::Protocol`] if the
    /// bytes do not hash to `media.blake3`.
    pub async fn download(&self, media: &MediaRef) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(media.size).unwrap_or(0).min(1 << 30));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.download_attempt(media, &mut out).await {
                Ok(()) => break,
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
        if blake3::hash(&out) != blake3::Hash::from_bytes(media.blake3) {
            return Err(Error::Protocol("the downloaded object does not match its BLAKE3".into()));
        }
        Ok(out)
    }

    async fn download_attempt(&self, media: &MediaRef, out: &mut Vec<u8>) -> Result<()> {
        let mut s = self.media_stream().await?;
        s.send(&MediaRequest::DownloadStart { blake3: media.blake3, offset: out.len() as u64 }).await?;
        s.finish();
        let size = match s.recv().await? {
            MediaReply::DownloadReady { size, .. } => size,
            MediaReply::Error { code, message, .. } => return Err(refused(code, message)),
            other => return Err(Error::Protocol(format!("DownloadStart answered {other:?}"))),
        };
        if size != media.size {
            return Err(Error::Protocol(format!("the edge holds {size} bytes, the reference says {}", media.size)));
        }
        while (out.len() as u64) < size {
            match s.recv().await? {
                MediaReply::Chunk(c) if c.offset == out.len() as u64 && c.intact() => out.extend_from_slice(&c.data),
                MediaReply::Chunk(c) => {
                    return Err(Error::Protocol(format!("a bad chunk at {} (holding {})", c.offset, out.len())))
                }
                MediaReply::Error { code, message, .. } => return Err(refused(code, message)),
                other => return Err(Error::Protocol(format!("a download answered {other:?}"))),
            }
        }
        Ok(())
    }
}
