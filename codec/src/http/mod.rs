//! HTTP/1.1 pieces that need no I/O: request heads ([`head`], tokenised by `httparse`),
//! the Range header ([`range`]), chunked bodies ([`chunked`]), response heads written
//! ([`response`]) and response heads parsed ([`reply`], for clients and read-through),
//! and content negotiation between an object's bytes and its bao encoding ([`accept`]).
//! Everything borrows from the caller's buffers; the common request allocates nothing
//! here.

pub mod accept;
pub mod chunked;
pub mod head;
pub mod range;
pub mod reply;
pub mod response;
