//! Per-peer slots: how many large bodies one sender may have in flight at once, so that a
//! single address cannot take the whole large-body budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The address a peer is counted under: IPv4 addresses as they are, IPv6 ones by their /64
/// (one host usually holds a whole /64, so counting single addresses would count nothing).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Slots in use per peer; `None` is a request whose peer is unknown (they share one count).
#[derive(Clone, Debug)]
pub struct Peers {
    per_peer: usize,
    used: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
}

impl Peers {
    pub fn new(per_peer: usize) -> Self {
        Self {
            per_peer,
            used: Arc::default(),
        }
    }

    /// A slot for `peer`, or `None` when it already holds `per_peer` of them.
    pub fn enter(&self, peer: Option<IpAddr>) -> Option<Slot> {
        let key = peer.map(peer_key);
        // The map stays consistent even if a holder panicked: counts are only ever +1/-1.
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let count = used.entry(key).or_insert(0);
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(Slot {
            key,
            used: self.used.clone(),
        })
    }

    /// Slots held by all peers together.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        let used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.values().sum()
    }
}

/// A peer's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    key: Option<IpAddr>,
    used: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = used.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Forget idle peers, so the map only holds those with bodies in flight.
                used.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_peer_gets_its_slots_and_no_more_until_one_is_given_back() {
        let peers = Peers::new(2);
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let you: IpAddr = "192.0.2.2".parse().unwrap();
        let first = peers.enter(Some(me)).expect("first");
        let _second = peers.enter(Some(me)).expect("second");
        assert!(peers.enter(Some(me)).is_none());
        assert!(peers.enter(Some(you)).is_some(), "others are not affected");
        drop(first);
        assert!(peers.enter(Some(me)).is_some());
    }
}
