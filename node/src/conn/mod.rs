//! One client connection: the handshake, then requests in, replies and watch events out.
//!
//! Replies go out in request order (ZooKeeper's per-session FIFO). Each request takes a slot in a queue:
//! - a read runs when it reaches the head, so it sees every earlier write of its session;
//! - a write (or sync) waits for its reply, which the applier (or the sync task) sends through the
//!   connection's queue once its txn is applied on this server;
//! - a reply that needs no waiting is ready at once.
//!
//! Watch events go out as they arrive. A read drains the queue after it ran and before its reply goes out, so a
//! client always gets the event for a change before a read that shows the change (the applier queues events
//! under the tree's write lock).

mod dispatch;
mod handshake;
mod replies;
mod writes;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use proto::records::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};
use tree::acl::Id;

use crate::admission::Permit;
use crate::frame::ClientCodec;
use crate::server::Ctx;
use crate::session::SessionId;
use crate::shared::{ConnHandle, ConnInbox};
use crate::throttle::Ticket;

/// The xid of pings (their replies carry it too).
const PING_XID: i32 = -2;

/// Requests a connection may have in flight before it stops reading (back-pressure on the client).
const MAX_IN_FLIGHT: usize = 1000;

/// How often a connection held back by the server-wide budget looks again.
const THROTTLE_RECHECK: Duration = Duration::from_millis(5);

/// How long a client may take to send its ConnectRequest.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's halves, boxed so that plaintext and TLS connections run the same code: the virtual call
/// per read or write is nothing next to the syscall behind it.
type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;
type Reader = FramedRead<ReadHalf, ClientCodec>;
type Writer = FramedWrite<WriteHalf, ClientCodec>;

/// A client stream that splits into halves owned by the reading and the writing side.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The two halves.
    fn halves(self) -> (ReadHalf, WriteHalf);
}

impl ClientStream for TcpStream {
    fn halves(self) -> (ReadHalf, WriteHalf) {
        // TCP's own split: no lock between the halves.
        let (read, write) = self.into_split();
        (Box::new(read), Box::new(write))
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn halves(self) -> (ReadHalf, WriteHalf) {
        let (read, write) = tokio::io::split(self);
        (Box::new(read), Box::new(write))
    }
}

/// Why a connection ended (logged at debug level; none of these harm other sessions).
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("client closed the connection")]
    Eof,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed {0}")]
    Malformed(String),
    #[error("{0}")]
    Refused(String),
    #[error("closed by the server")]
    Server,
}

enum Slot {
    /// `update`: the reply to a write (ZooKeeper's `updatelatency`; every other reply counts as a read).
    Ready {
        frame: Bytes,
        started: Instant,
        update: bool,
    },
    /// Waiting for the leader: a write (`update`: a txn, ZooKeeper's `updatelatency`) or a sync (which has no
    /// txn, and ZooKeeper counts among the reads).
    Write {
        cxid: i32,
        started: Instant,
        update: bool,
    },
    Read {
        xid: i32,
        op: i32,
        request: Request,
        started: Instant,
    },
}

/// Serves one accepted connection until it closes.
/// `_permit` is the connection's place under `maxClientCnxns`: it goes back when this returns, however the
/// connection ended. `identity` is what the transport proved (a TLS client certificate's `x509` id).
pub async fn serve(ctx: Arc<Ctx>, stream: impl ClientStream, addr: SocketAddr, identity: Vec<Id>, _permit: Permit) {
    let mut stream = stream;
    let mut first = [0u8; 4];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if let Some(word) = crate::report::four_letter_word(&first) {
        crate::report::answer_four_letter_word(ctx, stream, addr, word).await;
        return;
    }
    let (read, write) = stream.halves();
    let codec = || ClientCodec::new(ctx.shared.limits.frame);
    let mut reader = FramedRead::new(read, codec());
    reader.read_buffer_mut().extend_from_slice(&first);
    let writer = FramedWrite::new(write, codec());
    let id = ctx.shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (handle, inbox) = ConnHandle::new(id, addr);
    let mut conn = Conn {
        ctx: ctx.clone(),
        handle,
        inbox,
        reader,
        writer,
        session: 0,
        timeout: Duration::ZERO,
        auth: std::iter::once(Id::new("ip", &addr.ip().to_string())).chain(identity).collect(),
        slots: VecDeque::new(),
        tickets: VecDeque::new(),
        closing: false,
        read_only: None,
        last_packet: Instant::now(),
        sasl: None,
    };
    let outcome = conn.run().await;
    tracing::debug!(%addr, session = format_args!("0x{:x}", conn.session), ?outcome, "connection closed");
    conn.unregister();
}

struct Conn {
    ctx: Arc<Ctx>,
    handle: ConnHandle,
    inbox: ConnInbox,
    reader: Reader,
    writer: Writer,
    session: SessionId,
    timeout: Duration,
    /// Shared with every write it queues (a clone is a reference count, not a copy of the strings).
    auth: Arc<[Id]>,
    slots: VecDeque<Slot>,
    /// Each request's share of the server's budget, in step with `slots`; a write or sync's is shared with its
    /// item in the leader's pipeline (given back once both are done, so that a closed connection's items still
    /// count until the pipeline has taken them).
    tickets: VecDeque<Arc<Ticket>>,
    /// The server asked this connection to close: it does once the ready replies are out.
    closing: bool,
    /// Set while the connection holds a read-only session: the read-only mode's changes, for the connection
    /// closes when its mode ends.
    read_only: Option<watch::Receiver<Option<u64>>>,
    /// When the client last sent a packet (a read-only session expires a timeout after it).
    last_packet: Instant,
    /// The connection's SASL exchange, from its first `sasl` packet on.
    sasl: Option<crate::sasl::digest_md5::DigestMd5Server>,
}

impl Conn {
    async fn run(&mut self) -> Result<(), Closed> {
        self.handshake().await?;
        loop {
            self.drive().await?;
            let throttled = !self.ctx.shared.throttle.admits(self.slots.len());
            let reading = self.slots.len() < MAX_IN_FLIGHT && !throttled;
            tokio::select! {
                biased;
                out = self.inbox.recv() => match out {
                    Some(out) => {
                        self.absorb(out).await?;
                        // Take whatever else is queued before the flush: one write for a burst of replies.
                        while let Some(out) = self.inbox.try_recv() {
                            self.absorb(out).await?;
                        }
                    }
                    None => return Err(Closed::Server),
                },
                frame = self.reader.next(), if reading => match frame {
                    Some(Ok(frame)) => {
                        self.take(frame.freeze()).await?;
                        // Requests already read from the socket are handled before the flush too.
                        while self.slots.len() < MAX_IN_FLIGHT && self.ctx.shared.throttle.admits(self.slots.len()) {
                            match futures_util::FutureExt::now_or_never(self.reader.next()) {
                                Some(Some(Ok(frame))) => self.take(frame.freeze()).await?,
                                Some(Some(Err(e))) => return Err(Closed::Io(e)),
                                Some(None) => return Err(Closed::Eof),
                                None => break,
                            }
                        }
                    }
                    Some(Err(e)) => return Err(Closed::Io(e)),
                    None => return Err(Closed::Eof),
                },
                // The read-only mode this connection's session belongs to ended (ZooKeeper closes every
                // connection as its read-only server shuts down).
                _ = mode_ended(&mut self.read_only) => return Err(Closed::Server),
                // Held back by the server-wide budget: look again soon (answers to other connections free it).
                _ = tokio::time::sleep(THROTTLE_RECHECK), if throttled => {}
                // A client the server does not read from is not silent by its own doing.
                _ = tokio::time::sleep(self.timeout), if reading => {
                    return Err(Closed::Refused("no packet from the client within its session timeout".into()))
                }
            }
        }
    }
}

/// Resolves when the read-only mode `mode` watches has ended (never for a read-write connection, `None`): it
/// only ever changes from this connection's generation to none.
async fn mode_ended(mode: &mut Option<watch::Receiver<Option<u64>>>) {
    match mode {
        Some(mode) => {
            let _ = mode.changed().await;
        }
        None => std::future::pending().await,
    }
}
