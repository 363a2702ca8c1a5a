//! The writer thread: the only code that writes segments.
//!
//! It takes every append queued since its last fsync (up to the optional batch caps), encodes them into one
//! buffer, writes it with one `pwrite`, runs one `fdatasync`, publishes the new durable end to readers, and only
//! then completes the appends. Truncate and purge run on this thread too, in queue order. In the inline mode
//! ([`crate::Wal::open_inline`], for deterministic simulations) the same code runs on the appender's thread,
//! right after each push, instead of on a thread of its own. In the thread mode, an appender that waits for
//! its record and finds nobody writing runs the same code on its own thread ([`crate::SyncAppend::wait`], and
//! [`crate::Wal::append_batch_here`] from a task): whoever does the IO holds `io_busy` in the queue's state
//! (through an [`crate::queue::IoClaim`]), so exactly one writes at a time.
//!
//! # Invariants
//! - An append is completed `Ok` only after an fdatasync that covers it returned success.
//! - After the first failed write or fsync, nothing is completed `Ok` again: the log is failed until reopened.
//!   A panic inside the IO, on whichever thread, fails it the same (the claim's drop), so nobody waits for an
//!   owner of the IO that is gone.
//! - Zxids on disk strictly increase (checked at enqueue, asserted here).
//! - A segment is sealed (its records fsynced) before the next one, which records the seal, is created.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::WalError;
use crate::fs::{Fs, WalFile};
use crate::pending::Completion;
use crate::queue::{Append, Command, QueueState, Shared};
use crate::record::{self, Decoded};
use crate::segment::format::{Seal, SegmentHeader, HEADER_LEN};
use crate::segment::spare::Spare;
use crate::segment::{file, SegmentFile};
use crate::view::{SegmentView, View};
use crate::{fsutil, Purged, SyncMode, Zxid};

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct Active {
    pub file: SegmentFile,
    pub header: SegmentHeader,
    /// Where the next record goes.
    pub end: u64,
    /// The file's preallocated size.
    pub capacity: u64,
    /// The zxid of its last record.
    pub last_zxid: Zxid,
}

/// What the writer does next.
enum Work {
    /// Write the batch of appends taken from the queue.
    Appends,
    /// Run a truncate or a purge.
    Control(Command),
}

pub(crate) struct Writer {
    pub fs: Fs,
    pub shared: Arc<Shared>,
    pub view: Arc<Mutex<View>>,
    pub dir: PathBuf,
    pub active: Option<Active>,
    /// The published segments, the active one last.
    pub segments: Vec<SegmentView>,
    /// The sequence number of the next segment.
    pub next_seq: u64,
    /// The zero-filled segment being prepared for the next roll (`None`: `zero_fill` is off).
    pub spare: Option<Spare>,
    pub buf: Vec<u8>,
    /// Where the log begins if it was restarted ([`crate::base`]) and not purged since.
    pub base: Option<Zxid>,
    /// Whether it was ever restarted.
    pub restarted: bool,
    /// Records in the last batch: the writer spins for more work only after a small one (a lone appender
    /// waiting on each append), never after a large one (a busy log, whose queue refills by itself).
    pub last_batch: usize,
}

/// Batches at most this large count as small for the idle spin.
const SMALL_BATCH: usize = 2;

impl Writer {
    /// The writer thread: does the queued work whenever an appender is not doing it itself
    /// ([`QueueState::io_busy`]), until the log is closed and its queue drained, or until it fails.
    pub fn run_thread(writer: Arc<Mutex<Writer>>, shared: Arc<Shared>) {
        let mut appends = Vec::new();
        let mut last_batch = 0;
        loop {
            let mut state = shared.lock();
            if state.commands.is_empty() && !state.closed && last_batch <= SMALL_BATCH {
                let seen = shared.pushed.load(Ordering::Acquire);
                drop(state);
                spin_for_work(&shared, seen);
                state = shared.lock();
            }
            while state.commands.is_empty() || state.io_busy {
                if state.closed && state.commands.is_empty() {
                    return;
                }
                state.writer_waiting = true;
                state = shared.work.wait(state).expect("WAL queue lock poisoned by a panic");
                state.writer_waiting = false;
            }
            let claim = shared.claim_io_locked(&mut state);
            let mut writer = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let work = writer.take_work(state, &mut appends).expect("the queue is not empty");
            let failed = writer.perform(work, &mut appends).is_err();
            last_batch = writer.last_batch;
            drop(writer);
            drop(claim);
            if failed {
                return;
            }
        }
    }

    /// Does the queued work on an appender's thread, after [`Shared::try_claim_io`] claimed the IO, until
    /// `done` says the appender's own record is durable (or failed) or the queue is empty; the caller then
    /// drops its claim, and the writer thread takes whatever is left. Leader/follower group commit: a lone
    /// appender that finds the writer idle writes and fsyncs on its own thread, with no hand-off to the writer
    /// thread and back; appenders that arrive meanwhile are covered by its next fsync.
    pub fn run_claimed(&mut self, mut done: impl FnMut() -> bool) {
        let mut appends = Vec::new();
        while !done() {
            let Some(work) = self.take_work(self.shared.lock(), &mut appends) else { return };
            if self.perform(work, &mut appends).is_err() {
                return;
            }
        }
    }

    /// Whether everything queued is appends that fit the active segment: done now, one write and one fdatasync,
    /// with no control command and no new segment.
    pub fn queued_appends_fit(&self) -> bool {
        let Some(active) = &self.active else { return false };
        let state = self.shared.lock();
        let mut end = active.end;
        state.commands.iter().all(|command| match command {
            Command::Append(a) => {
                end += record::encoded_len(a.payload.len()) as u64;
                end <= active.capacity
            }
            _ => false,
        })
    }

    /// Does everything queued now, on the caller's thread, and returns when the queue is empty (or the log has
    /// failed): the inline mode ([`crate::Wal::open_inline`]), where each push runs its own IO before it returns.
    pub fn run_queued(&mut self) {
        let mut appends = Vec::new();
        while let Some(work) = self.take_work(self.shared.lock(), &mut appends) {
            if self.perform(work, &mut appends).is_err() {
                return;
            }
        }
    }

    /// Does one batch of appends or one control command; an error has failed the log.
    fn perform(&mut self, work: Work, appends: &mut Vec<Append>) -> Result<(), Arc<WalError>> {
        match work {
            Work::Appends => {
                self.last_batch = appends.len();
                match self.write_batch(appends) {
                    Ok(()) => Ok(()),
                    Err(error) => Err(self.fail(error, appends)),
                }
            }
            Work::Control(Command::TruncateAfter { zxid, done }) => {
                let result = self.truncate_after(zxid);
                self.complete(done, result)
            }
            Work::Control(Command::PurgeBefore { zxid, done }) => {
                let result = self.purge_before(zxid);
                self.complete(done, result)
            }
            Work::Control(Command::RestartAfter { zxid, done }) => {
                let result = self.restart_after(zxid);
                self.complete(done, result)
            }
            Work::Control(Command::Append(_)) => unreachable!("appends come in batches"),
        }
    }

    /// Completes a control command; its failure fails the log.
    fn complete<T>(&mut self, done: Completion<T>, result: Result<T, WalError>) -> Result<(), Arc<WalError>> {
        match result {
            Ok(value) => {
                let _ = done.send(Ok(value));
                Ok(())
            }
            Err(error) => {
                let cause = self.fail(error, &mut Vec::new());
                let _ = done.send(Err(WalError::Failed(cause.clone())));
                Err(cause)
            }
        }
    }

    /// Takes a batch of appends into `appends`, or a control command, from the queue; `None` if it is empty.
    fn take_work(&self, mut state: MutexGuard<'_, QueueState>, appends: &mut Vec<Append>) -> Option<Work> {
        let options = &self.shared.options;
        if state.commands.is_empty() {
            return None;
        }
        let (mut bytes, max_bytes) = (0, options.max_batch_bytes.unwrap_or(usize::MAX));
        let max_records = options.max_batch_records.unwrap_or(usize::MAX);
        while let Some(Command::Append(a)) = state.commands.front() {
            if !appends.is_empty() && (bytes + a.payload.len() > max_bytes || appends.len() >= max_records) {
                break;
            }
            bytes += a.payload.len();
            let Some(Command::Append(a)) = state.commands.pop_front() else { unreachable!("front was an append") };
            appends.push(a);
        }
        state.queued_bytes -= bytes;
        state.queued_appends -= appends.len();
        let work = match appends.is_empty() {
            true => Work::Control(state.commands.pop_front().expect("the queue is not empty")),
            false => Work::Appends,
        };
        let blocking_waiters = state.room_waiters;
        drop(state);
        self.shared.wake_appenders(blocking_waiters);
        Some(work)
    }

    fn write_batch(&mut self, appends: &mut Vec<Append>) -> Result<(), WalError> {
        self.buf.clear();
        for a in appends.iter() {
            let len = record::encoded_len(a.payload.len()) as u64;
            let fits = self.active.as_ref().is_some_and(|s| s.end + self.buf.len() as u64 + len <= s.capacity);
            if !fits {
                self.flush_buf()?;
                self.roll(a.zxid)?;
            }
            let active = self.active.as_mut().expect("rolled");
            assert!(a.zxid > active.last_zxid, "zxid {} after {} passed the enqueue check", a.zxid, active.last_zxid);
            record::encode(&mut self.buf, a.zxid, &a.payload);
            active.last_zxid = a.zxid;
        }
        let bytes: usize = appends.iter().map(|a| record::encoded_len(a.payload.len())).sum();
        self.flush_buf()?;
        let active = self.active.as_ref().expect("a batch has records");
        let started = Instant::now();
        if self.shared.options.sync == SyncMode::Fdatasync {
            active.file.sync_data()?;
        }
        let fsync = started.elapsed();
        // The write path's timeline (`replication::LATENCY`; this crate does not depend on that one).
        let last = appends.last().map_or(0, |a| a.zxid.0);
        tracing::trace!(target: "latency", zxid = last, records = appends.len(), us = fsync.as_micros() as u64, "fdatasync");
        self.shared.counters.batch(appends.len(), bytes, fsync);
        if let Some(observer) = &self.shared.options.on_batch {
            (observer.0)(appends.len(), fsync);
        }
        if let Some(spare) = self.spare.as_mut().filter(|_| active.end > active.capacity / 2) {
            // The next segment will be needed: zero it now, while half of this one is still free.
            spare.prepare(self.shared.options.next_segment_size(Some(active.capacity)));
        }
        self.refresh_active()?;
        self.publish_active();
        for a in appends.drain(..) {
            let zxid = a.zxid;
            a.complete(Ok(zxid));
        }
        Ok(())
    }

    /// Writes the encoded records in `buf` at the active segment's end.
    fn flush_buf(&mut self) -> Result<(), WalError> {
        if let (Some(active), false) = (self.active.as_mut(), self.buf.is_empty()) {
            active.file.write_at(&self.buf, active.end)?;
            active.end += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Seals the active segment (fsyncs its records) and creates the next one, whose first record is `first`.
    fn roll(&mut self, first: Zxid) -> Result<(), WalError> {
        let prev = match &self.active {
            Some(active) => {
                active.file.sync_data()?;
                Some(Seal { end: active.end, last_zxid: active.last_zxid })
            }
            None => None,
        };
        if prev.is_some() {
            self.refresh_active()?;
            self.publish_active();
        }
        let header = SegmentHeader { seq: self.next_seq, first_zxid: first, prev };
        let file = self.create_segment(&header)?;
        let capacity = file.file_len()?;
        tracing::debug!(segment = %file.path().display(), seq = header.seq, "rolled to a new segment");
        self.next_seq += 1;
        self.segments.push(SegmentView {
            seq: header.seq,
            first_zxid: first,
            path: file.path().into(),
            data: file.map()?,
            end: HEADER_LEN as u64,
            last_zxid: Zxid::ZERO,
        });
        self.active = Some(Active {
            file,
            header,
            end: HEADER_LEN as u64,
            capacity,
            last_zxid: prev.map_or(Zxid::ZERO, |p| p.last_zxid),
        });
        Ok(())
    }

    /// Creates the segment with `header`, to follow the active one (if any): from the spare if it is ready, else
    /// the plain way.
    fn create_segment(&mut self, header: &SegmentHeader) -> Result<SegmentFile, WalError> {
        let capacity = self.shared.options.next_segment_size(self.active.as_ref().map(|a| a.capacity));
        if let Some(spare) = &mut self.spare {
            // The first segment waits for its spare (a one-off delay at the first append); a roll does not.
            let file = if self.active.is_none() { spare.wait(capacity) } else { spare.take_ready() };
            if let Some(file) = file {
                return SegmentFile::from_spare(&*self.fs, &self.dir, header, file, spare.path());
            }
            tracing::debug!("spare segment not ready; creating one without zero-fill");
        }
        SegmentFile::create(&*self.fs, &self.dir, header, &[], capacity)
    }

    /// Brings the readers' bytes of the active segment up to date with what was written (a no-op for a memory
    /// map, which shows writes by itself).
    fn refresh_active(&mut self) -> Result<(), WalError> {
        if let (Some(active), Some(last)) = (&self.active, self.segments.last_mut()) {
            active.file.refresh(&mut last.data)?;
        }
        Ok(())
    }

    /// Publishes the active segment's durable end to readers.
    fn publish_active(&mut self) {
        if let (Some(active), Some(last)) = (&self.active, self.segments.last_mut()) {
            debug_assert_eq!(last.seq, active.header.seq);
            (last.end, last.last_zxid) = (active.end, active.last_zxid);
        }
        self.publish();
    }

    /// Publishes the segment list, leaving out a new segment that holds no record yet.
    pub fn publish(&self) {
        let mut segments = self.segments.clone();
        segments.retain(|s| s.end > HEADER_LEN as u64);
        *self.view.lock().expect("WAL view lock poisoned by a panic") =
            View { segments: Arc::new(segments), base: self.base, restarted: self.restarted };
    }

    /// Drops every record above `zxid`, durably.
    fn truncate_after(&mut self, zxid: Zxid) -> Result<(), WalError> {
        self.publish_active();
        if self.segments.last().is_none_or(|s| s.last_zxid <= zxid) {
            return Ok(());
        }
        let keep = self.segments.partition_point(|s| s.first_zxid <= zxid);
        while self.segments.len() > keep {
            let gone = self.segments.pop().expect("len > keep");
            if self.active.as_ref().is_some_and(|a| a.header.seq == gone.seq) {
                self.active = None;
            }
            file::remove(&*self.fs, &gone.path)?;
            fsutil::sync_dir(&*self.fs, &self.dir)?;
            self.next_seq = gone.seq;
        }
        if let Some(last) = self.segments.last().cloned() {
            self.reopen_tail(&last, zxid)?;
        }
        self.publish();
        tracing::info!(after = %zxid, last = ?self.segments.last().map(|s| s.last_zxid), "truncated the log");
        Ok(())
    }

    /// Makes `seg` the active segment again, cut just after `zxid`.
    fn reopen_tail(&mut self, seg: &SegmentView, zxid: Zxid) -> Result<(), WalError> {
        let (cut, last_zxid) = cut_after(seg, zxid, self.shared.options.read_limit())?;
        // As a reopened segment (`reopen_active`): not fallocated up to `segment_size`, whose unwritten extents
        // would make each fdatasync commit the journal; the next segment grows instead.
        let capacity = self.shared.options.next_segment_size(None);
        let file = SegmentFile::open(&*self.fs, &seg.path)?;
        let header = file.read_header()?;
        let file = if cut < seg.end {
            // Rewrite into a new file renamed over the old one: readers keep the old inode, and a crash leaves
            // either the old segment or the new one, never a half-zeroed mix.
            let records = &seg.data[HEADER_LEN..usize::try_from(cut).expect("mapped")];
            SegmentFile::create(&*self.fs, &self.dir, &header, records, capacity.max(cut))?
        } else {
            file
        };
        file.ensure_capacity(capacity)?;
        let capacity = file.file_len()?;
        let view = self.segments.last_mut().expect("seg is the last segment");
        (view.end, view.last_zxid, view.data) = (cut, last_zxid, file.map()?);
        self.next_seq = header.seq + 1;
        self.active = Some(Active { file, header, end: cut, capacity, last_zxid });
        Ok(())
    }

    /// Empties the log and makes it begin after `zxid`, durably: the base file first (naming the first segment
    /// number of the restarted log), then the segments go. A crash in between leaves segments numbered below
    /// the base's `first_seq`, which the next open deletes.
    fn restart_after(&mut self, zxid: Zxid) -> Result<(), WalError> {
        self.publish_active();
        let first_seq = self.segments.last().map_or(self.next_seq, |s| s.seq + 1).max(self.next_seq).max(2);
        crate::base::write(&*self.fs, &self.dir, &crate::base::Base { after: zxid, first_seq })?;
        (self.base, self.restarted) = (Some(zxid), true);
        self.active = None;
        for gone in std::mem::take(&mut self.segments) {
            file::remove(&*self.fs, &gone.path)?;
        }
        fsutil::sync_dir(&*self.fs, &self.dir)?;
        self.next_seq = first_seq;
        self.publish();
        tracing::info!(after = %zxid, first_seq, "restarted the log after a snapshot");
        Ok(())
    }

    /// Deletes the segments that hold only records below `zxid`.
    fn purge_before(&mut self, zxid: Zxid) -> Result<Purged, WalError> {
        self.publish_active();
        let mut purged = Purged::default();
        while self.segments.len() > 1 && self.segments[1].first_zxid <= zxid {
            let gone = self.segments.remove(0);
            purged.segments += 1;
            purged.bytes += gone.end;
            // The log no longer holds every record after its base.
            self.base = None;
            // Readers take the view without it from here on, and the published view lets go of its bytes.
            self.publish();
            self.discard(gone)?;
            fsutil::sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(purged)
    }

    /// Gets rid of a purged segment (durable with the next sync of the directory): it becomes the next spare if
    /// none is under way and no reader still holds it, else it is deleted. Renamed first, so that no reader can
    /// find it by its name any more, then checked ([`WalFile::is_held`]): a reader holding an earlier view, a
    /// slice of one, or the file itself (`ensemble wal dump` in another process) keeps the segment's bytes as
    /// they were, so such a segment is deleted, never overwritten.
    fn discard(&mut self, gone: SegmentView) -> Result<(), WalError> {
        let SegmentView { path, data, .. } = gone;
        drop(data);
        let Some(spare) = self.spare.as_mut().filter(|spare| spare.is_idle()) else {
            return file::remove(&*self.fs, &path);
        };
        file::rename(&*self.fs, &path, spare.path())?;
        let spare_path = spare.path().to_path_buf();
        // Only a segment of the size the next one will have: the log's first, smaller segments are deleted.
        let capacity = self.shared.options.next_segment_size(self.active.as_ref().map(|a| a.capacity));
        let recyclable = || -> io::Result<Option<Box<dyn WalFile>>> {
            let file = self.fs.open(&spare_path, true)?;
            Ok((!file.is_held()? && file.size()? == capacity).then_some(file))
        };
        match recyclable() {
            Ok(Some(file)) => {
                // The rename must be durable before the first zero is: a power cut could otherwise undo it and
                // leave the segment's name on a half-zeroed file, which the next open would find in the log.
                fsutil::sync_dir(&*self.fs, &self.dir)?;
                tracing::debug!(segment = %path.display(), "recycling a purged segment as the next spare");
                spare.recycle(file, capacity);
                Ok(())
            }
            Ok(None) => file::remove(&*self.fs, &spare_path),
            Err(error) => {
                tracing::warn!(%error, segment = %path.display(), "could not recycle a purged segment; deleting it");
                file::remove(&*self.fs, &spare_path)
            }
        }
    }

    /// Fails the log: this batch, everything queued, and everything that comes later.
    fn fail(&mut self, error: WalError, appends: &mut Vec<Append>) -> Arc<WalError> {
        tracing::error!(%error, "write-ahead log failed; it refuses writes until reopened");
        let cause = Arc::new(error);
        self.shared.fail(&cause);
        for a in appends.drain(..) {
            a.complete(Err(WalError::Failed(cause.clone())));
        }
        cause
    }
}

/// Where the records of `seg` at or below `zxid` end, and the last of them.
fn cut_after(seg: &SegmentView, zxid: Zxid, max_payload: usize) -> Result<(u64, Zxid), WalError> {
    let end = usize::try_from(seg.end).expect("mapped");
    let (mut offset, mut last) = (HEADER_LEN, Zxid::ZERO);
    while offset < end {
        match record::decode(&seg.data[..end], offset, max_payload) {
            Decoded::Record { zxid: z, next, .. } if z <= zxid => (offset, last) = (next, z),
            Decoded::Record { .. } => break,
            _ => {
                let kind = crate::error::CorruptionKind::BadChecksum;
                return Err(WalError::Corruption { segment: seg.path.to_path_buf(), offset: offset as u64, kind });
            }
        }
    }
    assert!(last != Zxid::ZERO, "a kept segment starts at or below the truncation point");
    Ok((offset as u64, last))
}

/// Spins for a moment, waiting for a push after `seen`, before the caller sleeps on the condition variable.
/// Waking a sleeping thread costs tens of microseconds on a VM, a fifth of an fdatasync: a lone appender
/// that appends again right after its record was durable finds the writer still awake. The queue is empty
/// only under low load, so the spin costs CPU only then, and at most `idle_spin` per batch.
fn spin_for_work(shared: &Shared, seen: u64) {
    let spin = shared.options.idle_spin;
    if spin.is_zero() {
        return;
    }
    let started = Instant::now();
    while shared.pushed.load(Ordering::Acquire) == seen && started.elapsed() < spin {
        std::hint::spin_loop();
    }
}
