//! The spare segment: a file allocated and zero-filled ahead of need on a helper thread.
//!
//! fallocate alone leaves *unwritten* extents: the first write into each block converts it, and the fdatasync
//! after that must commit the filesystem journal too (on ext4 about twice the cost of a data-only flush on this
//! kind of machine). Writing zeros over the whole segment first makes every later append an overwrite of written
//! blocks, so fdatasync flushes data only. Zeroing 64 MiB takes far longer than an fsync, so it happens here,
//! off the append path; rolling then costs a header write, an fdatasync and a rename. If the spare is not ready
//! when the log rolls, the writer creates the segment the plain way (fallocate only) and carries on.
//!
//! A purged segment becomes the next spare when none is under way ([`Spare::recycle`]): zeroed in place, it
//! reuses the page-cache pages the segment already had instead of taking fresh ones. On a virtual machine a page
//! the guest has not touched lately can cost far more than the copy into it (zeroing a new 64 MiB file took
//! 0.43 s of CPU on the development VM, the same file in place 0.01-0.02 s), and under a steady write load the
//! spare's fresh pages were a tenth of the servers' CPU.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::WalError;
use crate::fs::{Fs, WalFile};
use crate::fsutil;

/// The spare's file name; the next open deletes a leftover one (it may be half zeroed).
pub const SPARE_FILE: &str = "spare.tmp";

/// Zeros are written in pieces of this size, checking for cancellation between them.
const PIECE: u64 = 1 << 20;

/// Prepares one spare segment at a time.
#[derive(Debug)]
pub struct Spare {
    fs: Fs,
    path: PathBuf,
    cancel: Arc<AtomicBool>,
    job: Option<JoinHandle<Result<Box<dyn WalFile>, WalError>>>,
}

impl Spare {
    /// A preparer of spares in `dir`; it starts working at the first [`Spare::prepare`].
    pub fn new(fs: Fs, dir: &Path) -> Spare {
        Spare { fs, path: dir.join(SPARE_FILE), cancel: Arc::new(AtomicBool::new(false)), job: None }
    }

    /// The path of the spare file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spare, if it is ready (`None` if it is still being prepared, or if preparing it failed: the caller
    /// then creates a segment the plain way, which reports the disk's error if it persists).
    pub fn take_ready(&mut self) -> Option<Box<dyn WalFile>> {
        if !self.job.as_ref()?.is_finished() {
            return None;
        }
        self.join()
    }

    /// Prepares a spare of `capacity` bytes if nobody has started one yet, and waits for it (`None`: preparing it
    /// failed). A spare started earlier keeps the size it was started with.
    pub fn wait(&mut self, capacity: u64) -> Option<Box<dyn WalFile>> {
        self.prepare(capacity);
        self.join()
    }

    fn join(&mut self) -> Option<Box<dyn WalFile>> {
        match self.job.take()?.join() {
            Ok(Ok(file)) => Some(file),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not prepare a spare segment");
                None
            }
            Err(_) => {
                tracing::error!("the spare segment thread panicked");
                None
            }
        }
    }

    /// Starts preparing the next spare, of `capacity` bytes, unless one is being prepared or ready.
    pub fn prepare(&mut self, capacity: u64) {
        if self.job.is_some() {
            return;
        }
        let (fs, path) = (self.fs.clone(), self.path.clone());
        self.start(move |cancel| {
            let file = fs.create(&path).map_err(|e| WalError::io("create", &path, e))?;
            fsutil::preallocate(&*file, capacity).map_err(|e| WalError::io("preallocate", &path, e))?;
            fill(file, &path, capacity, cancel)
        });
    }

    /// Whether no spare is being prepared or ready: [`Spare::recycle`] would take a file.
    pub fn is_idle(&self) -> bool {
        self.job.is_none()
    }

    /// Makes `file`, a purged segment of `capacity` bytes already renamed to [`Spare::path`] and no longer mapped
    /// by anyone ([`WalFile::is_held`]), the next spare by zeroing it in place. It must be idle.
    pub fn recycle(&mut self, file: Box<dyn WalFile>, capacity: u64) {
        assert!(self.is_idle(), "a spare is under way already");
        let path = self.path.clone();
        self.start(move |cancel| fill(file, &path, capacity, cancel));
    }

    fn start(&mut self, work: impl FnOnce(&AtomicBool) -> Result<Box<dyn WalFile>, WalError> + Send + 'static) {
        let cancel = self.cancel.clone();
        let job = std::thread::Builder::new().name("wal-spare".into()).spawn(move || work(&cancel));
        match job {
            Ok(job) => self.job = Some(job),
            Err(error) => tracing::warn!(%error, "could not start the spare segment thread"),
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(job) = self.job.take() {
            let _ = job.join();
        }
    }
}

/// Zeros `file` (allocated to `capacity` bytes) from start to end, durably.
fn fill(file: Box<dyn WalFile>, path: &Path, capacity: u64, cancel: &AtomicBool) -> Result<Box<dyn WalFile>, WalError> {
    let io = |op| move |e| WalError::io(op, path, e);
    let started = std::time::Instant::now();
    let mut at = 0;
    while at < capacity {
        if cancel.load(Ordering::Relaxed) {
            return Err(WalError::Closed);
        }
        let end = (at + PIECE).min(capacity);
        fsutil::write_zeros(&*file, at, end).map_err(io("zero-fill"))?;
        // Flushing piece by piece keeps the dirty backlog small, so that the appenders' fdatasyncs never queue
        // behind a 64 MiB writeback.
        file.sync_data().map_err(io("fdatasync"))?;
        at = end;
    }
    file.sync_all().map_err(io("fsync"))?;
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "spare segment zero-filled");
    Ok(file)
}
