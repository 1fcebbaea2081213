//! Content negotiation of an object (RFC 9110 §12.5.1): its bytes, or its bao encoding
//! when `Accept` names `application/x-bao` (with `chunk-group-log=N`, 0 when absent);
//! and of a bundle entry's content coding (§12.5.3, [`content_coding`]).

use super::head::{trim, FieldLines};
use crate::bao::ChunkGroupLog;
use crate::bundle::Encoding;

/// The media type of a bao encoding or slice.
pub const BAO_MEDIA_TYPE: &str = "application/x-bao";
/// The media type of a bao outboard (its parents without the leaves' bytes).
pub const BAO_OUTBOARD_MEDIA_TYPE: &str = "application/x-bao-outboard";
/// The media-type parameter that names the chunk-group log.
pub const CHUNK_GROUP_LOG_PARAM: &str = "chunk-group-log";

/// What an `Accept` field asks of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object's own bytes (no `application/x-bao` with q > 0).
    Bytes,
    Bao(ChunkGroupLog),
    /// Only bao at a chunk-group log this server does not serve (406).
    BaoUnservable,
}

/// The first `application/x-bao` member with q > 0 decides; a member whose
/// `chunk-group-log` is not a number from 0 to [`ChunkGroupLog::MAX`] is passed over.
/// With none servable, the bytes — unless every member with q > 0 was bao at a log not
/// served (406): `*/*` or any other type beside one accepts the bytes.
pub fn negotiate(accept: &FieldLines<'_>) -> Representation {
    let mut unservable_bao = false;
    let mut other_types = false;
    for member in accept.members() {
        let mut parts = member.split(|&b| b == b';');
        let media = parts.next().map(trim).unwrap_or_default();
        if !media.eq_ignore_ascii_case(BAO_MEDIA_TYPE.as_bytes()) {
            other_types |= !media.is_empty() && !parts.any(is_zero_weight_param);
            continue;
        }
        let mut log = Some(ChunkGroupLog::BAO);
        let mut refused = false;
        for (name, value) in parts.map(name_and_value) {
            if name.eq_ignore_ascii_case(b"q") {
                refused = is_zero_weight(value);
            } else if name.eq_ignore_ascii_case(CHUNK_GROUP_LOG_PARAM.as_bytes()) {
                log = chunk_group_log(value);
            }
        }
        match (refused, log) {
            (true, _) => {}
            (false, Some(log)) => return Representation::Bao(log),
            (false, None) => unservable_bao = true,
        }
    }
    match unservable_bao && !other_types {
        true => Representation::BaoUnservable,
        false => Representation::Bytes,
    }
}

/// A member's parameter `name=value`, each trimmed (a value of `""` when there is no `=`).
fn name_and_value(param: &[u8]) -> (&[u8], &[u8]) {
    match param.iter().position(|&b| b == b'=') {
        Some(at) => (trim(&param[..at]), trim(&param[at + 1..])),
        None => (trim(param), &b""[..]),
    }
}

/// Whether a member's parameter is a weight of 0 (`q=0`).
fn is_zero_weight_param(param: &[u8]) -> bool {
    let (name, value) = name_and_value(param);
    name.eq_ignore_ascii_case(b"q") && is_zero_weight(value)
}

/// A `chunk-group-log` value: decimal digits (quoted or not) naming a served log.
pub fn chunk_group_log(value: &[u8]) -> Option<ChunkGroupLog> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 999: in a u16 no value overflows (a u8 wrapped 262 to 6).
    let log = value.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    ChunkGroupLog::new(u8::try_from(log).ok()?)
}

/// The content coding to send a bundle entry in, from the codings it is stored in
/// (`available`, each with its length) and the members of the request's
/// `Accept-Encoding` (`FieldLines::members`):
/// `Some(None)` identity, `Some(Some(e))` the variant in `e`, `None` nothing acceptable
/// (406).
///
/// RFC 9110 §12.5.3, as nginx's `brotli_static`/`gzip_static` read it: no field, or
/// nothing usable in it, asks for identity only; members are `coding[;q=w]`, a weight
/// of 0 refusing it; `*` stands for every coding not named, identity included; identity
/// stays acceptable unless refused by name or by `*;q=0` with identity not named. The
/// highest weight wins; among equal weights the fewest bytes (identity last on a tie).
/// Members that do not parse are passed over (garbage is identity, never an error).
pub fn content_coding<'m>(
    accept_encoding: impl Iterator<Item = &'m [u8]>,
    available: &[(Encoding, u64)],
    identity_len: u64,
) -> Option<Option<Encoding>> {
    ranked_codings(accept_encoding, available, identity_len)
        .first()
        .copied()
}

/// Every acceptable representation, best first, by the rules of [`content_coding`]:
/// what a server falls back to when the best one cannot be served (a stored variant
/// that fails verification).
pub fn ranked_codings<'m>(
    accept_encoding: impl Iterator<Item = &'m [u8]>,
    available: &[(Encoding, u64)],
    identity_len: u64,
) -> Vec<Option<Encoding>> {
    let weights = CodingWeights::of(accept_encoding);
    let identity = weights.identity().map(|w| (w, identity_len, 1u8, None));
    let variants = available
        .iter()
        .filter_map(|&(e, len)| weights.of_coding(e).map(|w| (w, len, 0u8, Some(e))));
    let mut acceptable: Vec<_> = variants.chain(identity).filter(|c| c.0 > 0).collect();
    // Highest weight, then fewest bytes, then a variant before identity.
    acceptable.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    acceptable.into_iter().map(|(.., coding)| coding).collect()
}

/// The weights (0–1000) an `Accept-Encoding` gives each coding.
#[derive(Debug, Default)]
struct CodingWeights {
    named: [Option<u16>; 3],
    identity: Option<u16>,
    star: Option<u16>,
    /// Any usable member was sent.
    any: bool,
}

impl CodingWeights {
    fn of<'m>(members: impl Iterator<Item = &'m [u8]>) -> CodingWeights {
        let mut weights = CodingWeights::default();
        for member in members {
            let mut parts = member.split(|&b| b == b';');
            let coding = parts.next().map(trim).unwrap_or_default();
            let mut weight = Some(1000);
            for param in parts {
                let param = trim(param);
                match param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    Some(value) => weight = qvalue(trim(value)),
                    None => weight = None,
                }
            }
            let Some(weight) = weight else {
                continue;
            };
            let slot = if coding == b"*" {
                &mut weights.star
            } else if coding.eq_ignore_ascii_case(b"identity") {
                &mut weights.identity
            } else if let Some(at) = Encoding::ALL
                .iter()
                .position(|e| coding.eq_ignore_ascii_case(e.token().as_bytes()))
            {
                &mut weights.named[at]
            } else if is_token(coding) {
                weights.any = true;
                continue;
            } else {
                continue;
            };
            weights.any = true;
            // A coding named twice keeps its first weight.
            slot.get_or_insert(weight);
        }
        weights
    }

    fn of_coding(&self, coding: Encoding) -> Option<u16> {
        let at = Encoding::ALL.iter().position(|e| *e == coding)?;
        self.named[at].or(self.star)
    }

    fn identity(&self) -> Option<u16> {
        if !self.any {
            return Some(1000);
        }
        // `*` covers identity when it is not named; otherwise identity is acceptable
        // unless refused, at the lowest usable weight.
        Some(self.identity.or(self.star).unwrap_or(1))
    }
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// A qvalue (`0`, `0.5`, `1.000`) as thousandths; `None` when it is not one.
fn qvalue(value: &[u8]) -> Option<u16> {
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        b"0" => {}
        b"1" if thousandths == 0 => thousandths = 1000,
        _ => return None,
    }
    Some(thousandths)
}

/// Whether an `Accept` member (`type/subtype;params`) carries `q=0`: "not acceptable".
pub fn member_refused(member: &[u8]) -> bool {
    member.split(|&b| b == b';').skip(1).any(|param| {
        let param = trim(param);
        match param.iter().position(|&b| b == b'=') {
            Some(at) => {
                trim(&param[..at]).eq_ignore_ascii_case(b"q")
                    && is_zero_weight(trim(&param[at + 1..]))
            }
            None => false,
        }
    })
}

/// `q=0`, `q=0.`, `q=0.000` (RFC 9110 §12.4.2): "not acceptable".
fn is_zero_weight(value: &[u8]) -> bool {
    match value.split_first() {
        Some((b'0', rest)) => match rest.split_first() {
            None => true,
            Some((b'.', zeros)) => zeros.iter().all(|&d| d == b'0'),
            Some(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request_head, HeadParse};

    fn asked(accept: &str) -> Representation {
        let raw = format!("GET /o HTTP/1.1\r\nHost: t\r\n{accept}\r\n");
        let Ok(HeadParse::Complete(head)) = parse_request_head(raw.as_bytes(), 4096) else {
            panic!("{raw:?} does not parse")
        };
        negotiate(&head.accept)
    }

    #[test]
    fn bao_is_chosen_only_when_named_with_weight() {
        let log = |n| Representation::Bao(ChunkGroupLog::new(n).unwrap());
        assert_eq!(asked(""), Representation::Bytes);
        assert_eq!(asked("Accept: */*\r\n"), Representation::Bytes);
        assert_eq!(
            asked("Accept: text/html, application/*\r\n"),
            Representation::Bytes
        );
        assert_eq!(asked("Accept: application/x-bao\r\n"), log(0));
        assert_eq!(
            asked("Accept: Application/X-Bao ; chunk-group-log=4\r\n"),
            log(4)
        );
        assert_eq!(
            asked("Accept: application/x-bao;chunk-group-log=\"6\";q=0.5\r\n"),
            log(6)
        );
        assert_eq!(
            asked("Accept: application/x-bao;q=0\r\n"),
            Representation::Bytes
        );
        assert_eq!(
            asked("Accept: application/x-bao;q=0.000\r\n"),
            Representation::Bytes
        );
        assert_eq!(asked("Accept: application/x-bao;q=0.001\r\n"), log(0));
        assert_eq!(
            asked("Accept: text/plain\r\nAccept: application/x-bao;chunk-group-log=2\r\n"),
            log(2),
            "the list spans lines"
        );
        for bad in ["7", "-1", "x", "", "1000", "256", "262", "999"] {
            let line = format!("Accept: application/x-bao;chunk-group-log={bad}\r\n");
            assert_eq!(asked(&line), Representation::BaoUnservable, "{bad:?}");
        }
        assert_eq!(
            asked("Accept: application/x-bao;chunk-group-log=9, application/x-bao;chunk-group-log=4\r\n"),
            log(4),
            "a servable member after an unservable one"
        );
        for fallback in ["*/*", "application/octet-stream", "text/css;q=0.1"] {
            let line = format!("Accept: application/x-bao;chunk-group-log=9, {fallback}\r\n");
            assert_eq!(asked(&line), Representation::Bytes, "{fallback}");
        }
        assert_eq!(
            asked("Accept: application/x-bao;chunk-group-log=9, */*;q=0\r\n"),
            Representation::BaoUnservable,
            "a type refused accepts nothing"
        );
    }

    fn coding_for(fields: &[&str], available: &[(Encoding, u64)]) -> Option<Option<Encoding>> {
        let raw: String = fields
            .iter()
            .map(|f| format!("Accept-Encoding: {f}\r\n"))
            .collect();
        let raw = format!("GET /o HTTP/1.1\r\nHost: t\r\n{raw}\r\n");
        let Ok(crate::http::head::HeadParse::Complete(head)) =
            crate::http::head::parse_request_head(raw.as_bytes(), 4096)
        else {
            panic!("{raw:?} does not parse")
        };
        content_coding(head.accept_encoding.members(), available, 1000)
    }

    /// What browsers, curl and caches send, against an entry stored as identity (1000
    /// bytes), br (300) and zstd (320).
    #[test]
    fn the_content_coding_follows_accept_encoding() {
        use Encoding::{Br, Gzip, Zstd};
        let both = [(Br, 300), (Zstd, 320)];
        let cases: [(&[&str], Option<Option<Encoding>>); 16] = [
            (&[], Some(None)),
            (&[""], Some(None)),
            (&["gzip, deflate, br, zstd"], Some(Some(Br))),
            (&["gzip, deflate, br"], Some(Some(Br))),
            (&["br;q=0.5, zstd"], Some(Some(Zstd))),
            (&["br, gzip;q=0.8"], Some(Some(Br))),
            (&["zstd"], Some(Some(Zstd))),
            (&["gzip"], Some(None)),
            (&["identity"], Some(None)),
            (&["identity;q=0"], None),
            (&["identity;q=0, zstd;q=0.1"], Some(Some(Zstd))),
            (&["*;q=0"], None),
            (&["*"], Some(Some(Br))),
            (&["br;q=0, *"], Some(Some(Zstd))),
            (&["@@@, ;;q=x, br;q=1.5"], Some(None)),
            (&["gzip", "br"], Some(Some(Br))),
        ];
        for (fields, want) in cases {
            assert_eq!(coding_for(fields, &both), want, "{fields:?}");
        }
        // A variant larger than identity loses the tie to it; a gzip variant is used.
        assert_eq!(coding_for(&["*"], &[(Br, 2000)]), Some(None));
        assert_eq!(coding_for(&["gzip, br"], &[(Gzip, 400)]), Some(Some(Gzip)));
        assert_eq!(coding_for(&["identity;q=0"], &[]), None);
    }

    /// The order a server falls back in: weight, then size, identity last on a tie.
    #[test]
    fn acceptable_codings_are_ranked_for_fallback() {
        use Encoding::{Br, Zstd};
        let ranked = |field: &str, available: &[(Encoding, u64)]| {
            let raw = format!("GET /o HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {field}\r\n\r\n");
            let Ok(crate::http::head::HeadParse::Complete(head)) =
                crate::http::head::parse_request_head(raw.as_bytes(), 4096)
            else {
                panic!("{raw:?}")
            };
            ranked_codings(head.accept_encoding.members(), available, 1000)
        };
        let both = [(Br, 300), (Zstd, 320)];
        assert_eq!(ranked("br, zstd", &both), [Some(Br), Some(Zstd), None]);
        assert_eq!(
            ranked("zstd;q=0.9, br;q=0.5", &both),
            [Some(Zstd), Some(Br), None]
        );
        assert_eq!(ranked("br, identity;q=0", &both), [Some(Br)]);
        assert_eq!(ranked("*", &[(Br, 1000)]), [Some(Br), None]);
        assert!(ranked("*;q=0", &both).is_empty());
    }

    #[test]
    fn qvalues_are_read_to_thousandths() {
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"0.8"), Some(800));
        assert_eq!(qvalue(b"0.125"), Some(125));
        assert_eq!(qvalue(b"0"), Some(0));
        for bad in [&b"1.5"[..], b"2", b"0.1234", b"", b".5", b"-1", b"0,5"] {
            assert_eq!(qvalue(bad), None, "{bad:?}");
        }
    }
}
