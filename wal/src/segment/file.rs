//! One segment file on disk: creation (complete before it gets its final name), positional writes, fsync, and
//! the read-only memory map that readers use.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, SegmentHeader, HEADER_LEN, TMP_EXTENSION};
use crate::error::WalError;
use crate::fsutil::{self, failpoint};

/// An open segment file.
#[derive(Debug)]
pub struct SegmentFile {
    file: File,
    path: PathBuf,
}

impl SegmentFile {
    /// Creates a segment in `dir` with `header` followed by `records` (already encoded), preallocated to
    /// `capacity` bytes, durable (file and directory entry) before it returns. A crash part-way leaves at most a
    /// `.tmp` file, which the next open deletes; an existing segment of the same name is replaced atomically.
    pub fn create(dir: &Path, header: &SegmentHeader, records: &[u8], capacity: u64) -> Result<SegmentFile, WalError> {
        let path = dir.join(format::file_name(header.first_zxid));
        let tmp = path.with_extension(format!("{}.{TMP_EXTENSION}", format::EXTENSION));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| WalError::io("create", &tmp, e))?;
        fsutil::preallocate(&file, capacity).map_err(|e| WalError::io("preallocate", &tmp, e))?;
        let file = SegmentFile { file, path: tmp.clone() };
        file.write_at(&header.encode(), 0)?;
        file.write_at(records, HEADER_LEN as u64)?;
        file.sync_all()?;
        rename(&tmp, &path)?;
        fsutil::sync_dir(dir)?;
        Ok(SegmentFile { file: file.file, path })
    }

    /// Turns a prepared spare file (allocated and zero-filled, see [`super::spare`]) into the segment with
    /// `header`, durable before it returns: the header is written and fdatasynced under the spare's name, then the
    /// file is renamed and the directory fsynced.
    pub fn from_spare(
        dir: &Path,
        header: &SegmentHeader,
        spare: File,
        spare_path: &Path,
    ) -> Result<SegmentFile, WalError> {
        let path = dir.join(format::file_name(header.first_zxid));
        let file = SegmentFile { file: spare, path: spare_path.to_path_buf() };
        file.write_at(&header.encode(), 0)?;
        file.sync_data()?;
        rename(spare_path, &path)?;
        fsutil::sync_dir(dir)?;
        Ok(SegmentFile { file: file.file, path })
    }

    /// Opens an existing segment for reading and writing.
    pub fn open(path: &Path) -> Result<SegmentFile, WalError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| WalError::io("open", path, e))?;
        Ok(SegmentFile { file, path: path.to_path_buf() })
    }

    /// Opens an existing segment for reading only: what inspection uses, so that it needs no write permission
    /// and cannot change the file.
    pub fn open_read_only(path: &Path) -> Result<SegmentFile, WalError> {
        let file = File::open(path).map_err(|e| WalError::io("open", path, e))?;
        Ok(SegmentFile { file, path: path.to_path_buf() })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub fn file_len(&self) -> Result<u64, WalError> {
        Ok(self.file.metadata().map_err(|e| WalError::io("stat", &self.path, e))?.len())
    }

    /// Makes sure the file is at least `capacity` bytes, allocated.
    pub fn ensure_capacity(&self, capacity: u64) -> Result<(), WalError> {
        if self.file_len()? < capacity {
            fsutil::preallocate(&self.file, capacity).map_err(|e| WalError::io("preallocate", &self.path, e))?;
            self.sync_all()?;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), WalError> {
        let write = || -> io::Result<()> {
            failpoint!("wal::write");
            self.file.write_all_at(buf, offset)
        };
        write().map_err(|e| WalError::io("write", &self.path, e))
    }

    /// Writes zeros over `[from, to)`.
    pub fn zero(&self, from: u64, to: u64) -> Result<(), WalError> {
        fsutil::write_zeros(&self.file, from, to).map_err(|e| WalError::io("write zeros", &self.path, e))
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

    /// Maps the whole file read-only.
    pub fn map(&self) -> Result<Bytes, WalError> {
        self.map_with(&memmap2::MmapOptions::new())
    }

    /// Maps the whole file read-only with its pages faulted in up front, for a full sequential scan.
    pub fn map_populated(&self) -> Result<Bytes, WalError> {
        self.map_with(memmap2::MmapOptions::new().populate())
    }

    fn map_with(&self, options: &memmap2::MmapOptions) -> Result<Bytes, WalError> {
        // SAFETY: the log holds the directory lock, so no other writer of ours touches the file. The log never
        // shrinks a file that may be mapped below an offset a reader was told is valid: truncation rewrites into
        // a new file and renames it, sealing only drops preallocated zeros past the durable end. Modification by
        // a foreign process is outside the contract, as for every memory-mapped store.
        let map = unsafe { options.map(&self.file) }.map_err(|e| WalError::io("mmap", &self.path, e))?;
        Ok(Bytes::from_owner(map))
    }

    /// Reads the header.
    pub fn read_header(&self) -> Result<SegmentHeader, WalError> {
        let mut buf = [0u8; HEADER_LEN];
        let n = read_up_to(&self.file, &mut buf).map_err(|e| WalError::io("read", &self.path, e))?;
        SegmentHeader::decode(&buf[..n], &self.path)
    }
}

fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Renames `from` to `to` (the caller fsyncs the directory).
pub fn rename(from: &Path, to: &Path) -> Result<(), WalError> {
    let op = || -> io::Result<()> {
        failpoint!("wal::rename");
        fs::rename(from, to)
    };
    op().map_err(|e| WalError::io("rename", from, e))
}

/// Deletes a segment file (the caller fsyncs the directory).
pub fn remove(path: &Path) -> Result<(), WalError> {
    let op = || -> io::Result<()> {
        failpoint!("wal::remove");
        fs::remove_file(path)
    };
    op().map_err(|e| WalError::io("delete", path, e))
}
