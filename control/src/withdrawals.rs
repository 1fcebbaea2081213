//! What the denylist blocks by name (`b3:` and `/ipfs/<CID>` rules), withdrawn from the
//! DHT by the control thread: the node stops providing (and republishing) a blocked
//! object. Worked out here once per change of the list — the addresses the new list
//! blocks that the running one did not; at start-up, every address it blocks (a record
//! kept from before the block) — and not on each shard, where walking a list of
//! millions of rules stalled every request the shard had for as long.
//!
//! A withdrawal is sent once every shard reports running the list's policy version: a
//! shard still on the old list could commit, and announce, an object the new list
//! blocks after the withdrawal went out. Sent in batches; what the DHT's full mailbox
//! refuses is sent again at the next tick, never dropped (a dropped withdrawal keeps a
//! blocked key republished).

use ron_codec::denylist::Denylist;
use ron_link::dht::DhtClient;
use ron_link::link::{ControlLink, ToShard, REANNOUNCE_BATCH_KEYS};

/// Keys in one withdrawal message: a list of millions goes to the DHT in pieces, and a
/// full mailbox holds back one batch, not the whole list.
pub(crate) const WITHDRAW_BATCH_KEYS: usize = 16_384;

/// Blocked addresses not yet withdrawn, addresses unblocked not yet announced again, and
/// the policy version whose list says so.
#[derive(Debug, Default)]
pub(crate) struct Withdrawals {
    keys: Vec<[u8; 32]>,
    /// Blocked by name by a list before, by none now: their records were withdrawn, and
    /// nothing else announces a copy this node keeps until its next start.
    unblocked: Vec<[u8; 32]>,
    /// Every shard must run this version (or a later one) before `keys` go out.
    version: u64,
}

impl Withdrawals {
    /// At start-up: every address `list` (policy `version`) blocks by name.
    pub(crate) fn at_start(list: &Denylist, version: u64) -> Withdrawals {
        Withdrawals {
            keys: list.blocked_by_name().copied().collect(),
            unblocked: Vec::new(),
            version,
        }
    }

    /// The running list changed from `old` to `new` under policy `version`: what `new`
    /// blocks that `old` did not joins what is still owed and `new` still blocks.
    /// What `old` blocked by name that `new` does not joins what is owed announcing.
    pub(crate) fn changed(&mut self, old: &Denylist, new: &Denylist, version: u64) {
        self.keys.retain(|key| new.blocks(key));
        self.keys
            .extend(new.blocked_by_name().filter(|key| !old.blocks(key)));
        self.unblocked.retain(|key| !new.blocks(key));
        self.unblocked
            .extend(old.blocked_by_name().filter(|key| !new.blocks(key)));
        self.version = version;
    }

    /// Addresses owed announcing again.
    #[cfg(test)]
    pub(crate) fn unblocked(&self) -> usize {
        self.unblocked.len()
    }

    /// Sends the unblocked addresses to shard 0 (which asks each one's owner whether
    /// the node holds it, and announces those) once every shard runs `self.version`: a
    /// shard on the old list would refuse them still. One batch per tick: a list of
    /// millions sent at once filled shard 0's inbox (80 messages, sized for the admin
    /// requests and the rebalance's shares, which it then refused). What its full inbox
    /// refuses is sent at a later tick.
    pub(crate) fn poll_unblocked(
        &mut self,
        link: &ControlLink,
        shard_versions: impl Iterator<Item = u64>,
    ) {
        if self.unblocked.is_empty() || !shard_versions.into_iter().all(|v| v >= self.version) {
            return;
        }
        let split = self.unblocked.len().saturating_sub(REANNOUNCE_BATCH_KEYS);
        let batch = self.unblocked.split_off(split);
        if !link.send(0, ToShard::Reannounce(batch.clone())) {
            self.unblocked.extend(batch);
        }
    }

    /// Addresses owed to the DHT.
    #[cfg(test)]
    pub(crate) fn owed(&self) -> usize {
        self.keys.len()
    }

    /// Sends what is owed once every shard runs `self.version` (`shard_versions`: each
    /// shard's latest reported policy version), until the DHT's mailbox is full.
    pub(crate) fn poll(&mut self, dht: &DhtClient, shard_versions: impl Iterator<Item = u64>) {
        if self.keys.is_empty() || !shard_versions.into_iter().all(|v| v >= self.version) {
            return;
        }
        let owed = self.keys.len();
        while !self.keys.is_empty() {
            let split = self.keys.len().saturating_sub(WITHDRAW_BATCH_KEYS);
            let batch = self.keys.split_off(split);
            match dht.try_withdraw(batch) {
                Some(Ok(())) => {}
                Some(Err(back)) => {
                    self.keys.extend(back);
                    break;
                }
                // The DHT thread has stopped: there is nothing left to withdraw from.
                None => self.keys.clear(),
            }
        }
        let sent = owed - self.keys.len();
        if sent > 0 {
            tracing::info!(
                version = self.version,
                objects = sent,
                still_owed = self.keys.len(),
                "denylist: blocked addresses withdrawn from the DHT"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ron_codec::denylist::DenylistBuilder;
    use ron_link::dht::{DhtMetrics, ProviderChange};
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::sync::Arc;

    fn digest(i: u32) -> [u8; 32] {
        *ron_codec::Address::of(&i.to_le_bytes()).as_bytes()
    }

    /// A list blocking (or, with `!`, unblocking) each of `rules` by its `b3:` name.
    fn list(rules: &[(bool, u32)]) -> Denylist {
        let text: String = rules
            .iter()
            .map(|(blocks, i)| {
                let bang = if *blocks { "" } else { "!" };
                format!("{bang}{}\n", ron_codec::Address::from_bytes(digest(*i)))
            })
            .collect();
        let mut builder = DenylistBuilder::default();
        builder.add_file("a.deny", &text).unwrap();
        builder.finish().0
    }

    /// A DHT client whose mailbox holds `capacity` messages, and the DHT's end of it.
    fn dht(capacity: usize) -> (DhtClient, Receiver<ProviderChange>) {
        let (announces, changes) = sync_channel(capacity);
        let (requests, _) = tokio::sync::mpsc::channel(1);
        let client = DhtClient::new(
            announces,
            Arc::default(),
            requests,
            Arc::new(DhtMetrics::default()),
            "me".into(),
        );
        (client, changes)
    }

    fn withdrawn(changes: &Receiver<ProviderChange>) -> Vec<[u8; 32]> {
        let mut keys = Vec::new();
        while let Ok(change) = changes.try_recv() {
            match change {
                ProviderChange::Withdraw(batch) => keys.extend(batch),
                other => panic!("only withdrawals: {other:?}"),
            }
        }
        keys.sort();
        keys
    }

    fn sorted(mut keys: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
        keys.sort();
        keys
    }

    /// What a change unblocks (blocked by name before, by nothing now) goes to shard 0
    /// to be announced again, once every shard runs the change, in one batch per
    /// [`REANNOUNCE_BATCH_KEYS`]; what a later list blocks again is not sent.
    #[test]
    fn a_change_sends_what_it_unblocks_to_be_announced_again() {
        let (control, shards) = ron_link::link::links(2);
        let old = list(&[(true, 1), (true, 2), (true, 3)]);
        let new = list(&[(true, 1)]);
        let mut owed = Withdrawals::at_start(&old, 1);
        owed.changed(&old, &new, 2);
        assert_eq!(owed.unblocked(), 2);
        let again = list(&[(true, 1), (true, 3)]);
        owed.changed(&new, &again, 3);
        assert_eq!(owed.unblocked(), 1, "3 is blocked again");
        owed.poll_unblocked(&control, [3, 2].into_iter());
        assert!(shards[0].poll().is_none(), "shard 1 still runs version 2");
        owed.poll_unblocked(&control, [3, 3].into_iter());
        match shards[0].poll() {
            Some(ToShard::Reannounce(keys)) => assert_eq!(keys, vec![digest(2)]),
            other => panic!("a re-announcement: {other:?}"),
        }
        assert_eq!(owed.unblocked(), 0);
        assert!(shards[1].poll().is_none(), "shard 0 asks the owners");

        // A long list goes one batch per tick: shard 0's inbox keeps room for the rest.
        let many: Vec<(bool, u32)> = (0..REANNOUNCE_BATCH_KEYS as u32 + 10)
            .map(|i| (true, 100 + i))
            .collect();
        let long = list(&many);
        owed.changed(&long, &Denylist::default(), 4);
        owed.poll_unblocked(&control, [4, 4].into_iter());
        assert_eq!(owed.unblocked(), 10);
        assert!(
            matches!(shards[0].poll(), Some(ToShard::Reannounce(k)) if k.len() == REANNOUNCE_BATCH_KEYS)
        );
        assert!(shards[0].poll().is_none(), "one batch this tick");
        owed.poll_unblocked(&control, [4, 4].into_iter());
        assert_eq!(owed.unblocked(), 0);
    }

    #[test]
    fn a_change_withdraws_only_what_it_newly_blocks_once_every_shard_runs_it() {
        let (client, changes) = dht(8);
        let old = list(&[(true, 1), (true, 2)]);
        let new = list(&[(true, 1), (true, 2), (true, 3), (true, 4), (false, 5)]);
        let mut owed = Withdrawals::at_start(&old, 1);
        owed.poll(&client, [1, 1].into_iter());
        assert_eq!(withdrawn(&changes), sorted(vec![digest(1), digest(2)]));

        owed.changed(&old, &new, 2);
        owed.poll(&client, [2, 1].into_iter());
        assert!(
            withdrawn(&changes).is_empty(),
            "shard 1 still runs version 1"
        );
        owed.poll(&client, [2, 3].into_iter());
        assert_eq!(withdrawn(&changes), sorted(vec![digest(3), digest(4)]));
        assert_eq!(owed.owed(), 0);
        owed.poll(&client, [2, 3].into_iter());
        assert!(withdrawn(&changes).is_empty(), "sent once");
    }

    #[test]
    fn a_second_change_before_the_first_went_out_keeps_only_what_is_still_blocked() {
        let (client, changes) = dht(8);
        let first = list(&[(true, 1)]);
        let second = list(&[(true, 1), (true, 2), (true, 3)]);
        let third = list(&[(true, 1), (true, 3), (true, 4)]);
        let mut owed = Withdrawals::default();
        owed.changed(&first, &second, 2);
        owed.changed(&second, &third, 3);
        owed.poll(&client, [2].into_iter());
        assert!(
            withdrawn(&changes).is_empty(),
            "the shard runs version 2, not 3"
        );
        owed.poll(&client, [3].into_iter());
        assert_eq!(
            withdrawn(&changes),
            sorted(vec![digest(3), digest(4)]),
            "2 was unblocked again before it went out; 1 was blocked all along"
        );
    }

    #[test]
    fn a_full_mailbox_holds_back_the_rest_for_the_next_poll() {
        let (client, changes) = dht(1);
        let many: Vec<(bool, u32)> = (0..WITHDRAW_BATCH_KEYS as u32 + 10)
            .map(|i| (true, i))
            .collect();
        let new = list(&many);
        let mut owed = Withdrawals::default();
        owed.changed(&Denylist::default(), &new, 2);
        owed.poll(&client, [2].into_iter());
        assert_eq!(owed.owed(), 10, "one batch taken, the rest held back");
        let mut all = withdrawn(&changes);
        owed.poll(&client, [2].into_iter());
        assert_eq!(owed.owed(), 0);
        all.extend(withdrawn(&changes));
        assert_eq!(
            sorted(all),
            sorted(many.iter().map(|(_, i)| digest(*i)).collect())
        );
    }
}
