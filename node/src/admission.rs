//! Which client connections a server takes: at most `maxClientCnxns` from one address (ZooKeeper's default 60)
//! and at most `maxCnxns` in all.
//!
//! Every accepted connection holds a [`Permit`] for as long as it lives, whatever it turns out to be (a session,
//! a four-letter word, a handshake that never completes, a peer that closes after three bytes): the count goes
//! back when the permit drops, so every way out of a connection gives it back exactly once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::shared::lock;

/// Connection counts, per client address and in all.
#[derive(Debug, Default)]
pub struct Admission {
    per_ip_max: u32,
    total_max: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, u32>,
    total: u32,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `maxClientCnxns` connections from this address are open.
    #[error("too many connections from this address (maxClientCnxns is {0})")]
    PerAddress(u32),
    /// `maxCnxns` connections are open.
    #[error("too many connections to this server (maxCnxns is {0})")]
    Total(u32),
}

/// One admitted connection's place; released when dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// At most `per_ip_max` connections per address and `total_max` in all; 0 for no limit.
    pub fn new(per_ip_max: u32, total_max: u32) -> Arc<Admission> {
        Arc::new(Admission { per_ip_max, total_max, counts: Mutex::default() })
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let mut counts = lock(&self.counts);
        if self.total_max > 0 && counts.total >= self.total_max {
            return Err(Refused::Total(self.total_max));
        }
        let n = counts.per_ip.entry(ip).or_default();
        if self.per_ip_max > 0 && *n >= self.per_ip_max {
            return Err(Refused::PerAddress(self.per_ip_max));
        }
        *n += 1;
        counts.total += 1;
        Ok(Permit { admission: self.clone(), ip })
    }

    /// Connections open now, in all.
    pub fn total(&self) -> u32 {
        lock(&self.counts).total
    }

    /// Connections open now from `ip`.
    pub fn from(&self, ip: IpAddr) -> u32 {
        lock(&self.counts).per_ip.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        let n = counts.per_ip.get_mut(&self.ip).expect("an admitted address is counted until its permits drop");
        *n -= 1;
        if *n == 0 {
            counts.per_ip.remove(&self.ip);
        }
        counts.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn each_address_gets_its_allowance_and_a_dropped_permit_gives_its_place_back() {
        let admission = Admission::new(2, 0);
        let (a1, _a2) = (admission.admit(A).unwrap(), admission.admit(A).unwrap());
        assert_eq!(admission.admit(A).unwrap_err(), Refused::PerAddress(2));
        let _b = admission.admit(B).expect("another address has its own allowance");
        drop(a1);
        let _a3 = admission.admit(A).expect("the dropped permit's place is free again");
        assert_eq!((admission.from(A), admission.from(B), admission.total()), (2, 1, 3));
    }

    #[test]
    fn the_total_bound_holds_across_addresses_and_zero_means_no_limit() {
        let admission = Admission::new(0, 3);
        let permits: Vec<Permit> = (0..3).map(|_| admission.admit(A).unwrap()).collect();
        assert_eq!(admission.admit(B).unwrap_err(), Refused::Total(3));
        drop(permits);
        assert_eq!(admission.total(), 0);
        assert_eq!(admission.from(A), 0, "an address with no connection is forgotten");
        let unlimited = Admission::new(0, 0);
        let many: Vec<Permit> = (0..10_000).map(|_| unlimited.admit(A).unwrap()).collect();
        assert_eq!(unlimited.total(), 10_000);
        drop(many);
    }
}
