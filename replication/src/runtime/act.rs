//! Carrying out the peer's actions, restarting the peer after a peer's fault, and publishing its role.

use tokio::time::Instant;

use wal::Zxid;

use super::server::{next_durable, Server};
use super::{CommitError, LearnerView};
use crate::epochs::EpochUpdate;
use crate::fault::{Fault, LocalFault};
use crate::message::Message;
use crate::monitor::SyncKind;
use crate::peer::{Action, DurableState, Peer, PeerConfig, Role};
use crate::streams::TxnStream;
use crate::sync::History;

impl Server {
    /// Carries out the peer's actions. A peer's fault drops the link to it and starts the peer over from what
    /// is on disk (it may have moved on as if the failed action had been done); only a fault of this server's
    /// is returned.
    pub(super) async fn carry_out(
        &mut self,
        peer: &mut Peer,
        config: &PeerConfig,
        actions: Vec<Action>,
    ) -> Result<(), LocalFault> {
        let mut actions = actions;
        loop {
            match self.act(peer, actions).await {
                Ok(()) => return Ok(()),
                Err(Fault::Local(fault)) => return Err(fault),
                Err(Fault::Peer { peer: culprit, fault }) => {
                    tracing::warn!(
                        server = self.me.0,
                        peer = culprit.0,
                        %fault,
                        "dropping the link to the peer; starting the protocol over from this server's disk"
                    );
                    self.flush_outbox();
                    self.transport.disconnect(culprit);
                    actions = self.restart_peer(peer, config).await?;
                }
            }
        }
    }

    /// Starts the peer over from the disk, once every write asked of it is done.
    async fn restart_peer(&mut self, peer: &mut Peer, config: &PeerConfig) -> Result<Vec<Action>, LocalFault> {
        self.flush_appends().await?;
        self.incoming = None;
        self.events.clear();
        // The new peer never heard of these proposals.
        for reply in self.pending_proposal.drain(..) {
            let _ = reply.send(Err(CommitError::Abandoned));
        }
        for waiter in std::mem::take(&mut self.barriers).into_values().flatten() {
            let _ = waiter.send(false);
        }
        while let Some(result) = next_durable(&mut self.durability).await {
            let zxid = self.log.zxids.back().copied().unwrap_or(Zxid::ZERO);
            let durable = result.map_err(|source| LocalFault::Wal { op: "make durable up to", zxid, source })?;
            self.log.pending.forget_through(durable);
        }
        let (accepted_epoch, current_epoch) = self.epochs.drain().await?;
        self.generation += 1;
        let last_zxid = self.log.last().unwrap_or(Zxid::ZERO);
        let durable = DurableState { accepted_epoch, current_epoch, last_zxid, repairing: peer.durable().repairing };
        let applied = self.delivered.min(last_zxid);
        let (mut fresh, actions) = Peer::restart(config.clone(), durable, applied, self.started.elapsed());
        fresh.continue_rounds_after(peer.last_round());
        *peer = fresh;
        Ok(actions)
    }

    async fn act(&mut self, peer: &mut Peer, actions: Vec<Action>) -> Result<(), Fault> {
        // What a follower logs or stores came from its leader; a leader's own proposals are its own.
        let leader = match peer.role() {
            Role::Following(leader) => Some(leader),
            _ => None,
        };
        for action in actions {
            if flushes_outbox(&action) {
                self.flush_outbox();
            }
            match action {
                Action::Send(to, m) => {
                    if matches!(m, Message::Trunc { .. }) {
                        self.monitor.syncing(SyncKind::Trunc);
                    }
                    self.outbox.push(to, m);
                }
                Action::Append(zxid, txn) => self.append(zxid, txn, leader).await?,
                Action::Truncate(zxid) => self.truncate(zxid, leader).await?,
                Action::Apply(zxid) => {
                    self.deliver(zxid).await?;
                    self.applied_tx.send_replace(zxid);
                    let done: Vec<Zxid> = self.waiters.range(..=zxid).map(|(&z, _)| z).collect();
                    for z in done {
                        if let Some(waiter) = self.waiters.remove(&z) {
                            let _ = waiter.send(Ok(z));
                        }
                    }
                }
                Action::PersistAcceptedEpoch(epoch) => {
                    self.epochs.request(self.generation, EpochUpdate::Accepted(epoch)).await?
                }
                Action::PersistCurrentEpoch(epoch) => {
                    self.epochs.request(self.generation, EpochUpdate::Current(epoch)).await?
                }
                Action::StreamTxns { to, after, until, commit_up_to } => {
                    self.monitor.syncing(SyncKind::Diff);
                    tracing::info!(follower = to.0, %after, %until, "syncing a follower with the txns after the last one it shares with this log (DIFF, after a TRUNC if it had more)");
                    let txns = TxnStream::new(&self.wal, self.pending_until(until), after, until, commit_up_to);
                    let _ = self.transport.send_stream(to, Box::new(txns));
                }
                Action::StreamSnapshot { to, until, commit_up_to } => {
                    self.monitor.syncing(SyncKind::Snap);
                    self.stream_snapshot(to, until, commit_up_to, peer.serving())
                }
                Action::SnapshotChunk { offset, data } => {
                    self.receive_chunk(offset, data, leader.ok_or(LocalFault::NotFollowing)?).await?
                }
                Action::InstallSnapshot(zxid) => {
                    self.install_snapshot(zxid, leader.ok_or(LocalFault::NotFollowing)?).await?
                }
                Action::Proposed(zxid) => {
                    if let Some(reply) = self.pending_proposal.pop_front() {
                        self.waiters.insert(zxid, reply);
                    }
                }
                Action::Rejected(error) => {
                    if let Some(reply) = self.pending_proposal.pop_front() {
                        let _ = reply.send(Err(CommitError::Rejected(error)));
                    }
                }
                Action::RoleChanged(role) => {
                    if role != Role::Leading {
                        // Proposals in flight may or may not commit under the next leader: say so.
                        for (_, waiter) in std::mem::take(&mut self.waiters) {
                            let _ = waiter.send(Err(CommitError::Abandoned));
                        }
                    }
                }
                Action::Disconnect(peer_id) => self.transport.disconnect(peer_id),
                Action::Barrier { id, passed } => {
                    for waiter in self.barriers.remove(&id).into_iter().flatten() {
                        let _ = waiter.send(passed);
                    }
                }
                Action::Repaired => {
                    let (fs, dir) = (self.fs.clone(), self.dir.clone());
                    let cleared = move || crate::repairing::clear_with(&*fs, &dir);
                    self.blocking.run("clear the repair mark", cleared).await?.map_err(LocalFault::Repairing)?;
                }
            }
        }
        // Only a real change wakes the watchers (some rebuild state on every change).
        let now = (peer.role(), peer.serving());
        let before = *self.role_tx.borrow();
        if self.role_tx.send_if_modified(|role| std::mem::replace(role, now) != now) {
            self.log_role_change(before, now, peer);
        }
        self.publish_learners(peer, now == (Role::Leading, true));
        Ok(())
    }

    /// Says, once each, what an operator follows an election by: the leader elected (with the epoch and the
    /// time it took), then serving (with the zxid reached and the time since looking began).
    fn log_role_change(&mut self, before: (Role, bool), now: (Role, bool), peer: &Peer) {
        let role = match now.0 {
            Role::Looking => {
                self.looking_since = Instant::now();
                self.monitor.looking();
                return;
            }
            Role::Leading => "leading".to_owned(),
            Role::Following(leader) => format!("following server {}", leader.0),
        };
        let durable = peer.durable();
        let since_looking = self.looking_since.elapsed();
        let ms = since_looking.as_millis() as u64;
        if before.0 != now.0 {
            self.monitor.elected(since_looking);
            // The target operators know these two lines by, whichever file of the runtime logs them.
            tracing::info!(target: "replication::runtime", role = %role, last_zxid = %durable.last_zxid, election_ms = ms, "leader elected");
        }
        if now.1 && !before.1 {
            let applied = *self.applied_tx.borrow();
            tracing::info!(target: "replication::runtime", role = %role, epoch = %durable.current_epoch, zxid = %applied, ms_since_looking = ms, "synced: serving");
        }
    }

    /// Publishes the leader's view of its learners if it changed.
    fn publish_learners(&self, peer: &Peer, leading: bool) {
        self.learners_tx.send_if_modified(|view| {
            let leading_since = match (leading, view.leading_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now().into_std()),
                (false, _) => None,
            };
            let now = LearnerView { learners: peer.learners(), leading_since };
            std::mem::replace(view, now) != now
        });
    }
}

/// Whether the messages sent so far go to the transport before `action`: it must come after them (a stream, a
/// disconnect), or it may wait on the disk (the loop holds no message while it waits). The others are quick
/// (an append is staged; an apply hands committed txns to the node, and flushes itself if it would wait for room).
fn flushes_outbox(action: &Action) -> bool {
    match action {
        Action::Send(..)
        | Action::Append(..)
        | Action::Apply(_)
        | Action::Proposed(_)
        | Action::Rejected(_)
        | Action::RoleChanged(_)
        | Action::Barrier { .. } => false,
        Action::Truncate(_)
        | Action::PersistAcceptedEpoch(_)
        | Action::PersistCurrentEpoch(_)
        | Action::StreamTxns { .. }
        | Action::StreamSnapshot { .. }
        | Action::SnapshotChunk { .. }
        | Action::InstallSnapshot(_)
        | Action::Disconnect(_)
        | Action::Repaired => true,
    }
}
