//! # ron-control — the slow-path control thread (not built yet)
//!
//! This crate will own the one OS thread that is not a shard: admin HTTP (`/healthz`,
//! `/readyz`, `/metrics`, `/version`, admin operations), aggregation of shard-local
//! metrics at scrape time, quota configuration and hot reload, and later the Kademlia
//! DHT and peer fetch. Nothing on a shard ever waits on it.
//! It lands with the HTTP serving and control-thread issues.
