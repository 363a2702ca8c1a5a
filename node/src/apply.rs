//! The applier: committed txns, in zxid order, into the tree; then the watch events they fire and the replies
//! their clients wait for; and a fuzzy snapshot now and then.
//!
//! It runs as a task on the server's runtime: applying one txn holds the tree's write lock for microseconds
//! (a snapshot's read-lock holds are as short), and a thread of its own cost a cross-thread wake-up per batch
//! of commits, 20-60 us on a VM, on every write's path. The slow work, rebuilding the tree after a TRUNC, runs
//! in `block_in_place`; snapshots run on threads of their own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use replication::runtime::Committed;
use snapshot::policy::SnapPolicy;
use snapshot::retain::Retention;
use tokio::sync::mpsc;
use tree::code::op;
use tree::path;
use tree::tree::Applied;
use tree::txn::{Txn, TxnRecord};
use wal::Wal;

use crate::reply;
use crate::shared::{Out, Shared};
use crate::watch::Change;
use crate::{digest, LATENCY};

/// Where snapshots go and how many to keep.
pub struct SnapshotSettings {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Which snapshots are kept (and the WAL they need), and which of them verified already.
    pub retention: Arc<Mutex<Retention>>,
    /// When to take one.
    pub policy: SnapPolicy,
}

/// Why the applier stopped: the server cannot go on serving (its supervisor halts it).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A committed txn does not decode. Every replica holds the same bytes, so going on would serve a tree that
    /// differs from the committed history.
    #[error("the committed txn {zxid} does not decode: {error}")]
    Undecodable {
        /// The txn.
        zxid: wal::Zxid,
        /// Why.
        error: tree::jute::JuteError,
    },
    /// The tree could not be rebuilt from this server's disk after a sync replaced its log.
    #[error("cannot rebuild the tree after a sync: {0}")]
    Rebuild(#[from] snapshot::SnapshotError),
}

/// Applies committed txns until the stream ends (the replication runtime stopped).
pub async fn run(
    shared: Arc<Shared>,
    wal: Arc<Wal>,
    mut committed: mpsc::UnboundedReceiver<Committed>,
    mut snaps: SnapshotSettings,
) -> Result<(), ApplyError> {
    let snapshotting = Arc::new(AtomicBool::new(false));
    // The last zxid applied and not yet published on `shared.applied`, and how many txns it covers: publishing
    // wakes every sync and the leader's pipeline, so it is done once per burst of commits (when none is waiting
    // behind the last one), or every `PUBLISH_EVERY` txns in a long burst. Each txn consumes a unit of tokio's
    // cooperative budget, as a `recv` per txn did, so that the tasks it wakes (the replies' connections) run.
    let mut unpublished: Option<(i64, usize)> = None;
    while let Some(item) = committed.recv().await {
        match item {
            // The share goes back to the runtime once the whole batch is applied.
            Committed::Txns(txns, _share) => {
                let last = txns.last().map(|&(zxid, _)| zxid);
                for (zxid, txn) in txns {
                    let record = TxnRecord::decode(&txn).map_err(|error| ApplyError::Undecodable { zxid, error })?;
                    if heavy(&record.txn) {
                        tokio::task::block_in_place(|| apply_one(&shared, zxid.0 as i64, record));
                    } else {
                        apply_one(&shared, zxid.0 as i64, record);
                    }
                    let count = unpublished.map_or(0, |(_, count)| count) + 1;
                    unpublished = Some((zxid.0 as i64, count));
                    if count >= PUBLISH_EVERY || (Some(zxid) == last && committed.is_empty()) {
                        shared.applied.send_replace(zxid.0 as i64);
                        unpublished = None;
                    }
                    if snaps.policy.txn_applied() {
                        if snapshotting.swap(true, Ordering::AcqRel) {
                            // As ZooKeeper's "Too busy to snap, skipping": the next threshold takes one.
                            tracing::info!(%zxid, "a snapshot is still being written: skipping this one");
                        } else {
                            spawn_snapshot(&shared, &wal, &snaps, &snapshotting);
                        }
                        // Always: a policy left running would never ask for a snapshot again (the log would grow
                        // without bound, and a restart would replay all of it).
                        snaps.policy.finished();
                    }
                    tokio::task::coop::consume_budget().await;
                }
            }
            Committed::Rebuild(zxid) => {
                // Answer what was applied before the rebuild, which may take seconds.
                if let Some((applied, _)) = unpublished.take() {
                    shared.applied.send_replace(applied);
                }
                tracing::warn!(%zxid, "a sync replaced the log (a cut, or a snapshot from the leader): rebuilding the tree");
                let rebuilt =
                    tokio::task::block_in_place(|| snapshot::recover::recover_until(&snaps.dir, &wal, Some(zxid)))?;
                let (tree, recovered) = rebuilt;
                *snapshot::write::lock_for_apply(&shared.tree) = tree;
                shared.applied.send_replace(recovered.last_zxid);
            }
        }
    }
    if let Some((applied, _)) = unpublished {
        shared.applied.send_replace(applied);
    }
    Ok(())
}

/// Txns applied at most before the applied zxid is published, in a burst that keeps the applier busy.
const PUBLISH_EVERY: usize = 64;

/// Whether applying `txn` may take long (a closeSession deletes every ephemeral of its session, any number of
/// them; a multi has up to a frame's worth of ops): such a txn is applied off the runtime's threads, so that
/// heartbeats and client connections go on meanwhile.
fn heavy(txn: &Txn) -> bool {
    match txn {
        Txn::CloseSession { .. } => true,
        Txn::Multi(ops) => ops.len() > 64,
        _ => false,
    }
}

/// Takes a fuzzy snapshot on a thread of its own. A panic there fails the server (with the reason) rather than
/// leave it without snapshots for good.
fn spawn_snapshot(shared: &Arc<Shared>, wal: &Arc<Wal>, snaps: &SnapshotSettings, busy: &Arc<AtomicBool>) {
    let (shared, wal, dir, busy) = (shared.clone(), wal.clone(), snaps.dir.clone(), busy.clone());
    let retention = snaps.retention.clone();
    std::thread::spawn(move || {
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            take_snapshot(&shared, &wal, &dir, &retention);
        }));
        if taken.is_err() {
            shared.fail("the snapshot writer panicked (see the log above)".to_owned());
        }
        busy.store(false, Ordering::Release);
    });
}

/// Attempts at a snapshot when one is abandoned for spanning an unlisted closeSession (such closes are rare:
/// each needs a session with tens of thousands of ephemerals).
const SNAPSHOT_ATTEMPTS: usize = 3;

fn take_snapshot(shared: &Shared, wal: &Wal, dir: &std::path::Path, retention: &Mutex<Retention>) {
    for attempt in 1..=SNAPSHOT_ATTEMPTS {
        let started = std::time::Instant::now();
        match snapshot::write::write_fuzzy(dir, &shared.tree, 1024) {
            Ok(info) => {
                crate::shared::lock(retention).written(&info);
                shared.stats.instruments.snapshot(started.elapsed(), info.bytes);
                tracing::info!(?info, "snapshot written");
                break;
            }
            Err(error @ snapshot::SnapshotError::Unreplayable { .. }) if attempt < SNAPSHOT_ATTEMPTS => {
                tracing::info!(%error, attempt, "snapshot abandoned: taking it again");
            }
            Err(error) if disk_failure(&error) => return shared.fail(format!("snapshot: {error}")),
            Err(error) => {
                tracing::error!(%error, "snapshot failed (the WAL still holds everything; retrying at the next one)");
                return;
            }
        }
    }
    match crate::shared::lock(retention).run(dir, wal) {
        Ok(retained) => tracing::debug!(?retained, "retention"),
        Err(error) if disk_failure(&error) => shared.fail(format!("snapshot retention: {error}")),
        Err(error) => tracing::warn!(%error, "snapshot retention failed"),
    }
}

/// A failure of this server's disk, which stops it as the WAL's do: after a failed fsync (of a file or of the
/// directory a snapshot was renamed in) a later one may report success for data that was lost, and retention
/// would then purge log segments on the word of a snapshot that may not survive a power loss.
fn disk_failure(error: &snapshot::SnapshotError) -> bool {
    matches!(error, snapshot::SnapshotError::Io { .. } | snapshot::SnapshotError::Wal(_))
}

/// Applies one txn, fires its watches and queues its reply, all under the tree's write lock. The caller
/// publishes the applied zxid.
pub fn apply_one(shared: &Shared, zxid: i64, record: TxnRecord) {
    let TxnRecord { mut header, mut txn } = record;
    header.zxid = zxid;
    tracing::trace!(target: LATENCY, session = header.client_id, cxid = header.cxid, zxid, "applying");
    let mut fired = Vec::new();
    {
        let mut tree = snapshot::write::lock_for_apply(&shared.tree);
        // The txn's data goes into the tree; the txn keeps what the watches and the reply need.
        let applied = tree.apply_moving_data(&header, &mut txn);
        let mut watches = shared.watches();
        changes(header.op, &txn, &applied, &mut |change| watches.trigger(change, &mut fired));
        drop(watches);
        let conns = shared.conns();
        for (session, event_type, path) in fired.drain(..) {
            if let Some(conn) = conns.get(&session) {
                conn.send(Out::Event(reply::event(event_type, &path)));
            }
        }
        if let Some(conn) = conns.get(&header.client_id) {
            reply_to(conn, zxid, header.cxid, header.op, &txn, &applied);
        }
        if digest::sampled(zxid) {
            check_digest(shared, zxid, tree.digest());
        }
        if zxid % crate::shared::DIGEST_LOG_INTERVAL == 0 {
            let mut log = crate::shared::lock(&shared.digest_log);
            log.push_back((zxid, tree.digest()));
            if log.len() > crate::shared::DIGEST_LOG_LIMIT {
                log.pop_front();
            }
        }
    }
    // ZooKeeper's `commit_count` counts the commits a leader sends (`Leader.commit`); a standalone server has none.
    if !shared.standalone && shared.leading.load(Ordering::Acquire) {
        shared.stats.instruments.commit_count.inc();
    }
    tracing::trace!(target: LATENCY, zxid, "applied");
}

/// Sends the leader's sample to the followers, or compares a follower's with the leader's.
fn check_digest(shared: &Shared, zxid: i64, digest: u64) {
    if shared.leading.load(std::sync::atomic::Ordering::Acquire) {
        let _ = shared.digests_out.send((zxid, digest));
        return;
    }
    if let Err(diverged) = crate::shared::lock(&shared.digests).ours(zxid, digest) {
        tracing::error!(%diverged, "stopping: this server's tree differs from the leader's");
        shared.halt(diverged.to_string());
    }
}

fn reply_to(conn: &crate::shared::ConnHandle, zxid: i64, cxid: i32, txn_op: i32, txn: &Txn, applied: &Applied) {
    match txn_op {
        op::CREATE_SESSION => conn.send(Out::SessionCreated),
        op::CLOSE_SESSION => {
            conn.send(Out::Reply {
                cxid,
                frame: reply::frame(cxid, zxid, tree::code::Code::Ok, &proto::records::Response::Empty),
            });
            conn.send(Out::Close);
        }
        _ => {
            // An error txn does not keep the client's op; its reply has no body, so any op does.
            let request_op = if txn_op == op::ERROR { op::DELETE } else { txn_op };
            let (code, response) = reply::write_reply(request_op, txn, applied);
            conn.send(Out::Reply { cxid, frame: reply::frame(cxid, zxid, code, &response) });
        }
    }
}

/// Calls `f` with each change a successfully applied txn made, in ZooKeeper's order.
fn changes(txn_op: i32, txn: &Txn, applied: &Applied, f: &mut impl FnMut(Change<'_>)) {
    if applied.err.is_some() && txn_op != op::MULTI {
        return;
    }
    match txn {
        Txn::Create { path, .. } | Txn::CreateContainer { path, .. } | Txn::CreateTtl { path, .. } => {
            f(Change::Created(path));
            f(Change::ChildrenChanged(path::parent(path)));
        }
        Txn::Delete { path } => {
            f(Change::Deleted(path));
            f(Change::ChildrenChanged(path::parent(path)));
        }
        Txn::SetData { path, .. } => f(Change::DataChanged(path)),
        // What the close deleted, listed in its txn or not (a txn for a session with very many ephemerals names
        // none of them).
        Txn::CloseSession { .. } => {
            for path in &applied.deleted {
                f(Change::Deleted(path));
                f(Change::ChildrenChanged(path::parent(path)));
            }
        }
        Txn::Multi(ops) if applied.err.is_none() => {
            for ((sub, sub_txn), sub_applied) in ops.iter().zip(&applied.multi) {
                changes(*sub, sub_txn, sub_applied, f);
            }
        }
        _ => {}
    }
}
