//! [`Wal`]: opening (with recovery) and the public operations.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use bytes::Bytes;

use crate::error::WalError;
use crate::fs::{FileSystem, Fs, StdFs};
use crate::fsutil::{self, DirLock};
use crate::pending::Pending;
use crate::queue::{Command, Enqueue, Shared};
use crate::scan::{self, Scan, TornTail};
use crate::segment::spare::Spare;
use crate::segment::{file, SegmentFile};
use crate::view::{SegmentView, View, WalIter};
use crate::writer::{Active, Writer};
use crate::{SyncMode, WalOptions, Zxid};

/// What [`Wal::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments in the log.
    pub segments: usize,
    /// Records in the log.
    pub records: u64,
    /// Bytes of segment data (headers and records) verified.
    pub bytes: u64,
    /// The first zxid in the log.
    pub first_zxid: Option<Zxid>,
    /// The last zxid in the log.
    pub last_zxid: Option<Zxid>,
    /// A torn tail that was cut.
    pub torn_tail: Option<TornTail>,
    /// Segments that held no record (their creation was the last thing before a crash), deleted.
    pub removed_empty_segments: Vec<PathBuf>,
    /// Temporary files of interrupted segment creations, deleted.
    pub removed_tmp_files: usize,
}

/// What [`Wal::purge_before`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes of segment data deleted.
    pub bytes: u64,
}

/// A segmented write-ahead log with group-commit fsync. See the [crate documentation](crate).
///
/// All operations take `&self`: share the log between threads and tasks with an `Arc`. Dropping it completes
/// everything already queued, then stops the writer thread.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    view: Arc<Mutex<View>>,
    writer: WriterMode,
    dir: PathBuf,
    _lock: DirLock,
}

/// Where the writer runs.
enum WriterMode {
    /// On a thread of its own (production): appenders never wait for IO, and one fdatasync covers everything
    /// queued while the previous one ran; or on an appender's thread that waits for its record anyway and finds
    /// the writer idle ([`Wal::append_sync`]). The thread is `None` once joined.
    Thread { writer: Arc<Mutex<Writer>>, thread: Option<thread::JoinHandle<()>> },
    /// On the caller's thread: right after each push if `each_push` ([`Wal::open_inline`]), else when
    /// [`Wal::step`] is called ([`Wal::open_stepped`]).
    Caller { writer: Box<Mutex<Writer>>, each_push: bool },
}

impl std::fmt::Debug for WriterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriterMode::Thread { .. } => "Thread",
            WriterMode::Caller { each_push: true, .. } => "Inline",
            WriterMode::Caller { each_push: false, .. } => "Stepped",
        })
    }
}

impl Wal {
    /// Opens the log in `dir` (creating the directory if needed), verifying every segment. A torn tail is cut
    /// and reported; corruption fails the open (see [`crate::repair`]).
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        Wal::open_with(std::sync::Arc::new(StdFs), dir, options)
    }

    /// Like [`Wal::open`], on the filesystem `fs` (a simulated one in tests: see [`crate::fs`]).
    pub fn open_with(fs: Fs, dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        Wal::open_mode(fs, dir.as_ref(), options, None)
    }

    /// Like [`Wal::open_with`], with no thread: each append, truncate, purge or restart is written (and
    /// fsynced) on the caller's thread before the call returns, and its [`Pending`] is complete by then. The
    /// writer's code and its invariants are the thread's (nothing completes `Ok` before the fdatasync that
    /// covers it); only where it runs differs. For deterministic simulations, which must run every step on one
    /// thread in an order the seed decides (a thread would race them, and keep a paused tokio clock from
    /// advancing). No spare segment is zero-filled ahead (that takes a thread too): `zero_fill` is ignored.
    pub fn open_inline(fs: Fs, dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        Wal::open_mode(fs, dir.as_ref(), options, Some(true))
    }

    /// Like [`Wal::open_inline`], but what is queued is done only when [`Wal::step`] is called: a simulation
    /// decides when each write and its fdatasync happen, so that a crash can come between an append and its
    /// durability, as it can on a real disk. Use the async appends only (a blocking append that finds the queue
    /// full would wait for a step that its own thread must make).
    pub fn open_stepped(fs: Fs, dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        Wal::open_mode(fs, dir.as_ref(), options, Some(false))
    }

    /// Does everything queued, on this thread, in a log opened with [`Wal::open_stepped`] (or `open_inline`, which
    /// has nothing queued); nothing in a log with a writer thread.
    pub fn step(&self) {
        if let WriterMode::Caller { writer, .. } = &self.writer {
            writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).run_queued();
        }
    }

    /// `on_caller`: `None` for a writer thread; `Some(each_push)` for a writer on the caller's thread.
    fn open_mode(
        fs: Fs,
        dir: &Path,
        options: WalOptions,
        on_caller: Option<bool>,
    ) -> Result<(Wal, Recovery), WalError> {
        options.validate()?;
        let dir = dir.to_path_buf();
        create_dir_durably(&*fs, &dir)?;
        let lock = DirLock::acquire(&*fs, &dir)?;
        if options.sync == SyncMode::Never {
            tracing::warn!(dir = %dir.display(), "WAL opened with sync=never: appends are NOT durable; for benchmarks and tests only");
        }
        let base = crate::base::read(&*fs, &dir)?;
        if let Some(base) = base {
            remove_restart_leftovers(&*fs, &dir, base.first_seq)?;
        }
        let (scan, recovery) = recover(&*fs, &dir, &options)?;
        if let (Some(base), Some(first)) = (base, recovery.first_zxid) {
            if first <= base.after {
                return Err(WalError::RecordBelowBase { zxid: first, base: base.after });
            }
        }
        let segments: Vec<SegmentView> = scan
            .segments
            .iter()
            .map(|s| SegmentView {
                seq: s.header.seq,
                first_zxid: s.header.first_zxid,
                path: s.path.as_path().into(),
                data: s.data.clone(),
                end: s.end,
                last_zxid: s.last_zxid.expect("recovery leaves no empty segment"),
            })
            .collect();
        let active = match scan.segments.last() {
            Some(last) => Some(reopen_active(&*fs, last, &options)?),
            None => None,
        };
        let mut segments = segments;
        if let (Some(active), Some(view)) = (&active, segments.last_mut()) {
            view.data = active.file.map()?;
        }
        let last_assigned = recovery.last_zxid.or(base.map(|b| b.after)).unwrap_or(Zxid::ZERO);
        let shared = Arc::new(Shared::new(options, last_assigned));
        let view = Arc::new(Mutex::new(View::default()));
        let next_seq = active.as_ref().map_or(1, |a| a.header.seq + 1).max(base.map_or(1, |b| b.first_seq));
        let spare = (shared.options.zero_fill && on_caller.is_none()).then(|| Spare::new(fs.clone(), &dir));
        let writer = Writer {
            fs,
            shared: shared.clone(),
            view: view.clone(),
            dir: dir.clone(),
            active,
            segments,
            next_seq,
            spare,
            buf: Vec::new(),
            // A base describes the log only while its first segment is the restart's first one (no purge since).
            base: base.filter(|b| scan.segments.first().is_none_or(|s| s.header.seq == b.first_seq)).map(|b| b.after),
            restarted: base.is_some(),
            last_batch: 0,
        };
        writer.publish();
        let writer = if let Some(each_push) = on_caller {
            WriterMode::Caller { writer: Box::new(Mutex::new(writer)), each_push }
        } else {
            let writer = Arc::new(Mutex::new(writer));
            let (for_thread, queue) = (writer.clone(), shared.clone());
            let thread = thread::Builder::new()
                .name("wal-writer".into())
                .spawn(move || Writer::run_thread(for_thread, queue))
                .map_err(|e| WalError::io("spawn writer thread", &dir, e))?;
            WriterMode::Thread { writer, thread: Some(thread) }
        };
        Ok((Wal { shared, view, writer, dir, _lock: lock }, recovery))
    }

    /// Queues an append of `payload` under `zxid`, blocking while the queue is full. The returned [`Pending`]
    /// completes once the record is durable.
    ///
    /// Fails at once, writing nothing, if the payload exceeds `max_payload`, if `zxid` is not above the last one
    /// appended, or if the log has failed.
    pub fn append(&self, zxid: Zxid, payload: impl Into<Bytes>) -> Result<Pending<Zxid>, WalError> {
        let payload = self.check_payload(payload.into())?;
        self.inline(self.shared.append_blocking(zxid, payload))
    }

    /// Queues an append of `payload` under `zxid`, blocking while the queue is full, for a caller that waits for
    /// it next ([`SyncAppend::wait`]): leader/follower group commit, as raft-engine and LevelDB do. If no one is
    /// writing the log when the caller waits, the write and the fdatasync run on the caller's thread (a lone
    /// appender pays one fdatasync and no hand-off to the writer thread and back), covering whatever else is
    /// queued; otherwise the record joins the next batch of whoever writes. The writer thread is not woken for it
    /// (unless the `SyncAppend` is dropped without waiting). Same guarantees as [`Wal::append`].
    pub fn append_sync(&self, zxid: Zxid, payload: impl Into<Bytes>) -> Result<SyncAppend<'_>, WalError> {
        let payload = self.check_payload(payload.into())?;
        match &self.writer {
            WriterMode::Thread { writer, .. } => {
                let pending = self.shared.append_quietly(zxid, payload)?;
                Ok(SyncAppend { shared: &self.shared, writer: Some(writer), pending: Some(pending) })
            }
            WriterMode::Caller { .. } => {
                let pending = self.append(zxid, payload)?;
                // Inline: done by now; stepped: done now.
                self.step();
                Ok(SyncAppend { shared: &self.shared, writer: None, pending: Some(pending) })
            }
        }
    }

    /// [`Wal::append_sync`] and [`SyncAppend::wait`] in one call, for a lone appender (concurrent ones must
    /// queue in zxid order: each takes its zxid and calls `append_sync` under its own lock, then waits outside
    /// it).
    pub fn append_durable(&self, zxid: Zxid, payload: impl Into<Bytes>) -> Result<Zxid, WalError> {
        self.append_sync(zxid, payload)?.wait()
    }

    /// Queues a batch of appends at once, blocking while the queue has no room for all of it: one fsync covers
    /// the whole batch (a follower appending the proposals of one network read, say). The returned [`Pending`]
    /// completes when the last record, and so every record of the batch, is durable. The zxids must increase;
    /// on any error nothing is queued.
    pub fn append_batch(&self, records: impl IntoIterator<Item = (Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        let records =
            records.into_iter().map(|(z, p)| self.check_payload(p).map(|p| (z, p))).collect::<Result<Vec<_>, _>>()?;
        if records.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        self.inline(self.shared.append_batch_blocking(records))
    }

    /// Like [`Wal::append`], but waits for room in the queue without blocking the thread.
    pub async fn append_async(&self, zxid: Zxid, payload: impl Into<Bytes>) -> Result<Pending<Zxid>, WalError> {
        let payload = self.check_payload(payload.into())?;
        self.enqueue_async(vec![(zxid, payload)]).await
    }

    /// Like [`Wal::append_batch`], but waits for room in the queue without blocking the thread.
    pub async fn append_batch_async(&self, records: Vec<(Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        let records = self.check_batch(records)?;
        self.enqueue_async(records).await
    }

    /// Like [`Wal::append_batch_async`], but if nobody is doing the log's IO when the batch is queued, it is
    /// written and fsynced on this thread before the call returns, and the returned [`Pending`] is complete
    /// then: leader/follower group commit ([`Wal::append_sync`]) for async code, whose task would otherwise
    /// wait for the writer thread's wake-up and then for its own on the completion. Otherwise (the writer
    /// thread or another appender is busy, or the queue is full) the batch joins the next one written, as with
    /// [`Wal::append_batch_async`]. The thread is blocked for the fdatasync, with no `block_in_place` (which
    /// hands the worker's other tasks to another thread: a wake-up like the ones saved), so this is for a task
    /// whose runtime has nothing else for this thread to do meanwhile.
    pub async fn append_batch_here(&self, records: Vec<(Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        let records = self.check_batch(records)?;
        let WriterMode::Thread { writer, .. } = &self.writer else { return self.enqueue_async(records).await };
        match self.shared.try_append_quietly(records)? {
            Enqueue::Queued(mut pending) => {
                do_io_until_done(&self.shared, writer, &mut pending, Plain::Only);
                Ok(pending)
            }
            // The writer thread has work queued, and will get to this after it.
            Enqueue::Full(records) => self.enqueue_async(records).await,
        }
    }

    /// The batch's payloads checked against the bound; refused if it is empty.
    fn check_batch(&self, records: Vec<(Zxid, Bytes)>) -> Result<Vec<(Zxid, Bytes)>, WalError> {
        if records.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        records.into_iter().map(|(z, p)| self.check_payload(p).map(|p| (z, p))).collect()
    }

    /// Queues `records` as soon as the queue has room for all of them, waiting for it without blocking.
    async fn enqueue_async(&self, mut records: Vec<(Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        loop {
            let room = std::pin::pin!(self.shared.room_async.notified());
            let mut room = room;
            room.as_mut().enable();
            match self.shared.try_append(records)? {
                Enqueue::Queued(pending) => return self.inline(Ok(pending)),
                Enqueue::Full(back) => records = back,
            }
            room.await;
        }
    }

    /// In the inline mode, does what was just queued before handing back `queued` (complete by then, so the
    /// queue never fills); in the thread mode, hands it back as it is.
    fn inline<T>(&self, queued: Result<T, WalError>) -> Result<T, WalError> {
        if let WriterMode::Caller { each_push: true, .. } = &self.writer {
            self.step();
        }
        queued
    }

    /// The largest payload an append takes ([`crate::WalOptions::max_payload`]).
    pub fn max_payload(&self) -> usize {
        self.shared.options.max_payload
    }

    fn check_payload(&self, payload: Bytes) -> Result<Bytes, WalError> {
        let max = self.shared.options.max_payload;
        if payload.len() > max {
            return Err(WalError::PayloadTooLarge { len: payload.len(), max });
        }
        Ok(payload)
    }

    /// Queues the removal of every record above `zxid` (a follower dropping an uncommitted tail). It is durable
    /// when the returned [`Pending`] completes; appends queued after it must be above `zxid`.
    pub fn truncate_after(&self, zxid: Zxid) -> Result<Pending<()>, WalError> {
        if let Some(base) = self.base().filter(|&base| zxid < base) {
            return Err(WalError::TruncateBelowBase { zxid, base });
        }
        let (done, pending) = Pending::new();
        self.shared.push_control(|state| {
            state.last_assigned = state.last_assigned.min(zxid);
            Command::TruncateAfter { zxid, done }
        })?;
        self.inline(Ok(pending))
    }

    /// Queues the deletion of every segment that holds only records below `zxid`. The segment holding `zxid`
    /// (and the one being appended to) stays.
    pub fn purge_before(&self, zxid: Zxid) -> Result<Pending<Purged>, WalError> {
        let (done, pending) = Pending::new();
        self.shared.push_control(|_| Command::PurgeBefore { zxid, done })?;
        self.inline(Ok(pending))
    }

    /// Queues the restart of the log after `zxid`: every record goes, and the log begins after `zxid` (a
    /// follower that installed a snapshot of the history up to `zxid` from its leader). Durable when the
    /// returned [`Pending`] completes; appends queued after it must be above `zxid`. From then on the log does
    /// not hold the full history, and [`Wal::end`] is `zxid` until a record follows.
    pub fn restart_after(&self, zxid: Zxid) -> Result<Pending<()>, WalError> {
        let (done, pending) = Pending::new();
        self.shared.push_control(|state| {
            state.last_assigned = zxid;
            Command::RestartAfter { zxid, done }
        })?;
        self.inline(Ok(pending))
    }

    /// Where the log begins if it was restarted after a snapshot and not purged since: it holds every record
    /// after this zxid and nothing at or below it.
    pub fn base(&self) -> Option<Zxid> {
        self.view().base
    }

    /// The zxid the durable log ends at: its last record's, else the zxid it was restarted after, else zero.
    pub fn end(&self) -> Zxid {
        let view = self.view();
        view.last_zxid().or(view.base).unwrap_or(Zxid::ZERO)
    }

    /// Iterates the durable records with a zxid at or above `from`.
    pub fn iter_from(&self, from: Zxid) -> WalIter {
        WalIter::new(self.view(), from, self.shared.options.read_limit())
    }

    /// The zxid of the first durable record.
    pub fn first_zxid(&self) -> Option<Zxid> {
        self.view().first_zxid()
    }

    /// The zxid of the last durable record.
    pub fn last_zxid(&self) -> Option<Zxid> {
        self.view().last_zxid()
    }

    /// Counters of the write path since the log was opened.
    pub fn stats(&self) -> crate::WalStats {
        self.shared.counters.snapshot()
    }

    /// Whether the log still holds its very first segment (nothing was ever purged, or it is empty) and was
    /// never restarted after a snapshot: then replaying it from the start rebuilds the whole history.
    pub fn holds_full_history(&self) -> bool {
        let view = self.view();
        !view.restarted && view.segments.first().is_none_or(|s| s.seq == 1)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn view(&self) -> View {
        self.view.lock().expect("WAL view lock poisoned by a panic").clone()
    }
}

/// An append queued by [`Wal::append_sync`], to wait for.
#[must_use = "an append is durable only once it is waited for"]
pub struct SyncAppend<'a> {
    shared: &'a Shared,
    /// The writer the caller may run (`None`: the log has no writer thread).
    writer: Option<&'a Mutex<Writer>>,
    /// `None` once waited for.
    pending: Option<Pending<Zxid>>,
}

impl SyncAppend<'_> {
    /// Blocks until the record is durable (or the log failed), doing the log's queued IO on this thread if
    /// nobody is doing it.
    ///
    /// # Panics
    /// Inside an async runtime: use [`SyncAppend::wait_async`] there.
    pub fn wait(mut self) -> Result<Zxid, WalError> {
        let mut pending = self.pending.take().expect("waited for once");
        if let Some(writer) = self.writer {
            do_io_until_done(self.shared, writer, &mut pending, Plain::Any);
        }
        pending.wait()
    }

    /// [`SyncAppend::wait`] from a task of a multi-threaded tokio runtime: the IO, when this task does it, runs
    /// in [`tokio::task::block_in_place`] (the worker's other tasks move to another thread meanwhile). On any
    /// other runtime it wakes the writer thread and awaits the record.
    pub async fn wait_async(mut self) -> Result<Zxid, WalError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            return tokio::task::block_in_place(|| self.wait());
        }
        let pending = self.pending.take().expect("waited for once");
        self.shared.wake_writer();
        pending.await
    }
}

impl Drop for SyncAppend<'_> {
    /// Not waited for: the writer thread takes the record (it was queued without waking it).
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.shared.wake_writer();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        if let WriterMode::Thread { thread, .. } = &mut self.writer {
            if thread.take().is_some_and(|writer| writer.join().is_err()) {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

/// What IO an appender takes on its own thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plain {
    /// Whatever is queued ahead of its record: a thread that waits anyway.
    Any,
    /// Only appends that fit the active segment (one write and one fdatasync): a task whose thread serves
    /// others too leaves a truncate, a purge or a new segment (its fsyncs, a spare still being zero-filled) to the
    /// writer thread.
    Only,
}

/// For an append queued without waking the writer thread ([`Shared::append_quietly`]): does the log's queued IO
/// on this thread until `pending` is done, if nobody is doing it and `plain` allows it; else makes sure someone
/// will (a writer thread asleep must take the record).
fn do_io_until_done(shared: &Shared, writer: &Mutex<Writer>, pending: &mut Pending<Zxid>, plain: Plain) {
    let claim = if pending.is_done() { None } else { shared.try_claim_io() };
    if let Some(claim) = claim {
        let mut writer = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if plain == Plain::Any || writer.queued_appends_fit() {
            writer.run_claimed(|| pending.is_done());
        }
        drop(writer);
        // Wakes the writer thread for whatever is still queued.
        drop(claim);
    } else {
        shared.wake_writer();
    }
}

/// Creates `dir` and its missing parents, durably: a new directory's name lives in its parent, and without an
/// fsync of that parent a power cut can take the whole directory, and every record acknowledged in it, away
/// (found by the power-loss tests: fsyncing the log directory itself does not make its own name durable).
pub(crate) fn create_dir_durably(fs: &dyn FileSystem, dir: &Path) -> Result<(), WalError> {
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && fs.read_dir(d).is_err()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
    // Each new directory is named in its parent: sync every such parent.
    for created in missing {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fsutil::sync_dir(fs, parent)?;
    }
    Ok(())
}

/// Scans `dir` and applies what crash recovery may do on its own: delete temporary files and an empty last
/// segment, and cut a torn tail.
fn recover(fs: &dyn FileSystem, dir: &Path, options: &WalOptions) -> Result<(Scan, Recovery), WalError> {
    let started = Instant::now();
    let mut recovery = Recovery::default();
    loop {
        let scan = scan::scan(fs, dir, options.read_limit())?;
        if let Some(corruption) = scan.corruption {
            tracing::error!(error = %corruption.error, "WAL corruption: refusing to open (see wal::repair)");
            return Err(corruption.error);
        }
        for tmp in &scan.tmp_files {
            file::remove(fs, tmp)?;
            recovery.removed_tmp_files += 1;
        }
        if !scan.tmp_files.is_empty() {
            fsutil::sync_dir(fs, dir)?;
        }
        if let Some(last) = scan.segments.last().filter(|s| s.records == 0) {
            // Created, but the crash came before its first record was durable; the one before it is the tail.
            tracing::warn!(segment = %last.path.display(), "deleting a segment that holds no record");
            file::remove(fs, &last.path)?;
            fsutil::sync_dir(fs, dir)?;
            recovery.removed_empty_segments.push(last.path.clone());
            continue;
        }
        if let Some(torn) = &scan.torn {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, bytes = torn.bytes, last_good = %torn.last_good_zxid, "cutting a torn tail");
            let file = SegmentFile::open(fs, &torn.segment)?;
            file.zero(torn.offset, torn.offset + torn.bytes)?;
            file.sync_data()?;
            recovery.torn_tail = Some(torn.clone());
        }
        recovery.segments = scan.segments.len();
        recovery.records = scan.segments.iter().map(|s| s.records).sum();
        recovery.bytes = scan.segments.iter().map(|s| s.end).sum();
        recovery.first_zxid = scan.segments.first().map(|s| s.header.first_zxid);
        recovery.last_zxid = scan.last_zxid();
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(dir = %dir.display(), segments = recovery.segments, records = recovery.records,
            last_zxid = ?recovery.last_zxid, mb_per_s = recovery.bytes as f64 / 1e6 / secs.max(1e-9), "WAL recovered");
        return Ok((scan, recovery));
    }
}

/// Deletes the segments numbered below `first_seq`: a restart ([`Wal::restart_after`]) wrote its base file and
/// crashed before it had deleted them all. A segment whose header cannot be read is left to the scan.
fn remove_restart_leftovers(fs: &dyn FileSystem, dir: &Path, first_seq: u64) -> Result<(), WalError> {
    let mut removed = 0;
    for name in fs.read_dir(dir).map_err(|e| WalError::io("list", dir, e))? {
        if crate::segment::format::parse_file_name(&name).is_none() {
            continue;
        }
        let path = dir.join(&name);
        if SegmentFile::open(fs, &path)?.read_header().is_ok_and(|h| h.seq < first_seq) {
            tracing::warn!(segment = %path.display(), "deleting a segment left over from an interrupted restart");
            file::remove(fs, &path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsutil::sync_dir(fs, dir)?;
    }
    Ok(())
}

/// Opens the last segment for appending at its end.
fn reopen_active(fs: &dyn FileSystem, last: &scan::ScannedSegment, options: &WalOptions) -> Result<Active, WalError> {
    let file = SegmentFile::open(fs, &last.path)?;
    // Not to `segment_size`: what fallocate adds is unwritten, and each append into it would make fdatasync commit
    // the filesystem's journal too. The next segment grows instead.
    file.ensure_capacity(options.next_segment_size(None))?;
    let capacity = file.file_len()?;
    Ok(Active { file, header: last.header, end: last.end, capacity, last_zxid: last.last_zxid.expect("not empty") })
}
