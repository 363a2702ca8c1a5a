//! Free loopback ports, handed out at most once per test process.
//!
//! Ports come from 21000..32000, below Linux's ephemeral range (32768..60999), so that a client socket's
//! source port never takes the port of a node that is down and about to restart.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const FIRST: u16 = 21_000;
const LAST: u16 = 32_000;

/// `n` distinct ports on 127.0.0.1 that were free a moment ago and that this process has not handed out before.
pub fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: Mutex<Option<(HashSet<u16>, u16)>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let (used, next) = given.get_or_insert_with(|| (HashSet::new(), start()));
    let mut ports = Vec::with_capacity(n);
    let mut tried = 0;
    while ports.len() < n {
        assert!(tried < usize::from(LAST - FIRST), "no free loopback port left in {FIRST}..{LAST}");
        tried += 1;
        let port = *next;
        *next = if port + 1 >= LAST { FIRST } else { port + 1 };
        if used.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        used.insert(port);
        ports.push(port);
    }
    ports
}

/// A start that differs between processes, so that two test processes running at once rarely probe the same
/// ports.
fn start() -> u16 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mix = u64::from(std::process::id()).wrapping_mul(7919) ^ u64::from(nanos);
    FIRST + u16::try_from(mix % u64::from(LAST - FIRST)).expect("below LAST - FIRST")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_ports(8);
        let b = free_ports(8);
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 16);
        for p in all {
            assert!((FIRST..LAST).contains(&p));
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
