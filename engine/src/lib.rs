//! # ron-engine — the `ron` binary (not built yet)
//!
//! This crate will own the command line (`ron serve`, `ron put|get|stat`, `ron cert`),
//! configuration with embedded defaults, start-up and graceful shutdown, and the two
//! protocol front ends — the HTTP/1.1 and OAP/1 connection loops — that turn requests
//! parsed by `ron_codec` into operations on the owner shard.
//! It lands with the HTTP serving issue; until then there is no `ron` binary.
