//! # ron-io — glommio-facing I/O primitives
//!
//! ## What it owns
//! - [`listener`]: one TCP listener per shard on the same address, with SO_REUSEPORT
//!   (the kernel spreads connections across shards) and SO_REUSEADDR (a restart is not
//!   blocked by the previous run's TIME_WAIT connections), and a backlog sized at
//!   start-up.
//!
//! Later: TLS (rustls) sessions driven on the owning shard with bounded record
//! buffers, DMA file helpers, pools of 4 KiB-aligned buffers.
//!
//! ## Invariants
//! Nothing here blocks the reactor thread; a listener is created on the executor
//! thread that will accept on it.

pub mod listener;
