//! Content identifiers (CIDs) as IPFS tooling writes them: the multibase text a client
//! puts in `/ipfs/<cid>`, decoded into version, codec and multihash, and the one CID
//! form that names a ron object — CIDv1, raw codec (`0x55`), BLAKE3-256 multihash
//! (`0x1e`, 32 bytes): the object's address is that digest, byte for byte.
//!
//! Read: CIDv0 (`Qm…`, base58btc sha2-256) and CIDv1 in the multibases a client may
//! send — base32 (`b`/`B`, padded `c`/`C`), base32hex (`v`/`V`, `t`/`T`), z-base-32
//! (`h`), base36 (`k`/`K`), base58btc (`z`), base16 (`f`/`F`) and base64 (`m`, `M`,
//! `u`, `U`). Limits: at most [`CID_TEXT_BYTES_MAX`] characters and a digest of at most
//! [`DIGEST_BYTES_MAX`] bytes; nothing here panics on any input (fuzzed).

use crate::Address;

/// Longest CID text read (a BLAKE3 CIDv1 is 59 characters in base32, 62 in base36).
pub const CID_TEXT_BYTES_MAX: usize = 256;
/// Longest digest a CID read here may carry (identity CIDs inline their bytes).
pub const DIGEST_BYTES_MAX: usize = 128;

/// The raw codec: the block is opaque bytes.
pub const RAW_CODEC: u64 = 0x55;
/// BLAKE3 in the multicodec table (a 32-byte digest here).
pub const BLAKE3_CODE: u64 = 0x1e;
/// sha2-256, the hash of CIDv0 and of most IPFS blocks.
pub const SHA2_256_CODE: u64 = 0x12;
/// The identity multihash: the "digest" is the block itself.
pub const IDENTITY_CODE: u64 = 0x00;
/// The empty identity CID in base32, the trustless gateway's probe path.
pub const EMPTY_IDENTITY_CID: &str = "bafkqaaa";

/// A decoded CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cid {
    /// 0 (`Qm…`) or 1.
    pub version: u8,
    /// The multicodec of the block (dag-pb `0x70` for CIDv0).
    pub codec: u64,
    /// The multihash function.
    pub hash_code: u64,
    digest: Vec<u8>,
}

/// What a CID names, to a node that stores objects by BLAKE3-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named<'a> {
    /// A raw block with a BLAKE3-256 multihash: the ron object of that address.
    Object(Address),
    /// A raw block with the identity multihash: its bytes are in the CID.
    Inline(&'a [u8]),
    /// Anything else: why ron cannot serve it as a raw block.
    NotServed(String),
}

/// Why a text is not a CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("longer than {CID_TEXT_BYTES_MAX} characters")]
    TooLong,
    #[error("empty")]
    Empty,
    #[error("multibase prefix {0:?} is not one this node reads")]
    UnknownMultibase(char),
    #[error("not valid in its multibase")]
    BadDigits,
    #[error("a CID of version {0} (only 0 and 1 exist)")]
    UnknownVersion(u64),
    #[error("cut short in its {0}")]
    Truncated(&'static str),
    #[error("a digest of {0} bytes (at most {DIGEST_BYTES_MAX} are read)")]
    DigestTooLong(u64),
    #[error("{0} bytes follow the multihash")]
    TrailingBytes(usize),
}

impl Cid {
    /// Parses the text of a CID.
    pub fn parse(text: &str) -> Result<Cid, CidError> {
        if text.len() > CID_TEXT_BYTES_MAX {
            return Err(CidError::TooLong);
        }
        let bytes = decode_multibase(text)?;
        Cid::from_bytes(&bytes)
    }

    /// Reads a binary CID (CIDv0 is a bare sha2-256 multihash).
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let (first, rest) = read_varint(bytes, "version")?;
        let (version, codec, multihash) = match first {
            // A CIDv0 is a multihash starting with sha2-256's code.
            SHA2_256_CODE => (0, 0x70, bytes),
            1 => {
                let (codec, multihash) = read_varint(rest, "codec")?;
                (1, codec, multihash)
            }
            other => return Err(CidError::UnknownVersion(other)),
        };
        let (hash_code, rest) = read_varint(multihash, "multihash code")?;
        let (len, rest) = read_varint(rest, "digest length")?;
        if len > DIGEST_BYTES_MAX as u64 {
            return Err(CidError::DigestTooLong(len));
        }
        let len = len as usize;
        let digest = rest.get(..len).ok_or(CidError::Truncated("digest"))?;
        if rest.len() > len {
            return Err(CidError::TrailingBytes(rest.len() - len));
        }
        Ok(Cid {
            version,
            codec,
            hash_code,
            digest: digest.to_vec(),
        })
    }

    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// What this CID names to a ron node serving raw blocks.
    pub fn named(&self) -> Named<'_> {
        if self.codec != RAW_CODEC {
            return Named::NotServed(format!(
                "its codec is {} ({:#x}); this node serves raw blocks (codec 0x55) only",
                codec_name(self.codec),
                self.codec
            ));
        }
        match (self.hash_code, self.digest.len()) {
            (BLAKE3_CODE, 32) => {
                let digest: [u8; 32] = self.digest[..].try_into().unwrap_or([0; 32]);
                Named::Object(Address::from_bytes(digest))
            }
            (IDENTITY_CODE, _) => Named::Inline(&self.digest),
            (code, len) => Named::NotServed(format!(
                "its multihash is {} ({code:#x}) of {len} bytes; this node names objects by \
                 BLAKE3-256 (multihash 0x1e, 32 bytes)",
                hash_name(code)
            )),
        }
    }
}

/// The canonical text of the CID that names `addr` (CIDv1, raw, BLAKE3-256, base32:
/// `bafkr4i…`, 59 characters) into `out`; returns its length.
pub fn object_cid_base32(addr: &Address, out: &mut [u8; 64]) -> usize {
    let mut cid = [0u8; 36];
    cid[..4].copy_from_slice(&[1, RAW_CODEC as u8, BLAKE3_CODE as u8, 32]);
    cid[4..].copy_from_slice(addr.as_bytes());
    let encoding = &data_encoding::BASE32_NOPAD;
    let len = encoding.encode_len(cid.len());
    out[0] = b'b';
    encoding.encode_mut(&cid, &mut out[1..1 + len]);
    out[1..1 + len].make_ascii_lowercase();
    1 + len
}

fn codec_name(codec: u64) -> &'static str {
    match codec {
        0x55 => "raw",
        0x70 => "dag-pb",
        0x71 => "dag-cbor",
        0x0129 => "dag-json",
        0x0200 => "json",
        0x0202 => "car",
        0x72 => "libp2p-key",
        _ => "a codec not known here",
    }
}

fn hash_name(code: u64) -> &'static str {
    match code {
        SHA2_256_CODE => "sha2-256",
        0x13 => "sha2-512",
        0x16 => "sha3-256",
        0x1b => "keccak-256",
        BLAKE3_CODE => "blake3",
        0xb220 => "blake2b-256",
        IDENTITY_CODE => "identity",
        _ => "a hash not known here",
    }
}

/// One unsigned varint (at most 9 bytes, as multiformats allows) and the bytes after it.
fn read_varint<'a>(bytes: &'a [u8], what: &'static str) -> Result<(u64, &'a [u8]), CidError> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(CidError::Truncated(what))
}

fn decode_multibase(text: &str) -> Result<Vec<u8>, CidError> {
    use data_encoding as de;
    if text.len() == 46 && text.starts_with("Qm") {
        return bs58::decode(text)
            .into_vec()
            .map_err(|_| CidError::BadDigits);
    }
    let mut chars = text.chars();
    let prefix = chars.next().ok_or(CidError::Empty)?;
    let digits = chars.as_str();
    let with = |encoding: &de::Encoding, upper: bool| {
        let digits = match upper {
            true => digits.to_ascii_uppercase(),
            false => digits.to_string(),
        };
        encoding
            .decode(digits.as_bytes())
            .map_err(|_| CidError::BadDigits)
    };
    match prefix {
        'b' | 'B' => with(&de::BASE32_NOPAD, true),
        'c' | 'C' => with(&de::BASE32, true),
        'v' | 'V' => with(&de::BASE32HEX_NOPAD, true),
        't' | 'T' => with(&de::BASE32HEX, true),
        'h' => with(&z_base32(), false),
        'f' | 'F' => with(&de::HEXUPPER, true),
        'm' => with(&de::BASE64_NOPAD, false),
        'M' => with(&de::BASE64, false),
        'u' => with(&de::BASE64URL_NOPAD, false),
        'U' => with(&de::BASE64URL, false),
        'z' => bs58::decode(digits)
            .into_vec()
            .map_err(|_| CidError::BadDigits),
        'k' | 'K' => base36_decode(digits),
        other => Err(CidError::UnknownMultibase(other)),
    }
}

fn z_base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
    spec.encoding().unwrap_or(data_encoding::BASE32_NOPAD)
}

/// Base36 (`0-9a-z`, case-insensitive), leading zero digits kept as zero bytes, as
/// multibase's big-number bases do.
fn base36_decode(digits: &str) -> Result<Vec<u8>, CidError> {
    let zeros = digits.bytes().take_while(|&d| d == b'0').count();
    // Little-endian base-256 limbs of the number.
    let mut number: Vec<u8> = Vec::with_capacity(digits.len());
    for d in digits.bytes().skip(zeros) {
        let value = match d.to_ascii_lowercase() {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'z' => d - b'a' + 10,
            _ => return Err(CidError::BadDigits),
        };
        let mut carry = u32::from(value);
        for limb in number.iter_mut() {
            let x = u32::from(*limb) * 36 + carry;
            *limb = (x & 0xff) as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            number.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(number.iter().rev());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> [u8; 32] {
        *blake3::hash(b"hello").as_bytes()
    }

    fn object_cid_bytes() -> Vec<u8> {
        let mut cid = vec![1, 0x55, 0x1e, 32];
        cid.extend_from_slice(&digest());
        cid
    }

    fn base36(bytes: &[u8]) -> String {
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        let mut digits: Vec<u8> = Vec::new();
        for &byte in &bytes[zeros..] {
            let mut carry = u32::from(byte);
            for d in digits.iter_mut() {
                let x = u32::from(*d) * 256 + carry;
                *d = (x % 36) as u8;
                carry = x / 36;
            }
            while carry > 0 {
                digits.push((carry % 36) as u8);
                carry /= 36;
            }
        }
        let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut text = "0".repeat(zeros);
        text.extend(digits.iter().rev().map(|&d| alphabet[d as usize] as char));
        text
    }

    #[test]
    fn an_object_cid_reads_the_same_in_every_multibase() {
        use data_encoding as de;
        let bytes = object_cid_bytes();
        let addr = Address::from_bytes(digest());
        let mut canonical = [0u8; 64];
        let len = object_cid_base32(&addr, &mut canonical);
        let canonical = std::str::from_utf8(&canonical[..len]).unwrap();
        assert!(canonical.starts_with("bafkr4i") && len == 59, "{canonical}");
        let forms = [
            canonical.to_string(),
            format!("B{}", de::BASE32_NOPAD.encode(&bytes)),
            format!("c{}", de::BASE32.encode(&bytes).to_lowercase()),
            format!("v{}", de::BASE32HEX_NOPAD.encode(&bytes).to_lowercase()),
            format!("f{}", de::HEXLOWER.encode(&bytes)),
            format!("F{}", de::HEXUPPER.encode(&bytes)),
            format!("m{}", de::BASE64_NOPAD.encode(&bytes)),
            format!("M{}", de::BASE64.encode(&bytes)),
            format!("u{}", de::BASE64URL_NOPAD.encode(&bytes)),
            format!("U{}", de::BASE64URL.encode(&bytes)),
            format!("z{}", bs58::encode(&bytes).into_string()),
            format!("k{}", base36(&bytes)),
            format!("K{}", base36(&bytes).to_uppercase()),
            format!("h{}", z_base32().encode(&bytes)),
        ];
        for form in &forms {
            let cid = Cid::parse(form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(cid.named(), Named::Object(addr), "{form}");
        }
    }

    #[test]
    fn the_probe_is_the_empty_identity_block() {
        let cid = Cid::parse(EMPTY_IDENTITY_CID).unwrap();
        assert_eq!(cid.named(), Named::Inline(&[]));
    }

    #[test]
    fn other_codecs_and_hashes_are_named_in_the_refusal() {
        // CIDv0 (dag-pb, sha2-256): a well-known directory CID.
        let v0 = Cid::parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn").unwrap();
        assert_eq!((v0.version, v0.codec, v0.hash_code), (0, 0x70, 0x12));
        let Named::NotServed(why) = v0.named() else {
            panic!("served a CIDv0")
        };
        assert!(why.contains("dag-pb (0x70)"), "{why}");
        // The empty raw block by sha2-256.
        let sha =
            Cid::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap();
        let Named::NotServed(why) = sha.named() else {
            panic!("served sha2-256")
        };
        assert!(why.contains("sha2-256 (0x12) of 32 bytes"), "{why}");
    }

    #[test]
    fn broken_cids_say_what_is_wrong() {
        assert_eq!(Cid::parse(""), Err(CidError::Empty));
        assert_eq!(Cid::parse("xabc"), Err(CidError::UnknownMultibase('x')));
        assert_eq!(Cid::parse("b!!!"), Err(CidError::BadDigits));
        assert_eq!(Cid::parse(&"b".repeat(300)), Err(CidError::TooLong));
        let mut cut = object_cid_bytes();
        cut.pop();
        assert_eq!(Cid::from_bytes(&cut), Err(CidError::Truncated("digest")));
        let mut long = object_cid_bytes();
        long.push(0);
        assert_eq!(Cid::from_bytes(&long), Err(CidError::TrailingBytes(1)));
        assert_eq!(
            Cid::from_bytes(&[2, 0x55]),
            Err(CidError::UnknownVersion(2))
        );
        assert_eq!(
            Cid::from_bytes(&[1, 0x55, 0x1e, 0x81, 0x02]),
            Err(CidError::DigestTooLong(257))
        );
        assert_eq!(
            Cid::from_bytes(&[1, 0xff]),
            Err(CidError::Truncated("codec"))
        );
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics(text in "\\PC{0,80}") {
            if let Ok(cid) = Cid::parse(&text) {
                let _ = cid.named();
            }
        }

        #[test]
        fn no_bytes_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = Cid::from_bytes(&bytes);
        }
    }
}
