//! The bundle-manifest parser (`bundle::Manifest::parse`) on arbitrary bytes: it must
//! never panic, and a manifest it accepts must be what a server may trust — every path
//! checked, each found by its own name, and the canonical bytes reading back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::bundle::{check_path, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    for entry in &manifest.entries {
        assert!(check_path(&entry.path).is_ok(), "{:?}", entry.path);
        assert_eq!(manifest.entry(&entry.path), Some(entry));
        assert!(
            !manifest.is_dir(&entry.path),
            "{:?} is a file and a dir",
            entry.path
        );
    }
    let again = Manifest::parse(&manifest.encode()).expect("canonical bytes parse");
    assert_eq!(again, manifest);
});
