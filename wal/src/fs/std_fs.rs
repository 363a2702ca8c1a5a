//! [`StdFs`]: the real filesystem (std, with `fallocate`, `flock` and memory maps through libc and memmap2).

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::{FileSystem, WalFile};

/// The operating system's filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Box::new(StdFile::new(file)))
    }

    fn create_direct(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT);
        match options.open(path) {
            Ok(file) => Ok(Box::new(StdFile { direct: AtomicBool::new(true), ..StdFile::new(file) })),
            // A filesystem without direct IO (tmpfs) refuses the flag.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.create(path),
            Err(e) => Err(e),
        }
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn WalFile>> {
        if write {
            return Ok(Box::new(StdFile::new(OpenOptions::new().read(true).write(true).open(path)?)));
        }
        let (file, read_lock) = super::mapped::open_read_only(path)?;
        Ok(Box::new(StdFile { _read_lock: read_lock, ..StdFile::new(file) }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Debug + Send + Sync>> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        // SAFETY: flock only reads its integer arguments; the descriptor stays open inside the returned box, and
        // closing it releases the lock.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::new(file))
    }
}

/// A file of [`StdFs`].
#[derive(Debug)]
struct StdFile {
    file: File,
    /// Opened with `O_DIRECT`, and no write has needed it cleared yet.
    direct: AtomicBool,
    /// Opened read-only: the shared lock that tells the log a reader holds it (see [`super::mapped`]).
    _read_lock: Option<File>,
}

impl StdFile {
    fn new(file: File) -> StdFile {
        StdFile { file, direct: AtomicBool::new(false), _read_lock: None }
    }

    /// Turns direct IO off: a write it refused (`EINVAL`: not aligned, or a filesystem that takes the flag but
    /// not the writes) is then buffered like any other.
    fn stop_direct(&self) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl only reads its integer arguments; the descriptor is open for the calls' duration.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.direct.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl WalFile for StdFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_all_at(buf, offset) {
            // A direct write that failed part way wrote whole blocks before it; writing it all again is the same.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.direct.load(Ordering::Relaxed) => {
                self.stop_direct()?;
                self.file.write_all_at(buf, offset)
            }
            done => done,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len_off = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: fallocate only reads its integer arguments; the descriptor is open for the call's duration.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len_off) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err);
        }
        // The filesystem cannot preallocate: write zeros instead, which allocates just as well.
        let from = self.size()?;
        crate::fsutil::write_zeros(self, from, len)
    }

    fn map(&self, populate: bool) -> io::Result<Bytes> {
        let mut options = memmap2::MmapOptions::new();
        if populate {
            options.populate();
        }
        // SAFETY: the log holds the directory lock, so no other writer of ours touches the file. The log never
        // shrinks a file that may be mapped below an offset a reader was told is valid: truncation rewrites into
        // a new file and renames it, sealing only drops preallocated zeros past the durable end. Snapshot files
        // (the other files mapped) are written once under a temporary name and never modified after their
        // rename. Modification by a foreign process is outside the contract, as for every memory-mapped store.
        let map = unsafe { options.map(&self.file) }?;
        super::mapped::map(&self.file, map)
    }

    fn is_held(&self) -> io::Result<bool> {
        super::mapped::is_locked_by_a_reader(&self.file)
    }

    fn map_is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::DIRECT_ALIGN;
    use super::*;

    /// A page-aligned buffer of `len` bytes, filled with `byte`.
    fn aligned(len: usize, byte: u8) -> memmap2::MmapMut {
        let mut map = memmap2::MmapMut::map_anon(len).unwrap();
        map.fill(byte);
        map
    }

    #[test]
    fn a_direct_file_takes_aligned_blocks_a_padded_tail_and_unaligned_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let file = StdFs.create_direct(&path).unwrap();
        file.write_at(&aligned(2 * DIRECT_ALIGN, 1), 0).unwrap();
        // The tail: padded to a whole block, then cut back.
        file.write_at(&aligned(DIRECT_ALIGN, 2), 2 * DIRECT_ALIGN as u64).unwrap();
        file.set_len(2 * DIRECT_ALIGN as u64 + 10).unwrap();
        // Not aligned at all (where direct IO refuses it, the file falls back to buffered writes).
        file.write_at(b"xyz", 5).unwrap();
        file.sync_all().unwrap();
        drop(file);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * DIRECT_ALIGN + 10);
        assert_eq!(&bytes[..5], &[1; 5]);
        assert_eq!(&bytes[5..8], b"xyz");
        assert!(bytes[8..2 * DIRECT_ALIGN].iter().all(|&b| b == 1));
        assert!(bytes[2 * DIRECT_ALIGN..].iter().all(|&b| b == 2));
    }
}
