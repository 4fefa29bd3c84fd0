//! What a message's plaintext carries (issue 14): text and an attachment's
//! key, hash, size, type, file name and thumbnail, encoded as bytes the
//! SDK's send then encrypts end to end. The server sees only the media
//! reference (hash, size, type) beside the ciphertext.
//!
//! Files are encrypted with their own random key (ChaCha20-Poly1305, in
//! segments of 64 KiB, each sealed with its index and whether it is the
//! last as the nonce, so that segments cannot be reordered, dropped or
//! cut off); the ciphertext is what is uploaded.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::types::{Error, Result};

/// Plaintext bytes per sealed segment.
const SEGMENT: usize = 64 << 10;
/// Tag bytes per segment.
const TAG: usize = 16;
/// The first bytes of an encoded [`Content`].
const MAGIC: &[u8; 4] = b"CHC1";
/// Longest side of a thumbnail, in pixels.
const THUMB_SIDE: u32 = 160;

/// An attachment: what a recipient needs to fetch and decrypt it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's own key.
    pub key: [u8; 32],
    /// BLAKE3 of the ciphertext (the object's address).
    pub blake3: [u8; 32],
    /// Bytes of the ciphertext.
    pub size: u64,
    pub mime: String,
    pub file_name: String,
    /// A small JPEG, for images.
    pub thumbnail: Option<Vec<u8>>,
}

impl Attachment {
    /// The media reference the server sees.
    pub fn media_ref(&self) -> chorus_schema::MediaRef {
        chorus_schema::MediaRef { blake3: self.blake3, size: self.size, mime: self.mime.clone() }
    }
}

/// A message's plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub text: String,
    pub attachment: Option<Attachment>,
}

impl Content {
    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Serializing plain structs into a Vec does not fail.
        out.extend(bincode::serialize(self).unwrap_or_default());
        out
    }

    /// The content of received bytes; bytes that are not an encoded
    /// content are taken as plain text (older clients).
    pub fn decode(bytes: &[u8]) -> Content {
        match bytes.strip_prefix(MAGIC.as_slice()).and_then(|b| bincode::deserialize(b).ok()) {
            Some(c) => c,
            None => Content { text: String::from_utf8_lossy(bytes).into_owned(), attachment: None },
        }
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

/// Encrypts `plain` with a new random key: `(key, ciphertext)`.
pub fn encrypt_file(plain: &[u8]) -> ([u8; 32], Vec<u8>) {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let segments = plain.len().div_ceil(SEGMENT).max(1);
    let mut out = Vec::with_capacity(plain.len() + segments * TAG);
    for i in 0..segments {
        let start = i * SEGMENT;
        let seg = plain.get(start..(start + SEGMENT).min(plain.len())).unwrap_or_default();
        // Encryption in memory fails only above 2^38 bytes per segment.
        let sealed = cipher.encrypt(&nonce(i as u64, i + 1 == segments), seg).unwrap_or_default();
        out.extend_from_slice(&sealed);
    }
    (key, out)
}

/// Decrypts what [`encrypt_file`] made.
///
/// # Errors
/// [`Error::Protocol`] if any segment fails authentication (wrong key,
/// tampered, truncated or reordered).
pub fn decrypt_file(key: &[u8; 32], ciphertext: &[u8]) -> Result<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let segments = ciphertext.len().div_ceil(SEGMENT + TAG).max(1);
    let mut out = Vec::with_capacity(ciphertext.len());
    for i in 0..segments {
        let start = i * (SEGMENT + TAG);
        let seg = ciphertext.get(start..(start + SEGMENT + TAG).min(ciphertext.len())).unwrap_or_default();
        let plain = cipher
            .decrypt(&nonce(i as u64, i + 1 == segments), seg)
            .map_err(|_| Error::Protocol(format!("the attachment's segment {i} does not decrypt")))?;
        out.extend_from_slice(&plain);
    }
    Ok(out)
}

/// A small JPEG of an image (`None` if `bytes` is not an image the SDK reads: JPEG, PNG).
pub fn thumbnail(bytes: &[u8]) -> Option<Vec<u8>> {
    let img = image::load_from_memory(bytes).ok()?;
    let thumb = img.thumbnail(THUMB_SIDE, THUMB_SIDE).to_rgb8();
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 60);
    thumb.write_with_encoder(encoder).ok()?;
    Some(out)
}

/// A MIME type from a file name's extension.
pub fn mime_for(file_name: &str) -> &'static str {
    let ext = file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

impl crate::Client {
    /// Encrypts `plain` with a new key, makes a thumbnail if it is an
    /// image, uploads the ciphertext and returns the attachment to put in
    /// a [`Content`] (send it with [`crate::Client::send_with_media`] and
    /// [`Attachment::media_ref`]).
    ///
    /// # Errors
    /// As [`crate::Client::upload`].
    pub async fn upload_file(&self, plain: &[u8], file_name: &str) -> Result<(Attachment, crate::media::Uploaded)> {
        let mime = mime_for(file_name);
        let thumbnail = if mime.starts_with("image/") { thumbnail(plain) } else { None };
        let (key, ciphertext) = encrypt_file(plain);
        let uploaded = self.upload(bytes::Bytes::from(ciphertext), mime).await?;
        let attachment = Attachment {
            key,
            blake3: uploaded.media.blake3,
            size: uploaded.media.size,
            mime: mime.to_owned(),
            file_name: file_name.to_owned(),
            thumbnail,
        };
        Ok((attachment, uploaded))
    }

    /// Downloads and decrypts an attachment.
    ///
    /// # Errors
    /// As [`crate::Client::download`], or it does not decrypt.
    pub async fn download_file(&self, attachment: &Attachment) -> Result<Vec<u8>> {
        let ciphertext = self.download(&attachment.media_ref()).await?;
        decrypt_file(&attachment.key, &ciphertext)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_tampering_is_caught() {
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (key, c) = encrypt_file(&plain);
            assert_eq!(decrypt_file(&key, &c).unwrap(), plain, "{len}");
            let mut bad = c.clone();
            bad[0] ^= 1;
            assert!(decrypt_file(&key, &bad).is_err());
            if len > SEGMENT {
                // Cut off after the first segment: the last flag catches it.
                assert!(decrypt_file(&key, &c[..SEGMENT + TAG]).is_err());
            }
            assert!(decrypt_file(&[9; 32], &c).is_err());
        }
    }

    #[test]
    fn content_round_trips_and_plain_text_stays_text() {
        let c = Content {
            text: "hi".into(),
            attachment: Some(Attachment {
                key: [1; 32],
                blake3: [2; 32],
                size: 3,
                mime: "image/png".into(),
                file_name: "a.png".into(),
                thumbnail: Some(vec![1, 2]),
            }),
        };
        assert_eq!(Content::decode(&c.encode()), c);
        assert_eq!(Content::decode(b"hello").text, "hello");
    }

    #[test]
    fn an_image_gets_a_jpeg_thumbnail() {
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let thumb = thumbnail(&png).unwrap();
        let decoded = image::load_from_memory_with_format(&thumb, image::ImageFormat::Jpeg).unwrap();
        assert!(decoded.width() <= THUMB_SIDE && decoded.height() <= THUMB_SIDE);
        assert!(thumbnail(b"not an image").is_none());
    }
}
