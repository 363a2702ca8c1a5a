//! What the runtime tells an operator's metrics as it happens: elections and follower syncs, the events behind
//! ZooKeeper's `looking_count`, `election_time`, `diff_count` and `snap_count` (`ServerMetrics`).
//!
//! The runtime calls a [`Monitor`] on its own task, so an implementation must only count (atomics, a short
//! lock): it never blocks the protocol. `()` is the monitor that ignores everything.

use std::time::Duration;

/// How a leader brings a follower up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// The txns after the last one both hold (none if the follower is up to date).
    Diff,
    /// The follower cuts its log first (txns of an older epoch that never committed); a DIFF follows.
    Trunc,
    /// A snapshot, then the txns after it.
    Snap,
}

impl SyncKind {
    /// The name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Diff => "diff",
            SyncKind::Trunc => "trunc",
            SyncKind::Snap => "snap",
        }
    }
}

/// Receives the runtime's monitoring events.
pub trait Monitor: Send + Sync + 'static {
    /// This server began looking for a leader: at start, and each time it leaves a leader or a quorum
    /// (ZooKeeper counts each entry into `LOOKING`).
    fn looking(&self) {}

    /// An election ended, `took` after looking began, with this server leading or following (ZooKeeper's
    /// `election_time`, observed as `Leader.lead` and `Follower.followLeader` begin: before the sync).
    fn elected(&self, _took: Duration) {}

    /// As leader, this server began syncing a follower. A TRUNC is reported, then the DIFF after it
    /// (ZooKeeper's `diff_count` counts every sync without a snapshot, `snap_count` the others).
    fn syncing(&self, _how: SyncKind) {}
}

impl Monitor for () {}
