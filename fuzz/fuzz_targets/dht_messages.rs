//! The DHT's own messages (`/ron/provide/2`, `/ron/replicate/1`), as a peer sends them:
//! no input panics a decoder, and a message that decodes is canonical — encoded again,
//! it is the same bytes (a decoder that took more than the encoder writes would let two
//! peers read one message differently). The first byte picks the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_dht::{protocol, replicate};

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let again = match which % 4 {
        0 => protocol::decode_request(message).map(|m| protocol::encode_request(&m)),
        1 => protocol::decode_response(message).map(|m| protocol::encode_response(&m)),
        2 => replicate::decode_request(message).map(|m| replicate::encode_request(&m)),
        _ => replicate::decode_response(message).map(|m| replicate::encode_response(&m)),
    };
    if let Ok(encoded) = again {
        assert_eq!(encoded.expect("a decoded message encodes"), message);
    }
});
