//! HTTP/1.1 pieces that need no I/O: request heads ([`head`], tokenised by `httparse`),
//! the Range header ([`range`]), chunked request bodies ([`chunked`]) and response heads
//! ([`response`]). Everything borrows from the caller's buffers; the common request
//! allocates nothing here.

pub mod chunked;
pub mod head;
pub mod range;
pub mod response;
