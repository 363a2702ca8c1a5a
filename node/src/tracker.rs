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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::leader::Origin;
use crate::session::SessionId;
use crate::shared::lock;

/// The sessions a leader tracks.
#[derive(Debug, Default)]
pub struct Tracker {
    /// `None` until the pipeline starts the tracker for its term, and again once it stops it.
    sessions: Mutex<Option<HashMap<SessionId, Tracked>>>,
}

/// A session as the leader tracks it.
#[derive(Debug)]
struct Tracked {
    timeout: Duration,
    /// When it expires unless touched.
    deadline: Instant,
    /// The server its client last attached on.
    owner: Option<Origin>,
}

impl Tracker {
    /// Tracks `sessions` (id, timeout in ms) from `now`, in place of whatever it tracked: a new term's tracker.
    pub fn start(&self, sessions: impl IntoIterator<Item = (SessionId, i32)>, now: Instant) {
        *lock(&self.sessions) = Some(sessions.into_iter().map(|(s, t)| (s, Tracked::new(t, now))).collect());
    }

    /// Tracks nothing: this server no longer leads (or must rebuild its tracker).
    pub fn stop(&self) {
        *lock(&self.sessions) = None;
    }

    /// Tracks a new session, with its whole timeout from `now` (if the tracker is started).
    pub fn add(&self, session: SessionId, timeout_ms: i32, now: Instant) {
        if let Some(sessions) = lock(&self.sessions).as_mut() {
            sessions.insert(session, Tracked::new(timeout_ms, now));
        }
    }

    /// Stops tracking a session (it is closing).
    pub fn remove(&self, session: SessionId) {
        if let Some(sessions) = lock(&self.sessions).as_mut() {
            sessions.remove(&session);
        }
    }

    /// Whether the session is tracked (neither expired nor closed).
    pub fn contains(&self, session: SessionId) -> bool {
        lock(&self.sessions).as_ref().is_some_and(|sessions| sessions.contains_key(&session))
    }

    /// Clients of these sessions were active until `now`: each has its whole timeout again. Sessions not tracked
    /// (closing, unknown, or a tracker not started) are left alone.
    pub fn touch(&self, sessions: &[SessionId], now: Instant) {
        let mut tracked = lock(&self.sessions);
        let Some(tracked) = tracked.as_mut() else { return };
        for session in sessions {
            if let Some(tracked) = tracked.get_mut(session) {
                tracked.deadline = tracked.deadline.max(now + tracked.timeout);
            }
        }
    }

    /// Stops tracking every session whose deadline is at or before `now`, and returns them: the caller closes
    /// them. A touch that comes after finds them gone, as ZooKeeper's finds a closing session.
    pub fn expire(&self, now: Instant) -> Vec<SessionId> {
        let mut expired = Vec::new();
        let mut sessions = lock(&self.sessions);
        let Some(sessions) = sessions.as_mut() else { return expired };
        sessions.retain(|&session, tracked| {
            let alive = tracked.deadline > now;
            if !alive {
                expired.push(session);
            }
            alive
        });
        expired
    }

    /// Records that the session's client attached on `origin`, and returns the server it was attached on before,
    /// if another (that server's connection must close).
    pub fn attach(&self, session: SessionId, origin: Origin) -> Option<Origin> {
        let mut sessions = lock(&self.sessions);
        let old = sessions.as_mut()?.get_mut(&session).and_then(|t| t.owner.replace(origin));
        old.filter(|&old| old != origin)
    }

    /// The server the session's client last attached on, if known.
    pub fn owner(&self, session: SessionId) -> Option<Origin> {
        lock(&self.sessions).as_ref()?.get(&session).and_then(|t| t.owner)
    }

    /// Every tracked session and when it expires unless touched (`dump`); `None` while the tracker is not
    /// started (a leader whose pipeline has not become ready: the tree's sessions are what it knows).
    pub fn deadlines(&self) -> Option<Vec<(SessionId, Instant)>> {
        Some(lock(&self.sessions).as_ref()?.iter().map(|(&s, t)| (s, t.deadline)).collect())
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        lock(&self.sessions).as_ref().map_or(0, HashMap::len)
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tracked {
    fn new(timeout_ms: i32, now: Instant) -> Tracked {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        Tracked { timeout, deadline: now + timeout, owner: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_touched_session_outlives_its_timeout_and_an_untouched_one_expires_once() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 100), (2, 100)], t0);
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
        tracker.start([(1, 100)], t0);
        tracker.touch(&[1], t0 + 50 * MS);
        // A touch measured earlier (a follower's, say) handled after a newer one.
        tracker.touch(&[1], t0 + 10 * MS);
        assert_eq!(tracker.deadlines(), Some(vec![(1, t0 + 150 * MS)]));
    }

    #[test]
    fn an_attach_elsewhere_names_the_old_server_and_a_stopped_tracker_tracks_nothing() {
        let (tracker, t0) = (Tracker::default(), Instant::now());
        tracker.start([(1, 100)], t0);
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
        tracker.start([], t0);
        tracker.add(9, 100, t0);
        assert!(tracker.contains(9));
        tracker.remove(9);
        assert!(!tracker.contains(9));
    }
}
