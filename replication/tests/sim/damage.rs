//! Damage to a durable log: a byte of a record flips on the disk (the checksum catches it at the next open).

use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;
use wal::fs::{FileSystem, SimFs};
use wal::record::{decode, Decoded};
use wal::segment::format::{EXTENSION, HEADER_LEN};
use wal::Zxid;

use super::server::LOG;

/// Flips a byte of the payload of a durable record that another record follows (so that the next open finds
/// corruption, not a torn tail it would cut in silence); returns its zxid, or `None` for a log of fewer than two
/// records. The damage is synced: it is on the disk for good.
pub fn damage(fs: &SimFs, rng: &mut StdRng) -> Option<Zxid> {
    let mut names: Vec<String> =
        fs.read_dir(Path::new(LOG)).ok()?.into_iter().filter(|n| n.ends_with(&format!(".{EXTENSION}"))).collect();
    names.sort();
    let mut records = Vec::new();
    for name in names {
        let path = Path::new(LOG).join(name);
        let data = fs.read(&path).ok()?;
        let mut offset = HEADER_LEN;
        while let Decoded::Record { zxid, payload, next } = decode(&data, offset, 1 << 20) {
            if !payload.is_empty() {
                records.push((path.clone(), payload, zxid));
            }
            offset = next;
        }
    }
    let last = records.len().checked_sub(1).filter(|&n| n > 0)?;
    let (path, payload, zxid) = records.swap_remove(rng.gen_range(0..last));
    let at = u64::try_from(rng.gen_range(payload)).ok()?;
    let file = fs.open(&path, true).ok()?;
    let mut byte = [0u8];
    file.read_at(&mut byte, at).ok()?;
    byte[0] ^= 0x5a;
    file.write_at(&byte, at).ok()?;
    file.sync_data().ok()?;
    Some(zxid)
}
