//! `ensemble export`: Ensemble's tree (recovered from its snapshots and WAL as the server recovers it) as an
//! Apache ZooKeeper 3.8 data directory: one snapshot at the last zxid, and the epoch files a quorum peer
//! checks against it, so that ZooKeeper started with the same zoo.cfg serves the same tree, standalone or in
//! a quorum.
//!
//! ```text
//!  <ZK dataDir>/version-2/snapshot.<last zxid>    the tree, its sessions and its digest (consistent, not fuzzy)
//!  <ZK dataDir>/version-2/acceptedEpoch           Ensemble's epochs (at least the last zxid's), decimal
//!  <ZK dataDir>/version-2/currentEpoch
//!  <ZK dataDir>/myid                              kept; written with --myid
//! ```
//!
//! `version-2` is written as `version-2.exporting` and renamed; one already there (ZooKeeper's data from before
//! an import, say) is refused, or with `--force` moved aside, as is ZooKeeper's dataLogDir's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::json;
use tree::tree::DataTree;
use wal::{Wal, WalOptions};
use zkdata::files::{self, ACCEPTED_EPOCH, CURRENT_EPOCH, VERSION_DIR};

use super::{clear_staging, commit, hex, move_all_aside, rates, refuse, sync_dir, taken};
use crate::tools::{Out, Outcome, ToolError};

/// `ensemble export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The Ensemble dataDir to read.
    #[arg(long, value_name = "DATA_DIR", required_unless_present = "config", conflicts_with = "config")]
    from: Option<PathBuf>,
    /// The Ensemble dataLogDir, where it differs from --from.
    #[arg(long, value_name = "DIR", requires = "from")]
    data_log_dir: Option<PathBuf>,
    /// The zoo.cfg the server ran with: its dataDir and dataLogDir are read, and ZooKeeper's files go to the
    /// same dataDir unless --to-zookeeper says otherwise.
    #[arg(long, value_name = "ZOO_CFG")]
    config: Option<PathBuf>,
    /// ZooKeeper's dataDir to write (`version-2/` is created in it), or that `version-2` directory.
    #[arg(long = "to-zookeeper", value_name = "ZK_DATA_DIR")]
    to: Option<PathBuf>,
    /// Write `myid` with this id in ZooKeeper's dataDir (refused if one with another id is there).
    #[arg(long)]
    myid: Option<u64>,
    /// Move a `version-2` already there aside (`version-2.before-export-<time>`) instead of refusing.
    #[arg(long)]
    force: bool,
    /// One JSON document as the summary.
    #[arg(long)]
    json: bool,
}

struct Plan {
    snap_dir: PathBuf,
    log_dir: PathBuf,
    /// ZooKeeper's dataDir (myid) and the version-2 directory to write.
    zk_data: PathBuf,
    zk_version: PathBuf,
    /// ZooKeeper's dataLogDir's version-2, if it is elsewhere: old logs there are moved aside with the rest.
    zk_log_version: Option<PathBuf>,
}

fn plan(args: &ExportArgs) -> Result<Plan, ToolError> {
    let config = match &args.config {
        Some(path) => {
            Some(node::config::Config::load(path).map_err(|e| ToolError::Usage(format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    let (data_dir, data_log_dir) = match (&config, &args.from) {
        (Some(c), _) => (c.data_dir.clone(), c.data_log_dir.clone()),
        (None, Some(from)) => (from.clone(), args.data_log_dir.clone().unwrap_or_else(|| from.clone())),
        (None, None) => return Err(ToolError::Usage("--from or --config is required".into())),
    };
    let to = args.to.clone().or_else(|| config.as_ref().map(|c| c.data_dir.clone()));
    let to = to.ok_or_else(|| ToolError::Usage("--to-zookeeper is required without --config".into()))?;
    let (zk_data, zk_version) = match to.file_name().is_some_and(|n| n == VERSION_DIR) {
        true => (super::parent(&to).to_path_buf(), to.clone()),
        false => (to.clone(), to.join(VERSION_DIR)),
    };
    let zk_log_version = config
        .as_ref()
        .filter(|c| args.to.is_none() && c.data_log_dir != c.data_dir)
        .map(|c| c.data_log_dir.join(VERSION_DIR));
    Ok(Plan {
        snap_dir: data_dir.join("snapshots"),
        log_dir: data_log_dir.clone(),
        zk_data,
        zk_version,
        zk_log_version,
    })
}

/// Runs `ensemble export`.
pub fn run(args: ExportArgs) -> Result<Outcome, ToolError> {
    let started = Instant::now();
    let plan = plan(&args)?;
    check_myid(&plan.zk_data, args.myid)?;
    let wal_dir = plan.log_dir.join("log");
    if !plan.snap_dir.is_dir() && !wal_dir.is_dir() {
        return Err(ToolError::Usage(format!(
            "no Ensemble data in {} or {}",
            plan.snap_dir.display(),
            wal_dir.display()
        )));
    }
    // Recovery as at start-up, less its clean-ups: the server must be stopped, and nothing is deleted here.
    let (wal, _) = Wal::open(&wal_dir, WalOptions::default())?;
    let (tree, recovered) = snapshot::recover::recover_until(&plan.snap_dir, &wal, None)?;
    drop(wal);
    let recovered_at = started.elapsed();
    let (accepted, current) = replication::read_epochs(&plan.log_dir)
        .map_err(|e| ToolError::io(format!("{} {}", e.op, e.path.display()))(e.source))?;
    let of_zxid = tree.last_zxid() >> 32;
    let (current, accepted) = (i64::from(current.0).max(of_zxid), i64::from(accepted.0).max(of_zxid));
    let mut targets = vec![plan.zk_version.as_path()];
    targets.extend(plan.zk_log_version.as_deref());
    // Refused now; moved aside only once the snapshot that replaces them is written and read back.
    let taken = taken(&targets, args.force, "before-export")?;
    let staged = PathBuf::from(format!("{}.exporting", plan.zk_version.display()));
    clear_staging(&staged)?;
    std::fs::create_dir_all(&staged).map_err(ToolError::io(format!("create {}", staged.display())))?;
    let bar = super::super::progress_items(tree.node_count() as u64, "writing ZooKeeper's snapshot", "znodes");
    let exported = zkdata::export::write_snapshot(&tree, &staged, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    let exported = match exported {
        Ok(exported) => exported,
        Err(error) => return refuse(&error, args.json),
    };
    let write_epochs = || -> Result<(), zkdata::ZkDataError> {
        files::write_decimal(&staged, ACCEPTED_EPOCH, accepted.max(current))?;
        files::write_decimal(&staged, CURRENT_EPOCH, current)?;
        files::sync_dir(&staged)
    };
    write_epochs().map_err(|e| ToolError::Usage(e.to_string()))?;
    let written_at = started.elapsed();
    verify(&tree, &exported.path)?;
    let moved = move_all_aside(&taken, "before-export")?;
    let phases = json!({
        "recover": recovered_at.as_secs_f64(),
        "write": (written_at - recovered_at).as_secs_f64(),
        "verify": (started.elapsed() - written_at).as_secs_f64(),
    });
    commit(&staged, &plan.zk_version)?;
    if let Some(id) = args.myid {
        std::fs::create_dir_all(&plan.zk_data).map_err(ToolError::io(format!("create {}", plan.zk_data.display())))?;
        files::write_decimal(&plan.zk_data, "myid", i64::try_from(id).unwrap_or(i64::MAX))
            .and_then(|()| files::sync_dir(&plan.zk_data))
            .map_err(|e| ToolError::Usage(e.to_string()))?;
    }
    sync_dir(&plan.zk_data)?;
    let snapshot = plan.zk_version.join(files::snapshot_name(exported.zxid));
    let speed = rates(exported.nodes, tree.approximate_data_size(), started.elapsed());
    let mut out = Out::new();
    if args.json {
        out.json(&json!({
            "ok": true,
            "from": { "snapshots": plan.snap_dir.display().to_string(), "log": wal_dir.display().to_string() },
            "ensemble_snapshot": recovered.snapshot.map(|p| p.display().to_string()),
            "txns_replayed": recovered.replayed,
            "snapshot": snapshot.display().to_string(),
            "last_zxid": hex(exported.zxid),
            "nodes": exported.nodes,
            "sessions": tree.sessions().len(),
            "digest": format!("{:x}", tree.digest()),
            "bytes": exported.bytes,
            "epochs": { "accepted": accepted.max(current), "current": current },
            "myid": args.myid,
            "moved_aside": moved.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "rate": speed,
            "phase_seconds": phases,
        }))?;
    } else {
        out.line(format_args!(
            "wrote {}: {} znodes, {} sessions, last zxid {}, {} bytes",
            snapshot.display(),
            exported.nodes,
            tree.sessions().len(),
            hex(exported.zxid),
            exported.bytes
        ))?;
        out.line(format_args!(
            "epochs {}/{}; start ZooKeeper with the same zoo.cfg (and myid)",
            accepted.max(current),
            current
        ))?;
        out.line(format_args!(
            "{} s, {} znodes/s, {} MB/s",
            speed["seconds"], speed["znodes_per_second"], speed["mb_per_second"]
        ))?;
    }
    out.flush()?;
    Ok(Outcome::Sound)
}

/// Refuses a `--myid` that contradicts the `myid` file already there.
fn check_myid(zk_data: &Path, myid: Option<u64>) -> Result<(), ToolError> {
    let (Some(id), Ok(text)) = (myid, std::fs::read_to_string(zk_data.join("myid"))) else { return Ok(()) };
    match text.trim().parse::<u64>() {
        Ok(existing) if existing == id => Ok(()),
        _ => Err(ToolError::Usage(format!(
            "{} says {:?}, not {id}: the operator's myid is kept; remove it first to change it",
            zk_data.join("myid").display(),
            text.trim()
        ))),
    }
}

/// Reads the written snapshot back as ZooKeeper's loader would, and compares it with the tree.
fn verify(tree: &DataTree, path: &Path) -> Result<(), ToolError> {
    let (read, meta) =
        zkdata::restore::load_snapshot(path, u64::MAX, &mut |_| {}).map_err(|e| ToolError::Usage(e.to_string()))?;
    let digest = meta.digest.map(|d| (d.zxid, d.digest));
    if !tree::tree::same_contents(&read, tree) || digest != Some((tree.last_zxid(), tree.digest())) {
        return Err(ToolError::Usage(format!("{} does not read back as the tree written", path.display())));
    }
    Ok(())
}
