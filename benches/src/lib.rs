//! Shared helpers of Ensemble's criterion benches: where to put data, and the baselines the benches compare
//! against in the same run.
#![deny(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory benches write to: `ENSEMBLE_BENCH_DIR`, or `target/bench-data` (a real disk, not tmpfs, so
/// that fdatasync costs what it costs in production). Warns if it is on tmpfs.
pub fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("ENSEMBLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    if is_tmpfs(&dir) {
        eprintln!("WARNING: {} is on tmpfs: fsync is free there, figures mean nothing", dir.display());
    }
    dir
}

fn is_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs writes only into the zeroed struct we pass; the path is a valid C string.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut stat) == 0 && stat.f_type == libc::TMPFS_MAGIC
    }
}

/// The physical baseline of the fsync path: `write` + `fdatasync` of `record` bytes at a time, appended
/// sequentially to a file preallocated with fallocate (as WAL segments are).
pub struct RawFdatasync {
    file: File,
    offset: u64,
    capacity: u64,
    _dir: tempfile::TempDir,
}

impl RawFdatasync {
    /// A preallocated file of `capacity` bytes in a fresh directory under `parent`.
    pub fn new(parent: &Path, capacity: u64) -> RawFdatasync {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.path().join("raw")).unwrap();
        // SAFETY: fallocate only reads its integer arguments.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, capacity as libc::off_t) };
        assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
        file.sync_all().unwrap();
        RawFdatasync { file, offset: 0, capacity, _dir: dir }
    }

    /// Like [`RawFdatasync::new`], with every block written once and fsynced, as the WAL zero-fills its
    /// segments: a first write into an unwritten extent makes fdatasync commit the journal too, so this is the
    /// baseline for overwrites.
    pub fn written_through(parent: &Path, capacity: u64) -> RawFdatasync {
        let raw = RawFdatasync::new(parent, capacity);
        let zeros = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < capacity {
            let len = zeros.len().min((capacity - offset) as usize);
            raw.file.write_all_at(&zeros[..len], offset).unwrap();
            offset += len as u64;
        }
        raw.file.sync_all().unwrap();
        raw
    }

    /// Writes `buf` at the next offset (wrapping around the preallocated file) and fdatasyncs.
    pub fn write_sync(&mut self, buf: &[u8]) {
        if self.offset + buf.len() as u64 > self.capacity {
            self.offset = 0;
        }
        self.file.write_all_at(buf, self.offset).unwrap();
        self.file.sync_data().unwrap();
        self.offset += buf.len() as u64;
    }
}

/// The baseline of recovery: read every file in `dir` sequentially and crc32c it. Returns the bytes read and the
/// time taken.
pub fn read_and_crc(dir: &Path) -> (u64, Duration) {
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut crc) = (0u64, 0u32);
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "wal")) {
        let mut file = File::open(path).unwrap();
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            bytes += n as u64;
        }
    }
    std::hint::black_box(crc);
    (bytes, started.elapsed())
}
