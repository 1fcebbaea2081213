//! [`Blocked`]: a shard's view of the node's denylist (`denylist_dir`, docs/design/
//! denylist.md). The control thread reads the `*.deny` files and sends each shard the
//! list with its policy; the shard's clock installs it here, and every path that would
//! serve, fetch, announce, copy or store an object asks first: the service (GET, HEAD,
//! STAT, proofs, peer fetches and audits of this node's copies, uploads before their
//! commit), the read-through (before a fetch starts), the placement's pulls and the
//! repair sweep.

use std::cell::RefCell;
use std::sync::Arc;

use ron_codec::denylist::Denylist;
use ron_codec::Address;

use crate::refusal::Refusal;

/// The denylist this shard enforces now.
#[derive(Debug, Default)]
pub struct Blocked {
    list: RefCell<Arc<Denylist>>,
}

impl Blocked {
    pub fn new(list: Arc<Denylist>) -> Blocked {
        Blocked {
            list: RefCell::new(list),
        }
    }

    /// Whether `addr` is blocked.
    pub fn blocks(&self, addr: &Address) -> bool {
        self.list.borrow().blocks(addr.as_bytes())
    }

    /// `Err(Refusal::Blocked)` when `addr` is blocked (451).
    pub fn check(&self, addr: &Address) -> Result<(), Refusal> {
        match self.blocks(addr) {
            true => Err(Refusal::Blocked { addr: *addr }),
            false => Ok(()),
        }
    }

    /// Installs `list`. What it newly blocks is withdrawn from the DHT by the control
    /// thread, once for the node, when every shard runs it (not worked out here: a
    /// list of millions of rules stalled every request on the shard).
    pub fn install(&self, list: &Arc<Denylist>) {
        *self.list.borrow_mut() = Arc::clone(list);
    }
}
