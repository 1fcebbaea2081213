//! `ron stat b3:<hex>`: the object's length, from the node — and for a bundle's manifest
//! its entries; `ron stat --providers`: the nodes providing it, from the node's DHT
//! through its admin port.

use std::time::Duration;

use ron_codec::bundle::{self, Manifest};
use ron_codec::Address;

use super::shared::admin_error;
use crate::admin::{self, AdminAnswer, AdminEndpoint};
use crate::error::printable;
use crate::{ByteRange, Client, ClientError, Endpoint, Options};

/// How every manifest `ron pack` stores begins (the canonical form): only an object that
/// begins so is read whole to list its entries.
const MANIFEST_PREFIX: &[u8] = b"{\"format\":\"ron-bundle/1\"";

/// Prints `b3:<hex> <len>`; for a manifest, then one line per entry: path, length,
/// media type, address, and each variant as `coding:<len>:<address>`.
pub(super) fn run(endpoint: &Endpoint, options: Options, addr: Address) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoint, options)?;
    let len = client.stat(addr)?;
    println!("{addr} {len}");
    if let Some(manifest) = manifest(&mut client, addr, len)? {
        for entry in &manifest.entries {
            let mut line = format!(
                "{}\t{}\t{}\t{}",
                entry.path, entry.len, entry.media_type, entry.hash
            );
            for (coding, piece) in &entry.variants {
                line.push_str(&format!(
                    "\t{}:{}:{}",
                    coding.token(),
                    piece.len,
                    piece.hash
                ));
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// The object as a manifest, when it is one in the canonical form (its first bytes
/// read, verified, before the whole).
fn manifest(client: &mut Client, addr: Address, len: u64) -> Result<Option<Manifest>, ClientError> {
    let prefix_len = MANIFEST_PREFIX.len() as u64;
    if len < prefix_len || len > bundle::MANIFEST_BYTES_MAX as u64 {
        return Ok(None);
    }
    let mut start = Vec::new();
    let first = ByteRange {
        first: 0,
        last: prefix_len - 1,
    };
    client.get(addr, Some(first), &mut start, &mut |_| {})?;
    if start != MANIFEST_PREFIX {
        return Ok(None);
    }
    // The length is the node's claim: the bytes asked for are only as many (a node
    // claiming 100 bytes of a manifest of gigabytes had them all read into memory),
    // and the verified answer's length must be the claim.
    let mut bytes = Vec::with_capacity(len as usize);
    let whole = ByteRange {
        first: 0,
        last: len - 1,
    };
    let fetched = client.get(addr, Some(whole), &mut bytes, &mut |_| {})?;
    if fetched.total_len != len {
        return Err(ClientError::Verification {
            addr: addr.to_string(),
            reason: format!(
                "the node said {len} bytes; the object's proof says {}",
                fetched.total_len
            ),
        });
    }
    match Manifest::parse(&bytes) {
        Ok(manifest) => Ok(Some(manifest)),
        Err(e) => {
            eprintln!("{addr} begins as a manifest but is not one: {e}");
            Ok(None)
        }
    }
}

/// Asks the admin port's `/resolve` who provides `addr` and prints them.
pub(super) fn providers(
    admin: &AdminEndpoint,
    addr: Address,
    timeout: Duration,
) -> Result<(), ClientError> {
    let path = format!("/resolve?hash={addr}");
    print_providers(admin::request(admin, "GET", &path, timeout)?)
}

/// Prints one line per provider of a `/resolve` answer: node id, OAP address (`-` if
/// unknown), and `local` for the node asked. None found is an error (exit 1).
fn print_providers(answer: AdminAnswer) -> Result<(), ClientError> {
    let value: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    let providers = value
        .as_ref()
        .and_then(|v| v["providers"].as_array())
        .filter(|_| answer.status == 200);
    let Some(providers) = providers else {
        return Err(admin_error(&answer));
    };
    if providers.is_empty() {
        return Err(ClientError::Server {
            status: 404,
            code: "not_found".into(),
            message: "no provider found in the DHT".into(),
            retryable: false,
            retry_after_ms: None,
        });
    }
    for p in providers {
        let node = printable(p["node_id"].as_str().unwrap_or("?"));
        let oap = printable(p["oap"].as_str().unwrap_or("-"));
        let local = if p["local"].as_bool() == Some(true) {
            " local"
        } else {
            ""
        };
        println!("{node} {oap}{local}");
    }
    Ok(())
}
