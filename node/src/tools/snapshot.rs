//! `ensemble snapshot list|dump|verify`: the snapshots of a server as an operator sees them (ZooKeeper's
//! `zkSnapShotToolkit`, `SnapshotFormatter`). Built on [`snapshot::inspect`]; nothing here writes.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use snapshot::inspect::{self, DigestCheck, Entry, SnapshotFile};
use tree::acl::OPEN_ACL_ID;

use super::render::{acl_json, acl_text, data_json, data_text, time_text};
use super::{progress, Out, Outcome, ToolError};

/// `ensemble snapshot ...`
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Lists the snapshot files: start and end zxid, digest, node and session counts, size, and whether the
    /// file checks out (magic, version, length, checksum) or why not.
    #[command(after_help = super::EXIT_CODES)]
    List(DirArgs),
    /// Prints one snapshot: its header and trailer, sessions, ACL lists, then every node with its stat (as
    /// ZooKeeper's SnapshotFormatter) and data (quoted text when printable UTF-8, else # and hex, null for null
    /// data). With --json: JSON lines (a snapshot can be huge), one object per record, then a summary. A
    /// damaged file is shown as far as its records read; exit 1 then.
    #[command(after_help = super::EXIT_CODES)]
    Dump {
        /// The snapshot file.
        file: PathBuf,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Verifies every snapshot of DIR (or one snapshot file): checksum, structure (the tree loads) and the
    /// digest the trailer records, recomputed from the tree, or, for a fuzzy snapshot (txns applied while it
    /// was copied), by replaying those txns from the WAL. Exit 1 naming the first file that fails and why.
    #[command(after_help = super::EXIT_CODES)]
    Verify {
        #[command(flatten)]
        dir: DirArgs,
        /// The WAL directory to replay fuzzy snapshots' txns from (default: `log` beside the snapshot
        /// directory, where `ensemble start` puts it when dataLogDir is dataDir).
        #[arg(long)]
        wal: Option<PathBuf>,
    },
}

/// The directory and output format.
#[derive(Args)]
pub struct DirArgs {
    /// The snapshot directory, `<dataDir>/snapshots` (dataDir itself is accepted too), or one snapshot file
    /// (verify).
    pub dir: PathBuf,
    /// Print one JSON document. Zxids, digests and session ids are hex strings.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `snapshot` subcommand.
pub fn run(command: SnapshotCommand) -> Result<Outcome, ToolError> {
    match command {
        SnapshotCommand::List(args) => list(&args),
        SnapshotCommand::Dump { file, json } => dump(&file, json),
        SnapshotCommand::Verify { dir, wal } => verify(&dir, wal),
    }
}

/// The snapshot files of `dir` (or `dir/snapshots`), oldest first; `dir` itself if it is a file.
fn snapshot_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), ToolError> {
    if dir.is_file() {
        let parent = dir.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        return Ok((parent, vec![dir.to_path_buf()]));
    }
    let dir = super::resolve_dir(dir.to_path_buf(), "snapshots", |n| n.starts_with("snapshot."))?;
    let mut files: Vec<PathBuf> = snapshot::dir::list(&dir)?.into_iter().map(|(_, p)| p).collect();
    files.reverse();
    if files.is_empty() && !dir.is_dir() {
        return Err(ToolError::Usage(format!("{}: no such directory", dir.display())));
    }
    Ok((dir, files))
}

#[derive(Serialize)]
struct SummaryJson {
    file: String,
    size: u64,
    version: Option<u32>,
    start_zxid: Option<String>,
    end_zxid: Option<String>,
    digest: Option<String>,
    nodes: Option<u64>,
    sessions: Option<u64>,
    valid: bool,
    error: Option<String>,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn zxid_hex(z: i64) -> String {
    format!("0x{z:x}")
}

fn summary_json(s: &inspect::SnapshotSummary) -> SummaryJson {
    SummaryJson {
        file: file_name(&s.path),
        size: s.size,
        version: s.version,
        start_zxid: s.start_zxid.map(zxid_hex),
        end_zxid: s.trailer.map(|t| zxid_hex(t.end_zxid)),
        digest: s.trailer.map(|t| format!("0x{:x}", t.digest)),
        nodes: s.trailer.map(|t| t.nodes),
        sessions: s.trailer.map(|t| t.sessions),
        valid: s.error.is_none(),
        error: s.error.as_ref().map(|e| reason(e, &s.path)),
    }
}

/// An error without the file name the caller prints beside it.
fn reason(error: &snapshot::SnapshotError, path: &Path) -> String {
    let text = error.to_string();
    text.strip_prefix(&format!("{}: ", path.display())).map_or(text.clone(), str::to_owned)
}

fn list(args: &DirArgs) -> Result<Outcome, ToolError> {
    let (dir, files) = snapshot_files(&args.dir)?;
    let summaries = files.iter().map(|f| inspect::summarize(f)).collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<SummaryJson> = summaries.iter().map(summary_json).collect();
    let mut out = Out::new();
    if args.json {
        out.json(&json!({ "dir": dir.display().to_string(), "snapshots": rows }))?;
        return out.flush().map(|()| Outcome::Sound);
    }
    out.line(format_args!("snapshots in {}", dir.display()))?;
    out.line(format_args!(
        "{:<26} {:>12} {:>12} {:>18} {:>8} {:>8} {:>10}  VALID",
        "FILE", "START ZXID", "END ZXID", "DIGEST", "NODES", "SESSIONS", "SIZE"
    ))?;
    let dash = || "-".to_owned();
    for row in &rows {
        out.line(format_args!(
            "{:<26} {:>12} {:>12} {:>18} {:>8} {:>8} {:>10}  {}",
            row.file,
            row.start_zxid.clone().unwrap_or_else(dash),
            row.end_zxid.clone().unwrap_or_else(dash),
            row.digest.clone().unwrap_or_else(dash),
            row.nodes.map_or_else(dash, |n| n.to_string()),
            row.sessions.map_or_else(dash, |n| n.to_string()),
            row.size,
            row.error.as_ref().map_or("yes (checksum; `snapshot verify` loads it)".into(), |e| format!("NO: {e}")),
        ))?;
    }
    out.line(format_args!("{} snapshots", rows.len()))?;
    out.flush().map(|()| Outcome::Sound)
}

fn dump(path: &Path, json: bool) -> Result<Outcome, ToolError> {
    let file = SnapshotFile::open(path)?;
    let summary = inspect::summarize(path)?;
    let mut out = Out::new();
    if json {
        out.json(&json!({ "header": summary_json(&summary) }))?;
    } else {
        let s = summary_json(&summary);
        out.line(format_args!(
            "Snapshot {}: format version {}, start zxid {}, end zxid {}, digest {}, {} nodes, {} sessions, {} bytes, {}",
            path.display(),
            s.version.map_or("?".into(), |v| v.to_string()),
            s.start_zxid.unwrap_or_else(|| "?".into()),
            s.end_zxid.unwrap_or_else(|| "?".into()),
            s.digest.unwrap_or_else(|| "?".into()),
            s.nodes.map_or("?".into(), |n| n.to_string()),
            s.sessions.map_or("?".into(), |n| n.to_string()),
            s.size,
            s.error.map_or("checksum valid".into(), |e| format!("DAMAGED: {e}")),
        ))?;
    }
    let bar = progress(file.size(), "dumping");
    let (mut counts, mut section, mut error) = ([0u64; 3], None, None);
    for entry in file.entries() {
        let (offset, entry) = match entry {
            Ok(e) => e,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        bar.set_position(offset);
        let kind = match entry {
            Entry::Session { .. } => 0,
            Entry::Acl { .. } => 1,
            Entry::Node { .. } => 2,
        };
        counts[kind] += 1;
        if json {
            out.json(&entry_json(&entry))?;
            continue;
        }
        if section != Some(kind) {
            section = Some(kind);
            out.line(["Sessions (id, timeout ms):", "ACL lists (id: list):", "Nodes:"][kind])?;
        }
        write_entry(&mut out, &entry)?;
    }
    bar.finish_and_clear();
    let damaged = error.is_some() || summary.error.is_some();
    if json {
        let [sessions, acls, nodes] = counts;
        out.json(&json!({ "summary": { "sessions": sessions, "acls": acls, "nodes": nodes, "error": error } }))?;
    } else {
        if let Some(error) = &error {
            out.line(format_args!("STOPPED: {error}"))?;
        }
        out.line(format_args!("----\n{} sessions, {} ACL lists, {} nodes", counts[0], counts[1], counts[2]))?;
    }
    out.flush()?;
    Ok(if damaged { Outcome::Problem } else { Outcome::Sound })
}

fn entry_json(entry: &Entry) -> serde_json::Value {
    match entry {
        Entry::Session { id, timeout } => json!({ "session": { "id": format!("0x{id:x}"), "timeout": timeout } }),
        Entry::Acl { id, acl } => json!({ "acl": { "id": id, "list": acl_json(acl) } }),
        Entry::Node { path, data, acl, stat } => json!({ "node": {
            "path": path,
            "data": data_json(data.as_deref()),
            "data_length": data.as_ref().map_or(0, |d| d.len()),
            "acl": acl,
            "czxid": zxid_hex(stat.czxid), "ctime": stat.ctime,
            "mzxid": zxid_hex(stat.mzxid), "mtime": stat.mtime,
            "pzxid": zxid_hex(stat.pzxid),
            "cversion": stat.cversion, "version": stat.version, "aversion": stat.aversion,
            "ephemeral_owner": format!("0x{:x}", stat.ephemeral_owner),
        } }),
    }
}

fn write_entry(out: &mut Out, entry: &Entry) -> Result<(), ToolError> {
    match entry {
        Entry::Session { id, timeout } => out.line(format_args!("  0x{id:016x}, {timeout}")),
        Entry::Acl { id, acl } => out.line(format_args!("  {id}: {}", acl_text(acl))),
        Entry::Node { path, data, acl, stat } => {
            let acl = if *acl == OPEN_ACL_ID { format!("{acl} (open)") } else { acl.to_string() };
            out.line(format_args!(
                "----\n{path}\n  cZxid = {}\n  ctime = {}\n  mZxid = {}\n  mtime = {}\n  pZxid = {}\n  cversion = {}\n  \
                 dataVersion = {}\n  aclVersion = {}\n  ephemeralOwner = 0x{:x}\n  acl = {acl}\n  dataLength = {}\n  \
                 data = {}",
                zxid_hex(stat.czxid),
                time_text(stat.ctime),
                zxid_hex(stat.mzxid),
                time_text(stat.mtime),
                zxid_hex(stat.pzxid),
                stat.cversion,
                stat.version,
                stat.aversion,
                stat.ephemeral_owner,
                data.as_ref().map_or(0, |d| d.len()),
                data_text(data.as_deref()),
            ))
        }
    }
}

/// The WAL to replay fuzzy snapshots from: `--wal`, else `log` beside the snapshot directory if there is one.
fn wal_for(snap_dir: &Path, given: Option<PathBuf>) -> Result<Option<wal::Inspection>, ToolError> {
    let dir = match given {
        Some(dir) => super::resolve_dir(dir, "log", |n| n.ends_with(".wal"))?,
        None => match snap_dir.parent().map(|p| p.join("log")).filter(|d| d.is_dir()) {
            Some(dir) => dir,
            None => return Ok(None),
        },
    };
    Ok(Some(wal::inspect(&dir, &wal::WalOptions::default())?))
}

#[derive(Serialize)]
struct VerifiedJson {
    file: String,
    ok: bool,
    error: Option<String>,
    start_zxid: Option<String>,
    end_zxid: Option<String>,
    nodes: Option<usize>,
    orphans: Option<u64>,
    digest: Option<String>,
    digest_check: Option<String>,
}

fn verify(args: &DirArgs, wal_dir: Option<PathBuf>) -> Result<Outcome, ToolError> {
    let (dir, files) = snapshot_files(&args.dir)?;
    let wal = wal_for(&dir, wal_dir)?;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = progress(total, "verifying");
    let mut results = Vec::new();
    for file in &files {
        let result = inspect::verify(file, wal.as_ref());
        bar.inc(std::fs::metadata(file).map_or(0, |m| m.len()));
        results.push(match result {
            Ok(v) => VerifiedJson {
                file: file_name(file),
                ok: true,
                error: None,
                start_zxid: Some(zxid_hex(v.start_zxid)),
                end_zxid: Some(zxid_hex(v.trailer.end_zxid)),
                nodes: Some(v.nodes),
                orphans: Some(v.orphans),
                digest: Some(format!("0x{:x}", v.trailer.digest)),
                digest_check: Some(match v.digest {
                    DigestCheck::Loaded => "matches the loaded tree".into(),
                    DigestCheck::Replayed(n) => format!("matches after replaying {n} WAL txns"),
                    DigestCheck::Unchecked(why) => format!("NOT CHECKED: {why}"),
                }),
            },
            Err(e @ snapshot::SnapshotError::Io { .. }) => return Err(e.into()),
            Err(e) => VerifiedJson {
                file: file_name(file),
                ok: false,
                error: Some(reason(&e, file)),
                start_zxid: None,
                end_zxid: None,
                nodes: None,
                orphans: None,
                digest: None,
                digest_check: None,
            },
        });
    }
    bar.finish_and_clear();
    let outcome = if results.iter().all(|r| r.ok) { Outcome::Sound } else { Outcome::Problem };
    let mut out = Out::new();
    if args.json {
        let wal = wal.as_ref().map(|w| w.dir.display().to_string());
        out.json(&json!({ "dir": dir.display().to_string(), "wal": wal, "ok": outcome == Outcome::Sound, "snapshots": results }))?;
        return out.flush().map(|()| outcome);
    }
    for r in &results {
        match &r.error {
            Some(error) => out.line(format_args!("BAD {}: {error}", dir.join(&r.file).display()))?,
            None => out.line(format_args!(
                "OK {}: zxids {}..{}, {} nodes, digest {} {}",
                r.file,
                r.start_zxid.as_deref().unwrap_or("?"),
                r.end_zxid.as_deref().unwrap_or("?"),
                r.nodes.unwrap_or(0),
                r.digest.as_deref().unwrap_or("?"),
                r.digest_check.as_deref().unwrap_or(""),
            ))?,
        }
    }
    if results.is_empty() {
        out.line(format_args!("no snapshots in {}", dir.display()))?;
    }
    out.flush().map(|()| outcome)
}
