//! `ensemble import`: Apache ZooKeeper's data (the newest valid snapshot and the logs after it, as ZooKeeper
//! itself recovers) into an Ensemble data directory that serves the same tree and continues its zxids.
//!
//! What it writes is what a follower holds after installing a snapshot from its leader (`snapshot::transfer`):
//! one consistent snapshot at the last zxid, a WAL restarted after that zxid (its base file says where the log
//! begins), and the epochs at least those of the zxid and of ZooKeeper's own epoch files. So a server started
//! on it recovers the tree, an election sees its zxid, and peers sync it by DIFF, TRUNC or SNAP as any other.
//!
//! ```text
//!  <dataLogDir>/log/      WAL restarted after the last zxid        written to log.importing/, renamed first
//!  <dataLogDir>/epochs    accepted and current epoch               written in place (tmp + rename)
//!  <dataDir>/snapshots/   snapshot.<last zxid>                     written to snapshots.importing/, renamed last
//! ```
//!
//! Until the last rename, a server refuses to start (a restarted log with no snapshot is `NoTrustedSnapshot`),
//! so an interrupted import is never served as an empty tree; a rerun clears what the interrupted one staged.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use wal::{Epoch, Wal, WalOptions, Zxid};
use zkdata::restore::{self, Restored, Sources};

use super::{clear_staging, commit, hex, move_all_aside, rates, refuse, sync_dir, taken};
use crate::tools::{progress, Out, Outcome, ToolError};

/// `ensemble import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// ZooKeeper's dataDir, or its `version-2` directory: the snapshots (and the logs, unless
    /// --from-zookeeper-log-dir). Default: dataDir of --config.
    #[arg(long = "from-zookeeper", value_name = "ZK_DATA_DIR")]
    from: Option<PathBuf>,
    /// ZooKeeper's dataLogDir (or its `version-2`), where it differs from its dataDir. Default: --from-zookeeper,
    /// or dataLogDir of --config.
    #[arg(long = "from-zookeeper-log-dir", value_name = "ZK_DATA_LOG_DIR")]
    from_log: Option<PathBuf>,
    /// The Ensemble dataDir to write.
    #[arg(long, value_name = "DATA_DIR", required_unless_present = "config", conflicts_with = "config")]
    to: Option<PathBuf>,
    /// The Ensemble dataLogDir, where it differs from --to.
    #[arg(long, value_name = "DIR", requires = "to")]
    data_log_dir: Option<PathBuf>,
    /// The zoo.cfg the server will run with: its dataDir and dataLogDir (and jute.maxbuffer) are used.
    #[arg(long, value_name = "ZOO_CFG")]
    config: Option<PathBuf>,
    /// Move Ensemble data already in the target aside (`<name>.before-import-<time>`) instead of refusing.
    #[arg(long)]
    force: bool,
    /// One JSON document as the summary.
    #[arg(long)]
    json: bool,
}

/// Where to read and where to write.
struct Plan {
    sources: Sources,
    snap_dir: PathBuf,
    log_dir: PathBuf,
    /// Where the epochs file goes (the server's dataLogDir).
    epochs_dir: PathBuf,
    max_len: u64,
}

fn plan(args: &ImportArgs) -> Result<Plan, ToolError> {
    let config = match &args.config {
        Some(path) => {
            Some(node::config::Config::load(path).map_err(|e| ToolError::Usage(format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    let (data_dir, data_log_dir, max_len) = match (&config, &args.to) {
        (Some(c), _) => {
            (c.data_dir.clone(), c.data_log_dir.clone(), (c.jute_max_buffer + c.jute_max_buffer_extra) as u64)
        }
        (None, Some(to)) => {
            (to.clone(), args.data_log_dir.clone().unwrap_or_else(|| to.clone()), zkdata::DEFAULT_MAX_LEN)
        }
        (None, None) => return Err(ToolError::Usage("--to or --config is required".into())),
    };
    let from = args.from.clone().or_else(|| config.as_ref().map(|c| c.data_dir.clone()));
    let from = from.ok_or_else(|| ToolError::Usage("--from-zookeeper is required without --config".into()))?;
    let from_log = args.from_log.clone().or_else(|| match (&args.from, &config) {
        (None, Some(c)) => Some(c.data_log_dir.clone()),
        _ => None,
    });
    let snap_dir = zkdata::files::version_dir(&from);
    let sources =
        Sources { log_dir: from_log.map_or_else(|| snap_dir.clone(), |d| zkdata::files::version_dir(&d)), snap_dir };
    Ok(Plan {
        sources,
        snap_dir: data_dir.join("snapshots"),
        log_dir: data_log_dir.join("log"),
        epochs_dir: data_log_dir,
        max_len,
    })
}

/// Runs `ensemble import`.
pub fn run(args: ImportArgs) -> Result<Outcome, ToolError> {
    let started = Instant::now();
    let plan = plan(&args)?;
    for dir in [&plan.sources.snap_dir, &plan.sources.log_dir] {
        if !dir.is_dir() {
            return Err(ToolError::Usage(format!("{} is not a directory", dir.display())));
        }
    }
    let epochs_file = plan.epochs_dir.join("epochs");
    // A repair mark (replication's `repairing`) vouches for the old log: it goes with it.
    let repair_mark = plan.epochs_dir.join("repairing");
    // Refused before the long read; moved aside only once ZooKeeper's data read whole.
    let taken = taken(&[&plan.snap_dir, &plan.log_dir, &epochs_file, &repair_mark], args.force, "before-import")?;
    let total = restore::input_size(&plan.sources).map_err(|e| ToolError::Usage(e.to_string()))?;
    let bar = progress(total, "reading ZooKeeper's files");
    let mut read = 0;
    let restored = restore::restore(&plan.sources, plan.max_len, &mut |n| {
        read += n;
        bar.inc(n);
    });
    bar.finish_and_clear();
    let restored = match restored {
        Ok(restored) => restored,
        Err(error) => return refuse(&error, args.json),
    };
    for reason in &restored.skipped {
        eprintln!("ensemble: skipped a snapshot, as ZooKeeper would: {reason}");
    }
    let summary = Summary { read, ..summary(&restored) };
    let (accepted, current) = epochs(&restored)?;
    let moved = move_all_aside(&taken, "before-import")?;
    let read_done = started.elapsed();
    write(&plan, restored, accepted, current)?;
    let write_done = started.elapsed();
    let (nodes, digest) = verify(&plan, summary.last_zxid)?;
    let phases = json!({
        "read": read_done.as_secs_f64(),
        "write": (write_done - read_done).as_secs_f64(),
        "verify": (started.elapsed() - write_done).as_secs_f64(),
    });
    if (nodes, digest) != (summary.nodes, summary.digest) {
        return Err(ToolError::Usage(format!(
            "the written data reads back as {nodes} nodes, digest {digest:#x}; expected {} nodes, digest {:#x}",
            summary.nodes, summary.digest
        )));
    }
    report(&args, &plan, &summary, (accepted, current), &moved, started, phases)
}

/// What is reported once the tree moved into the writer.
struct Summary {
    snapshot: PathBuf,
    snapshot_zxid: i64,
    skipped: Vec<String>,
    logs: Vec<PathBuf>,
    replayed: u64,
    digests_checked: u64,
    last_zxid: i64,
    nodes: usize,
    sessions: usize,
    digest: u64,
    bytes: u64,
    /// Bytes of ZooKeeper's files read (compressed, as on disk).
    read: u64,
}

fn summary(r: &Restored) -> Summary {
    Summary {
        snapshot: r.snapshot.clone(),
        snapshot_zxid: r.snapshot_zxid,
        skipped: r.skipped.clone(),
        logs: r.logs.clone(),
        replayed: r.replayed,
        digests_checked: r.digests_checked,
        last_zxid: r.tree.last_zxid(),
        nodes: r.tree.node_count(),
        sessions: r.tree.sessions().len(),
        digest: r.tree.digest(),
        bytes: r.tree.approximate_data_size(),
        read: 0,
    }
}

/// The epochs to start with: at least the last zxid's, and ZooKeeper's own (a peer may have accepted a newer
/// epoch than it logged a txn in).
fn epochs(r: &Restored) -> Result<(Epoch, Epoch), ToolError> {
    let epoch = |v: i64, what: &str| {
        u32::try_from(v).map(Epoch).map_err(|_| ToolError::Usage(format!("ZooKeeper's {what} {v} is not an epoch")))
    };
    let of_zxid = epoch(r.tree.last_zxid() >> 32, "last zxid's epoch")?;
    let current = epoch(r.current_epoch.unwrap_or(0), "currentEpoch")?.max(of_zxid);
    let accepted = epoch(r.accepted_epoch.unwrap_or(0), "acceptedEpoch")?.max(current);
    Ok((accepted, current))
}

/// Writes the WAL, the epochs and the snapshot, each staged and renamed into place (the snapshot last).
fn write(plan: &Plan, restored: Restored, accepted: Epoch, current: Epoch) -> Result<(), ToolError> {
    let zxid = restored.tree.last_zxid();
    let staged_log = PathBuf::from(format!("{}.importing", plan.log_dir.display()));
    let staged_snap = PathBuf::from(format!("{}.importing", plan.snap_dir.display()));
    for dir in [&staged_log, &staged_snap] {
        clear_staging(dir)?;
        std::fs::create_dir_all(dir).map_err(ToolError::io(format!("create {}", dir.display())))?;
    }
    let info = snapshot::write::write_fuzzy(
        &staged_snap,
        &snapshot::write::SharedTree::new(restored.tree),
        snapshot::write::DEFAULT_CHUNK,
    )?;
    // Nothing applied to the private copy while it was written: a consistent snapshot at the last zxid.
    assert_eq!((info.start_zxid, info.end_zxid), (zxid, zxid), "a private tree's snapshot is consistent");
    {
        let (wal, _) = Wal::open(&staged_log, WalOptions::default())?;
        if zxid > 0 {
            wal.restart_after(Zxid(u64::try_from(zxid).unwrap_or(0)))?.wait()?;
        }
    }
    commit(&staged_log, &plan.log_dir)?;
    replication::write_epochs(&plan.epochs_dir, accepted, current)
        .map_err(|e| ToolError::io(format!("write the epochs: {} {}", e.op, e.path.display()))(e.source))?;
    commit(&staged_snap, &plan.snap_dir)
}

/// Recovers the written directory as the server will, returning its node count and digest.
fn verify(plan: &Plan, zxid: i64) -> Result<(usize, u64), ToolError> {
    let (wal, _) = Wal::open(&plan.log_dir, WalOptions::default())?;
    let (tree, recovered) = snapshot::recover::recover_until(&plan.snap_dir, &wal, None)?;
    if recovered.last_zxid != zxid || tree.last_zxid() != zxid {
        return Err(ToolError::Usage(format!("the written data recovers to {:#x}, not {zxid:#x}", tree.last_zxid())));
    }
    sync_dir(&plan.snap_dir)?;
    Ok((tree.node_count(), tree.digest()))
}

fn report(
    args: &ImportArgs,
    plan: &Plan,
    s: &Summary,
    (accepted, current): (Epoch, Epoch),
    moved: &[PathBuf],
    started: Instant,
    phases: serde_json::Value,
) -> Result<Outcome, ToolError> {
    let speed = rates(s.nodes as u64, s.bytes, started.elapsed());
    let paths = |ps: &[PathBuf]| ps.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    let mut out = Out::new();
    if args.json {
        out.json(&json!({
            "ok": true,
            "from": { "snapshots": plan.sources.snap_dir.display().to_string(), "logs": plan.sources.log_dir.display().to_string() },
            "snapshot": s.snapshot.display().to_string(),
            "snapshot_zxid": hex(s.snapshot_zxid),
            "skipped": s.skipped,
            "logs": paths(&s.logs),
            "txns_replayed": s.replayed,
            "digests_checked": s.digests_checked,
            "last_zxid": hex(s.last_zxid),
            "nodes": s.nodes,
            "sessions": s.sessions,
            "digest": format!("{:x}", s.digest),
            "data_bytes": s.bytes,
            "input_bytes": s.read,
            "epochs": { "accepted": accepted.0, "current": current.0 },
            "to": { "snapshots": plan.snap_dir.display().to_string(), "log": plan.log_dir.display().to_string() },
            "moved_aside": paths(moved),
            "rate": speed,
            "phase_seconds": phases,
        }))?;
    } else {
        out.line(format_args!(
            "read {} and {} log(s) after it: {} txns replayed, {} digests checked",
            s.snapshot.display(),
            s.logs.len(),
            s.replayed,
            s.digests_checked
        ))?;
        out.line(format_args!(
            "imported {} znodes, {} sessions, last zxid {}, digest {:x}, epochs {}/{}",
            s.nodes,
            s.sessions,
            hex(s.last_zxid),
            s.digest,
            accepted.0,
            current.0
        ))?;
        out.line(format_args!(
            "wrote {} and {}; start the server with the same zoo.cfg (and myid)",
            plan.snap_dir.display(),
            plan.log_dir.display()
        ))?;
        out.line(format_args!(
            "{} s, {} znodes/s, {} MB/s",
            speed["seconds"], speed["znodes_per_second"], speed["mb_per_second"]
        ))?;
    }
    out.flush()?;
    Ok(Outcome::Sound)
}
