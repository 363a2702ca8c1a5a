//! The leader's session tracker (ZooKeeper's `SessionTrackerImpl`): each session's deadline, which its client's
//! activity on any server pushes back, and the server its client last attached on.
//!
//! Touches reach it directly, from this server's toucher and from the handler of what followers forward, never
//! through the pipeline's queue (as ZooKeeper's learner handlers touch sessions on reading a ping, beside the
//! request queue). So a pipeline that waits for a full window, for applies or for a slow disk delays no touch:
//! a live client's session does not expire because the leader was busy, and a silent one's expires on time
//! however busy the leader is.
//!
//! The pipeline owns the tracker's life: it fills it from the committed tree when it becomes ready to lead
//! ([`Tracker::start`]), adds and removes sessions as it prepares their creates and closes, expires them, and
//! empties it when it stops leading ([`Tracker::stop`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::leader::Origin;
use crate::session::SessionId;

/// The sessions a leader tracks.
#[derive(Debug, Default)]
pub struct Tracker {
    /// `None` until the pipeline starts the tracker for its term, and again once it stops it. A fair lock where it
    /// matters: an expiry round hands it to a waiting touch between its holds ([`Tracker::expire`]).
    sessions: Mutex<Option<Sessions>>,
}

/// Sessions examined per hold of the lock in an expiry round: between holds, touches waiting for the lock may take it.
const EXAMINED_PER_HOLD: usize = 4096;

/// A term's sessions, filed in buckets by deadline, as ZooKeeper's `ExpiryQueue` files them, but lazily.
///
/// A session is filed under its deadline rounded up to the next multiple of `granularity` after `origin`. A touch
/// only moves its deadline on (a map lookup: a busy server touches every active session each half tick, and
/// moving each between buckets costs ten times that). An expiry round takes out the buckets that are due and
/// examines their sessions: one whose deadline passed expires, one that was touched since it was filed is filed
/// again under its deadline. So a round examines only the sessions filed under its time, never every session,
/// and a session is examined at most once per timeout.
///
/// Invariants: a session is in `tracked` exactly when it is in the bucket its `Tracked::bucket` names; no bucket
/// is empty; a session's bucket is at or before its deadline rounded up (a touch only moves the deadline on).
#[derive(Debug)]
struct Sessions {
    origin: Instant,
    granularity: Duration,
    tracked: HashMap<SessionId, Tracked>,
    buckets: BTreeMap<Instant, HashSet<SessionId>>,
}

/// A session as the leader tracks it.
#[derive(Debug)]
struct Tracked {
    timeout: Duration,
    /// When it expires unless touched.
    deadline: Instant,
    /// The bucket it is filed in: its deadline when it was filed, rounded up.
    bucket: Instant,
    /// The server its client last attached on.
    owner: Option<Origin>,
}

impl Tracker {
    /// Tracks `sessions` (id, timeout in ms) from `now`, in place of whatever it tracked: a new term's tracker.
    /// Deadlines are filed to `granularity` (at least a millisecond): [`Tracker::expire`] returns a session less
    /// than that after its deadline if called every `granularity`, never before its deadline.
    pub fn start(&self, sessions: impl IntoIterator<Item = (SessionId, i32)>, now: Instant, granularity: Duration) {
        let granularity = granularity.max(Duration::from_millis(1));
        let mut started = Sessions { origin: now, granularity, tracked: HashMap::new(), buckets: BTreeMap::new() };
        for (session, timeout_ms) in sessions {
            started.add(session, timeout_ms, now);
        }
        *self.sessions.lock() = Some(started);
    }

    /// Tracks nothing: this server no longer leads (or must rebuild its tracker).
    pub fn stop(&self) {
        *self.sessions.lock() = None;
    }

    /// Tracks a new session, with its whole timeout from `now` (if the tracker is started).
    pub fn add(&self, session: SessionId, timeout_ms: i32, now: Instant) {
        if let Some(sessions) = self.sessions.lock().as_mut() {
            sessions.add(session, timeout_ms, now);
        }
    }

    /// Stops tracking a session (it is closing).
    pub fn remove(&self, session: SessionId) {
        if let Some(sessions) = self.sessions.lock().as_mut() {
            sessions.remove(session);
        }
    }

    /// Whether the session is tracked (neither expired nor closed).
    pub fn contains(&self, session: SessionId) -> bool {
        self.sessions.lock().as_ref().is_some_and(|sessions| sessions.tracked.contains_key(&session))
    }

    /// Clients of these sessions were active until `now`: each has its whole timeout again. Sessions not tracked
    /// (closing, unknown, or a tracker not started) are left alone. A touch measured earlier than one already
    /// handled (a follower's, say) never brings a deadline forward.
    pub fn touch(&self, sessions: &[SessionId], now: Instant) {
        let mut tracked = self.sessions.lock();
        let Some(tracked) = tracked.as_mut() else { return };
        for session in sessions {
            if let Some(tracked) = tracked.tracked.get_mut(session) {
                tracked.deadline = tracked.deadline.max(now + tracked.timeout);
            }
        }
    }

    /// Stops tracking every session whose deadline is at or before `now` and whose bucket is due, and returns
    /// them: the caller closes them. A touch that comes after finds them gone, as ZooKeeper's finds a closing
    /// session. Every [`EXAMINED_PER_HOLD`] sessions the lock goes to whoever waits for it (a touch), and comes
    /// back after: a plain unlock would let this thread, already running, take it again before a waiter woke,
    /// so that a touch measured before a session's deadline could wait out a long round and find it expired.
    pub fn expire(&self, now: Instant) -> Vec<SessionId> {
        let mut expired = Vec::new();
        let mut sessions = self.sessions.lock();
        loop {
            let Some(tracked) = sessions.as_mut() else { return expired };
            if !tracked.examine(now, EXAMINED_PER_HOLD, &mut expired) {
                return expired;
            }
            MutexGuard::bump(&mut sessions);
        }
    }

    /// Records that the session's client attached on `origin`, and returns the server it was attached on before,
    /// if another (that server's connection must close).
    pub fn attach(&self, session: SessionId, origin: Origin) -> Option<Origin> {
        let mut sessions = self.sessions.lock();
        let old = sessions.as_mut()?.tracked.get_mut(&session).and_then(|t| t.owner.replace(origin));
        old.filter(|&old| old != origin)
    }

    /// The server the session's client last attached on, if known.
    pub fn owner(&self, session: SessionId) -> Option<Origin> {
        self.sessions.lock().as_ref()?.tracked.get(&session).and_then(|t| t.owner)
    }

    /// Every tracked session and when it expires unless touched (`dump`); `None` while the tracker is not
    /// started (a leader whose pipeline has not become ready: the tree's sessions are what it knows).
    pub fn deadlines(&self) -> Option<Vec<(SessionId, Instant)>> {
        Some(self.sessions.lock().as_ref()?.tracked.iter().map(|(&s, t)| (s, t.deadline)).collect())
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        self.sessions.lock().as_ref().map_or(0, |sessions| sessions.tracked.len())
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sessions {
    /// The bucket of a session due at `deadline`.
    fn bucket(&self, deadline: Instant) -> Instant {
        bucket(self.origin, self.granularity, deadline)
    }

    fn add(&mut self, session: SessionId, timeout_ms: i32, now: Instant) {
        self.remove(session);
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let deadline = now + timeout;
        let bucket = self.bucket(deadline);
        self.tracked.insert(session, Tracked { timeout, deadline, bucket, owner: None });
        self.buckets.entry(bucket).or_default().insert(session);
    }

    fn remove(&mut self, session: SessionId) {
        let Some(tracked) = self.tracked.remove(&session) else { return };
        if let Some(filed) = self.buckets.get_mut(&tracked.bucket) {
            filed.remove(&session);
            if filed.is_empty() {
                self.buckets.remove(&tracked.bucket);
            }
        }
    }

    /// Examines up to `budget` sessions of the buckets due at `now`: those whose deadline passed go to `expired`,
    /// the others are filed again under their deadline. Returns whether due buckets are left.
    fn examine(&mut self, now: Instant, mut budget: usize, expired: &mut Vec<SessionId>) -> bool {
        while let Some(mut due) = self.buckets.first_entry() {
            if *due.key() > now {
                return false;
            }
            if budget == 0 {
                return true;
            }
            let taken: Vec<SessionId> = due.get().iter().take(budget).copied().collect();
            budget -= taken.len();
            for session in &taken {
                due.get_mut().remove(session);
            }
            if due.get().is_empty() {
                due.remove();
            }
            for session in taken {
                let Some(tracked) = self.tracked.get_mut(&session) else { continue };
                if tracked.deadline <= now {
                    self.tracked.remove(&session);
                    expired.push(session);
                } else {
                    // Touched since it was filed: its deadline is after `now`, and so is its new bucket.
                    tracked.bucket = bucket(self.origin, self.granularity, tracked.deadline);
                    self.buckets.entry(tracked.bucket).or_default().insert(session);
                }
            }
        }
        false
    }
}

/// The bucket of a session due at `deadline`: the first multiple of `granularity` after `origin` that is not
/// before it.
fn bucket(origin: Instant, granularity: Duration, deadline: Instant) -> Instant {
    let since = deadline.saturating_duration_since(origin).as_nanos();
    let step = granularity.as_nanos();
    let rounded = since.div_ceil(step) * step;
    // u64 nanoseconds last 584 years from the tracker's start.
    origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_touched_session_outlives_its_timeout_and_an_untouched_one_expires_once() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 100), (2, 100)], t0, MS);
        tracker.touch(&[2, 3], t0 + 80 * MS);
        assert_eq!(tracker.expire(t0 + 99 * MS), Vec::<SessionId>::new(), "nothing is due yet");
        assert_eq!(tracker.expire(t0 + 100 * MS), vec![1]);
        assert_eq!(tracker.expire(t0 + 150 * MS), Vec::<SessionId>::new(), "1 expires once; 2 was touched");
        tracker.touch(&[1], t0 + 150 * MS);
        assert!(!tracker.contains(1), "a touch does not bring an expired session back");
        assert_eq!(tracker.expire(t0 + 180 * MS), vec![2]);
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_late_touch_never_brings_a_deadline_forward() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 100)], t0, MS);
        tracker.touch(&[1], t0 + 50 * MS);
        // A touch measured earlier (a follower's, say) handled after a newer one.
        tracker.touch(&[1], t0 + 10 * MS);
        assert_eq!(tracker.deadlines(), Some(vec![(1, t0 + 150 * MS)]));
    }

    #[test]
    fn an_attach_elsewhere_names_the_old_server_and_a_stopped_tracker_tracks_nothing() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 100)], t0, MS);
        assert_eq!(tracker.attach(1, Origin::Local), None, "first attach");
        assert_eq!(tracker.attach(1, Origin::Local), None, "same server");
        let peer = Origin::Peer(replication::message::ServerId(2));
        assert_eq!(tracker.attach(1, peer), Some(Origin::Local));
        assert_eq!(tracker.owner(1), Some(peer));
        assert_eq!(tracker.attach(7, peer), None, "an unknown session");
        tracker.stop();
        assert_eq!(tracker.deadlines(), None, "a stopped tracker knows no deadlines");
        tracker.add(9, 100, t0);
        tracker.touch(&[9], t0);
        assert!(!tracker.contains(9) && tracker.expire(t0 + 200 * MS).is_empty(), "a stopped tracker takes nothing");
        tracker.start([], t0, MS);
        tracker.add(9, 100, t0);
        assert!(tracker.contains(9));
        tracker.remove(9);
        assert!(!tracker.contains(9));
    }

    #[test]
    fn a_session_is_examined_when_its_bucket_is_due_and_expires_only_past_its_deadline() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 120), (2, 100)], t0, 50 * MS);
        assert_eq!(tracker.expire(t0 + 99 * MS), Vec::<SessionId>::new());
        assert_eq!(tracker.expire(t0 + 100 * MS), vec![2], "100 ms is on a bucket's edge");
        tracker.touch(&[1], t0 + 20 * MS);
        assert_eq!(tracker.expire(t0 + 149 * MS), Vec::<SessionId>::new(), "its bucket (150 ms) is not due");
        tracker.touch(&[1], t0 + 40 * MS);
        assert_eq!(tracker.expire(t0 + 150 * MS), Vec::<SessionId>::new(), "touched: due at 160 ms, filed at 200");
        assert_eq!(tracker.expire(t0 + 199 * MS), Vec::<SessionId>::new());
        assert_eq!(tracker.expire(t0 + 200 * MS), vec![1]);
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_round_over_more_sessions_than_one_hold_examines_them_all() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        let n = 3 * EXAMINED_PER_HOLD as i64 + 7;
        tracker.start((0..n).map(|s| (s, 100)), t0, 10 * MS);
        let odd: Vec<SessionId> = (0..n).filter(|s| s % 2 == 1).collect();
        tracker.touch(&odd, t0 + 50 * MS);
        let mut expired = tracker.expire(t0 + 100 * MS);
        expired.sort_unstable();
        assert_eq!(expired, (0..n).filter(|s| s % 2 == 0).collect::<Vec<_>>(), "the untouched half, all of it");
        assert_eq!(tracker.len(), odd.len());
        let mut expired = tracker.expire(t0 + 150 * MS);
        expired.sort_unstable();
        assert_eq!(expired, odd, "then the touched half");
    }

    /// An expiry round over many holds hands the lock to a waiting touch between them: with a plain unlock the
    /// round's thread, running, takes the lock back before the woken waiter does, and a touch waits out the round
    /// (with std's `Mutex`, as before, the toucher below got in between none of the 32 holds, in three runs).
    #[test]
    fn a_long_expiry_round_lets_waiting_touches_in_between_its_holds() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        let holds = 32;
        let due = holds * EXAMINED_PER_HOLD as i64;
        // Sessions 1..=due are due at once; session 0 lives an hour, and is touched throughout.
        tracker.start((1..=due).map(|s| (s, 0)).chain([(0, 3_600_000)]), t0, MS);
        let done = std::sync::atomic::AtomicBool::new(false);
        let mid_round = std::thread::scope(|scope| {
            let toucher = scope.spawn(|| {
                let mut mid_round = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    tracker.touch(&[0], t0 + MS);
                    // Part of the round expired, not all of it: this hold came between two of the round's.
                    let left = tracker.len() as i64 - 1;
                    mid_round += usize::from(left > 0 && left < due);
                }
                mid_round
            });
            // Start once the toucher runs (it holds the lock now and then), or a round on a busy host could be over
            // before the toucher began.
            while tracker.sessions.try_lock().is_some() && !toucher.is_finished() {
                std::hint::spin_loop();
            }
            let expired = tracker.expire(t0 + 2 * MS);
            done.store(true, std::sync::atomic::Ordering::Release);
            assert_eq!(expired.len() as i64, due);
            toucher.join().unwrap()
        });
        assert_eq!(tracker.len(), 1, "the touched session stays");
        assert!(mid_round >= holds as usize / 4, "touches got in between {mid_round} of {holds} holds");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(SessionId, i32),
        Touch(Vec<SessionId>),
        Remove(SessionId),
        /// Time moves on this many ms, then the tracker expires what is due.
        Expire(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let session = 0..12i64;
        prop_oneof![
            (session.clone(), 0..400i32).prop_map(|(s, t)| Op::Add(s, t)),
            proptest::collection::vec(session.clone(), 0..4).prop_map(Op::Touch),
            session.prop_map(Op::Remove),
            (0..150u32).prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// A session expires in the first round at or after its deadline rounded up, never before its deadline,
        /// and the buckets keep the tracker's invariants.
        #[test]
        fn the_buckets_expire_sessions_on_time(
            granularity in 1..60u32,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let (tracker, t0) = (Tracker::default(), Instant::now());
            let granularity = granularity * MS;
            tracker.start([], t0, granularity);
            let round = |at: Duration| {
                let step = granularity.as_nanos();
                Duration::from_nanos((at.as_nanos().div_ceil(step) * step) as u64)
            };
            // Session -> (timeout, deadline), both from t0.
            let mut model: HashMap<SessionId, (Duration, Duration)> = HashMap::new();
            let mut now = Duration::ZERO;
            for op in ops {
                match op {
                    Op::Add(s, timeout) => {
                        tracker.add(s, timeout, t0 + now);
                        model.insert(s, (Duration::from_millis(timeout as u64), now + Duration::from_millis(timeout as u64)));
                    }
                    Op::Touch(sessions) => {
                        tracker.touch(&sessions, t0 + now);
                        for s in sessions {
                            if let Some((timeout, deadline)) = model.get_mut(&s) {
                                *deadline = (*deadline).max(now + *timeout);
                            }
                        }
                    }
                    Op::Remove(s) => {
                        tracker.remove(s);
                        model.remove(&s);
                    }
                    Op::Expire(ms) => {
                        now += ms * MS;
                        let expired: HashSet<SessionId> = tracker.expire(t0 + now).into_iter().collect();
                        for (s, &(_, deadline)) in &model {
                            prop_assert!(!expired.contains(s) || deadline <= now, "{} expired early", s);
                            prop_assert!(expired.contains(s) || round(deadline) > now, "{} expired late", s);
                        }
                        prop_assert!(expired.iter().all(|s| model.contains_key(s)), "only tracked sessions expire");
                        model.retain(|s, _| !expired.contains(s));
                    }
                }
                let guard = tracker.sessions.lock();
                let sessions = guard.as_ref().expect("started");
                let filed: usize = sessions.buckets.values().map(HashSet::len).sum();
                prop_assert!(sessions.buckets.values().all(|b| !b.is_empty()), "no empty bucket");
                prop_assert_eq!(filed, sessions.tracked.len());
                prop_assert_eq!(sessions.tracked.len(), model.len());
                for (s, tracked) in &sessions.tracked {
                    prop_assert!(sessions.buckets[&tracked.bucket].contains(s));
                    prop_assert_eq!(tracked.deadline, t0 + model[s].1);
                    prop_assert!(tracked.bucket <= t0 + round(model[s].1), "filed after its rounded deadline");
                }
            }
        }
    }
}
