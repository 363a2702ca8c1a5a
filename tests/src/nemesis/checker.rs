//! The checks on a [`History`], as a pure function: [`check`] lists every anomaly it finds.
//!
//! A register is written only by `setData` with an expected version, so each acknowledged write names the one
//! version it produced: the versions order the writes, and linearizability of the registers reduces to
//! checks on that order (no search as in Knossos or Porcupine is needed):
//!
//! - no version is produced twice: one value per (register, version), whoever saw it;
//! - a write produces `expected + 1`;
//! - real time: a write acknowledged before another was invoked has the lower version;
//! - a read after `sync` sees at least every write acknowledged before the sync began (ZooKeeper's reads without
//!   sync may lag: they are held to the session order only);
//! - a session's reads and writes of one register never go back in version (ZooKeeper's "single system image");
//! - no read sees a value no client tried to write, or a write invoked after the read completed;
//! - every acknowledged write (register version, sequential node) is on every server after healing, and
//!   nothing there that no client wrote, and no create twice;
//! - no client pinned to a server acknowledged a write invoked and completed while that server was cut off in a
//!   minority;
//! - after healing, an expired session's ephemeral is on no server, a live session's on every one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::{secs, Event, History, Micros, MinorityWindow, Op, Outcome, INITIAL_VALUE};

/// What kind of rule a history broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Two different values with one version of a register, or one create applied twice.
    DuplicateVersion,
    /// An acknowledged write's version is not its expected version plus one.
    VersionStep,
    /// A write acknowledged before another began has a higher version, or a read sees a write from its future.
    RealTime,
    /// A read after sync missed a write acknowledged before the sync began.
    StaleSyncedRead,
    /// A session saw a register's version go back.
    ReadWentBackwards,
    /// An acknowledged write is missing from a server after healing.
    LostAck,
    /// A value or node that no client (successfully or not) tried to write.
    Phantom,
    /// A write acknowledged by a server cut off in a minority.
    MinorityAck,
    /// An ephemeral of an expired session remains, or one of a live session is gone.
    Ephemeral,
}

/// One broken rule, with the events or state that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The rule.
    pub kind: Kind,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// Every anomaly in `history` (empty if it is correct).
pub fn check(history: &History) -> Vec<Anomaly> {
    let mut found = Vec::new();
    for register in 0..history.registers {
        check_register(history, register, &mut found);
    }
    check_sessions(&history.events, &mut found);
    check_set(history, &mut found);
    check_minority(history, &mut found);
    check_ephemerals(history, &mut found);
    found
}

/// The anomalies grouped by kind: a count and the first `examples` of each.
pub fn summary(anomalies: &[Anomaly], examples: usize) -> String {
    let mut by_kind: BTreeMap<Kind, Vec<&Anomaly>> = BTreeMap::new();
    for a in anomalies {
        by_kind.entry(a.kind).or_default().push(a);
    }
    let mut out = String::new();
    for (kind, list) in by_kind {
        out.push_str(&format!("{kind:?}: {} anomalies, the first:\n", list.len()));
        for a in list.iter().take(examples) {
            out.push_str(&format!("  {}\n", a.detail));
        }
    }
    out
}

fn anomaly(found: &mut Vec<Anomaly>, kind: Kind, detail: String) {
    found.push(Anomaly { kind, detail });
}

/// A write's attempt as the register checks need it.
struct Write<'a> {
    event: &'a Event,
    value: &'a str,
    expected: i32,
    outcome: &'a Outcome<i32>,
}

fn writes_of(events: &[Event], register: usize) -> Vec<Write<'_>> {
    events
        .iter()
        .filter_map(|event| match &event.op {
            Op::Cas { register: r, expected, value, outcome } if *r == register => {
                Some(Write { event, value, expected: *expected, outcome })
            }
            _ => None,
        })
        .collect()
}

/// Reads of `register`: (event, synced, value, version) for the acknowledged ones.
fn reads_of(events: &[Event], register: usize) -> Vec<(&Event, bool, &str, i32)> {
    events
        .iter()
        .filter_map(|event| match &event.op {
            Op::Read { register: r, synced, outcome: Outcome::Ok((value, version)) } if *r == register => {
                Some((event, *synced, value.as_str(), *version))
            }
            _ => None,
        })
        .collect()
}

fn check_register(history: &History, register: usize, found: &mut Vec<Anomaly>) {
    let writes = writes_of(&history.events, register);
    let reads = reads_of(&history.events, register);
    // Version -> value, from acknowledged writes, reads and the servers' final states.
    let mut versions: BTreeMap<i32, (String, String)> = BTreeMap::new();
    versions.insert(0, (INITIAL_VALUE.to_string(), "the initial value".to_string()));
    let mut claim = |version: i32, value: &str, who: String, found: &mut Vec<Anomaly>| match versions.get(&version) {
        Some((seen, by)) if seen != value => anomaly(
            found,
            Kind::DuplicateVersion,
            format!("register {register} version {version} is {seen:?} ({by}) and {value:?} ({who})"),
        ),
        Some(_) => {}
        None => {
            versions.insert(version, (value.to_string(), who));
        }
    };
    for w in &writes {
        if let Outcome::Ok(version) = w.outcome {
            if *version != w.expected + 1 {
                anomaly(found, Kind::VersionStep, format!("expected {} produced {version}: {}", w.expected, w.event));
            }
            claim(*version, w.value, format!("acknowledged to {}", w.event), found);
        }
    }
    for (event, _, value, version) in &reads {
        claim(*version, value, format!("read by {event}"), found);
    }
    for (i, server) in history.servers.iter().enumerate() {
        if let Some((value, version)) = server.registers.get(register) {
            claim(*version, value, format!("on node {} after healing", i + 1), found);
        }
    }
    check_reads_exist(register, &writes, &reads, found);
    check_real_time(register, &writes, &reads, found);
    check_final_registers(history, register, &writes, found);
}

/// Every value read was written by a write that may have happened (acknowledged or indeterminate) and that
/// began before the read ended.
fn check_reads_exist(
    register: usize,
    writes: &[Write<'_>],
    reads: &[(&Event, bool, &str, i32)],
    found: &mut Vec<Anomaly>,
) {
    let attempts: BTreeMap<&str, &Write<'_>> =
        writes.iter().filter(|w| !matches!(w.outcome, Outcome::Failed(_))).map(|w| (w.value, w)).collect();
    for (event, _, value, _) in reads {
        if *value == INITIAL_VALUE {
            continue;
        }
        match attempts.get(value) {
            None => anomaly(found, Kind::Phantom, format!("register {register}: {value:?} was never written: {event}")),
            Some(w) if w.event.invoke > event.complete => {
                anomaly(found, Kind::RealTime, format!("{event} reads a write invoked after it: {}", w.event))
            }
            Some(_) => {}
        }
    }
}

/// Writes acknowledged before another write or a synced read began have lower versions than it (or not higher
/// than what the read saw).
fn check_real_time(
    register: usize,
    writes: &[Write<'_>],
    reads: &[(&Event, bool, &str, i32)],
    found: &mut Vec<Anomaly>,
) {
    let mut acked: Vec<(Micros, i32, &Event)> =
        writes.iter().filter_map(|w| w.outcome.ok().map(|v| (w.event.complete, *v, w.event))).collect();
    acked.sort_by_key(|(complete, ..)| *complete);
    // highest[i]: the highest version among acked[..=i], with its write.
    let mut highest: Vec<(i32, &Event)> = Vec::with_capacity(acked.len());
    for &(_, version, event) in &acked {
        let best = highest.last().copied().filter(|(v, _)| *v >= version).unwrap_or((version, event));
        highest.push(best);
    }
    // The highest version acknowledged before `t`, with its write.
    let before = |t: Micros| {
        let n = acked.partition_point(|(complete, ..)| *complete < t);
        n.checked_sub(1).map(|i| highest[i])
    };
    for w in writes {
        if let (Outcome::Ok(version), Some((earlier, by))) = (w.outcome, before(w.event.invoke)) {
            if earlier >= *version {
                let detail = format!("register {register}: {} got version {version} after {by} got {earlier}", w.event);
                anomaly(found, Kind::RealTime, detail);
            }
        }
    }
    for (event, synced, _, version) in reads {
        if let (true, Some((earlier, by))) = (synced, before(event.invoke)) {
            if earlier > *version {
                let detail = format!("{event} saw version {version} after sync, but {by} had {earlier} before");
                anomaly(found, Kind::StaleSyncedRead, detail);
            }
        }
    }
}

fn check_final_registers(history: &History, register: usize, writes: &[Write<'_>], found: &mut Vec<Anomaly>) {
    let Some(latest) = writes.iter().filter_map(|w| w.outcome.ok().map(|v| (*v, w.event))).max_by_key(|(v, _)| *v)
    else {
        return;
    };
    for (i, server) in history.servers.iter().enumerate() {
        let version = server.registers.get(register).map_or(-1, |(_, v)| *v);
        if version < latest.0 {
            let detail =
                format!("node {} has register {register} at version {version} after healing: {}", i + 1, latest.1);
            anomaly(found, Kind::LostAck, detail);
        }
    }
}

/// Per session, in invocation order, the version of each register it saw never goes back.
fn check_sessions(events: &[Event], found: &mut Vec<Anomaly>) {
    let mut by_session: BTreeMap<(usize, i64), Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_session.entry((event.client, event.session)).or_default().push(event);
    }
    for mut session in by_session.into_values() {
        session.sort_by_key(|e| e.invoke);
        let mut seen: BTreeMap<usize, (i32, &Event)> = BTreeMap::new();
        for event in session {
            let (register, version) = match &event.op {
                Op::Read { register, outcome: Outcome::Ok((_, version)), .. } => (*register, *version),
                Op::Cas { register, outcome: Outcome::Ok(version), .. } => (*register, *version),
                _ => continue,
            };
            if let Some((before, by)) = seen.get(&register) {
                if version < *before {
                    let detail = format!("{event} saw version {version} after {by} saw {before}");
                    anomaly(found, Kind::ReadWentBackwards, detail);
                    continue;
                }
            }
            seen.insert(register, (version, event));
        }
    }
}

/// The token a sequential node's name starts with: the name less its 10-digit counter.
fn token_of(name: &str) -> &str {
    name.get(..name.len().saturating_sub(10)).unwrap_or(name)
}

fn check_set(history: &History, found: &mut Vec<Anomaly>) {
    let mut acked: BTreeMap<&str, (&str, &Event)> = BTreeMap::new();
    let mut possible: BTreeSet<&str> = BTreeSet::new();
    for event in &history.events {
        if let Op::Create { token, outcome } = &event.op {
            match outcome {
                Outcome::Ok(name) => {
                    acked.insert(name, (token, event));
                    possible.insert(token);
                }
                Outcome::Indeterminate(_) => {
                    possible.insert(token);
                }
                Outcome::Failed(_) => {}
            }
        }
    }
    for (i, server) in history.servers.iter().enumerate() {
        let names: BTreeSet<&str> = server.set.iter().map(String::as_str).collect();
        for (name, (_, event)) in &acked {
            if !names.contains(name) {
                anomaly(found, Kind::LostAck, format!("node {} lacks {name} after healing: {event}", i + 1));
            }
        }
        let mut tokens: BTreeMap<&str, &str> = BTreeMap::new();
        for name in &names {
            let token = token_of(name);
            if !possible.contains(token) {
                anomaly(found, Kind::Phantom, format!("node {} has {name}, which no client created", i + 1));
            }
            if let Some(other) = tokens.insert(token, name) {
                anomaly(
                    found,
                    Kind::DuplicateVersion,
                    format!("node {} created {token} twice: {other}, {name}", i + 1),
                );
            }
        }
    }
}

/// The minority windows with a server that ran, yet no write through one that ran was invoked within them: no
/// client tried the minority there (the pinned clients were stuck or gone), so the run did not test that the
/// minority stopped acknowledging, whatever the minority-ack rule found. (A paused or killed server acknowledges
/// nothing, and its clients' calls may well hang until the heal.)
pub fn untested_minorities(history: &History) -> Vec<&MinorityWindow> {
    let tried = |w: &MinorityWindow, e: &Event| {
        let write = matches!(e.op, Op::Cas { .. } | Op::Create { .. });
        write && (w.from..=w.to).contains(&e.invoke) && e.pinned.is_some_and(|s| w.running.contains(&s))
    };
    let tested = |w: &MinorityWindow| history.events.iter().any(|e| tried(w, e));
    history.minority_windows.iter().filter(|w| !w.running.is_empty() && !tested(w)).collect()
}

fn check_minority(history: &History, found: &mut Vec<Anomaly>) {
    for window in &history.minority_windows {
        for event in &history.events {
            let write_acked = match &event.op {
                Op::Cas { outcome, .. } => outcome.ok().is_some(),
                Op::Create { outcome, .. } => outcome.ok().is_some(),
                Op::Read { .. } => false,
            };
            let inside = window.from <= event.invoke && event.complete <= window.to;
            if write_acked && inside && event.pinned.is_some_and(|s| window.minority.contains(&s)) {
                let (from, to) = (secs(window.from), secs(window.to));
                anomaly(
                    found,
                    Kind::MinorityAck,
                    format!("{event} while its node was in a minority ({from:.3}s..{to:.3}s)"),
                );
            }
        }
    }
}

fn check_ephemerals(history: &History, found: &mut Vec<Anomaly>) {
    for fate in &history.sessions {
        for (i, server) in history.servers.iter().enumerate() {
            let owner = server.ephemerals.get(&fate.path);
            let wrong = match (fate.expired, owner) {
                (true, Some(_)) => Some("of an expired session remains"),
                (false, None) => Some("of a live session is gone"),
                (false, Some(owner)) if *owner != fate.session => Some("has another owner"),
                _ => None,
            };
            if let Some(what) = wrong {
                let detail = format!("node {}: ephemeral {} {what} (session {:#x})", i + 1, fate.path, fate.session);
                anomaly(found, Kind::Ephemeral, detail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::{ServerState, SessionFate};
    use super::*;

    fn event(client: usize, session: i64, invoke: Micros, complete: Micros, op: Op) -> Event {
        Event { client, session, pinned: None, invoke, complete, op }
    }

    fn cas(client: usize, at: (Micros, Micros), expected: i32, value: &str, outcome: Outcome<i32>) -> Event {
        event(client, client as i64, at.0, at.1, Op::Cas { register: 0, expected, value: value.into(), outcome })
    }

    fn read(client: usize, at: (Micros, Micros), synced: bool, value: &str, version: i32) -> Event {
        let outcome = Outcome::Ok((value.to_string(), version));
        event(client, client as i64, at.0, at.1, Op::Read { register: 0, synced, outcome })
    }

    fn create(client: usize, at: (Micros, Micros), token: &str, outcome: Outcome<String>) -> Event {
        event(client, client as i64, at.0, at.1, Op::Create { token: token.into(), outcome })
    }

    fn server(value: &str, version: i32, set: &[&str]) -> ServerState {
        let set = set.iter().map(|s| s.to_string()).collect();
        ServerState { registers: vec![(value.to_string(), version)], set, ephemerals: BTreeMap::new() }
    }

    /// Two writes, a synced read, a create, both servers holding them: no anomaly.
    fn good() -> History {
        History {
            events: vec![
                cas(1, (0, 10), 0, "a", Outcome::Ok(1)),
                cas(2, (20, 30), 1, "b", Outcome::Ok(2)),
                cas(3, (25, 35), 1, "x", Outcome::Failed("BadVersion".into())),
                cas(3, (36, 90), 2, "y", Outcome::Indeterminate("ConnectionLoss".into())),
                read(1, (40, 50), true, "b", 2),
                read(4, (5, 45), false, "a", 1),
                create(2, (0, 5), "c2-1-", Outcome::Ok("c2-1-0000000000".into())),
                create(2, (6, 9), "c2-2-", Outcome::Indeterminate("Timeout".into())),
            ],
            registers: 1,
            servers: vec![
                server("y", 3, &["c2-1-0000000000", "c2-2-0000000001"]),
                server("y", 3, &["c2-1-0000000000"]),
            ],
            sessions: vec![],
            minority_windows: vec![],
        }
    }

    fn kinds(history: &History) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = check(history).into_iter().map(|a| a.kind).collect();
        kinds.dedup();
        kinds
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&good()), vec![]);
    }

    #[test]
    fn the_summary_counts_each_kind() {
        let mut h = good();
        h.servers[1] = server("a", 1, &[]);
        let summary = summary(&check(&h), 1);
        assert!(
            summary.starts_with("LostAck: 2 anomalies, the first:\n  node 2 has register 0 at version 1"),
            "{summary}"
        );
    }

    #[test]
    fn a_stale_read_after_sync_is_caught() {
        let mut h = good();
        h.events.push(read(5, (31, 40), true, "a", 1));
        assert_eq!(kinds(&h), vec![Kind::StaleSyncedRead]);
        // Without the sync, ZooKeeper may answer from a lagging server: that read is allowed.
        h.events.pop();
        h.events.push(read(5, (31, 40), false, "a", 1));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let mut h = good();
        h.servers[1] = server("a", 1, &["c2-1-0000000000"]);
        assert_eq!(kinds(&h), vec![Kind::LostAck]);
        let mut h = good();
        h.servers[0].set.remove(0);
        assert_eq!(kinds(&h), vec![Kind::LostAck]);
    }

    #[test]
    fn a_version_produced_twice_is_caught() {
        let mut h = good();
        h.events.push(cas(5, (12, 19), 0, "z", Outcome::Ok(1)));
        assert!(kinds(&h).contains(&Kind::DuplicateVersion), "{:?}", check(&h));
        let mut h = good();
        h.events.push(read(5, (50, 60), false, "x", 2));
        assert!(kinds(&h).contains(&Kind::DuplicateVersion), "{:?}", check(&h));
    }

    #[test]
    fn a_read_going_backwards_is_caught() {
        let mut h = good();
        h.events.push(read(4, (50, 60), false, "init", 0));
        assert_eq!(kinds(&h), vec![Kind::ReadWentBackwards]);
    }

    #[test]
    fn a_phantom_write_is_caught() {
        let mut h = good();
        // "x" was refused with BadVersion: no read may ever see it.
        h.events.push(read(5, (50, 60), false, "x", 3));
        assert!(kinds(&h).contains(&Kind::Phantom), "{:?}", check(&h));
        let mut h = good();
        h.servers[1].set.push("c9-9-0000000007".into());
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
    }

    #[test]
    fn writes_out_of_real_time_order_are_caught() {
        let mut h = good();
        // Acknowledged after "b" (version 2) was, yet ordered before it.
        h.events[0] = cas(1, (0, 10), 1, "a", Outcome::Ok(2));
        h.events[1] = cas(2, (20, 30), 0, "b", Outcome::Ok(1));
        h.events.truncate(3);
        h.servers = vec![];
        assert!(kinds(&h).contains(&Kind::RealTime), "{:?}", check(&h));
    }

    #[test]
    fn a_create_applied_twice_is_caught() {
        let mut h = good();
        h.servers[1].set.push("c2-1-0000000005".into());
        assert_eq!(kinds(&h), vec![Kind::DuplicateVersion]);
    }

    #[test]
    fn an_ack_from_a_minority_is_caught() {
        let mut h = good();
        h.events[1].pinned = Some(2);
        h.minority_windows.push(MinorityWindow { minority: vec![2], running: vec![2], from: 15, to: 100 });
        assert_eq!(kinds(&h), vec![Kind::MinorityAck]);
        // A write that began before the cut may have committed through the majority.
        h.minority_windows[0].from = 21;
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_minority_window_without_a_write_through_the_minority_tested_nothing() {
        let mut h = good();
        h.minority_windows.push(MinorityWindow { minority: vec![2, 3], running: vec![2], from: 15, to: 100 });
        assert_eq!(untested_minorities(&h).len(), 1, "no event is pinned to server 2");
        // Server 3 was paused or killed: a write through it says nothing of the rule.
        h.events[2].pinned = Some(3);
        assert_eq!(untested_minorities(&h).len(), 1);
        // A write through the minority (it failed), invoked inside: a client tried the minority.
        h.events[2].pinned = Some(2);
        assert_eq!(untested_minorities(&h), Vec::<&MinorityWindow>::new());
        // Invoked before the cut, it does not count.
        h.minority_windows[0].from = 26;
        assert_eq!(untested_minorities(&h).len(), 1);
        // Nor does a read.
        h.minority_windows[0].from = 15;
        h.events[2].pinned = None;
        h.events[4].pinned = Some(2);
        assert_eq!(untested_minorities(&h).len(), 1);
        // A window whose minority all stopped is not asked for one.
        h.minority_windows[0].running.clear();
        assert_eq!(untested_minorities(&h), Vec::<&MinorityWindow>::new());
    }

    #[test]
    fn ephemerals_follow_their_sessions() {
        let mut h = good();
        h.servers[0].ephemerals.insert("/e/a".into(), 7);
        h.servers[1].ephemerals.insert("/e/a".into(), 7);
        h.sessions.push(SessionFate { session: 7, path: "/e/a".into(), expired: false });
        assert_eq!(kinds(&h), vec![]);
        h.sessions[0].expired = true;
        assert_eq!(kinds(&h), vec![Kind::Ephemeral]);
        h.sessions[0].expired = false;
        h.servers[1].ephemerals.clear();
        assert_eq!(kinds(&h), vec![Kind::Ephemeral]);
    }
}
