//! Session identity: ids, passwords and timeout negotiation, as ZooKeeper does them.
//!
//! A session's password is not stored anywhere: like ZooKeeper, every server derives it from the session id
//! with `java.util.Random(sessionId ^ SUPER_SECRET).nextBytes(16)`, so a client that reconnects to another
//! server of the ensemble presents a password that server can check.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A session id (ZooKeeper's `long sessionId`).
pub type SessionId = i64;

/// ZooKeeper's `SessionTrackerImpl` secret, mixed into every password seed.
const SUPER_SECRET: i64 = 0xB341_5C00;

/// Length of a session password.
pub const PASSWORD_LEN: usize = 16;

/// The password of `session`: the bytes ZooKeeper's servers give it, so clients see the same thing.
pub fn password(session: SessionId) -> [u8; PASSWORD_LEN] {
    let mut random = JavaRandom::new(session ^ SUPER_SECRET);
    let mut out = [0u8; PASSWORD_LEN];
    random.next_bytes(&mut out);
    out
}

/// `java.util.Random`, just enough of it for [`password`].
struct JavaRandom {
    seed: i64,
}

impl JavaRandom {
    const MULTIPLIER: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;

    fn new(seed: i64) -> JavaRandom {
        JavaRandom { seed: (seed ^ Self::MULTIPLIER) & Self::MASK }
    }

    fn next_int(&mut self) -> i32 {
        self.seed = (self.seed.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB)) & Self::MASK;
        (self.seed >> 16) as i32
    }

    fn next_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(4) {
            let mut rnd = self.next_int();
            for byte in chunk {
                *byte = rnd as u8;
                rnd >>= 8;
            }
        }
    }
}

/// Hands out session ids unique to this server: `myid` in the top byte, then milliseconds at start-up, then a
/// counter (ZooKeeper's `SessionTrackerImpl.initializeNextSessionId`).
#[derive(Debug)]
pub struct SessionIds {
    next: AtomicI64,
}

impl SessionIds {
    /// Ids for server `my_id` (1..=254).
    pub fn new(my_id: u64) -> SessionIds {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        // The low 40 bits of the clock, shifted into bits 16..56 (ZooKeeper: `(ms << 24) >>> 8`).
        let base = ((ms << 24) as u64 >> 8) as i64;
        SessionIds { next: AtomicI64::new(base | ((my_id as i64) << 56)) }
    }

    /// The next id.
    pub fn next(&self) -> SessionId {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// The timeout a session gets: what the client asked, clamped to `[min, max]` (ZooKeeper answers with the
/// clamped value and the client adapts).
pub fn negotiate_timeout(requested_ms: i32, min: Duration, max: Duration) -> i32 {
    let (min, max) = (min.as_millis() as i64, max.as_millis() as i64);
    (requested_ms as i64).clamp(min, max.max(min)).min(i32::MAX as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_random_matches_the_jdk() {
        // new java.util.Random(42).nextInt() == -1170105035 and the next is 234785527 (the JDK's documented
        // algorithm; these values are the well-known first outputs for seed 42).
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_int(), -1_170_105_035);
        assert_eq!(r.next_int(), 234_785_527);
    }

    #[test]
    fn passwords_are_per_session_and_stable() {
        assert_eq!(password(7), password(7));
        assert_ne!(password(7), password(8));
    }

    #[test]
    fn session_ids_carry_the_server_id_and_are_unique() {
        let ids = SessionIds::new(3);
        let (a, b) = (ids.next(), ids.next());
        assert_eq!(a >> 56, 3);
        assert_eq!(b, a + 1);
    }

    #[test]
    fn timeouts_are_clamped() {
        let (min, max) = (Duration::from_millis(4000), Duration::from_millis(40000));
        assert_eq!(negotiate_timeout(100, min, max), 4000);
        assert_eq!(negotiate_timeout(10_000, min, max), 10_000);
        assert_eq!(negotiate_timeout(i32::MAX, min, max), 40000);
    }
}
