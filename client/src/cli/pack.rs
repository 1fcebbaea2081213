//! `ron pack PATH`: stores a file or a directory tree as a bundle (`ron_codec::bundle`)
//! and prints the manifest's address, which names the bundle.
//!
//! Every regular file becomes an object; a directory's files are named by their paths
//! below it, `/`-separated (symbolic links and other non-regular files are skipped, each
//! said on stderr). A file of at most [`COMPRESS_BYTES_MAX`] whose media type is not
//! already compressed also gets a brotli (quality 11) and a zstd (level 19) variant,
//! each kept only when it saves at least [`VARIANT_SAVING_PERCENT_MIN`] % and
//! [`VARIANT_SAVING_BYTES_MIN`] bytes — what nginx's `brotli_static`/`gzip_static` serve
//! from, made once at pack time. The manifest goes last, once every piece it names is
//! stored; packing the same tree again gives the same address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ron_codec::bundle::{self, Encoding, Entry, Manifest, Piece};
use ron_codec::Address;

use crate::{Client, ClientError, Endpoint, Options};

/// Largest file `ron pack` makes compressed variants of (read whole into memory).
pub const COMPRESS_BYTES_MAX: u64 = 16 << 20;
/// A variant is kept when it is at least this much smaller than the file …
pub const VARIANT_SAVING_PERCENT_MIN: u64 = 5;
/// … and by at least this many bytes.
pub const VARIANT_SAVING_BYTES_MIN: u64 = 128;
const BROTLI_QUALITY: u32 = 11;
const BROTLI_WINDOW_LOG: u32 = 22;
const ZSTD_LEVEL: i32 = 19;

/// What `ron pack` was asked for.
#[derive(Debug)]
pub struct PackRequest {
    pub path: PathBuf,
    /// The manifest's `meta` (`--tld TYPE` is `tld`).
    pub meta: BTreeMap<String, String>,
}

/// Totals printed on stderr.
#[derive(Debug, Default)]
struct Totals {
    files: usize,
    bytes: u64,
    variants: BTreeMap<Encoding, (usize, u64)>,
}

pub(super) fn run(
    endpoint: &Endpoint,
    options: Options,
    request: PackRequest,
) -> Result<(), ClientError> {
    bundle::check_meta(&request.meta).map_err(|e| ClientError::Usage(e.to_string()))?;
    let files = files_of(&request.path)?;
    if files.len() > bundle::MANIFEST_ENTRIES_MAX {
        return Err(ClientError::Usage(format!(
            "{}: {} files, a bundle holds at most {}",
            request.path.display(),
            files.len(),
            bundle::MANIFEST_ENTRIES_MAX
        )));
    }
    // Refused before a byte is stored: a tree whose manifest would pass the size a node
    // reads was stored whole, then answered 400 at every path.
    let names: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    Manifest::check_could_hold(&names, &request.meta)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", request.path.display())))?;
    let mut client = Client::connect(endpoint, options)?;
    let mut totals = Totals::default();
    let mut entries = Vec::with_capacity(files.len());
    for (name, path) in &files {
        entries.push(store_file(&mut client, name, path, &mut totals)?);
    }
    let manifest = Manifest::new(entries, request.meta)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", request.path.display())))?;
    let bytes = manifest.encode();
    let stored = put_bytes(&mut client, &bytes)?;
    eprintln!("{}", summary(&totals, bytes.len()));
    println!("{}", stored.addr);
    Ok(())
}

/// The regular files under `root` (or `root` itself), each with its bundle path, sorted.
fn files_of(root: &Path) -> Result<Vec<(String, PathBuf)>, ClientError> {
    let meta = std::fs::metadata(root).map_err(file_error("read", root))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ClientError::Usage(format!("{}: not a UTF-8 name", root.display())))?;
        return Ok(vec![(checked(name, root)?, root.to_path_buf())]);
    }
    let mut found = Vec::new();
    walk(root, "", &mut found)?;
    if found.is_empty() {
        return Err(ClientError::Usage(format!(
            "{}: no regular file to pack",
            root.display()
        )));
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, PathBuf)>) -> Result<(), ClientError> {
    let listing = std::fs::read_dir(dir).map_err(file_error("list", dir))?;
    for item in listing {
        let item = item.map_err(file_error("list", dir))?;
        let path = item.path();
        let kind = item.file_type().map_err(file_error("read", &path))?;
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| ClientError::Usage(format!("{}: not a UTF-8 name", path.display())))?;
        let bundle_path = format!("{prefix}{name}");
        if kind.is_dir() {
            walk(&path, &format!("{bundle_path}/"), found)?;
        } else if kind.is_file() {
            found.push((checked(&bundle_path, &path)?, path));
        } else {
            eprintln!("skipped {} (not a regular file)", path.display());
        }
    }
    Ok(())
}

/// `name` if a manifest may hold it.
fn checked(name: &str, path: &Path) -> Result<String, ClientError> {
    bundle::check_path(name)
        .map(|()| name.to_string())
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

fn store_file(
    client: &mut Client,
    name: &str,
    path: &Path,
    totals: &mut Totals,
) -> Result<Entry, ClientError> {
    let media_type = bundle::media_type_of(name);
    let len = std::fs::metadata(path)
        .map_err(file_error("read", path))?
        .len();
    let compressible = len <= COMPRESS_BYTES_MAX && !already_compressed(media_type);
    // A file to compress is read once: its upload and its variants come from memory.
    let (stored, body) = match compressible {
        true => {
            let body = std::fs::read(path).map_err(file_error("read", path))?;
            (put_bytes(client, &body)?, Some(body))
        }
        false => (client.put_file(path, &mut |_| {})?, None),
    };
    let mut entry = Entry {
        path: name.to_string(),
        hash: stored.addr,
        len: stored.len,
        media_type: media_type.to_string(),
        variants: BTreeMap::new(),
    };
    totals.files += 1;
    totals.bytes += stored.len;
    let Some(body) = body else {
        return Ok(entry);
    };
    for encoding in [Encoding::Br, Encoding::Zstd] {
        let variant = compress(encoding, &body).map_err(ClientError::Input)?;
        if !worth_keeping(stored.len, variant.len() as u64) {
            continue;
        }
        let piece = put_bytes(client, &variant)?;
        entry.variants.insert(
            encoding,
            Piece {
                hash: piece.addr,
                len: piece.len,
            },
        );
        let (count, saved) = totals.variants.entry(encoding).or_default();
        *count += 1;
        *saved += stored.len - piece.len;
    }
    Ok(entry)
}

fn put_bytes(client: &mut Client, bytes: &[u8]) -> Result<crate::Stored, ClientError> {
    let addr = Address::of(bytes);
    client.put(&mut &bytes[..], addr, bytes.len() as u64, &mut |_| {})
}

/// Whether a variant of `variant_len` bytes saves enough over `len` to be stored.
fn worth_keeping(len: u64, variant_len: u64) -> bool {
    let saved = len.saturating_sub(variant_len);
    saved >= VARIANT_SAVING_BYTES_MIN && saved * 100 >= len * VARIANT_SAVING_PERCENT_MIN
}

/// Media types whose bytes are compressed already: no variant is tried.
fn already_compressed(media_type: &str) -> bool {
    let (kind, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    matches!(kind, "video" | "audio")
        || matches!(
            media_type,
            "image/png"
                | "image/jpeg"
                | "image/gif"
                | "image/webp"
                | "image/avif"
                | "font/woff"
                | "font/woff2"
                | "application/zip"
                | "application/gzip"
                | "application/pdf"
        )
}

fn compress(encoding: Encoding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Br => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY as i32,
                lgwin: BROTLI_WINDOW_LOG as i32,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL),
        Encoding::Gzip => Err(std::io::Error::other("ron pack makes no gzip variants")),
    }
}

fn summary(totals: &Totals, manifest_len: usize) -> String {
    let mut line = format!(
        "packed {} files, {} bytes; manifest {manifest_len} bytes",
        totals.files, totals.bytes
    );
    for (encoding, (count, saved)) in &totals.variants {
        line.push_str(&format!(
            "; {} variants: {count} (saving {saved} bytes)",
            encoding.token()
        ));
    }
    line
}

fn file_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.to_path_buf();
    move |source| ClientError::File { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_is_kept_only_when_it_saves_enough() {
        assert!(worth_keeping(10_000, 9_000));
        assert!(!worth_keeping(10_000, 9_600), "4 % saved");
        assert!(!worth_keeping(1_000, 900), "100 bytes saved");
        assert!(!worth_keeping(100, 200), "larger");
    }

    #[test]
    fn both_variants_decode_to_the_file() {
        let body = b"<html>".repeat(1_000);
        let br = compress(Encoding::Br, &body).unwrap();
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
        assert_eq!(back, body);
        let z = compress(Encoding::Zstd, &body).unwrap();
        assert_eq!(zstd::bulk::decompress(&z, body.len()).unwrap(), body);
    }

    #[test]
    fn a_tree_is_named_by_sorted_relative_paths() {
        let root = std::env::temp_dir().join(format!("ron-pack-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        for name in ["z.txt", "b/c/d.css", "b/a.js"] {
            std::fs::write(root.join(name), name).unwrap();
        }
        std::os::unix::fs::symlink(root.join("z.txt"), root.join("link")).unwrap();
        let names: Vec<String> = files_of(&root)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["b/a.js", "b/c/d.css", "z.txt"]);
        let one = files_of(&root.join("z.txt")).unwrap();
        assert_eq!(one[0].0, "z.txt");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
