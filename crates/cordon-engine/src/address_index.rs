//! The in-memory address index of the resolve path: address → the servers that held it, when.
//!
//! Architecture invariant: the index holds only **operational** tenures (the address history
//! rows of kind `operational`), which change only when the inventory is synced from the
//! configuration (at start) or servers are imported; the engine reloads it after both, and at
//! every reconciler pass. It answers only for addresses outside every quarantine pool: those
//! can never be held through a quarantine lease, so the index's answer equals the store's. An
//! address inside a pool (leased by any instance sharing the database, at any time) is always
//! resolved by the store, so several instances on one database never resolve through a stale
//! lease. The one window: servers imported by *another* instance reach this one's index at its
//! next reconciler pass (`reconcile_interval`); until then a detection on them is unresolved
//! (67198), never attributed to a wrong server.

use std::collections::HashMap;
use std::net::IpAddr;

use cordon_model::AddressRange;
use cordon_store::OperationalTenure;

/// What the index says about an address at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The servers that held it then (sorted, possibly none), exactly as the store would say.
    Held(Vec<i64>),
    /// The index cannot answer (a quarantine pool address): ask the store.
    AskStore,
}

/// (server, from, to) of one tenure.
type Tenure = (i64, i64, Option<i64>);

/// Almost every address has had one holder: kept inline, so a lookup touches one table slot
/// and no second allocation (on 100,000 addresses the cache misses are the cost).
#[derive(Debug)]
enum Holders {
    One(Tenure),
    Many(Vec<Tenure>),
}

#[derive(Debug, Default)]
pub struct AddressIndex {
    tenures: HashMap<IpAddr, Holders>,
    pools: Vec<AddressRange>,
}

impl AddressIndex {
    /// An index of these operational tenures, that defers to the store inside these pools.
    pub fn new(tenures: impl IntoIterator<Item = OperationalTenure>, pools: Vec<AddressRange>) -> Self {
        let mut map: HashMap<IpAddr, Holders> = HashMap::new();
        for t in tenures {
            let tenure = (t.server_id, t.from_us, t.to_us);
            match map.entry(t.ip) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Holders::One(tenure));
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let holders = slot.get_mut();
                    match holders {
                        Holders::One(first) => *holders = Holders::Many(vec![*first, tenure]),
                        Holders::Many(all) => all.push(tenure),
                    }
                }
            }
        }
        AddressIndex { tenures: map, pools }
    }

    pub fn len(&self) -> usize {
        self.tenures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenures.is_empty()
    }

    /// The servers that held `address` at `at_us` (the same rule as `Store::servers_holding`:
    /// from ≤ at < to).
    pub fn lookup(&self, address: IpAddr, at_us: i64) -> Lookup {
        if self.pools.iter().any(|pool| pool.contains(address)) {
            return Lookup::AskStore;
        }
        let holds = |(_, from, to): &Tenure| *from <= at_us && to.is_none_or(|to| to > at_us);
        let tenures = match self.tenures.get(&address) {
            None => return Lookup::Held(Vec::new()),
            Some(Holders::One(tenure)) => {
                return Lookup::Held(if holds(tenure) { vec![tenure.0] } else { Vec::new() });
            }
            Some(Holders::Many(tenures)) => tenures,
        };
        let mut held: Vec<i64> = tenures.iter().filter(|tenure| holds(tenure)).map(|(server, _, _)| *server).collect();
        held.sort_unstable();
        held.dedup();
        Lookup::Held(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenure(ip: &str, server_id: i64, from_us: i64, to_us: Option<i64>) -> OperationalTenure {
        OperationalTenure { ip: ip.parse().unwrap(), server_id, from_us, to_us }
    }

    #[test]
    fn answers_like_the_address_history_and_defers_inside_pools() {
        let index = AddressIndex::new(
            [
                tenure("10.0.0.5", 1, 100, Some(200)),
                tenure("10.0.0.5", 2, 200, None),
                tenure("10.0.0.6", 3, 100, None),
                tenure("10.0.0.6", 4, 150, None),
            ],
            vec!["10.99.0.100-10.99.0.199".parse().unwrap()],
        );
        let at = |ip: &str, t: i64| index.lookup(ip.parse().unwrap(), t);
        assert_eq!(at("10.0.0.5", 99), Lookup::Held(vec![]));
        assert_eq!(at("10.0.0.5", 100), Lookup::Held(vec![1]));
        assert_eq!(at("10.0.0.5", 200), Lookup::Held(vec![2]), "a tenure ends before the next begins");
        assert_eq!(at("10.0.0.6", 160), Lookup::Held(vec![3, 4]), "two holders: ambiguous, as the store says");
        assert_eq!(at("10.0.0.7", 160), Lookup::Held(vec![]));
        assert_eq!(at("10.99.0.150", 160), Lookup::AskStore);
        assert_eq!(at("10.99.0.99", 160), Lookup::Held(vec![]));
    }
}
