//! [`FrameSplitter`]: length-prefixed edge frames out of the chunks a QUIC
//! stream yields (`RecvStream::read_chunk`), without a read buffer per stream.
//!
//! A chunk usually holds whole frames: they are handed out as slices of the
//! chunk, with no copy and no allocation. Only a frame split across chunks is
//! copied, into a buffer that grows with the bytes that actually arrived (never
//! sized from the length prefix, which a client could set to the limit without
//! sending anything) and is freed as soon as the frame is complete. So an idle
//! stream holds no buffer at all.
//!
//! The wire format is [`crate::edge::write_frame`]'s: a u32 big-endian
//! length, then the frame. A length above [`MAX_EDGE_FRAME_BYTES`] is an error at
//! once, as in [`crate::edge::FrameReader`]; the stream cannot be
//! resynchronized after it.

use crate::MAX_EDGE_FRAME_BYTES;
use bytes::{Buf, Bytes};

const PREFIX: usize = 4;

/// Splits a stream of chunks into frames. See the module docs.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    /// The start of a frame that the chunks so far did not complete (its
    /// prefix included); empty, without capacity, between frames.
    partial: Vec<u8>,
}

/// The frame length announced by the prefix at the start of `buf`; `None`
/// while `buf` holds fewer than [`PREFIX`] bytes.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, crate::Error> {
    let Some(prefix) = buf.first_chunk::<PREFIX>() else { return Ok(None) };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_EDGE_FRAME_BYTES {
        return Err(crate::Error::TooLarge { what: "edge frame", len, limit: MAX_EDGE_FRAME_BYTES });
    }
    Ok(Some(len))
}

impl FrameSplitter {
    /// Feeds the next chunk of the stream; appends every frame it completes
    /// (without its length prefix) to `frames`, in stream order.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] (`what: "edge frame"`) for a length
    /// prefix above [`MAX_EDGE_FRAME_BYTES`]; the frames before it are in
    /// `frames`. Stop reading the stream.
    pub fn push(&mut self, mut chunk: Bytes, frames: &mut Vec<Bytes>) -> Result<(), crate::Error> {
        while !chunk.is_empty() {
            if !self.partial.is_empty() {
                if self.partial.len() < PREFIX {
                    let n = (PREFIX - self.partial.len()).min(chunk.len());
                    self.partial.extend_from_slice(&chunk.split_to(n));
                }
                // Still short of a prefix only when the chunk ran out.
                let Some(len) = frame_len(&self.partial)? else { return Ok(()) };
                let total = PREFIX + len;
                let n = (total - self.partial.len()).min(chunk.len());
                self.partial.extend_from_slice(&chunk.split_to(n));
                if self.partial.len() < total {
                    return Ok(());
                }
                let mut whole = Bytes::from(std::mem::take(&mut self.partial));
                whole.advance(PREFIX);
                frames.push(whole);
                continue;
            }
            let Some(len) = frame_len(&chunk)? else {
                self.partial.extend_from_slice(&chunk);
                return Ok(());
            };
            let total = PREFIX + len;
            if chunk.len() < total {
                self.partial.extend_from_slice(&chunk);
                return Ok(());
            }
            let mut frame = chunk.split_to(total);
            frame.advance(PREFIX);
            frames.push(frame);
        }
        Ok(())
    }

    /// Bytes of an incomplete frame held (0 between frames).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Bytes allocated for an incomplete frame (0 between frames).
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }
}

/// `frame` with its length prefix, as one buffer for a stream write.
///
/// # Panics
/// If `frame` is longer than `u32::MAX` (no encoder here makes one).
pub fn prefixed(frame: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(PREFIX + frame.len());
    crate::edge::write_frame(&mut out, frame);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use crate::edge::write_frame;
    use proptest::prelude::*;

    use super::*;

    fn stream(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            write_frame(&mut out, f);
        }
        out
    }

    #[test]
    fn whole_frames_in_one_chunk_are_slices_of_it() {
        let bytes = Bytes::from(stream(&[b"one".to_vec(), b"two!".to_vec()]));
        let (mut s, mut frames) = (FrameSplitter::default(), Vec::new());
        s.push(bytes.clone(), &mut frames).unwrap();
        assert_eq!(frames, vec![Bytes::from_static(b"one"), Bytes::from_static(b"two!")]);
        // Same memory as the chunk: nothing was copied.
        assert_eq!(frames[0].as_ptr(), bytes[4..].as_ptr());
        assert_eq!((s.buffered(), s.capacity()), (0, 0));
    }

    #[test]
    fn a_split_frame_is_buffered_only_until_complete() {
        let bytes = stream(&[vec![7; 1000]]);
        let (mut s, mut frames) = (FrameSplitter::default(), Vec::new());
        // Two bytes of the prefix, then the rest of it and a bit, then the end.
        s.push(Bytes::copy_from_slice(&bytes[..2]), &mut frames).unwrap();
        s.push(Bytes::copy_from_slice(&bytes[2..10]), &mut frames).unwrap();
        assert!(frames.is_empty());
        assert_eq!(s.buffered(), 10);
        assert!(s.capacity() < 1000, "sized by what arrived, not by the prefix: {}", s.capacity());
        s.push(Bytes::copy_from_slice(&bytes[10..]), &mut frames).unwrap();
        assert_eq!(frames, vec![Bytes::from(vec![7u8; 1000])]);
        assert_eq!((s.buffered(), s.capacity()), (0, 0), "freed between frames");
    }

    #[test]
    fn a_length_over_the_limit_is_an_error_before_its_body() {
        let (mut s, mut frames) = (FrameSplitter::default(), Vec::new());
        let mut bytes = stream(&[b"ok".to_vec()]);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = s.push(Bytes::from(bytes), &mut frames).unwrap_err();
        assert_eq!(frames, vec![Bytes::from_static(b"ok")]);
        assert!(matches!(e, crate::Error::TooLarge { what: "edge frame", .. }), "{e}");
        assert_eq!(crate::EdgeErrorCode::for_decode_error(&e), crate::EdgeErrorCode::FrameTooLarge);
        // Also when the prefix arrives in pieces.
        let mut s = FrameSplitter::default();
        let too_long = u32::try_from(MAX_EDGE_FRAME_BYTES + 1).unwrap().to_be_bytes();
        s.push(Bytes::copy_from_slice(&too_long[..3]), &mut frames).unwrap();
        assert!(s.push(Bytes::copy_from_slice(&too_long[3..]), &mut frames).is_err());
        // The limit itself is allowed.
        let mut s = FrameSplitter::default();
        s.push(Bytes::copy_from_slice(&u32::try_from(MAX_EDGE_FRAME_BYTES).unwrap().to_be_bytes()), &mut frames)
            .unwrap();
    }

    #[test]
    fn a_prefix_announcing_a_large_frame_holds_only_the_bytes_that_came() {
        // 16 MiB is over the limit: refused at the prefix, nothing buffered.
        let (mut s, mut frames) = (FrameSplitter::default(), Vec::new());
        let mut bytes = (16u32 << 20).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        assert!(s.push(Bytes::from(bytes), &mut frames).is_err());
        assert_eq!(s.capacity(), 0);
        // The largest allowed frame announced, 10 bytes sent: about 14 bytes held.
        let mut s = FrameSplitter::default();
        let mut bytes = u32::try_from(MAX_EDGE_FRAME_BYTES).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        s.push(Bytes::from(bytes), &mut frames).unwrap();
        assert_eq!(s.buffered(), 14);
        assert!(s.capacity() <= 64, "{} bytes allocated for 14 that came", s.capacity());
        // And in pieces: each grows the buffer by what came.
        s.push(Bytes::from(vec![2; 1000]), &mut frames).unwrap();
        assert!(s.capacity() <= 2 * 1014, "{}", s.capacity());
        assert!(frames.is_empty());
    }

    #[test]
    fn an_empty_frame_is_a_frame() {
        let (mut s, mut frames) = (FrameSplitter::default(), Vec::new());
        s.push(Bytes::from(stream(&[Vec::new(), b"x".to_vec()])), &mut frames).unwrap();
        assert_eq!(frames, vec![Bytes::new(), Bytes::from_static(b"x")]);
    }

    proptest! {
        /// However the stream is cut into chunks, the same frames come out, in order.
        #[test]
        fn any_chunking_yields_the_frames_in_order(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in proptest::collection::vec(0usize..2000, 0..30),
        ) {
            let bytes = stream(&frames);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let (mut s, mut out) = (FrameSplitter::default(), Vec::new());
            for w in cuts.windows(2) {
                s.push(Bytes::copy_from_slice(&bytes[w[0]..w[1]]), &mut out).unwrap();
            }
            let out: Vec<Vec<u8>> = out.into_iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(out, frames);
            prop_assert_eq!(s.buffered(), 0);
        }
    }
}
