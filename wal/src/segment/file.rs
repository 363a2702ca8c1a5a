//! One segment file on disk: creation (complete before it gets its final name), positional writes, fsync, and
//! the read-only memory map that readers use.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, SegmentHeader, HEADER_LEN, TMP_EXTENSION};
use crate::error::WalError;
use crate::fs::{FileSystem, WalFile};
use crate::fsutil::{self, failpoint};

/// An open segment file.
#[derive(Debug)]
pub struct SegmentFile {
    file: Box<dyn WalFile>,
    path: PathBuf,
}

impl SegmentFile {
    /// Creates a segment in `dir` with `header` followed by `records` (already encoded), preallocated to
    /// `capacity` bytes, durable (file and directory entry) before it returns. A crash part-way leaves at most a
    /// `.tmp` file, which the next open deletes; an existing segment of the same name is replaced atomically.
    pub fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        header: &SegmentHeader,
        records: &[u8],
        capacity: u64,
    ) -> Result<SegmentFile, WalError> {
        let path = dir.join(format::file_name(header.first_zxid));
        let tmp = path.with_extension(format!("{}.{TMP_EXTENSION}", format::EXTENSION));
        let file = fs.create(&tmp).map_err(|e| WalError::io("create", &tmp, e))?;
        fsutil::preallocate(&*file, capacity).map_err(|e| WalError::io("preallocate", &tmp, e))?;
        let file = SegmentFile { file, path: tmp.clone() };
        file.write_at(&header.encode(), 0)?;
        file.write_at(records, HEADER_LEN as u64)?;
        file.sync_all()?;
        rename(fs, &tmp, &path)?;
        fsutil::sync_dir(fs, dir)?;
        Ok(SegmentFile { file: file.file, path })
    }

    /// Turns a prepared spare file (allocated and zero-filled, see [`super::spare`]) into the segment with
    /// `header`, durable before it returns: the header is written and fdatasynced under the spare's name, then the
    /// file is renamed and the directory fsynced.
    pub fn from_spare(
        fs: &dyn FileSystem,
        dir: &Path,
        header: &SegmentHeader,
        spare: Box<dyn WalFile>,
        spare_path: &Path,
    ) -> Result<SegmentFile, WalError> {
        let path = dir.join(format::file_name(header.first_zxid));
        let file = SegmentFile { file: spare, path: spare_path.to_path_buf() };
        file.write_at(&header.encode(), 0)?;
        file.sync_data()?;
        rename(fs, spare_path, &path)?;
        fsutil::sync_dir(fs, dir)?;
        Ok(SegmentFile { file: file.file, path })
    }

    /// Opens an existing segment for reading and writing.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> Result<SegmentFile, WalError> {
        let file = fs.open(path, true).map_err(|e| WalError::io("open", path, e))?;
        Ok(SegmentFile { file, path: path.to_path_buf() })
    }

    /// Opens an existing segment for reading only: what inspection uses, so that it needs no write permission
    /// and cannot change the file.
    pub fn open_read_only(fs: &dyn FileSystem, path: &Path) -> Result<SegmentFile, WalError> {
        let file = fs.open(path, false).map_err(|e| WalError::io("open", path, e))?;
        Ok(SegmentFile { file, path: path.to_path_buf() })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub fn file_len(&self) -> Result<u64, WalError> {
        self.file.size().map_err(|e| WalError::io("stat", &self.path, e))
    }

    /// Makes sure the file is at least `capacity` bytes, allocated.
    pub fn ensure_capacity(&self, capacity: u64) -> Result<(), WalError> {
        if self.file_len()? < capacity {
            fsutil::preallocate(&*self.file, capacity).map_err(|e| WalError::io("preallocate", &self.path, e))?;
            self.sync_all()?;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), WalError> {
        let write = || -> io::Result<()> {
            failpoint!("wal::write");
            self.file.write_at(buf, offset)
        };
        write().map_err(|e| WalError::io("write", &self.path, e))
    }

    /// Writes zeros over `[from, to)`.
    pub fn zero(&self, from: u64, to: u64) -> Result<(), WalError> {
        fsutil::write_zeros(&*self.file, from, to).map_err(|e| WalError::io("write zeros", &self.path, e))
    }

    /// fdatasync: makes the written data durable (the size does not change, so no metadata needs to go).
    pub fn sync_data(&self) -> Result<(), WalError> {
        let sync = || -> io::Result<()> {
            failpoint!("wal::fdatasync");
            self.file.sync_data()
        };
        sync().map_err(|e| WalError::io("fdatasync", &self.path, e))
    }

    /// fsync: data and metadata.
    pub fn sync_all(&self) -> Result<(), WalError> {
        let sync = || -> io::Result<()> {
            failpoint!("wal::fsync");
            self.file.sync_all()
        };
        sync().map_err(|e| WalError::io("fsync", &self.path, e))
    }

    /// Maps the whole file read-only (on the real filesystem, a memory map: see [`crate::fs::StdFs`]).
    pub fn map(&self) -> Result<Bytes, WalError> {
        self.file.map(false).map_err(|e| WalError::io("mmap", &self.path, e))
    }

    /// Maps the whole file read-only with its pages faulted in up front, for a full sequential scan.
    pub fn map_populated(&self) -> Result<Bytes, WalError> {
        self.file.map(true).map_err(|e| WalError::io("mmap", &self.path, e))
    }

    /// Brings `data`, an earlier map of this file, up to date after writes: a memory map already is; a copy (a
    /// simulated filesystem's) is taken again.
    pub fn refresh(&self, data: &mut Bytes) -> Result<(), WalError> {
        if !self.file.map_is_live() {
            *data = self.map()?;
        }
        Ok(())
    }

    /// Reads the header.
    pub fn read_header(&self) -> Result<SegmentHeader, WalError> {
        let mut buf = [0u8; HEADER_LEN];
        let n = self.file.read_at(&mut buf, 0).map_err(|e| WalError::io("read", &self.path, e))?;
        SegmentHeader::decode(&buf[..n], &self.path)
    }
}

/// Renames `from` to `to` (the caller fsyncs the directory).
pub fn rename(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<(), WalError> {
    let op = || -> io::Result<()> {
        failpoint!("wal::rename");
        fs.rename(from, to)
    };
    op().map_err(|e| WalError::io("rename", from, e))
}

/// Deletes a segment file (the caller fsyncs the directory).
pub fn remove(fs: &dyn FileSystem, path: &Path) -> Result<(), WalError> {
    let op = || -> io::Result<()> {
        failpoint!("wal::remove");
        fs.remove(path)
    };
    op().map_err(|e| WalError::io("delete", path, e))
}
