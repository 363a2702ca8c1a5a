//! The two epochs on disk, and the thread that writes them.
//!
//! ```text
//!  <dir>/epochs   accepted epoch u32 BE | current epoch u32 BE | crc32c u32 BE (of the 8 bytes before)
//! ```
//!
//! Written as tmp, fsync, rename, directory fsync. The writes run on a thread of their own, in the order they
//! were asked for, so that a slow disk stalls neither the runtime's worker threads nor its loop (which goes on
//! answering heartbeats meanwhile); the peer counts an epoch as promised from the moment it asks, and as
//! durable only when told (in a simulation the write is done inline, and the peer still hears of it only as an
//! event, as from the thread). Each write stores the highest epochs asked for so far, so a file on disk never goes
//! back, whatever the order of the requests.

use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use wal::fs::{FileSystem, Fs, StdFs};
use wal::{failpoint, Epoch};

use crate::fault::LocalFault;
use crate::peer::Event;

/// The epochs file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct EpochsError {
    /// What was being done: create, write, fsync, rename, fsync directory, read.
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// Why it failed (`InvalidData` for a damaged file).
    #[source]
    pub source: io::Error,
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EpochsError + 'a {
    move |source| EpochsError { op, path: path.to_owned(), source }
}

/// Writes the two epochs of `dir` durably on the real filesystem (see [`write_epochs_with`]).
pub fn write_epochs(dir: &Path, accepted: Epoch, current: Epoch) -> Result<(), EpochsError> {
    write_epochs_with(&StdFs, dir, accepted, current)
}

/// Writes the two epochs of `dir` durably on `fs`: 8 bytes, then a crc32c. Each step has a failpoint (listed in
/// the crate's docs).
pub fn write_epochs_with(fs: &dyn FileSystem, dir: &Path, accepted: Epoch, current: Epoch) -> Result<(), EpochsError> {
    let mut buf = Vec::with_capacity(12);
    buf.extend_from_slice(&accepted.0.to_be_bytes());
    buf.extend_from_slice(&current.0.to_be_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    let (tmp, path) = (&dir.join("epochs.tmp"), &dir.join("epochs"));
    let create = || {
        failpoint!("replication::epochs_create");
        fs.create(tmp)
    };
    let file = create().map_err(io_error("create", tmp))?;
    let write = || {
        failpoint!("replication::epochs_write", short: file.write_at(&buf[..buf.len() / 2], 0));
        file.write_at(&buf, 0)
    };
    write().map_err(io_error("write", tmp))?;
    let sync = || {
        failpoint!("replication::epochs_fsync");
        file.sync_all()
    };
    sync().map_err(io_error("fsync", tmp))?;
    let rename = || {
        failpoint!("replication::epochs_rename");
        fs.rename(tmp, path)
    };
    rename().map_err(io_error("rename", path))?;
    let sync_dir = || {
        failpoint!("replication::epochs_sync_dir");
        fs.sync_dir(dir)
    };
    sync_dir().map_err(io_error("fsync directory", dir))
}

/// The two epochs on disk in `dir` on the real filesystem (see [`read_epochs_with`]).
pub fn read_epochs(dir: &Path) -> Result<(Epoch, Epoch), EpochsError> {
    read_epochs_with(&StdFs, dir)
}

/// The two epochs on disk in `dir` on `fs`, `(0, 0)` for a fresh server; a damaged file is refused
/// (`InvalidData`, naming it), never read as some other epochs.
pub fn read_epochs_with(fs: &dyn FileSystem, dir: &Path) -> Result<(Epoch, Epoch), EpochsError> {
    let path = &dir.join("epochs");
    let read = || {
        failpoint!("replication::epochs_read");
        fs.read(path)
    };
    match read() {
        Ok(buf) if buf.len() == 12 && crc32c::crc32c(&buf[..8]).to_be_bytes() == buf[8..12] => {
            let word = |i: usize| buf.get(i..i + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
            Ok((Epoch(word(0)), Epoch(word(4))))
        }
        Ok(_) => Err(io_error("read", path)(io::Error::new(io::ErrorKind::InvalidData, "epochs file is corrupt"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Epoch(0), Epoch(0))),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Which epoch to raise.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EpochUpdate {
    /// The accepted epoch (discovery).
    Accepted(Epoch),
    /// The current epoch (and the accepted one with it, if it is lower).
    Current(Epoch),
}

impl EpochUpdate {
    fn apply(self, (accepted, current): (Epoch, Epoch)) -> (Epoch, Epoch) {
        match self {
            EpochUpdate::Accepted(e) => (accepted.max(e), current),
            EpochUpdate::Current(e) => (accepted.max(e), current.max(e)),
        }
    }

    /// What the peer is told once it is durable.
    pub(crate) fn event(self) -> Event {
        match self {
            EpochUpdate::Accepted(_) => Event::AcceptedEpochPersisted,
            EpochUpdate::Current(_) => Event::CurrentEpochPersisted,
        }
    }
}

/// A write done: for which generation of the peer, what it raised, and the epochs now durable.
type Done = (u64, EpochUpdate, Result<(Epoch, Epoch), LocalFault>);

/// The epochs writer, as the runtime sees it: a thread of its own, or (in a simulation) the caller's thread.
pub(crate) struct EpochWriter {
    mode: Mode,
    in_flight: usize,
    /// The epochs known durable.
    durable: (Epoch, Epoch),
}

enum Mode {
    Thread {
        requests: mpsc::Sender<(u64, EpochUpdate)>,
        done: mpsc::Receiver<Done>,
    },
    /// Each write is done when it is asked for; its outcome waits here to be taken, as a thread's would.
    Inline {
        fs: Fs,
        dir: PathBuf,
        epochs: (Epoch, Epoch),
        done: std::collections::VecDeque<Done>,
    },
}

/// Writes queued at most (a peer asks for one or two per election).
const QUEUE: usize = 64;

/// Does one write: the highest epochs asked for so far, from `epochs`.
fn write(fs: &dyn FileSystem, dir: &Path, epochs: &mut (Epoch, Epoch), generation: u64, update: EpochUpdate) -> Done {
    let (accepted, current) = update.apply(*epochs);
    let written = write_epochs_with(fs, dir, accepted, current)
        .map(|()| (accepted, current))
        .map_err(|source| LocalFault::Epochs { accepted, current, source });
    if written.is_ok() {
        *epochs = (accepted, current);
    }
    (generation, update, written)
}

impl EpochWriter {
    /// Starts the thread for the epochs file in `dir` on `fs`, which holds `durable` now.
    pub(crate) fn start(fs: Fs, dir: PathBuf, durable: (Epoch, Epoch)) -> std::io::Result<EpochWriter> {
        let (requests, mut rx) = mpsc::channel::<(u64, EpochUpdate)>(QUEUE);
        let (done_tx, done) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("epochs".into()).spawn(move || {
            let mut epochs = durable;
            while let Some((generation, update)) = rx.blocking_recv() {
                if done_tx.blocking_send(write(&*fs, &dir, &mut epochs, generation, update)).is_err() {
                    return;
                }
            }
        })?;
        Ok(EpochWriter { mode: Mode::Thread { requests, done }, in_flight: 0, durable })
    }

    /// A writer with no thread: each write is done (fsynced) inside [`EpochWriter::request`], for deterministic
    /// simulations (see `wal::Wal::open_inline`). The peer still hears of it only from [`EpochWriter::next`].
    pub(crate) fn inline(fs: Fs, dir: PathBuf, durable: (Epoch, Epoch)) -> EpochWriter {
        let mode = Mode::Inline { fs, dir, epochs: durable, done: Default::default() };
        EpochWriter { mode, in_flight: 0, durable }
    }

    /// Queues a write for the peer of `generation`.
    pub(crate) async fn request(&mut self, generation: u64, update: EpochUpdate) -> Result<(), LocalFault> {
        match &mut self.mode {
            Mode::Thread { requests, .. } => {
                requests.send((generation, update)).await.map_err(|_| LocalFault::EpochsWriterGone)?
            }
            Mode::Inline { fs, dir, epochs, done } => done.push_back(write(&**fs, dir, epochs, generation, update)),
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The next write done: its generation and update. Never ends while writes are in flight; a failed write
    /// or a dead thread is an error.
    pub(crate) async fn next(&mut self) -> Result<(u64, EpochUpdate), LocalFault> {
        if self.in_flight == 0 {
            return std::future::pending().await;
        }
        let (generation, update, written) = match &mut self.mode {
            Mode::Thread { done, .. } => done.recv().await.ok_or(LocalFault::EpochsWriterGone)?,
            Mode::Inline { done, .. } => done.pop_front().ok_or(LocalFault::EpochsWriterGone)?,
        };
        self.in_flight -= 1;
        self.durable = written?;
        Ok((generation, update))
    }

    /// Waits until every write asked for is done; returns the epochs durable then.
    pub(crate) async fn drain(&mut self) -> Result<(Epoch, Epoch), LocalFault> {
        while self.in_flight > 0 {
            self.next().await?;
        }
        Ok(self.durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_epoch_file_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_epochs(dir.path()).unwrap(), (Epoch(0), Epoch(0)), "no file yet: a fresh server");
        write_epochs(dir.path(), Epoch(7), Epoch(6)).unwrap();
        assert_eq!(read_epochs(dir.path()).unwrap(), (Epoch(7), Epoch(6)));
        let path = dir.path().join("epochs");
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_epochs(dir.path()).unwrap_err().source.kind(), std::io::ErrorKind::InvalidData);
        fs::write(&path, &bytes[..5]).unwrap();
        assert_eq!(read_epochs(dir.path()).unwrap_err().source.kind(), std::io::ErrorKind::InvalidData, "truncated");
    }

    /// The writer on a disk that loses power after each IO step in turn: the epochs it reported durable are
    /// never more than what the disk kept, and the write the cut interrupted is reported as failed.
    #[tokio::test]
    async fn the_writer_never_reports_more_than_a_power_cut_keeps() {
        use wal::fs::SimFs;
        let updates = [Epoch(1), Epoch(2), Epoch(3)].map(|e| [EpochUpdate::Accepted(e), EpochUpdate::Current(e)]);
        let dir = Path::new("/node");
        for step in 1..=30 {
            for seed in 0..4 {
                let fs = SimFs::new();
                fs.create_dir_all(dir).unwrap();
                fs.sync_dir(Path::new("/")).unwrap();
                fs.crash_after(fs.steps() + step, seed);
                let disk: Fs = std::sync::Arc::new(fs.clone());
                let mut writer = EpochWriter::start(disk, dir.to_path_buf(), (Epoch(0), Epoch(0))).unwrap();
                for update in updates.iter().flatten() {
                    writer.request(1, *update).await.unwrap();
                }
                let mut reported = (Epoch(0), Epoch(0));
                let mut failed = false;
                while writer.in_flight > 0 && !failed {
                    match writer.next().await {
                        Ok(_) => reported = writer.durable,
                        Err(LocalFault::Epochs { .. }) => failed = true,
                        Err(e) => panic!("step {step}: {e}"),
                    }
                }
                // Five steps per write: a cut after the thirtieth (the last) fails none.
                assert_eq!(failed, step < 30, "step {step}: a write fails exactly when the power went before the end");
                let after = fs.crashed().unwrap_or_else(|| fs.crash_now(seed));
                let got = read_epochs_with(&after, dir).unwrap();
                assert!(got.0 >= reported.0 && got.1 >= reported.1, "step {step} seed {seed}: {got:?} < {reported:?}");
            }
        }
    }

    #[tokio::test]
    async fn writes_land_in_order_never_lower_and_a_failed_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            EpochWriter::start(std::sync::Arc::new(StdFs), dir.path().to_path_buf(), (Epoch(0), Epoch(0))).unwrap();
        writer.request(1, EpochUpdate::Accepted(Epoch(5))).await.unwrap();
        writer.request(1, EpochUpdate::Current(Epoch(3))).await.unwrap();
        assert_eq!(writer.drain().await.unwrap(), (Epoch(5), Epoch(3)), "the accepted epoch never goes back");
        assert_eq!(read_epochs(dir.path()).unwrap(), (Epoch(5), Epoch(3)));
        // A directory where the temporary file goes: the write fails, and says so.
        fs::create_dir(dir.path().join("epochs.tmp")).unwrap();
        writer.request(2, EpochUpdate::Accepted(Epoch(6))).await.unwrap();
        assert!(matches!(writer.next().await, Err(LocalFault::Epochs { .. })));
    }
}
