//! One simulated server: its disk (a `SimFs` that loses power), and, while it runs, the real runtime on it
//! (`replication::runtime::start_with_io`) with the WAL opened as the node opens it (replayed whole into the
//! state machine at start; a damaged log cut before the damage and the server marked repairing), in the stepped
//! mode: its writes and fdatasyncs happen when the simulation steps the disk, so that a power cut can fall
//! between an append and its durability.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use replication::message::ServerId;
use replication::monitor::{Monitor, SyncKind};
use replication::peer::{PeerConfig, Role};
use replication::runtime::{start_with_io, Blocking, Committed, Handle, Io, RuntimeConfig};
use replication::transport::SendQueues;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wal::fs::{FileSystem, Fs, SimFs};
use wal::{Epoch, Wal, WalError, WalOptions, Zxid};

use super::machine::{Machine, SNAP};
use super::net::Net;

/// The data directory (epochs, repair mark) and the log's.
pub const DATA: &str = "/data";
pub const LOG: &str = "/data/log";

/// Tiny segments, so that the log rolls often.
pub fn wal_options() -> WalOptions {
    WalOptions { segment_size: 1024, max_payload: 256, zero_fill: false, ..WalOptions::default() }
}

/// What a server applied (see [`Machine`]), shared with the task that consumes its committed stream.
pub type Applied = Arc<Mutex<Machine>>;

struct Running {
    handle: Handle,
    consumer: AbortHandle,
    wal: Weak<Wal>,
}

pub struct SimServer {
    pub id: ServerId,
    pub fs: SimFs,
    incarnation: u64,
    running: Option<Running>,
    pub applied: Applied,
    /// Logs found damaged at start and repaired from the peers.
    pub repairs: usize,
    /// The syncs it led, by kind.
    pub syncs: Arc<Syncs>,
    /// Its log was damaged while it was down: it finds out at its next start.
    damaged: bool,
}

/// Syncs a leader started, by kind: the runs must exercise SNAP, not only DIFF and TRUNC.
#[derive(Debug, Default)]
pub struct Syncs {
    pub diff: AtomicUsize,
    pub trunc: AtomicUsize,
    pub snap: AtomicUsize,
}

impl Monitor for Syncs {
    fn syncing(&self, how: SyncKind) {
        let counter = match how {
            SyncKind::Diff => &self.diff,
            SyncKind::Trunc => &self.trunc,
            SyncKind::Snap => &self.snap,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl SimServer {
    /// A server with an empty disk holding its data directory.
    pub fn new(id: ServerId) -> SimServer {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new(SNAP)).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.sync_dir(Path::new(DATA)).unwrap();
        let applied = Arc::new(Mutex::new(Machine::empty()));
        SimServer {
            id,
            fs,
            incarnation: 0,
            running: None,
            applied,
            repairs: 0,
            syncs: Default::default(),
            damaged: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn handle(&self) -> Option<&Handle> {
        self.running.as_ref().map(|r| &r.handle)
    }

    /// Its role and whether it serves (`Looking`, false while down).
    pub fn role(&self) -> (Role, bool) {
        self.handle().map_or((Role::Looking, false), |h| *h.role.borrow())
    }

    /// The current epoch on its disk; `None` once its power went off.
    pub fn current_epoch(&self) -> Option<Epoch> {
        match replication::read_epochs_with(&self.fs, Path::new(DATA)) {
            Ok((_, current)) => Some(current),
            Err(_) if self.fs.is_off() => None,
            Err(error) => panic!("{:?}: the epochs file does not read: {error}", self.id),
        }
    }

    /// Starts the runtime on the disk as it is.
    pub fn start(&mut self, net: &Net, peer: PeerConfig) {
        assert!(self.running.is_none(), "{:?} is running already", self.id);
        self.incarnation += 1;
        self.damaged = false;
        let fs: Fs = Arc::new(self.fs.clone());
        let wal = self.open_wal(&fs);
        // As the node does: the tree is rebuilt from the snapshots and the whole durable log after them,
        // committed or not; a sync confirms or cuts it (TRUNC, then `Committed::Rebuild`) before the server serves.
        let (wal, machine) = self.rebuild(&fs, wal);
        self.applied = Arc::new(Mutex::new(machine));
        let wal = Arc::new(wal);
        let (transport, inbound) = net.plug(self.id, self.incarnation, self.fs.clone());
        let peers = peer.voters.iter().filter(|&p| p != self.id).collect();
        let config = RuntimeConfig {
            peer,
            dir: DATA.into(),
            snapshots: Some(SNAP.into()),
            peers,
            forwarded_bytes: 1 << 20,
            monitor: self.syncs.clone(),
            // A stepped WAL has no writer thread, and a current-thread runtime no second worker: off either way.
            quiet_appends_here: false,
        };
        let io = Io {
            fs,
            transport: std::sync::Arc::new(transport),
            inbound,
            send_queues: SendQueues::default(),
            blocking: Blocking::Inline,
        };
        let (handle, streams) = start_with_io(config, wal.clone(), io).expect("the runtime starts");
        let node = Node { fs: self.fs.clone(), wal: wal.clone(), applied: self.applied.clone() };
        let consumer = tokio::spawn(node.consume(streams.committed)).abort_handle();
        self.running = Some(Running { handle, consumer, wal: Arc::downgrade(&wal) });
    }

    /// Rebuilds the tree; when the snapshots and the log that are left cannot make one (a damaged log was cut
    /// behind a snapshot), marks the server repairing, vouching for how far they reached, and starts it empty
    /// (the node's `repair::recover`, which moves the two aside).
    fn rebuild(&mut self, fs: &Fs, wal: Wal) -> (Wal, Machine) {
        let error = match Machine::recover(&**fs, &wal, None) {
            Ok(machine) => return (wal, machine),
            Err(error) => error,
        };
        assert!(damaged(&error), "{:?}: the tree does not rebuild from the disk: {error}", self.id);
        let newest =
            snapshot::dir::list_with(&**fs, Path::new(SNAP)).unwrap().first().map(|&(z, _)| Zxid(z.max(0) as u64));
        let vouched = wal.last_zxid().max(wal.base()).max(newest).unwrap_or(Zxid::ZERO);
        drop(wal);
        replication::repairing::mark_with(&**fs, Path::new(DATA), vouched).expect("mark");
        for dir in [LOG, SNAP] {
            fs.remove_dir_all(Path::new(dir)).expect("move aside");
        }
        fs.create_dir_all(Path::new(SNAP)).unwrap();
        fs.sync_dir(Path::new(DATA)).unwrap();
        let wal = self.open_wal(fs);
        let machine = Machine::recover(&**fs, &wal, None).expect("an empty tree");
        (wal, machine)
    }

    /// Opens the log; a damaged one is cut before the damage and the server marked repairing, vouching for how
    /// far its log reached (the node's `repair::open_wal`).
    fn open_wal(&mut self, fs: &Fs) -> Wal {
        match Wal::open_stepped(fs.clone(), LOG, wal_options()) {
            Ok((wal, _)) => wal,
            Err(WalError::Corruption { .. }) => {
                let repaired =
                    wal::repair_with(&**fs, Path::new(LOG), &wal_options()).expect("repair").expect("damage");
                let vouched = repaired.last_readable_zxid.unwrap_or(Zxid(u64::MAX));
                replication::repairing::mark_with(&**fs, Path::new(DATA), vouched).expect("mark");
                self.repairs += 1;
                Wal::open_stepped(fs.clone(), LOG, wal_options()).expect("the repaired log opens").0
            }
            Err(error) => panic!("{:?}: the log does not open: {error}", self.id),
        }
    }

    /// Snapshots the tree and purges behind (retention), if it runs.
    pub fn snapshot(&self) {
        if let Some(wal) = self.running.as_ref().and_then(|r| r.wal.upgrade()) {
            // A failure is the disk's (its power went off): the simulation notices that on its own.
            let _ = self.applied.lock().unwrap().snapshot_and_retain(&self.fs, &wal);
        }
    }

    /// Does the log's queued writes and fdatasyncs (see [`Wal::open_stepped`]).
    pub fn step_disk(&self) {
        if let Some(wal) = self.running.as_ref().and_then(|r| r.wal.upgrade()) {
            wal.step();
        }
    }

    /// Cuts the power after `steps` more IO steps of this disk, whatever they are (between a write and its
    /// fsync, a rename and the directory's fsync...); the server notices as its IO fails, the simulation when
    /// [`SimServer::lost_power`] says so.
    pub fn arm_power_cut(&self, steps: u64, seed: u64) {
        self.fs.crash_after(self.fs.steps() + steps, seed);
    }

    /// Whether it is marked repairing (its log lost a damaged part, and it has not synced since), or will be
    /// at its next start (its log was damaged while it was down).
    pub fn repairing(&self) -> bool {
        // A disk whose power went off (the simulation has not taken the server down yet) reads as it will after.
        let disk = self.fs.crashed().unwrap_or_else(|| self.fs.clone());
        self.damaged || replication::repairing::read_with(&disk, Path::new(DATA)).expect("the mark reads").is_some()
    }

    /// Damages a durable record of its log while it is down (see [`super::damage::damage`]).
    pub fn damage(&mut self, rng: &mut rand::rngs::StdRng) -> Option<Zxid> {
        assert!(self.running.is_none(), "{:?}: damage a running server's disk", self.id);
        let damaged = super::damage::damage(&self.fs, rng);
        self.damaged |= damaged.is_some();
        damaged
    }

    /// Whether it runs on a disk whose power went off.
    pub fn lost_power(&self) -> bool {
        self.running.is_some() && self.fs.is_off()
    }

    /// Stops the server at once. With `power_cut`, the disk keeps only what was made durable (and, by that seed,
    /// some of the rest); without, everything written stays (a process crash: the page cache survives), unless
    /// an armed cut went off already.
    pub async fn crash(&mut self, net: &Net, power_cut: Option<u64>) {
        let Some(running) = self.running.take() else { return };
        running.handle.abort();
        running.consumer.abort();
        net.unplug(self.id);
        if let Some(after_cut) = self.fs.crashed() {
            self.fs = after_cut;
            return;
        }
        match power_cut {
            Some(seed) => self.fs = self.fs.crash_now(seed),
            None => {
                // Disarm a cut armed for this run: the next one starts on a disk that keeps its power.
                self.fs.crash_after(u64::MAX, 0);
                // The aborted task lets go of the log (and its lock) the next time the runtime gets to it.
                for _ in 0..100 {
                    if running.wal.strong_count() == 0 {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
                panic!("{:?}: the crashed runtime still holds its log", self.id);
            }
        }
    }
}

/// Whether recovery failed because of what is on disk (the node's `repair::damaged`).
fn damaged(error: &snapshot::SnapshotError) -> bool {
    use snapshot::SnapshotError as E;
    !matches!(error, E::Io { .. } | E::UnsupportedVersion { .. } | E::Transfer(_) | E::Wal(_))
}

/// The node's side of the committed stream.
struct Node {
    fs: SimFs,
    wal: Arc<Wal>,
    applied: Applied,
}

impl Node {
    /// Applies each txn; on `Rebuild`, rebuilds the tree from the disk up to its zxid (`node/src/apply.rs`).
    async fn consume(self, mut committed: mpsc::UnboundedReceiver<Committed>) {
        while let Some(c) = committed.recv().await {
            let mut machine = self.applied.lock().unwrap();
            match c {
                Committed::Txns(txns, _) => txns.iter().for_each(|(zxid, txn)| machine.apply(*zxid, txn)),
                Committed::Rebuild(zxid) => match Machine::recover(&self.fs, &self.wal, Some(zxid)) {
                    Ok(rebuilt) => *machine = rebuilt,
                    // The disk's power went off (the simulation notices), or the rebuild is wrong.
                    Err(e) if self.fs.is_off() => drop(e),
                    Err(e) => {
                        machine.violation.get_or_insert(format!("the rebuild up to {zxid} failed: {e}"));
                    }
                },
            }
        }
    }
}
