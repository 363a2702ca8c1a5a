//! When a follower's loop makes its batch of proposals durable on its own thread, not the WAL's writer thread
//! ([`super::RuntimeConfig::quiet_appends_here`]).

/// Batches of at most this many txns may be made durable on a follower's loop ([`QuietAppends`]): a lone
/// client's write, or two that came together. A larger batch means a busy leader, and the loop has better
/// things to do during an fdatasync than wait for it.
pub const QUIET_BATCH: usize = 2;

/// Whether a follower's next batch may be made durable on its loop's thread.
///
/// A loop blocked in an fdatasync answers nothing meanwhile: the commits (so the applies, so the replies to
/// clients), forwards and pings behind it wait. So it does so only while nothing else wants it: when the last
/// batch became durable nothing had arrived meanwhile (a busy loop stays on the writer thread until a batch
/// completes with nothing waiting), nothing waits now, no other batch is in flight (the writer thread would
/// have the IO anyway), and the batch is small.
#[derive(Debug)]
pub(super) struct QuietAppends {
    /// Switched on, on a runtime with a second worker to serve everything else meanwhile.
    enabled: bool,
    /// Nothing had arrived when the last batch became durable.
    quiet: bool,
}

impl QuietAppends {
    /// Switched on if `enabled` and the current tokio runtime has two workers or more.
    pub(super) fn new(enabled: bool) -> QuietAppends {
        let workers = tokio::runtime::Handle::try_current().map_or(1, |runtime| runtime.metrics().num_workers());
        QuietAppends { enabled: enabled && workers >= 2, quiet: true }
    }

    /// Whether a batch of `staged` txns may be made durable on the loop's thread.
    pub(super) fn allows(&self, following: bool, staged: usize, in_flight: bool, waiting: bool) -> bool {
        self.enabled && self.quiet && following && staged <= QUIET_BATCH && !in_flight && !waiting
    }

    /// A batch became durable; `waiting`: something arrived for the loop meanwhile.
    pub(super) fn durable(&mut self, waiting: bool) {
        self.quiet = !waiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quiet_followers_small_lone_batch_goes_on_the_loop() {
        let mut quiet = QuietAppends { enabled: true, quiet: true };
        assert!(quiet.allows(true, 1, false, false));
        assert!(quiet.allows(true, QUIET_BATCH, false, false));
        assert!(!quiet.allows(false, 1, false, false), "a leader's own proposals would wait behind its fsync");
        assert!(!quiet.allows(true, QUIET_BATCH + 1, false, false), "a large batch is a busy leader's");
        assert!(!quiet.allows(true, 1, true, false), "the writer thread has the IO");
        assert!(!quiet.allows(true, 1, false, true), "something waits for the loop");
        quiet.durable(true);
        assert!(!quiet.allows(true, 1, false, false), "something arrived during the last fsync");
        quiet.durable(false);
        assert!(quiet.allows(true, 1, false, false), "a batch completed with nothing waiting: quiet again");
        let off = QuietAppends { enabled: false, quiet: true };
        assert!(!off.allows(true, 1, false, false));
    }

    #[test]
    fn a_runtime_with_one_worker_never_blocks_its_loop() {
        let one = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        assert!(!one.block_on(async { QuietAppends::new(true) }).enabled);
        let current = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(!current.block_on(async { QuietAppends::new(true) }).enabled);
        let two = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        assert!(two.block_on(async { QuietAppends::new(true) }).enabled);
        assert!(!two.block_on(async { QuietAppends::new(false) }).enabled);
    }
}
