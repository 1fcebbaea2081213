//! Denylists: the addresses a public node refuses to serve, fetch, announce or copy,
//! read from `*.deny` files in the compact denylist format of IPIP-383 (what kubo and
//! boxo gateways read), plus ron's own `b3:<hex>` lines. This module is the pure part
//! (text in, rules out, a check per address); the engine reads the files
//! (`ron_control::reload::deny_files` lists them) and the control thread reloads them.
//!
//! A file is an optional header (the lines before a line `---`, at most 1 MiB, none of
//! them a rule; only its `version` is read: 1 or absent), then one rule per line. `#` comments, blank lines
//! and per-rule hints (after a space) are skipped. Rules, in terms of a ron object
//! (BLAKE3-256 digest `d`, multihash `0x1e 0x20 d`, CIDv1 raw `0x01 0x55 0x1e 0x20 d`):
//!
//! - `b3:<hex>`: that address.
//! - `/ipfs/<CID>`, `/ipfs/<CID>/*`: the CID's multihash, when it is BLAKE3-256 (the
//!   codec is not looked at, as IPIP-383's block-level rule says). CIDs in base32
//!   (`b…`), base58btc (`z…`, and CIDv0 `Qm…`) and base16 (`f…`) are read. Any other
//!   multihash names nothing ron stores: the rule is counted as foreign.
//! - `//<base58btc multihash>` (double-hashed): blocks the object whose base58btc
//!   multihash string hashes, by that multihash's function (sha2-256 or BLAKE3), to
//!   it. A list can be published this way without naming what it blocks.
//! - `//<64 hex digits>` (double-hashed, the legacy "badbits" form): sha2-256 of the
//!   object's CIDv1 in base32 followed by `/`.
//! - `!<rule>`: an exception. Rules apply in order (files in name order): for each
//!   object, the last rule naming it in any form decides.
//! - Path rules (`/ipfs/<CID>/path`, `/ipns/…`) name what ron does not have: foreign.
//!   Anything else is a line not understood: skipped, counted and reported with its
//!   file and line.
//!
//! Limits: a line is at most [`LINE_BYTES_MAX`]; a list at most [`RULES_MAX`] rules (a
//! list past it is refused whole, the running one stays). Checking an address is one
//! hash lookup per form present in the lists: a plain lookup always, a sha2-256 or
//! BLAKE3 of a 46-byte string only when double-hashed rules exist; nothing allocates.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Longest rule line read; longer lines are not understood.
pub const LINE_BYTES_MAX: usize = 4096;
/// Most rules a denylist may hold, over all its files (about 100 bytes of memory each).
pub const RULES_MAX: usize = 4_000_000;
/// Bytes of a file looked at for a header's `---`.
pub const HEADER_BYTES_MAX: usize = 1 << 20;
/// Lines not understood named one by one in a load's report; the rest are counted.
const PROBLEMS_LISTED_MAX: usize = 16;

/// The longest CID or double hash a rule may hold, in characters: a CIDv1 of a 64-byte
/// digest is ~110 in base32. Base58 decodes in time quadratic in its length, so a
/// longer one is refused before it is decoded (a file of 4,000-character lines took 3.4
/// ms a line, release build: a list of millions, hours of the control thread).
const ENCODED_HASH_CHARS_MAX: usize = 256;
const BLAKE3_CODE: u8 = 0x1e;
const SHA2_256_CODE: u8 = 0x12;
const DIGEST_BYTES: u8 = 32;

/// The last rule on one key: its position among every rule read, and whether it
/// blocks or excepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    seq: u32,
    blocks: bool,
}

/// Which form of an object a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Form {
    /// The BLAKE3 digest itself (`b3:`, `/ipfs/<CID>`).
    Digest,
    /// sha2-256 of the base58btc multihash string.
    DoubleSha256,
    /// BLAKE3 of the base58btc multihash string.
    DoubleBlake3,
    /// sha2-256 of `<CIDv1 base32>/`.
    LegacySha256,
}

/// The rules of every `*.deny` file of a node, merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Denylist {
    rules: HashMap<(Form, [u8; 32]), Verdict>,
    /// Whether any double-hashed rule exists (else a check is one lookup).
    double: [bool; 3],
}

impl Denylist {
    /// Whether no rule is held.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rules held (after exceptions replaced the rules they follow on one key).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the object with BLAKE3-256 `digest` is blocked.
    pub fn blocks(&self, digest: &[u8; 32]) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let mut last = self.rules.get(&(Form::Digest, *digest)).copied();
        if self.double.iter().any(|d| *d) {
            for key in self.double_keys(digest) {
                let verdict = self.rules.get(&key).copied();
                if verdict.map(|v| v.seq) > last.map(|v| v.seq) {
                    last = verdict;
                }
            }
        }
        last.is_some_and(|v| v.blocks)
    }

    /// The digests blocked by name (`b3:`, `/ipfs/<CID>`): what a node can withdraw from
    /// the DHT when the list arrives. Double-hashed rules name no digest.
    pub fn blocked_by_name(&self) -> impl Iterator<Item = &[u8; 32]> + '_ {
        self.rules
            .iter()
            .filter(|((form, _), v)| *form == Form::Digest && v.blocks)
            .map(|((_, digest), _)| digest)
            .filter(|digest| self.blocks(digest))
    }

    /// The double-hashed keys of `digest` this list has rules of.
    fn double_keys(&self, digest: &[u8; 32]) -> impl Iterator<Item = (Form, [u8; 32])> {
        let [sha256, blake3, legacy] = self.double;
        let mut keys = [None, None, None];
        if sha256 || blake3 {
            let mut text = [0u8; 64];
            let len = base58_multihash(digest, &mut text);
            let text = &text[..len];
            if sha256 {
                keys[0] = Some((Form::DoubleSha256, Sha256::digest(text).into()));
            }
            if blake3 {
                keys[1] = Some((Form::DoubleBlake3, *blake3::hash(text).as_bytes()));
            }
        }
        if legacy {
            let mut text = [0u8; 64];
            let len = cid_base32_slash(digest, &mut text);
            keys[2] = Some((Form::LegacySha256, Sha256::digest(&text[..len]).into()));
        }
        keys.into_iter().flatten()
    }
}

/// The base58btc text of the multihash of `digest` (what IPIP-383 double-hashes).
fn base58_multihash(digest: &[u8; 32], out: &mut [u8; 64]) -> usize {
    let mut multihash = [0u8; 34];
    multihash[0] = BLAKE3_CODE;
    multihash[1] = DIGEST_BYTES;
    multihash[2..].copy_from_slice(digest);
    bs58::encode(multihash)
        .onto(&mut out[..])
        .expect("46 base58 digits fit 64 bytes")
}

/// `b` + the base32 (lowercase, unpadded) CIDv1 raw BLAKE3 of `digest`, then `/`.
fn cid_base32_slash(digest: &[u8; 32], out: &mut [u8; 64]) -> usize {
    let len = crate::cid::object_cid_base32(&crate::Address::from_bytes(*digest), out);
    out[len] = b'/';
    len + 1
}

/// Why a denylist was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenylistError {
    #[error("{file}: header says version {version}; only version 1 is read")]
    Version { file: String, version: String },
    #[error("{file}: more than {limit} rules in the denylist")]
    TooManyRules { file: String, limit: usize },
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub file: String,
    pub line: usize,
    pub reason: &'static str,
}

/// What reading a list found besides its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenylistReport {
    pub files: usize,
    pub rules: usize,
    /// Rules that name no ron object (other hash functions, paths, IPNS names).
    pub foreign: usize,
    /// Lines not understood: the first few, then only counted.
    pub problems: Vec<LineProblem>,
    pub problems_total: usize,
}

/// Reads files one after the other into one [`Denylist`].
#[derive(Debug, Default)]
pub struct DenylistBuilder {
    list: Denylist,
    seq: u32,
    report: DenylistReport,
}

/// What one rule line means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Key(Form, [u8; 32]),
    /// Valid, but names nothing ron stores.
    Foreign,
}

impl DenylistBuilder {
    /// Adds the rules of one file, `name` being how reports name it.
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), DenylistError> {
        self.report.files += 1;
        let (body, first_line) = split_header(name, text)?;
        for (i, line) in body.lines().enumerate() {
            let line_no = first_line + i;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() > LINE_BYTES_MAX {
                self.problem(name, line_no, "longer than 4096 bytes");
                continue;
            }
            let rule_text = line.split_whitespace().next().unwrap_or_default();
            let (blocks, rule_text) = match rule_text.strip_prefix('!') {
                Some(rest) => (false, rest),
                None => (true, rule_text),
            };
            match parse_rule(rule_text) {
                Ok(Rule::Key(form, key)) => self.add(name, form, key, blocks)?,
                Ok(Rule::Foreign) => self.report.foreign += 1,
                Err(reason) => self.problem(name, line_no, reason),
            }
        }
        Ok(())
    }

    /// The list and what reading it found.
    pub fn finish(self) -> (Denylist, DenylistReport) {
        let mut report = self.report;
        report.rules = self.list.len();
        (self.list, report)
    }

    fn add(
        &mut self,
        file: &str,
        form: Form,
        key: [u8; 32],
        blocks: bool,
    ) -> Result<(), DenylistError> {
        if self.list.rules.len() >= RULES_MAX && !self.list.rules.contains_key(&(form, key)) {
            return Err(DenylistError::TooManyRules {
                file: file.to_string(),
                limit: RULES_MAX,
            });
        }
        self.seq += 1;
        let verdict = Verdict {
            seq: self.seq,
            blocks,
        };
        self.list.rules.insert((form, key), verdict);
        match form {
            Form::Digest => {}
            Form::DoubleSha256 => self.list.double[0] = true,
            Form::DoubleBlake3 => self.list.double[1] = true,
            Form::LegacySha256 => self.list.double[2] = true,
        }
        Ok(())
    }

    fn problem(&mut self, file: &str, line: usize, reason: &'static str) {
        self.report.problems_total += 1;
        if self.report.problems.len() < PROBLEMS_LISTED_MAX {
            self.report.problems.push(LineProblem {
                file: file.to_string(),
                line,
                reason,
            });
        }
    }
}

/// The rules' part of a file and the number of its first line: after a `---` line
/// found within [`HEADER_BYTES_MAX`] with no rule before it, else the whole file (two
/// lists joined with `cat`, the second with a header, keep the first's rules; the `---`
/// is then a line not understood, reported). A header's `version` must be 1.
fn split_header<'t>(name: &str, text: &'t str) -> Result<(&'t str, usize), DenylistError> {
    let mut at = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if at + line.len() > HEADER_BYTES_MAX || looks_like_a_rule(line) {
            break;
        }
        if line.trim_end() == "---" {
            check_version(name, &text[..at])?;
            return Ok((&text[at + line.len()..], i + 2));
        }
        at += line.len();
    }
    Ok((text, 1))
}

/// Whether a line reads as a rule (a header's lines are `key: value` and comments).
fn looks_like_a_rule(line: &str) -> bool {
    let line = line.trim_start();
    ["/", "!", "b3:"]
        .iter()
        .any(|start| line.starts_with(start))
}

fn check_version(name: &str, header: &str) -> Result<(), DenylistError> {
    let version = header
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(|v| v.trim().trim_matches(['"', '\'']));
    match version {
        None | Some("1") => Ok(()),
        Some(other) => Err(DenylistError::Version {
            file: name.to_string(),
            version: other.to_string(),
        }),
    }
}

fn parse_rule(rule: &str) -> Result<Rule, &'static str> {
    if let Some(hex) = rule.strip_prefix("b3:") {
        return parse_hex32(hex)
            .map(|d| Rule::Key(Form::Digest, d))
            .ok_or("b3: is not followed by 64 lowercase hex digits");
    }
    if let Some(hash) = rule.strip_prefix("//") {
        return parse_double_hash(hash);
    }
    if let Some(path) = rule.strip_prefix("/ipfs/") {
        return parse_ipfs_path(path);
    }
    if rule.starts_with("/ipns/") {
        return Ok(Rule::Foreign);
    }
    Err("not a rule of the format (b3:<hex>, /ipfs/<CID>, //<double hash>, !<rule>)")
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    data_encoding::HEXLOWER
        .decode_mut(hex.as_bytes(), &mut out)
        .ok()?;
    Some(out)
}

/// `//<hash>`: 64 hex digits are the legacy sha2-256 form; a base58btc multihash the
/// modern one (by its function).
fn parse_double_hash(hash: &str) -> Result<Rule, &'static str> {
    if hash.len() > ENCODED_HASH_CHARS_MAX {
        return Err("a double hash longer than any multihash this list could name");
    }
    if let Some(digest) = parse_hex32(&hash.to_ascii_lowercase()) {
        return Ok(Rule::Key(Form::LegacySha256, digest));
    }
    let bytes = bs58::decode(hash)
        .into_vec()
        .map_err(|_| "a double hash is neither 64 hex digits nor a base58btc multihash")?;
    match multihash_digest(&bytes) {
        Some((SHA2_256_CODE, digest)) => Ok(Rule::Key(Form::DoubleSha256, digest)),
        Some((BLAKE3_CODE, digest)) => Ok(Rule::Key(Form::DoubleBlake3, digest)),
        Some(_) => Ok(Rule::Foreign),
        None => Err("a double hash is not a multihash of 32 bytes"),
    }
}

/// `/ipfs/<CID>` or `/ipfs/<CID>/*`: the CID's BLAKE3 digest; a path names no ron object.
fn parse_ipfs_path(path: &str) -> Result<Rule, &'static str> {
    let (cid, rest) = path.split_once('/').unwrap_or((path, ""));
    let bytes = decode_cid(cid).ok_or("not a CID in base32, base58btc or base16")?;
    let multihash = match bytes.first() {
        // CIDv0: a base58btc sha2-256 multihash, never a ron object.
        Some(&SHA2_256_CODE) => &bytes[..],
        Some(1) => skip_varint(&bytes[1..]).ok_or("a CIDv1 without its codec")?,
        _ => return Err("a CID of an unknown version"),
    };
    match (multihash_digest(multihash), rest) {
        (Some((BLAKE3_CODE, digest)), "" | "*") => Ok(Rule::Key(Form::Digest, digest)),
        (Some(_), _) => Ok(Rule::Foreign),
        (None, _) => Err("a CID whose multihash is not 32 bytes"),
    }
}

fn decode_cid(cid: &str) -> Option<Vec<u8>> {
    if cid.len() > ENCODED_HASH_CHARS_MAX {
        return None;
    }
    if cid.starts_with("Qm") {
        return bs58::decode(cid).into_vec().ok();
    }
    let (base, text) = cid.split_at_checked(1)?;
    match base {
        "b" => data_encoding::BASE32_NOPAD
            .decode(text.to_ascii_uppercase().as_bytes())
            .ok(),
        "z" => bs58::decode(text).into_vec().ok(),
        "f" => data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .ok(),
        _ => None,
    }
}

/// The bytes after one unsigned varint.
fn skip_varint(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().take(9).position(|b| b & 0x80 == 0)?;
    Some(&bytes[end + 1..])
}

/// A multihash of a 32-byte digest with a one-byte function code: `(code, digest)`.
fn multihash_digest(bytes: &[u8]) -> Option<(u8, [u8; 32])> {
    match bytes {
        [code, DIGEST_BYTES, digest @ ..] if code & 0x80 == 0 && digest.len() == 32 => {
            Some((*code, digest.try_into().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: u8) -> [u8; 32] {
        *blake3::hash(&[seed]).as_bytes()
    }

    fn hex(d: &[u8; 32]) -> String {
        data_encoding::HEXLOWER.encode(d)
    }

    fn list(files: &[(&str, &str)]) -> (Denylist, DenylistReport) {
        let mut builder = DenylistBuilder::default();
        for (name, text) in files {
            builder.add_file(name, text).unwrap();
        }
        builder.finish()
    }

    fn cid_base32(d: &[u8; 32]) -> String {
        let mut out = [0u8; 64];
        let len = cid_base32_slash(d, &mut out);
        String::from_utf8(out[..len - 1].to_vec()).unwrap()
    }

    fn base58(d: &[u8; 32]) -> String {
        let mut out = [0u8; 64];
        let len = base58_multihash(d, &mut out);
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn the_encodings_are_the_ones_other_tools_print() {
        // CIDv1 raw BLAKE3 in base32 starts `bafkr4i` (as ipfs cid format prints it),
        // and a BLAKE3 multihash in base58btc is 46 digits.
        let d = digest(1);
        assert!(cid_base32(&d).starts_with("bafkr4i"), "{}", cid_base32(&d));
        assert_eq!(cid_base32(&d).len(), 59);
        assert_eq!(base58(&d).len(), 46);
        assert_eq!(
            bs58::decode(base58(&d)).into_vec().unwrap()[..2],
            [0x1e, 0x20]
        );
    }

    #[test]
    fn every_form_of_a_rule_blocks_its_object_and_only_it() {
        let [a, b, c, d, e] = [1, 2, 3, 4, 5].map(digest);
        let modern_sha256 = {
            let mut mh = vec![SHA2_256_CODE, 32];
            mh.extend_from_slice(&Sha256::digest(base58(&c).as_bytes()));
            bs58::encode(mh).into_string()
        };
        let modern_blake3 = {
            let mut mh = vec![BLAKE3_CODE, 32];
            mh.extend_from_slice(blake3::hash(base58(&d).as_bytes()).as_bytes());
            bs58::encode(mh).into_string()
        };
        let legacy = hex(&Sha256::digest(format!("{}/", cid_base32(&e)).as_bytes()).into());
        let text = format!(
            "version: 1\nname: test\n---\n# comment\n\nb3:{} hint:x\n/ipfs/{}/*\n//{modern_sha256}\n//{modern_blake3}\n//{legacy}\n",
            hex(&a),
            cid_base32(&b)
        );
        let (list, report) = list(&[("a.deny", &text)]);
        assert_eq!(
            (report.rules, report.problems_total, report.foreign),
            (5, 0, 0)
        );
        for blocked in [a, b, c, d, e] {
            assert!(list.blocks(&blocked));
        }
        assert!(!list.blocks(&digest(6)));
        let named: Vec<_> = list.blocked_by_name().copied().collect();
        assert_eq!(named.len(), 2);
        assert!(named.contains(&a) && named.contains(&b));
    }

    #[test]
    fn the_last_rule_on_an_object_decides_across_forms_and_files() {
        let a = digest(1);
        let cid = cid_base32(&a);
        let (list, _) = list(&[
            ("10-block.deny", &format!("/ipfs/{cid}\n")),
            ("20-except.deny", &format!("!b3:{}\n", hex(&a))),
        ]);
        assert!(!list.blocks(&a));
        assert_eq!(list.blocked_by_name().count(), 0);
        let (list, _) = list_again(&a);
        assert!(list.blocks(&a));
    }

    fn list_again(a: &[u8; 32]) -> (Denylist, DenylistReport) {
        let legacy = hex(&Sha256::digest(format!("{}/", cid_base32(a)).as_bytes()).into());
        list(&[("x.deny", &format!("!b3:{}\n//{legacy}\n", hex(a)))])
    }

    #[test]
    fn what_names_nothing_ron_stores_is_foreign_and_garbage_is_reported() {
        let text = "\
/ipfs/QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR
/ipfs/bafybeihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq
/ipns/domain.example
b3:XYZ
/somewhere/else
//!!!
";
        let (list, report) = list(&[("mixed.deny", text)]);
        assert!(list.is_empty());
        assert_eq!(report.foreign, 3);
        assert_eq!(report.problems_total, 3);
        let lines: Vec<usize> = report.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 5, 6]);
        assert_eq!(
            report.problems[0].reason,
            "b3: is not followed by 64 lowercase hex digits"
        );
    }

    #[test]
    fn a_header_of_another_version_refuses_the_file() {
        let mut builder = DenylistBuilder::default();
        let err = builder
            .add_file("v2.deny", "version: 2\n---\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "v2.deny: header says version 2; only version 1 is read"
        );
        // A `---` never found: the whole file is rules, numbered from line 1.
        builder.add_file("plain.deny", "nonsense\n").unwrap();
        let (_, report) = builder.finish();
        assert_eq!(report.problems[0].line, 1);
    }

    #[test]
    fn rules_before_a_later_header_are_kept_and_its_dashes_reported() {
        // `cat plain.deny headed.deny > all.deny`: before, every rule before the `---`
        // was taken for a header and dropped without a word.
        let (first, second) = (digest(7), digest(8));
        let text = format!("b3:{}\nversion: 1\n---\nb3:{}\n", hex(&first), hex(&second));
        let (joined, report) = list(&[("all.deny", &text)]);
        assert!(joined.blocks(&first) && joined.blocks(&second));
        let lines: Vec<usize> = report.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3], "{:?}", report.problems);
        // A header of comments and keys is still a header.
        let headed = format!("# list\nname: x\n---\nb3:{}\n", hex(&first));
        let (headed, report) = list(&[("h.deny", &headed)]);
        assert!(headed.blocks(&first) && report.problems.is_empty());
    }

    proptest::proptest! {
        /// Whatever a file holds, reading it never panics and a check of any digest
        /// answers.
        #[test]
        fn any_text_reads_without_panicking(text in ".{0,400}", seed in 0u8..8) {
            let mut builder = DenylistBuilder::default();
            let _ = builder.add_file("any.deny", &text);
            let (list, _) = builder.finish();
            let _ = list.blocks(&digest(seed));
        }
    }

    /// A CID or double hash longer than any a rule could name is refused before it is
    /// decoded (base58 decodes in time quadratic in its length).
    #[test]
    fn overlong_hashes_are_refused_undecoded() {
        let long = "z".repeat(4000);
        let (_, report) = list(&[(
            "long.deny",
            &format!("//{long}\n/ipfs/z{long}\n//{}\n", base58(&digest(1))),
        )]);
        assert_eq!(report.rules, 1, "{report:?}");
        assert_eq!(report.problems_total, 2);
        assert!(report.problems[0]
            .reason
            .contains("longer than any multihash"));
    }
}
