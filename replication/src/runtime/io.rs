//! What the runtime does its IO through: a filesystem, a transport, and a place for blocking disk work.
//!
//! Production passes the real ones ([`super::start_with_wal`] does). A deterministic simulation passes an
//! in-memory disk that loses power (`wal::fs::SimFs`), a network of its own behind [`Transport`], and
//! [`Blocking::Inline`]; it runs every server on one tokio current-thread runtime with a paused clock (the
//! runtime reads time only through `tokio::time`), so that the seed alone decides what happens, and the code
//! under test is the server's own.

use std::sync::Arc;

use wal::fs::{Fs, StdFs};

use crate::fault::Fault;
use crate::transport::{InboundReceiver, SendQueues, TcpTransport, Transport};

/// Where disk work that may block (the epochs file, a snapshot's chunks, staging and installing it, the repair
/// mark) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// On threads (the epochs writer's own, tokio's blocking ones), so that the loop goes on answering
    /// heartbeats meanwhile (production).
    Threads,
    /// In the loop itself: a simulation must run every step on its one thread, in an order the seed decides
    /// (a thread would race it, and keep a paused clock from advancing). Open the WAL with
    /// `wal::Wal::open_stepped` (or `open_inline`) alongside, for the same reason.
    Inline,
}

impl Blocking {
    /// Runs `work` where this says; `op` names it if the blocking thread dies.
    pub(crate) async fn run<R: Send + 'static>(
        self,
        op: &'static str,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Fault> {
        match self {
            Blocking::Threads => tokio::task::spawn_blocking(work).await.map_err(|e| Fault::task(op, e)),
            Blocking::Inline => Ok(work()),
        }
    }
}

/// The IO a server runs on (see [`super::start_with_io`]).
pub struct Io {
    /// The filesystem of the data directory (epochs, repair mark) and the snapshots; the WAL's is the caller's.
    pub fs: Fs,
    /// Sending to peers.
    pub transport: Arc<dyn Transport>,
    /// What the transport reports: connections and messages.
    pub inbound: InboundReceiver,
    /// The transport's send queues, for monitoring (`SendQueues::default()` for none).
    pub send_queues: SendQueues,
    /// Where blocking disk work runs.
    pub blocking: Blocking,
}

impl Io {
    /// The real IO: the OS's filesystem, a started TCP transport, tokio's blocking threads.
    pub fn tcp(transport: TcpTransport, inbound: InboundReceiver) -> Io {
        let send_queues = transport.send_queues();
        Io { fs: Arc::new(StdFs), transport: Arc::new(transport), inbound, send_queues, blocking: Blocking::Threads }
    }
}
