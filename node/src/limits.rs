//! One server's size limits, all derived from `jute.maxbuffer`, so that whatever the server accepts from a
//! client it can also prepare, log and ship to its peers:
//!
//! ```text
//!  client frame      <= jute.maxbuffer                            larger: the connection closes (as ZooKeeper)
//!  session auth ids  <= MAX_AUTH_BYTES                            more: AUTHFAILED, the connection closes
//!  txn record        <= jute.maxbuffer + jute.maxbuffer.extrasize checked by the leader after prep, before it
//!                                                                 is proposed; larger: the request is dropped
//!  WAL record        >= txn record                                so every proposed txn can be logged
//!  peer frame        >= txn record + PEER_HEADROOM                so every proposal can be shipped
//!                    >= client frame + auth ids + PEER_HEADROOM   so every forwarded request can be
//! ```
//!
//! A closeSession is the one txn whose size no client frame bounds (it names every ephemeral of the session):
//! past the txn limit the leader proposes it without its list (see [`crate::leader`]), so closing a session
//! with any number of ephemerals still fits.
//!
//! # Invariants
//! - `txn <= wal_payload` and `txn + PEER_HEADROOM <= peer_frame`.
//! - `frame + MAX_AUTH_BYTES + PEER_HEADROOM <= peer_frame`.

use crate::config::Config;

/// Bytes of authenticated identities (scheme and id strings) one session may hold. ZooKeeper has no such
/// bound; a session adds one id per `addauth`, a few dozen bytes each, and every write it forwards carries them.
pub const MAX_AUTH_BYTES: usize = 64 << 10;

/// Room for a peer message's own fields around the bytes it carries (a proposal's zxid and length, a forwarded
/// request's session, xid, op and counts).
pub const PEER_HEADROOM: usize = 4 << 10;

/// The limits of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest client frame (`jute.maxbuffer`).
    pub frame: usize,
    /// The largest encoded txn record the leader proposes.
    pub txn: usize,
    /// The WAL's record payload limit.
    pub wal_payload: usize,
    /// The largest peer frame sent or accepted.
    pub peer_frame: usize,
}

impl Limits {
    /// The limits `config` implies.
    pub fn new(config: &Config) -> Limits {
        let frame = config.jute_max_buffer;
        let txn = frame + config.jute_max_buffer_extra;
        // (The WAL reads back records of any size up to its read ceiling, so lowering `jute.maxbuffer` never
        // makes a logged record unreadable.)
        let wal_payload = txn;
        let peer_frame = txn.max(frame + MAX_AUTH_BYTES) + PEER_HEADROOM;
        let limits = Limits { frame, txn, wal_payload, peer_frame };
        limits.check();
        limits
    }

    fn check(&self) {
        assert!(self.txn <= self.wal_payload, "a proposed txn must fit a WAL record: {self:?}");
        assert!(self.txn + PEER_HEADROOM <= self.peer_frame, "a proposal must fit a peer frame: {self:?}");
        assert!(
            self.frame + MAX_AUTH_BYTES + PEER_HEADROOM <= self.peer_frame,
            "a forwarded request must fit a peer frame: {self:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(&format!("tickTime=2000\ndataDir=/tmp/x\nclientPort=2181\n{extra}")).unwrap()
    }

    #[test]
    fn the_defaults_are_zookeepers_and_every_derived_limit_holds_a_txn() {
        let limits = Limits::new(&config(""));
        assert_eq!(limits.frame, 0xfffff);
        assert_eq!(limits.txn, 2 * 0xfffff, "ZooKeeper's readers take jute.maxbuffer plus as much again");
        assert!(limits.wal_payload >= limits.txn);
        assert!(limits.peer_frame >= limits.txn + PEER_HEADROOM);
    }

    #[test]
    fn the_limits_follow_the_configuration() {
        let small = Limits::new(&config("jute.maxbuffer=1000\njute.maxbuffer.extrasize=0\n"));
        assert_eq!((small.frame, small.txn), (1000, 1000));
        assert_eq!(small.wal_payload, 1000);
        let big = Limits::new(&config("jute.maxbuffer=8388608\n"));
        assert_eq!(big.txn, 16 << 20);
        assert!(big.wal_payload >= big.txn && big.peer_frame >= big.txn + PEER_HEADROOM);
    }
}
