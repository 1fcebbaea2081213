//! # ron-io — glommio-facing I/O primitives (not built yet)
//!
//! This crate will own the pieces of I/O that every shard shares and that know nothing
//! about objects or protocols:
//! - SO_REUSEPORT listeners (socket2) bound once per shard, with TCP_NODELAY set;
//! - TLS (rustls) sessions driven on the shard that owns the connection, with bounded
//!   record buffers;
//! - DMA and buffered file helpers over io_uring;
//! - pools of 4 KiB-aligned I/O buffers sized at start-up.
//!
//! Invariant to keep: nothing here blocks the reactor thread or allocates per byte.
//! It lands with the HTTP serving issue; until then it holds no code.
