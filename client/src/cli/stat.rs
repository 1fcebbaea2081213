//! `ron stat b3:<hex>`: the object's length, from the node; `ron stat --providers`: the
//! nodes providing it, from the node's DHT through its admin port.

use std::time::Duration;

use ron_codec::Address;

use super::shared::print_admin_answer;
use crate::admin::{self, AdminAnswer, AdminEndpoint};
use crate::{Client, ClientError, Endpoint, Options};

/// Prints `b3:<hex> <len>`.
pub(super) fn run(endpoint: &Endpoint, options: Options, addr: Address) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoint, options)?;
    let len = client.stat(addr)?;
    println!("{addr} {len}");
    Ok(())
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
        return print_admin_answer(answer, |_| false);
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
        let node = p["node_id"].as_str().unwrap_or("?");
        let oap = p["oap"].as_str().unwrap_or("-");
        let local = if p["local"].as_bool() == Some(true) {
            " local"
        } else {
            ""
        };
        println!("{node} {oap}{local}");
    }
    Ok(())
}
