//! `dump`: ZooKeeper 3.8's `DumpCommand` — the session tracker, every session's ephemeral nodes, and the
//! connections by when they expire.
//!
//! ```text
//! SessionTracker dump:
//! Session Sets (2)/(3):                          a leader or standalone server: its expiry queue, sessions in
//! 1 expire at Tue Dec 01 15:52:14 UTC 2026:      buckets of tickTime, in time order
//! \t0x1000a
//! 2 expire at Tue Dec 01 15:52:16 UTC 2026:
//! \t0x1000b
//! \t0x2000c
//! ephemeral nodes dump:
//! Sessions with Ephemerals (1):
//! 0x1000a:
//! \t/lock/member-0000000001
//! Connections dump:
//! Connections Sets (1)/(2):                      the NIO factory's connection expiry queue, buckets of 10 s
//! 2 expire at Tue Dec 01 15:52:20 UTC 2026:
//! \tip: /127.0.0.1:53012 sessionId: 0x1000a           (`NIOServerCnxn.toString`; 0x0 before a session)
//! ```
//!
//! A follower or observer prints its session tracker as `Global Sessions(3):` and a `0x1000a\t30000ms` line per
//! session, in id order (`LearnerSessionTracker`); a read-only server (with local sessions) first prints its local
//! sessions' expiry queue, as `Local Session Sets (1)/(1):` and its buckets. Times are Java's `Date.toString()`, in UTC (ZooKeeper prints
//! the JVM's zone; servers run in UTC). ZooKeeper lists each bucket's members, the sessions with ephemerals and
//! their paths in hash order; here they come in id and path order. ZooKeeper also keeps a bucket its last
//! member left (`0 expire at ...`) until that time passes; only buckets with members are listed here.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use super::java::JavaAddr;
use super::Connection;

/// ZooKeeper's NIO factory buckets connection expiry by `zookeeper.nio.sessionlessCnxnTimeout` (default 10 s),
/// which is also a connection's timeout before it has a session.
pub const CONNECTION_EXPIRY_INTERVAL_MS: i64 = 10_000;

/// What `dump` prints, gathered by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The session tracker.
    pub sessions: Sessions,
    /// Each session that owns ephemeral nodes, with their paths.
    pub ephemerals: Vec<(i64, Vec<String>)>,
    /// Each connection with when it expires (ms since the Unix epoch, on its bucket's boundary).
    pub connections: Vec<(i64, Connection)>,
}

/// The session tracker's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sessions {
    /// A leader's or a standalone server's: each session with when it expires (ms since the Unix epoch, on its
    /// bucket's boundary, `tickTime` apart).
    Expiring(Vec<(i64, i64)>),
    /// A follower's, an observer's or a read-only server's: its local sessions with when they expire (as in
    /// [`Sessions::Expiring`]; `None` without local sessions), then each session of the tree with its timeout, ms.
    Known {
        /// The local sessions (a read-only server's).
        local: Option<Vec<(i64, i64)>>,
        /// The global sessions.
        global: Vec<(i64, i32)>,
    },
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::Known { local: None, global: Vec::new() }
    }
}

/// `time` rounded up to the end of its bucket: ZooKeeper's `ExpiryQueue.roundToNextInterval`, which moves a time
/// already on a boundary to the next one.
pub fn round_to_next_interval(time: i64, interval: i64) -> i64 {
    debug_assert!(interval > 0);
    (time.div_euclid(interval) + 1) * interval
}

/// Writes the answer.
pub fn dump(f: &mut fmt::Formatter<'_>, d: &Dump) -> fmt::Result {
    f.write_str("SessionTracker dump:\n")?;
    match &d.sessions {
        Sessions::Expiring(sessions) => {
            f.write_str("Session ")?;
            let items = sessions.iter().map(|&(session, expires)| (expires, session));
            expiry_queue(f, items, |f, session| write!(f, "0x{session:x}"))?;
        }
        Sessions::Known { local, global } => {
            if let Some(local) = local {
                // `LearnerSessionTracker.dumpSessions`: its local tracker's expiry queue first.
                f.write_str("Local Session ")?;
                let items = local.iter().map(|&(session, expires)| (expires, session));
                expiry_queue(f, items, |f, session| write!(f, "0x{session:x}"))?;
            }
            writeln!(f, "Global Sessions({}):", global.len())?;
            let mut sorted = global.clone();
            sorted.sort_unstable();
            sorted.iter().try_for_each(|(session, timeout)| writeln!(f, "0x{session:x}\t{timeout}ms"))?;
        }
    }
    f.write_str("ephemeral nodes dump:\n")?;
    writeln!(f, "Sessions with Ephemerals ({}):", d.ephemerals.len())?;
    for (session, paths) in &d.ephemerals {
        writeln!(f, "0x{session:x}:")?;
        paths.iter().try_for_each(|path| writeln!(f, "\t{path}"))?;
    }
    f.write_str("Connections dump:\nConnections ")?;
    let connections = d.connections.iter().map(|(expires, c)| (*expires, c));
    expiry_queue(f, connections, |f, c| write!(f, "ip: {} sessionId: 0x{:x}", JavaAddr(c.remote), c.session_id))
}

/// `ExpiryQueue.dump`: `Sets (<buckets>)/(<members>):`, then each bucket in time order with its members.
fn expiry_queue<T>(
    f: &mut fmt::Formatter<'_>,
    items: impl Iterator<Item = (i64, T)>,
    member: impl Fn(&mut fmt::Formatter<'_>, T) -> fmt::Result,
) -> fmt::Result {
    let mut buckets: BTreeMap<i64, Vec<T>> = BTreeMap::new();
    let mut members = 0usize;
    for (expires, item) in items {
        buckets.entry(expires).or_default().push(item);
        members += 1;
    }
    writeln!(f, "Sets ({})/({}):", buckets.len(), members)?;
    for (expires, bucket) in buckets {
        writeln!(f, "{} expire at {}:", bucket.len(), JavaDate(expires))?;
        for item in bucket {
            f.write_char('\t')?;
            member(f, item)?;
            f.write_char('\n')?;
        }
    }
    Ok(())
}

/// Java's `Date.toString()` of a time in ms since the Unix epoch, in UTC: `Tue Dec 01 15:52:14 UTC 2026`.
struct JavaDate(i64);

impl fmt::Display for JavaDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] UTC [year]"
        );
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        f.write_str(&at.format(FORMAT).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shown<'a>(&'a Dump);

    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            dump(f, self.0)
        }
    }

    /// 2026-12-01 15:52:14 UTC, a Tuesday.
    const T: i64 = 1_796_140_334_000;

    #[test]
    fn a_read_only_server_lists_its_local_sessions_before_the_global_ones() {
        let sessions = Sessions::Known { local: Some(vec![(0x3000d, T)]), global: vec![(0x1000a, 30000)] };
        let d = Dump { sessions, ..Dump::default() };
        let expected = "SessionTracker dump:\nLocal Session Sets (1)/(1):\n\
            1 expire at Tue Dec 01 15:52:14 UTC 2026:\n\t0x3000d\n\
            Global Sessions(1):\n0x1000a\t30000ms\n";
        assert!(Shown(&d).to_string().starts_with(expected), "{}", Shown(&d));
    }

    #[test]
    fn java_dates() {
        assert_eq!(JavaDate(T).to_string(), "Tue Dec 01 15:52:14 UTC 2026");
        assert_eq!(JavaDate(0).to_string(), "Thu Jan 01 00:00:00 UTC 1970");
    }

    #[test]
    fn rounding_moves_a_boundary_to_the_next_one() {
        assert_eq!(round_to_next_interval(0, 2000), 2000);
        assert_eq!(round_to_next_interval(1999, 2000), 2000);
        assert_eq!(round_to_next_interval(2000, 2000), 4000);
    }

    #[test]
    fn a_leader_dumps_its_expiry_queue_then_ephemerals_then_connections() {
        let c = Connection {
            remote: "127.0.0.1:5000".parse().unwrap(),
            interest_ops: 1,
            received: 2,
            sent: 2,
            ..Connection::default()
        };
        let d = Dump {
            sessions: Sessions::Expiring(vec![(0x2000c, T + 2000), (0x1000a, T), (0x1000b, T + 2000)]),
            ephemerals: vec![(0x1000a, vec!["/a".into(), "/b".into()])],
            connections: vec![(T + 10_000, c)],
        };
        let expected = "SessionTracker dump:\nSession Sets (2)/(3):\n\
            1 expire at Tue Dec 01 15:52:14 UTC 2026:\n\t0x1000a\n\
            2 expire at Tue Dec 01 15:52:16 UTC 2026:\n\t0x2000c\n\t0x1000b\n\
            ephemeral nodes dump:\nSessions with Ephemerals (1):\n0x1000a:\n\t/a\n\t/b\n\
            Connections dump:\nConnections Sets (1)/(1):\n\
            1 expire at Tue Dec 01 15:52:24 UTC 2026:\n\tip: /127.0.0.1:5000 sessionId: 0x0\n";
        assert_eq!(Shown(&d).to_string(), expected);
    }

    #[test]
    fn a_learner_lists_every_session_with_its_timeout_in_id_order() {
        let sessions = Sessions::Known { local: None, global: vec![(0x2000c, 4000), (0x1000a, 30000)] };
        let d = Dump { sessions, ..Dump::default() };
        let expected = "SessionTracker dump:\nGlobal Sessions(2):\n0x1000a\t30000ms\n0x2000c\t4000ms\n\
            ephemeral nodes dump:\nSessions with Ephemerals (0):\nConnections dump:\nConnections Sets (0)/(0):\n";
        assert_eq!(Shown(&d).to_string(), expected);
    }
}
