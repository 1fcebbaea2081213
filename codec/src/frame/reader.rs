//! The read side of an OAP/1 connection without the I/O: a [`FrameDecoder`] and the read
//! buffer it is fed from, so a blocking loop and an async one are the same few lines.
//!
//! ```
//! # use ron_codec::frame::FrameReader;
//! # #[derive(Debug)]
//! # enum ReadError { Io(std::io::Error), Frame(ron_codec::Error), Closed }
//! fn read_frame(
//!     stream: &mut impl std::io::Read,
//!     reader: &mut FrameReader,
//! ) -> Result<ron_codec::Frame, ReadError> {
//!     loop {
//!         if let Some(frame) = reader.next_frame().map_err(ReadError::Frame)? {
//!             return Ok(frame);
//!         }
//!         // An async loop awaits this read; nothing else changes.
//!         let n = stream.read(reader.read_buf()).map_err(ReadError::Io)?;
//!         if n == 0 {
//!             // Inside a frame: Error::TruncatedFrame; between frames: a clean close.
//!             reader.end_of_stream().map_err(ReadError::Frame)?;
//!             return Err(ReadError::Closed);
//!         }
//!         reader.filled(n);
//!     }
//! }
//! ```
//!
//! Memory is the read buffer (its size is fixed at construction) plus what the decoder
//! holds: one header and at most one validated body, never more than `max_frame`.

use crate::error::Error;
use crate::frame::{Frame, FrameDecoder};

/// Read buffer size when the caller has no better idea.
pub const READ_BUF_BYTES_DEFAULT: usize = 64 * 1024;

/// A [`FrameDecoder`] with its read buffer: bytes go in through [`FrameReader::read_buf`]
/// and [`FrameReader::filled`] (or [`FrameReader::feed`]), whole validated frames come
/// out of [`FrameReader::next_frame`].
#[derive(Debug)]
pub struct FrameReader {
    decoder: FrameDecoder,
    buf: Box<[u8]>,
    /// Bytes read and not yet decoded: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    /// A reader of frames up to `max_frame` (clamped to the protocol maximum) reading
    /// at most `read_buf_bytes` (at least 1) at a time.
    pub fn new(max_frame: u32, read_buf_bytes: usize) -> FrameReader {
        FrameReader {
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; read_buf_bytes.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The next whole frame from the bytes read so far. `Ok(None)`: every byte read has
    /// been taken in and a frame is still incomplete, read more. An error is final
    /// (the decoder stays failed; [`FrameReader::decoder`] has the rejected header).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        let mut input = &self.buf[self.start..self.end];
        let before = input.len();
        let decoded = self.decoder.decode(&mut input);
        self.start += before - input.len();
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        decoded
    }

    /// Where the next read goes. After [`FrameReader::next_frame`] returned `Ok(None)`
    /// this is the whole buffer; it is empty only if the caller read until the buffer
    /// was full without taking frames out.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        &mut self.buf[self.end..]
    }

    /// Records that the last read put `n` bytes at the front of [`FrameReader::read_buf`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `bytes` as the buffer has room for and returns how many it
    /// took: for a caller whose bytes arrive in its own buffers. Take frames out to make
    /// room for the rest.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let room = self.read_buf();
        let n = room.len().min(bytes.len());
        room[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The transport has ended: fine between frames, [`Error::TruncatedFrame`] inside one
    /// (bytes still buffered count as inside one).
    pub fn end_of_stream(&self) -> Result<(), Error> {
        if self.decoder.is_idle() && self.start == self.end {
            return Ok(());
        }
        let missing = self
            .decoder
            .bytes_wanted()
            .saturating_sub(self.end - self.start);
        Err(Error::TruncatedFrame {
            missing: missing.max(1),
        })
    }

    /// Bytes read and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The decoder: its limit, whether it is between frames, the rejected header.
    pub fn decoder(&self) -> &FrameDecoder {
        &self.decoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Flags, FrameMeta, APP_OBJECTS, HEADER_LEN, MAX_FRAME_BYTES};
    use bytes::{Bytes, BytesMut};

    fn frames() -> Vec<Frame> {
        let meta = |flags, corr_id| FrameMeta {
            flags,
            code: 200,
            app_proto_id: APP_OBJECTS,
            tenant_id: 3,
            corr_id,
        };
        vec![
            Frame::new(meta(Flags::RESP, 1), Bytes::new(), Bytes::new(), 4096).unwrap(),
            Frame::new(
                meta(Flags::RESP | Flags::START, 2),
                Bytes::from_static(b"token"),
                Bytes::from(vec![7u8; 300]),
                4096,
            )
            .unwrap(),
            Frame::new(
                meta(Flags::RESP | Flags::END, 2),
                Bytes::new(),
                Bytes::from_static(b"{}"),
                4096,
            )
            .unwrap(),
        ]
    }

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            f.encode_into(&mut out);
        }
        out.to_vec()
    }

    /// Feeds `wire` in pieces cut at `cuts`, as a read loop would, taking frames out
    /// whenever `next_frame` has one.
    fn read_all(wire: &[u8], cuts: &[usize], read_buf: usize) -> (Vec<Frame>, Result<(), Error>) {
        let mut reader = FrameReader::new(MAX_FRAME_BYTES, read_buf);
        let mut got = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&wire.len())) {
            let mut piece = &wire[from..to];
            from = to;
            while !piece.is_empty() {
                let n = reader.feed(piece);
                piece = &piece[n..];
                loop {
                    match reader.next_frame() {
                        Ok(Some(frame)) => got.push(frame),
                        Ok(None) => break,
                        Err(e) => return (got, Err(e)),
                    }
                }
                assert_eq!(reader.buffered(), 0, "Ok(None) means every byte was taken");
            }
        }
        (got, reader.end_of_stream())
    }

    #[test]
    fn frames_split_at_every_byte_boundary_come_out_whole() {
        let frames = frames();
        let wire = wire(&frames);
        for cut in 0..=wire.len() {
            for read_buf in [1, 7, HEADER_LEN, 4096] {
                let (got, end) = read_all(&wire, &[cut], read_buf);
                assert_eq!(got, frames, "cut at {cut}, buffer {read_buf}");
                assert_eq!(end, Ok(()));
            }
        }
        // Every byte its own read.
        let cuts: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(read_all(&wire, &cuts, 1).0, frames);
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated() {
        let wire = wire(&frames());
        let first = HEADER_LEN;
        for cut in 1..wire.len() {
            let (got, end) = read_all(&wire[..cut], &[], 64);
            if cut == first || cut == wire.len() - 40 {
                assert_eq!(end, Ok(()), "cut at {cut} is between frames");
                continue;
            }
            let missing = match end {
                Err(Error::TruncatedFrame { missing }) => missing,
                other => panic!("cut at {cut}: {other:?}"),
            };
            let whole: usize = got.iter().map(|f| f.header.len as usize).sum();
            assert!(whole < cut && missing >= 1, "cut at {cut}");
        }
    }

    #[test]
    fn header_errors_come_before_any_body_and_stay() {
        let mut reader = FrameReader::new(1024, 256);
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(&4096u32.to_be_bytes());
        head[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(reader.feed(&head), HEADER_LEN);
        let err = reader.next_frame().unwrap_err();
        assert_eq!(
            err,
            Error::FrameTooLarge {
                len: 4096,
                max_frame: 1024
            }
        );
        assert_eq!(reader.decoder().bytes_wanted(), 0);
        assert!(reader.decoder().rejected_header().is_some());
        assert_eq!(reader.next_frame().unwrap_err(), err);
    }

    #[test]
    fn the_read_buffer_is_whole_again_after_each_drain() {
        let wire = wire(&frames());
        let mut reader = FrameReader::new(MAX_FRAME_BYTES, 100);
        assert_eq!(reader.read_buf().len(), 100);
        let n = reader.feed(&wire);
        assert_eq!(n, 100);
        assert_eq!(reader.read_buf().len(), 0, "full until frames are taken");
        // The first frame (38 bytes) comes out; the rest is buffered in the decoder.
        assert_eq!(reader.next_frame().unwrap().unwrap().header.corr_id, 1);
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.read_buf().len(), 100);
        reader.filled(1000);
        assert_eq!(
            reader.buffered(),
            100,
            "filled never claims past the buffer"
        );
    }
}
