//! The simulation's parts: the network, the servers, the node's side of each (its tree), damage to a disk
//! (the disk itself is `wal::fs::SimFs`).
pub mod damage;
pub mod machine;
pub mod net;
pub mod server;
