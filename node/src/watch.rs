//! Watches: who is told about which change (ZooKeeper's `WatchManager` with `WatcherMode`s).
//!
//! Watches belong to a session's connection on this server: they vanish when it closes, and the client
//! re-registers them on its next connection with `setWatches`. One-shot data and child watches are removed as
//! they fire; persistent ones stay until removed. A recursive watch fires for changes at or below its path,
//! except `NodeChildrenChanged`, which a recursive watcher infers from the create or delete it also sees.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::session::SessionId;

/// ZooKeeper's `Watcher.Event.EventType` values.
#[allow(missing_docs)]
pub mod event {
    pub const NODE_CREATED: i32 = 1;
    pub const NODE_DELETED: i32 = 2;
    pub const NODE_DATA_CHANGED: i32 = 3;
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
}

/// `Watcher.Event.KeeperState.SyncConnected`: the state every event a server sends carries.
pub const SYNC_CONNECTED: i32 = 3;

/// A kind of watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// getData / exists: fires once on create, data change or delete of the path.
    Data,
    /// getChildren: fires once on a child created or deleted, or the node deleted.
    Child,
    /// addWatch PERSISTENT: every event on the path, until removed.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: every event at or below the path except NodeChildrenChanged.
    Recursive,
}

impl Kind {
    /// The kind for an `addWatch` mode (0 persistent, 1 persistent recursive).
    pub fn from_add_watch_mode(mode: i32) -> Option<Kind> {
        match mode {
            0 => Some(Kind::Persistent),
            1 => Some(Kind::Recursive),
            _ => None,
        }
    }
}

/// A change, for [`Watches::trigger`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// A node was created.
    Created(&'a str),
    /// A node's data was set.
    DataChanged(&'a str),
    /// A node was deleted.
    Deleted(&'a str),
    /// A child of this node was created or deleted.
    ChildrenChanged(&'a str),
}

/// An event to send: (session, event type, path).
pub type Fired = (SessionId, i32, String);

/// What one session's watches may take on this server, in [`cost`] bytes: about 400,000 watches on short paths.
/// ZooKeeper has no such bound; without one, a session could register watches on a million paths of up to
/// `jute.maxbuffer` bytes each (a watch needs no node: `exists` watches a path that is not there).
pub const MAX_SESSION_BYTES: usize = 64 << 20;

/// What all watches on this server may take, in [`cost`] bytes.
pub const MAX_TOTAL_BYTES: usize = 1 << 30;

/// The memory a watch on `path` takes, about: the path twice (by path and by session) and the sets' nodes.
pub fn cost(path: &str) -> usize {
    2 * path.len() + 128
}

/// The sessions watching one path, by kind.
#[derive(Debug, Default)]
struct PathWatches([BTreeSet<SessionId>; 4]);

impl PathWatches {
    fn of(&self, kind: Kind) -> &BTreeSet<SessionId> {
        &self.0[kind as usize]
    }

    fn of_mut(&mut self, kind: Kind) -> &mut BTreeSet<SessionId> {
        &mut self.0[kind as usize]
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(BTreeSet::is_empty)
    }

    /// The sessions with a data watch of any kind (all but child watches: ZooKeeper's data watch manager).
    fn data(&self) -> impl Iterator<Item = &SessionId> {
        [Kind::Data, Kind::Persistent, Kind::Recursive].into_iter().flat_map(|kind| self.of(kind))
    }
}

/// All watches on this server.
///
/// Invariant: every entry of `by_path` holds a session (an emptied one is removed), and `by_path` and
/// `by_session` hold the same watches.
#[derive(Debug, Default)]
pub struct Watches {
    /// By path: a change looks its path up once, with no key to allocate.
    by_path: HashMap<String, PathWatches>,
    by_session: HashMap<SessionId, BTreeSet<(Kind, String)>>,
    /// Paths with recursive watches, for the walk up from a changed path.
    recursive: BTreeMap<String, usize>,
    /// [`cost`] of each session's watches, and of all.
    bytes: HashMap<SessionId, usize>,
    total_bytes: usize,
    /// Sessions a watch was refused to since they were last asked about ([`Watches::take_refused`]).
    refused: BTreeSet<SessionId>,
}

impl Watches {
    /// Adds a watch (idempotent).
    ///
    /// A watch that would take the session past [`MAX_SESSION_BYTES`], or the server past [`MAX_TOTAL_BYTES`],
    /// is not added, and the session is noted ([`Watches::take_refused`]): its connection is closed, which drops
    /// its watches.
    pub fn add(&mut self, session: SessionId, kind: Kind, path: &str) {
        if self.has(session, kind, path) {
            return;
        }
        let cost = cost(path);
        let mine = self.bytes.get(&session).copied().unwrap_or(0);
        if mine + cost > MAX_SESSION_BYTES || self.total_bytes + cost > MAX_TOTAL_BYTES {
            self.refused.insert(session);
            return;
        }
        *self.bytes.entry(session).or_default() += cost;
        self.total_bytes += cost;
        self.by_path.entry(path.to_owned()).or_default().of_mut(kind).insert(session);
        self.by_session.entry(session).or_default().insert((kind, path.to_owned()));
        if kind == Kind::Recursive {
            *self.recursive.entry(path.to_owned()).or_default() += 1;
        }
    }

    /// Whether a watch was refused to `session` (for its size) since the last time this was asked.
    pub fn take_refused(&mut self, session: SessionId) -> bool {
        self.refused.remove(&session)
    }

    /// The [`cost`] of every watch on this server.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Whether `session` has a watch of `kind` on `path`.
    pub fn has(&self, session: SessionId, kind: Kind, path: &str) -> bool {
        self.by_path.get(path).is_some_and(|w| w.of(kind).contains(&session))
    }

    /// Removes one watch; whether it existed.
    pub fn remove(&mut self, session: SessionId, kind: Kind, path: &str) -> bool {
        let Some(watches) = self.by_path.get_mut(path) else { return false };
        if !watches.of_mut(kind).remove(&session) {
            return false;
        }
        if watches.is_empty() {
            self.by_path.remove(path);
        }
        if let Some(keys) = self.by_session.get_mut(&session) {
            keys.remove(&(kind, path.to_owned()));
            if keys.is_empty() {
                self.by_session.remove(&session);
            }
        }
        let cost = cost(path);
        self.total_bytes -= cost;
        if let Some(mine) = self.bytes.get_mut(&session) {
            *mine -= cost;
            if *mine == 0 {
                self.bytes.remove(&session);
            }
        }
        if kind == Kind::Recursive {
            if let Some(n) = self.recursive.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    self.recursive.remove(path);
                }
            }
        }
        true
    }

    /// Removes every watch of a session (its connection closed).
    pub fn remove_session(&mut self, session: SessionId) {
        self.refused.remove(&session);
        for (kind, path) in self.by_session.get(&session).cloned().unwrap_or_default() {
            self.remove(session, kind, &path);
        }
    }

    /// The events a change fires, in ZooKeeper's order; one-shot watches that fired are removed.
    pub fn trigger(&mut self, change: Change<'_>, out: &mut Vec<Fired>) {
        let (path, event, one_shot): (&str, i32, &[Kind]) = match change {
            Change::Created(p) => (p, event::NODE_CREATED, &[Kind::Data]),
            Change::DataChanged(p) => (p, event::NODE_DATA_CHANGED, &[Kind::Data]),
            Change::Deleted(p) => (p, event::NODE_DELETED, &[Kind::Data, Kind::Child]),
            Change::ChildrenChanged(p) => (p, event::NODE_CHILDREN_CHANGED, &[Kind::Child]),
        };
        if self.by_path.is_empty() {
            // No watch anywhere (a write-heavy load often has none): skip the lookups and their owned keys.
            return;
        }
        let (fired, mut persistent): (Vec<(Kind, SessionId)>, Vec<SessionId>) = match self.by_path.get(path) {
            Some(watches) => (
                one_shot
                    .iter()
                    .flat_map(|&kind| watches.of(kind).iter().map(move |&session| (kind, session)))
                    .collect(),
                watches.of(Kind::Persistent).iter().copied().collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let mut told = BTreeSet::new();
        for (kind, session) in fired {
            self.remove(session, kind, path);
            if told.insert(session) {
                out.push((session, event, path.to_owned()));
            }
        }
        if event != event::NODE_CHILDREN_CHANGED && !self.recursive.is_empty() {
            for ancestor in ancestors_or_self(path) {
                if self.recursive.contains_key(ancestor) {
                    persistent.extend(self.by_path.get(ancestor).into_iter().flat_map(|w| w.of(Kind::Recursive)));
                }
            }
        }
        for session in persistent {
            if told.insert(session) {
                out.push((session, event, path.to_owned()));
            }
        }
    }

    /// Each session's data watches (getData, exists, persistent, recursive: what ZooKeeper keeps in its data
    /// watch manager), paths in order, for `wchc`.
    pub fn data_watches_by_session(&self) -> Vec<(SessionId, Vec<String>)> {
        let mut by_session: BTreeMap<SessionId, BTreeSet<String>> = BTreeMap::new();
        for (path, watches) in &self.by_path {
            for session in watches.data() {
                by_session.entry(*session).or_default().insert(path.clone());
            }
        }
        by_session.into_iter().map(|(s, paths)| (s, paths.into_iter().collect())).collect()
    }

    /// Each path with data watches and the sessions watching it, for `wchp`.
    pub fn data_watches_by_path(&self) -> Vec<(String, Vec<SessionId>)> {
        let mut by_path: BTreeMap<String, BTreeSet<SessionId>> = BTreeMap::new();
        for (path, watches) in &self.by_path {
            let sessions: BTreeSet<SessionId> = watches.data().copied().collect();
            if !sessions.is_empty() {
                by_path.insert(path.clone(), sessions);
            }
        }
        by_path.into_iter().map(|(p, sessions)| (p, sessions.into_iter().collect())).collect()
    }

    /// (watches, watched paths, sessions with watches), for `wchs` and `mntr`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let watches = self.by_path.values().flat_map(|w| &w.0).map(BTreeSet::len).sum();
        (watches, self.by_path.len(), self.by_session.len())
    }
}

/// `/a/b/c`, `/a/b`, `/a`, `/`.
fn ancestors_or_self(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            _ if current == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_watches_are_bounded_in_bytes_and_give_their_bytes_back() {
        let mut w = Watches::default();
        let long = format!("/{}", "p".repeat(100_000));
        let fits = MAX_SESSION_BYTES / cost(&format!("{long}/0000"));
        for i in 0..fits {
            w.add(1, Kind::Data, &format!("{long}/{i:04}"));
        }
        assert!(!w.take_refused(1), "{fits} watches fit");
        w.add(1, Kind::Data, &format!("{long}/more"));
        assert!(w.take_refused(1), "one more is refused");
        assert!(!w.take_refused(1), "asked once");
        assert_eq!(w.counts().0, fits);
        w.add(2, Kind::Data, "/other");
        assert!(!w.take_refused(2), "another session has its own allowance");
        w.remove_session(1);
        assert_eq!(w.total_bytes(), cost("/other"), "a closed connection's watches give their bytes back");
        let mut fired = Vec::new();
        w.trigger(Change::Deleted("/other"), &mut fired);
        assert_eq!((fired.len(), w.total_bytes()), (1, 0), "so does a fired one-shot watch");
    }

    fn fire(w: &mut Watches, change: Change<'_>) -> Vec<Fired> {
        let mut out = Vec::new();
        w.trigger(change, &mut out);
        out
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut w = Watches::default();
        w.add(1, Kind::Data, "/a");
        w.add(2, Kind::Child, "/");
        assert_eq!(fire(&mut w, Change::DataChanged("/a")), vec![(1, event::NODE_DATA_CHANGED, "/a".into())]);
        assert_eq!(fire(&mut w, Change::DataChanged("/a")), vec![]);
        assert_eq!(fire(&mut w, Change::ChildrenChanged("/")), vec![(2, event::NODE_CHILDREN_CHANGED, "/".into())]);
        assert_eq!(w.counts(), (0, 0, 0));
    }

    #[test]
    fn a_delete_fires_data_and_child_watches_once_per_session() {
        let mut w = Watches::default();
        w.add(1, Kind::Data, "/a");
        w.add(1, Kind::Child, "/a");
        w.add(2, Kind::Child, "/a");
        assert_eq!(
            fire(&mut w, Change::Deleted("/a")),
            vec![(1, event::NODE_DELETED, "/a".into()), (2, event::NODE_DELETED, "/a".into())]
        );
        assert_eq!(w.counts(), (0, 0, 0));
    }

    #[test]
    fn persistent_and_recursive_watches_stay() {
        let mut w = Watches::default();
        w.add(1, Kind::Persistent, "/a");
        w.add(2, Kind::Recursive, "/");
        for _ in 0..2 {
            assert_eq!(
                fire(&mut w, Change::DataChanged("/a")),
                vec![(1, event::NODE_DATA_CHANGED, "/a".into()), (2, event::NODE_DATA_CHANGED, "/a".into())]
            );
        }
        assert_eq!(fire(&mut w, Change::Created("/a/b/c")), vec![(2, event::NODE_CREATED, "/a/b/c".into())]);
        // A recursive watcher is not told about children changes; a persistent one on the path is.
        assert_eq!(fire(&mut w, Change::ChildrenChanged("/a")), vec![(1, event::NODE_CHILDREN_CHANGED, "/a".into())]);
        assert!(w.remove(2, Kind::Recursive, "/"));
        assert_eq!(fire(&mut w, Change::Created("/x")), vec![]);
    }

    #[test]
    fn closing_a_session_drops_its_watches() {
        let mut w = Watches::default();
        w.add(1, Kind::Data, "/a");
        w.add(1, Kind::Recursive, "/a");
        w.add(2, Kind::Data, "/a");
        w.remove_session(1);
        assert_eq!(w.counts(), (1, 1, 1));
        assert_eq!(fire(&mut w, Change::Created("/a/b")), vec![]);
        assert!(w.has(2, Kind::Data, "/a"));
    }

    #[test]
    fn ancestors_walk_to_the_root() {
        assert_eq!(ancestors_or_self("/a/b").collect::<Vec<_>>(), vec!["/a/b", "/a", "/"]);
        assert_eq!(ancestors_or_self("/").collect::<Vec<_>>(), vec!["/"]);
    }
}
