use super::*;
use proptest::prelude::*;

fn entry(path: &str, body: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        hash: Address::of(body),
        len: body.len() as u64,
        media_type: media_type_of(path).into(),
        variants: BTreeMap::new(),
    }
}

fn site() -> Manifest {
    let mut index = entry("index.html", b"<h1>hi</h1>");
    index.variants.insert(
        Encoding::Br,
        Piece {
            hash: Address::of(b"br"),
            len: 9,
        },
    );
    index.variants.insert(
        Encoding::Zstd,
        Piece {
            hash: Address::of(b"zstd"),
            len: 10,
        },
    );
    let meta = BTreeMap::from([("tld".to_string(), "site".to_string())]);
    Manifest::new(
        vec![entry("css/a.css", b"a{}"), index, entry("a-b.txt", b"x")],
        meta,
    )
    .unwrap()
}

/// The canonical form: the documented field order, entries sorted, no whitespace; and
/// it reads back as the same manifest.
#[test]
fn the_canonical_form_is_stable_and_reads_back() {
    let manifest = site();
    let bytes = manifest.encode();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with(
            r#"{"format":"ron-bundle/1","meta":{"tld":"site"},"entries":[{"path":"a-b.txt","#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#""type":"text/html; charset=utf-8","variants":{"br":{"hash":"b3:"#),
        "{text}"
    );
    assert!(
        !text.contains("\": ") && !text.contains('\n'),
        "no whitespace between tokens"
    );
    assert_eq!(Manifest::parse(&bytes).unwrap(), manifest);
    // The same entries in another order make the same bytes.
    let mut shuffled = manifest.entries.clone();
    shuffled.reverse();
    let again = Manifest::new(shuffled, manifest.meta.clone()).unwrap();
    assert_eq!(again.encode(), bytes);
    // Without variants or metadata, the fields are left out.
    let bare = Manifest::new(vec![entry("f", b"")], BTreeMap::new()).unwrap();
    assert_eq!(
        String::from_utf8(bare.encode()).unwrap(),
        format!(
            r#"{{"format":"ron-bundle/1","entries":[{{"path":"f","hash":"{}","len":0,"type":"application/octet-stream"}}]}}"#,
            Address::of(b"")
        )
    );
}

#[test]
fn entries_and_directories_are_found_by_path() {
    let manifest = site();
    assert_eq!(manifest.entry("css/a.css").unwrap().len, 3);
    assert!(manifest.entry("css").is_none());
    assert!(manifest.entry("index.htm").is_none());
    assert!(manifest.is_dir(""));
    assert!(manifest.is_dir("css"));
    assert!(!manifest.is_dir("cs"));
    assert!(!manifest.is_dir("index.html"));
}

/// The messages a user sees for each kind of bad manifest.
#[test]
fn bad_manifests_are_refused_with_the_reason() {
    let refused = |json: &str| Manifest::parse(json.as_bytes()).unwrap_err().to_string();
    let h = Address::of(b"x");
    let one = |path: &str, ty: &str| {
        format!(
            r#"{{"format":"ron-bundle/1","entries":[{{"path":{path},"hash":"{h}","len":1,"type":"{ty}"}}]}}"#
        )
    };
    assert!(refused("{").starts_with("bundle manifest: not a manifest:"));
    assert!(
        refused(r#"{"format":"ron-bundle/2","entries":[]}"#).contains(r#"format "ron-bundle/2""#)
    );
    assert!(
        refused(r#"{"format":"ron-bundle/1","entries":[]}"#).contains("0 entries: from 1 to 65536")
    );
    for path in [
        r#""../etc/passwd""#,
        r#""a//b""#,
        r#""/abs""#,
        r#""a/./b""#,
        r#""dir/""#,
        r#""""#,
    ] {
        let message = refused(&one(path, "text/plain"));
        assert!(message.contains("entry path"), "{path}: {message}");
    }
    assert!(refused(&one(r#""a\\b""#, "t/t")).contains("backslash"));
    assert!(refused(&one(r#""a\nb""#, "t/t")).contains("control character"));
    assert!(refused(&one(r#""f""#, "text/html\\r\\nSet-Cookie: x")).contains("media type"));
    let twice = format!(
        r#"{{"format":"ron-bundle/1","entries":[{{"path":"a","hash":"{h}","len":1,"type":"t/t"}},{{"path":"a","hash":"{h}","len":2,"type":"t/t"}}]}}"#
    );
    assert_eq!(refused(&twice), r#"bundle manifest: "a" is named twice"#);
    let both = format!(
        r#"{{"format":"ron-bundle/1","entries":[{{"path":"a","hash":"{h}","len":1,"type":"t/t"}},{{"path":"a-b","hash":"{h}","len":1,"type":"t/t"}},{{"path":"a/b","hash":"{h}","len":1,"type":"t/t"}}]}}"#
    );
    assert_eq!(
        refused(&both),
        r#"bundle manifest: "a" is both a file and a directory"#
    );
    let encoding = format!(
        r#"{{"format":"ron-bundle/1","entries":[{{"path":"a","hash":"{h}","len":1,"type":"t/t","variants":{{"deflate":{{"hash":"{h}","len":1}}}}}}]}}"#
    );
    assert!(
        refused(&encoding).contains("unknown variant `deflate`"),
        "{}",
        refused(&encoding)
    );
    let bad_hash = one(r#""a""#, "t/t").replace(&h.to_string(), "b3:00");
    assert!(refused(&bad_hash).contains("not a manifest"));
    let extra = one(r#""a""#, "t/t").replace(r#""format""#, r#""x":1,"format""#);
    assert!(refused(&extra).contains("unknown field `x`"));
    let meta = one(r#""a""#, "t/t").replace(r#""entries""#, r#""meta":{"Bad Key":"v"},"entries""#);
    assert!(refused(&meta).contains(r#"metadata key "Bad Key""#));
    let huge = vec![b' '; MANIFEST_BYTES_MAX + 1];
    assert!(Manifest::parse(&huge)
        .unwrap_err()
        .to_string()
        .contains("more than the 16777216"));
    assert_eq!(
        Manifest::parse(b"{").unwrap_err().code(),
        crate::ErrorCode::BadRequest
    );
}

#[test]
fn media_types_follow_the_extension() {
    assert_eq!(media_type_of("a/index.HTML"), "text/html; charset=utf-8");
    assert_eq!(media_type_of("app.wasm"), "application/wasm");
    assert_eq!(media_type_of("README"), "application/octet-stream");
    assert_eq!(media_type_of("x.tar.gz"), "application/gzip");
}

proptest! {
    /// No input makes the parser panic. (Random bytes are almost never a manifest, so the
    /// round trip below is rarely reached: `generated_manifests_round_trip` and the
    /// `bundle_manifest` fuzz target, seeded with real manifests, ask it.)
    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(manifest) = Manifest::parse(&bytes) {
            prop_assert_eq!(Manifest::parse(&manifest.encode()).unwrap(), manifest);
        }
    }

    /// Manifests built from generated paths either check out and round-trip, or are
    /// refused for a reason a path check gives.
    #[test]
    fn generated_manifests_round_trip(paths in proptest::collection::vec("[a-c./]{1,8}", 1..8)) {
        let entries: Vec<Entry> = paths.iter().map(|p| entry(p, p.as_bytes())).collect();
        match Manifest::new(entries, BTreeMap::new()) {
            Ok(manifest) => {
                let bytes = manifest.encode();
                prop_assert_eq!(Manifest::parse(&bytes).unwrap(), manifest);
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains("entry path") || message.contains("named twice")
                        || message.contains("both a file and a directory"),
                    "{}", message
                );
            }
        }
    }
}

/// Deep paths — as long as a manifest may hold — are checked with one search an entry for
/// another under it, not one per parent directory (~500 here; a 16 MiB manifest of such
/// paths took 1.4 s to check that way, release build): a file under a file is still found.
#[test]
fn a_file_under_another_is_refused_however_deep() {
    let dir = "d/".repeat(500);
    let deep: Vec<Entry> = (0..200)
        .map(|i| entry(&format!("{dir}f{i:03}"), b"x"))
        .collect();
    let manifest = Manifest::new(deep.clone(), BTreeMap::new()).unwrap();
    assert!(manifest.is_dir(dir.trim_end_matches('/')));
    let mut clash = deep;
    clash.push(entry(&format!("{dir}f007/g"), b"y"));
    let refused = Manifest::new(clash, BTreeMap::new()).unwrap_err();
    assert!(refused
        .to_string()
        .contains(r#"f007" is both a file and a directory"#));
}

/// What `Manifest::new` makes, `Manifest::parse` reads: a manifest past the size a node
/// reads is refused when it is made (a packer stored one every node then refused), and
/// a tree that could make one is refused before a byte of it is stored.
#[test]
fn a_manifest_too_long_to_read_is_refused_when_made() {
    let paths: Vec<String> = (0..50_000)
        .map(|i| format!("assets/{i:08}/file-with-a-longish-name.js"))
        .collect();
    let err = Manifest::check_could_hold(&paths, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("a manifest may have"), "{err}");
    let few = &paths[..1_000];
    Manifest::check_could_hold(few, &BTreeMap::new()).unwrap();
    let made = Manifest::new(
        few.iter().map(|p| entry(p, p.as_bytes())).collect(),
        BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(Manifest::parse(&made.encode()).unwrap(), made);
}

/// A manifest's own strings quoted in its refusal are cut: before, a 16 MiB object
/// whose `format` (or an unknown field's name) was one long string had the whole of it
/// as its reason, which a node keeps per refused object and copies per request.
#[test]
fn a_refusals_reason_is_cut_whatever_the_manifest_quotes() {
    let long = "é".repeat(1 << 20);
    let format = format!(r#"{{"format":"{long}","entries":[],"meta":{{}}}}"#);
    let field = format!(r#"{{"{long}":1}}"#);
    for bytes in [format.as_bytes(), field.as_bytes()] {
        let err = Manifest::parse(bytes).unwrap_err();
        let Error::BadManifest { reason } = &err else {
            panic!("{err}");
        };
        assert!(
            reason.len() <= MANIFEST_REASON_BYTES_MAX + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.contains('…'), "{reason}");
    }
}
