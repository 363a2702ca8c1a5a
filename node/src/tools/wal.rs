//! `ensemble wal list|dump|verify|repair DIR`: the write-ahead log as an operator sees it.
//!
//! Built on [`wal::inspect`], which changes nothing (no lock, no cut, read-only files), so `list`, `dump` and
//! `verify` are safe on a running server's log; `repair` alone writes, through [`wal::repair`], after saying
//! exactly what it will drop (the [`wal::RepairPlan`]) and asking.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;
use tree::txn::TxnRecord;
use wal::{BaseState, Inspection, Problem, SegmentState, SegmentSummary, WalOptions, Zxid};

use super::render::{txn_json, txn_line};
use super::{hex, parse_zxid, progress, Out, Outcome, ToolError};

/// `ensemble wal ...`
#[derive(Subcommand)]
pub enum WalCommand {
    /// Lists the segments: file, first and last zxid, records, size, whether the next header seals it; the
    /// base file; and the first problem, if any.
    #[command(after_help = super::EXIT_CODES)]
    List(DirArgs),
    /// Prints every txn of the valid log, one line each, as ZooKeeper's zkTxnLogToolkit does:
    /// `<time UTC> session 0x.. cxid 0x.. zxid 0x.. <op> <fields>`. With --json: JSON lines, one object per txn
    /// (a log can be huge), then one summary object. Exit 1 if the log is corrupt (the dump stops before the
    /// corruption) or a record is not a txn.
    #[command(after_help = super::EXIT_CODES)]
    Dump {
        #[command(flatten)]
        dir: DirArgs,
        /// The first zxid to print (hex with 0x, or decimal).
        #[arg(long, value_parser = parse_zxid)]
        from: Option<u64>,
        /// The last zxid to print.
        #[arg(long, value_parser = parse_zxid)]
        to: Option<u64>,
    },
    /// Checks every header, record checksum, zxid order and the chain of seals, and that every record is a txn,
    /// changing nothing. Exit 1 naming the segment and offset of the first corruption; exit 3 for a torn tail
    /// (a write a crash cut short, which the server cuts on its next start).
    #[command(after_help = super::EXIT_CODES)]
    Verify(DirArgs),
    /// Cuts a corrupt log just before its first corruption (after saying what goes and asking on a terminal),
    /// so that the server can start and fetch the lost tail from its peers. The server must be stopped.
    #[command(after_help = super::EXIT_CODES)]
    Repair {
        /// The WAL directory (see `wal list --help`).
        dir: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// The directory and output format.
#[derive(Args)]
pub struct DirArgs {
    /// The WAL directory: `<dataLogDir>/log` (dataLogDir defaults to dataDir); the dataLogDir itself is
    /// accepted too.
    pub dir: PathBuf,
    /// Print JSON (one document; JSON lines for dump). Zxids and session ids are hex strings.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `wal` subcommand.
pub fn run(command: WalCommand) -> Result<Outcome, ToolError> {
    match command {
        WalCommand::List(args) => list(&args),
        WalCommand::Dump { dir, from, to } => dump(&dir, from.unwrap_or(0), to.unwrap_or(u64::MAX)),
        WalCommand::Verify(args) => verify(&args),
        WalCommand::Repair { dir, yes } => repair(dir, yes),
    }
}

fn options() -> WalOptions {
    // Reads accept any record up to the read ceiling whatever max_payload is, so the defaults read every log.
    WalOptions::default()
}

/// Inspects the log in `dir` (or `dir/log`), with a progress bar on a terminal.
fn inspect(dir: &Path) -> Result<Inspection, ToolError> {
    let dir = super::resolve_dir(dir.to_path_buf(), "log", |n| n.ends_with(".wal"))?;
    let bar = progress(0, "verifying");
    let inspection = wal::inspect_with_progress(&dir, &options(), &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    let inspection = inspection.map_err(|e| match e {
        wal::WalError::NotAWal { dir, file } => ToolError::Usage(format!(
            "{} is not a WAL directory (it holds {file:?}): give the log directory, <dataLogDir>/log, or the \
             dataLogDir that holds it",
            dir.display()
        )),
        other => ToolError::Wal(other),
    })?;
    if inspection.in_use {
        eprintln!("ensemble: {} is open by a running server: its tail may be being written", inspection.dir.display());
    }
    Ok(inspection)
}

#[derive(Serialize)]
struct SegmentJson {
    file: String,
    seq: Option<u64>,
    first_zxid: String,
    last_zxid: Option<String>,
    records: u64,
    end: u64,
    size: u64,
    sealed: bool,
    seal: Option<SealJson>,
    state: &'static str,
}

#[derive(Serialize)]
struct SealJson {
    end: u64,
    last_zxid: String,
    matches: bool,
}

#[derive(Serialize)]
struct ProblemJson {
    kind: &'static str,
    segment: String,
    offset: u64,
    message: String,
    last_good_zxid: Option<String>,
}

#[derive(Serialize)]
struct InspectionJson {
    dir: String,
    in_use: bool,
    base: serde_json::Value,
    segments: Vec<SegmentJson>,
    tmp_files: Vec<String>,
    records: u64,
    first_zxid: Option<String>,
    last_zxid: Option<String>,
    problem: Option<ProblemJson>,
}

fn state_name(s: &SegmentSummary, last: bool) -> &'static str {
    match s.state {
        SegmentState::Verified if last => "last",
        SegmentState::Verified => "sealed",
        SegmentState::Corrupt => "corrupt",
        SegmentState::Unchecked => "unchecked",
    }
}

fn seal_matches(s: &SegmentSummary) -> bool {
    s.sealed.is_some_and(|seal| seal.end == s.end && Some(seal.last_zxid) == s.last_zxid)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn problem_json(inspection: &Inspection) -> Option<ProblemJson> {
    Some(match inspection.problem()? {
        Problem::Corruption(c) => ProblemJson {
            kind: "corruption",
            segment: c.segment.display().to_string(),
            offset: c.offset,
            message: c.error.to_string(),
            last_good_zxid: inspection.repair_plan.as_ref().and_then(|p| p.last_good_zxid).map(|z| hex(z.0)),
        },
        Problem::TornTail(t) => ProblemJson {
            kind: "torn_tail",
            segment: t.segment.display().to_string(),
            offset: t.offset,
            message: format!("torn tail: {} bytes of an unfinished write after the last record", t.bytes),
            last_good_zxid: Some(hex(t.last_good_zxid.0)),
        },
    })
}

fn inspection_json(inspection: &Inspection) -> InspectionJson {
    let n = inspection.segments.len();
    let segments = inspection
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| SegmentJson {
            file: file_name(&s.path),
            seq: s.seq,
            first_zxid: hex(s.first_zxid.0),
            last_zxid: s.last_zxid.map(|z| hex(z.0)),
            records: s.records,
            end: s.end,
            size: s.file_len,
            sealed: seal_matches(s),
            seal: s.sealed.map(|seal| SealJson {
                end: seal.end,
                last_zxid: hex(seal.last_zxid.0),
                matches: seal_matches(s),
            }),
            state: state_name(s, i + 1 == n),
        })
        .collect();
    let base = match inspection.base {
        BaseState::Absent => serde_json::json!({ "state": "absent" }),
        BaseState::Present(b) => {
            serde_json::json!({ "state": "present", "after": hex(b.after.0), "first_seq": b.first_seq })
        }
        BaseState::Damaged => serde_json::json!({ "state": "damaged" }),
    };
    InspectionJson {
        dir: inspection.dir.display().to_string(),
        in_use: inspection.in_use,
        base,
        segments,
        tmp_files: inspection.tmp_files.iter().map(|p| file_name(p)).collect(),
        records: inspection.record_count(),
        first_zxid: inspection.first_zxid().map(|z| hex(z.0)),
        last_zxid: inspection.last_zxid().map(|z| hex(z.0)),
        problem: problem_json(inspection),
    }
}

fn list(args: &DirArgs) -> Result<Outcome, ToolError> {
    let inspection = inspect(&args.dir)?;
    let mut out = Out::new();
    if args.json {
        out.json(&inspection_json(&inspection))?;
        return out.flush().map(|()| Outcome::Sound);
    }
    out.line(format_args!("WAL {}", inspection.dir.display()))?;
    out.line(match inspection.base {
        BaseState::Absent => "base: none (the log holds the history from its first segment on)".to_owned(),
        BaseState::Present(b) => format!(
            "base: restarted after {} (a snapshot installed from the leader); segments numbered from {}",
            hex(b.after.0),
            b.first_seq
        ),
        BaseState::Damaged => "base: DAMAGED (the log cannot tell where it begins)".to_owned(),
    })?;
    out.line(format_args!(
        "{:<5} {:<22} {:>12} {:>12} {:>8} {:>10} {:>10}  STATE",
        "SEQ", "FILE", "FIRST ZXID", "LAST ZXID", "RECORDS", "END", "SIZE"
    ))?;
    let n = inspection.segments.len();
    for (i, s) in inspection.segments.iter().enumerate() {
        out.line(format_args!(
            "{:<5} {:<22} {:>12} {:>12} {:>8} {:>10} {:>10}  {}",
            s.seq.map_or("?".into(), |q| q.to_string()),
            file_name(&s.path),
            hex(s.first_zxid.0),
            s.last_zxid.map_or("-".into(), |z| hex(z.0)),
            s.records,
            s.end,
            s.file_len,
            state_text(s, i + 1 == n),
        ))?;
    }
    for tmp in &inspection.tmp_files {
        out.line(format_args!(
            "temporary file {} (a preallocated spare or an interrupted creation; a server start deletes it)",
            file_name(tmp)
        ))?;
    }
    out.line(format_args!(
        "{} segments, {} records, zxids {}..{}",
        n,
        inspection.record_count(),
        inspection.first_zxid().map_or("-".into(), |z| hex(z.0)),
        inspection.last_zxid().map_or("-".into(), |z| hex(z.0)),
    ))?;
    if let Some(problem) = problem_json(&inspection) {
        out.line(format_args!("problem: {} (see `ensemble wal verify`)", problem.message))?;
    }
    out.flush().map(|()| Outcome::Sound)
}

fn state_text(s: &SegmentSummary, last: bool) -> String {
    match (s.state, s.sealed) {
        (SegmentState::Corrupt, _) => "CORRUPT (the valid log ends in it)".into(),
        (SegmentState::Unchecked, _) => "unchecked (after the corruption)".into(),
        (SegmentState::Verified, None) if last => "last (not sealed: appends go here)".into(),
        (SegmentState::Verified, None) => "NOT SEALED".into(),
        (SegmentState::Verified, Some(seal)) if seal_matches(s) => {
            format!("sealed (end {}, last {})", seal.end, hex(seal.last_zxid.0))
        }
        (SegmentState::Verified, Some(seal)) => {
            format!("SEAL MISMATCH (next header: end {}, last {})", seal.end, hex(seal.last_zxid.0))
        }
    }
}

fn dump(args: &DirArgs, from: u64, to: u64) -> Result<Outcome, ToolError> {
    let inspection = inspect(&args.dir)?;
    let mut out = Out::new();
    if !args.json {
        out.line(format_args!(
            "Ensemble WAL {} with {} segments, zxids {}..{}",
            inspection.dir.display(),
            inspection.segments.len(),
            inspection.first_zxid().map_or("-".into(), |z| hex(z.0)),
            inspection.last_zxid().map_or("-".into(), |z| hex(z.0)),
        ))?;
    }
    let bar = progress(inspection.record_count(), "dumping");
    bar.set_style(indicatif::ProgressStyle::default_bar());
    let (mut shown, mut undecodable) = (0u64, 0u64);
    for record in inspection.records(Zxid(from)) {
        bar.inc(1);
        let record = record?;
        if record.zxid.0 > to {
            break;
        }
        shown += 1;
        match (TxnRecord::decode(&record.payload), args.json) {
            (Ok(txn), false) => out.line(txn_line(&txn, record.zxid.0))?,
            (Ok(txn), true) => out.json(&txn_json(&txn, record.zxid.0))?,
            (Err(e), json) => {
                undecodable += 1;
                let message = format!("not a txn ({e}), {} bytes", record.payload.len());
                if json {
                    out.json(&serde_json::json!({ "zxid": hex(record.zxid.0), "error": message }))?;
                } else {
                    out.line(format_args!("zxid {} {message}", hex(record.zxid.0)))?;
                }
            }
        }
    }
    bar.finish_and_clear();
    let problem = problem_json(&inspection);
    if args.json {
        out.json(&serde_json::json!({ "summary": { "txns": shown, "not_txns": undecodable, "problem": problem } }))?;
    } else {
        out.line(format_args!("EOF reached after {shown} txns."))?;
        if let Some(problem) = &problem {
            out.line(format_args!("the valid log ends here: {}", problem.message))?;
        }
    }
    out.flush()?;
    let corrupt = inspection.corruption.is_some();
    Ok(if corrupt || undecodable > 0 { Outcome::Problem } else { Outcome::Sound })
}

fn verify(args: &DirArgs) -> Result<Outcome, ToolError> {
    let inspection = inspect(&args.dir)?;
    let (mut txns, mut first_bad) = (0u64, None);
    for record in inspection.records(Zxid::ZERO) {
        let record = record?;
        match TxnRecord::decode(&record.payload) {
            Ok(_) => txns += 1,
            Err(e) => {
                first_bad.get_or_insert((record.zxid, e.to_string()));
            }
        }
    }
    let outcome = match (inspection.problem(), &first_bad) {
        (Some(Problem::Corruption(_)), _) | (_, Some(_)) => Outcome::Problem,
        (Some(Problem::TornTail(_)), None) => Outcome::TornTail,
        (None, None) => Outcome::Sound,
    };
    let mut out = Out::new();
    if args.json {
        out.json(&serde_json::json!({
            "dir": inspection.dir.display().to_string(),
            "ok": outcome == Outcome::Sound,
            "segments": inspection.segments.len(),
            "records": inspection.record_count(),
            "txns": txns,
            "not_a_txn": first_bad.as_ref().map(|(z, e)| serde_json::json!({ "zxid": hex(z.0), "error": e })),
            "problem": problem_json(&inspection),
            "repair": inspection.repair_plan.as_ref().map(plan_json),
        }))?;
        return out.flush().map(|()| outcome);
    }
    match inspection.problem() {
        None => {}
        Some(Problem::Corruption(c)) => out.line(format_args!(
            "CORRUPT: segment {} offset {}: {} (`ensemble wal repair` cuts the log there)",
            c.segment.display(),
            c.offset,
            corruption_kind(&c.error)
        ))?,
        Some(Problem::TornTail(t)) => out.line(format_args!(
            "TORN TAIL: segment {} offset {}: {} bytes of a write a crash cut short after {}; not corruption: the \
             server cuts it on its next start",
            t.segment.display(),
            t.offset,
            t.bytes,
            hex(t.last_good_zxid.0)
        ))?,
    }
    if let Some((zxid, error)) = &first_bad {
        out.line(format_args!("NOT A TXN: record {} does not decode: {error}", hex(zxid.0)))?;
    }
    if outcome == Outcome::Sound {
        out.line(format_args!(
            "OK: {} segments, {} records, every checksum and seal verified, every record a txn",
            inspection.segments.len(),
            inspection.record_count()
        ))?;
    }
    out.flush().map(|()| outcome)
}

/// The kind of a corruption, without the segment and offset the caller prints.
fn corruption_kind(error: &wal::WalError) -> String {
    match error {
        wal::WalError::Corruption { kind, .. } => kind.to_string(),
        other => other.to_string(),
    }
}

fn plan_json(plan: &wal::RepairPlan) -> serde_json::Value {
    serde_json::json!({
        "segment": plan.segment.display().to_string(),
        "offset": plan.offset,
        "cut_at": plan.cut_at,
        "last_good_zxid": plan.last_good_zxid.map(|z| hex(z.0)),
        "removed_segments": plan.removed_segments.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "records_kept": plan.records_kept,
        "records_dropped_at_least": plan.records_dropped,
    })
}

fn repair(dir: PathBuf, yes: bool) -> Result<Outcome, ToolError> {
    let inspection = inspect(&dir)?;
    let Some(plan) = inspection.repair_plan.clone() else {
        match inspection.problem() {
            Some(Problem::TornTail(t)) => println!(
                "No corruption: only a torn tail at {} offset {}, which the server cuts on its next start. Nothing to do.",
                t.segment.display(),
                t.offset
            ),
            _ => println!("No corruption in {}. Nothing to do.", inspection.dir.display()),
        }
        return Ok(Outcome::Sound);
    };
    print_plan(&plan);
    if !yes && !confirm()? {
        return Err(ToolError::Aborted);
    }
    // The directory may have changed since it was inspected: repair from a fresh look, and say if it differs.
    let repaired = wal::repair(&inspection.dir, &options())?;
    match repaired {
        Some(done) if plan.matches(&done) => println!("Repaired: the log now ends at {}.", last_kept(&plan)),
        Some(done) => println!("Repaired, differently from the plan (the directory changed meanwhile): {done:?}"),
        None => println!("Nothing repaired: the log no longer shows corruption."),
    }
    Ok(Outcome::Sound)
}

fn last_kept(plan: &wal::RepairPlan) -> String {
    plan.last_good_zxid.map_or("nothing (no record is kept)".into(), |z| format!("zxid {}", hex(z.0)))
}

fn print_plan(plan: &wal::RepairPlan) {
    println!("Corruption: {}", plan.corruption);
    println!("The repair will:");
    match plan.cut_at {
        Some(cut) => println!("  cut {} at offset {} (dropping everything from there on)", plan.segment.display(), cut),
        None => println!("  delete {} (no valid record precedes the corruption in it)", plan.segment.display()),
    }
    for path in plan.removed_segments.iter().filter(|p| **p != plan.segment) {
        println!("  delete {}", path.display());
    }
    println!("  keep {} records, up to {}", plan.records_kept, last_kept(plan));
    println!(
        "  drop at least {} records that still read (more may lie in the damaged bytes); the server fetches what \
         it lost from its peers",
        plan.records_dropped
    );
}

/// Asks on the terminal; refuses without one (use --yes).
fn confirm() -> Result<bool, ToolError> {
    if !std::io::stdin().is_terminal() {
        return Err(ToolError::Usage("not asking without a terminal: pass --yes to repair".into()));
    }
    print!("Proceed? [y/N] ");
    std::io::stdout().flush().map_err(ToolError::io("write to stdout"))?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(ToolError::io("read the answer"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
