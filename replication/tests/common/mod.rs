//! What the peer-level tests (`t65_peer`, `t66_peer_violations`) share: an empty history and server 1's
//! configuration in a 3-voter ensemble.
#![allow(dead_code)]

use std::time::Duration;

use replication::election::ElectionConfig;
use replication::message::ServerId;
use replication::peer::PeerConfig;
use replication::quorum::Voters;
use replication::sync::History;
use wal::Zxid;

/// A server that holds no txn.
pub struct Empty;

impl History for Empty {
    fn last(&self) -> Option<Zxid> {
        None
    }
    fn contains(&self, _: Zxid) -> bool {
        false
    }
    fn last_below(&self, _: Zxid) -> Option<Zxid> {
        None
    }
    fn complete(&self) -> bool {
        true
    }
}

/// Server 1 of voters 1, 2 and 3, 100 ms ticks.
pub fn config() -> PeerConfig {
    PeerConfig {
        me: ServerId(1),
        voters: Voters::new([ServerId(1), ServerId(2), ServerId(3)]),
        tick: Duration::from_millis(100),
        init_limit: 10,
        sync_limit: 5,
        window: 8,
        election: ElectionConfig::default(),
    }
}
