//! The explicit repair entry point: cut the log at the first corruption, so that the layer above can fetch what
//! was dropped from its peers. Never called implicitly: [`crate::Wal::open`] refuses a corrupt log.

use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::fsutil::{self, DirLock};
use crate::record::{self, Decoded};
use crate::scan::{self, ScannedSegment};
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
}

/// Verifies the log in `dir` and, if it is corrupt, truncates it just before the corruption. Returns `None` if
/// the log was sound (nothing is changed then). The log must not be open.
pub fn repair(dir: impl AsRef<Path>, options: &WalOptions) -> Result<Option<Repaired>, WalError> {
    let dir = dir.as_ref();
    let _lock = DirLock::acquire(dir)?;
    let scan = scan::scan(dir, options.read_limit())?;
    let Some(corruption) = scan.corruption else { return Ok(None) };
    let bad = &scan.segments[corruption.index];
    tracing::warn!(error = %corruption.error, "repairing the WAL: cutting it before the corruption");
    let mut removed_segments = Vec::new();
    // Newest first, so that a crash part-way still leaves a log without holes.
    for path in later_segments(dir, bad.header.first_zxid)?.into_iter().rev() {
        file::remove(&path)?;
        fsutil::sync_dir(dir)?;
        removed_segments.push(path);
    }
    let (cut, last_in_bad) = valid_prefix(bad, corruption.offset, options.read_limit());
    let cut_at = if last_in_bad.is_none() || corruption.offset == 0 {
        file::remove(&bad.path)?;
        fsutil::sync_dir(dir)?;
        removed_segments.push(bad.path.clone());
        None
    } else {
        let records = &bad.data[HEADER_LEN..usize::try_from(cut).expect("mapped")];
        SegmentFile::create(dir, &bad.header, records, options.segment_size.max(cut))?;
        Some(cut)
    };
    let before = scan.segments[..corruption.index].iter().rev().find_map(|s| s.last_zxid);
    Ok(Some(Repaired {
        corruption: corruption.error.to_string(),
        segment: bad.path.clone(),
        cut_at,
        last_good_zxid: if cut_at.is_some() { last_in_bad } else { before },
        removed_segments,
    }))
}

/// The segment files of `dir` whose first zxid is above `first`, in zxid order.
fn later_segments(dir: &Path, first: Zxid) -> Result<Vec<PathBuf>, WalError> {
    let mut later = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| WalError::io("list", dir, e))? {
        let entry = entry.map_err(|e| WalError::io("list", dir, e))?;
        if let Some(zxid) = format::parse_file_name(&entry.file_name().to_string_lossy()) {
            if zxid > first {
                later.push((zxid, entry.path()));
            }
        }
    }
    later.sort();
    Ok(later.into_iter().map(|(_, p)| p).collect())
}

/// The end of the valid records of `seg` that end at or before `limit`, and the last of them.
fn valid_prefix(seg: &ScannedSegment, limit: u64, max_payload: usize) -> (u64, Option<Zxid>) {
    let (mut offset, mut last) = (HEADER_LEN, None);
    while let Decoded::Record { zxid, next, .. } = record::decode(&seg.data, offset, max_payload) {
        if next as u64 > limit || last.is_some_and(|l| zxid <= l) {
            break;
        }
        (offset, last) = (next, Some(zxid));
    }
    (offset as u64, last)
}
