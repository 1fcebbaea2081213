//! COMP payloads: zstd inflate with a hard output bound and a ratio bound.
//!
//! The bound is `min(8 × max_frame, ratio_max × compressed_len)`. Output is produced in
//! steps of at most [`INFLATE_STEP_BYTES`] and decoding stops the moment it passes the
//! bound, so a bomb costs at most `bound + one step` of memory and never inflates in full.
//! The decoder's window is capped too, so a frame cannot make zstd allocate a 128 MiB
//! window for a few bytes of input.

use bytes::Bytes;
use zstd::stream::raw::{DParameter, Decoder, Operation};

use crate::error::Error;

/// Output bound as a multiple of `max_frame` (OAP-1.md).
pub const INFLATE_FRAME_MULTIPLE: u64 = 8;
/// Default ratio bound: output at most 10 × the compressed size.
pub const INFLATE_RATIO_DEFAULT: u32 = 10;
/// Largest zstd window accepted: 2^23 = 8 MiB = 8 × the protocol's max_frame.
pub const INFLATE_WINDOW_LOG_MAX: u32 = 23;
/// Output is produced in steps of this size.
pub const INFLATE_STEP_BYTES: usize = 64 * 1024;

/// A reusable zstd inflater. Its context (~100 KiB) and, once used, its window buffer
/// (up to 2^[`INFLATE_WINDOW_LOG_MAX`] bytes) stay allocated: keep one per thread, not
/// one per connection.
pub struct Inflater {
    decoder: Decoder<'static>,
    ratio_max: u32,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("ratio_max", &self.ratio_max)
            .finish_non_exhaustive()
    }
}

fn corrupt(e: std::io::Error) -> Error {
    Error::InflateCorrupt {
        reason: e.to_string(),
    }
}

impl Inflater {
    pub fn new(ratio_max: u32) -> Result<Inflater, Error> {
        let mut decoder = Decoder::new().map_err(corrupt)?;
        decoder
            .set_parameter(DParameter::WindowLogMax(INFLATE_WINDOW_LOG_MAX))
            .map_err(corrupt)?;
        Ok(Inflater {
            decoder,
            ratio_max: ratio_max.max(1),
        })
    }

    /// The output bound for `compressed_len` bytes of input on a connection whose
    /// `max_frame` is given.
    pub fn bound(&self, compressed_len: usize, max_frame: u32) -> u64 {
        let by_frame = INFLATE_FRAME_MULTIPLE * u64::from(max_frame);
        let by_ratio = u64::from(self.ratio_max).saturating_mul(compressed_len as u64);
        by_frame.min(by_ratio)
    }

    /// Inflates one COMP payload, or fails with `too_large` as soon as the output passes
    /// the bound.
    pub fn inflate(&mut self, compressed: &[u8], max_frame: u32) -> Result<Bytes, Error> {
        self.inflate_at_most(compressed, max_frame, u64::MAX)
    }

    /// As [`Inflater::inflate`], with the bound lowered to `cap` bytes (for payloads
    /// known to be small, such as a request's START).
    pub fn inflate_at_most(
        &mut self,
        compressed: &[u8],
        max_frame: u32,
        cap: u64,
    ) -> Result<Bytes, Error> {
        let bound = self.bound(compressed.len(), max_frame).min(cap);
        let too_large = || Error::InflateTooLarge {
            compressed_len: compressed.len(),
            bound,
        };
        self.decoder.reinit().map_err(corrupt)?;
        let mut out: Vec<u8> = Vec::new();
        let mut input = compressed;
        loop {
            let produced = out.len();
            // One byte past the bound is enough to know the bound is broken.
            let room = (bound + 1 - produced as u64).min(INFLATE_STEP_BYTES as u64) as usize;
            out.resize(produced + room, 0);
            let status = self
                .decoder
                .run_on_buffers(input, &mut out[produced..])
                .map_err(corrupt)?;
            out.truncate(produced + status.bytes_written);
            input = &input[status.bytes_read..];
            if out.len() as u64 > bound {
                return Err(too_large());
            }
            let frame_done = status.remaining == 0;
            if frame_done && input.is_empty() {
                return Ok(Bytes::from(out));
            }
            let stalled = status.bytes_read == 0 && status.bytes_written == 0;
            if stalled && input.is_empty() {
                return Err(Error::InflateCorrupt {
                    reason: "truncated zstd frame".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_FRAME_BYTES;

    fn compress(data: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(data, 3).unwrap()
    }

    #[test]
    fn inflates_within_bounds() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 7) as u8)
            .collect();
        let packed = compress(&data);
        let mut inf = Inflater::new(INFLATE_RATIO_DEFAULT).unwrap();
        assert!(
            packed.len() * 10 >= data.len(),
            "test data compresses too well"
        );
        assert_eq!(
            &inf.inflate(&packed, MAX_FRAME_BYTES).unwrap()[..],
            &data[..]
        );
        // The inflater is reusable.
        assert_eq!(
            &inf.inflate(&packed, MAX_FRAME_BYTES).unwrap()[..],
            &data[..]
        );
    }

    #[test]
    fn ratio_bomb_is_refused_without_inflating_it() {
        let zeros = vec![0u8; 4 << 20];
        let packed = compress(&zeros);
        let mut inf = Inflater::new(INFLATE_RATIO_DEFAULT).unwrap();
        let err = inf.inflate(&packed, MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(
            err,
            Error::InflateTooLarge {
                compressed_len: packed.len(),
                bound: packed.len() as u64 * 10
            }
        );
        assert_eq!(err.code().as_str(), "too_large");
    }

    #[test]
    fn frame_multiple_bound_applies_even_with_a_generous_ratio() {
        let data: Vec<u8> = (0..(9u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let packed = compress(&data);
        let mut inf = Inflater::new(u32::MAX).unwrap();
        let err = inf.inflate(&packed, MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(
            err,
            Error::InflateTooLarge {
                compressed_len: packed.len(),
                bound: 8 * u64::from(MAX_FRAME_BYTES)
            }
        );
    }

    #[test]
    fn a_cap_lowers_the_bound() {
        let data = vec![5u8; 5000];
        let packed = compress(&data);
        let mut inf = Inflater::new(u32::MAX).unwrap();
        let err = inf
            .inflate_at_most(&packed, MAX_FRAME_BYTES, 4096)
            .unwrap_err();
        assert_eq!(
            err,
            Error::InflateTooLarge {
                compressed_len: packed.len(),
                bound: 4096
            }
        );
        let ok = inf.inflate_at_most(&packed, MAX_FRAME_BYTES, 5000).unwrap();
        assert_eq!(ok.len(), 5000);
    }

    #[test]
    fn garbage_and_truncation_are_bad_frames() {
        // 1000 equal bytes compress ~50:1; allow that ratio so only corruption can fail.
        let mut inf = Inflater::new(100).unwrap();
        let err = inf
            .inflate(b"definitely not zstd", MAX_FRAME_BYTES)
            .unwrap_err();
        assert_eq!(err.code().as_str(), "bad_frame");
        let packed = compress(&[7u8; 1000]);
        let err = inf
            .inflate(&packed[..packed.len() - 3], MAX_FRAME_BYTES)
            .unwrap_err();
        assert_eq!(err.code().as_str(), "bad_frame", "{err}");
        // A failed inflate does not poison the next one.
        assert_eq!(inf.inflate(&packed, MAX_FRAME_BYTES).unwrap().len(), 1000);
    }
}
