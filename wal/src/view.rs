//! What readers see: the durable part of the log, published by the writer after every fsync, and the iterator
//! over it.
//!
//! A reader takes the current [`View`] (an `Arc`) and reads from the segments' memory maps without any lock. The
//! writer never changes bytes below a published durable end, and never shrinks a file: truncation writes a new
//! file and renames it over the old one, so a reader that started before it keeps reading the old inode.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CorruptionKind, WalError};
use crate::record::{self, Decoded};
use crate::segment::format::HEADER_LEN;
use crate::Zxid;

/// A segment as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub seq: u64,
    pub first_zxid: Zxid,
    pub path: Arc<Path>,
    /// The whole file, mapped.
    pub data: Bytes,
    /// The end of its records (for the last segment: its durable end).
    pub end: u64,
    /// The zxid of its last record.
    pub last_zxid: Zxid,
}

/// The durable log at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// In zxid order; every one holds at least one durable record.
    pub segments: Arc<Vec<SegmentView>>,
    /// Where the log begins if it was restarted after a snapshot ([`crate::Wal::restart_after`]) and has not
    /// been purged since: it holds every record after this zxid.
    pub base: Option<Zxid>,
    /// Whether the log was ever restarted (then it does not hold the full history, base or not).
    pub restarted: bool,
}

impl View {
    pub fn first_zxid(&self) -> Option<Zxid> {
        self.segments.first().map(|s| s.first_zxid)
    }

    pub fn last_zxid(&self) -> Option<Zxid> {
        self.segments.last().map(|s| s.last_zxid)
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its zxid.
    pub zxid: Zxid,
    /// Its payload (a zero-copy slice of the segment's memory map).
    pub payload: Bytes,
}

/// Iterates the durable records from a zxid onward, as they were when the iterator was made.
#[derive(Debug)]
pub struct WalIter {
    view: View,
    segment: usize,
    offset: usize,
    from: Zxid,
    max_payload: usize,
}

impl WalIter {
    pub(crate) fn new(view: View, from: Zxid, max_payload: usize) -> WalIter {
        // The last segment whose first zxid is at or below `from` holds it (or the first one, if `from` is older).
        let segment = view.segments.partition_point(|s| s.first_zxid <= from).saturating_sub(1);
        WalIter { view, segment, offset: HEADER_LEN, from, max_payload }
    }
}

impl Iterator for WalIter {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let seg = self.view.segments.get(self.segment)?;
            let end = usize::try_from(seg.end).expect("a mapped offset fits usize");
            if self.offset >= end {
                self.segment += 1;
                self.offset = HEADER_LEN;
                continue;
            }
            match record::decode(&seg.data[..end], self.offset, self.max_payload) {
                Decoded::Record { zxid, payload, next } => {
                    self.offset = next;
                    if zxid >= self.from {
                        return Some(Ok(Record { zxid, payload: seg.data.slice(payload) }));
                    }
                }
                _ => {
                    // Verified at open or written by us: the bytes changed under the log since.
                    let error = WalError::Corruption {
                        segment: seg.path.to_path_buf(),
                        offset: self.offset as u64,
                        kind: CorruptionKind::BadChecksum,
                    };
                    self.segment = usize::MAX;
                    return Some(Err(error));
                }
            }
        }
    }
}
