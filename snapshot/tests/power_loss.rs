//! Power loss on a simulated disk ([`SimFs`]) under snapshots: a node logs txns, writes fuzzy snapshots, runs
//! retention (which deletes old snapshots and purges the WAL before them), gives up one transfer halfway and
//! restarts (recovery deletes it), receives a snapshot from its leader (SNAP: `Incoming` create, chunks, stage;
//! the WAL's `restart_after`; `install`), restarts (WAL open, `recover_with`, which runs `finish_installs`), and
//! goes on. The power is cut right after every IO step of that in turn, each cut resolved by several seeds
//! (which unsynced writes and directory entries survive); then the node recovers from what the disk kept, and:
//!
//! - its tree holds every txn the workload had been told was durable: a WAL append that completed, or the
//!   leader's snapshot once the WAL restarted after it (the protocol relies on the staged snapshot from then on);
//!   a snapshot write or a retention that returned Ok must not cost any of them;
//! - every snapshot whose write or install returned Ok is there and verifies (all but the newest two may be gone
//!   if a retention was under way);
//! - it holds nothing nobody wrote: its digest is the shared history's at its last zxid, and that zxid was
//!   handed to the disk;
//! - it takes the next snapshot.
//!
//! A second cut, at a step of that recovery, is checked the same way. Recovery never refuses here: every file
//! the protocol relies on is fsynced before its rename and its directory after, so a typed refusal (which names
//! the file) fails the test. The WAL's own refusal of a torn last segment (unsynced pages that reached the disk
//! out of order, see `wal/tests/power_loss.rs`) is repaired as the WAL test does, and counted.
//!
//! `SNAPSHOT_POWER_LOSS_SEEDS=N` sets the seeds per crash point (default 2).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{request, txn};
use snapshot::transfer::{self, Incoming};
use snapshot::write::SharedTree;
use tree::tree::DataTree;
use tree::txn::TxnRecord;
use wal::fs::{FileSystem, SimFs};
use wal::{Wal, WalError, WalOptions, Zxid};

const NODE: &str = "/node";
const LOG: &str = "/node/log";
const SNAP: &str = "/node/snap";
/// The node logs txns up to here itself, then falls behind.
const NODE_LOGS: i64 = 60;
/// The leader's snapshot the node installs: the txns after [`NODE_LOGS`] up to here reach it only that way.
const INSTALL_AT: i64 = 80;
/// The last txn of the shared history.
const LAST: i64 = 95;
/// Snapshots retention keeps.
const KEEP: usize = 2;
/// Bytes per transfer chunk: several chunks, so that a cut can land between them.
const CHUNK: usize = 700;

fn seeds() -> u64 {
    std::env::var("SNAPSHOT_POWER_LOSS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2)
}

/// A disk holding the node's durable directories.
fn fresh_disk() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(SNAP)).unwrap();
    fs.sync_dir(Path::new(NODE)).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

/// Tiny segments (a few txns each) so that retention purges some; no spare segments, so that a run does the
/// same IO steps every time (the WAL's own power-loss test covers spares).
fn options() -> WalOptions {
    WalOptions { segment_size: 1024, max_payload: 512, zero_fill: false, ..WalOptions::default() }
}

/// The one history the ensemble commits: txn `z` is `records[z - 1]`.
struct History {
    records: Vec<TxnRecord>,
    /// The tree digest after each zxid (0: the empty tree).
    digests: BTreeMap<i64, u64>,
    /// The leader's consistent snapshot at [`INSTALL_AT`], as it ships it.
    snapshot: Vec<u8>,
}

impl History {
    fn new() -> History {
        let mut tree = DataTree::new();
        let mut digests = BTreeMap::from([(tree.last_zxid(), tree.digest())]);
        let mut records = Vec::new();
        for zxid in 1..=LAST {
            let (session, request) = request(usize::try_from(zxid).unwrap());
            let record = txn(&tree, zxid, session, &request);
            tree.apply(&record.header, &record.txn);
            digests.insert(zxid, tree.digest());
            records.push(record);
        }
        let snapshot = leader_snapshot(&records[..usize::try_from(INSTALL_AT).unwrap()]);
        History { records, digests, snapshot }
    }

    fn record(&self, zxid: i64) -> &TxnRecord {
        &self.records[usize::try_from(zxid - 1).unwrap()]
    }

    /// The tree after `zxid`, rebuilt from the records.
    fn tree_at(&self, zxid: i64) -> DataTree {
        let mut tree = DataTree::new();
        (1..=zxid).map(|z| self.record(z)).for_each(|r| drop(tree.apply(&r.header, &r.txn)));
        tree
    }
}

/// The snapshot a leader that logged `records` prepares for a follower (`transfer::prepare_with`, on a disk of
/// its own that never loses power).
fn leader_snapshot(records: &[TxnRecord]) -> Vec<u8> {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/leader/snap")).unwrap();
    let (wal, _) = Wal::open_with(Arc::new(fs.clone()), "/leader/log", options()).unwrap();
    let batch = records.iter().map(|r| (Zxid(r.header.zxid as u64), r.encode().into()));
    wal.append_batch(batch).unwrap().wait().unwrap();
    let at = Zxid(records.len() as u64);
    let prepared = transfer::prepare_with(&fs, Path::new("/leader/snap"), &wal, at).unwrap();
    let bytes = transfer::read_chunk(&*prepared.file, 0, usize::try_from(prepared.len).unwrap()).unwrap();
    assert_eq!(bytes.len() as u64, prepared.len);
    bytes
}

/// What the workload was told, as the node's runtime would be.
#[derive(Debug, Default)]
struct Model {
    /// Every txn up to here is acknowledged durable.
    acked: i64,
    /// The highest zxid handed to the disk in any form: the node may recover to anything up to here.
    issued: i64,
    /// The operations that completed, for failure messages.
    done: Vec<String>,
    /// WAL segments retention purged.
    purged: usize,
    /// The snapshots (start zxids) whose write or install returned Ok, less those a completed retention deleted.
    snapshots: BTreeSet<i64>,
    /// A retention was under way when the power went: it may have deleted all but the newest [`KEEP`].
    retaining: bool,
}

impl Model {
    /// The snapshots that must be on the disk, whole, after a cut.
    fn durable_snapshots(&self) -> Vec<i64> {
        let keep = if self.retaining { KEEP } else { usize::MAX };
        self.snapshots.iter().rev().take(keep).copied().collect()
    }
}

/// A node on the simulated disk.
struct Node<'a> {
    fs: &'a SimFs,
    wal: Option<Wal>,
    tree: SharedTree,
    history: &'a History,
    model: Model,
}

/// An operation failed: the power went (anything else fails the test).
struct Off;

impl<'a> Node<'a> {
    fn check<T, E: std::fmt::Display>(&mut self, what: String, result: Result<T, E>) -> Result<T, Off> {
        match result {
            Ok(value) => {
                self.model.done.push(what);
                Ok(value)
            }
            Err(error) => {
                assert!(self.fs.is_off(), "{what}: only the power cut fails it: {error}");
                Err(Off)
            }
        }
    }

    /// Logs `zxids` in batches of five, each acknowledged once its append completes, and applies them.
    fn log(&mut self, zxids: RangeInclusive<i64>) -> Result<(), Off> {
        let zxids: Vec<i64> = zxids.collect();
        for batch in zxids.chunks(5) {
            let last = *batch.last().unwrap();
            self.model.issued = self.model.issued.max(last);
            let records = batch.iter().map(|&z| (Zxid(z as u64), self.history.record(z).encode().into()));
            let appended = self.wal().append_batch(records).and_then(|p| p.wait());
            self.check(format!("log up to {last}"), appended)?;
            self.model.acked = last;
            let mut tree = self.tree.write().unwrap();
            batch.iter().map(|&z| self.history.record(z)).for_each(|r| drop(tree.apply(&r.header, &r.txn)));
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<(), Off> {
        let written = snapshot::write::write_fuzzy_with(self.fs, Path::new(SNAP), &self.tree, 4);
        let info = self.check("snapshot".into(), written)?;
        assert_eq!(info.end_zxid, self.model.acked);
        self.model.snapshots.insert(info.start_zxid);
        Ok(())
    }

    fn retain(&mut self) -> Result<(), Off> {
        self.model.retaining = true;
        let retained = snapshot::retain::retain_with(self.fs, Path::new(SNAP), self.wal(), KEEP);
        let retained = self.check("retain".into(), retained)?;
        self.model.retaining = false;
        self.model.purged += retained.wal_segments_purged;
        for deleted in &retained.deleted {
            let name = deleted.file_name().unwrap().to_string_lossy();
            self.model.snapshots.remove(&snapshot::format::parse_file_name(&name).unwrap());
        }
        Ok(())
    }

    /// A transfer the leader gave up on: one chunk received, then the node restarts (recovery deletes it).
    fn abandon_transfer(&mut self) -> Result<(), Off> {
        let created = Incoming::create_with(Arc::new(self.fs.clone()), Path::new(SNAP));
        let mut incoming = self.check("abandoned transfer create".into(), created)?;
        let written = incoming.write(0, &self.history.snapshot[..CHUNK]);
        self.check("abandoned transfer chunk".into(), written)?;
        drop(incoming);
        self.restart()
    }

    /// SNAP: receive the leader's snapshot, stage it, restart the WAL after it, install it.
    fn install(&mut self) -> Result<(), Off> {
        let zxid = Zxid(INSTALL_AT as u64);
        let created = Incoming::create_with(Arc::new(self.fs.clone()), Path::new(SNAP));
        let mut incoming = self.check("transfer create".into(), created)?;
        for (i, chunk) in self.history.snapshot.chunks(CHUNK).enumerate() {
            let written = incoming.write((i * CHUNK) as u64, chunk);
            self.check(format!("transfer chunk {i}"), written)?;
        }
        let staged = incoming.stage(zxid);
        self.check("transfer stage".into(), staged)?;
        self.model.issued = self.model.issued.max(INSTALL_AT);
        let restarted = self.wal().restart_after(zxid).and_then(|p| p.wait());
        self.check("restart the WAL".into(), restarted)?;
        self.model.acked = INSTALL_AT;
        let installed = transfer::install_with(self.fs, Path::new(SNAP), zxid);
        self.check("install".into(), installed)?;
        self.model.snapshots.insert(INSTALL_AT);
        *self.tree.write().unwrap() = self.history.tree_at(INSTALL_AT);
        Ok(())
    }

    /// Closes and reopens the WAL, then recovers the tree from the disk: what a restart does.
    fn restart(&mut self) -> Result<(), Off> {
        drop(self.wal.take());
        let opened = Wal::open_with(Arc::new(self.fs.clone()), LOG, options());
        self.wal = Some(self.check("reopen the WAL".into(), opened)?.0);
        let recovered = snapshot::recover::recover_with(self.fs, Path::new(SNAP), self.wal());
        let (tree, _) = self.check("recover".into(), recovered)?;
        assert_eq!(tree.digest(), self.tree.read().unwrap().digest(), "a clean restart recovers the same tree");
        Ok(())
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("open")
    }

    /// The workload; stops at the power cut.
    fn run(&mut self) -> Result<(), Off> {
        self.log(1..=20)?;
        self.snapshot()?;
        self.log(21..=40)?;
        self.snapshot()?;
        // Nothing to delete yet: the purge relies on the two snapshots alone being durable.
        self.retain()?;
        self.log(41..=50)?;
        self.snapshot()?;
        self.retain()?;
        self.log(51..=NODE_LOGS)?;
        self.abandon_transfer()?;
        self.install()?;
        self.restart()?;
        self.log(INSTALL_AT + 1..=90)?;
        self.snapshot()?;
        self.retain()?;
        self.log(91..=LAST)
    }
}

/// Runs the workload on `fs` (its power cut as armed) and returns what the node was told.
fn run(fs: &SimFs, history: &History) -> Model {
    let wal = match Wal::open_with(Arc::new(fs.clone()), LOG, options()) {
        Ok((wal, _)) => wal,
        Err(e) => {
            assert!(fs.is_off(), "open on a fresh disk: {e}");
            return Model::default();
        }
    };
    let mut node =
        Node { fs, wal: Some(wal), tree: SharedTree::new(DataTree::new()), history, model: Model::default() };
    let _ = node.run();
    node.model
}

#[derive(Debug, Default)]
struct Tally {
    cuts: u64,
    recovery_cuts: u64,
    /// The WAL refused a torn last segment and was repaired.
    wal_repairs: u64,
    /// Recoveries that completed an install the cut interrupted (`finish_installs`).
    installs_finished: u64,
}

/// Opens the WAL and recovers the tree from `fs`, as a node's start does. A WAL that refuses its torn last
/// segment is repaired first (the WAL's business, checked by its own test).
fn recover(fs: &SimFs, tally: &mut Tally) -> Result<(Wal, DataTree), String> {
    let handle: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let wal = match Wal::open_with(handle.clone(), LOG, options()) {
        Ok((wal, _)) => wal,
        Err(WalError::Corruption { .. }) => {
            tally.wal_repairs += 1;
            wal::repair_with(fs, Path::new(LOG), &options()).map_err(|e| format!("WAL repair: {e}"))?;
            Wal::open_with(handle, LOG, options()).map_err(|e| format!("WAL open after repair: {e}"))?.0
        }
        Err(e) => return Err(format!("WAL open: {e}")),
    };
    let staged = format!("install.{:016x}", INSTALL_AT);
    let transfer_area = fs.read_dir(&Path::new(SNAP).join("transfer")).unwrap_or_default();
    if wal.base() == Some(Zxid(INSTALL_AT as u64)) && transfer_area.contains(&staged) {
        tally.installs_finished += 1;
    }
    let (tree, _) = snapshot::recover::recover_with(fs, Path::new(SNAP), &wal).map_err(|e| format!("{e}"))?;
    Ok((wal, tree))
}

/// Checks that every snapshot the node was told is written is on `fs` and verifies: retention counts on it
/// before it purges the WAL, whether or not this recovery needs it.
fn check_snapshots(fs: &SimFs, model: &Model, context: &str) {
    let found: BTreeMap<i64, PathBuf> = snapshot::dir::list_with(fs, Path::new(SNAP)).unwrap().into_iter().collect();
    for zxid in model.durable_snapshots() {
        let path = found.get(&zxid).unwrap_or_else(|| panic!("{context}: snapshot {zxid:#x} is lost\n{model:?}"));
        snapshot::read::check_with(fs, path).unwrap_or_else(|e| panic!("{context}: {e}\n{model:?}"));
    }
}

/// Recovers from `fs` and checks the tree against what the node was told. Returns the IO steps recovery took.
fn recover_and_check(fs: &SimFs, history: &History, model: &Model, context: &str, tally: &mut Tally) -> u64 {
    check_snapshots(fs, model, context);
    let (wal, tree) = recover(fs, tally).unwrap_or_else(|e| panic!("{context}: recovery refused: {e}\n{model:?}"));
    let steps = fs.steps();
    let last = tree.last_zxid();
    assert!(last >= model.acked, "{context}: recovered to {last}, but {} was acknowledged\n{model:?}", model.acked);
    assert!(last <= model.issued, "{context}: recovered to {last}, but only {} was written\n{model:?}", model.issued);
    assert_eq!(
        Some(&tree.digest()),
        history.digests.get(&last),
        "{context}: the tree at {last} is not the history's\n{model:?}"
    );
    // The recovered node takes the next snapshot.
    let written = snapshot::write::write_fuzzy_with(fs, Path::new(SNAP), &SharedTree::new(tree), 4);
    written.unwrap_or_else(|e| panic!("{context}: snapshot after recovery: {e}"));
    drop(wal);
    steps
}

/// Cuts the power after step `step` with `seed`, recovers, checks; then cuts again during a recovery.
fn crash_at(step: u64, seed: u64, history: &History, tally: &mut Tally) {
    let fs = fresh_disk();
    fs.crash_after(fs.steps() + step, seed);
    let model = run(&fs, history);
    let after = |fs: &SimFs| fs.crashed().unwrap_or_else(|| fs.crash_now(seed));
    let context = format!("cut after step {step}, seed {seed}, after {:?}", model.done.last());
    let disk = after(&fs);
    let recovery_steps = recover_and_check(&disk, history, &model, &context, tally);
    tally.cuts += 1;
    if recovery_steps > 0 {
        let again = after(&fs);
        let at = 1 + seed % recovery_steps;
        again.crash_after(at, seed ^ 0x5eed);
        let _ = recover(&again, &mut Tally::default());
        let context = format!("{context}, cut again at recovery step {at}");
        let _ = recover_and_check(&after(&again), history, &model, &context, tally);
        tally.recovery_cuts += 1;
    }
}

#[test]
fn every_acknowledged_txn_survives_a_power_cut_at_every_io_step() {
    let history = History::new();
    let clean = fresh_disk();
    let setup = clean.steps();
    let model = run(&clean, &history);
    assert_eq!(model.acked, LAST, "the clean run completes: {model:?}");
    assert!(model.purged > 0, "retention purged WAL segments: {model:?}");
    let steps = clean.steps() - setup;
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    for step in 1..=steps + 2 {
        for seed in 0..seeds() {
            crash_at(step, step * 1000 + seed, &history, &mut tally);
        }
    }
    eprintln!(
        "snapshot power loss: {steps} IO steps in a clean run, {} seeds each: {} cuts checked, {} second cuts \
         during recovery, {} WAL repairs, {} interrupted installs finished, {:.1}s",
        seeds(),
        tally.cuts,
        tally.recovery_cuts,
        tally.wal_repairs,
        tally.installs_finished,
        started.elapsed().as_secs_f64()
    );
    assert!(tally.cuts >= steps * seeds());
    assert!(tally.installs_finished > 0, "some cut came between the WAL's restart and the install");
}

/// A process that died between creating the transfer directory and the fsync of its parent leaves a directory
/// the page cache shows and the disk may not hold. The next transfer must not take it as durable: once the WAL
/// restarted after the staged snapshot, a power cut that takes the directory takes the only copy of the history.
#[test]
fn a_transfer_directory_left_by_a_crashed_process_is_made_durable_before_the_wal_relies_on_it() {
    let history = History::new();
    for seed in 0..16 {
        let fs = fresh_disk();
        let (wal, _) = Wal::open_with(Arc::new(fs.clone()), LOG, options()).unwrap();
        let mut node =
            Node { fs: &fs, wal: Some(wal), tree: SharedTree::default(), history: &history, model: Model::default() };
        assert!(node.log(1..=NODE_LOGS).is_ok());
        fs.create_dir_all(&Path::new(SNAP).join("transfer")).unwrap();
        let mut incoming = Incoming::create_with(Arc::new(fs.clone()), Path::new(SNAP)).unwrap();
        for (i, chunk) in history.snapshot.chunks(CHUNK).enumerate() {
            incoming.write((i * CHUNK) as u64, chunk).unwrap();
        }
        incoming.stage(Zxid(INSTALL_AT as u64)).unwrap();
        node.wal().restart_after(Zxid(INSTALL_AT as u64)).unwrap().wait().unwrap();
        let model = Model { acked: INSTALL_AT, issued: INSTALL_AT, ..Model::default() };
        let disk = fs.crash_now(seed);
        let _ = recover_and_check(&disk, &history, &model, &format!("seed {seed}"), &mut Tally::default());
    }
}
