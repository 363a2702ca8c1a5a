//! The nemesis suite's machinery (issue 10): real server processes, each in a network namespace of its own,
//! clients recording a history while partitions, pauses and kills come and go on a seeded schedule, and a
//! checker of that history. `tests/tests/t90_nemesis.rs` runs it.
//!
//! - [`netns`]: namespaces, veth pairs, a bridge, and partitions as blackhole routes (iproute2 only).
//! - [`schedule`]: the seeded faults and the actions each becomes.
//! - [`workload`]: register, set and ephemeral clients.
//! - [`history`]: what the clients did and saw, and the servers' final states.
//! - [`checker`]: the rules a history must keep, as a pure function.
//! - [`availability`]: writes acknowledged per second during and after each fault.
//! - [`runner`]: one run from start to checks.

pub mod availability;
pub mod checker;
mod final_state;
pub mod history;
pub mod netns;
pub mod runner;
pub mod schedule;
pub mod workload;

pub use netns::Network;
pub use runner::{run, Config, Report};
