//! How much client work a server holds at once: requests read from clients and not yet answered, counted and in
//! bytes, across every connection (ZooKeeper's `globalOutstandingLimit`, and the byte budget of its
//! `zookeeper.largeRequestMaxBytes`).
//!
//! Past either bound, connections stop reading (TCP pushes back on their clients) until answers go out, except
//! a connection with nothing in flight, which may still have one request read: a flood from some clients then
//! delays a well-behaved client by one request's turn, never starves it. That exception ends at twice the byte
//! bound ([`HARD_LIMIT_FACTOR`]): clients that connect, send a large request and close, again and again, leave
//! their requests queued at a leader that waits (for a full window, an election), and no number of connections
//! may take the server's memory past that. So the bytes held are at most twice the bound plus one frame
//! (`jute.maxbuffer`) per connection that was reading at the moment it was reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The server-wide budget.
#[derive(Debug)]
pub struct Throttle {
    max_requests: u64,
    max_bytes: u64,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// One request's share of the budget, given back when dropped (its answer went out, or its connection ended).
#[derive(Debug)]
pub struct Ticket {
    throttle: Arc<Throttle>,
    bytes: u64,
}

/// Bytes of requests in flight at most, ZooKeeper's `zookeeper.largeRequestMaxBytes` default.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;

/// Past this many times the byte bound, not even a connection with nothing in flight reads.
pub const HARD_LIMIT_FACTOR: u64 = 2;

impl Throttle {
    /// A budget of `max_requests` requests and `max_bytes` bytes.
    pub fn new(max_requests: u64, max_bytes: u64) -> Arc<Throttle> {
        Arc::new(Throttle { max_requests, max_bytes, requests: AtomicU64::new(0), bytes: AtomicU64::new(0) })
    }

    /// Whether a connection that has `in_flight` requests of its own may read another.
    pub fn admits(&self, in_flight: usize) -> bool {
        let bytes = self.bytes.load(Ordering::Relaxed);
        if in_flight == 0 {
            return bytes < self.max_bytes.saturating_mul(HARD_LIMIT_FACTOR);
        }
        self.requests.load(Ordering::Relaxed) < self.max_requests && bytes < self.max_bytes
    }

    /// Takes a request of `bytes` into the budget.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Ticket {
        let bytes = bytes as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ticket { throttle: self.clone(), bytes }
    }

    /// Requests and bytes in flight now.
    pub fn in_flight(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.throttle.requests.fetch_sub(1, Ordering::Relaxed);
        self.throttle.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_a_bound_only_a_connection_with_nothing_in_flight_reads() {
        let throttle = Throttle::new(2, 1000);
        let tickets = [throttle.take(10), throttle.take(10)];
        assert!(!throttle.admits(1), "two requests in flight: the count is spent");
        assert!(throttle.admits(0), "a connection with nothing in flight always gets one request in");
        drop(tickets);
        assert!(throttle.admits(5));
        let big = throttle.take(1000);
        assert!(!throttle.admits(1), "the byte budget is spent");
        assert!(throttle.admits(0), "a connection with nothing in flight still gets one in");
        let bigger = throttle.take(1000);
        assert!(!throttle.admits(0), "past twice the byte budget, nobody reads");
        drop((big, bigger));
        assert_eq!(throttle.in_flight(), (0, 0), "every ticket gave its share back");
    }
}
