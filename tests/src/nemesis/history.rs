//! What the clients did and saw: every operation with its invocation and completion time and outcome, the final
//! state of every server, the fate of each ephemeral's session, and when a server was cut off in a minority.
//! Plain data, so that [`crate::nemesis::checker`] is a pure function of it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Microseconds since the run began.
pub type Micros = u64;

/// The value every register holds (at version 0) before any client writes it.
pub const INITIAL_VALUE: &str = "init";

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The server answered that it happened, with this result.
    Ok(T),
    /// The server answered that it did not happen (BadVersion, NodeExists, ...).
    Failed(String),
    /// The client cannot know (the connection broke, a timeout): it happened at most once, or never.
    Indeterminate(String),
}

impl<T> Outcome<T> {
    /// The result, if the server acknowledged the operation.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Outcome::Ok(value) => Some(value),
            Outcome::Failed(_) | Outcome::Indeterminate(_) => None,
        }
    }
}

/// One operation a client ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `setData(register, value, expected)`.
    Cas {
        /// Which register.
        register: usize,
        /// The version the client read before.
        expected: i32,
        /// What it wrote: unique to the attempt.
        value: String,
        /// The new version.
        outcome: Outcome<i32>,
    },
    /// `getData(register)`.
    Read {
        /// Which register.
        register: usize,
        /// Whether a `sync` ran first, beginning at the operation's invocation.
        synced: bool,
        /// The value and its version.
        outcome: Outcome<(String, i32)>,
    },
    /// A sequential create.
    Create {
        /// What the node's name starts with: unique to the attempt.
        token: String,
        /// The node's name.
        outcome: Outcome<String>,
    },
}

/// An operation with who ran it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client (a task of the workload).
    pub client: usize,
    /// The session it ran in: reads of one session never go back.
    pub session: i64,
    /// The server the client is pinned to, if it talks to one only.
    pub pinned: Option<usize>,
    /// When the client sent it.
    pub invoke: Micros,
    /// When the client had its outcome.
    pub complete: Micros,
    /// What it was and how it ended.
    pub op: Op,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pinned = self.pinned.map_or("any".to_string(), |s| format!("node {}", s + 1));
        write!(
            f,
            "[{:>9.3}s..{:>9.3}s] client {} session {:#x} ({pinned}): {:?}",
            secs(self.invoke),
            secs(self.complete),
            self.client,
            self.session,
            self.op
        )
    }
}

/// Microseconds as seconds, for printing.
pub fn secs(t: Micros) -> f64 {
    // Display only: precision loss past 2^52 us (142 years) does not matter.
    t as f64 / 1e6
}

/// What one server holds once healed: each register's value and version, the sequential nodes' names, and each
/// ephemeral's path with its owner session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerState {
    /// `registers[r]`: value and version of register `r`.
    pub registers: Vec<(String, i32)>,
    /// The names of the set's nodes.
    pub set: Vec<String>,
    /// Ephemeral path → owner session.
    pub ephemerals: BTreeMap<String, i64>,
}

/// What became of an ephemeral node's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFate {
    /// The session that created the ephemeral.
    pub session: i64,
    /// The ephemeral's path.
    pub path: String,
    /// Whether the session was seen expired (its ephemeral must be gone) or alive at the end (it must stay).
    pub expired: bool,
}

/// A span during which `minority` (servers) could not reach a quorum: none may acknowledge a write then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinorityWindow {
    /// The servers cut off from every quorum.
    pub minority: Vec<usize>,
    /// Those of them that ran meanwhile (cut off, neither paused nor killed): the clients pinned to them try
    /// writes within the window, which none of them may acknowledge.
    pub running: Vec<usize>,
    /// When the cut was in place.
    pub from: Micros,
    /// When it was lifted.
    pub to: Micros,
}

/// Everything the checker looks at.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every operation, in no particular order.
    pub events: Vec<Event>,
    /// How many registers there are.
    pub registers: usize,
    /// Each server's state after healing.
    pub servers: Vec<ServerState>,
    /// Sessions that created an ephemeral and whose fate is known.
    pub sessions: Vec<SessionFate>,
    /// When servers were in a minority.
    pub minority_windows: Vec<MinorityWindow>,
}

/// Where concurrent clients record their events, on one clock.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), events: Arc::default() }
    }

    /// Microseconds since the recorder was made.
    pub fn now(&self) -> Micros {
        Micros::try_from(self.start.elapsed().as_micros()).unwrap_or(Micros::MAX)
    }

    /// Records `event`.
    pub fn record(&self, event: Event) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    /// Every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}
