//! The runtime that drives a [`Peer`] with real IO: the WAL, the epoch file, the TCP transport and a clock.
//!
//! One tokio task owns the peer and does what its actions say: appends go to the WAL (their durability comes
//! back as [`Event::Persisted`], one event for everything that became durable together), epochs are written to
//! a small file by a thread of their own before the peer hears they are durable, txn streams for
//! syncing followers are read from the WAL (or from memory for txns not durable yet), and applied zxids are
//! published. The caller proposes txns through the [`Handle`] and learns when each is committed.
//!
//! The node above reads two streams ([`Streams`]): every committed txn, in zxid order, with its bytes, in batches (and a
//! [`Committed::Rebuild`] when a sync cut txns it had already been given at start-up, or installed a snapshot
//! from the leader, so it must rebuild its tree from disk), and the [`Message::Forward`] payloads other servers sent (client requests a follower forwards to its
//! leader, and the leader's answers). Both are bounded. The committed stream pushes back on this loop; forwarded
//! payloads that find their queue full drop the sending peer's connection (it re-syncs) rather than block the
//! loop, because the node's request pipeline itself waits on this loop.
//!
//! Errors say whose fault they are ([`crate::fault`]): this server's (its disk) stop the runtime, and the
//! node with it; another server's drop the link to it and restart the peer from what is on disk (the peer may
//! have moved on as if the failed action had been done), so this server re-elects and re-syncs. Disk work
//! that may block (epoch fsyncs, the chunks of a snapshot from the leader, staging and installing it) runs
//! off the runtime's worker threads.
//!
//! All of that IO goes through [`Io`]: production's ([`start_with_wal`]) or a simulation's ([`start_with_io`]),
//! which runs this same code on a simulated disk and network (`tests/t60_simulation.rs`). The clock is tokio's
//! (`tokio::time`), which is the system's in production and a paused, auto-advancing one in a simulation.
//!
//! [`Peer`]: crate::peer::Peer
//! [`Event::Persisted`]: crate::peer::Event::Persisted
//! [`Message::Forward`]: crate::message::Message::Forward

mod act;
mod appends;
mod held;
mod io;
mod log;
mod outbox;
mod quiet;
mod server;
mod snap;

use held::Held;

pub use io::{Blocking, Io};

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use wal::{Wal, WalError, Zxid};

use crate::broadcast::ProposeError;
use crate::epochs::EpochWriter;
use crate::message::{Message, ServerId};
use crate::monitor::Monitor;
use crate::peer::{DurableState, Learners, PeerConfig, Role};
use crate::transport::{budget_permits, SendQueues, TcpTransport, Transport, TransportConfig};
use crate::LATENCY;

use log::Log;
use quiet::QuietAppends;
use server::{Inputs, Server};

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The peer could not propose it.
    #[error(transparent)]
    Rejected(#[from] ProposeError),
    /// Leadership changed before it committed; it may or may not be committed later.
    #[error("leadership changed before the txn committed")]
    Abandoned,
}

/// What the node applies, in order.
#[derive(Debug)]
pub enum Committed {
    /// These txns are committed, each with its zxid and its bytes as proposed, in zxid order (one to
    /// [`COMMITTED_BATCH`] of them): apply them. One channel send per burst of commits, not per txn. The share
    /// is the batch's weight in the stream's budget: drop it once the txns are applied.
    Txns(Vec<(Zxid, Bytes)>, CommittedShare),
    /// Rebuild the tree from the snapshots and the log up to this zxid: the log was cut after it, and txns
    /// after it that were applied at start-up (the whole durable log is replayed then) were never committed;
    /// or a snapshot of the history up to it was installed from the leader, and the log restarted after it.
    Rebuild(Zxid),
}

/// A batch of committed txns' share of the committed stream's budget ([`COMMITTED_BYTES`]), given back when
/// dropped.
#[derive(Debug)]
pub struct CommittedShare(#[allow(dead_code)] OwnedSemaphorePermit);

/// The streams a node consumes.
pub struct Streams {
    /// Committed txns, in zxid order. The channel has no bound of its own: the batches' shares bound it
    /// ([`COMMITTED_BYTES`]), and a [`Committed::Rebuild`] follows a sync, one at a time.
    pub committed: mpsc::UnboundedReceiver<Committed>,
    /// `Forward` payloads from other servers.
    pub forwarded: mpsc::Receiver<Forwarded>,
}

/// A `Forward` payload from another server.
#[derive(Debug)]
pub struct Forwarded {
    /// The server that sent it.
    pub from: ServerId,
    /// What it sent.
    pub data: Bytes,
    /// Its share of the sender's forwarded-bytes budget ([`crate::transport::TransportConfig::forwarded_bytes`]):
    /// the node keeps it with whatever it made of the payload until it is done with that, and drops it then.
    pub share: ForwardShare,
}

/// A forwarded payload's share of its sender's budget, given back when dropped.
#[derive(Debug)]
pub struct ForwardShare(#[allow(dead_code)] OwnedSemaphorePermit);

/// What a forwarded payload weighs in its sender's budget beside its bytes: the queue entries that hold it on its
/// way (this runtime's stream to the node, the node's pipeline) and the fixed part of what the node decodes it
/// into. Without it a peer could queue millions of payloads of a few bytes each (syncs) within its budget. (A
/// decoded request can still weigh a few times its bytes, a multi of many tiny ops say, and a sync waits for its
/// answer in a task of its own: the budget bounds the memory to that multiple.)
pub const FORWARD_ENTRY_WEIGHT: usize = 256;

/// Where a forwarded payload goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardTo {
    /// The current leader (dropped when there is none, or this server leads).
    Leader,
    /// One server.
    Peer(ServerId),
}

/// What tells a submitted txn's submitter its fate.
pub type Reply = oneshot::Sender<Result<Zxid, CommitError>>;

pub use quiet::{QUIET_BATCH, SLOW_COOLDOWN, SLOW_HERE, SLOW_HERE_ALONE};

/// Bound of each stream to the node.
const STREAM_BOUND: usize = 4096;

/// Committed txns in one item of the committed stream at most.
pub const COMMITTED_BATCH: usize = 64;

/// Bytes of committed txns handed to the node and not yet applied at most, each weighing its bytes plus
/// [`COMMITTED_TXN_WEIGHT`]: the loop waits for the node past it. A bound in bytes rather than in items, so that
/// neither items of one txn each (a quiet follower's passes commit one txn at a time) leave the loop little slack
/// behind a long apply, nor items of large txns hold many times the memory of small ones. (About 200,000 small
/// txns: a closeSession of many ephemerals, applied for half a second, does not stall the loop.)
pub const COMMITTED_BYTES: usize = 64 << 20;

/// What a committed txn weighs in [`COMMITTED_BYTES`] beside its bytes: its slot in a batch, its buffer's
/// header, the record it decodes into.
pub const COMMITTED_TXN_WEIGHT: usize = 192;

/// One item of the committed stream weighs this much at most, unless it is a single txn: a batch's share is
/// taken whole, so it stays a small part of the budget.
const COMMITTED_ITEM_BYTES: usize = 1 << 20;

/// What a leader knows of its learners, for monitoring (`mntr`): published after every step of the peer; the
/// default (nothing) on a server that does not lead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnerView {
    /// The learners connected, and which of them are synced.
    pub learners: Learners,
    /// When this server began to lead and serve (ZooKeeper's `Leader.getUptime` counts from there); `None`
    /// unless it does.
    pub leading_since: Option<Instant>,
}

/// A running server's handle.
#[derive(Clone)]
pub struct Handle {
    proposals: mpsc::Sender<(Bytes, Reply)>,
    barriers: mpsc::Sender<oneshot::Sender<bool>>,
    forwards: Forwards,
    misbehaved: mpsc::Sender<(ServerId, &'static str)>,
    /// The last zxid applied.
    pub applied: watch::Receiver<Zxid>,
    /// The peer's role and whether it serves.
    pub role: watch::Receiver<(Role, bool)>,
    /// The leader's view of its learners.
    pub learners: watch::Receiver<LearnerView>,
    /// The bytes queued for each peer.
    pub send_queues: SendQueues,
    shutdown: Arc<watch::Sender<bool>>,
    /// The server's task (`None`: a [`Handle::detached`] one).
    task: Option<AbortHandle>,
}

/// Where a handle's forwarded payloads go.
#[derive(Clone)]
enum Forwards {
    /// Straight to the server's transport, not through its loop (which would only relay them: a wake-up less
    /// for every request a follower forwards); `me` names this server in the logs.
    Transport { me: ServerId, transport: Arc<dyn Transport> },
    /// To a test playing the server ([`Handle::detached`]).
    Detached(mpsc::Sender<(ForwardTo, Bytes)>),
}

/// The server's ends of a [`Handle::detached`]: a test plays the server with them.
pub struct Detached {
    /// Each txn submitted, with what tells its submitter its fate (dropped: the txn is abandoned).
    pub proposals: mpsc::Receiver<(Bytes, Reply)>,
    /// Each `confirm_leadership`, to answer.
    pub barriers: mpsc::Receiver<oneshot::Sender<bool>>,
    /// Each payload forwarded.
    pub forwards: mpsc::Receiver<(ForwardTo, Bytes)>,
    /// The last zxid applied, as the handle shows it.
    pub applied: watch::Sender<Zxid>,
    /// The role, as the handle shows it.
    pub role: watch::Sender<(Role, bool)>,
}

impl Handle {
    /// A handle with no server behind it, showing `role`, and the ends that play the server: for tests of what
    /// runs above a server (the node's request pipeline).
    pub fn detached(role: (Role, bool)) -> (Handle, Detached) {
        let (proposals_tx, proposals) = mpsc::channel(STREAM_BOUND);
        let (barriers_tx, barriers) = mpsc::channel(STREAM_BOUND);
        let (forwards_tx, forwards) = mpsc::channel(STREAM_BOUND);
        let (applied_tx, applied) = watch::channel(Zxid::ZERO);
        let (role_tx, role) = watch::channel(role);
        let handle = Handle {
            proposals: proposals_tx,
            barriers: barriers_tx,
            forwards: Forwards::Detached(forwards_tx),
            misbehaved: mpsc::channel(1).0,
            applied,
            role,
            learners: watch::channel(LearnerView::default()).1,
            send_queues: SendQueues::default(),
            shutdown: Arc::new(watch::channel(false).0),
            task: None,
        };
        (handle, Detached { proposals, barriers, forwards, applied: applied_tx, role: role_tx })
    }

    /// Stops the server (its connections close; its WAL stays as it is on disk).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops the server at once, wherever its task waits, as a crash would (a simulation's; the disk is left
    /// exactly as the last write left it). The task is dropped the next time the runtime gets to it.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Proposes a txn (on the leader) and waits until it is committed.
    pub async fn propose(&self, txn: Bytes) -> Result<Zxid, CommitError> {
        self.submit(txn).await?.await.map_err(|_| CommitError::Abandoned)?
    }

    /// Queues a txn for proposal and returns at once with what will tell its fate: txns queued one after
    /// another are proposed in that order.
    pub async fn submit(&self, txn: Bytes) -> Result<oneshot::Receiver<Result<Zxid, CommitError>>, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.proposals.send((txn, tx)).await.map_err(|_| CommitError::Abandoned)?;
        Ok(rx)
    }

    /// Whether this server still leads: true once a quorum of voters (this one included) answered a heartbeat
    /// sent after the call, false when it does not lead and serve or stops before (see [`crate::barrier`]). A
    /// leader answers a `sync` only after this, so that the sync's reads see every write completed before it.
    pub async fn confirm_leadership(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.barriers.send(tx).await.is_ok() && rx.await.unwrap_or(false)
    }

    /// Drops the link to `peer`, which sent what the node above cannot use (a forwarded payload that does not
    /// decode, say): its fault, logged with `why`; it reconnects and re-syncs. Best effort: a report that finds
    /// the queue full is dropped (others like it are queued).
    pub fn drop_peer(&self, peer: ServerId, why: &'static str) {
        let _ = self.misbehaved.try_send((peer, why));
    }

    /// Sends `data` to another server as a [`Message::Forward`]; best effort (dropped with no connection, or
    /// to the leader when this server follows none). The transport queues it without waiting, bounded in bytes
    /// per peer: a peer that does not read loses its link.
    ///
    /// [`Message::Forward`]: crate::message::Message::Forward
    pub async fn forward(&self, to: ForwardTo, data: Bytes) {
        match &self.forwards {
            Forwards::Transport { me, transport } => {
                let to = match (to, self.role.borrow().0) {
                    (ForwardTo::Peer(id), _) => id,
                    (ForwardTo::Leader, Role::Following(leader)) => leader,
                    (ForwardTo::Leader, _) => return,
                };
                tracing::trace!(target: LATENCY, server = me.0, "forwarding");
                let _ = transport.send(to, Message::Forward { data });
            }
            Forwards::Detached(forwards) => {
                let _ = forwards.send((to, data)).await;
            }
        }
    }
}

/// Where and how a server runs.
pub struct ServerConfig {
    /// The protocol settings.
    pub peer: PeerConfig,
    /// The peer port, already bound.
    pub listener: TcpListener,
    /// Every voter's peer address.
    pub peers: BTreeMap<ServerId, SocketAddr>,
    /// The data directory: `log/` for the WAL, `epochs` for the two epochs.
    pub dir: PathBuf,
    /// WAL options.
    pub wal: wal::WalOptions,
    /// The snapshot directory, for SNAP sync both ways (`None`: a follower that needs a snapshot is dropped,
    /// and a snapshot from the leader is an error).
    pub snapshots: Option<PathBuf>,
    /// The peer connections' settings (the frame bound must hold the largest txn the node proposes).
    pub transport: TransportConfig,
    /// Told of elections and syncs, for the metrics (`Arc::new(())` ignores them).
    pub monitor: Arc<dyn Monitor>,
    /// Whether a follower may make a lone batch durable on its own loop's thread while the loop is quiet
    /// ([`RuntimeConfig::quiet_appends_here`]).
    pub quiet_appends_here: bool,
}

/// What a server needs besides its IO (see [`start_with_io`]).
pub struct RuntimeConfig {
    /// The protocol settings.
    pub peer: PeerConfig,
    /// The data directory: `epochs` and the repair mark (the WAL is the caller's).
    pub dir: PathBuf,
    /// The snapshot directory, for SNAP sync both ways (see [`ServerConfig::snapshots`]).
    pub snapshots: Option<PathBuf>,
    /// Every other server, observers too: each gets a budget of forwarded bytes.
    pub peers: Vec<ServerId>,
    /// Each peer's budget of forwarded bytes ([`TransportConfig::forwarded_bytes`]).
    pub forwarded_bytes: usize,
    /// Told of elections and syncs.
    pub monitor: Arc<dyn Monitor>,
    /// Whether a follower may write and fsync a batch of at most [`QUIET_BATCH`] proposals on its loop's own
    /// thread, not the WAL's writer thread, when the loop is quiet: nothing but that batch waits for it, and
    /// nothing arrived while the batch before it was made durable. Leader/follower group commit, as the WAL's
    /// `append_sync` does for threads: a lone write's critical path then crosses two thread wake-ups fewer (the
    /// writer's, and the runtime's on the completion), and a server at low load spends a fifth less CPU per write
    /// (BENCHMARKS.md). The loop is blocked for that fdatasync, which is why it is done only when quiet, only by
    /// a follower (a leader's own proposals would wait behind it on their way to the followers), and only on a
    /// multi-thread runtime. With two workers or more, the others go on serving clients meanwhile; with one
    /// (`TOKIO_WORKER_THREADS=1`, servers sharing cores), the clients wait one fdatasync at most, which a lone
    /// write waits anyway, and a batch counts as slow sooner ([`SLOW_HERE_ALONE`]). An fdatasync that stalls
    /// stalls the loop with it: past `syncLimit`, the follower gives up on its leader when the call returns (and
    /// rejoins), where with the writer thread it would go on answering pings without acking. So after one batch
    /// slower than [`SLOW_HERE`] (or [`SLOW_HERE_ALONE`]) there, the next ones go to the writer thread for
    /// [`SLOW_COOLDOWN`]: a disk that keeps stalling blocks the loop once, not at every lone write. Production
    /// turns it on (`ENSEMBLE_QUIET_APPENDS_HERE=0` turns it off); a simulation's WAL has no writer thread, so
    /// it changes nothing there.
    pub quiet_appends_here: bool,
}

type Durability = Pin<Box<dyn Future<Output = Result<Zxid, WalError>> + Send>>;

/// Starts a server with its WAL at `dir/log`; returns its handle and streams. The server runs until the
/// runtime shuts down or a fatal error.
pub fn start(config: ServerConfig) -> Result<(Handle, Streams), WalError> {
    wal::create_dir_durably(&config.dir)?;
    let (wal, _) = Wal::open(config.dir.join("log"), config.wal.clone())?;
    start_with_wal(config, Arc::new(wal))
}

/// Starts a server on a WAL the caller opened (and replayed into its tree: the committed stream starts after
/// the WAL's last zxid), with the real IO ([`Io::tcp`]).
pub fn start_with_wal(config: ServerConfig, wal: Arc<Wal>) -> Result<(Handle, Streams), WalError> {
    let forwarded_bytes = config.transport.forwarded_bytes;
    let peers = config.peers.keys().copied().collect();
    let (transport, inbound) = TcpTransport::start(config.peer.me, config.listener, config.peers, config.transport);
    let runtime = RuntimeConfig {
        peer: config.peer,
        dir: config.dir,
        snapshots: config.snapshots,
        peers,
        forwarded_bytes,
        monitor: config.monitor,
        quiet_appends_here: config.quiet_appends_here,
    };
    start_with_io(runtime, wal, Io::tcp(transport, inbound))
}

/// Starts a server on a WAL the caller opened, doing its IO through `io` (a simulation's disk, network and
/// inline blocking work; see [`Io`]). The WAL must be on `io.fs`.
pub fn start_with_io(config: RuntimeConfig, wal: Arc<Wal>, io: Io) -> Result<(Handle, Streams), WalError> {
    let Io { fs, transport, inbound, send_queues, blocking } = io;
    // A process that crashed may have renamed or removed the epochs file or the repair mark without the
    // directory fsync that makes it durable: the page cache shows it, the disk may not. Make what this start
    // reads durable before acting on it, so that a later power cut cannot take back a promise made from it.
    wal::sync_dir_with(&*fs, &config.dir)?;
    let (accepted, current) = crate::epochs::read_epochs_with(&*fs, &config.dir).map_err(|e| WalError::Io {
        op: "read epochs",
        path: e.path,
        source: e.source,
    })?;
    let zxids: VecDeque<Zxid> = wal.iter_from(Zxid::ZERO).map(|r| r.map(|r| r.zxid)).collect::<Result<_, _>>()?;
    let repairing = crate::repairing::read_with(&*fs, &config.dir).map_err(|e| WalError::Io {
        op: "read the repair mark",
        path: config.dir.join("repairing"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    let durable = DurableState {
        accepted_epoch: accepted,
        current_epoch: current,
        last_zxid: zxids.back().copied().or(wal.base()).unwrap_or(Zxid::ZERO),
        repairing,
    };
    let me = config.peer.me;
    if let Some(vouched) = repairing {
        tracing::warn!(server = me.0, %vouched, last_zxid = %durable.last_zxid, "repairing: this server's log lost a damaged part; it takes it from the leader, and elects as no candidate until then");
    }
    let log = Log { wal: wal.clone(), zxids, pending: Held::default() };
    let epochs = match blocking {
        Blocking::Threads => EpochWriter::start(fs.clone(), config.dir.clone(), (accepted, current))
            .map_err(|e| WalError::Io { op: "start the epochs writer", path: config.dir.clone(), source: e })?,
        Blocking::Inline => EpochWriter::inline(fs.clone(), config.dir.clone(), (accepted, current)),
    };
    let forward_budget = budget_permits(config.forwarded_bytes);
    let forward_budgets = config
        .peers
        .iter()
        .map(|&peer| (peer, (Arc::new(Semaphore::new(forward_budget as usize)), forward_budget)))
        .collect();
    let (proposals_tx, proposals) = mpsc::channel(1024);
    let (barriers_tx, barriers) = mpsc::channel(1024);
    let forwards = Forwards::Transport { me, transport: transport.clone() };
    let (misbehaved_tx, misbehaved) = mpsc::channel(64);
    let (committed_tx, committed) = mpsc::unbounded_channel();
    let (forwarded_tx, forwarded) = mpsc::channel(STREAM_BOUND);
    let (applied_tx, applied) = watch::channel(durable.last_zxid);
    let (role_tx, role) = watch::channel((Role::Looking, false));
    let (learners_tx, learners) = watch::channel(LearnerView::default());
    let now = tokio::time::Instant::now();
    let server = Server {
        me,
        wal,
        delivered: durable.last_zxid,
        undelivered: Held::default(),
        delivering: Vec::new(),
        committed_tx,
        committed_budget: Arc::new(Semaphore::new(COMMITTED_BYTES)),
        forwarded_tx,
        forward_budgets,
        snapshots: config.snapshots,
        incoming: None,
        transport,
        outbox: Default::default(),
        fs,
        blocking,
        log,
        durability: VecDeque::new(),
        staged: Vec::new(),
        quiet: QuietAppends::new(config.quiet_appends_here),
        delivered_since_flush: false,
        epochs,
        generation: 0,
        waiters: BTreeMap::new(),
        pending_proposal: VecDeque::new(),
        barriers: BTreeMap::new(),
        next_barrier: 0,
        events: VecDeque::new(),
        applied_tx,
        role_tx,
        learners_tx,
        started: now,
        looking_since: now,
        monitor: config.monitor,
        dir: config.dir.clone(),
    };
    let (shutdown, stop) = watch::channel(false);
    let inputs = Inputs { inbound, proposals, barriers, misbehaved, stop };
    let task = Some(tokio::spawn(server.run(config.peer, durable, inputs)).abort_handle());
    let handle = Handle {
        proposals: proposals_tx,
        barriers: barriers_tx,
        forwards,
        misbehaved: misbehaved_tx,
        applied,
        role,
        learners,
        send_queues,
        shutdown: Arc::new(shutdown),
        task,
    };
    Ok((handle, Streams { committed, forwarded }))
}
