//! When a follower's loop makes its batch of proposals durable on its own thread, not the WAL's writer thread
//! ([`super::RuntimeConfig::quiet_appends_here`]).

use std::time::Duration;

use tokio::time::Instant;

/// Batches of at most this many txns may be made durable on a follower's loop ([`QuietAppends`]): a lone
/// client's write, or two that came together. A larger batch means a busy leader, and the loop has better
/// things to do during an fdatasync than wait for it.
pub const QUIET_BATCH: usize = 2;

/// A batch that took longer than this on the loop's thread means a disk in trouble (an fdatasync takes 0.1 to
/// 5 ms on the development VM): the loop answered nothing for that long.
pub const SLOW_HERE: Duration = Duration::from_millis(20);

/// [`SLOW_HERE`] on a runtime with one worker, where the loop's thread is the server's only one: a batch made
/// durable there holds up every task of the server meanwhile (its clients' reads and pings too), not the loop's
/// work alone. Twice the usual slowest fdatasync on the development VM (0.1 to 5 ms: at 5 ms, a load's first
/// seconds tripped it often enough to cost a lone client 4% of its p50). Its rarer spikes (14 ms, seen as a load
/// began) still trip it, which costs the next lone writes the writer thread's two wake-ups for
/// [`SLOW_COOLDOWN`], not a stall; a disk slower than this keeps the batches on the writer thread.
pub const SLOW_HERE_ALONE: Duration = Duration::from_millis(10);

/// After a batch slower than [`SLOW_HERE`] on the loop's thread, every batch goes to the writer thread for this
/// long: a disk that stalls again stalls that thread, not the loop (its pings, commits and forwards).
pub const SLOW_COOLDOWN: Duration = Duration::from_secs(10);

/// Whether a follower's next batch may be made durable on its loop's thread.
///
/// A loop blocked in an fdatasync answers nothing meanwhile: the commits (so the applies, so the replies to
/// clients), forwards and pings behind it wait. So it does so only while nothing else wants it: when the last
/// batch became durable nothing had arrived meanwhile (a busy loop stays on the writer thread until a batch
/// completes with nothing waiting), nothing waits now, no other batch is in flight (the writer thread would
/// have the IO anyway), the batch is small, and the last one made durable here was not slow (a stalling disk
/// blocks the loop once, then only the writer thread, for [`SLOW_COOLDOWN`]).
#[derive(Debug)]
pub(super) struct QuietAppends {
    /// Switched on, on a multi-thread runtime.
    enabled: bool,
    /// The loop's worker is the runtime's only one: nothing else of the server runs during a batch made durable
    /// here, so a slow one is one over [`SLOW_HERE_ALONE`].
    alone: bool,
    /// Nothing had arrived when the last batch became durable.
    quiet: bool,
    /// Until when batches stay off the loop's thread after a slow one there.
    cooling_until: Option<Instant>,
}

impl QuietAppends {
    /// Switched on if `enabled` and the current tokio runtime is a multi-thread one (a current-thread runtime is
    /// a test's or a simulation's).
    pub(super) fn new(enabled: bool) -> QuietAppends {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let multi = runtime.as_ref().is_some_and(|r| r.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let alone = runtime.is_none_or(|r| r.metrics().num_workers() < 2);
        QuietAppends { enabled: enabled && multi, alone, quiet: true, cooling_until: None }
    }

    /// How long a batch made durable on the loop's thread may take before the next ones go to the writer thread.
    fn slow(&self) -> Duration {
        if self.alone {
            SLOW_HERE_ALONE
        } else {
            SLOW_HERE
        }
    }

    /// Whether a batch of `staged` txns may be made durable on the loop's thread at `now`.
    pub(super) fn allows(&self, now: Instant, following: bool, staged: usize, in_flight: bool, waiting: bool) -> bool {
        self.enabled
            && self.quiet
            && following
            && staged <= QUIET_BATCH
            && !in_flight
            && !waiting
            && self.cooling_until.is_none_or(|until| now >= until)
    }

    /// A batch became durable; `waiting`: something arrived for the loop meanwhile.
    pub(super) fn durable(&mut self, waiting: bool) {
        self.quiet = !waiting;
    }

    /// A batch offered to the loop's thread at `started` was done with at `now` (made durable there, or queued
    /// for the writer thread when that was busy).
    pub(super) fn took_here(&mut self, started: Instant, now: Instant) {
        let took = now.saturating_duration_since(started);
        if took > self.slow() {
            tracing::warn!(
                ms = took.as_millis() as u64,
                "a batch made durable on the replication loop's thread was slow (the disk?): the next ones go to the \
                 WAL's writer thread for a while"
            );
            self.cooling_until = Some(now + SLOW_COOLDOWN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quiet_followers_small_lone_batch_goes_on_the_loop() {
        let now = Instant::now();
        let mut quiet = QuietAppends { enabled: true, alone: false, quiet: true, cooling_until: None };
        assert!(quiet.allows(now, true, 1, false, false));
        assert!(quiet.allows(now, true, QUIET_BATCH, false, false));
        assert!(!quiet.allows(now, false, 1, false, false), "a leader's own proposals would wait behind its fsync");
        assert!(!quiet.allows(now, true, QUIET_BATCH + 1, false, false), "a large batch is a busy leader's");
        assert!(!quiet.allows(now, true, 1, true, false), "the writer thread has the IO");
        assert!(!quiet.allows(now, true, 1, false, true), "something waits for the loop");
        quiet.durable(true);
        assert!(!quiet.allows(now, true, 1, false, false), "something arrived during the last fsync");
        quiet.durable(false);
        assert!(quiet.allows(now, true, 1, false, false), "a batch completed with nothing waiting: quiet again");
        let off = QuietAppends { enabled: false, alone: false, quiet: true, cooling_until: None };
        assert!(!off.allows(now, true, 1, false, false));
    }

    #[test]
    fn a_slow_batch_on_the_loop_keeps_the_next_ones_off_it_for_the_cooldown() {
        let start = Instant::now();
        let mut quiet = QuietAppends { enabled: true, alone: false, quiet: true, cooling_until: None };
        quiet.took_here(start, start + SLOW_HERE);
        assert!(quiet.allows(start + SLOW_HERE, true, 1, false, false), "as slow as allowed: still quiet");
        let done = start + SLOW_HERE + Duration::from_millis(1);
        quiet.took_here(start, done);
        assert!(!quiet.allows(done, true, 1, false, false), "right after a slow batch");
        assert!(!quiet.allows(done + SLOW_COOLDOWN - Duration::from_millis(1), true, 1, false, false));
        assert!(quiet.allows(done + SLOW_COOLDOWN, true, 1, false, false), "the cooldown is over");
    }

    #[test]
    fn a_multi_thread_runtime_appends_here_and_with_one_worker_calls_a_batch_slow_sooner() {
        let one = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let alone = one.block_on(async { QuietAppends::new(true) });
        assert!(alone.enabled && alone.alone);
        assert_eq!(alone.slow(), SLOW_HERE_ALONE);
        let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(!current.block_on(async { QuietAppends::new(true) }).enabled);
        let two = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let shared = two.block_on(async { QuietAppends::new(true) });
        assert!(shared.enabled && !shared.alone);
        assert_eq!(shared.slow(), SLOW_HERE);
        assert!(!two.block_on(async { QuietAppends::new(false) }).enabled);
    }

    #[test]
    fn alone_a_batch_between_the_two_bounds_is_slow() {
        let start = Instant::now();
        let between = start + SLOW_HERE_ALONE + Duration::from_millis(1);
        assert!(between < start + SLOW_HERE);
        let mut shared = QuietAppends { enabled: true, alone: false, quiet: true, cooling_until: None };
        shared.took_here(start, between);
        assert!(shared.allows(between, true, 1, false, false), "with a second worker: not slow");
        let mut alone = QuietAppends { alone: true, ..shared };
        alone.took_here(start, between);
        assert!(!alone.allows(between, true, 1, false, false), "the only worker: slow");
    }
}
