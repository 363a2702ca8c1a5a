//! The explicit repair entry point: cut the log at the first corruption, so that the layer above can fetch what
//! was dropped from its peers. Never called implicitly: [`crate::Wal::open`] refuses a corrupt log.
//!
//! [`plan`] works out what a repair would drop without changing anything (what `ensemble wal repair` shows
//! before it asks); [`repair`] carries out the same plan under the directory lock.

use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::fs::{FileSystem, StdFs};
use crate::fsutil::{self, DirLock};
use crate::record::{self, Decoded};
use crate::scan::{self, Scan, ScannedSegment};
use crate::segment::format::{self, HEADER_LEN};
use crate::segment::{file, SegmentFile};
use crate::{WalOptions, Zxid};

/// What [`repair`] dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The corruption that was found.
    pub corruption: String,
    /// The segment it was in.
    pub segment: PathBuf,
    /// The offset the log now ends at in that segment (`None`: the segment was deleted).
    pub cut_at: Option<u64>,
    /// The last zxid kept (`None`: nothing was kept).
    pub last_good_zxid: Option<Zxid>,
    /// Segments deleted whole.
    pub removed_segments: Vec<PathBuf>,
    /// The highest zxid of any record that read as valid before the repair, kept or dropped: how far this log
    /// reached before the damage. A server that repairs from its peers vouches for that much in elections.
    pub last_readable_zxid: Option<Zxid>,
}

/// What a repair of a corrupt log would do, worked out without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan {
    /// The corruption found.
    pub corruption: String,
    /// The segment it is in.
    pub segment: PathBuf,
    /// The offset in that segment where the corruption starts (`0`: the segment's header or its place in the
    /// chain is bad).
    pub offset: u64,
    /// Where that segment will end (`None`: it will be deleted whole, as no valid record precedes the
    /// corruption in it).
    pub cut_at: Option<u64>,
    /// The last zxid kept (`None`: nothing is kept).
    pub last_good_zxid: Option<Zxid>,
    /// The segments that will be deleted whole, in the order [`repair`] deletes them (newest first).
    pub removed_segments: Vec<PathBuf>,
    /// The records that stay.
    pub records_kept: u64,
    /// The records dropped that still read as valid records (those after the cut up to the corruption's first
    /// bad byte, and those of deleted segments read from their start). Records inside the damaged bytes cannot
    /// be counted, so more may be lost.
    pub records_dropped: u64,
    /// The highest zxid of any record that reads as valid, kept or dropped (records after a damaged one in
    /// its segment included, where its length field lets the reading go on): how far the log reached.
    pub last_readable_zxid: Option<Zxid>,
}

impl RepairPlan {
    /// Whether `repaired` is what this plan said would happen.
    pub fn matches(&self, repaired: &Repaired) -> bool {
        self.segment == repaired.segment
            && self.cut_at == repaired.cut_at
            && self.last_good_zxid == repaired.last_good_zxid
            && self.removed_segments == repaired.removed_segments
    }
}

/// Verifies the log in `dir` and, if it is corrupt, truncates it just before the corruption, as `plan` says.
/// Returns `None` if the log was sound (nothing is changed then). The log must not be open.
pub fn repair(dir: impl AsRef<Path>, options: &WalOptions) -> Result<Option<Repaired>, WalError> {
    repair_with(&StdFs, dir.as_ref(), options)
}

/// [`repair`] on the filesystem `fs`.
pub fn repair_with(fs: &dyn FileSystem, dir: &Path, options: &WalOptions) -> Result<Option<Repaired>, WalError> {
    let _lock = DirLock::acquire(fs, dir)?;
    let scan = scan::scan(fs, dir, options.read_limit())?;
    let Some(plan) = plan(fs, dir, &scan, options.read_limit())? else { return Ok(None) };
    let corruption = scan.corruption.as_ref().expect("a plan means corruption");
    let bad = &scan.segments[corruption.index];
    tracing::warn!(error = %corruption.error, "repairing the WAL: cutting it before the corruption");
    // Newest first, so that a crash part-way still leaves a log without holes.
    for path in &plan.removed_segments {
        file::remove(fs, path)?;
        fsutil::sync_dir(fs, dir)?;
    }
    if let Some(cut) = plan.cut_at {
        let records = &bad.data[HEADER_LEN..usize::try_from(cut).expect("mapped")];
        // A log's first size, as a reopened segment gets (`reopen_active`): the next segment grows from there.
        SegmentFile::create(fs, dir, &bad.header, records, options.next_segment_size(None).max(cut))?;
    }
    Ok(Some(Repaired {
        corruption: plan.corruption,
        segment: plan.segment,
        cut_at: plan.cut_at,
        last_good_zxid: plan.last_good_zxid,
        removed_segments: plan.removed_segments,
        last_readable_zxid: plan.last_readable_zxid,
    }))
}

/// What a repair of the log `scan` found in `dir` would do (`None`: no corruption, nothing to do).
pub(crate) fn plan(
    fs: &dyn FileSystem,
    dir: &Path,
    scan: &Scan,
    max_payload: usize,
) -> Result<Option<RepairPlan>, WalError> {
    let Some(corruption) = &scan.corruption else { return Ok(None) };
    let bad = &scan.segments[corruption.index];
    let (cut, last_in_bad, kept_in_bad) = valid_prefix(bad, corruption.offset, max_payload);
    let whole = last_in_bad.is_none() || corruption.offset == 0;
    let mut removed_segments: Vec<PathBuf> =
        later_segments(fs, dir, bad.header.first_zxid)?.into_iter().rev().collect();
    let mut records_dropped = 0;
    for path in &removed_segments {
        records_dropped += readable_records(&SegmentFile::open_read_only(fs, path)?.map()?, HEADER_LEN, max_payload);
    }
    let before = &scan.segments[..corruption.index];
    let mut records_kept: u64 = before.iter().map(|s| s.records).sum();
    if whole {
        removed_segments.push(bad.path.clone());
        records_dropped += readable_records(&bad.data, HEADER_LEN, max_payload);
    } else {
        records_kept += kept_in_bad;
        records_dropped += readable_records(&bad.data, usize::try_from(cut).expect("mapped"), max_payload);
    }
    let before = before.iter().rev().find_map(|s| s.last_zxid);
    let mut last_readable = last_in_bad.or(before).max(last_zxid_past_damage(&bad.data, HEADER_LEN, max_payload));
    for path in &removed_segments {
        let data = SegmentFile::open_read_only(fs, path)?.map()?;
        last_readable = last_readable.max(last_zxid_past_damage(&data, HEADER_LEN, max_payload));
    }
    Ok(Some(RepairPlan {
        corruption: corruption.error.to_string(),
        segment: bad.path.clone(),
        offset: corruption.offset,
        cut_at: (!whole).then_some(cut),
        last_good_zxid: if whole { before } else { last_in_bad },
        removed_segments,
        records_kept,
        records_dropped,
        last_readable_zxid: last_readable,
    }))
}

/// The segment files of `dir` whose first zxid is above `first`, in zxid order.
fn later_segments(fs: &dyn FileSystem, dir: &Path, first: Zxid) -> Result<Vec<PathBuf>, WalError> {
    let mut later = Vec::new();
    for name in fs.read_dir(dir).map_err(|e| WalError::io("list", dir, e))? {
        if let Some(zxid) = format::parse_file_name(&name) {
            if zxid > first {
                later.push((zxid, dir.join(&name)));
            }
        }
    }
    later.sort();
    Ok(later.into_iter().map(|(_, p)| p).collect())
}

/// The end of the valid records of `seg` that end at or before `limit`, the last of them, and how many.
fn valid_prefix(seg: &ScannedSegment, limit: u64, max_payload: usize) -> (u64, Option<Zxid>, u64) {
    let (mut offset, mut last, mut count) = (HEADER_LEN, None, 0);
    while let Decoded::Record { zxid, next, .. } = record::decode(&seg.data, offset, max_payload) {
        if next as u64 > limit || last.is_some_and(|l| zxid <= l) {
            break;
        }
        (offset, last, count) = (next, Some(zxid), count + 1);
    }
    (offset as u64, last, count)
}

/// The highest zxid of the valid records in `data` from `offset` on, stepping over records whose checksum
/// fails by their length field (their zxid is not trusted), until the records stop.
fn last_zxid_past_damage(data: &[u8], mut offset: usize, max_payload: usize) -> Option<Zxid> {
    let mut last = None;
    loop {
        match record::decode(data, offset, max_payload) {
            Decoded::Record { zxid, next, .. } => (offset, last) = (next, last.max(Some(zxid))),
            Decoded::BadChecksum => {
                let len = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("a decoded header"));
                offset += record::RECORD_HEADER_LEN + len as usize;
            }
            Decoded::End | Decoded::Truncated | Decoded::BadLength => return last,
        }
    }
}

/// How many valid records follow one another in `data` from `offset` on.
fn readable_records(data: &[u8], mut offset: usize, max_payload: usize) -> u64 {
    let mut count = 0;
    while let Decoded::Record { next, .. } = record::decode(data, offset, max_payload) {
        (offset, count) = (next, count + 1);
    }
    count
}
