//! Media streams: after login, each new bidirectional stream a client opens
//! is one upload or download (see `schema/fbs/media.fbs`). The stream's
//! user is the connection's: a connection allows the client more than its
//! control stream only once it is logged in.

use std::sync::Arc;

use bytes::Bytes;
use chorus_schema::media::{frame_len, prefixed, Chunk, MediaReply, MediaRequest};
use chorus_schema::EdgeErrorCode;
use tracing::debug;

use super::Ctx;
use crate::media::upload::{Header, Limits, Refusal, Upload};
use crate::media::{MediaStore, StoreError};

/// How a stream ended badly.
enum Ended {
    /// The client went away (or sent garbage we cannot answer).
    Gone(String),
    /// Refused: told to the client.
    Refused(Refusal),
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Ended {
        Ended::Refused(Refusal::new(EdgeErrorCode::Unavailable, e.0))
    }
}

async fn read_request(recv: &mut quinn::RecvStream) -> Result<Option<MediaRequest>, Ended> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(Ended::Gone(e.to_string())),
    }
    let len =
        frame_len(prefix).map_err(|e| Ended::Refused(Refusal::new(EdgeErrorCode::FrameTooLarge, e.to_string())))?;
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.map_err(|e| Ended::Gone(e.to_string()))?;
    MediaRequest::decode(&buf)
        .map(Some)
        .map_err(|e| Ended::Refused(Refusal::new(EdgeErrorCode::BadFrame, e.to_string())))
}

async fn write(send: &mut quinn::SendStream, reply: &MediaReply) -> Result<(), Ended> {
    send.write_all(&prefixed(&reply.encode())).await.map_err(|e| Ended::Gone(e.to_string()))
}

/// Serves one media stream of `user` to its end.
pub(super) async fn serve(
    ctx: Arc<Ctx>,
    store: Arc<MediaStore>,
    identity: crate::session::Identity,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let user = identity.user;
    let result = match read_request(&mut recv).await {
        Ok(Some(MediaRequest::UploadStart { blake3, size, mime })) => {
            upload(&ctx, &store, identity, (blake3, size, mime), &mut send, &mut recv).await
        }
        Ok(Some(MediaRequest::DownloadStart { blake3, offset })) => {
            download(&ctx, &store, blake3, offset, &mut send).await
        }
        Ok(Some(MediaRequest::Chunk(_))) | Ok(None) => Err(Ended::Refused(Refusal::new(
            EdgeErrorCode::BadMediaHeader,
            "a media stream starts with UploadStart or DownloadStart",
        ))),
        Err(Ended::Refused(r)) => Err(Ended::Refused(Refusal::new(EdgeErrorCode::BadMediaHeader, r.message))),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let _ = send.finish();
            let _ = send.stopped().await;
        }
        Err(Ended::Gone(why)) => debug!(%user, why, "media stream ended"),
        Err(Ended::Refused(r)) => {
            debug!(%user, code = ?r.code, message = %r.message, "media stream refused");
            crate::metrics::refused(r.code);
            let _ = write(&mut send, &MediaReply::Error { code: r.code, message: r.message, have: 0 }).await;
            let _ = send.finish();
            let _ = send.stopped().await;
        }
    }
}

fn limits(ctx: &Ctx) -> Limits {
    Limits { file_bytes_max: ctx.config.media.file_bytes_max, chunk_max: ctx.config.media.chunk_bytes }
}

async fn upload(
    ctx: &Ctx,
    store: &MediaStore,
    identity: crate::session::Identity,
    (blake3, size, mime): ([u8; 32], u64, String),
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), Ended> {
    let (user, device) = (identity.user, identity.device);
    let limits = limits(ctx);
    let header = Header::check(blake3, size, &mime, &limits).map_err(Ended::Refused)?;
    let owned = store.owns(user, &blake3, size).await?;
    if !owned {
        let used = store.user_bytes(user).await?;
        let quota = ctx.config.media.user_quota_bytes;
        if used.saturating_add(size) > quota {
            return Err(Ended::Refused(Refusal::new(
                EdgeErrorCode::QuotaExceeded,
                format!("{used} bytes stored and {size} more is above the quota of {quota} bytes"),
            )));
        }
    }
    // Stored already (by anyone): done at once.
    if let Some(stored) = store.size_of(&blake3).await? {
        if stored == size {
            if !owned {
                store.add_owner(user, &blake3, size).await?;
            }
            super::media_log::uploaded(ctx, user, device, blake3, size).await.map_err(Ended::Refused)?;
            return write(send, &MediaReply::UploadDone { blake3, size, deduplicated: true }).await;
        }
    }
    let _held = store.lock_upload(&blake3).await;
    let mut up = Upload::resume(header, store.staged_len(&blake3).await, &limits);
    let mut file = store.stage(&blake3, up.have()).await?;
    write(send, &MediaReply::UploadReady { have: up.have(), chunk_max: up.chunk_max() }).await?;
    while !up.complete() {
        let chunk = match read_request(recv).await? {
            Some(MediaRequest::Chunk(c)) => c,
            Some(_) => {
                return Err(Ended::Refused(Refusal::new(EdgeErrorCode::BadFrame, "only chunks after UploadStart")))
            }
            None => return Err(Ended::Gone("finished before the upload completed".into())),
        };
        match up.accept(&chunk) {
            Ok(()) => {
                MediaStore::append(&mut file, &chunk.data).await?;
                write(send, &MediaReply::ChunkAck { have: up.have() }).await?;
            }
            Err(r) => write(send, &MediaReply::Error { code: r.code, message: r.message, have: up.have() }).await?,
        }
    }
    drop(file);
    if store.staged_hash(&blake3).await? != blake3 {
        store.discard(&blake3).await;
        return Err(Ended::Refused(Refusal::new(
            EdgeErrorCode::MediaHashMismatch,
            "the uploaded bytes do not hash to the header's BLAKE3: upload again",
        )));
    }
    store.publish(&blake3, &up.header().mime).await?;
    store.add_owner(user, &blake3, size).await?;
    super::media_log::uploaded(ctx, user, device, blake3, size).await.map_err(Ended::Refused)?;
    write(send, &MediaReply::UploadDone { blake3, size, deduplicated: false }).await
}

async fn download(
    ctx: &Ctx,
    store: &MediaStore,
    blake3: [u8; 32],
    offset: u64,
    send: &mut quinn::SendStream,
) -> Result<(), Ended> {
    let Some(size) = store.size_of(&blake3).await? else {
        return Err(Ended::Refused(Refusal::new(
            EdgeErrorCode::UnknownMedia,
            format!("no object {}", hex::encode(blake3)),
        )));
    };
    if offset > size {
        return Err(Ended::Refused(Refusal::new(
            EdgeErrorCode::BadMediaHeader,
            format!("offset {offset} is past the object's {size} bytes"),
        )));
    }
    write(send, &MediaReply::DownloadReady { size, mime: store.mime_of(&blake3).await }).await?;
    let step = u64::from(ctx.config.media.chunk_bytes);
    let mut at = offset;
    while at < size {
        let end = (at + step).min(size);
        let data: Bytes = store.read(&blake3, at..end).await?;
        write(send, &MediaReply::Chunk(Chunk::new(at, data))).await?;
        at = end;
    }
    Ok(())
}
