//! Readers that announce themselves, so that a file can be told apart as safe to overwrite in place: the log
//! recycles a purged segment as its next spare ([`crate::segment::spare`]) only when no reader, in this process
//! or another (`ensemble wal dump` against a running server), still holds bytes of it.
//!
//! The announcement is a shared `flock` on a descriptor of the reader's own:
//! - every memory map holds one until the last [`Bytes`] sharing it drops ([`map`]);
//! - a read-only open ([`open_read_only`]) holds one while the file is open, taken before the reader looks at
//!   the file and followed by a check that the name still leads to it: a segment renamed away (to be recycled)
//!   between the reader's open and its lock reads as gone, as a deleted one would;
//! - the writer overwrites a file only if it can take an exclusive lock at once ([`is_locked_by_a_reader`]), and
//!   renames it away before that check, so no reader can find it by name afterwards.
//!
//! Locks are per open file description, so each lock is taken on a fresh one (`/proc/self/fd/N`), never on a
//! descriptor another holder shares. Without `flock` (or `/proc`) every file counts as read: none is recycled.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;

/// A fresh open file description of `file` (read-only), for a lock of its own.
fn reopen(file: &File) -> io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    // SAFETY: flock only reads its integer arguments.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `error` says the filesystem has no `flock`.
fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS))
}

/// A shared lock on a description of its own, held until it drops (`None`: none could be had).
///
/// Never waits: an exclusive holder is either the log's writer checking a file it renamed away already (which
/// a reader's name check then reports gone) or a lock file (`LOCK`, held by a running server for as long as it
/// runs), and a reader must not hang on either.
fn shared_lock(file: &File) -> io::Result<Option<File>> {
    // Without `/proc` there is no fresh description to lock; the writer then cannot lock one either, and
    // counts every file as read.
    let Ok(own) = reopen(file) else { return Ok(None) };
    match flock(&own, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => Ok(Some(own)),
        Err(e) if unsupported(&e) || e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A memory map and the shared lock that announces it.
struct Announced {
    map: memmap2::Mmap,
    _lock: Option<File>,
}

impl AsRef<[u8]> for Announced {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

/// `map` of `file` as bytes, announced until the last of them drops.
pub(super) fn map(file: &File, map: memmap2::Mmap) -> io::Result<Bytes> {
    let lock = shared_lock(file)?;
    Ok(Bytes::from_owner(Announced { map, _lock: lock }))
}

/// Opens `path` read-only, announced while the returned lock is held (keep it with the file).
pub(super) fn open_read_only(path: &Path) -> io::Result<(File, Option<File>)> {
    let file = File::open(path)?;
    let lock = shared_lock(&file)?;
    let (opened, named) = (file.metadata()?, std::fs::metadata(path)?);
    if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "the file was renamed or removed as it was opened"));
    }
    Ok((file, lock))
}

/// Whether a reader holds `file` (or the filesystem cannot say).
pub(super) fn is_locked_by_a_reader(file: &File) -> io::Result<bool> {
    let Ok(own) = reopen(file) else { return Ok(true) };
    match flock(&own, libc::LOCK_EX | libc::LOCK_NB) {
        // Released as `own` closes: the caller renamed the file away already, so no new reader can announce
        // itself on it.
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) || unsupported(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_of_an_exclusively_locked_file_does_not_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let holder = File::create(&path).unwrap();
        flock(&holder, libc::LOCK_EX).unwrap();
        let (reader, lock) = open_read_only(&path).unwrap();
        assert!(lock.is_none(), "no shared lock beside an exclusive one");
        // SAFETY: a private test file nothing writes.
        assert!(map(&reader, unsafe { memmap2::Mmap::map(&reader) }.unwrap()).unwrap().is_empty());
    }

    #[test]
    fn a_file_is_held_while_a_slice_of_any_map_or_a_read_only_open_lives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let writer = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert!(!is_locked_by_a_reader(&writer).unwrap());
        // SAFETY: a private test file nothing writes while it is mapped.
        let mapped = |f: &File| map(f, unsafe { memmap2::Mmap::map(f) }.unwrap()).unwrap();
        let (first, second) = (mapped(&writer), mapped(&writer));
        let slice = first.slice(2..4);
        drop((first, second));
        assert!(is_locked_by_a_reader(&writer).unwrap(), "the slice still holds its map");
        // Checking does not take the file from the reader.
        assert!(is_locked_by_a_reader(&writer).unwrap());
        drop(slice);
        assert!(!is_locked_by_a_reader(&writer).unwrap());
        let (reader, lock) = open_read_only(&path).unwrap();
        assert!(is_locked_by_a_reader(&writer).unwrap(), "an open reader holds it");
        drop((reader, lock));
        assert!(!is_locked_by_a_reader(&writer).unwrap());
    }
}
