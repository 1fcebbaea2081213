//! `GET /o/<manifest>/<path>`: an entry of a bundle (`ron_codec::bundle`,
//! docs/design/bundles.md), in the content coding `Accept-Encoding` allows.
//!
//! The manifest is read as any object — verified against the bundle's address, through
//! read-through on an edge — then parsed and checked whole before an entry is trusted,
//! and kept parsed in a small per-shard cache ([`ManifestCache`]). The path is
//! percent-decoded and checked as a manifest path; `/` and a directory's `dir/` answer
//! its `index.html`, a directory named without its slash is redirected (301) to it, and
//! a directory without an `index.html` is 404 (directories are not listed). The chosen
//! representation — identity or a stored variant — is then served by the object path
//! (`get.rs`): verified against its own address, its own ETag, ranges and conditions
//! over it, with the manifest's media type, `Content-Encoding` and
//! `Vary: Accept-Encoding`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use ron_codec::bundle::{self, Encoding, Entry, Manifest};
use ron_codec::http::accept;
use ron_codec::http::response::ResponseHead;
use ron_codec::tree::GROUP_LEN_BYTES;
use ron_codec::{Address, ErrorCode};
use ron_io::stream::Transport;
use ron_link::counters::BUNDLE_CODINGS;
use ron_shards::lifecycle::finished_within;

use super::get::{self, Shown, ShownAs};
use super::request::{quoted_etag, Request};
use super::respond::{self, common_headers, CACHE_CONTROL};
use super::{write_out, Abort, Conn, HttpContext};
use crate::admission::Ticket;
use crate::limits::{
    MANIFEST_CACHE_BYTES_MAX, MANIFEST_CACHE_ENTRIES_MAX, MANIFEST_INLINE_PARSE_BYTES_MAX,
    MANIFEST_REFUSALS_MAX,
};
use crate::refusal::Refusal;
use crate::service::{Object, Span};

pub(super) async fn get<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    bundle: &Address,
    raw_path: &str,
    close: bool,
) -> Result<u16, Abort> {
    let located = match wanted(raw_path) {
        Ok(wanted) => match manifest(ctx, bundle, conn.ticket.as_ref()).await {
            Ok(manifest) => locate(&manifest, &wanted, bundle).map(|at| (manifest, at)),
            Err(refusal) => Err(refusal),
        },
        Err(refusal) => Err(refusal),
    };
    let (manifest, entry) = match located {
        Ok((manifest, Located::Entry(at))) => (manifest, at),
        Ok((_, Located::Directory)) => {
            let location = directory_location(bundle, raw_path);
            return redirect(ctx, conn, req, &location, close).await;
        }
        Err(refusal) => return respond::refuse_request(ctx, conn, req, &refusal, close).await,
    };
    // The entry alone is kept while it is served (a slow reader holds it for minutes):
    // the parsed manifest, tens of MB for a big site, goes back to the cache, or away.
    let entry = manifest.entries[entry].clone();
    drop(manifest);
    // The denylist names content: the entry's own bytes blocked block every coding of
    // them (a browser asking for br got the blocked file in br).
    if let Err(refusal) = ctx.service.check_blocked(&entry.hash) {
        return respond::refuse_request(ctx, conn, req, &refusal, close).await;
    }
    let mut last = None;
    for coding in ranked(req, &entry) {
        let pick = Pick {
            coding,
            fallback: last.is_some(),
        };
        match serve(ctx, conn, req, bundle, &entry, pick, close).await? {
            Ok(status) => {
                count_served(ctx, status, coding);
                return Ok(status);
            }
            // A stored representation that fails verification is never sent, and a
            // variant this node cannot give (not held, blocked, its upstream failing) is
            // passed over: the next acceptable one is tried, and the first refusal
            // answered if none serves.
            Err(refusal) if next_is_tried(&refusal, coding) => {
                tracing::warn!(bundle = %bundle, path = %entry.path, coding = coding.map_or("identity", Encoding::token), reason = %refusal, "a bundle representation cannot be served: trying the next one");
                last.get_or_insert(refusal);
            }
            Err(refusal) => return respond::refuse_request(ctx, conn, req, &refusal, close).await,
        }
    }
    let refusal = last.unwrap_or_else(|| not_acceptable(&entry));
    respond::refuse_request(ctx, conn, req, &refusal, close).await
}

/// Whether a representation's refusal passes on to the next acceptable one: a stored
/// copy failing verification (any representation), or a variant this node cannot give
/// — not held, blocked, or its read-through failing — while the entry's own bytes may
/// still be (an edge whose upstream is down still serves the identity it holds).
fn next_is_tried(refusal: &Refusal, coding: Option<Encoding>) -> bool {
    match refusal.code() {
        ErrorCode::StoredDigestMismatch => true,
        ErrorCode::NotFound
        | ErrorCode::Blocked
        | ErrorCode::BadGateway
        | ErrorCode::GatewayTimeout => coding.is_some(),
        _ => false,
    }
}

/// A representation of an entry to try.
#[derive(Clone, Copy)]
struct Pick {
    /// None: identity.
    coding: Option<Encoding>,
    /// A coding the client preferred was passed over before this one.
    fallback: bool,
}

/// Serves `entry` as `pick` says, or says why not before sending anything.
async fn serve<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    bundle: &Address,
    entry: &Entry,
    Pick { coding, fallback }: Pick,
    close: bool,
) -> Result<Result<u16, Refusal>, Abort> {
    let piece = coding.map_or(entry.identity(), |e| entry.variants[&e]);
    let etag = quoted_etag(&piece.hash);
    let validators = req.late_validators.as_deref();
    let shown = Shown {
        media_type: &entry.media_type,
        conditions: validators.map(|v| v.conditions(&etag)).unwrap_or_default(),
        if_range_failed: validators.is_some_and(|v| v.if_range_failed(&[&etag])),
        kind: ShownAs::BundleEntry {
            coding: coding.map(Encoding::token),
            claimed_len: piece.len,
            bundle: *bundle,
            path: &entry.path,
            fallback,
        },
    };
    get::try_get(ctx, conn, req, &piece.hash, Some(&shown), close).await
}

fn count_served(ctx: &HttpContext, status: u16, coding: Option<Encoding>) {
    if !matches!(status, 200 | 206 | 304) {
        return;
    }
    let label = coding.map_or("identity", Encoding::token);
    if let Some(at) = BUNDLE_CODINGS.iter().position(|l| *l == label) {
        ctx.metrics().bundle_entry_served(at);
    }
}

/// What a request path asks for, decoded and checked before the manifest is read.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// `path`: an entry, or a directory named without its slash.
    Named(String),
    /// `dir/` (`""`: the root): its index.html.
    Index(String),
}

enum Located {
    Entry(usize),
    /// A directory named without its trailing slash: redirected to it.
    Directory,
}

/// The request path (as sent, after `/o/<bundle>/`) as a manifest path: percent-decoded
/// and held to the manifest's own path rules; only the empty path is the root.
fn wanted(raw: &str) -> Result<Wanted, Refusal> {
    let path = decode_path(raw)?;
    if path.is_empty() {
        return Ok(Wanted::Index(path));
    }
    let (name, index) = match path.strip_suffix('/') {
        Some(dir) => (dir, true),
        None => (path.as_str(), false),
    };
    bundle::check_path(name).map_err(|e| bad_path(&path, e))?;
    Ok(match index {
        true => Wanted::Index(name.to_string()),
        false => Wanted::Named(path),
    })
}

/// Where a directory named without its slash is (`raw_path` as the request wrote it):
/// bytes that are not visible ASCII (raw UTF-8, which request targets may carry) are
/// percent-encoded — a field value is visible ASCII (RFC 9110 §5.5).
fn directory_location(bundle: &Address, raw_path: &str) -> String {
    let mut location = format!("/o/{bundle}/");
    for &byte in raw_path.as_bytes() {
        match byte {
            0x21..=0x7e => location.push(char::from(byte)),
            _ => location.push_str(&format!("%{byte:02X}")),
        }
    }
    location.push('/');
    location
}

fn bad_path(path: &str, error: ron_codec::Error) -> Refusal {
    let reason = match error {
        ron_codec::Error::BadManifest { reason } => reason,
        other => other.to_string(),
    };
    Refusal::BadBundlePath {
        path: path.chars().take(256).collect(),
        reason,
    }
}

/// The entry `wanted` names in `manifest` (see the module doc).
fn locate(manifest: &Manifest, wanted: &Wanted, bundle: &Address) -> Result<Located, Refusal> {
    match wanted {
        Wanted::Named(path) => match manifest.position(path) {
            Some(at) => Ok(Located::Entry(at)),
            None if manifest.is_dir(path) => Ok(Located::Directory),
            None => Err(Refusal::NoBundleEntry {
                bundle: *bundle,
                path: path.clone(),
            }),
        },
        Wanted::Index(dir) => {
            let index = match dir.as_str() {
                "" => "index.html".to_string(),
                dir => format!("{dir}/index.html"),
            };
            match manifest.position(&index) {
                Some(at) => Ok(Located::Entry(at)),
                None if manifest.is_dir(dir) => Err(Refusal::NoBundleIndex {
                    bundle: *bundle,
                    dir: format!("{dir}/"),
                }),
                None => Err(Refusal::NoBundleEntry {
                    bundle: *bundle,
                    path: format!("{dir}/"),
                }),
            }
        }
    }
}

/// A request path, percent-decoded (RFC 3986 §2.1) into UTF-8; an encoded `/` is
/// refused (it would name another entry than the one it seems to).
fn decode_path(raw: &str) -> Result<String, Refusal> {
    let bad = |reason: &str| Refusal::BadBundlePath {
        path: raw.chars().take(256).collect(),
        reason: reason.to_string(),
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = |d: Option<u8>| d.and_then(|d| (d as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.next()), hex(bytes.next())) else {
            return Err(bad("a % not followed by two hex digits"));
        };
        let decoded = (hi * 16 + lo) as u8;
        if decoded == b'/' {
            return Err(bad("an encoded \"/\" (%2F) is not allowed"));
        }
        out.push(decoded);
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8 once decoded"))
}

/// The acceptable representations of `entry`, best first (none: nothing acceptable).
fn ranked(req: &Request, entry: &Entry) -> Vec<Option<Encoding>> {
    let available: Vec<(Encoding, u64)> = entry.variants.iter().map(|(e, p)| (*e, p.len)).collect();
    accept::ranked_codings(req.accept_encoding.members(), &available, entry.len)
}

fn not_acceptable(entry: &Entry) -> Refusal {
    Refusal::NoAcceptableCoding {
        path: entry.path.clone(),
        stored: std::iter::once("identity")
            .chain(entry.variants.keys().map(|e| e.token()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The bundle's manifest: from the cache, or read (verified) and parsed. At most
/// [`crate::limits::MANIFEST_LOADS_MAX`] are read at once per shard (each up to 16 MiB in
/// memory), each for at most [`crate::limits::MANIFEST_LOAD_MS_MAX`]; a request that
/// waited finds in the cache what the load before it put there. The object is found
/// (stored, or its read-through started and its first group in) before a slot is
/// taken: a client asking for addresses nobody has waits on its own lookups, holding
/// none. The denylist is asked first, every time: a manifest cached before its bundle
/// was blocked must not keep the site up (a popular one would never leave the cache).
/// What a load reads is charged to the requester's byte quota: the answer may be a
/// hundred bytes, the manifest it took up to 16 MiB.
async fn manifest(
    ctx: &HttpContext,
    bundle: &Address,
    ticket: Option<&Ticket>,
) -> Result<Rc<Manifest>, Refusal> {
    ctx.service.check_blocked(bundle)?;
    if let Some(known) = ctx.manifests.borrow_mut().get(bundle) {
        return known;
    }
    let object = ctx.service.find(bundle, ticket).await?;
    let _permit = ctx
        .manifest_loads
        .acquire_permit(1)
        .await
        .map_err(|_| Refusal::ShuttingDown)?;
    if let Some(known) = ctx.manifests.borrow_mut().get(bundle) {
        return known;
    }
    let timeout_ms = crate::limits::MANIFEST_LOAD_MS_MAX;
    let load = manifest_bytes(ctx, bundle, &object, ticket);
    let bytes = finished_within(Duration::from_millis(timeout_ms), load)
        .await
        .ok_or(Refusal::ManifestLoadTimeout {
            addr: *bundle,
            timeout_ms,
        })??;
    let len = bytes.len();
    match parse(bytes).await {
        Ok(manifest) => {
            let manifest = Rc::new(manifest);
            ctx.manifests
                .borrow_mut()
                .insert(*bundle, Rc::clone(&manifest), len);
            Ok(manifest)
        }
        Err(refusal) => {
            ctx.manifests.borrow_mut().refuse(*bundle, &refusal);
            Err(refusal)
        }
    }
}

/// The manifest's bytes, each group verified against the bundle's address. The first
/// group is read alone: an object that does not begin as a JSON object (an image, a
/// video) is refused having cost one group, not the whole object. Every group read is
/// charged to `ticket`'s quota.
async fn manifest_bytes(
    ctx: &HttpContext,
    bundle: &Address,
    object: &Object,
    ticket: Option<&Ticket>,
) -> Result<Vec<u8>, Refusal> {
    let len = object.len();
    if len > bundle::MANIFEST_BYTES_MAX as u64 {
        let refusal = Refusal::Codec(ron_codec::Error::BadManifest {
            reason: format!(
                "{bundle} is {len} bytes, more than the {} a manifest may have",
                bundle::MANIFEST_BYTES_MAX
            ),
        });
        ctx.manifests.borrow_mut().refuse(*bundle, &refusal);
        return Err(refusal);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    let first_group = len.min(GROUP_LEN_BYTES);
    for (first, span_len) in [(0, first_group), (first_group, len - first_group)] {
        if span_len == 0 {
            continue;
        }
        let span = Span {
            first,
            len: span_len,
            partial: span_len < len,
            total: len,
        };
        let mut stream = ctx
            .service
            .stream(object, span, ticket.map(Ticket::tenant))
            .await?;
        while let Some(group) = stream.next().await {
            let group = group?;
            if let Some(ticket) = ticket {
                ctx.admission.charge_work(ticket, group.bytes.len() as u64);
            }
            bytes.extend_from_slice(&group.bytes);
        }
        if first == 0 && !may_begin_a_manifest(&bytes) {
            let refusal = Refusal::Codec(ron_codec::Error::BadManifest {
                reason: format!("not a manifest: {bundle} does not begin with a JSON object"),
            });
            ctx.manifests.borrow_mut().refuse(*bundle, &refusal);
            return Err(refusal);
        }
    }
    Ok(bytes)
}

/// Whether `start`, an object's first bytes, may begin a manifest (JSON whitespace,
/// then an object's `{`; all whitespace so far may too).
fn may_begin_a_manifest(start: &[u8]) -> bool {
    start
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_none_or(|b| *b == b'{')
}

/// Parses a manifest: inline when short, on the blocking pool when parsing it would
/// stall the shard's other connections (a 16 MiB manifest: 0.1 s at most, release build).
async fn parse(bytes: Vec<u8>) -> Result<Manifest, Refusal> {
    if bytes.len() <= MANIFEST_INLINE_PARSE_BYTES_MAX {
        return Ok(Manifest::parse(&bytes)?);
    }
    let parsed = glommio::executor()
        .spawn_blocking(move || Manifest::parse(&bytes))
        .await;
    Ok(parsed?)
}

/// 301 to the directory's own URL (with its slash), as nginx answers a directory.
async fn redirect<S: Transport>(
    ctx: &HttpContext,
    conn: &mut Conn<S>,
    req: &Request,
    location: &str,
    close: bool,
) -> Result<u16, Abort> {
    conn.wbuf.clear();
    let mut head = ResponseHead::start(&mut conn.wbuf, 301);
    common_headers(ctx, &mut head, &req.corr_id, close, req.http10);
    head.content_length(0)
        .header("Location", location.as_bytes())
        .header("Cache-Control", CACHE_CONTROL);
    head.finish();
    write_out(ctx, conn).await?;
    Ok(301)
}

/// Parsed manifests a shard keeps, most recently used last, bounded by count and by the
/// bytes of their encoded form; and the objects found not to be manifests, with why
/// (objects are immutable: a client asking again for a path under one costs no read),
/// [`MANIFEST_REFUSALS_MAX`] of them: a client cycling through more objects than are
/// remembered makes the node read each again (charged to its quota).
#[derive(Debug, Default)]
pub(crate) struct ManifestCache {
    held: VecDeque<(Address, Rc<Manifest>, usize)>,
    bytes: usize,
    refused: HashMap<Address, Rc<str>>,
    refused_order: VecDeque<Address>,
}

impl ManifestCache {
    /// The manifest, or the refusal an object that is none was given.
    fn get(&mut self, bundle: &Address) -> Option<Result<Rc<Manifest>, Refusal>> {
        if let Some(reason) = self.refused.get(bundle) {
            let reason = reason.to_string();
            return Some(Err(Refusal::Codec(ron_codec::Error::BadManifest {
                reason,
            })));
        }
        let at = self.held.iter().position(|(a, ..)| a == bundle)?;
        let hit = self.held.remove(at)?;
        let manifest = Rc::clone(&hit.1);
        self.held.push_back(hit);
        Some(Ok(manifest))
    }

    /// Remembers that `bundle` is not a manifest (the oldest such forgotten first).
    fn refuse(&mut self, bundle: Address, refusal: &Refusal) {
        let Refusal::Codec(ron_codec::Error::BadManifest { reason }) = refusal else {
            return;
        };
        if self.refused.contains_key(&bundle) {
            return;
        }
        if self.refused.len() >= MANIFEST_REFUSALS_MAX {
            if let Some(oldest) = self.refused_order.pop_front() {
                self.refused.remove(&oldest);
            }
        }
        self.refused.insert(bundle, Rc::from(reason.as_str()));
        self.refused_order.push_back(bundle);
    }

    fn insert(&mut self, bundle: Address, manifest: Rc<Manifest>, bytes: usize) {
        if bytes > MANIFEST_CACHE_BYTES_MAX || self.held.iter().any(|(a, ..)| *a == bundle) {
            return;
        }
        while self.held.len() >= MANIFEST_CACHE_ENTRIES_MAX
            || self.bytes + bytes > MANIFEST_CACHE_BYTES_MAX
        {
            let Some((_, _, freed)) = self.held.pop_front() else {
                break;
            };
            self.bytes -= freed;
        }
        self.bytes += bytes;
        self.held.push_back((bundle, manifest, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::bundle::media_type_of;
    use std::collections::BTreeMap;

    fn site() -> Manifest {
        let entry = |path: &str| Entry {
            path: path.into(),
            hash: Address::of(path.as_bytes()),
            len: path.len() as u64,
            media_type: media_type_of(path).into(),
            variants: BTreeMap::new(),
        };
        let paths = [
            "index.html",
            "docs/index.html",
            "docs/a b.txt",
            "img/logo.png",
        ];
        Manifest::new(paths.iter().map(|p| entry(p)).collect(), BTreeMap::new()).unwrap()
    }

    #[test]
    fn refusals_are_remembered_up_to_their_limit_oldest_forgotten_first() {
        let mut cache = ManifestCache::default();
        let refusal = |i: usize| {
            Refusal::Codec(ron_codec::Error::BadManifest {
                reason: format!("not a manifest: {i}"),
            })
        };
        let addr = |i: usize| Address::of(&i.to_le_bytes());
        for i in 0..=MANIFEST_REFUSALS_MAX {
            cache.refuse(addr(i), &refusal(i));
        }
        // Refused again: remembered once, its place unchanged.
        cache.refuse(addr(1), &refusal(1));
        assert_eq!(cache.refused.len(), MANIFEST_REFUSALS_MAX);
        assert!(cache.get(&addr(0)).is_none(), "the oldest is forgotten");
        for i in [1, MANIFEST_REFUSALS_MAX / 2, MANIFEST_REFUSALS_MAX] {
            let Some(Err(Refusal::Codec(ron_codec::Error::BadManifest { reason }))) =
                cache.get(&addr(i))
            else {
                panic!("refusal {i} is remembered");
            };
            assert_eq!(reason, format!("not a manifest: {i}"));
        }
        cache.refuse(addr(0), &refusal(0));
        assert!(cache.get(&addr(1)).is_none(), "then the next oldest");
    }

    #[test]
    fn only_whitespace_and_an_opening_brace_may_begin_a_manifest() {
        for start in [&b"{\"format\""[..], b"  \n\t{", b"", b"   "] {
            assert!(may_begin_a_manifest(start), "{start:?}");
        }
        for start in [&b"\x89PNG"[..], b"[{}]", b"\xef\xbb\xbf{", b" x{"] {
            assert!(!may_begin_a_manifest(start), "{start:?}");
        }
    }

    #[test]
    fn a_directory_location_is_visible_ascii() {
        let bundle = Address::of(b"site");
        assert_eq!(
            directory_location(&bundle, "caf\u{e9}/docs"),
            format!("/o/{bundle}/caf%C3%A9/docs/")
        );
        assert_eq!(
            directory_location(&bundle, "a%20b"),
            format!("/o/{bundle}/a%20b/"),
            "what the client encoded stays as it wrote it"
        );
    }

    fn resolved(path: &str) -> Result<String, String> {
        let manifest = site();
        let bundle = Address::of(b"bundle");
        let wanted = wanted(path).map_err(|e| e.to_string())?;
        match locate(&manifest, &wanted, &bundle) {
            Ok(Located::Entry(at)) => Ok(manifest.entries[at].path.clone()),
            Ok(Located::Directory) => Ok("redirect".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn paths_resolve_to_entries_indexes_and_redirects() {
        assert_eq!(resolved("").unwrap(), "index.html");
        assert_eq!(resolved("index.html").unwrap(), "index.html");
        assert_eq!(resolved("docs/").unwrap(), "docs/index.html");
        assert_eq!(resolved("docs").unwrap(), "redirect");
        assert_eq!(resolved("docs/a%20b.txt").unwrap(), "docs/a b.txt");
        let no_index = resolved("img/").unwrap_err();
        assert!(
            no_index.contains("\"img/\" is a directory without index.html"),
            "{no_index}"
        );
        let missing = resolved("nope.html").unwrap_err();
        assert!(missing.ends_with("has no entry \"nope.html\""), "{missing}");
        assert!(resolved("index.html/")
            .unwrap_err()
            .contains("has no entry"));
        for bad in [
            "../x",
            "docs//index.html",
            "docs/./index.html",
            "a%2Fb",
            "%zz",
            "%ff",
            "/",
        ] {
            let message = resolved(bad).unwrap_err();
            assert!(message.starts_with("bundle path"), "{bad}: {message}");
        }
        assert!(resolved("%2e%2e/x").unwrap_err().contains("\"..\""));
    }

    /// The counter's `encoding` labels are identity and every coding a manifest holds.
    #[test]
    fn every_coding_has_its_counter_label() {
        assert_eq!(BUNDLE_CODINGS[0], "identity");
        assert_eq!(BUNDLE_CODINGS[1..], Encoding::ALL.map(Encoding::token));
    }

    #[test]
    fn the_manifest_cache_keeps_the_recently_used_within_its_bounds() {
        let mut cache = ManifestCache::default();
        let manifest = Rc::new(site());
        let addr = |i: u32| Address::of(&i.to_be_bytes());
        for i in 0..(MANIFEST_CACHE_ENTRIES_MAX as u32 + 5) {
            cache.insert(addr(i), Rc::clone(&manifest), 1000);
            assert!(
                cache.get(&addr(0)).is_some_and(|m| m.is_ok()),
                "kept while used"
            );
        }
        assert_eq!(cache.held.len(), MANIFEST_CACHE_ENTRIES_MAX);
        assert!(
            cache.get(&addr(1)).is_none(),
            "the least recently used left"
        );
        cache.insert(
            addr(999),
            Rc::clone(&manifest),
            MANIFEST_CACHE_BYTES_MAX + 1,
        );
        assert!(
            cache.get(&addr(999)).is_none(),
            "larger than the whole cache"
        );
        cache.insert(addr(998), manifest, MANIFEST_CACHE_BYTES_MAX);
        assert_eq!(cache.held.len(), 1);
        assert_eq!(cache.bytes, MANIFEST_CACHE_BYTES_MAX);
        let not_one = Refusal::Codec(ron_codec::Error::BadManifest {
            reason: "not a manifest: x".into(),
        });
        cache.refuse(addr(5), &not_one);
        let again = cache.get(&addr(5)).unwrap().unwrap_err();
        assert_eq!(again.to_string(), "bundle manifest: not a manifest: x");
        cache.refuse(addr(6), &Refusal::ShuttingDown);
        assert!(
            cache.get(&addr(6)).is_none(),
            "only a manifest's own refusal is kept"
        );
    }
}
