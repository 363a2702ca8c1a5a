//! The bounded submission queue between appenders and the writer thread.
//!
//! Appenders push under one mutex, so every append gets its place in call order and its zxid is checked against
//! the one queued before it. The queue is bounded in records and payload bytes: a full queue makes blocking
//! appenders wait on a condition variable and async appenders on a [`Notify`], never grow the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::WalError;
use crate::options::WalOptions;
use crate::pending::{Completion, Pending};
use crate::{Purged, Zxid};

/// One append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Append {
    pub zxid: Zxid,
    pub payload: Bytes,
    /// `None` for all but the last record of a batch appended together.
    pub done: Option<Completion<Zxid>>,
}

impl Append {
    /// Reports the outcome to whoever waits for this record.
    pub fn complete(self, outcome: Result<Zxid, WalError>) {
        if let Some(done) = self.done {
            // A receiver that went away no longer cares; the outcome stands all the same.
            let _ = done.send(outcome);
        }
    }
}

/// Work for the writer thread, in queue order.
#[derive(Debug)]
pub(crate) enum Command {
    Append(Append),
    TruncateAfter { zxid: Zxid, done: Completion<()> },
    PurgeBefore { zxid: Zxid, done: Completion<Purged> },
    RestartAfter { zxid: Zxid, done: Completion<()> },
}

impl Command {
    /// Completes the command with an error.
    pub fn fail(self, error: impl Fn() -> WalError) {
        // A receiver that went away no longer cares about the outcome.
        match self {
            Command::Append(a) => a.complete(Err(error())),
            Command::TruncateAfter { done, .. } => drop(done.send(Err(error()))),
            Command::PurgeBefore { done, .. } => drop(done.send(Err(error()))),
            Command::RestartAfter { done, .. } => drop(done.send(Err(error()))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct QueueState {
    pub commands: VecDeque<Command>,
    /// Payload bytes of the queued appends.
    pub queued_bytes: usize,
    /// Number of queued appends.
    pub queued_appends: usize,
    /// The zxid of the last append accepted (durable or queued): the next must be above it.
    pub last_assigned: Zxid,
    /// Set when a write or fsync failed: everything fails from then on.
    pub failed: Option<Arc<WalError>>,
    /// Set when the log is dropped: the writer drains the queue and stops.
    pub closed: bool,
    /// The writer is waiting on `work` (so a push must wake it; otherwise it will look on its own).
    pub writer_waiting: bool,
    /// Someone is doing the log's IO: the writer thread, or an appender that found it idle
    /// ([`crate::SyncAppend::wait`]). Whoever sets it has the writer to itself until it clears it.
    pub io_busy: bool,
    /// Blocking appenders waiting on `room`.
    pub room_waiters: usize,
}

/// State shared by the [`crate::Wal`] handle and its writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<QueueState>,
    /// The writer waits here for commands.
    pub work: Condvar,
    /// Blocking appenders wait here for room.
    pub room: Condvar,
    /// Async appenders wait here for room.
    pub room_async: Notify,
    pub options: WalOptions,
    pub counters: crate::stats::Counters,
    /// Commands ever pushed: the writer spins on it briefly before sleeping.
    pub pushed: AtomicU64,
}

/// What a try to enqueue did.
pub(crate) enum Enqueue {
    Queued(Pending<Zxid>),
    /// The queue is full; the records come back to try again.
    Full(Vec<(Zxid, Bytes)>),
}

/// The log's IO ([`QueueState::io_busy`]), claimed by the writer thread or by an appender that found it free; given
/// back when dropped, waking the writer thread for whatever was queued meanwhile.
///
/// A panic inside the IO fails the log on its way out ([`WalError::IoPanicked`]): the appenders waiting for that
/// IO get an error instead of waiting forever for an owner that is gone, and nothing later is reported durable.
/// The batch being written when it panicked completes as [`WalError::Closed`] (its completions are dropped).
#[must_use = "the IO is given back when the claim is dropped"]
pub(crate) struct IoClaim<'a> {
    shared: &'a Shared,
}

impl Drop for IoClaim<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the write-ahead log's IO panicked; the log fails");
            self.shared.fail(&Arc::new(WalError::IoPanicked));
        }
        let mut state = self.shared.lock_even_poisoned();
        debug_assert!(state.io_busy, "the IO was claimed");
        state.io_busy = false;
        if !state.commands.is_empty() && state.writer_waiting {
            self.shared.work.notify_one();
        }
    }
}

impl Shared {
    pub fn new(options: WalOptions, last_assigned: Zxid) -> Shared {
        let state = QueueState {
            commands: VecDeque::new(),
            queued_bytes: 0,
            queued_appends: 0,
            last_assigned,
            failed: None,
            closed: false,
            writer_waiting: false,
            io_busy: false,
            room_waiters: 0,
        };
        Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
            room: Condvar::new(),
            room_async: Notify::new(),
            options,
            counters: Default::default(),
            pushed: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().expect("WAL queue lock poisoned by a panic")
    }

    /// Blocks while the queue is full, then queues the append.
    pub fn append_blocking(&self, zxid: Zxid, payload: Bytes) -> Result<Pending<Zxid>, WalError> {
        let state = self.wait_for_room(payload.len(), 1)?;
        self.push(state, vec![(zxid, payload)])
    }

    /// Blocks while the queue has no room for the whole batch, then queues all of it at once (so that one fsync
    /// covers it). Every zxid must be above the one before it; nothing is queued otherwise.
    pub fn append_batch_blocking(&self, records: Vec<(Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        let bytes = records.iter().map(|(_, p)| p.len()).sum();
        let state = self.wait_for_room(bytes, records.len())?;
        self.push(state, records)
    }

    /// Blocks while the queue is full, then queues the append without waking the writer thread: the caller is
    /// about to wait for it, and does the IO itself if nobody is doing it by then ([`Shared::try_claim_io`]), or
    /// wakes the thread ([`Shared::wake_writer`]) if it does not wait after all.
    pub fn append_quietly(&self, zxid: Zxid, payload: Bytes) -> Result<Pending<Zxid>, WalError> {
        let state = self.wait_for_room(payload.len(), 1)?;
        self.push_waking(state, vec![(zxid, payload)], false)
    }

    /// Claims the IO ([`QueueState::io_busy`]) if nobody is doing it and there is work; the caller then does the
    /// queued work and gives it back by dropping the claim.
    pub fn try_claim_io(&self) -> Option<IoClaim<'_>> {
        let mut state = self.lock();
        let claim = !state.io_busy && !state.commands.is_empty();
        state.io_busy |= claim;
        claim.then(|| IoClaim { shared: self })
    }

    /// Claims the IO under the lock, which the caller holds and saw it free with work queued.
    pub fn claim_io_locked<'a>(&'a self, state: &mut QueueState) -> IoClaim<'a> {
        assert!(!state.io_busy, "the IO is free");
        state.io_busy = true;
        IoClaim { shared: self }
    }

    /// Wakes the writer thread if it sleeps while work is queued and nobody does it.
    pub fn wake_writer(&self) {
        let state = self.lock();
        if !state.io_busy && !state.commands.is_empty() && state.writer_waiting {
            self.work.notify_one();
        }
    }

    /// Fails the log with `cause` (unless it failed already: the first cause stands): everything queued fails now,
    /// and every later operation.
    pub fn fail(&self, cause: &Arc<WalError>) {
        let mut state = self.lock_even_poisoned();
        let cause = state.failed.get_or_insert_with(|| cause.clone()).clone();
        let queued: Vec<Command> = state.commands.drain(..).collect();
        (state.queued_bytes, state.queued_appends) = (0, 0);
        let blocking_waiters = state.room_waiters;
        drop(state);
        self.wake_appenders(blocking_waiters);
        for command in queued {
            command.fail(|| WalError::Failed(cause.clone()));
        }
    }

    /// The queue's lock even if a panic poisoned it: for the way out of a panic, whose state changes under the lock
    /// are each complete (no invariant spans a panic point there).
    fn lock_even_poisoned(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues the records (one append, or a batch covered by one fsync) if there is room for all of them.
    pub fn try_append(&self, records: Vec<(Zxid, Bytes)>) -> Result<Enqueue, WalError> {
        self.try_append_waking(records, true)
    }

    /// [`Shared::try_append`] without waking the writer thread: the caller does the IO itself if nobody is doing
    /// it ([`Shared::try_claim_io`]), or wakes the thread ([`Shared::wake_writer`]).
    pub fn try_append_quietly(&self, records: Vec<(Zxid, Bytes)>) -> Result<Enqueue, WalError> {
        self.try_append_waking(records, false)
    }

    fn try_append_waking(&self, records: Vec<(Zxid, Bytes)>, wake: bool) -> Result<Enqueue, WalError> {
        let state = self.lock();
        check_usable(&state)?;
        let bytes = records.iter().map(|(_, p)| p.len()).sum();
        if !self.has_room(&state, bytes, records.len()) {
            return Ok(Enqueue::Full(records));
        }
        self.push_waking(state, records, wake).map(Enqueue::Queued)
    }

    /// Queues a control command (not bounded: there is at most one per caller, and they are rare).
    pub fn push_control(&self, make: impl FnOnce(&mut QueueState) -> Command) -> Result<(), WalError> {
        let mut state = self.lock();
        check_usable(&state)?;
        let command = make(&mut state);
        state.commands.push_back(command);
        self.pushed.fetch_add(1, Ordering::Release);
        self.work.notify_one();
        Ok(())
    }

    /// Whether `count` appends of `bytes` payload bytes fit. Anything fits an empty queue, so that a batch (or a
    /// record) bigger than the bounds still gets through.
    fn has_room(&self, state: &QueueState, bytes: usize, count: usize) -> bool {
        state.queued_appends == 0
            || (state.queued_bytes + bytes <= self.options.max_queued_bytes
                && state.queued_appends + count <= self.options.max_queued_records)
    }

    /// Blocks until `count` appends of `bytes` bytes fit (or the log fails or closes).
    fn wait_for_room(&self, bytes: usize, count: usize) -> Result<MutexGuard<'_, QueueState>, WalError> {
        let mut state = self.lock();
        loop {
            check_usable(&state)?;
            if self.has_room(&state, bytes, count) {
                return Ok(state);
            }
            state.room_waiters += 1;
            state = self.room.wait(state).expect("WAL queue lock poisoned by a panic");
            state.room_waiters -= 1;
        }
    }

    /// Queues `records` (zxids increasing, all above the last one queued) and wakes the writer; the `Pending`
    /// completes once the last of them is durable. Nothing is queued if a zxid is out of order.
    fn push(&self, state: MutexGuard<'_, QueueState>, records: Vec<(Zxid, Bytes)>) -> Result<Pending<Zxid>, WalError> {
        self.push_waking(state, records, true)
    }

    /// [`Shared::push`], waking a waiting writer thread only if `wake`.
    fn push_waking(
        &self,
        mut state: MutexGuard<'_, QueueState>,
        records: Vec<(Zxid, Bytes)>,
        wake: bool,
    ) -> Result<Pending<Zxid>, WalError> {
        let mut last = state.last_assigned;
        for &(zxid, _) in &records {
            if zxid <= last {
                return Err(WalError::ZxidNotIncreasing { zxid, last });
            }
            last = zxid;
        }
        state.last_assigned = last;
        let (done, pending) = Pending::new();
        let (count, mut done) = (records.len(), Some(done));
        for (i, (zxid, payload)) in records.into_iter().enumerate() {
            state.queued_bytes += payload.len();
            state.queued_appends += 1;
            let done = if i + 1 == count { done.take() } else { None };
            state.commands.push_back(Command::Append(Append { zxid, payload, done }));
        }
        self.pushed.fetch_add(1, Ordering::Release);
        if wake && state.writer_waiting {
            self.work.notify_one();
        }
        Ok(pending)
    }

    /// Wakes every appender waiting for room (`blocking_waiters`: how many blocking ones there were).
    pub fn wake_appenders(&self, blocking_waiters: usize) {
        if blocking_waiters > 0 {
            self.room.notify_all();
        }
        self.room_async.notify_waiters();
    }
}

fn check_usable(state: &QueueState) -> Result<(), WalError> {
    if let Some(cause) = &state.failed {
        return Err(WalError::Failed(cause.clone()));
    }
    if state.closed {
        return Err(WalError::Closed);
    }
    Ok(())
}
