//! Media (issue 14) through a real deployment: 3 log-nodes, a nats-server, a
//! projector and an edge as processes, clients on the SDK over QUIC. Files
//! are encrypted by the SDK, uploaded in chunks over their own streams,
//! resumed after a dropped connection, stored once by hash, downloaded and
//! checked; limits and bad chunks are refused with their codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chorus_client::content::{decrypt_file, encrypt_file, Content};
use chorus_client::Client;
use chorus_schema::media::{Chunk, MediaReply, MediaRequest};
use chorus_schema::{ChatId, EdgeErrorCode, EventBody, Key, Recipient};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, refused};
use chorus_testkit::stack::{Stack, StackSpec};
use rand::RngCore;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1 << 20;

/// One edge whose media store is `store` (shared with the test, which looks
/// at the files), 24 MiB per file, 40 MiB per user.
async fn stack(dir: &Path, store: &Path) -> Stack {
    let mut spec = StackSpec::new(dir, chorus_binary()).unthrottled();
    spec.edges = 1;
    spec.edge.media.dir = store.to_path_buf();
    spec.edge.media.file_bytes_max = 24 * MIB;
    spec.edge.media.user_quota_bytes = 40 * MIB;
    // 256 KiB chunks: many of them in a 20 MiB upload.
    spec.edge.media.chunk_bytes = 256 << 10;
    Stack::start(spec).await.expect("start the stack")
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn objects(store: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(store.join("objects")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn staged_len(store: &Path, hash: &[u8; 32]) -> u64 {
    std::fs::metadata(store.join("staging").join(format!("{}.part", hex::encode(hash)))).map_or(0, |m| m.len())
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("{what} within 60 s"))
}

/// The first reply on a raw media stream after `request`.
async fn ask(c: &Client, request: MediaRequest) -> MediaReply {
    let mut s = c.media_stream().await.unwrap();
    s.send(&request).await.unwrap();
    s.recv().await.unwrap()
}

fn code_of(reply: &MediaReply) -> EdgeErrorCode {
    match reply {
        MediaReply::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_upload_resumes_bad_chunks_and_limits_are_refused_and_duplicates_are_stored_once() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("media-store");
    let stack = stack(dir.path(), &store).await;
    let alice_id = stack.register(0, "+15550001401").await.unwrap();
    let bob_id = stack.register(0, "+15550001402").await.unwrap();
    let (alice, _alice_events) = stack.connect(0, alice_id).await;
    let (bob, mut bob_events) = stack.connect(0, bob_id).await;

    // ---- a 20 MiB file, its connection dropped halfway: it resumes ----
    let plain = random(20 * MIB as usize);
    let (key, ciphertext) = encrypt_file(&plain);
    let ciphertext = Bytes::from(ciphertext);
    let hash = *blake3::hash(&ciphertext).as_bytes();
    let size = ciphertext.len() as u64;
    let upload = tokio::spawn({
        let (alice, ciphertext) = (alice.clone(), ciphertext.clone());
        async move { alice.upload(ciphertext, "application/octet-stream").await }
    });
    within("half the upload staged", async {
        while staged_len(&store, &hash) < size / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    alice.reconnect();
    let up = within("the upload", upload).await.unwrap().expect("the upload completes after the reconnect");
    assert!(!up.deduplicated);
    assert!(up.starts.len() >= 2, "the upload was interrupted and resumed: {:?}", up.starts);
    let resumed_at = *up.starts.last().unwrap();
    assert!(resumed_at >= size / 2 && resumed_at < size, "resumed from the edge's offset: {:?}", up.starts);
    assert!(up.sent_bytes < size + size / 2, "the held half was not sent again: {} of {size}", up.sent_bytes);
    assert_eq!(staged_len(&store, &hash), 0, "the staged upload is gone once stored");
    let stored = std::fs::read(store.join("objects").join(hex::encode(hash))).unwrap();
    assert_eq!(stored, ciphertext.as_ref(), "the store holds the ciphertext");
    assert!(!stored.windows(64).any(|w| w == &plain[..64]), "and no plaintext");

    // Bob downloads it: byte for byte, and the original after decrypting.
    let got = within("the download", bob.download(&up.media)).await.unwrap();
    assert_eq!(got, ciphertext.as_ref());
    assert_eq!(decrypt_file(&key, &got).unwrap(), plain);

    // The same ciphertext again (by bob: forwarded): done at once, stored once.
    let again = within("a second upload", bob.upload(ciphertext.clone(), "application/octet-stream")).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.sent_bytes, 0);
    assert_eq!(objects(&store).len(), 1);

    // ---- a corrupted chunk is refused, then the right one is taken ----
    let small = Bytes::from(random(300 << 10));
    let small_hash = *blake3::hash(&small).as_bytes();
    let mut s = alice.media_stream().await.unwrap();
    s.send(&MediaRequest::UploadStart { blake3: small_hash, size: small.len() as u64, mime: "image/png".into() })
        .await
        .unwrap();
    let MediaReply::UploadReady { have: 0, chunk_max } = s.recv().await.unwrap() else { panic!("not ready") };
    assert_eq!(chunk_max, 256 << 10);
    let first = small.slice(..chunk_max as usize);
    let mut corrupted = Chunk::new(0, first.clone());
    let mut flipped = first.to_vec();
    flipped[100] ^= 0x40;
    corrupted.data = Bytes::from(flipped);
    s.send(&MediaRequest::Chunk(corrupted)).await.unwrap();
    match s.recv().await.unwrap() {
        MediaReply::Error { code: EdgeErrorCode::BadChunk, have: 0, message } => assert!(message.contains("BLAKE3")),
        other => panic!("a corrupted chunk answered {other:?}"),
    }
    s.send(&MediaRequest::Chunk(Chunk::new(0, first))).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), MediaReply::ChunkAck { have: u64::from(chunk_max) });
    s.send(&MediaRequest::Chunk(Chunk::new(u64::from(chunk_max), small.slice(chunk_max as usize..)))).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), MediaReply::ChunkAck { have: small.len() as u64 });
    assert!(matches!(s.recv().await.unwrap(), MediaReply::UploadDone { deduplicated: false, .. }));
    assert_eq!(objects(&store).len(), 2);

    // A whole upload whose bytes do not hash to its header: nothing stored.
    let lie = Bytes::from(random(1000));
    let mut s = alice.media_stream().await.unwrap();
    s.send(&MediaRequest::UploadStart { blake3: [9; 32], size: 1000, mime: "a/b".into() }).await.unwrap();
    assert!(matches!(s.recv().await.unwrap(), MediaReply::UploadReady { have: 0, .. }));
    s.send(&MediaRequest::Chunk(Chunk::new(0, lie))).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), MediaReply::ChunkAck { have: 1000 });
    assert_eq!(code_of(&s.recv().await.unwrap()), EdgeErrorCode::MediaHashMismatch);
    assert_eq!(objects(&store).len(), 2);
    assert_eq!(staged_len(&store, &[9; 32]), 0);

    // ---- limits, unknown hashes, bad headers ----
    let too_big = MediaRequest::UploadStart { blake3: [1; 32], size: 24 * MIB + 1, mime: "a/b".into() };
    assert_eq!(code_of(&ask(&alice, too_big).await), EdgeErrorCode::MediaTooLarge);
    // Alice holds 20 MiB + 300 KiB of her 40 MiB: 20 MiB more is over.
    let over = MediaRequest::UploadStart { blake3: [2; 32], size: 20 * MIB, mime: "a/b".into() };
    assert_eq!(code_of(&ask(&alice, over).await), EdgeErrorCode::QuotaExceeded);
    let (code, _) = refused(alice.upload(Bytes::from(random(20 * MIB as usize)), "a/b").await);
    assert_eq!(code, EdgeErrorCode::QuotaExceeded);
    // Bob's quota counts what he uploaded (the deduplicated 20 MiB): 19 MiB more fits.
    let fits = MediaRequest::UploadStart { blake3: [3; 32], size: 19 * MIB, mime: "a/b".into() };
    assert!(matches!(ask(&bob, fits).await, MediaReply::UploadReady { have: 0, .. }));
    let unknown = MediaRequest::DownloadStart { blake3: [4; 32], offset: 0 };
    assert_eq!(code_of(&ask(&bob, unknown).await), EdgeErrorCode::UnknownMedia);
    let past_end = MediaRequest::DownloadStart { blake3: small_hash, offset: 1 << 30 };
    assert_eq!(code_of(&ask(&bob, past_end).await), EdgeErrorCode::BadMediaHeader);
    let chunk_first = MediaRequest::Chunk(Chunk::new(0, Bytes::from_static(b"x")));
    assert_eq!(code_of(&ask(&bob, chunk_first).await), EdgeErrorCode::BadMediaHeader);
    let no_mime = MediaRequest::UploadStart { blake3: [5; 32], size: 10, mime: String::new() };
    assert_eq!(code_of(&ask(&bob, no_mime).await), EdgeErrorCode::BadMediaHeader);

    // ---- an image with a thumbnail, sent and received as a message ----
    let img = image::RgbImage::from_fn(800, 600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 99]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let (attachment, _) = within("an image upload", alice.upload_file(&png, "photo.png")).await.unwrap();
    assert_eq!(attachment.mime, "image/png");
    let media = attachment.media_ref();
    let content = Content { text: "look".into(), attachment: Some(attachment.clone()) };
    let sent = alice.send_with_media(Recipient::User(bob_id.user), content.encode(), media.clone()).await.unwrap();
    let got = messages(&mut bob_events, 1, Duration::from_secs(20)).await;
    let received = Content::decode(&got[0].ciphertext);
    assert_eq!(received, content);
    let thumb = received.attachment.as_ref().unwrap().thumbnail.as_ref().expect("a thumbnail");
    let decoded = image::load_from_memory_with_format(thumb, image::ImageFormat::Jpeg).expect("a JPEG");
    assert!(decoded.width() <= 160 && decoded.height() <= 160 && decoded.width() > 0);
    let file = within("the image download", bob.download_file(received.attachment.as_ref().unwrap())).await.unwrap();
    assert_eq!(file, png);
    // The log holds the media reference beside the message (the server sees hash, size and type only).
    let chat = ChatId::direct(alice_id.user, bob_id.user);
    let records = stack.partition_records(&Key::Chat(chat)).await.unwrap();
    let logged = records.iter().find_map(|r| match &r.event.body {
        EventBody::MessageSent { seq, media, .. } if *seq == sent.seq => Some(media.clone()),
        _ => None,
    });
    assert_eq!(logged, Some(Some(media)));
}

/// `chorus media gc` (a real process) against the deployment's log and the
/// edge's store: it deletes what no live message or avatar references once
/// past the grace period, and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_deletes_unreferenced_objects_past_the_grace_period_and_keeps_referenced_and_recent_ones() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("media-store");
    let stack = stack(dir.path(), &store).await;
    let alice_id = stack.register(0, "+15550001411").await.unwrap();
    let bob_id = stack.register(0, "+15550001412").await.unwrap();
    let (alice, _a) = stack.connect(0, alice_id).await;
    let (bob, _b) = stack.connect(0, bob_id).await;
    let up = |c: &Client| {
        let c = c.clone();
        async move { within("an upload", c.upload_file(&random(200 << 10), "f.bin")).await.unwrap().0 }
    };
    // Referenced by a message.
    let kept = up(&alice).await;
    let content = Content { text: String::new(), attachment: Some(kept.clone()) };
    alice.send_with_media(Recipient::User(bob_id.user), content.encode(), kept.media_ref()).await.unwrap();
    // Referenced by nothing.
    let orphan = up(&alice).await;
    // An avatar, then replaced by another: the first is no longer referenced.
    let avatar1 = up(&bob).await;
    bob.set_profile("bob", "", Some(avatar1.media_ref())).await.unwrap();
    let avatar2 = up(&bob).await;
    bob.set_profile("bob", "", Some(avatar2.media_ref())).await.unwrap();
    // The uploads are in the uploaders' partitions.
    let records = stack.partition_records(&Key::User(alice_id.user)).await.unwrap();
    let uploaded: Vec<[u8; 32]> = records
        .iter()
        .filter_map(|r| match &r.event.body {
            EventBody::MediaUploaded { user, blake3, .. } if *user == alice_id.user => Some(*blake3),
            _ => None,
        })
        .collect();
    assert!(uploaded.contains(&kept.blake3) && uploaded.contains(&orphan.blake3), "{uploaded:?}");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Unreferenced but recent.
    let fresh = up(&alice).await;
    assert_eq!(objects(&store).len(), 5);

    let gc = |dry_run: bool| {
        let mut cmd = std::process::Command::new(chorus_binary());
        cmd.args(["media", "gc", "--node", &stack.cluster.client_addrs()[0]])
            .args(stack.cluster.operator_args())
            .arg("--dir")
            .arg(&store)
            .args(["--grace-ms", "3000"]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        cmd.output().expect("run chorus media gc")
    };
    let o = gc(true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(objects(&store).len(), 5, "a dry run deletes nothing");
    let o = gc(false);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("5 objects: 2 deleted, 3 kept"), "{out}");
    let mut left: Vec<String> =
        objects(&store).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    left.sort();
    let mut expected: Vec<String> = [&kept, &avatar2, &fresh].iter().map(|a| hex::encode(a.blake3)).collect();
    expected.sort();
    assert_eq!(left, expected);
    // Gone for clients too; the kept one still downloads and decrypts.
    let (code, _) = refused(bob.download(&orphan.media_ref()).await);
    assert_eq!(code, EdgeErrorCode::UnknownMedia);
    let (code, _) = refused(alice.download(&avatar1.media_ref()).await);
    assert_eq!(code, EdgeErrorCode::UnknownMedia);
    assert_eq!(bob.download_file(&kept).await.unwrap().len(), 200 << 10);
}
