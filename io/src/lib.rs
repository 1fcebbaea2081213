//! # ron-io — glommio-facing I/O primitives
//!
//! ## What it owns
//! - [`listener`]: one TCP listener per shard on the same address, with SO_REUSEPORT
//!   (the kernel spreads connections across shards) and SO_REUSEADDR (a restart is not
//!   blocked by the previous run's TIME_WAIT connections), and a backlog sized at
//!   start-up.
//! - [`stream`]: the [`stream::Transport`] trait over plain TCP and TLS-over-TCP, so
//!   each front end is written once; [`stream::PlainSocket`], the sends glommio 0.9
//!   lacks on a plain TCP socket (`sendfile`, `MSG_MORE`), non-blocking;
//!   [`stream::WriteMore`], a write that says more follows at once (through TLS too);
//!   and a single-threaded split into read and write halves for protocols with one
//!   reader task and one writer task (OAP/1).
//! - [`readiness`]: one edge-triggered epoll set per shard thread and the pump task
//!   that wakes the connections waiting on it ([`stream::PolledTcp`]), so a busy shard
//!   is not interrupted by an io_uring poll completing for every request.
//! - [`idle_wait`]: when the pump may wait out a busy shard's short quiet spell in
//!   `epoll_pwait2` instead of glommio's reactor, and the call.
//! - [`socket_calls`]: `recv`, `send` and `sendmsg` as raw system calls (libc's
//!   wrappers add two atomics per call for thread cancellation, which ron never uses),
//!   and the socket options the sends depend on (`TCP_CORK`, `TCP_CONGESTION`: whether
//!   a socket paces its sends).
//! - [`memory`]: an in-memory `Transport` (given input, collected output, no socket)
//!   that drives the front ends without the network (fuzzing, tests).
//! - [`tls`]: rustls server configuration (ring provider, ALPN `h2`, `oap/1` and `http/1.1`)
//!   and the self-signed development certificate.
//!
//! Not here: the aligned DMA buffers and file I/O of the storage live with the shard
//! (`ron-shards`: `disk.rs`, `upload.rs`, `arena.rs`), and the front ends' pooled read
//! buffers with the engine (`engine/src/buffers.rs`), beside their only users.
//!
//! ## Invariants
//! Nothing here blocks the reactor thread but the pump's idle wait: when the shard has
//! no task to run and no ready socket, for at most [`idle_wait::IDLE_WAIT_BUDGET`] in
//! all between two visits to glommio's reactor. A listener is created on the executor
//! thread that will accept on it.

pub mod idle_wait;
pub mod listener;
pub mod memory;
pub mod readiness;
pub mod socket_calls;
pub mod stream;
pub mod tls;
