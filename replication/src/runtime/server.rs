//! The server task: its state, and the loop that turns inputs into events for the peer.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use wal::fs::Fs;
use wal::{Wal, WalError, Zxid};

use super::held::Held;
use super::outbox::Outbox;
use super::quiet::QuietAppends;
use super::{Blocking, Committed, Durability, ForwardShare, Forwarded, LearnerView, Log, Reply};
use crate::barrier::BarrierId;
use crate::epochs::EpochWriter;
use crate::fault::LocalFault;
use crate::message::{Message, ServerId};
use crate::monitor::Monitor;
use crate::peer::{DurableState, Event, Peer, PeerConfig, Role};
use crate::transport::{budget_permits, Inbound, InboundReceiver, Transport};
use crate::LATENCY;
use snapshot::transfer::Incoming;

/// What the server loop listens to besides its own appends and ticks.
pub(super) struct Inputs {
    pub(super) inbound: InboundReceiver,
    pub(super) proposals: mpsc::Receiver<(Bytes, Reply)>,
    pub(super) barriers: mpsc::Receiver<oneshot::Sender<bool>>,
    pub(super) misbehaved: mpsc::Receiver<(ServerId, &'static str)>,
    pub(super) stop: watch::Receiver<bool>,
}

/// A snapshot being received from the leader, and where its next chunk must start.
pub(super) struct Receiving {
    pub(super) file: Incoming,
    pub(super) next: u64,
}

pub(super) struct Server {
    pub(super) me: ServerId,
    pub(super) wal: Arc<Wal>,
    /// The last zxid handed to the node on the committed stream.
    pub(super) delivered: Zxid,
    /// Txns appended and not yet handed to the node, so that delivering them never reads the WAL (whose
    /// iterator scans a segment from its start).
    pub(super) undelivered: Held,
    /// Committed txns taken for the node during this pass, not handed over yet ([`Server::hand_over_committed`]).
    pub(super) delivering: Vec<(Zxid, Bytes)>,
    pub(super) committed_tx: mpsc::UnboundedSender<Committed>,
    /// The committed stream's budget ([`super::COMMITTED_BYTES`]): each batch holds its weight until applied.
    pub(super) committed_budget: Arc<Semaphore>,
    pub(super) forwarded_tx: mpsc::Sender<Forwarded>,
    /// Each peer's budget of forwarded bytes the node has not finished with.
    pub(super) forward_budgets: BTreeMap<ServerId, (Arc<Semaphore>, u32)>,
    pub(super) snapshots: Option<PathBuf>,
    /// A snapshot being received from the leader.
    pub(super) incoming: Option<Receiving>,
    /// A trait object: one virtual call per message is nothing beside encoding it, and the server's code stays
    /// free of a type parameter that only the simulation varies.
    pub(super) transport: Arc<dyn Transport>,
    /// What the peer sent during this pass of the loop, handed to the transport together when it ends.
    pub(super) outbox: Outbox,
    /// The filesystem of the data directory and the snapshots.
    pub(super) fs: Fs,
    /// Where blocking disk work runs.
    pub(super) blocking: Blocking,
    pub(super) log: Log,
    /// Appends in flight, oldest first.
    pub(super) durability: VecDeque<Durability>,
    /// Appends the peer asked for and the WAL has not been handed yet: they go to it as one batch (one queue
    /// entry, one completion, usually one fsync) once the events at hand are handled, or before anything that
    /// must queue behind them (a truncation, a restart of the log, a restart of the peer). Already counted
    /// in `log`, `undelivered` and `log.pending`, like an append in flight.
    pub(super) staged: Vec<(Zxid, Bytes)>,
    /// Whether the next flush may make its batch durable on this loop's thread.
    pub(super) quiet: QuietAppends,
    /// Whether committed txns went to the node since the last flush of appends.
    pub(super) delivered_since_flush: bool,
    /// Epoch writes in flight.
    pub(super) epochs: EpochWriter,
    /// How many times the peer was started over: epoch writes asked for by an earlier one are not reported
    /// to a later one.
    pub(super) generation: u64,
    /// Proposals waiting to commit.
    pub(super) waiters: BTreeMap<Zxid, Reply>,
    /// Proposals handed to the peer, waiting for it to say which zxid each got.
    pub(super) pending_proposal: VecDeque<Reply>,
    /// Who waits on each barrier handed to the peer: requests that arrive together share one barrier.
    pub(super) barriers: BTreeMap<BarrierId, Vec<oneshot::Sender<bool>>>,
    pub(super) next_barrier: u64,
    /// Events for the peer, in order.
    pub(super) events: VecDeque<Event>,
    pub(super) applied_tx: watch::Sender<Zxid>,
    pub(super) role_tx: watch::Sender<(Role, bool)>,
    pub(super) learners_tx: watch::Sender<LearnerView>,
    /// When the server started: ticks carry the time since (tokio's clock, so a simulation's paused one).
    pub(super) started: Instant,
    /// When this server last began looking for a leader: the election and sync times an operator reads in
    /// the log are measured from it.
    pub(super) looking_since: Instant,
    pub(super) monitor: Arc<dyn Monitor>,
    /// The data directory (the repair mark's).
    pub(super) dir: PathBuf,
}

impl Server {
    pub(super) async fn run(mut self, config: PeerConfig, durable: DurableState, inputs: Inputs) {
        let Inputs { mut inbound, mut proposals, mut barriers, mut misbehaved, mut stop } = inputs;
        let tick = config.tick / 5;
        let (mut peer, actions) = Peer::new(config.clone(), durable, self.started.elapsed());
        // A peer starts out looking (the role watch starts there too, so no change reports it).
        self.monitor.looking();
        if let Err(fault) = self.carry_out(&mut peer, &config, actions).await {
            return self.stop(fault);
        }
        let mut ticker = tokio::time::interval(tick);
        // The inputs are polled in a fixed order (`biased`), so that a seeded simulation replays exactly (an
        // unbiased select picks at random). Stopping comes first; then what only this server's own work makes
        // ready, a bounded amount each (durability, epoch writes, the tick, misbehaving peers); then the inputs
        // others can keep full: the peers' messages and the node's requests take turns, so that neither a
        // flood from the peers nor one from the node starves the other; and among the node's requests,
        // proposals and barriers (syncs) take the lead in turn, so that a stream of writes does not hold back a
        // sync, nor a stream of syncs the writes. (What the node forwards goes to the transport directly:
        // [`super::Handle::forward`].)
        let (mut node_first, mut barriers_first) = (false, false);
        loop {
            while let Some(event) = self.events.pop_front() {
                let actions = peer.handle(event, &self.log);
                if let Err(fault) = self.carry_out(&mut peer, &config, actions).await {
                    return self.stop(fault);
                }
            }
            // The pass is over: what it sent goes out before the loop waits, and before a quiet fdatasync below;
            // then what it committed goes to the node.
            self.flush_outbox();
            self.hand_over_committed().await;
            // Nothing else waits for the loop now (a message, a proposal, a sync): a follower's lone batch may be made
            // durable on this thread.
            let waiting = anything_waiting(&inbound, &proposals, &barriers);
            if let Err(fault) = self.flush_appends_or_here(waiting).await {
                return self.stop(fault);
            }
            debug_assert!(self.outbox.is_empty(), "the loop waits with messages held back");
            node_first = !node_first;
            barriers_first = !barriers_first;
            let node_waits = !proposals.is_empty() || !barriers.is_empty();
            let barriers_lead = barriers_first && !barriers.is_empty();
            let event = tokio::select! {
                biased;
                _ = stop.changed() => return,
                Some(result) = next_durable(&mut self.durability) => match result {
                    Ok(zxid) => {
                        tracing::trace!(target: LATENCY, server = self.me.0, zxid = zxid.0, "durable");
                        // Whether anything arrived while that batch was made durable: if so, the loop is busy,
                        // and the next batch goes to the writer thread.
                        self.quiet.durable(anything_waiting(&inbound, &proposals, &barriers));
                        self.log.pending.forget_through(zxid);
                        Event::Persisted(zxid)
                    }
                    Err(source) => {
                        let zxid = self.log.zxids.back().copied().unwrap_or(Zxid::ZERO);
                        return self.stop(LocalFault::Wal { op: "make durable up to", zxid, source });
                    }
                },
                done = self.epochs.next() => match done {
                    Ok((generation, update)) if generation == self.generation => update.event(),
                    // Asked for by the peer before it started over: the new one did not ask.
                    Ok(_) => continue,
                    Err(fault) => return self.stop(fault),
                },
                _ = ticker.tick() => {
                    self.log.trim();
                    Event::Tick(self.started.elapsed())
                }
                Some((culprit, why)) = misbehaved.recv() => {
                    tracing::warn!(server = self.me.0, peer = culprit.0, why, "dropping the link to the peer");
                    self.transport.disconnect(culprit);
                    continue;
                }
                Some(first) = inbound.recv(), if !(node_first && node_waits) => {
                    // Take what else has arrived too, so that its appends go to the WAL as one batch; counted
                    // in messages, not events, so that a stream of forwarded requests (no event) cannot keep
                    // the loop from its other inputs.
                    let (mut next, mut taken) = (Some(first), 1);
                    while let Some(inbound_message) = next.take() {
                        if let Some(event) = self.inbound_event(inbound_message) {
                            self.events.push_back(event);
                        }
                        if taken < MAX_EVENTS_AT_ONCE {
                            next = inbound.try_recv().ok();
                            taken += 1;
                        }
                    }
                    continue;
                }
                Some(first) = proposals.recv(), if !barriers_lead => {
                    // Take the proposals waiting behind it too: their appends go to the WAL as one batch.
                    let mut next = Some(first);
                    while let Some((txn, reply)) = next.take() {
                        self.pending_proposal.push_back(reply);
                        self.events.push_back(Event::Propose(txn));
                        if self.events.len() < MAX_EVENTS_AT_ONCE {
                            next = proposals.try_recv().ok();
                        }
                    }
                    continue;
                }
                Some(first) = barriers.recv() => {
                    let mut waiting = vec![first];
                    while waiting.len() < MAX_EVENTS_AT_ONCE {
                        let Ok(next) = barriers.try_recv() else { break };
                        waiting.push(next);
                    }
                    self.next_barrier += 1;
                    let id = BarrierId(self.next_barrier);
                    self.barriers.insert(id, waiting);
                    Event::Barrier(id)
                }
                else => return,
            };
            self.events.push_back(event);
        }
    }

    /// Hands what the peer sent so far to the transport: at the end of each pass of the loop, and before
    /// anything that must come after it (a stream, a disconnect) or that waits.
    pub(super) fn flush_outbox(&mut self) {
        self.outbox.flush(&*self.transport);
    }

    /// The event an inbound message makes for the peer; `None` for a forwarded request, handed to the node.
    fn inbound_event(&self, inbound: Inbound) -> Option<Event> {
        Some(match inbound {
            Inbound::Message(from, Message::Forward { data }) => {
                if let Err(why) = self.hand_over(from, data) {
                    tracing::warn!(server = self.me.0, peer = from.0, why, "dropping the peer");
                    self.transport.disconnect(from);
                }
                return None;
            }
            Inbound::Message(from, m) => {
                let seen = match &m {
                    Message::Proposal { zxid, .. } => Some(("proposal", zxid)),
                    Message::Ack { zxid } => Some(("ack", zxid)),
                    Message::Commit { zxid } => Some(("commit", zxid)),
                    _ => None,
                };
                if let Some((kind, zxid)) = seen {
                    tracing::trace!(target: LATENCY, server = self.me.0, peer = from.0, zxid = zxid.0, kind, "received");
                }
                Event::Message(from, m)
            }
            Inbound::Disconnected(peer) => Event::Disconnected(peer),
            Inbound::Connected(peer) => Event::Connected(peer),
        })
    }

    /// Hands a forwarded payload to the node, with its share of the sender's budget; refuses (never waits: the
    /// node's pipeline may itself wait on this loop) when the queue or the sender's budget is full.
    fn hand_over(&self, from: ServerId, data: Bytes) -> Result<(), &'static str> {
        let (budget, size) = self.forward_budgets.get(&from).ok_or("a forward from an unknown peer")?;
        // A payload larger than the whole budget still passes when none of the peer's is held.
        let weight = budget_permits(data.len() + super::FORWARD_ENTRY_WEIGHT).min(*size);
        let share = budget
            .clone()
            .try_acquire_many_owned(weight)
            .map_err(|_| "the peer's forwarded requests are over its budget of bytes")?;
        let forwarded = Forwarded { from, data, share: ForwardShare(share) };
        match self.forwarded_tx.try_send(forwarded) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err("forwarded requests queue full"),
        }
    }

    /// A fault of this server's: never go on as if the failed write had worked (dropping the server closes
    /// its connections, and the node stops with it).
    fn stop(&self, fault: LocalFault) {
        tracing::error!(server = self.me.0, %fault, "fatal: stopping this server");
    }
}

/// Whether a peer's message, a proposal or a sync waits for the loop: if so, the loop is not quiet.
fn anything_waiting<T, U>(
    inbound: &InboundReceiver,
    proposals: &mpsc::Receiver<T>,
    barriers: &mpsc::Receiver<U>,
) -> bool {
    !inbound.is_empty() || !proposals.is_empty() || !barriers.is_empty()
}

/// Messages (or proposals) taken from a channel at once at most before they are handled.
const MAX_EVENTS_AT_ONCE: usize = 256;

/// Waits for the oldest append in flight; `None` when there is none (so that `select!` skips it).
pub(super) async fn next_durable(durability: &mut VecDeque<Durability>) -> Option<Result<Zxid, WalError>> {
    let first = durability.front_mut()?;
    let result = first.await;
    durability.pop_front();
    // Everything that became durable with it completes too: report only the newest.
    let mut last = result;
    while let Some(next) = durability.front_mut() {
        match futures_util::FutureExt::now_or_never(next.as_mut()) {
            Some(r) => {
                durability.pop_front();
                last = r;
            }
            None => break,
        }
    }
    Some(last)
}
