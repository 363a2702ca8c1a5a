//! The peer transport: one TCP connection per pair of servers, framed with [`PeerCodec`], behind the
//! [`Transport`] trait so that tests can put a simulated network in its place (see `tests/t60_simulation.rs`).
//!
//! - The server with the higher id dials, the lower one listens (one connection per pair, no race), as in
//!   ZooKeeper: the servers most likely to win an election (ties go to the higher id) reach everyone as soon as
//!   they start, instead of waiting for the others' reconnect backoff; a late vote from them is what splits an
//!   election (two servers settle on one leader while the late one wins a quorum of stale votes). The dialer
//!   first sends its id (u64, big-endian); the listener refuses ids it does not know or that should not dial it.
//!   A connection claiming the id of a server that is connected already replaces the old connection only once
//!   it sends a frame that decodes (the server restarted and its old connection is dead), so bytes from someone
//!   else claiming that id never cut the real link. At most [`MAX_HANDSHAKES`] connections wait for their
//!   handshake at once; more are closed at once.
//! - Each connection has a send queue bounded in entries (a message, or the messages of one pass of the
//!   server's loop) and in bytes. A peer that does not drain it is disconnected rather than buffered for without
//!   limit; it re-syncs when it reconnects. The bounds are large (a million entries, 256 MiB): while a follower
//!   syncs, every proposal and commit for it waits behind its
//!   sync stream, for as long as the snapshot takes to prepare and ship.
//! - Inbound messages go to one channel, in entries of what a connection had at hand, each entry holding a share
//!   of its sender's byte budget ([`TransportConfig::inbound_bytes`], per peer id, kept across that peer's
//!   reconnections) until the receiver has taken its last message out: a peer whose messages are not taken fast
//!   enough stops being read (TCP pushes back on it)
//!   instead of growing memory, and its flood never holds up another peer's messages.
//! - What a syncing follower needs (every txn it lacks, or a snapshot) goes as one [`MessageStream`]: the
//!   connection's writer pulls its messages as the socket drains, on a blocking thread (they are read from
//!   disk), so a long stream takes one slot of the queue and a bounded amount of memory, and whatever is sent
//!   after it still follows it on the wire.
//! - A dialer reconnects with exponential backoff. Every connect and disconnect is reported, so the protocol
//!   ([`crate::peer::Event::Disconnected`]) learns of it as it would of a broken TCP stream.
//! - Whatever a peer sends is its fault, never this server's: a frame that does not decode, one over
//!   `max_frame`, a bad handshake ([`LinkFault`]) drops that link, logged at warn with the peer and the reason.
//! - Before the id, each connection is upgraded by the configured [`PeerSecurity`] (plain TCP by default, TLS
//!   in the node with `sslQuorum`): the listener upgrades, reads the id, and asks [`PeerSecurity::admit`]
//!   whether what the connection proved (a certificate) allows that id; the dialer upgrades (checking that the
//!   other end is the server it dialed) and then sends its id. Upgrade and id together are bounded by the
//!   handshake timeout, and an accepted connection holds one of the [`MAX_HANDSHAKES`] places until both are
//!   done. A failed upgrade or a refused identity is the peer's fault ([`LinkFault::Secure`],
//!   [`LinkFault::Identity`]) and is logged like the other refusals.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::message::{DecodeError, Message, PeerCodec, ServerId};
use crate::security::{BoxedStream, PeerIdentity, PeerReader, PeerSecurity, PeerWriter, Plaintext};

/// Connections waiting for their handshake (or, claiming a connected server's id, for their first frame) at
/// most: more are closed as they come, so a flood of connections holds a bounded number of sockets and tasks.
pub const MAX_HANDSHAKES: usize = 64;

/// How long a connection has to finish its upgrade ([`PeerSecurity`]) and send its server id, and one claiming a
/// connected server's id its first frame.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener whose accept fails (out of file descriptors, say) waits this long before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Refused connections logged one by one per window at most: a flood of connections must not become a flood
/// of log lines. The rest are counted, and the count is logged when the next window begins.
const REFUSALS_LOGGED: u64 = 20;
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// The refusals of the current window: when it began, and how many there were.
struct Refusals(Mutex<(std::time::Instant, u64)>);

impl Refusals {
    fn new() -> Refusals {
        Refusals(Mutex::new((std::time::Instant::now(), 0)))
    }

    /// Logs a refused connection, unless too many were logged in this window already; whether it logged.
    fn log(&self, me: ServerId, addr: SocketAddr, fault: &LinkFault) -> bool {
        let mut window = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0.elapsed() >= REFUSAL_WINDOW {
            if let Some(unlogged) = window.1.checked_sub(REFUSALS_LOGGED).filter(|&n| n > 0) {
                tracing::warn!(server = me.0, unlogged, window = ?REFUSAL_WINDOW, "more peer connections were refused");
            }
            *window = (std::time::Instant::now(), 0);
        }
        window.1 += 1;
        let logged = window.1 <= REFUSALS_LOGGED;
        if logged {
            tracing::warn!(server = me.0, %addr, %fault, "refused a peer connection");
        }
        logged
    }
}

/// Why a link to a peer was refused or dropped: the peer's fault (or the network's), never this server's.
#[derive(Debug, thiserror::Error)]
pub enum LinkFault {
    /// A frame that does not decode, or whose length prefix is over the bound.
    #[error("bad frame: {0}")]
    Frame(#[from] DecodeError),
    /// No server id within the handshake timeout.
    #[error("no server id within {0:?}")]
    HandshakeTimeout(Duration),
    /// The connection failed before its server id arrived.
    #[error("handshake: {0}")]
    Handshake(#[source] io::Error),
    /// A server id not in the configuration.
    #[error("unknown server id {0}")]
    UnknownServer(u64),
    /// A known server that should not dial this one (the higher id dials).
    #[error("server {0} has a lower id and should not dial this server")]
    WrongDialer(u64),
    /// A second connection claiming a connected server's id that sent no valid frame in time.
    #[error("claims the id of connected server {0} and sent no valid frame within {1:?}")]
    Impostor(u64, Duration),
    /// A second connection claiming a connected server's id whose first frame is bad.
    #[error("claims the id of connected server {0} and sent a bad frame: {1}")]
    ImpostorFrame(u64, DecodeError),
    /// Too many connections waiting for their handshake.
    #[error("{0} connections are waiting for their handshake already")]
    TooManyHandshakes(usize),
    /// The peer does not drain its send queue.
    #[error("its send queue is full (it does not read)")]
    QueueFull,
    /// The connection could not be secured: a failed TLS handshake (a certificate the trust store does not
    /// vouch for, or none; a plaintext peer where TLS is required; no common version or suite).
    #[error("secure handshake: {0}")]
    Secure(String),
    /// The peer's verified identity (its certificate) does not allow the server id it claims, or the server
    /// dialed is not the one its certificate names.
    #[error("claims to be server {claimed}, but {reason}")]
    Identity {
        /// The server id it claimed.
        claimed: u64,
        /// Why its identity does not allow it.
        reason: String,
    },
}

/// What the transport reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A connection to this peer is up.
    Connected(ServerId),
    /// A message from a peer.
    Message(ServerId, Message),
    /// The connection to this peer is gone (everything in flight on it is lost).
    Disconnected(ServerId),
}

/// Why a message was not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to the peer.
    #[error("not connected to {0:?}")]
    NotConnected(ServerId),
    /// The peer's send queue was full: the connection was closed.
    #[error("send queue to {0:?} full: disconnected")]
    QueueFull(ServerId),
}

/// Messages made on demand, in order; an `Err` (a failed read) ends the stream and closes the connection.
pub type MessageStream = Box<dyn Iterator<Item = Result<Message, String>> + Send>;

/// What a connection's send queue holds.
enum Outgoing {
    One(Message),
    /// Messages queued together, in order: one queue entry for a pass of the server's loop.
    Many(Vec<Message>),
    Stream(MessageStream),
}

impl Outgoing {
    /// What it counts against the queue's byte bound.
    fn len(&self) -> usize {
        match self {
            Outgoing::One(message) => message.approximate_len(),
            Outgoing::Many(messages) => messages.iter().map(Message::approximate_len).sum(),
            Outgoing::Stream(_) => 0,
        }
    }
}

/// A stream's messages are pulled in batches of about this many bytes.
const STREAM_BATCH_BYTES: usize = 1 << 20;
/// And at most this many messages.
const STREAM_BATCH_MESSAGES: usize = 1024;

/// Sending to peers; inbound traffic arrives on the channel the transport was started with.
pub trait Transport: Send + Sync {
    /// Queues a message to a peer, without waiting.
    fn send(&self, to: ServerId, message: Message) -> Result<(), SendError>;
    /// Queues messages to a peer, in order, without waiting: as [`Transport::send`] of each, in one go.
    fn send_all(&self, to: ServerId, messages: Vec<Message>) -> Result<(), SendError> {
        messages.into_iter().try_for_each(|message| self.send(to, message))
    }
    /// Queues a stream of messages to a peer, without waiting: they go out after everything queued before,
    /// and before everything queued after.
    fn send_stream(&self, to: ServerId, stream: MessageStream) -> Result<(), SendError>;
    /// Closes the connection to a peer (a dialer reconnects later).
    fn disconnect(&self, peer: ServerId);
}

/// Transport settings.
#[derive(Clone)]
pub struct TransportConfig {
    /// The largest frame accepted or sent.
    pub max_frame: usize,
    /// Queue entries per peer at most (a message, the messages of one [`Transport::send_all`], or a stream).
    pub queue: usize,
    /// Bytes of messages queued per peer at most ([`Message::approximate_len`]; a stream counts as nothing).
    pub queue_bytes: usize,
    /// Bytes of inbound messages from one peer queued at most ([`Message::approximate_len`] plus the queue
    /// entry's own size); a single larger entry is still taken when none of that peer's is queued.
    pub inbound_bytes: usize,
    /// Bytes of [`Message::Forward`] payloads from one peer that the node has not finished with at most (the
    /// runtime counts them from the inbound queue until the node drops the [`crate::runtime::Forwarded`]'s
    /// share): a peer past it is dropped, as a peer whose forwards find the queue full is. A well-behaved
    /// follower forwards no more than its own clients' budget allows (plus one frame per connection), so the
    /// node sets this to twice that budget.
    pub forwarded_bytes: usize,
    /// First and longest reconnect delays.
    pub backoff: (Duration, Duration),
    /// How connections are secured before the handshake; [`Plaintext`] by default.
    pub security: Arc<dyn PeerSecurity>,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("max_frame", &self.max_frame)
            .field("queue", &self.queue)
            .field("queue_bytes", &self.queue_bytes)
            .field("inbound_bytes", &self.inbound_bytes)
            .field("forwarded_bytes", &self.forwarded_bytes)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame: 2 << 20,
            queue: 1 << 20,
            queue_bytes: 256 << 20,
            inbound_bytes: 32 << 20,
            forwarded_bytes: 100 << 20,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            security: Arc::new(Plaintext),
        }
    }
}

struct Link {
    tx: mpsc::Sender<Outgoing>,
    /// Bytes queued and not yet taken by the writer.
    queued_bytes: Arc<AtomicUsize>,
    tasks: [AbortHandle; 2],
    generation: u64,
}

struct Shared {
    me: ServerId,
    config: TransportConfig,
    links: Mutex<BTreeMap<ServerId, Link>>,
    inbound: mpsc::UnboundedSender<Received>,
    /// Each known peer's inbound byte budget ([`TransportConfig::inbound_bytes`]).
    budgets: BTreeMap<ServerId, Arc<Semaphore>>,
    generation: std::sync::atomic::AtomicU64,
    handshakes: Arc<Semaphore>,
    refusals: Refusals,
}

impl Shared {
    fn is_connected(&self, peer: ServerId) -> bool {
        self.links.lock().expect("transport lock poisoned by a panic").contains_key(&peer)
    }
}

/// The TCP transport.
pub struct TcpTransport {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl TcpTransport {
    /// Starts listening on `listener` and dialing every peer in `peers` with a lower id. Returns the transport
    /// and the channel of inbound traffic.
    pub fn start(
        me: ServerId,
        listener: TcpListener,
        peers: BTreeMap<ServerId, SocketAddr>,
        config: TransportConfig,
    ) -> (TcpTransport, InboundReceiver) {
        let (inbound, rx) = mpsc::unbounded_channel();
        let budget = budget_permits(config.inbound_bytes);
        let budgets = peers.keys().map(|&peer| (peer, Arc::new(Semaphore::new(budget as usize)))).collect();
        let shared = Arc::new(Shared {
            me,
            config,
            links: Mutex::new(BTreeMap::new()),
            inbound,
            budgets,
            generation: Default::default(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            refusals: Refusals::new(),
        });
        let mut tasks =
            vec![tokio::spawn(listen(shared.clone(), listener, peers.keys().copied().collect())).abort_handle()];
        for (&peer, &addr) in peers.iter().filter(|(&p, _)| p < me) {
            tasks.push(tokio::spawn(dial(shared.clone(), peer, addr)).abort_handle());
        }
        (TcpTransport { shared, tasks }, InboundReceiver::new(rx))
    }

    /// A view of the send queues, for monitoring.
    pub fn send_queues(&self) -> SendQueues {
        SendQueues(Some(self.shared.clone()))
    }
}

/// The bytes waiting in each connected peer's send queue ([`Message::approximate_len`]; a stream being sent
/// counts as nothing), read on demand. The default view shows none (a transport with no queues of its own, such
/// as a simulated network).
#[derive(Clone, Default)]
pub struct SendQueues(Option<Arc<Shared>>);

impl SendQueues {
    /// Each connected peer, with the bytes queued for it.
    pub fn bytes(&self) -> Vec<(ServerId, usize)> {
        let Some(shared) = &self.0 else { return Vec::new() };
        let links = shared.links.lock().expect("transport lock poisoned by a panic");
        links.iter().map(|(&peer, link)| (peer, link.queued_bytes.load(Ordering::Relaxed))).collect()
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: ServerId, message: Message) -> Result<(), SendError> {
        self.queue(to, Outgoing::One(message))
    }

    fn send_all(&self, to: ServerId, mut messages: Vec<Message>) -> Result<(), SendError> {
        match messages.len() {
            0 => Ok(()),
            1 => self.queue(to, Outgoing::One(messages.pop().expect("one"))),
            _ => self.queue(to, Outgoing::Many(messages)),
        }
    }

    fn send_stream(&self, to: ServerId, stream: MessageStream) -> Result<(), SendError> {
        self.queue(to, Outgoing::Stream(stream))
    }

    fn disconnect(&self, peer: ServerId) {
        let link = self.shared.links.lock().expect("transport lock poisoned by a panic").remove(&peer);
        if let Some(link) = link {
            close(&self.shared, peer, link);
        }
    }
}

impl TcpTransport {
    fn queue(&self, to: ServerId, item: Outgoing) -> Result<(), SendError> {
        let mut links = self.shared.links.lock().expect("transport lock poisoned by a panic");
        let Some(link) = links.get(&to) else { return Err(SendError::NotConnected(to)) };
        let len = item.len();
        let over = link.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > self.shared.config.queue_bytes;
        let sent = if over { Err(mpsc::error::TrySendError::Full(item)) } else { link.tx.try_send(item) };
        if sent.is_err() {
            link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::NotConnected(to)),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let link = links.remove(&to).expect("present");
                drop(links);
                tracing::warn!(server = self.shared.me.0, peer = to.0, fault = %LinkFault::QueueFull, "dropping the link");
                close(&self.shared, to, link);
                Err(SendError::QueueFull(to))
            }
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let links = std::mem::take(&mut *self.shared.links.lock().expect("transport lock poisoned by a panic"));
        for link in links.into_values() {
            link.tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

/// Stops a connection's tasks and reports it gone.
fn close(shared: &Shared, peer: ServerId, link: Link) {
    link.tasks.iter().for_each(AbortHandle::abort);
    report(shared, Inbound::Disconnected(peer));
}

async fn listen(shared: Arc<Shared>, listener: TcpListener, known: Vec<ServerId>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: trying again at once would spin.
                tracing::warn!(server = shared.me.0, %error, "accepting a peer connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
            shared.refusals.log(shared.me, addr, &LinkFault::TooManyHandshakes(MAX_HANDSHAKES));
            continue;
        };
        let shared = shared.clone();
        let known = known.clone();
        tokio::spawn(async move {
            match accept(&shared, stream, addr, &known).await {
                Ok((peer, reader, writer, first)) => {
                    drop(permit);
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    run(shared, peer, addr, Halves { reader, writer, first }, done_tx);
                    let _ = done_rx.await;
                }
                Err(fault) => {
                    shared.refusals.log(shared.me, addr, &fault);
                }
            }
        });
    }
}

type Reader = FramedRead<PeerReader, PeerCodec>;

/// An accepted connection, ready to run: its reader (with anything read past the first frame), its writer,
/// and the first frame when it had to send one before it was let in.
struct Halves {
    reader: Reader,
    writer: PeerWriter,
    first: Option<Message>,
}

/// Upgrades a dialer's connection, reads its server id and checks it: known, allowed by what the connection
/// proved, higher than ours, and, if that server is connected already, followed by a frame that decodes within
/// the timeout.
async fn accept(
    shared: &Shared,
    stream: TcpStream,
    addr: SocketAddr,
    known: &[ServerId],
) -> Result<(ServerId, Reader, PeerWriter, Option<Message>), LinkFault> {
    let _ = stream.set_nodelay(true);
    let security = shared.config.security.clone();
    let handshake = async move {
        let (mut stream, identity) = security.accept(stream, addr).await?;
        let id = stream.read_u64().await.map_err(LinkFault::Handshake)?;
        Ok::<_, LinkFault>((stream, identity, id))
    };
    let (stream, identity, id) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(handshake) => handshake?,
        Err(_) => return Err(LinkFault::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
    };
    let peer = ServerId(id);
    if !known.contains(&peer) {
        return Err(LinkFault::UnknownServer(id));
    }
    shared.config.security.admit(peer, &identity)?;
    if peer <= shared.me {
        return Err(LinkFault::WrongDialer(id));
    }
    match &identity {
        PeerIdentity::Unproven => {}
        PeerIdentity::Certificate(_) => {
            tracing::debug!(server = shared.me.0, peer = id, %addr, "a peer proved its identity with a certificate")
        }
        PeerIdentity::Sasl { user, .. } => {
            tracing::debug!(server = shared.me.0, peer = id, %addr, user, "a peer proved its identity with SASL")
        }
    }
    let (read, writer) = crate::security::split(stream);
    let mut reader = FramedRead::new(read, PeerCodec::new(shared.config.max_frame));
    if !shared.is_connected(peer) {
        return Ok((peer, reader, writer, None));
    }
    // The server restarted (its old connection is dead, and we have not noticed yet), or someone else claims
    // its id: the real link stays until this one proves it speaks the protocol.
    tracing::debug!(server = shared.me.0, peer = id, %addr, "a second connection from a connected server");
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(first))) => Ok((peer, reader, writer, Some(first))),
        Ok(Some(Err(error))) => Err(LinkFault::ImpostorFrame(id, error)),
        Ok(None) | Err(_) => Err(LinkFault::Impostor(id, HANDSHAKE_TIMEOUT)),
    }
}

async fn dial(shared: Arc<Shared>, peer: ServerId, addr: SocketAddr) {
    let (first, longest) = shared.config.backoff;
    let mut delay = first;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => match introduce(&shared, stream, peer, addr).await {
                Ok(stream) => {
                    delay = first;
                    let (read, writer) = crate::security::split(stream);
                    let reader = FramedRead::new(read, PeerCodec::new(shared.config.max_frame));
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    run(shared.clone(), peer, addr, Halves { reader, writer, first: None }, done_tx);
                    let _ = done_rx.await;
                }
                Err(LinkFault::Handshake(error)) => tracing::debug!(peer = peer.0, %error, "handshake failed"),
                Err(fault) => {
                    shared.refusals.log(shared.me, addr, &fault);
                }
            },
            Err(error) => tracing::debug!(peer = peer.0, %error, "connect failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(longest);
    }
}

/// Upgrades a connection this server dialed and sends its id, within the handshake timeout.
async fn introduce(
    shared: &Shared,
    stream: TcpStream,
    peer: ServerId,
    addr: SocketAddr,
) -> Result<BoxedStream, LinkFault> {
    let _ = stream.set_nodelay(true);
    let (security, me) = (shared.config.security.clone(), shared.me.0);
    let handshake = async move {
        let mut stream = security.connect(stream, peer, addr).await?;
        stream.write_u64(me).await.map_err(LinkFault::Handshake)?;
        stream.flush().await.map_err(LinkFault::Handshake)?;
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or(Err(LinkFault::HandshakeTimeout(HANDSHAKE_TIMEOUT)))
}

type Writer = FramedWrite<PeerWriter, PeerCodec>;

/// Writes one queued item; a stream is pulled batch by batch on a blocking thread, and the writer's buffer
/// flushes to the socket as it fills, so the stream advances as fast as the peer reads.
async fn feed(writer: &mut Writer, item: Outgoing, peer: ServerId) -> Result<(), ()> {
    let mut stream = match item {
        Outgoing::One(message) => return writer.feed(message).await.map_err(|error| write_failed(peer, error)),
        Outgoing::Many(messages) => {
            for message in messages {
                writer.feed(message).await.map_err(|error| write_failed(peer, error))?;
            }
            return Ok(());
        }
        Outgoing::Stream(stream) => stream,
    };
    loop {
        let pulled = tokio::task::spawn_blocking(move || {
            let (mut batch, mut bytes) = (Vec::new(), 0);
            while bytes < STREAM_BATCH_BYTES && batch.len() < STREAM_BATCH_MESSAGES {
                match stream.next() {
                    Some(Ok(message)) => {
                        bytes += message.approximate_len();
                        batch.push(message);
                    }
                    Some(Err(error)) => return Err(error),
                    None => return Ok((stream, batch, true)),
                }
            }
            Ok((stream, batch, false))
        })
        .await;
        let (rest, batch, done) = match pulled {
            Ok(Ok(pulled)) => pulled,
            Ok(Err(error)) => {
                tracing::error!(peer = peer.0, %error, "cannot read what a syncing peer needs: closing the connection");
                return Err(());
            }
            Err(_) => return Err(()),
        };
        for message in batch {
            writer.feed(message).await.map_err(|error| write_failed(peer, error))?;
        }
        if done {
            return Ok(());
        }
        stream = rest;
    }
}

/// Runs one connection: a writer task draining the send queue, a reader task feeding the inbound channel.
/// `done` fires when the connection ends.
fn run(shared: Arc<Shared>, peer: ServerId, addr: SocketAddr, halves: Halves, done: tokio::sync::oneshot::Sender<()>) {
    let Halves { reader, writer: write, first } = halves;
    let (tx, mut rx) = mpsc::channel::<Outgoing>(shared.config.queue);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let taken = queued_bytes.clone();
    let generation = shared.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut writer = FramedWrite::new(write, PeerCodec::new(shared.config.max_frame));
    // A writer that fails (the socket, or a message over the frame bound) ends the connection through its
    // reader, which forgets the link and reports it gone: a link that can no longer send must not stay up.
    let writer_gone = Arc::new(tokio::sync::Notify::new());
    let writer_failed = writer_gone.clone();
    let write_task = tokio::spawn(async move {
        // Everything queued goes out in one write: one syscall for a burst of proposals, acks or commits.
        'queue: while let Some(item) = rx.recv().await {
            taken.fetch_sub(item.len(), Ordering::Relaxed);
            if feed(&mut writer, item, peer).await.is_err() {
                break;
            }
            while let Ok(item) = rx.try_recv() {
                taken.fetch_sub(item.len(), Ordering::Relaxed);
                if feed(&mut writer, item, peer).await.is_err() {
                    break 'queue;
                }
            }
            if let Err(error) = writer.flush().await {
                write_failed(peer, error);
                break;
            }
        }
        writer_gone.notify_one();
    });
    let reader_shared = shared.clone();
    let write_abort = write_task.abort_handle();
    // The reader starts only once the link is registered, so that its end always finds (and reports) it.
    let (go, registered) = tokio::sync::oneshot::channel::<()>();
    let read_task = tokio::spawn(async move {
        if registered.await.is_err() {
            return;
        }
        report(&reader_shared, Inbound::Connected(peer));
        let ended = tokio::select! {
            ended = read_frames(&reader_shared, peer, reader, first) => ended,
            _ = writer_failed.notified() => None,
        };
        match ended {
            Some(DecodeError::Io(error)) => {
                tracing::info!(server = reader_shared.me.0, peer = peer.0, %addr, %error, "peer connection broke")
            }
            Some(error) => {
                let fault = LinkFault::Frame(error);
                tracing::warn!(server = reader_shared.me.0, peer = peer.0, %addr, %fault, "dropping the link")
            }
            None => tracing::debug!(server = reader_shared.me.0, peer = peer.0, %addr, "peer connection closed"),
        }
        // The connection ended (or sent garbage): forget it, unless a newer one replaced it.
        write_abort.abort();
        let gone = {
            let mut links = reader_shared.links.lock().expect("transport lock poisoned by a panic");
            let current = links.get(&peer).is_some_and(|l| l.generation == generation);
            if current {
                links.remove(&peer);
            }
            current
        };
        if gone {
            report(&reader_shared, Inbound::Disconnected(peer));
        }
        let _ = done.send(());
    });
    let link = Link { tx, queued_bytes, tasks: [read_task.abort_handle(), write_task.abort_handle()], generation };
    let old = shared.links.lock().expect("transport lock poisoned by a panic").insert(peer, link);
    if let Some(old) = old {
        // A new connection replaces one that the other side gave up on: report the old one gone first.
        close(&shared, peer, old);
    }
    let _ = go.send(());
}

/// Logs why a message could not be written to a peer (the writer then ends the connection).
fn write_failed(peer: ServerId, error: DecodeError) {
    match error {
        DecodeError::Io(error) => tracing::info!(peer = peer.0, %error, "writing to a peer failed"),
        error => tracing::warn!(peer = peer.0, %error, "a message to a peer could not be framed: dropping the link"),
    }
}

/// Passes a connection's frames on (`first`, if the handshake read it, then the rest) until it ends; returns
/// why, when a frame failed to decode or the socket failed. The frames at hand (buffered, or returned by a read
/// at once) go together, as one entry of the inbound channel ([`INBOUND_BATCH`] at most), which waits for its
/// share of the peer's budget before it is queued; nothing more is read from the socket meanwhile.
async fn read_frames(
    shared: &Shared,
    peer: ServerId,
    mut reader: Reader,
    first: Option<Message>,
) -> Option<DecodeError> {
    let budget = shared.budgets.get(&peer).expect("only known peers connect").clone();
    let max = budget_permits(shared.config.inbound_bytes);
    let mut next = first;
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match reader.next().await? {
                Ok(message) => message,
                Err(error) => return Some(error),
            },
        };
        let mut weight = message.approximate_len();
        let mut batch = VecDeque::from([Inbound::Message(peer, message)]);
        // What else is at hand joins it, without waiting for more: a frame already buffered, or one a read
        // returns at once. The end of the connection, or a bad frame, comes after what arrived before it.
        let mut ended = None;
        while batch.len() < INBOUND_BATCH && weight < INBOUND_BATCH_BYTES {
            match reader.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    weight += message.approximate_len();
                    batch.push_back(Inbound::Message(peer, message));
                }
                Some(Some(Err(error))) => ended = Some(Some(error)),
                Some(None) => ended = Some(None),
                // The socket has nothing more now (the read that found it so leaves the next one to wait).
                None => break,
            }
            if ended.is_some() {
                break;
            }
        }
        // The entry weighs its deque's whole capacity (spare slots too) and its own header.
        weight += batch.capacity() * std::mem::size_of::<Inbound>() + std::mem::size_of::<Received>();
        // Closed only when the transport is dropped.
        let share = budget.clone().acquire_many_owned(budget_permits(weight).min(max)).await.ok()?;
        if shared.inbound.send(Received { batch, _share: Some(share) }).is_err() {
            return None;
        }
        if let Some(ended) = ended {
            return ended;
        }
    }
}

/// Messages of one connection queued together at most, and their weight in bytes at most (past it, the batch
/// ends with the message that crossed it).
const INBOUND_BATCH: usize = 256;
const INBOUND_BATCH_BYTES: usize = 256 << 10;

/// Queues a connection report. It holds no budget: a connection makes two at most.
fn report(shared: &Shared, inbound: Inbound) {
    let _ = shared.inbound.send(Received { batch: VecDeque::from([inbound]), _share: None });
}

/// A budget in bytes as semaphore permits (which count in `u32`).
pub(crate) fn budget_permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

/// A queued entry: reports, in order (never none), with the share of their sender's budget they hold until
/// the last of them is taken out.
struct Received {
    batch: VecDeque<Inbound>,
    _share: Option<OwnedSemaphorePermit>,
}

/// The receiving end of the inbound channel: taking an entry's last message out gives its bytes back to its
/// sender's budget.
pub struct InboundReceiver {
    rx: mpsc::UnboundedReceiver<Received>,
    /// What is left of the entry taken out last (`None` once all of it is: its share goes back then).
    taking: Option<Received>,
}

/// The sending end of an inbound channel, for a transport other than [`TcpTransport`] (a simulated network):
/// what it reports holds no budget, so that transport bounds its own traffic.
#[derive(Clone)]
pub struct InboundSender {
    tx: mpsc::UnboundedSender<Received>,
}

impl InboundSender {
    /// Reports `inbound` to the receiver; false once the receiver is gone.
    pub fn send(&self, inbound: Inbound) -> bool {
        self.tx.send(Received { batch: VecDeque::from([inbound]), _share: None }).is_ok()
    }
}

impl InboundReceiver {
    /// A new inbound channel, for a transport of one's own.
    pub fn channel() -> (InboundSender, InboundReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (InboundSender { tx }, InboundReceiver::new(rx))
    }

    fn new(rx: mpsc::UnboundedReceiver<Received>) -> InboundReceiver {
        InboundReceiver { rx, taking: None }
    }

    /// The next report; `None` once the transport is gone. Cancel-safe: nothing is taken unless it returns.
    pub async fn recv(&mut self) -> Option<Inbound> {
        if self.taking.is_none() {
            self.taking = Some(self.rx.recv().await?);
        }
        self.take()
    }

    /// Whether no report is queued.
    pub fn is_empty(&self) -> bool {
        self.taking.is_none() && self.rx.is_empty()
    }

    /// The next report if one is queued.
    pub fn try_recv(&mut self) -> Result<Inbound, mpsc::error::TryRecvError> {
        if self.taking.is_none() {
            self.taking = Some(self.rx.try_recv()?);
        }
        Ok(self.take().expect("an entry is never empty"))
    }

    /// The next report of the entry being taken; gives the entry's share back with its last.
    fn take(&mut self) -> Option<Inbound> {
        let taking = self.taking.as_mut()?;
        let inbound = taking.batch.pop_front();
        if taking.batch.is_empty() {
            self.taking = None;
        }
        inbound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_entry_of_several_messages_is_taken_in_order_and_gives_its_share_back_with_the_last() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut receiver = InboundReceiver::new(rx);
        let ping = |round| Inbound::Message(ServerId(2), Message::Ping { zxid: wal::Zxid(7), round });
        let share = budget.clone().acquire_many_owned(60).await.unwrap();
        tx.send(Received { batch: VecDeque::from([ping(1), ping(2), ping(3)]), _share: Some(share) }).unwrap();
        tx.send(Received { batch: VecDeque::from([Inbound::Disconnected(ServerId(2))]), _share: None }).unwrap();
        assert!(!receiver.is_empty());
        assert_eq!(receiver.recv().await, Some(ping(1)));
        assert_eq!(receiver.try_recv().ok(), Some(ping(2)));
        assert_eq!(budget.available_permits(), 40, "the entry holds its share while any of it is left");
        assert!(!receiver.is_empty());
        assert_eq!(receiver.recv().await, Some(ping(3)));
        assert_eq!(budget.available_permits(), 100, "the last message gives the share back");
        assert_eq!(receiver.try_recv().ok(), Some(Inbound::Disconnected(ServerId(2))));
        assert!(receiver.is_empty());
        assert!(receiver.try_recv().is_err());
        drop(tx);
        assert_eq!(receiver.recv().await, None);
    }

    #[test]
    fn a_flood_of_refusals_logs_a_bounded_number_of_lines_per_window() {
        let refusals = Refusals::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let fault = LinkFault::UnknownServer(99);
        let logged = (0..1000).filter(|_| refusals.log(ServerId(1), addr, &fault)).count();
        assert_eq!(logged, usize::try_from(REFUSALS_LOGGED).unwrap());
        // A new window logs again (and says how many went unlogged).
        let mut window = refusals.0.lock().unwrap();
        window.0 = window.0.checked_sub(REFUSAL_WINDOW).expect("the clock started over 10 s ago");
        drop(window);
        assert!(refusals.log(ServerId(1), addr, &fault));
    }
}
