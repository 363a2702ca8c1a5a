//! The log as the peer sees it: the [`History`] view over the WAL and the txns not durable yet.

use std::collections::VecDeque;
use std::sync::Arc;

use wal::{Wal, Zxid};

use super::held::Held;
use crate::sync::History;

/// The log as the peer sees it: every zxid in the WAL, plus txns not durable yet, after the snapshot the WAL
/// was restarted from, if it was.
///
/// The node purges old WAL segments behind the runtime's back (snapshot retention), so the start of the log
/// and whether it is complete are read from the WAL itself, and `zxids` is trimmed to match as it goes.
pub(super) struct Log {
    pub(super) wal: Arc<Wal>,
    pub(super) zxids: VecDeque<Zxid>,
    pub(super) pending: Held,
}

impl Log {
    /// The first zxid still held: the WAL's, or the first pending one when the WAL is empty.
    fn start(&self) -> Option<Zxid> {
        self.wal.first_zxid().or_else(|| self.zxids.front().copied())
    }

    /// Forgets zxids whose segments were purged.
    pub(super) fn trim(&mut self) {
        if let Some(first) = self.wal.first_zxid() {
            while self.zxids.front().is_some_and(|&z| z < first) {
                self.zxids.pop_front();
            }
        }
    }
}

impl History for Log {
    fn last(&self) -> Option<Zxid> {
        self.zxids.back().copied().or_else(|| self.wal.base())
    }
    fn contains(&self, zxid: Zxid) -> bool {
        let logged = self.start().is_some_and(|first| zxid >= first) && self.zxids.binary_search(&zxid).is_ok();
        logged || self.wal.base() == Some(zxid)
    }
    fn last_below(&self, zxid: Zxid) -> Option<Zxid> {
        let i = self.zxids.partition_point(|&z| z < zxid);
        let logged = i.checked_sub(1).map(|i| self.zxids[i]).filter(|&z| self.start().is_some_and(|first| z >= first));
        // Every logged txn is above the base.
        logged.or_else(|| self.wal.base().filter(|&base| base < zxid))
    }
    fn complete(&self) -> bool {
        self.wal.holds_full_history()
    }
}
