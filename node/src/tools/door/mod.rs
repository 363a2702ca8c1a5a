//! `ensemble import` and `ensemble export`: the two-way door between Apache ZooKeeper's data directories and
//! Ensemble's. The formats are `zkdata`'s; these commands choose the directories, keep what is there safe
//! (never overwritten: refused, or moved aside with `--force`), write under temporary names and rename, and
//! check what they wrote by reading it back.

pub mod export;
pub mod import;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Out, Outcome, ToolError};

/// Whether `path` exists and is not an empty directory.
fn holds_data(path: &Path) -> bool {
    match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => path.exists(),
    }
}

/// Moves `path` aside to `<path>.<why>-<unix seconds>`, returning the new name.
fn move_aside(path: &Path, why: &str) -> Result<PathBuf, ToolError> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut aside = PathBuf::from(format!("{}.{why}-{secs}", path.display()));
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{}.{why}-{secs}.{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(ToolError::io(format!("move {} aside", path.display())))?;
    eprintln!("ensemble: moved {} to {}", path.display(), aside.display());
    Ok(aside)
}

/// The ones of `paths` that hold data; refused unless `force` (the caller moves them aside with
/// [`move_all_aside`] once what replaces them is ready).
fn taken<'a>(paths: &[&'a Path], force: bool, why: &str) -> Result<Vec<&'a Path>, ToolError> {
    let taken: Vec<&Path> = paths.iter().copied().filter(|p| holds_data(p)).collect();
    if !force && !taken.is_empty() {
        let list: Vec<String> = taken.iter().map(|p| p.display().to_string()).collect();
        return Err(ToolError::Usage(format!(
            "{} already hold(s) data; nothing was changed (--force moves it aside to <name>.{why}-<time>, deleting nothing)",
            list.join(", ")
        )));
    }
    Ok(taken)
}

/// Moves each of `paths` aside; returns where they went.
fn move_all_aside(paths: &[&Path], why: &str) -> Result<Vec<PathBuf>, ToolError> {
    paths.iter().map(|p| move_aside(p, why)).collect()
}

/// Removes a staging directory of ours left by an interrupted run.
fn clear_staging(dir: &Path) -> Result<(), ToolError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(ToolError::io(format!("remove {}", dir.display())))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ToolError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(ToolError::io(format!("fsync {}", dir.display())))
}

/// The parent directory of `path`, for fsyncing a rename in it.
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Renames `from` to `to` and makes the rename durable.
fn commit(from: &Path, to: &Path) -> Result<(), ToolError> {
    std::fs::rename(from, to).map_err(ToolError::io(format!("rename {} to {}", from.display(), to.display())))?;
    sync_dir(parent(to))
}

/// Throughput for the summary: znodes, and megabytes (10^6) of znode paths and data, per second.
fn rates(nodes: u64, bytes: u64, elapsed: Duration) -> serde_json::Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    json!({
        "seconds": (secs * 1000.0).round() / 1000.0,
        "znodes_per_second": (nodes as f64 / secs).round() as u64,
        "mb_per_second": (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0,
    })
}

/// A refusal on the data's account (damage, a state ZooKeeper would not serve): said on stderr (and as JSON
/// with `--json`), exit code 1, nothing written.
fn refuse(error: &zkdata::ZkDataError, json: bool) -> Result<Outcome, ToolError> {
    if let zkdata::ZkDataError::Io { .. } = error {
        return Err(ToolError::Usage(error.to_string()));
    }
    eprintln!("ensemble: refused, nothing was written: {error}");
    if json {
        let mut out = Out::new();
        out.json(&json!({ "ok": false, "error": error.to_string() }))?;
        out.flush()?;
    }
    Ok(Outcome::Problem)
}

/// A hexadecimal zxid as ZooKeeper prints them.
fn hex(zxid: i64) -> String {
    format!("0x{zxid:x}")
}
