//! Helpers shared by the WAL's integration tests.
#![allow(dead_code)]

use std::path::Path;

use wal::{Record, Wal, WalOptions, Zxid};

/// Options with tiny segments, so that rolling, purging and multi-segment recovery run in every test.
pub fn tiny() -> WalOptions {
    WalOptions { segment_size: 4096, max_payload: 1024, ..WalOptions::default() }
}

/// A deterministic payload for `zxid`, of varying length (0..=300 bytes).
pub fn payload(zxid: Zxid) -> Vec<u8> {
    let len = (zxid.0.wrapping_mul(2654435761) % 301) as usize;
    (0..len).map(|i| (zxid.0 as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

pub fn open(dir: &Path, options: WalOptions) -> Wal {
    Wal::open(dir, options).expect("open").0
}

/// Every record in the log.
pub fn all(log: &Wal) -> Vec<Record> {
    log.iter_from(Zxid::ZERO).collect::<Result<_, _>>().expect("read")
}

/// The zxids in the log.
pub fn zxids(log: &Wal) -> Vec<u64> {
    all(log).iter().map(|r| r.zxid.0).collect()
}

/// Appends `zxids` one after the other, each with its deterministic payload, and waits for all.
pub fn append_all(log: &Wal, zxids: impl IntoIterator<Item = u64>) {
    let pending: Vec<_> = zxids.into_iter().map(|z| log.append(Zxid(z), payload(Zxid(z))).expect("append")).collect();
    for p in pending {
        p.wait().expect("durable");
    }
}

/// The segment files in `dir`, in name order.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}
