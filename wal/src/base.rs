//! The base file: where a restarted log begins.
//!
//! A follower that installs a snapshot from its leader throws its whole log away and starts again after the
//! snapshot's zxid ([`crate::Wal::restart_after`]). From then on the log does not hold the full history, even
//! while it is empty or its first segment is numbered 1 again, and the zxid it ends at is the snapshot's while
//! no record follows. This file says so, durably. It is written before the old segments are deleted, and names
//! the first segment number the restarted log uses, so that a crash in between leaves segments that [`read`]'s
//! caller recognises (numbered below `first_seq`) and deletes.
//!
//! ```text
//!  0          8              16             24       28
//!  +----------+--------------+--------------+--------+
//!  |  magic   | after (zxid) |  first seq   | crc32c |
//!  +----------+--------------+--------------+--------+
//!    8 bytes      u64 LE         u64 LE       u32 LE over bytes 0..24
//! ```
//!
//! # Invariants
//! - Every record in the log is above `after`.
//! - Every segment's sequence number is at least `first_seq` (lower ones are leftovers of the restart).
//! - The file under its final name is complete and fsynced (written as `base.tmp`, fsynced, renamed, the
//!   directory fsynced).

use std::path::Path;

use crate::error::WalError;
use crate::fs::FileSystem;
use crate::fsutil::{self, failpoint};
use crate::Zxid;

/// The base file's name in the log directory.
pub const BASE_FILE: &str = "base";
/// Its name while it is written.
pub const BASE_TMP_FILE: &str = "base.tmp";
const MAGIC: [u8; 8] = *b"\x89ENSBAS\n";
const LEN: usize = 28;

/// Where a restarted log begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    /// The log holds no record at or below this zxid; it ends here while it holds none.
    pub after: Zxid,
    /// The first segment number of the restarted log.
    pub first_seq: u64,
}

impl Base {
    fn encode(&self) -> [u8; LEN] {
        let mut buf = [0u8; LEN];
        buf[0..8].copy_from_slice(&MAGIC);
        buf[8..16].copy_from_slice(&self.after.0.to_le_bytes());
        buf[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&buf[..24]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<Base> {
        let word = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let valid = buf.len() == LEN && buf[0..8] == MAGIC && crc32c::crc32c(&buf[..24]).to_le_bytes() == buf[24..28];
        valid.then(|| Base { after: Zxid(word(8)), first_seq: word(16) })
    }
}

/// Reads the base file of `dir`: `None` when the log was never restarted.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Base>, WalError> {
    let path = dir.join(BASE_FILE);
    let read = || -> std::io::Result<Vec<u8>> {
        failpoint!("wal::base_read");
        fs.read(&path)
    };
    match read() {
        Ok(buf) => match Base::decode(&buf) {
            Some(base) => Ok(Some(base)),
            None => Err(WalError::BadBase { path }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("read", path, e)),
    }
}

/// Writes the base file of `dir` durably.
pub fn write(fs: &dyn FileSystem, dir: &Path, base: &Base) -> Result<(), WalError> {
    let tmp = &dir.join(BASE_TMP_FILE);
    let io = |op| move |e| WalError::io(op, tmp, e);
    let create = || {
        failpoint!("wal::base_create");
        fs.create(tmp)
    };
    let file = create().map_err(io("create"))?;
    let bytes = base.encode();
    let write = || {
        failpoint!("wal::base_write", short: file.write_at(&bytes[..LEN / 2], 0));
        file.write_at(&bytes, 0)
    };
    write().map_err(io("write"))?;
    let sync = || {
        failpoint!("wal::base_fsync");
        file.sync_all()
    };
    sync().map_err(io("fsync"))?;
    let path = dir.join(BASE_FILE);
    let rename = || {
        failpoint!("wal::base_rename");
        fs.rename(tmp, &path)
    };
    rename().map_err(|e| WalError::io("rename", &path, e))?;
    fsutil::sync_dir(fs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(after in any::<u64>(), first_seq in any::<u64>()) {
            let base = Base { after: Zxid(after), first_seq };
            prop_assert_eq!(Base::decode(&base.encode()), Some(base));
        }

        #[test]
        fn any_flipped_bit_is_refused(bit in 0usize..LEN * 8) {
            let mut buf = Base { after: Zxid(0x1_0000_0007), first_seq: 3 }.encode();
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(Base::decode(&buf), None);
        }
    }

    #[test]
    fn a_missing_file_is_no_base_and_a_short_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::StdFs;
        assert_eq!(read(&fs, dir.path()).unwrap(), None);
        let base = Base { after: Zxid(42), first_seq: 2 };
        write(&fs, dir.path(), &base).unwrap();
        assert_eq!(read(&fs, dir.path()).unwrap(), Some(base));
        std::fs::write(dir.path().join(BASE_FILE), &base.encode()[..20]).unwrap();
        assert!(matches!(read(&fs, dir.path()), Err(WalError::BadBase { .. })));
    }
}
