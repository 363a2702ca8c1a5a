//! Read-only inspection of a log directory, for operators' tools (`ensemble wal list|dump|verify|repair`).
//!
//! [`inspect`] runs the same scan as [`crate::Wal::open`] and [`crate::repair`] but acts on nothing: it takes no
//! directory lock, opens every file read-only, cuts no torn tail and deletes no file, so it may look at the log
//! of a running server (whose tail may then be caught mid-write) or at a copy of a damaged one. It says what
//! each segment holds, whether each is sealed by the next one's header, where the valid log ends and why, and
//! what [`crate::repair`] would drop; [`Inspection::records`] iterates the records of the valid prefix.
//!
//! ```
//! use wal::{Wal, WalOptions, Zxid};
//!
//! let dir = tempfile::tempdir()?;
//! let (log, _) = Wal::open(dir.path(), WalOptions::default())?;
//! log.append(Zxid(1), &b"create /a"[..])?.wait()?;
//! drop(log);
//! let inspection = wal::inspect(dir.path(), &WalOptions::default())?;
//! assert!(inspection.problem().is_none());
//! assert_eq!(inspection.segments[0].records, 1);
//! let records: Vec<_> = inspection.records(Zxid::ZERO).collect::<Result<_, _>>()?;
//! assert_eq!(&records[0].payload[..], b"create /a");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::{self, Base};
use crate::error::WalError;
use crate::fs::StdFs;
use crate::fsutil::LOCK_FILE;
use crate::repair::{self, RepairPlan};
use crate::scan::{self, Scan, TornTail};
use crate::segment::format::{self, Seal, SegmentHeader};
use crate::segment::SegmentFile;
use crate::view::{SegmentView, View, WalIter};
use crate::{WalOptions, Zxid};

/// What the scan made of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    /// Every record checked, up to the end its seal records (or, for the last segment, up to the end of the log).
    Verified,
    /// Where the valid log stops: see [`Inspection::corruption`].
    Corrupt,
    /// After the corruption: not checked (a repair deletes it).
    Unchecked,
}

/// One segment file, as inspection found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number (`None`: its header does not read).
    pub seq: Option<u64>,
    /// Its first zxid (from its header, else its name).
    pub first_zxid: Zxid,
    /// The zxid of its last valid record (`None`: none, or not checked).
    pub last_zxid: Option<Zxid>,
    /// Its valid records (the valid prefix, for the corrupt segment).
    pub records: u64,
    /// The offset just after its last valid record.
    pub end: u64,
    /// The file's size (segments are preallocated: most of the last one is zeros).
    pub file_len: u64,
    /// The seal of this segment recorded in the next segment's header (`None`: the last segment, or the next
    /// header does not read).
    pub sealed: Option<Seal>,
    /// What the scan made of it.
    pub state: SegmentState,
}

/// Where the valid log stops because of corruption.
#[derive(Debug)]
pub struct Corruption {
    /// The segment.
    pub segment: PathBuf,
    /// The offset in it where valid data stops (`0`: its header or its place in the chain is bad).
    pub offset: u64,
    /// The error, as [`crate::Wal::open`] reports it.
    pub error: WalError,
}

/// The first problem inspection found, if any.
#[derive(Debug)]
pub enum Problem<'a> {
    /// Corruption: [`crate::Wal::open`] refuses the log; [`crate::repair`] cuts it.
    Corruption(&'a Corruption),
    /// A torn tail (a write a crash cut short): [`crate::Wal::open`] cuts it by itself.
    TornTail(&'a TornTail),
}

/// The base file (see [`crate::Wal::restart_after`]), as inspection found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseState {
    /// No base file: the log was never restarted after a snapshot.
    Absent,
    /// The log was restarted after a snapshot.
    Present(Base),
    /// The file is damaged: the log cannot tell where it begins.
    Damaged,
}

/// The progress of a long inspection: bytes of segment data checked so far and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes checked.
    pub done: u64,
    /// Bytes to check.
    pub total: u64,
}

/// Everything [`inspect`] found in a log directory.
#[derive(Debug)]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// Its base file.
    pub base: BaseState,
    /// Its segments in zxid order, including those after a corruption.
    pub segments: Vec<SegmentSummary>,
    /// Leftovers of interrupted segment or base-file creations (`.tmp`, the spare file), which an open deletes.
    pub tmp_files: Vec<PathBuf>,
    /// A torn tail in the last segment.
    pub torn_tail: Option<TornTail>,
    /// Corruption, if any.
    pub corruption: Option<Corruption>,
    /// What [`crate::repair`] would do (with corruption only).
    pub repair_plan: Option<RepairPlan>,
    /// Whether an open log (a running server) holds the directory's lock: its tail may be being written.
    pub in_use: bool,
    view: View,
    record_count: u64,
    read_limit: usize,
}

/// Inspects the log in `dir` without changing anything. Fails only if the directory cannot be read, holds a
/// file no log writes ([`WalError::NotAWal`]), or a segment has a foreign magic or a newer format version.
pub fn inspect(dir: impl AsRef<Path>, options: &WalOptions) -> Result<Inspection, WalError> {
    inspect_with_progress(dir, options, &mut |_| {})
}

/// Like [`inspect`], calling `progress` after each segment's records are checked.
pub fn inspect_with_progress(
    dir: impl AsRef<Path>,
    options: &WalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Inspection, WalError> {
    let dir = dir.as_ref();
    let read_limit = options.read_limit();
    let scan = scan::scan_with(&StdFs, dir, read_limit, &mut |done, total| progress(Progress { done, total }))?;
    let base = match base::read(&StdFs, dir) {
        Ok(None) => BaseState::Absent,
        Ok(Some(base)) => BaseState::Present(base),
        Err(WalError::BadBase { .. }) => BaseState::Damaged,
        Err(e) => return Err(e),
    };
    let repair_plan = repair::plan(&StdFs, dir, &scan, read_limit)?;
    let segments = summarize(dir, &scan)?;
    let (view, record_count) = valid_prefix(&scan, repair_plan.as_ref());
    let Scan { tmp_files, torn, corruption, segments: scanned, .. } = scan;
    let corruption =
        corruption.map(|c| Corruption { segment: scanned[c.index].path.clone(), offset: c.offset, error: c.error });
    Ok(Inspection {
        dir: dir.to_path_buf(),
        base,
        segments,
        tmp_files,
        torn_tail: torn,
        corruption,
        repair_plan,
        in_use: is_locked(dir),
        view,
        record_count,
        read_limit,
    })
}

impl Inspection {
    /// The first problem found: corruption if any, else a torn tail.
    pub fn problem(&self) -> Option<Problem<'_>> {
        match (&self.corruption, &self.torn_tail) {
            (Some(c), _) => Some(Problem::Corruption(c)),
            (None, Some(t)) => Some(Problem::TornTail(t)),
            (None, None) => None,
        }
    }

    /// Iterates the records of the valid prefix (what a repair keeps, or what an open keeps after cutting a
    /// torn tail) with a zxid at or above `from`.
    pub fn records(&self, from: Zxid) -> WalIter {
        WalIter::new(self.view.clone(), from, self.read_limit)
    }

    /// The records of the valid prefix.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// The first zxid of the valid prefix.
    pub fn first_zxid(&self) -> Option<Zxid> {
        self.view.first_zxid()
    }

    /// The last zxid of the valid prefix.
    pub fn last_zxid(&self) -> Option<Zxid> {
        self.view.last_zxid()
    }
}

/// A summary of every segment file: those the scan read, then those after a corruption (headers only).
fn summarize(dir: &Path, scan: &Scan) -> Result<Vec<SegmentSummary>, WalError> {
    let corrupt = scan.corruption.as_ref().map(|c| c.index);
    let mut out: Vec<(SegmentSummary, Option<Seal>)> = Vec::new();
    for (i, s) in scan.segments.iter().enumerate() {
        let header_ok = !(corrupt == Some(i) && s.header.seq == 0);
        let state = if corrupt == Some(i) { SegmentState::Corrupt } else { SegmentState::Verified };
        let summary = SegmentSummary {
            path: s.path.clone(),
            seq: header_ok.then_some(s.header.seq),
            first_zxid: s.header.first_zxid,
            last_zxid: s.last_zxid,
            records: s.records,
            end: s.end,
            file_len: s.data.len() as u64,
            sealed: None,
            state,
        };
        out.push((summary, s.header.prev));
    }
    if let Some(last) = scan.segments.last().filter(|_| corrupt.is_some()) {
        for path in later_segments(dir, last.header.first_zxid)? {
            out.push(unchecked(&path)?);
        }
    }
    for i in 1..out.len() {
        out[i - 1].0.sealed = out[i].1;
    }
    Ok(out.into_iter().map(|(s, _)| s).collect())
}

/// A segment after the corruption: its header, if it reads.
fn unchecked(path: &Path) -> Result<(SegmentSummary, Option<Seal>), WalError> {
    let file = SegmentFile::open_read_only(&StdFs, path)?;
    let named = path.file_name().and_then(|n| n.to_str()).and_then(format::parse_file_name).unwrap_or(Zxid::ZERO);
    let header: Option<SegmentHeader> = file.read_header().ok();
    let summary = SegmentSummary {
        path: path.to_path_buf(),
        seq: header.map(|h| h.seq),
        first_zxid: header.map_or(named, |h| h.first_zxid),
        last_zxid: None,
        records: 0,
        end: 0,
        file_len: file.file_len()?,
        sealed: None,
        state: SegmentState::Unchecked,
    };
    Ok((summary, header.and_then(|h| h.prev)))
}

fn later_segments(dir: &Path, after: Zxid) -> Result<Vec<PathBuf>, WalError> {
    let mut later = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| WalError::io("list", dir, e))? {
        let entry = entry.map_err(|e| WalError::io("list", dir, e))?;
        if let Some(zxid) = format::parse_file_name(&entry.file_name().to_string_lossy()).filter(|&z| z > after) {
            later.push((zxid, entry.path()));
        }
    }
    later.sort();
    Ok(later.into_iter().map(|(_, p)| p).collect())
}

/// The readers' view of the valid prefix: every segment before the corruption, and the corrupt one up to where
/// a repair cuts it.
fn valid_prefix(scan: &Scan, plan: Option<&RepairPlan>) -> (View, u64) {
    let (mut segments, mut count) = (Vec::new(), 0);
    for (i, s) in scan.segments.iter().enumerate() {
        let (end, last, records) = match (&scan.corruption, plan) {
            (Some(c), Some(plan)) if c.index == i => match plan.cut_at {
                Some(cut) => (cut, plan.last_good_zxid, plan.records_kept - kept_before(scan, i)),
                None => break,
            },
            _ => (s.end, s.last_zxid, s.records),
        };
        let Some(last_zxid) = last.filter(|_| records > 0) else { continue };
        segments.push(SegmentView {
            seq: s.header.seq,
            first_zxid: s.header.first_zxid,
            path: Arc::from(s.path.as_path()),
            data: s.data.clone(),
            end,
            last_zxid,
        });
        count += records;
    }
    (View { segments: Arc::new(segments), base: None, restarted: false }, count)
}

fn kept_before(scan: &Scan, index: usize) -> u64 {
    scan.segments[..index].iter().map(|s| s.records).sum()
}

/// Whether an open log holds the directory's lock. Opens the lock file read-only (never creates it) and asks
/// for a shared lock, released at once.
fn is_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else { return false };
    // SAFETY: flock only reads its integer arguments; the descriptor is open for the call's duration, and
    // closing it (when `file` drops) releases the shared lock if it was granted.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, Decoded};
    use crate::segment::format::HEADER_LEN;
    use crate::Wal;
    use std::os::unix::fs::FileExt;

    fn tiny() -> WalOptions {
        WalOptions { segment_size: 4096, max_payload: 1024, ..WalOptions::default() }
    }

    /// A closed log of records 1..=n, 200 bytes each, in 4 KiB segments.
    fn closed_log(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Wal::open(dir.path(), tiny()).unwrap();
        for z in 1..=n {
            log.append(Zxid(z), vec![u8::try_from(z % 251).unwrap(); 200]).unwrap().wait().unwrap();
        }
        dir
    }

    /// Every file of `dir` with its bytes.
    fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(p).unwrap()))
            .collect();
        files.sort();
        files
    }

    /// The (start, end) of the records of a segment file.
    fn spans(path: &Path) -> Vec<(usize, usize)> {
        let data = std::fs::read(path).unwrap();
        let (mut offset, mut out) = (HEADER_LEN, Vec::new());
        while let Decoded::Record { next, .. } = record::decode(&data, offset, 1 << 20) {
            out.push((offset, next));
            offset = next;
        }
        out
    }

    fn zxids(inspection: &Inspection) -> Vec<u64> {
        inspection.records(Zxid::ZERO).map(|r| r.unwrap().zxid.0).collect()
    }

    #[test]
    fn a_sound_log_is_described_segment_by_segment_and_left_as_it_was() {
        let dir = closed_log(60);
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let before = contents(dir.path());
        let inspection = inspect(dir.path(), &tiny()).unwrap();
        assert_eq!(contents(dir.path()), before, "inspection changed the directory");
        assert!(inspection.problem().is_none() && !inspection.in_use);
        assert_eq!(inspection.base, BaseState::Absent);
        let segs = &inspection.segments;
        assert!(segs.len() > 3);
        assert_eq!(segs.iter().map(|s| s.records).sum::<u64>(), 60);
        assert_eq!(inspection.record_count(), 60);
        for pair in segs.windows(2) {
            let seal = pair[0].sealed.expect("sealed by the next header");
            assert_eq!((seal.end, Some(seal.last_zxid)), (pair[0].end, pair[0].last_zxid));
            assert_eq!(pair[1].first_zxid.0, pair[0].last_zxid.unwrap().0 + 1);
        }
        assert_eq!(segs.last().unwrap().sealed, None);
        assert!(segs.iter().all(|s| s.state == SegmentState::Verified));
        assert_eq!(zxids(&inspection), (1..=60).collect::<Vec<_>>());
        assert_eq!(inspection.records(Zxid(42)).next().unwrap().unwrap().zxid, Zxid(42));
    }

    #[test]
    fn a_bad_byte_in_a_sealed_segment_is_named_and_the_plan_is_what_repair_does() {
        let dir = closed_log(60);
        let seg = inspect(dir.path(), &tiny()).unwrap().segments[1].clone();
        let (start, _) = spans(&seg.path)[2];
        let file = std::fs::OpenOptions::new().write(true).open(&seg.path).unwrap();
        file.write_all_at(b"\xff", (start + 20) as u64).unwrap();
        let before = contents(dir.path());
        let inspection = inspect(dir.path(), &tiny()).unwrap();
        assert_eq!(contents(dir.path()), before);
        let Some(Problem::Corruption(c)) = inspection.problem() else { panic!("no corruption found") };
        assert_eq!((c.segment.clone(), c.offset), (seg.path.clone(), start as u64));
        assert_eq!(inspection.segments[1].state, SegmentState::Corrupt);
        assert!(inspection.segments[2..].iter().all(|s| s.state == SegmentState::Unchecked));
        let plan = inspection.repair_plan.clone().unwrap();
        let kept = inspection.segments[0].records + 2;
        assert_eq!((plan.cut_at, plan.records_kept), (Some(start as u64), kept));
        // The records after the bad one in its segment cannot be told from garbage; those of later segments can.
        let later: usize = inspection.segments[2..].iter().map(|s| spans(&s.path).len()).sum();
        assert_eq!(plan.records_dropped, later as u64);
        assert_eq!(zxids(&inspection), (1..=kept).collect::<Vec<_>>());
        let repaired = crate::repair(dir.path(), &tiny()).unwrap().unwrap();
        assert!(plan.matches(&repaired), "{plan:?} vs {repaired:?}");
        let after = inspect(dir.path(), &tiny()).unwrap();
        assert!(after.problem().is_none());
        assert_eq!(after.last_zxid(), Some(Zxid(kept)));
    }

    #[test]
    fn a_torn_tail_is_reported_as_such_and_not_cut() {
        let dir = closed_log(30);
        let last = inspect(dir.path(), &tiny()).unwrap().segments.pop().unwrap();
        let (start, end) = *spans(&last.path).last().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&last.path).unwrap();
        file.write_all_at(&vec![0; end - start - 10], (start + 10) as u64).unwrap();
        let before = contents(dir.path());
        let inspection = inspect(dir.path(), &tiny()).unwrap();
        assert_eq!(contents(dir.path()), before);
        let Some(Problem::TornTail(torn)) = inspection.problem() else { panic!("no torn tail") };
        assert_eq!((torn.offset, torn.last_good_zxid), (start as u64, Zxid(29)));
        assert!(inspection.repair_plan.is_none());
        assert_eq!(zxids(&inspection), (1..=29).collect::<Vec<_>>());
    }

    #[test]
    fn an_open_log_is_seen_in_use_and_progress_reaches_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Wal::open(dir.path(), tiny()).unwrap();
        log.append(Zxid(1), &b"x"[..]).unwrap().wait().unwrap();
        let mut last = None;
        let inspection = inspect_with_progress(dir.path(), &tiny(), &mut |p| last = Some(p)).unwrap();
        assert!(inspection.in_use);
        let last = last.unwrap();
        assert_eq!(last.done, last.total);
        drop(log);
        assert!(!inspect(dir.path(), &tiny()).unwrap().in_use);
    }
}
