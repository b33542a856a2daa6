//! Stream framing: each control-stream message is `varint(len) ++ body`.
//!
//! The length is an unsigned LEB128 varint of at most 5 bytes (a `u32`, the same
//! encoding postcard uses for integers). [`FrameDecoder`] checks a declared length
//! against the maximum *before* buffering the body, so a peer cannot make the
//! reader allocate more than one maximum-size frame plus one read chunk.

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use thiserror::Error;

/// Most bytes a varint-encoded `u32` can take.
pub const MAX_VARINT_LEN: usize = 5;

/// Why a stream could not be split into frames. After any of these the stream is
/// out of step and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {declared} bytes exceeds the maximum of {max}")]
    TooLarge { declared: u64, max: u32 },
    #[error("frame length prefix is not a valid varint")]
    BadLength,
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint_u32(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint `u32` from the front of `input`.
///
/// Returns `Ok(None)` when `input` ends before the varint does, or
/// `Ok(Some((value, bytes_used)))`.
pub fn get_varint_u32(input: &[u8]) -> Result<Option<(u32, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(value)
                .map(|v| Some((v, i + 1)))
                .map_err(|_| FrameError::BadLength);
        }
    }
    if input.len() >= MAX_VARINT_LEN {
        Err(FrameError::BadLength)
    } else {
        Ok(None)
    }
}

/// Encodes `message` as one frame: varint length prefix, then the postcard body.
///
/// One allocation: the body is written after room for the longest prefix, and the
/// prefix is written just before it.
pub fn encode_frame<T: Serialize>(message: &T) -> Bytes {
    let buf = vec![0u8; MAX_VARINT_LEN];
    let mut buf = match postcard::to_extend(message, buf) {
        Ok(buf) => buf,
        // Serializing our own message types into a Vec cannot fail: they hold no
        // maps with non-string keys, no unsized sequences, and Vec grows as needed.
        Err(e) => unreachable!("postcard cannot fail to encode a protocol message: {e}"),
    };
    let body_len = buf.len() - MAX_VARINT_LEN;
    let mut prefix = Vec::with_capacity(MAX_VARINT_LEN);
    put_varint_u32(&mut prefix, body_len as u32);
    let start = MAX_VARINT_LEN - prefix.len();
    buf[start..MAX_VARINT_LEN].copy_from_slice(&prefix);
    buf.drain(..start);
    Bytes::from(buf)
}

/// Splits a byte stream into frame bodies.
///
/// Feed it what the stream delivers with [`extend`](Self::extend), then take
/// complete frames with [`next_frame`](Self::next_frame) until it returns `None`.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
    buf: BytesMut,
    /// Length of the frame whose prefix has been read, if any.
    pending_len: Option<usize>,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            max_frame_bytes,
            buf: BytesMut::new(),
            pending_len: None,
        }
    }

    /// Changes the largest frame accepted from now on (e.g. to the limit a peer
    /// announced). A frame whose length was already read keeps its check.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let len = match self.pending_len {
            Some(len) => len,
            None => {
                let Some((len, used)) = get_varint_u32(&self.buf)? else {
                    return Ok(None);
                };
                if len > self.max_frame_bytes {
                    return Err(FrameError::TooLarge {
                        declared: u64::from(len),
                        max: self.max_frame_bytes,
                    });
                }
                self.buf.advance(used);
                let len = len as usize;
                // Safe to reserve now: `len` is within the configured maximum.
                self.buf.reserve(len.saturating_sub(self.buf.len()));
                self.pending_len = Some(len);
                len
            }
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        self.pending_len = None;
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_width() {
        for v in [
            0u32,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            u32::MAX,
        ] {
            let mut out = Vec::new();
            put_varint_u32(&mut out, v);
            assert_eq!(get_varint_u32(&out), Ok(Some((v, out.len()))));
            // A truncated varint asks for more bytes instead of failing.
            assert_eq!(get_varint_u32(&out[..out.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn varint_rejects_overflow_and_overlong() {
        assert_eq!(
            get_varint_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(FrameError::BadLength)
        );
        assert_eq!(
            get_varint_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn decoder_splits_frames_across_arbitrary_chunks() {
        let frames: Vec<Bytes> = (0..50u32)
            .map(|i| encode_frame(&(i, "x".repeat(i as usize * 7))))
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        for chunk in [1usize, 2, 3, 7, 64, 1000] {
            let mut dec = FrameDecoder::new(1 << 20);
            let mut bodies = Vec::new();
            for piece in stream.chunks(chunk) {
                dec.extend(piece);
                while let Some(body) = dec.next_frame().expect("valid stream") {
                    bodies.push(body);
                }
            }
            assert_eq!(bodies.len(), frames.len(), "chunk size {chunk}");
            for (i, body) in bodies.iter().enumerate() {
                let (n, s): (u32, String) = postcard::from_bytes(body).expect("decodes");
                assert_eq!(n as usize, i);
                assert_eq!(s.len(), i * 7);
            }
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn decoder_refuses_oversized_frame_before_its_body_arrives() {
        let mut dec = FrameDecoder::new(1000);
        let mut prefix = Vec::new();
        put_varint_u32(&mut prefix, 1001);
        dec.extend(&prefix);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                declared: 1001,
                max: 1000
            })
        );
        // Nothing of the declared size was reserved.
        assert!(dec.buf.capacity() < 1000);
    }

    #[test]
    fn decoder_accepts_frame_at_the_limit() {
        let mut dec = FrameDecoder::new(1000);
        let mut stream = Vec::new();
        put_varint_u32(&mut stream, 1000);
        stream.extend(std::iter::repeat_n(7u8, 1000));
        dec.extend(&stream);
        assert_eq!(dec.next_frame().expect("ok").map(|b| b.len()), Some(1000));
    }
}
