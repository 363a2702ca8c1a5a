//! The mark of a server repairing its log from its peers.
//!
//! A server whose log held a damaged record cuts the log before it (the node does, at start) and takes the rest
//! from the leader. Until it has, it must not vote as if it lacked what it lost, nor lead: it marks itself, with
//! how far its log reached before the cut, in `<dir>/repairing`, and the peer elects as no candidate with that
//! zxid (see [`crate::election`]). The mark is written before the log is cut and removed once the server
//! synced with a leader (its log then holds every committed txn again), so a crash at any point leaves either
//! the uncut log or the mark.
//!
//! ```text
//!  <dir>/repairing   magic "ENRP" | version u32 BE (1) | vouched zxid u64 BE | crc32c u32 BE (of the 16 bytes before)
//! ```
//!
//! Written as tmp, fsync, rename, directory fsync; removed with a directory fsync (also when already gone). Each step has a failpoint
//! (listed in the crate's docs).

use std::io;
use std::path::{Path, PathBuf};

use wal::fs::{FileSystem, StdFs};
use wal::{failpoint, Zxid};

const MAGIC: &[u8; 4] = b"ENRP";
const VERSION: u32 = 1;
const LEN: usize = 4 + 4 + 8 + 4;
const FILE: &str = "repairing";

/// The mark could not be read, written or removed.
#[derive(Debug, thiserror::Error)]
pub enum RepairingError {
    /// The file is damaged: how far the log reached is unknown, so the server cannot vote safely.
    #[error("{path}: damaged repair mark ({why}); it records how far this server's log reached before a repair")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The disk failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RepairingError + 'a {
    move |source| RepairingError::Io { op, path: path.to_owned(), source }
}

/// The encoding of a mark vouching for `zxid`.
fn encode(zxid: Zxid) -> [u8; LEN] {
    let mut buf = [0; LEN];
    buf[..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&VERSION.to_be_bytes());
    buf[8..16].copy_from_slice(&zxid.0.to_be_bytes());
    let crc = crc32c::crc32c(&buf[..16]);
    buf[16..].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// The zxid a mark vouches for.
fn decode(buf: &[u8]) -> Result<Zxid, &'static str> {
    if buf.len() != LEN {
        return Err("wrong length");
    }
    if crc32c::crc32c(&buf[..16]).to_be_bytes() != buf[16..] {
        return Err("checksum mismatch");
    }
    if &buf[..4] != MAGIC {
        return Err("bad magic");
    }
    if buf[4..8] != VERSION.to_be_bytes() {
        return Err("unknown version");
    }
    Ok(Zxid(u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"))))
}

/// How far the log of the server in `dir` reached before a repair, if it is repairing (the real filesystem).
pub fn read(dir: &Path) -> Result<Option<Zxid>, RepairingError> {
    read_with(&StdFs, dir)
}

/// How far the log of the server in `dir` on `fs` reached before a repair, if it is repairing.
pub fn read_with(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Zxid>, RepairingError> {
    let path = dir.join(FILE);
    let read = || {
        failpoint!("replication::repairing_read");
        fs.read(&path)
    };
    match read() {
        Ok(buf) => decode(&buf).map(Some).map_err(|why| RepairingError::Damaged { path, why }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Marks the server in `dir` as repairing on the real filesystem (see [`mark_with`]).
pub fn mark(dir: &Path, zxid: Zxid) -> Result<Zxid, RepairingError> {
    mark_with(&StdFs, dir, zxid)
}

/// Marks the server in `dir` on `fs` as repairing, its log having reached `zxid`; durable when it returns. A
/// mark already there is kept if it vouches for more (a repair interrupted and started again).
pub fn mark_with(fs: &dyn FileSystem, dir: &Path, zxid: Zxid) -> Result<Zxid, RepairingError> {
    let zxid = read_with(fs, dir)?.map_or(zxid, |before| before.max(zxid));
    let (tmp, path) = (dir.join("repairing.tmp"), dir.join(FILE));
    let create = || {
        failpoint!("replication::repairing_create");
        fs.create(&tmp)
    };
    let file = create().map_err(io_error("create", &tmp))?;
    let buf = encode(zxid);
    let write = || {
        failpoint!("replication::repairing_write", short: file.write_at(&buf[..LEN / 2], 0));
        file.write_at(&buf, 0)
    };
    write().map_err(io_error("write", &tmp))?;
    let sync = || {
        failpoint!("replication::repairing_fsync");
        file.sync_all()
    };
    sync().map_err(io_error("fsync", &tmp))?;
    let rename = || {
        failpoint!("replication::repairing_rename");
        fs.rename(&tmp, &path)
    };
    rename().map_err(io_error("rename", &tmp))?;
    sync_dir(fs, dir)?;
    Ok(zxid)
}

/// Removes the mark on the real filesystem (see [`clear_with`]).
pub fn clear(dir: &Path) -> Result<(), RepairingError> {
    clear_with(&StdFs, dir)
}

/// Removes the mark in `dir` on `fs`: the server synced with a leader. Durable when it returns.
pub fn clear_with(fs: &dyn FileSystem, dir: &Path) -> Result<(), RepairingError> {
    let path = dir.join(FILE);
    let remove = || {
        failpoint!("replication::repairing_remove");
        fs.remove(&path)
    };
    match remove() {
        Ok(()) => sync_dir(fs, dir),
        // Gone is not durably gone: an earlier clear may have removed it and then failed (or died) before its
        // directory fsync, leaving the removal in the page cache only, where a power cut would undo it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => sync_dir(fs, dir),
        Err(e) => Err(io_error("remove", &path)(e)),
    }
}

fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), RepairingError> {
    let sync = || {
        failpoint!("replication::repairing_sync_dir");
        fs.sync_dir(dir)
    };
    sync().map_err(io_error("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    proptest! {
        #[test]
        fn round_trip(zxid in any::<u64>()) {
            prop_assert_eq!(decode(&encode(Zxid(zxid))), Ok(Zxid(zxid)));
        }

        /// Any single damaged byte is noticed.
        #[test]
        fn a_flipped_byte_is_refused(zxid in any::<u64>(), at in 0..LEN, bit in 0u8..8) {
            let mut buf = encode(Zxid(zxid));
            buf[at] ^= 1 << bit;
            prop_assert!(decode(&buf).is_err());
        }
    }

    #[test]
    fn mark_read_clear() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(mark(dir.path(), Zxid(9)).unwrap(), Zxid(9));
        // A second repair never vouches for less than the first did.
        assert_eq!(mark(dir.path(), Zxid(5)).unwrap(), Zxid(9));
        assert_eq!(read(dir.path()).unwrap(), Some(Zxid(9)));
        clear(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        clear(dir.path()).unwrap();
        fs::write(dir.path().join(FILE), b"short").unwrap();
        assert!(matches!(read(dir.path()), Err(RepairingError::Damaged { .. })));
    }
}
