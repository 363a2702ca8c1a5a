//! The files of ZooKeeper's `version-2` directories, named as ZooKeeper's `Util` names them, and the epoch
//! files a quorum peer keeps beside its snapshots.
//!
//! ```text
//!  <dataDir>/version-2/snapshot.<zxid hex>[.gz|.snappy]   <dataLogDir>/version-2/log.<zxid hex>
//!  <dataDir>/version-2/acceptedEpoch, currentEpoch        decimal text
//!  <dataDir>/myid                                          decimal text
//! ```

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::ZkDataError;
use crate::snappy::SnappyReader;

/// The directory ZooKeeper keeps its files in, under dataDir and dataLogDir.
pub const VERSION_DIR: &str = "version-2";
/// Prefix of snapshot file names.
pub const SNAPSHOT_PREFIX: &str = "snapshot";
/// Prefix of txn log file names.
pub const LOG_PREFIX: &str = "log";
/// A quorum peer's accepted epoch (`QuorumPeer.ACCEPTED_EPOCH_FILENAME`).
pub const ACCEPTED_EPOCH: &str = "acceptedEpoch";
/// A quorum peer's current epoch (`QuorumPeer.CURRENT_EPOCH_FILENAME`).
pub const CURRENT_EPOCH: &str = "currentEpoch";

/// How a snapshot's stream is stored, from its name's extension (`SnapStream.getStreamMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain (`CHECKED`).
    None,
    /// `.gz`.
    Gzip,
    /// `.snappy` (snappy-java's stream format).
    Snappy,
}

impl Compression {
    /// From a file name, as ZooKeeper decides it.
    pub fn of(name: &str) -> Compression {
        match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("gz") => Compression::Gzip,
            Some("snappy") => Compression::Snappy,
            _ => Compression::None,
        }
    }
}

/// The zxid in a file name `<prefix>.<hex>[.<anything>]`, as `Util.getZxidFromName` reads it.
pub fn zxid_of(name: &str, prefix: &str) -> Option<i64> {
    let mut parts = name.split('.');
    if parts.next() != Some(prefix) {
        return None;
    }
    let hex = parts.next()?;
    // Java's Long.parseLong(hex, 16): signed, at most 16 digits for a non-negative value.
    u64::from_str_radix(hex, 16).ok().and_then(|v| i64::try_from(v).ok())
}

/// A plain snapshot's name.
pub fn snapshot_name(zxid: i64) -> String {
    format!("{SNAPSHOT_PREFIX}.{zxid:x}")
}

/// A log's name.
pub fn log_name(zxid: i64) -> String {
    format!("{LOG_PREFIX}.{zxid:x}")
}

/// The files in `dir` named `<prefix>.<zxid>...`, oldest first.
pub fn list(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>, ZkDataError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(ZkDataError::io(dir, "list"))? {
        let entry = entry.map_err(ZkDataError::io(dir, "list"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(zxid) = zxid_of(&name, prefix) {
            if entry.file_type().map_err(ZkDataError::io(&entry.path(), "stat"))?.is_file() {
                found.push((zxid, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `dir/version-2` if `dir` is a dataDir holding one, else `dir` itself (the `version-2` directory given).
pub fn version_dir(dir: &Path) -> PathBuf {
    let inner = dir.join(VERSION_DIR);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Opens a snapshot as its decompressed stream, counting the file's bytes into `progress`. Returns the stream
/// and the file's size.
pub fn open_snapshot<'a>(
    path: &Path,
    progress: &'a mut dyn FnMut(u64),
) -> Result<(Box<dyn Read + 'a>, u64), ZkDataError> {
    let file = File::open(path).map_err(ZkDataError::io(path, "open"))?;
    let size = file.metadata().map_err(ZkDataError::io(path, "stat"))?.len();
    let counted = BufReader::with_capacity(1 << 16, Counted { inner: file, progress });
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let limit = max_decompressed(size);
    let stream: Box<dyn Read + 'a> = match Compression::of(&name) {
        Compression::None => Box::new(counted),
        Compression::Gzip => {
            let gz = flate2::bufread::GzDecoder::new(counted);
            Box::new(BufReader::with_capacity(1 << 16, Bounded { inner: gz, left: limit }))
        }
        Compression::Snappy => Box::new(Bounded { inner: SnappyReader::new(counted), left: limit }),
    };
    Ok((stream, size))
}

/// How far a compressed snapshot of `size` bytes may expand: 100 times (ZooKeeper's snapshots compress a few
/// times over), and at least 64 MiB. Past it the file is refused, so that a small crafted file (a
/// "compression bomb" of sessions, say) cannot make the reader hold gigabytes.
pub fn max_decompressed(size: u64) -> u64 {
    size.saturating_mul(100).max(64 << 20)
}

/// A reader that fails once it has given `left` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "decompresses to more than 100 times its size")
        })?;
        Ok(n)
    }
}

/// A reader that reports how many bytes it read.
pub struct Counted<'a, R> {
    /// The reader.
    pub inner: R,
    /// Told each read's byte count.
    pub progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// An epoch file's value (`QuorumPeer.readLongFromFile`), `None` when there is none (a standalone server).
pub fn read_epoch(dir: &Path, name: &str) -> Result<Option<i64>, ZkDataError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let line = text.lines().next().unwrap_or("").trim();
            line.parse().map(Some).map_err(|_| {
                ZkDataError::corrupt(&path, 0, crate::Corruption::Invalid(format!("{line:?} is not an epoch")))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ZkDataError::io(&path, "read")(e)),
    }
}

/// Writes a decimal file (an epoch, `myid`) durably: temporary name, fsync, rename, as ZooKeeper's
/// `AtomicFileWritingIdiom` does. The directory is fsynced by the caller once its files are all written.
pub fn write_decimal(dir: &Path, name: &str, value: i64) -> Result<(), ZkDataError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(value.to_string().as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(ZkDataError::io(&path, "write"))
}

/// fsyncs a directory, so the names written in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), ZkDataError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ZkDataError::io(dir, "fsync"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compression_bomb_is_refused_before_it_expands() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.1.gz");
        let mut gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::best());
        // A header, no sessions or ACLs, the root, then the same small node over and over: 78 MiB of stream in
        // a few hundred KiB of file (the reader below keeps none of the nodes: only the bound can stop it).
        let header = crate::header::FileHeader { magic: crate::header::SNAP_MAGIC, version: 2, dbid: -1 };
        gz.write_all(&header.encode()).unwrap();
        gz.write_all(&[0; 8]).unwrap(); // no sessions, no ACL lists
        let node = |path: &[u8]| {
            let mut record = (path.len() as i32).to_be_bytes().to_vec();
            record.extend_from_slice(path);
            record.extend_from_slice(&[0xff; 12]); // null data, ACL -1
            record.extend_from_slice(&[0; 60]); // the stat
            record
        };
        gz.write_all(&node(b"")).unwrap();
        let record: Vec<u8> = node(b"/x").repeat(4096);
        for _ in 0..256 {
            gz.write_all(&record).unwrap();
        }
        gz.finish().unwrap();
        let size = path.metadata().unwrap().len();
        assert!(size < 1 << 20, "{size}");
        let mut progress = |_| {};
        let (stream, _) = open_snapshot(&path, &mut progress).unwrap();
        let err = crate::snapshot::read(stream, &path, crate::DEFAULT_MAX_LEN, |_, _| Ok(())).unwrap_err();
        assert!(max_decompressed(size) < 78 << 20);
        assert!(matches!(err.corruption(), Some((_, _, crate::Corruption::Compression(_)))), "{err}");
    }

    #[test]
    fn names_read_as_zookeeper_reads_them() {
        assert_eq!(zxid_of("snapshot.1a", SNAPSHOT_PREFIX), Some(0x1a));
        assert_eq!(zxid_of("snapshot.100000003.snappy", SNAPSHOT_PREFIX), Some(0x1_0000_0003));
        assert_eq!(zxid_of("log.0", LOG_PREFIX), Some(0));
        assert_eq!(zxid_of("log.zz", LOG_PREFIX), None);
        assert_eq!(zxid_of("snapshot.5", LOG_PREFIX), None);
        assert_eq!(Compression::of("snapshot.5.gz"), Compression::Gzip);
        assert_eq!(Compression::of("snapshot.5.snappy"), Compression::Snappy);
        assert_eq!(Compression::of("snapshot.5"), Compression::None);
        assert_eq!(snapshot_name(0x1_0000_0003), "snapshot.100000003");
    }
}
