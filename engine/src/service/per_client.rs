//! What each client holds of one of a shard's bounded resources — its open uploads, its
//! uploads waiting for copies, its streams' read-ahead — so that no client takes more than
//! its share. A client is who a request is charged to (`Tenant`: a tenant's token, else
//! its address), as for quotas. Each amount taken comes back when its [`ClientHold`]
//! drops; a client holding nothing has no entry, so the map holds at most one entry per
//! hold outstanding.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ron_link::policy::Tenant;

/// The amounts each client holds of one resource.
#[derive(Debug, Default)]
pub struct PerClient(RefCell<HashMap<Tenant, u64>>);

impl PerClient {
    /// What `client` holds now.
    pub fn held(&self, client: Tenant) -> u64 {
        self.0.borrow().get(&client).copied().unwrap_or(0)
    }

    /// `amount` more for `client`, unless it would then hold more than `max`.
    pub fn take(self: &Rc<Self>, client: Tenant, amount: u64, max: u64) -> Option<ClientHold> {
        let mut held = self.0.borrow_mut();
        let now = held.get(&client).copied().unwrap_or(0);
        if now.saturating_add(amount) > max {
            return None;
        }
        held.insert(client, now + amount);
        Some(ClientHold {
            counts: Rc::clone(self),
            client,
            amount,
        })
    }
}

/// An amount one client holds, given back when dropped.
#[derive(Debug)]
pub struct ClientHold {
    counts: Rc<PerClient>,
    client: Tenant,
    amount: u64,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut held = self.counts.0.borrow_mut();
        if let Some(now) = held.get_mut(&self.client) {
            *now -= self.amount;
            if *now == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_takes_up_to_its_max_and_gets_it_back_on_drop() {
        let counts = Rc::new(PerClient::default());
        let (a, b) = (
            Tenant::Addr("192.0.2.1".parse().unwrap()),
            Tenant::Addr("192.0.2.2".parse().unwrap()),
        );
        let first = counts.take(a, 3, 4).unwrap();
        assert!(counts.take(a, 2, 4).is_none(), "past its max");
        let second = counts.take(a, 1, 4).unwrap();
        assert!(counts.take(b, 4, 4).is_some(), "another client's own");
        assert_eq!(counts.held(a), 4);
        drop(first);
        assert_eq!(counts.held(a), 1);
        drop(second);
        assert_eq!(counts.held(a), 0);
        assert!(
            counts.0.borrow().is_empty(),
            "no entry for a client holding nothing"
        );
    }
}
