//! The filesystem seam: every file the log (and the snapshot crate, the epochs file, the repair mark) writes or
//! reads goes through a [`FileSystem`], so that tests can run them on a simulated disk that loses power (`SimFs`, feature `sim`) while the server runs on the real one
//! ([`StdFs`]). Modelled on raft-engine's `env::FileSystem`, cut down to exactly the operations the log does.
//!
//! The failpoints (`wal::failpoint!`) stay at the log's call sites, above this seam, so they fire the same way on
//! either filesystem.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

mod mapped;
#[cfg(any(test, feature = "sim"))]
mod sim;
mod std_fs;

#[cfg(any(test, feature = "sim"))]
pub use sim::SimFs;
pub use std_fs::StdFs;

/// The alignment of a file made by [`FileSystem::create_direct`]: of its writes' offsets, lengths and buffers.
/// (The logical block size of every common disk divides it.)
pub const DIRECT_ALIGN: usize = 4096;

/// A shared handle to a filesystem.
pub type Fs = Arc<dyn FileSystem>;

/// The operations the log does on directories and file names.
///
/// Durability follows POSIX: data written to a file is durable once the file is synced ([`WalFile::sync_data`]
/// or [`WalFile::sync_all`]); a create, rename or remove is durable once its directory is synced
/// ([`FileSystem::sync_dir`]). Syncing a file does not make its name durable.
pub trait FileSystem: Debug + Send + Sync {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates `path` (or empties it if it exists), open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Creates `path` like [`FileSystem::create`], for a large file written once, front to back, in large
    /// blocks (a snapshot): where the filesystem can, the data goes from the caller's buffer to the disk without
    /// a copy in the page cache (Linux's `O_DIRECT`), which costs a twentieth of the CPU of a buffered write and
    /// leaves the cache to the log. Writes should then be [`DIRECT_ALIGN`]-aligned (offset, length and buffer);
    /// the last block may be padded and the file cut back with [`WalFile::set_len`]. A write that is not still
    /// works, buffered. By default, [`FileSystem::create`].
    fn create_direct(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.create(path)
    }
    /// Opens an existing file, for reading and writing if `write`, else read-only.
    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn WalFile>>;
    /// Reads a whole (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to` atomically if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it (the leftovers of a snapshot transfer a crash interrupted).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir` (files and directories), in no particular order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the creates, renames and removes in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (creating it if needed), held until the returned guard drops. Fails with
    /// `EWOULDBLOCK` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Debug + Send + Sync>>;
}

/// An open file.
pub trait WalFile: Debug + Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Reads into `buf` from `offset`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// fdatasync: makes the data (and the size it needs) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: makes data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes, or grows it with zeros (durable with the next [`WalFile::sync_all`]).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Allocates the file up to `len` bytes for real (not sparse), growing it if it is shorter.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The whole file as bytes (`populate`: read it all up front, for a full sequential scan).
    fn map(&self, populate: bool) -> io::Result<Bytes>;
    /// Whether bytes from [`WalFile::map`] show later writes (a shared memory map does; a copy does not, and the
    /// writer then maps again after each write).
    fn map_is_live(&self) -> bool;
    /// Whether a reader may still hold bytes of this file: a [`WalFile::map`] of it whose bytes are alive, or a
    /// read-only [`FileSystem::open`], in this process or another. A file no one holds can be overwritten in
    /// place without changing bytes a reader sees. By default `true`, which never allows that.
    fn is_held(&self) -> io::Result<bool> {
        Ok(true)
    }
}
