//! The log's writes: staging appends and flushing them to the WAL, truncating, delivering committed txns.

use bytes::Bytes;
use wal::{WalError, Zxid};

use super::server::Server;
use super::{Committed, CommittedShare, COMMITTED_BATCH, COMMITTED_BYTES, COMMITTED_ITEM_BYTES, COMMITTED_TXN_WEIGHT};
use crate::fault::{Fault, LocalFault};
use crate::message::ServerId;
use crate::peer::Role;
use crate::sync::History;
use crate::transport::budget_permits;
use crate::LATENCY;

impl Server {
    /// Stages a txn for the WAL (`leader`: the server it came from, if not this one's own proposal). A txn too
    /// large to log is refused here, so that it is blamed on the leader that sent it.
    pub(super) async fn append(&mut self, zxid: Zxid, txn: Bytes, leader: Option<ServerId>) -> Result<(), Fault> {
        let max = self.wal.max_payload();
        if txn.len() > max {
            return Err(Fault::wal("append", zxid, WalError::PayloadTooLarge { len: txn.len(), max }, leader));
        }
        // As the WAL would refuse it when the batch is flushed, but here, before the txn is held in zxid order
        // (`Held` asserts that order), and blamed on the leader that sent it: the peer checks its leader's
        // streams, so this is a second guard. The log's last zxid is its base after a snapshot install.
        if let Some(last) = self.log.last().filter(|&last| zxid <= last) {
            return Err(Fault::wal("append", zxid, WalError::ZxidNotIncreasing { zxid, last }, leader));
        }
        if self.staged.len() >= MAX_STAGED {
            // The WAL's queue may make the loop wait for room.
            self.flush_outbox();
            self.flush_appends().await.map_err(Fault::Local)?;
        }
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "appended");
        self.log.zxids.push_back(zxid);
        self.undelivered.push(zxid, txn.clone());
        self.log.pending.push(zxid, txn.clone());
        self.staged.push((zxid, txn));
        Ok(())
    }

    /// Hands the staged txns to the WAL as one batch (waiting for room in its queue).
    pub(super) async fn flush_appends(&mut self) -> Result<(), LocalFault> {
        self.flush_staged(false).await
    }

    /// [`Server::flush_appends`], or, on a follower whose loop is quiet (nothing `waiting` for it now, nothing
    /// else in flight, and nothing arrived while the last batch was made durable), the batch written and fsynced
    /// on this thread before the call returns ([`super::RuntimeConfig::quiet_appends_here`]). Either way its
    /// durability is reported as [`crate::peer::Event::Persisted`] by the loop, so the ack follows the fsync.
    pub(super) async fn flush_appends_or_here(&mut self, waiting: bool) -> Result<(), LocalFault> {
        let following = matches!(self.role_tx.borrow().0, Role::Following(_));
        let in_flight = !self.durability.is_empty();
        // Committed txns handed to the node since the last flush woke its applier, which now waits in this
        // worker's LIFO slot (no other worker steals from it) and would wait out the fdatasync too.
        let waiting = waiting || std::mem::take(&mut self.delivered_since_flush);
        let started = tokio::time::Instant::now();
        let here = self.quiet.allows(started, following, self.staged.len(), in_flight, waiting);
        self.flush_staged(here).await?;
        if here {
            self.quiet.took_here(started, tokio::time::Instant::now());
        }
        Ok(())
    }

    /// Hands the staged txns to the WAL as one batch, to be made durable on this thread if `here` and the WAL
    /// is idle.
    async fn flush_staged(&mut self, here: bool) -> Result<(), LocalFault> {
        let Some(&(last, _)) = self.staged.last() else { return Ok(()) };
        let staged = std::mem::take(&mut self.staged);
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = last.0, records = staged.len(), here, "handed");
        let appended = match here {
            true => self.wal.append_batch_here(staged).await,
            false => self.wal.append_batch_async(staged).await,
        };
        let pending = appended.map_err(|source| LocalFault::Wal { op: "append", zxid: last, source })?;
        self.durability.push_back(Box::pin(pending));
        Ok(())
    }

    /// Cuts the log after `zxid`, as `leader` said.
    pub(super) async fn truncate(&mut self, zxid: Zxid, leader: Option<ServerId>) -> Result<(), Fault> {
        tracing::info!(after = %zxid, leader = leader.map(|l| l.0), "truncating the log (TRUNC): txns after this zxid never committed");
        self.flush_appends().await.map_err(Fault::Local)?;
        // Truncation runs behind every queued append: its completion means all of it is durable.
        let truncation = self.wal.truncate_after(zxid).map_err(|e| Fault::wal("truncate after", zxid, e, leader))?;
        truncation.await.map_err(|e| Fault::wal("truncate after", zxid, e, None))?;
        self.durability.clear();
        while self.log.zxids.back().is_some_and(|&z| z > zxid) {
            self.log.zxids.pop_back();
        }
        self.log.pending.cut_after(zxid);
        self.undelivered.cut_after(zxid);
        if self.delivered > zxid {
            self.delivered = zxid;
            self.rebuild(zxid).await?;
        }
        Ok(())
    }

    /// Takes every txn after the last one delivered up to `zxid` for the node, from memory: every txn appended
    /// since the start is held in `undelivered` until delivered, and a truncation cuts both. They go to the node
    /// with the rest of the pass's ([`Server::hand_over_committed`]).
    pub(super) async fn deliver(&mut self, zxid: Zxid) -> Result<(), LocalFault> {
        if zxid <= self.delivered {
            return Ok(());
        }
        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "committed");
        let from = Zxid(self.delivered.0.saturating_add(1));
        let batch = self.undelivered.take_through(zxid);
        // The log and the held txns agree on what lies in (delivered, zxid]; if not, applying would skip txns.
        let logged = self.log.zxids.iter().rev().skip_while(|&&z| z > zxid).take_while(|&&z| z >= from).count();
        if batch.len() != logged || batch.first().is_some_and(|&(z, _)| z < from) {
            return Err(LocalFault::Undeliverable { from, to: zxid, logged, held: batch.len() });
        }
        for (z, txn) in batch {
            assert!(z > self.delivered, "committed txns go to the node in zxid order: {z} after {}", self.delivered);
            self.delivered = z;
            self.delivering.push((z, txn));
        }
        if self.delivering.len() >= COMMITTED_BATCH {
            self.hand_over_committed().await;
        }
        Ok(())
    }

    /// Hands the node the committed txns taken for it, in items of at most [`COMMITTED_BATCH`] txns and
    /// [`COMMITTED_ITEM_BYTES`], each with its share of the stream's budget: once a pass (so a follower that
    /// took a burst of commits in one read hands them over together), and before anything that must follow them
    /// (a rebuild) or when they fill an item.
    pub(super) async fn hand_over_committed(&mut self) {
        if self.delivering.is_empty() {
            return;
        }
        self.delivered_since_flush = true;
        let mut batch = std::mem::take(&mut self.delivering).into_iter().peekable();
        while batch.peek().is_some() {
            let (mut item, mut weight) = (Vec::new(), 0);
            while let Some((z, txn)) = batch.next_if(|(_, txn)| {
                item.is_empty() || (item.len() < COMMITTED_BATCH && weight + txn_weight(txn) <= COMMITTED_ITEM_BYTES)
            }) {
                weight += txn_weight(&txn);
                item.push((z, txn));
            }
            // Only a node behind by the whole budget makes the loop wait: what this pass sent goes out first.
            let weight = budget_permits(weight.min(COMMITTED_BYTES));
            let share = match self.committed_budget.clone().try_acquire_many_owned(weight) {
                Ok(share) => share,
                Err(_) => {
                    self.flush_outbox();
                    self.committed_budget.clone().acquire_many_owned(weight).await.expect("the budget is never closed")
                }
            };
            if self.committed_tx.send(Committed::Txns(item, CommittedShare(share))).is_err() {
                // Nobody consumes the stream (a bare runtime in tests): nothing to deliver to.
                break;
            }
        }
    }

    /// Tells the node to rebuild its tree up to `zxid`, after the txns handed to it before.
    pub(super) async fn rebuild(&mut self, zxid: Zxid) -> Result<(), LocalFault> {
        self.hand_over_committed().await;
        self.committed_tx.send(Committed::Rebuild(zxid)).map_err(|_| LocalFault::NodeGone)
    }

    /// The txns appended but not durable yet, up to `until`.
    pub(super) fn pending_until(&self, until: Zxid) -> Vec<(Zxid, Bytes)> {
        self.log.pending.through(until).cloned().collect()
    }
}

/// Txns staged for the WAL at most before they are handed to it (a bound on one batch's size and latency).
const MAX_STAGED: usize = 1024;

/// What a committed txn weighs in the committed stream's budget.
fn txn_weight(txn: &Bytes) -> usize {
    txn.len() + COMMITTED_TXN_WEIGHT
}
