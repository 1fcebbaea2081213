//! The audit of a holder's copy, for `/admin/placement` (the control thread calls it,
//! blocking): over OAP/1, the holder's own kept copy only (`"local":true,"kept":true`:
//! never a read-through, and an evictable copy is not one the placement can count on),
//! one random 64 KiB group with its proof, checked against the address
//! by the client's verifier. A holder that lost, rotted or never had the object fails;
//! one that answers from anywhere but its own store cannot, since it is asked for its
//! own copy, and a lie about the bytes does not verify.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use ron_client::{ByteRange, Client, ClientError, Endpoint, Options, Protocol};
use ron_codec::tree::GROUP_LEN_BYTES;
use ron_codec::Address;
use ron_control::AuditOutcome;

/// Longest wait for any read or write of one audit.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn audit_copy(node: SocketAddr, node_id: &str, addr: &Address) -> AuditOutcome {
    match audit(node, node_id, addr) {
        Ok(group) => AuditOutcome::Verified { group },
        Err(ClientError::Server { status: 404, .. }) => AuditOutcome::Missing,
        Err(e) => AuditOutcome::Failed(e.to_string()),
    }
}

/// Asks for the first byte (which says the length, and proves group 0), then for a
/// random group; returns the group checked.
fn audit(node: SocketAddr, node_id: &str, addr: &Address) -> Result<u64, ClientError> {
    let endpoint = Endpoint {
        addr: node.to_string(),
        protocol: Protocol::Oap,
        tls: None,
    };
    let options = Options {
        timeout: AUDIT_TIMEOUT,
        local_only: true,
        kept_only: true,
        node: Some(node_id.to_owned()),
        ..Options::default()
    };
    let mut client = Client::connect(&endpoint, options)?;
    let first = ByteRange { first: 0, last: 0 };
    let total_len = match client.get(*addr, Some(first), &mut std::io::sink(), &mut |_| {}) {
        Ok(fetched) => fetched.total_len,
        // An empty object: held (the node looked at its own copy), nothing to prove.
        Err(ClientError::Server { status: 416, .. }) => return Ok(0),
        Err(e) => return Err(e),
    };
    let groups = total_len.div_ceil(GROUP_LEN_BYTES);
    let group = std::collections::hash_map::RandomState::new().hash_one(addr) % groups;
    if group > 0 {
        let first = group * GROUP_LEN_BYTES;
        let last = (first + GROUP_LEN_BYTES).min(total_len) - 1;
        let range = ByteRange { first, last };
        client.get(*addr, Some(range), &mut std::io::sink(), &mut |_| {})?;
    }
    Ok(group)
}
