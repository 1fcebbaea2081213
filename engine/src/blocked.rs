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

    /// Installs `list` if it is not the one held; returns the addresses it blocks by
    /// name that the list it replaces did not (to withdraw from the DHT).
    pub fn install(&self, list: &Arc<Denylist>) -> Vec<Address> {
        let old = std::mem::replace(&mut *self.list.borrow_mut(), Arc::clone(list));
        if Arc::ptr_eq(&old, list) {
            return Vec::new();
        }
        list.blocked_by_name()
            .filter(|digest| !old.blocks(digest))
            .map(|digest| Address::from_bytes(*digest))
            .collect()
    }
}
