//! Small filesystem operations the log relies on: directory fsync, real preallocation, the directory lock,
//! and the failpoints that tests use to make any of them fail.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::fs::{FileSystem, WalFile};

/// The name of the lock file that keeps two writers out of one directory.
pub const LOCK_FILE: &str = "LOCK";

/// Fails with the error a failpoint names ("ENOSPC", "EROFS", "EIO"), when the `failpoints` feature is on and the
/// failpoint is configured; otherwise compiles to nothing. `failpoint!(name, short: write)` also takes a short
/// write: configured as `return(short)`, it runs `write` (which writes part of the data) and then fails with
/// ENOSPC, as a full disk does halfway through a write.
///
/// Other crates (`snapshot`, `replication`) use this one macro under their own `failpoints` features, which turn
/// on this crate's. Each crate lists its failpoint names in one place; the log's:
///
/// | name | site |
/// |---|---|
/// | `wal::write`, `wal::fdatasync`, `wal::fsync` | a segment's write and syncs |
/// | `wal::preallocate`, `wal::rename`, `wal::remove`, `wal::sync_dir` | segment files and the directory |
/// | `wal::base_create`, `wal::base_write` (short), `wal::base_fsync`, `wal::base_rename` | writing the base file |
/// | `wal::base_read` | reading the base file |
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        $crate::__fail::fail_point!($name, |arg: Option<String>| Err($crate::__injected(arg)))
    };
    ($name:expr, short: $write:expr) => {
        $crate::__fail::fail_point!($name, |arg: Option<String>| {
            if arg.as_deref() == Some("short") {
                $write?;
            }
            Err($crate::__injected(arg))
        })
    };
}
pub(crate) use failpoint;

/// The error an injected failure returns: the raw OS error its failpoint's argument names (EIO by default; a
/// short write fails with ENOSPC).
#[doc(hidden)]
pub fn injected(arg: Option<String>) -> io::Error {
    let errno = match arg.as_deref() {
        Some("ENOSPC" | "short") => libc::ENOSPC,
        Some("EROFS") => libc::EROFS,
        _ => libc::EIO,
    };
    io::Error::from_raw_os_error(errno)
}

/// Makes a directory's entries (creations, renames, deletions) durable.
pub fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), WalError> {
    let sync = || -> io::Result<()> {
        failpoint!("wal::sync_dir");
        fs.sync_dir(dir)
    };
    sync().map_err(|e| WalError::io("fsync directory", dir, e))
}

/// Allocates `len` bytes of disk for `file` for real (not a sparse file), so that later writes inside that range
/// need no block allocation and fdatasync need not flush the file size.
pub fn preallocate(file: &dyn WalFile, len: u64) -> io::Result<()> {
    failpoint!("wal::preallocate");
    file.allocate(len)
}

/// Writes zeros over `[from, to)` of `file`, [`ZERO_WRITE`] bytes per write.
pub fn write_zeros(file: &(impl WalFile + ?Sized), from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; usize::try_from((to.saturating_sub(from)).min(ZERO_WRITE)).expect("at most 64 KiB")];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(zeros.len() as u64)).expect("at most 64 KiB");
        file.write_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The size of each write of zeros. The page cache keeps a file's pages in folios as large as the writes that
/// brought them in (ext4 since Linux 6.16), and every later small write into a folio walks all of its blocks:
/// after zeros written 1 MiB at a time, a 200-byte append cost 4.1 us of CPU against 1.4-1.8 us after 64 KiB
/// writes (BENCHMARKS.md). A zero-filled segment is appended to in small writes for its whole life.
pub const ZERO_WRITE: u64 = 64 << 10;

/// An exclusive lock on a log directory, held for the life of the open log.
#[derive(Debug)]
pub struct DirLock {
    _guard: Box<dyn std::fmt::Debug + Send + Sync>,
}

impl DirLock {
    /// Takes the lock, failing at once if another open log holds it.
    pub fn acquire(fs: &dyn FileSystem, dir: &Path) -> Result<DirLock, WalError> {
        let path: PathBuf = dir.join(LOCK_FILE);
        match fs.lock(&path) {
            Ok(guard) => Ok(DirLock { _guard: guard }),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Err(WalError::Locked { path }),
            Err(e) => Err(WalError::io("lock", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;

    /// A file that records the writes it gets.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);

    impl WalFile for Recorder {
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.0.lock().unwrap().push((offset, buf.to_vec()));
            Ok(())
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<usize> {
            Ok(0)
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn sync_all(&self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn allocate(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn map(&self, _: bool) -> io::Result<Bytes> {
            Ok(Bytes::new())
        }
        fn map_is_live(&self) -> bool {
            false
        }
    }

    #[test]
    fn zeros_cover_the_range_exactly_in_writes_of_at_most_zero_write_bytes() {
        for (from, to) in [(0, 0), (0, 1), (100, ZERO_WRITE + 100), (7, 3 * ZERO_WRITE + 5), (0, 4 << 20)] {
            let file = Recorder::default();
            write_zeros(&file, from, to).unwrap();
            let writes = file.0.into_inner().unwrap();
            let mut at = from;
            for (offset, bytes) in &writes {
                assert_eq!(*offset, at, "contiguous from {from}");
                assert!(!bytes.is_empty() && bytes.len() as u64 <= ZERO_WRITE, "a write of {} bytes", bytes.len());
                assert!(bytes.iter().all(|&b| b == 0));
                at += bytes.len() as u64;
            }
            assert_eq!(at, to, "[{from}, {to}) covered");
        }
    }
}
