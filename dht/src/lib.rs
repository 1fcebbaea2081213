//! # ron-dht — the node's identity, Kademlia, and where objects are
//!
//! Work in progress (issue 15): identity and the provider store.

pub mod error;
pub mod identity;
pub mod node;
pub mod protocol;
pub mod store;

pub use error::DhtError;
