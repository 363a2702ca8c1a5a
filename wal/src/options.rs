//! How a log is configured.

use crate::error::WalError;
use crate::record::RECORD_HEADER_LEN;
use crate::segment::format::HEADER_LEN;

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// fdatasync every batch before any append in it is reported durable. The only mode for real use.
    Fdatasync,
    /// Never fsync appends: "durable" then means only "written to the page cache". For benchmarks and tests
    /// only, like ZooKeeper's `forceSync=no`; the log logs a warning whenever it opens in this mode.
    Never,
}

/// The options of a [`crate::Wal`].
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The size a segment is preallocated to; the log rolls to a new segment when the next record does not fit.
    /// Default 64 MiB, like ZooKeeper's `preAllocSize`. A log's first segment is smaller
    /// ([`WalOptions::first_segment_size`]) and each next one twice the one before, up to this size (or the same
    /// size, when the one before was created while its zero-filled spare was still being prepared).
    pub segment_size: u64,
    /// The size of the first segment of an empty log (capped at `segment_size`, raised to hold the largest
    /// record). Segments are zero-filled before use, so this is what a new server writes before its first
    /// append is durable, and what a server that never writes much keeps on disk: ZooKeeper's sparse 64 MiB
    /// log files cost it neither. Default 4 MiB.
    pub first_segment_size: u64,
    /// The largest payload accepted. Default 1 MiB + 1 KiB: ZooKeeper's `jute.maxbuffer` plus its allowance for
    /// the txn header.
    pub max_payload: usize,
    /// Whether appends are fsynced.
    pub sync: SyncMode,
    /// Zero-fill each new segment ahead of need on a helper thread, so that appends overwrite written blocks and
    /// fdatasync flushes data only (with fallocate alone, the first write into each block also makes fdatasync
    /// commit the filesystem journal). Default true.
    pub zero_fill: bool,
    /// At most this many payload bytes wait in the queue; more appenders wait (back-pressure).
    pub max_queued_bytes: usize,
    /// At most this many appends wait in the queue; more appenders wait (back-pressure).
    pub max_queued_records: usize,
    /// Optional cap on the payload bytes one fsync covers. `None`: everything queued when the last fsync ended.
    pub max_batch_bytes: Option<usize>,
    /// Optional cap on the records one fsync covers.
    pub max_batch_records: Option<usize>,
    /// How long the writer thread spins for new work before it sleeps, after a batch of one or two records.
    /// Waking a sleeping thread costs tens of microseconds on a VM, so a lone appender that appends again at
    /// once gains from a spin; after a larger batch the writer does not spin (a busy log refills its queue by
    /// itself, and servers that share cores would pay for the spin). Default 50 us.
    pub idle_spin: std::time::Duration,
    /// Told, on the thread that did its IO (the writer thread, or an appender that found it idle), of every batch
    /// made durable: how many records it held and how long its fdatasync took. For metrics; it must return
    /// quickly (the next batch waits for it). Default none.
    pub on_batch: Option<BatchObserver>,
}

/// What [`WalOptions::on_batch`] calls: `(records, fsync time)` of each durable batch.
#[derive(Clone)]
pub struct BatchObserver(pub std::sync::Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchObserver")
    }
}

/// The largest payload a record read back may have, whatever `max_payload` is now: a log written under a higher
/// limit stays readable after the limit is lowered (a record over the current limit at the log's tail must not
/// read as a torn tail and be cut). The checksum, not the length, tells a record from garbage.
pub const READ_CEILING: usize = 1 << 30;

/// The default record payload limit.
pub const DEFAULT_MAX_PAYLOAD: usize = (1 << 20) + 1024;

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            first_segment_size: 4 << 20,
            max_payload: DEFAULT_MAX_PAYLOAD,
            sync: SyncMode::Fdatasync,
            zero_fill: true,
            max_queued_bytes: 64 << 20,
            max_queued_records: 1 << 16,
            max_batch_bytes: None,
            max_batch_records: None,
            idle_spin: std::time::Duration::from_micros(50),
            on_batch: None,
        }
    }
}

impl WalOptions {
    /// The payload limit for records read back: never below `READ_CEILING` (`max_payload` bounds appends).
    pub fn read_limit(&self) -> usize {
        self.max_payload.max(READ_CEILING)
    }

    /// The size of the segment after one of `previous` bytes (`None`: the log's first): twice the previous, at
    /// least `first_segment_size` and room for the largest record, at most `segment_size`.
    pub fn next_segment_size(&self, previous: Option<u64>) -> u64 {
        let grown = previous.map_or(self.first_segment_size, |p| p.saturating_mul(2));
        grown.max(self.first_segment_size).max(self.largest_segment_need()).min(self.segment_size)
    }

    /// The bytes a segment needs to hold one record of `max_payload`.
    fn largest_segment_need(&self) -> u64 {
        (HEADER_LEN + RECORD_HEADER_LEN) as u64 + self.max_payload as u64
    }

    /// Checks that the options fit together.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |m: String| Err(WalError::InvalidOptions(m));
        let largest = self.largest_segment_need();
        if self.max_payload > u32::MAX as usize {
            return invalid(format!("max_payload {} does not fit the record's 32-bit length", self.max_payload));
        }
        if self.segment_size < largest {
            return invalid(format!(
                "segment_size {} cannot hold a record of max_payload {}",
                self.segment_size, self.max_payload
            ));
        }
        if self.max_queued_bytes == 0 || self.max_queued_records == 0 {
            return invalid("queue bounds must be positive".into());
        }
        if self.max_batch_bytes == Some(0) || self.max_batch_records == Some(0) {
            return invalid("batch caps must be positive".into());
        }
        Ok(())
    }
}
