//! The CID reader of the trustless gateway (`ron_codec::cid`): any text or bytes, never a
//! panic; a CID that names a ron object names the same one again from its canonical
//! base32 text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::cid::{object_cid_base32, Cid, Named};

fuzz_target!(|data: &[u8]| {
    let _ = Cid::from_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cid) = Cid::parse(text) else {
        return;
    };
    assert!(cid.digest().len() <= ron_codec::cid::DIGEST_BYTES_MAX);
    if let Named::Object(addr) = cid.named() {
        let mut canonical = [0u8; 64];
        let len = object_cid_base32(&addr, &mut canonical);
        let again = Cid::parse(std::str::from_utf8(&canonical[..len]).unwrap()).unwrap();
        assert_eq!(again.named(), Named::Object(addr));
    }
});
