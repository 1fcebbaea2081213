//! The Range request header (RFC 9110 §14.1.2, §14.2), without allocation.
//!
//! Parsing is independent of the object ([`RangeSet::parse`]); [`RangeSet::resolve`]
//! then applies the object's length. A header that does not parse, or names more than
//! [`RANGE_COUNT_MAX`] ranges, is ignored (the whole object is served), as RFC 9110
//! allows; a header whose ranges all fall past the end is unsatisfiable (416).

/// Most ranges honoured in one header; more and the header is ignored.
pub const RANGE_COUNT_MAX: usize = 16;

/// One `range-spec`, before the object length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`
    FromTo { first: u64, last: u64 },
    /// `first-`
    From { first: u64 },
    /// `-suffix_len`
    Suffix { suffix_len: u64 },
}

/// An inclusive byte range within an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Up to [`RANGE_COUNT_MAX`] items, inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges<T: Copy> {
    items: [Option<T>; RANGE_COUNT_MAX],
    count: usize,
}

impl<T: Copy> Ranges<T> {
    fn new() -> Self {
        Ranges {
            items: [None; RANGE_COUNT_MAX],
            count: 0,
        }
    }

    fn push(&mut self, item: T) -> Option<()> {
        *self.items.get_mut(self.count)? = Some(item);
        self.count += 1;
        Some(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.items[..self.count].iter().flatten().copied()
    }

    pub fn first(&self) -> Option<T> {
        self.items[0]
    }
}

/// The parsed `range-spec`s of one header.
pub type RangeSet = Ranges<RangeSpec>;

/// What to serve for a Range header against an object of known length.
// Inline on purpose: boxing the ranges would allocate on every ranged request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeResolution {
    /// Satisfiable ranges, in request order (at least one).
    Partial(Ranges<ByteRange>),
    /// No range overlaps the object: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// The object is empty and a suffix range of it is asked for: satisfiable (RFC 9110
    /// §14.1.1: a suffix range with a non-zero length is), yet no byte range can name
    /// it in a 206 — the whole, empty, object is the answer (200), as for no range.
    Whole,
}

impl RangeSet {
    /// A set of one range (OAP/1's `range` field), resolved by the same rules.
    pub fn one(spec: RangeSpec) -> RangeSet {
        let mut set = RangeSet::new();
        // A fresh set has room for one item.
        let _ = set.push(spec);
        set
    }

    /// Parses a Range value. `None` means "ignore the header": not `bytes`, bad syntax,
    /// `first > last`, a number over u64, or too many ranges.
    pub fn parse(value: &[u8]) -> Option<RangeSet> {
        let value = crate::http::head::trim(value);
        let (unit, specs) = split_once(value, b'=')?;
        if !crate::http::head::trim(unit).eq_ignore_ascii_case(b"bytes") {
            return None;
        }
        let mut set = RangeSet::new();
        for element in specs.split(|&b| b == b',') {
            let element = crate::http::head::trim(element);
            if element.is_empty() {
                continue; // RFC 9110 §5.6.1: empty list elements are allowed.
            }
            set.push(parse_spec(element)?)?;
        }
        (!set.is_empty()).then_some(set)
    }

    /// Applies the object length.
    pub fn resolve(&self, object_len: u64) -> RangeResolution {
        let mut out = Ranges::new();
        for spec in self.iter() {
            if let Some(range) = resolve_spec(spec, object_len) {
                // `push` cannot fail: there are no more resolved ranges than specs.
                let _ = out.push(range);
            }
        }
        let suffix_of_nothing =
            |spec: RangeSpec| matches!(spec, RangeSpec::Suffix { suffix_len } if suffix_len > 0);
        if out.is_empty() && object_len == 0 && self.iter().any(suffix_of_nothing) {
            RangeResolution::Whole
        } else if out.is_empty() {
            RangeResolution::Unsatisfiable
        } else {
            RangeResolution::Partial(out)
        }
    }
}

fn resolve_spec(spec: RangeSpec, object_len: u64) -> Option<ByteRange> {
    let end = object_len.checked_sub(1)?;
    match spec {
        RangeSpec::FromTo { first, last } if first <= end => Some(ByteRange {
            first,
            last: last.min(end),
        }),
        RangeSpec::From { first } if first <= end => Some(ByteRange { first, last: end }),
        RangeSpec::Suffix { suffix_len } if suffix_len > 0 => Some(ByteRange {
            first: object_len - suffix_len.min(object_len),
            last: end,
        }),
        _ => None,
    }
}

fn parse_spec(element: &[u8]) -> Option<RangeSpec> {
    let (first, last) = split_once(element, b'-')?;
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(RangeSpec::Suffix {
            suffix_len: parse_u64(last)?,
        }),
        (false, true) => Some(RangeSpec::From {
            first: parse_u64(first)?,
        }),
        (false, false) => {
            let (first, last) = (parse_u64(first)?, parse_u64(last)?);
            (first <= last).then_some(RangeSpec::FromTo { first, last })
        }
    }
}

pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub(crate) fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(header: &str, len: u64) -> Option<Vec<(u64, u64)>> {
        match RangeSet::parse(header.as_bytes())?.resolve(len) {
            RangeResolution::Partial(r) => Some(r.iter().map(|b| (b.first, b.last)).collect()),
            RangeResolution::Unsatisfiable => Some(vec![]),
            RangeResolution::Whole => None,
        }
    }

    #[test]
    fn rfc_9110_examples_against_a_10000_byte_representation() {
        // §14.1.2
        assert_eq!(resolve("bytes=0-499", 10000), Some(vec![(0, 499)]));
        assert_eq!(resolve("bytes=500-999", 10000), Some(vec![(500, 999)]));
        assert_eq!(resolve("bytes=-500", 10000), Some(vec![(9500, 9999)]));
        assert_eq!(resolve("bytes=9500-", 10000), Some(vec![(9500, 9999)]));
        assert_eq!(
            resolve("bytes=0-0,-1", 10000),
            Some(vec![(0, 0), (9999, 9999)])
        );
        assert_eq!(
            resolve("bytes= 0-999, 4500-5499, -1000", 10000),
            Some(vec![(0, 999), (4500, 5499), (9000, 9999)])
        );
        assert_eq!(
            resolve("bytes=500-600,601-999", 10000),
            Some(vec![(500, 600), (601, 999)])
        );
        assert_eq!(
            resolve("bytes=500-700,601-999", 10000),
            Some(vec![(500, 700), (601, 999)])
        );
    }

    #[test]
    fn clamps_and_unsatisfiable() {
        assert_eq!(resolve("bytes=0-99999", 100), Some(vec![(0, 99)]));
        assert_eq!(resolve("bytes=-99999", 100), Some(vec![(0, 99)]));
        assert_eq!(resolve("bytes=100-", 100), Some(vec![]));
        assert_eq!(resolve("bytes=100-200", 100), Some(vec![]));
        assert_eq!(resolve("bytes=-0", 100), Some(vec![]));
        assert_eq!(resolve("bytes=0-", 0), Some(vec![]));
        // A suffix of an empty object is satisfiable, and answered whole (200).
        assert_eq!(resolve("bytes=-5", 0), None);
        assert_eq!(resolve("bytes=-0", 0), Some(vec![]));
        // One satisfiable range is enough for 206.
        assert_eq!(resolve("bytes=200-300,0-0", 100), Some(vec![(0, 0)]));
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1-2-3",
            "items=0-1",
            "bytes=+1-2",
            "bytes=0-18446744073709551616",
            "bytes=0x10-20",
            "bytes=1 -2",
        ] {
            assert_eq!(resolve(bad, 100), None, "{bad:?}");
        }
        let many = format!("bytes={}", vec!["0-0"; RANGE_COUNT_MAX + 1].join(","));
        assert_eq!(resolve(&many, 100), None);
        let max = format!("bytes={}", vec!["0-0"; RANGE_COUNT_MAX].join(","));
        assert_eq!(resolve(&max, 100).map(|v| v.len()), Some(RANGE_COUNT_MAX));
    }

    #[test]
    fn unit_is_case_insensitive_and_empty_elements_are_skipped() {
        assert_eq!(resolve("Bytes=1-2", 10), Some(vec![(1, 2)]));
        assert_eq!(resolve("bytes=1-2,,3-4,", 10), Some(vec![(1, 2), (3, 4)]));
        assert_eq!(resolve("bytes=18446744073709551615-", 10), Some(vec![]));
    }
}
