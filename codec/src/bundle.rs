//! Bundle manifests: a site, an app's assets or a dataset as one address.
//!
//! A bundle is a set of stored objects — one per file, and per file its precompressed
//! variants — named by a *manifest*, itself an object, whose address names the bundle.
//! The manifest is JSON in one canonical form (what [`Manifest::encode`] writes: fields
//! in this order, entries sorted by path, variants and metadata sorted by key, no
//! whitespace), so packing the same tree twice gives the same address:
//!
//! ```text
//! {"format":"ron-bundle/1",
//!  "meta":{"tld":"site"},
//!  "entries":[{"path":"css/site.css","hash":"b3:<hex>","len":5120,
//!              "type":"text/css; charset=utf-8",
//!              "variants":{"br":{"hash":"b3:<hex>","len":1210},
//!                          "zstd":{"hash":"b3:<hex>","len":1302}}}, …]}
//! ```
//!
//! `meta` and `variants` may be absent (empty). [`Manifest::parse`] accepts any JSON
//! layout of that document but checks everything a server will rely on before an entry
//! is trusted: the format tag; at most [`MANIFEST_ENTRIES_MAX`] entries, each path named
//! once and never both a file and a directory; every path relative, `/`-separated, of
//! at most [`ENTRY_PATH_BYTES_MAX`] bytes, with no empty, `.` or `..` segment and no
//! control character or backslash; media types that are valid header values of at most
//! [`MEDIA_TYPE_BYTES_MAX`] bytes; variants only in [`Encoding`]s; metadata keys of
//! `[a-z0-9_-]`. A manifest of more than [`MANIFEST_BYTES_MAX`] bytes is refused before
//! it is parsed. Every failure is [`Error::BadManifest`] with the reason.
//!
//! Trust: a manifest is read only once its bytes verified against the bundle's
//! address, and an entry's bytes (or a variant's) are served only verified against the
//! address the manifest gives for them — the manifest's `len` fields are claims, checked
//! by the store that holds each piece.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Address, Error};

/// The format tag of this version of the manifest.
pub const FORMAT: &str = "ron-bundle/1";
/// The media type a manifest is stored and served with.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.ron.bundle+json";
/// Largest manifest parsed (about 45,000 entries with two variants and 30-byte paths).
pub const MANIFEST_BYTES_MAX: usize = 16 << 20;
/// Most entries in one manifest.
pub const MANIFEST_ENTRIES_MAX: usize = 65_536;
/// Longest entry path, bytes.
pub const ENTRY_PATH_BYTES_MAX: usize = 1024;
/// Longest media type, bytes (as a stored object's content type).
pub const MEDIA_TYPE_BYTES_MAX: usize = 255;
/// Most metadata keys; longest key and value, bytes.
pub const META_KEYS_MAX: usize = 32;
pub const META_KEY_BYTES_MAX: usize = 64;
pub const META_VALUE_BYTES_MAX: usize = 1024;

/// A content coding a variant is stored in (RFC 9110 §8.4.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The token of `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// One stored representation: its address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    #[serde(with = "address_text")]
    pub hash: Address,
    pub len: u64,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    #[serde(with = "address_text")]
    pub hash: Address,
    pub len: u64,
    #[serde(rename = "type")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<Encoding, Piece>,
}

impl Entry {
    /// The identity representation.
    pub fn identity(&self) -> Piece {
        Piece {
            hash: self.hash,
            len: self.len,
        }
    }
}

/// A parsed, checked manifest; entries sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// A manifest of `entries` (any order) and `meta`, checked as a parsed one is — its
    /// encoded length included: a packer stored manifests every node then refused.
    pub fn new(mut entries: Vec<Entry>, meta: BTreeMap<String, String>) -> Result<Manifest, Error> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            format: FORMAT.into(),
            meta,
            entries,
        };
        manifest.check()?;
        let encoded = manifest.encode().len();
        if encoded > MANIFEST_BYTES_MAX {
            return Err(bad(format!(
                "{encoded} bytes encoded, more than the {MANIFEST_BYTES_MAX} a manifest may have"
            )));
        }
        Ok(manifest)
    }

    /// The longest manifest `paths` could make (every file with a variant in each
    /// coding, every length at its longest), checked as [`Manifest::new`] checks: for
    /// a packer to refuse a tree before it stores a byte of it.
    pub fn check_could_hold(
        paths: &[String],
        meta: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let longest = |path: &String| Piece {
            hash: Address::of(path.as_bytes()),
            len: u64::MAX,
        };
        let entries = paths
            .iter()
            .map(|path| Entry {
                path: path.clone(),
                hash: longest(path).hash,
                len: u64::MAX,
                media_type: media_type_of(path).to_string(),
                variants: [Encoding::Br, Encoding::Zstd]
                    .map(|coding| (coding, longest(path)))
                    .into(),
            })
            .collect();
        Manifest::new(entries, meta.clone()).map(drop)
    }

    /// Parses and checks a manifest's bytes (already verified against its address).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(bad(format!(
                "{} bytes, more than the {MANIFEST_BYTES_MAX} a manifest may have",
                bytes.len()
            )));
        }
        let mut manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        manifest.entries.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.check()?;
        Ok(manifest)
    }

    /// The canonical bytes (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// The entry at `path` (exact, as the manifest names it).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.position(path).map(|at| &self.entries[at])
    }

    /// Where in `entries` the entry at `path` is.
    pub fn position(&self, path: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
    }

    /// Whether some entry lies under `dir/` (`""`: the root).
    pub fn is_dir(&self, dir: &str) -> bool {
        if dir.is_empty() {
            return !self.entries.is_empty();
        }
        let prefix = format!("{dir}/");
        let at = self
            .entries
            .partition_point(|e| e.path.as_str() < prefix.as_str());
        self.entries
            .get(at)
            .is_some_and(|e| e.path.starts_with(&prefix))
    }

    fn check(&self) -> Result<(), Error> {
        if self.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, this node reads {FORMAT:?}",
                self.format
            )));
        }
        if self.entries.is_empty() || self.entries.len() > MANIFEST_ENTRIES_MAX {
            return Err(bad(format!(
                "{} entries: from 1 to {MANIFEST_ENTRIES_MAX}",
                self.entries.len()
            )));
        }
        check_meta(&self.meta)?;
        for entry in &self.entries {
            check_path(&entry.path)?;
            check_media_type(&entry.path, &entry.media_type)?;
        }
        // Sorted: a path named twice is next to itself.
        for pair in self.entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(bad(format!("{:?} is named twice", pair[0].path)));
            }
        }
        // One search per entry for another under it — not one per parent directory of
        // each, which a hostile manifest of deep paths makes ~500 searches an entry.
        if let Some(file) = self.entries.iter().find(|e| self.is_dir(&e.path)) {
            return Err(bad(format!(
                "{:?} is both a file and a directory",
                file.path
            )));
        }
        Ok(())
    }
}

/// Longest reason a refused manifest is given, bytes: reasons quote the manifest's own
/// strings (a format, a key, serde's "unknown field …"), and a node keeps and answers
/// them for every request under the object.
pub const MANIFEST_REASON_BYTES_MAX: usize = 512;

fn bad(reason: String) -> Error {
    if reason.len() <= MANIFEST_REASON_BYTES_MAX {
        return Error::BadManifest { reason };
    }
    // The start and the end: a quoted string is cut in its middle, and what the
    // reason says of it (its end) stays.
    let half = MANIFEST_REASON_BYTES_MAX / 2;
    let mut head = half;
    while !reason.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = reason.len() - half;
    while !reason.is_char_boundary(tail) {
        tail += 1;
    }
    let reason = format!("{}…{}", &reason[..head], &reason[tail..]);
    Error::BadManifest { reason }
}

/// A relative, `/`-separated path without empty, `.` or `..` segments, control
/// characters or backslashes.
pub fn check_path(path: &str) -> Result<(), Error> {
    if path.is_empty() || path.len() > ENTRY_PATH_BYTES_MAX {
        return Err(bad(format!(
            "an entry path of {} bytes: from 1 to {ENTRY_PATH_BYTES_MAX}",
            path.len()
        )));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad(format!(
            "entry path {path:?} holds a control character or a backslash"
        )));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad(format!(
                "entry path {path:?}: empty, \".\" and \"..\" segments (and a leading, \
                 trailing or doubled \"/\") are not allowed"
            )));
        }
    }
    Ok(())
}

fn check_media_type(path: &str, media_type: &str) -> Result<(), Error> {
    let printable = media_type
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic());
    if media_type.is_empty() || media_type.len() > MEDIA_TYPE_BYTES_MAX || !printable {
        return Err(bad(format!(
            "{path:?}: media type {media_type:?} is not 1 to {MEDIA_TYPE_BYTES_MAX} printable \
             ASCII characters"
        )));
    }
    Ok(())
}

/// Metadata keys of `[a-z0-9_-]`, values without control characters, within the limits.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), Error> {
    if meta.len() > META_KEYS_MAX {
        return Err(bad(format!(
            "{} metadata keys, at most {META_KEYS_MAX}",
            meta.len()
        )));
    }
    for (key, value) in meta {
        let key_ok = !key.is_empty()
            && key.len() <= META_KEY_BYTES_MAX
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !key_ok {
            return Err(bad(format!(
                "metadata key {key:?}: 1 to {META_KEY_BYTES_MAX} of [a-z0-9_-]"
            )));
        }
        if value.len() > META_VALUE_BYTES_MAX || value.chars().any(char::is_control) {
            return Err(bad(format!(
                "metadata {key:?}: a value of at most {META_VALUE_BYTES_MAX} bytes without \
                 control characters"
            )));
        }
    }
    Ok(())
}

/// The media type `ron pack` gives a file, from its extension (`application/octet-stream`
/// when unknown); text types say UTF-8.
pub fn media_type_of(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "rs" | "toml" | "sh" | "py" | "c" | "h" | "yaml" | "yml" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Addresses as their `b3:<hex>` text.
mod address_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Address;

    pub fn serialize<S: Serializer>(addr: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::parse(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
