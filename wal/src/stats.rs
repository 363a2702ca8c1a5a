//! Counters of the write path, for metrics (`mntr`) and for seeing how well group commit batches.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Totals since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records made durable.
    pub records: u64,
    /// Batches written; each ends with one fdatasync (unless `sync` is `Never`).
    pub batches: u64,
    /// Bytes written (records, with their headers).
    pub bytes: u64,
    /// Time spent in fdatasync, in total.
    pub fsync_time: Duration,
    /// The longest single fdatasync.
    pub fsync_max: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    records: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    fsync_nanos: AtomicU64,
    fsync_max_nanos: AtomicU64,
}

impl Counters {
    pub fn batch(&self, records: usize, bytes: usize, fsync: Duration) {
        let nanos = u64::try_from(fsync.as_nanos()).unwrap_or(u64::MAX);
        self.records.fetch_add(records as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.fsync_nanos.fetch_add(nanos, Relaxed);
        self.fsync_max_nanos.fetch_max(nanos, Relaxed);
    }

    pub fn snapshot(&self) -> WalStats {
        WalStats {
            records: self.records.load(Relaxed),
            batches: self.batches.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            fsync_time: Duration::from_nanos(self.fsync_nanos.load(Relaxed)),
            fsync_max: Duration::from_nanos(self.fsync_max_nanos.load(Relaxed)),
        }
    }
}
