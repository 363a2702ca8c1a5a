//! Ensemble's replication: ZooKeeper's atomic broadcast (Zab) as state machines without IO, and the wire format
//! servers speak to each other.
//!
//! Done so far: [`message`] (every peer message and the length-prefixed codec) and [`election`] (fast leader
//! election). Discovery, sync, broadcast and the transport follow.
#![deny(missing_docs)]

pub mod election;
pub mod message;
