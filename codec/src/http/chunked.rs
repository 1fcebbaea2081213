//! `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1), decoded in place.
//!
//! The decoder is a byte-level state machine: it never copies data, it hands back
//! slices of the caller's buffer. Chunk extensions and trailer fields are skipped, each
//! under a byte limit; bare LF line endings are refused (a smuggling vector).

use crate::error::Error;

/// Most hex digits in a chunk size (u64).
const SIZE_DIGITS_MAX: u8 = 16;
/// Most bytes of chunk extensions on one chunk line.
pub const CHUNK_EXT_LEN_MAX: usize = 1024;
/// Most bytes of trailer fields after the last chunk.
pub const TRAILER_LEN_MAX: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping `;ext` bytes up to CR.
    Extension {
        size: u64,
    },
    /// Saw CR after the size line, expecting LF.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerLineStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR of a trailer line, expecting LF; `blank` if it was the final blank line.
    TrailerLf {
        blank: bool,
    },
    Done,
}

/// What one [`ChunkedDecoder::step`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedStep<'a> {
    /// Body bytes (a slice of the input).
    Data(&'a [u8]),
    /// The input is used up; feed more.
    NeedMore,
    /// The body is complete; bytes after it belong to the next request.
    Done,
}

/// Incremental decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    ext_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

fn bad(reason: &'static str) -> Error {
    Error::BadChunkedBody { reason }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            ext_len: 0,
            trailer_len: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from the front of `input`; returns how many bytes were consumed and what
    /// they yielded. Call in a loop until `NeedMore` or `Done`.
    pub fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, ChunkedStep<'a>), Error> {
        let mut used = 0;
        while used < input.len() || matches!(self.state, State::Done) {
            if let State::Done = self.state {
                return Ok((used, ChunkedStep::Done));
            }
            if let State::Data { remaining } = self.state {
                let take = remaining.min((input.len() - used) as u64) as usize;
                let data = &input[used..used + take];
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                return Ok((used + take, ChunkedStep::Data(data)));
            }
            self.control_byte(input[used])?;
            used += 1;
        }
        Ok((used, ChunkedStep::NeedMore))
    }

    fn control_byte(&mut self, b: u8) -> Result<(), Error> {
        self.state = match self.state {
            State::Size { size, digits } => match (b as char).to_digit(16) {
                Some(_) if digits == SIZE_DIGITS_MAX => {
                    return Err(bad("chunk size over 16 hex digits"))
                }
                Some(d) => State::Size {
                    size: (size << 4) | u64::from(d),
                    digits: digits + 1,
                },
                None if digits == 0 => return Err(bad("chunk size is not hex")),
                None if b == b'\r' => State::SizeLf { size },
                None if b == b';' || b == b' ' || b == b'\t' => State::Extension { size },
                None => return Err(bad("junk after chunk size")),
            },
            State::Extension { size } => {
                self.ext_len += 1;
                match b {
                    _ if self.ext_len > CHUNK_EXT_LEN_MAX => {
                        return Err(bad("chunk extension too long"))
                    }
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(bad("bare LF in chunk line")),
                    _ => State::Extension { size },
                }
            }
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err(bad("chunk line not ended by CRLF"));
                }
                self.ext_len = 0;
                if size == 0 {
                    State::TrailerLineStart
                } else {
                    State::Data { remaining: size }
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
            State::DataCr | State::DataLf => return Err(bad("chunk data not followed by CRLF")),
            State::TrailerLineStart | State::TrailerLine => {
                self.trailer_len += 1;
                let at_start = self.state == State::TrailerLineStart;
                match b {
                    _ if self.trailer_len > TRAILER_LEN_MAX => {
                        return Err(bad("trailer section too long"))
                    }
                    b'\r' => State::TrailerLf { blank: at_start },
                    b'\n' => return Err(bad("bare LF in trailer")),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf { blank } => match b {
                b'\n' if blank => State::Done,
                b'\n' => State::TrailerLineStart,
                _ => return Err(bad("trailer line not ended by CRLF")),
            },
            State::Data { .. } | State::Done => unreachable!("handled by step"),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(wire: &[u8], piece: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut avail = piece.min(wire.len());
        loop {
            let (n, step) = dec.step(&wire[pos..avail])?;
            pos += n;
            match step {
                ChunkedStep::Data(d) => body.extend_from_slice(d),
                ChunkedStep::Done => return Ok((body, pos)),
                ChunkedStep::NeedMore if avail == wire.len() => return Err(bad("eof")),
                ChunkedStep::NeedMore => avail = (avail + piece).min(wire.len()),
            }
        }
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let wire = b"4;name=val\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (body, used) = decode_all(wire, piece).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&wire[used..], b"NEXT");
        }
    }

    #[test]
    fn refuses_malformed_bodies() {
        let cases: [(&[u8], &str); 7] = [
            (b"zz\r\n", "malformed chunked body: chunk size is not hex"),
            (
                b"4\nWiki\r\n0\r\n\r\n",
                "malformed chunked body: junk after chunk size",
            ),
            (
                b"4\r\nWikiX\r\n",
                "malformed chunked body: chunk data not followed by CRLF",
            ),
            (
                b"11111111111111111\r\n",
                "malformed chunked body: chunk size over 16 hex digits",
            ),
            (
                b"4\rX",
                "malformed chunked body: chunk line not ended by CRLF",
            ),
            (
                b"0\r\nX: 1\n\r\n",
                "malformed chunked body: bare LF in trailer",
            ),
            (
                b"1;a\nb\r\n",
                "malformed chunked body: bare LF in chunk line",
            ),
        ];
        for (wire, message) in cases {
            let err = decode_all(wire, wire.len()).unwrap_err();
            assert_eq!(
                err.to_string(),
                message,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!(err.code().status(), 400);
        }
        let long_ext = format!("1;{}\r\n", "a".repeat(CHUNK_EXT_LEN_MAX + 1));
        assert!(decode_all(long_ext.as_bytes(), 5).is_err());
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(TRAILER_LEN_MAX));
        assert!(decode_all(long_trailer.as_bytes(), 100).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_any_chunking(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..8),
            piece in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (body, used) = decode_all(&wire, piece).unwrap();
            prop_assert_eq!(body, chunks.concat());
            prop_assert_eq!(used, wire.len());
        }

        #[test]
        fn arbitrary_input_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&wire, 7);
        }
    }
}
