//! Recovery scan: reads every segment of a log directory, checks every header and record, and says where the
//! valid log ends. It changes nothing on disk; [`crate::Wal::open`] and [`crate::repair`] act on what it finds.
//!
//! The rules:
//! - Sealed segments (all but the last) must hold valid records, in zxid order, exactly up to the end that the
//!   next segment's header records. Anything else is corruption.
//! - In the last segment, the first byte that is not a valid record ends the log. If only zeros follow, the log
//!   ended cleanly. If garbage follows but no valid record, it is a torn tail (a write cut short by a crash) and
//!   may be cut. If a valid record follows, the bad record is corruption: it was once written and acknowledged.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{CorruptionKind, WalError};
use crate::fs::FileSystem;
use crate::fsutil::LOCK_FILE;
use crate::record::{self, Decoded};
use crate::segment::format::{self, Seal, SegmentHeader, HEADER_LEN, TMP_EXTENSION};
use crate::segment::spare::SPARE_FILE;
use crate::segment::SegmentFile;
use crate::Zxid;

/// A segment as the scan found it.
#[derive(Debug, Clone)]
pub struct ScannedSegment {
    /// Its file.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// The whole file, mapped.
    pub data: Bytes,
    /// The offset just after its last valid record.
    pub end: u64,
    /// The zxid of its last valid record (`None`: no record).
    pub last_zxid: Option<Zxid>,
    /// How many valid records it holds.
    pub records: u64,
}

/// Garbage after the last valid record of the last segment, with no valid record after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: PathBuf,
    /// Where the garbage starts (the end of the valid log).
    pub offset: u64,
    /// How many bytes, up to the last non-zero one.
    pub bytes: u64,
    /// The last valid zxid before it (`Zxid::ZERO`: none).
    pub last_good_zxid: Zxid,
}

/// Where the valid log stops because of corruption.
#[derive(Debug)]
pub struct CorruptionAt {
    /// The index of the segment in [`Scan::segments`].
    pub index: usize,
    /// The offset in that segment where valid data stops (`0`: the whole segment is suspect).
    pub offset: u64,
    /// The error to report.
    pub error: WalError,
}

/// The outcome of scanning a directory.
#[derive(Debug, Default)]
pub struct Scan {
    /// The segments, in order. With corruption, those up to and including the corrupt one, whose `end` then
    /// stops at the last valid record before the corruption.
    pub segments: Vec<ScannedSegment>,
    /// A torn tail in the last segment.
    pub torn: Option<TornTail>,
    /// Segments whose creation a crash interrupted.
    pub tmp_files: Vec<PathBuf>,
    /// Corruption, if any.
    pub corruption: Option<CorruptionAt>,
}

impl Scan {
    /// The zxid of the last valid record.
    pub fn last_zxid(&self) -> Option<Zxid> {
        self.segments.iter().rev().find_map(|s| s.last_zxid)
    }
}

/// Scans `dir`, accepting records of up to `max_payload` bytes.
pub fn scan(fs: &dyn FileSystem, dir: &Path, max_payload: usize) -> Result<Scan, WalError> {
    scan_with(fs, dir, max_payload, &mut |_, _| {})
}

/// Like [`scan`], calling `progress(bytes scanned, bytes to scan)` after each segment's records are checked.
pub fn scan_with(
    fs: &dyn FileSystem,
    dir: &Path,
    max_payload: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Scan, WalError> {
    let (paths, tmp_files) = list(fs, dir)?;
    let mut scan = Scan { tmp_files, ..Scan::default() };
    for path in paths {
        // Read-only: the scan never writes, and inspection runs it on directories it must not change.
        let file = SegmentFile::open_read_only(fs, &path)?;
        let data = file.map_populated()?;
        let named = format::parse_file_name(&file_name(&path)).expect("listed as a segment");
        let header = match SegmentHeader::decode(&data, &path) {
            Ok(h) if h.first_zxid != named => {
                Err(corruption(&path, 0, CorruptionKind::NameMismatch { named, found: h.first_zxid }))
            }
            other => other,
        };
        let header = match header {
            Ok(h) => h,
            Err(error @ WalError::Corruption { .. }) => {
                let header = SegmentHeader { seq: 0, first_zxid: named, prev: None };
                scan.segments.push(ScannedSegment { path, header, data, end: 0, last_zxid: None, records: 0 });
                scan.corruption = Some(CorruptionAt { index: scan.segments.len() - 1, offset: 0, error });
                return Ok(scan);
            }
            Err(e) => return Err(e),
        };
        scan.segments.push(ScannedSegment { path, header, data, end: HEADER_LEN as u64, last_zxid: None, records: 0 });
    }
    // Records are read up to a broken link, so that what comes before it is known (repair keeps it).
    let broken = check_links(&scan.segments);
    scan_records(&mut scan, broken.as_ref().map(|c| c.index), max_payload, progress);
    if let (None, Some(c)) = (&scan.corruption, broken) {
        scan.segments.truncate(c.index + 1);
        scan.corruption = Some(c);
    }
    Ok(scan)
}

/// Lists the segment files (in zxid order) and leftover temporary files of `dir`.
fn list(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), WalError> {
    let (mut segments, mut tmp) = (Vec::new(), Vec::new());
    for name in fs.read_dir(dir).map_err(|e| WalError::io("list", dir, e))? {
        if let Some(zxid) = format::parse_file_name(&name) {
            segments.push((zxid, dir.join(&name)));
        } else if name == SPARE_FILE
            || name == crate::base::BASE_TMP_FILE
            || name
                .strip_suffix(TMP_EXTENSION)
                .and_then(|n| n.strip_suffix('.'))
                .and_then(format::parse_file_name)
                .is_some()
        {
            tmp.push(dir.join(&name));
        } else if name != LOCK_FILE && name != crate::base::BASE_FILE && name != "lost+found" {
            return Err(WalError::NotAWal { dir: dir.to_path_buf(), file: name });
        }
    }
    segments.sort();
    Ok((segments.into_iter().map(|(_, p)| p).collect(), tmp))
}

/// Checks that sequence numbers have no gap and that every segment after the first records a seal.
fn check_links(segments: &[ScannedSegment]) -> Option<CorruptionAt> {
    for (i, pair) in segments.windows(2).enumerate() {
        let (prev, next) = (&pair[0].header, &pair[1].header);
        let kind = if next.seq != prev.seq + 1 {
            CorruptionKind::MissingSegment { expected: prev.seq + 1, found: next.seq }
        } else if next.prev.is_none() {
            CorruptionKind::BadHeader
        } else {
            continue;
        };
        return Some(CorruptionAt { index: i + 1, offset: 0, error: corruption(&pair[1].path, 0, kind) });
    }
    None
}

/// Reads the records of every segment before `broken` (the first segment after a broken link, if any).
fn scan_records(scan: &mut Scan, broken: Option<usize>, max_payload: usize, progress: &mut dyn FnMut(u64, u64)) {
    let count = broken.unwrap_or(scan.segments.len());
    let total: u64 = scan.segments[..count].iter().map(|s| s.data.len() as u64).sum();
    let (mut previous, mut done) = (Zxid::ZERO, 0u64);
    for index in 0..count {
        let seal = scan.segments.get(index + 1).and_then(|s| s.header.prev);
        let segment = &mut scan.segments[index];
        let result = match seal {
            _ if Some(index + 1) == broken => read_records(segment, previous, max_payload).map(|_| ()),
            Some(seal) => scan_sealed(segment, previous, seal, max_payload),
            None => scan_last(segment, previous, max_payload).map(|torn| scan.torn = torn),
        };
        if let Err((offset, kind)) = result {
            scan.corruption = Some(CorruptionAt { index, offset, error: corruption(&segment.path, offset, kind) });
            scan.segments.truncate(index + 1);
            return;
        }
        previous = segment.last_zxid.unwrap_or(previous);
        done += segment.data.len() as u64;
        progress(done, total);
    }
}

type ScanResult<T> = Result<T, (u64, CorruptionKind)>;

/// Reads valid records from the segment's header on, updating `end`, `last_zxid` and `records`, until the first
/// byte that is not a valid record in order; returns what stopped it.
fn read_records(seg: &mut ScannedSegment, mut previous: Zxid, max_payload: usize) -> ScanResult<Decoded> {
    let mut offset = HEADER_LEN;
    loop {
        match record::decode(&seg.data, offset, max_payload) {
            Decoded::Record { zxid, next, .. } => {
                if zxid <= previous {
                    return Err((offset as u64, CorruptionKind::ZxidOutOfOrder { zxid, previous }));
                }
                if seg.records == 0 && zxid != seg.header.first_zxid {
                    return Err((
                        offset as u64,
                        CorruptionKind::NameMismatch { named: seg.header.first_zxid, found: zxid },
                    ));
                }
                (previous, offset) = (zxid, next);
                (seg.end, seg.last_zxid, seg.records) = (next as u64, Some(zxid), seg.records + 1);
            }
            stop => return Ok(stop),
        }
    }
}

fn scan_sealed(seg: &mut ScannedSegment, previous: Zxid, seal: Seal, max_payload: usize) -> ScanResult<()> {
    let stop = read_records(seg, previous, max_payload)?;
    let found_zxid = seg.last_zxid.unwrap_or(Zxid::ZERO);
    let mismatch =
        |found| CorruptionKind::SealMismatch { expected: seal.end, found, expected_zxid: seal.last_zxid, found_zxid };
    if seg.records == 0 {
        return Err((seg.end, CorruptionKind::EmptySealedSegment));
    }
    if seg.end == seal.end && found_zxid == seal.last_zxid {
        return Ok(());
    }
    if seg.end > seal.end {
        return Err((seal.end, mismatch(None)));
    }
    let kind = match stop {
        Decoded::BadChecksum => CorruptionKind::BadChecksum,
        Decoded::BadLength | Decoded::Truncated => CorruptionKind::BadRecordHeader,
        Decoded::End | Decoded::Record { .. } => mismatch(Some(seg.end)),
    };
    Err((seg.end, kind))
}

fn scan_last(seg: &mut ScannedSegment, previous: Zxid, max_payload: usize) -> ScanResult<Option<TornTail>> {
    let stop = read_records(seg, previous, max_payload)?;
    let start = usize::try_from(seg.end).expect("inside a mapped file");
    let garbage_end = start + nonzero_len(&seg.data[start..]);
    if garbage_end == start {
        return Ok(None);
    }
    let last_good = seg.last_zxid.unwrap_or(previous);
    if let Some(found) = find_valid_record(&seg.data, start + 1..garbage_end, last_good, max_payload) {
        tracing::error!(segment = %seg.path.display(), bad = start, valid_after = found, "valid record after a bad one");
        let kind = match stop {
            Decoded::BadChecksum => CorruptionKind::BadChecksum,
            _ => CorruptionKind::BadRecordHeader,
        };
        return Err((seg.end, kind));
    }
    let bytes = (garbage_end - start) as u64;
    Ok(Some(TornTail { segment: seg.path.clone(), offset: seg.end, bytes, last_good_zxid: last_good }))
}

/// The length of `data` without its trailing zeros.
fn nonzero_len(data: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    // OR-folding whole chunks vectorises; only the last non-zero chunk is searched byte by byte.
    let mut end = data.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        if data[start..end].iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return start + data[start..end].iter().rposition(|&b| b != 0).expect("a non-zero byte") + 1;
        }
        end = start;
    }
    0
}

/// The first offset in `starts` where a valid record with a zxid above `after` starts.
fn find_valid_record(data: &[u8], starts: std::ops::Range<usize>, after: Zxid, max_payload: usize) -> Option<usize> {
    starts
        .into_iter()
        .find(|&at| matches!(record::decode(data, at, max_payload), Decoded::Record { zxid, .. } if zxid > after))
}

fn corruption(path: &Path, offset: u64, kind: CorruptionKind) -> WalError {
    WalError::Corruption { segment: path.to_path_buf(), offset, kind }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
