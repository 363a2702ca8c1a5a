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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proto::connect::{ConnectRequest, ConnectResponse};
use proto::records::{Request, RequestHeader, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};
use tree::acl::Id;
use tree::code::{op, Code};

use crate::admission::Permit;
use crate::forward::Forward;
use crate::frame::ClientCodec;
use crate::leader::{Item, Origin};
use crate::limits::MAX_AUTH_BYTES;
use crate::read_only::Admission;
use crate::reads;
use crate::reply;
use crate::server::Ctx;
use crate::session::{self, SessionId};
use crate::shared::{lock, ConnHandle, ConnInbox, Out};
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
    auth: Vec<Id>,
    slots: VecDeque<Slot>,
    /// Each request's share of the server's budget, in step with `slots`.
    tickets: VecDeque<Ticket>,
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

    async fn handshake(&mut self) -> Result<(), Closed> {
        let frame = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.reader.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => return Err(Closed::Io(e)),
            _ => return Err(Closed::Eof),
        };
        let mut buf = &frame[..];
        let request = ConnectRequest::read(&mut buf).map_err(|e| Closed::Malformed(format!("ConnectRequest: {e}")))?;
        let shared = self.ctx.shared.clone();
        // Subscribed before the mode is read, so that a change after the read is seen (the connection closes).
        let mut mode = shared.read_only.subscribe();
        let generation = *mode.borrow_and_update();
        let admission = self.admission(&request, generation)?;
        let last = shared.tree().last_zxid();
        if request.last_zxid_seen > last {
            return Err(Closed::Refused(format!(
                "client has seen zxid 0x{:x}, our last zxid is 0x{last:x}: client must try another server",
                request.last_zxid_seen
            )));
        }
        let config = &shared.config;
        let timeout_ms =
            session::negotiate_timeout(request.timeout, config.min_session_timeout, config.max_session_timeout);
        self.timeout = Duration::from_millis(timeout_ms as u64);
        self.handle.counters.session_timeout_ms.store(timeout_ms, Ordering::Relaxed);
        let valid = match (admission, generation) {
            (Some(admission), Some(generation)) => {
                let valid = self.read_only_session(admission, &request, generation).await?;
                if valid {
                    self.read_only = Some(mode);
                }
                valid
            }
            _ => self.read_write_session(&request, timeout_ms).await?,
        };
        self.connect_response(&request, valid, timeout_ms, generation.is_some()).await?;
        if !valid {
            return Err(Closed::Refused(format!(
                "session 0x{:x} expired or its password is wrong",
                request.session_id
            )));
        }
        tracing::debug!(
            session = format_args!("0x{:x}", self.session),
            timeout_ms,
            read_only = generation.is_some(),
            "session established"
        );
        Ok(())
    }

    /// Whether the server takes the client at all: refused while it serves neither read-write nor read-only;
    /// in read-only mode `generation`, what [`Admission`] says (its refusals come before the zxid check, as in
    /// ZooKeeper).
    fn admission(&self, request: &ConnectRequest, generation: Option<u64>) -> Result<Option<Admission>, Closed> {
        let shared = &self.ctx.shared;
        match generation {
            None if !self.ctx.serving() => {
                Err(Closed::Refused("this server is not serving (election or sync under way)".into()))
            }
            None => Ok(None),
            Some(_) => {
                let id = request.session_id;
                let global = id != 0 && shared.tree().sessions().contains_key(&id);
                match Admission::of(request.read_only, id, global, shared.config.local_sessions) {
                    Admission::Refuse(reason) => {
                        let session = format_args!("0x{id:x}");
                        tracing::info!(client = %self.handle.addr, %session, reason, "read-only mode: refused");
                        Err(Closed::Refused(reason.into()))
                    }
                    admission => Ok(Some(admission)),
                }
            }
        }
    }

    /// Opens a session through the leader, or reopens one the tree knows; whether it is valid.
    async fn read_write_session(&mut self, request: &ConnectRequest, timeout_ms: i32) -> Result<bool, Closed> {
        let shared = self.ctx.shared.clone();
        if request.session_id == 0 {
            self.session = shared.session_ids.next();
            self.register();
            self.write(Item::Write {
                origin: Origin::Local,
                session: self.session,
                cxid: 0,
                auth: Vec::new(),
                request: tree::prep::Request::CreateSession { timeout: timeout_ms },
                share: None,
            })
            .await?;
            loop {
                match tokio::time::timeout(self.timeout.max(HANDSHAKE_TIMEOUT), self.inbox.recv()).await {
                    Ok(Some(Out::SessionCreated)) => return Ok(true),
                    Ok(Some(Out::Close) | None) | Err(_) => {
                        return Err(Closed::Refused("the session could not be created".into()))
                    }
                    Ok(Some(_)) => {}
                }
            }
        }
        let known = shared.tree().sessions().contains_key(&request.session_id);
        let valid = known && request.passwd[..] == session::password(request.session_id)[..];
        if valid {
            self.session = request.session_id;
            self.register();
            self.attach().await?;
        }
        Ok(valid)
    }

    /// Sends the ConnectResponse: the session, or none (`valid` false: expired or a wrong password). It says
    /// whether the server is read-only to clients that sent that flag (ZooKeeper leaves it out for older
    /// clients, which do not expect it).
    async fn connect_response(
        &mut self,
        request: &ConnectRequest,
        valid: bool,
        timeout_ms: i32,
        read_only: bool,
    ) -> Result<(), Closed> {
        let (timeout, session_id, passwd) = if valid {
            (timeout_ms, self.session, Bytes::copy_from_slice(&session::password(self.session)))
        } else {
            (0, 0, Bytes::from_static(&[0; session::PASSWORD_LEN]))
        };
        let read_only = request.read_only.map(|_| read_only);
        let response = ConnectResponse { protocol_version: 0, timeout, session_id, passwd, read_only };
        let mut out = Vec::with_capacity(48);
        response.write(&mut out);
        self.send(Bytes::from(out)).await?;
        self.flush().await
    }

    /// Opens or reopens, as `admission` says, a session of read-only mode `generation` (see
    /// [`crate::read_only`]); whether it is valid.
    async fn read_only_session(
        &mut self,
        admission: Admission,
        request: &ConnectRequest,
        generation: u64,
    ) -> Result<bool, Closed> {
        let shared = self.ctx.shared.clone();
        match admission {
            Admission::Refuse(reason) => Err(Closed::Refused(reason.into())),
            Admission::NotReadOnly => {
                // ZooKeeper's ReadOnlyRequestProcessor refuses the createSession of what would be a global
                // session as it refuses a write, and that reply header is all the client gets.
                let zxid = shared.tree().last_zxid();
                self.send(reply::frame(0, zxid, Code::NotReadOnly, &Response::Empty)).await?;
                self.flush().await?;
                Err(Closed::Refused("read-only mode opens local sessions only, and localSessionsEnabled is off".into()))
            }
            Admission::Create => {
                let session = shared.session_ids.next();
                if !shared.read_only.open(session, self.timeout, generation) {
                    return Err(Closed::Refused("the server left read-only mode".into()));
                }
                self.session = session;
                self.register();
                Ok(true)
            }
            Admission::Reopen => {
                let id = request.session_id;
                let valid = request.passwd[..] == session::password(id)[..]
                    && shared.read_only.reopen(id, self.timeout, generation, Instant::now());
                if valid {
                    self.session = id;
                    self.register();
                }
                Ok(valid)
            }
        }
    }

    /// Tells the leader the session re-attached here, so that its connection on another server closes.
    async fn attach(&self) -> Result<(), Closed> {
        if self.ctx.leading() {
            let item = Item::Attach { origin: Origin::Local, session: self.session };
            return self.ctx.pipeline.send(item).await.map_err(|_| Closed::Server);
        }
        let attached = Forward::Attached(self.session).encode();
        self.ctx.handle.forward(replication::runtime::ForwardTo::Leader, attached).await;
        Ok(())
    }

    /// Makes this connection the session's connection on this server (closing an older one).
    fn register(&self) {
        if let Some(old) = self.ctx.shared.conns().insert(self.session, self.handle.clone()) {
            old.send(Out::Close);
        }
    }

    fn unregister(&self) {
        let shared = &self.ctx.shared;
        // Requests never answered stop counting as outstanding with the connection.
        self.outstanding(-i64::try_from(self.slots.len()).unwrap_or(i64::MAX));
        if self.session != 0 {
            let mine = {
                let mut conns = shared.conns();
                let mine = conns.get(&self.session).is_some_and(|c| c.id == self.handle.id);
                if mine {
                    conns.remove(&self.session);
                }
                mine
            };
            if mine {
                shared.watches().remove_session(self.session);
                if self.read_only.is_some() {
                    shared.read_only.detach(self.session, self.last_packet);
                }
            }
        }
    }

    /// Takes one request frame into the server's budget and handles it.
    async fn take(&mut self, frame: Bytes) -> Result<(), Closed> {
        let ticket = self.ctx.shared.throttle.take(frame.len());
        self.request(frame).await?;
        self.tickets.push_back(ticket);
        debug_assert_eq!(self.tickets.len(), self.slots.len(), "one ticket per request in flight");
        Ok(())
    }

    /// Handles one request frame.
    async fn request(&mut self, frame: Bytes) -> Result<(), Closed> {
        let started = Instant::now();
        self.last_packet = started;
        let stats = &self.ctx.shared.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        self.handle.counters.received.fetch_add(1, Ordering::Relaxed);
        self.handle.counters.active.store(true, Ordering::Relaxed);
        let mut buf = &frame[..];
        let header = RequestHeader::read(&mut buf).map_err(|e| Closed::Malformed(format!("request header: {e}")))?;
        let (xid, op_code) = (header.xid, header.op);
        let body_at = frame.len() - buf.len();
        self.handle.counters.last_cxid.store(xid as u32 as u64, Ordering::Relaxed);
        self.handle.counters.last_op.store(op_code, Ordering::Relaxed);
        let zxid = || self.ctx.shared.tree().last_zxid();
        let ready = |code: Code| Slot::Ready {
            frame: reply::frame(xid, zxid(), code, &Response::Empty),
            started,
            update: false,
        };
        if op_code != op::AUTH && op_code != op::SASL && self.ctx.shared.sasl.refuses(&self.auth) {
            return self.refuse_unauthenticated(xid).await;
        }
        if self.read_only.is_some() {
            if crate::read_only::refused(op_code) {
                self.push(ready(Code::NotReadOnly));
                return Ok(());
            }
            if op_code == op::CLOSE_SESSION {
                // A local session closes here; the connection closes once the reply is out.
                self.ctx.shared.read_only.close(self.session);
                self.push(ready(Code::Ok));
                self.closing = true;
                return Ok(());
            }
        }
        let request = match op_code {
            op::PING | op::CLOSE_SESSION | op::WHO_AM_I => Request::Empty,
            op::RECONFIG | op::CREATE_SESSION | op::DELETE_CONTAINER => {
                self.push(ready(Code::Unimplemented));
                return Ok(());
            }
            _ => match Request::read(op_code, &mut buf) {
                Ok(request) => request,
                Err(tree::jute::JuteError::Invalid(reason)) if reason.starts_with("unknown op") => {
                    self.push(ready(Code::Unimplemented));
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(op_code, %error, "malformed request body");
                    self.push(ready(Code::MarshallingError));
                    return Ok(());
                }
            },
        };
        match op_code {
            op::AUTH => {
                let Request::Auth { scheme, auth, .. } = &request else { unreachable!("decoded as auth") };
                let authenticated = crate::auth::authenticate(scheme, auth, self.ctx.shared.super_digest.as_deref())
                    .and_then(|ids| self.within_auth_bound(ids));
                match authenticated {
                    Ok(ids) => {
                        self.add_identities(ids);
                        // The reply echoes the request's xid (-4 from most clients, an ordinary one from some).
                        let frame = reply::frame(xid, 0, Code::Ok, &Response::Empty);
                        self.push(Slot::Ready { frame, started, update: false });
                    }
                    Err(error) => {
                        tracing::info!(%error, session = format_args!("0x{:x}", self.session), "authentication failed");
                        let frame = reply::frame(xid, 0, Code::AuthFailed, &Response::Empty);
                        return self.last_word(frame, "authentication failed").await;
                    }
                }
            }
            op::SASL => {
                let Request::Sasl { token } = &request else { unreachable!("decoded as sasl") };
                self.sasl(xid, started, token).await?;
            }
            op::CREATE
            | op::CREATE2
            | op::CREATE_CONTAINER
            | op::CREATE_TTL
            | op::DELETE
            | op::SET_DATA
            | op::SET_ACL
            | op::CHECK
            | op::MULTI
            | op::CLOSE_SESSION => {
                // The body exactly as the client encoded it (what the request was decoded from).
                let body = frame.slice(body_at..frame.len() - buf.len());
                let Some(prepared) = crate::convert::into_prep(op_code, request) else {
                    self.push(ready(Code::BadArguments));
                    return Ok(());
                };
                self.push(Slot::Write { cxid: xid, started, update: true });
                tracing::trace!(target: crate::LATENCY, session = self.session, cxid = xid, "request");
                let item = Item::Write {
                    origin: Origin::Local,
                    session: self.session,
                    cxid: xid,
                    auth: self.auth.clone(),
                    request: prepared,
                    share: None,
                };
                self.write_as_sent(item, op_code, body).await?;
            }
            op::SYNC => {
                let Request::Sync { path } = request else { unreachable!("decoded as sync") };
                self.push(Slot::Write { cxid: xid, started, update: false });
                self.sync(xid, path).await?;
            }
            _ => self.push(Slot::Read { xid, op: op_code, request, started }),
        }
        Ok(())
    }

    /// A `sasl` packet: the next step of the connection's exchange ([`crate::sasl::Sasl::answer`]).
    async fn sasl(&mut self, xid: i32, started: Instant, token: &[u8]) -> Result<(), Closed> {
        let shared = self.ctx.shared.clone();
        let mut answer = shared.sasl.answer(&mut self.sasl, token);
        if !answer.ids.is_empty() {
            match self.within_auth_bound(std::mem::take(&mut answer.ids)) {
                Ok(ids) => self.add_identities(ids),
                Err(error) => answer = shared.sasl.failed(&error),
            }
        }
        let frame = reply::sasl(xid, answer.code, answer.token);
        if !answer.close {
            self.push(Slot::Ready { frame, started, update: false });
            return Ok(());
        }
        self.last_word(frame, "SASL authentication failed").await
    }

    /// Authentication is enforced and the session has none of the enforced schemes: ZooKeeper answers
    /// SESSIONCLOSEDREQUIRESASLAUTH (no body) and closes the connection (`enforceAuthentication`).
    async fn refuse_unauthenticated(&mut self, xid: i32) -> Result<(), Closed> {
        let schemes: Vec<&str> = self.auth.iter().map(|id| id.scheme.as_str()).collect();
        tracing::info!(session = format_args!("0x{:x}", self.session), ?schemes, "authentication enforced: closing");
        let frame = reply::frame(xid, 0, Code::SessionClosedRequireSaslAuth, &Response::Empty);
        self.last_word(frame, "the session has not authenticated with an enforced scheme").await
    }

    fn add_identities(&mut self, ids: Vec<Id>) {
        for id in ids {
            if !self.auth.contains(&id) {
                self.auth.push(id);
            }
        }
    }

    /// Sends the replies due before it, then `frame`, and closes the connection (`reason` is logged).
    async fn last_word(&mut self, frame: Bytes, reason: &str) -> Result<(), Closed> {
        self.drive_all().await?;
        self.send(frame).await?;
        self.flush().await?;
        Err(Closed::Refused(reason.into()))
    }

    /// `ids` if the session's identities stay within [`MAX_AUTH_BYTES`] with them: every write it forwards
    /// carries them to the leader.
    fn within_auth_bound(&self, ids: Vec<Id>) -> Result<Vec<Id>, crate::auth::AuthError> {
        // As a forwarded request encodes them: two length-prefixed strings each.
        let size = |ids: &[Id]| ids.iter().map(|id| 8 + id.scheme.len() + id.id.len()).sum::<usize>();
        let total = size(&self.auth) + size(&ids);
        if total > MAX_AUTH_BYTES {
            return Err(crate::auth::AuthError::TooMany { bytes: total, limit: MAX_AUTH_BYTES });
        }
        Ok(ids)
    }

    /// Sends a write to the leader: this server's pipeline, or forwarded.
    async fn write(&self, item: Item) -> Result<(), Closed> {
        if self.ctx.leading() {
            return self.ctx.pipeline.send(item).await.map_err(|_| Closed::Server);
        }
        let Item::Write { session, cxid, auth, request, .. } = item else { return Ok(()) };
        let (op_code, body) = crate::convert::encode(&request);
        let forward = Forward::Request { session, cxid, op: op_code, auth, body };
        self.ctx.handle.forward(replication::runtime::ForwardTo::Leader, forward.encode()).await;
        Ok(())
    }

    /// [`Self::write`] for a client's request, forwarded (on a follower) as the client encoded it: `op_code` and
    /// the body bytes the request was decoded from, which the leader decodes with the same code, so the
    /// follower need not encode the request again.
    async fn write_as_sent(&self, item: Item, op_code: i32, body: Bytes) -> Result<(), Closed> {
        if self.ctx.leading() {
            return self.ctx.pipeline.send(item).await.map_err(|_| Closed::Server);
        }
        let Item::Write { session, cxid, auth, request, .. } = item else { return Ok(()) };
        debug_assert_eq!(crate::convert::decode(op_code, &body).ok().as_ref(), Some(&request), "forwarded as sent");
        let forward = Forward::Request { session, cxid, op: op_code, auth, body };
        self.ctx.handle.forward(replication::runtime::ForwardTo::Leader, forward.encode()).await;
        Ok(())
    }

    /// A sync: ask the leader for a barrier, wait until this server applied up to it, then reply.
    async fn sync(&self, xid: i32, path: String) -> Result<(), Closed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = self.ctx.shared.clone();
        lock(&shared.syncs).insert((self.session, xid), tx);
        let item = Item::Sync { origin: Origin::Local, session: self.session, cxid: xid };
        if self.ctx.leading() {
            self.ctx.pipeline.send(item).await.map_err(|_| Closed::Server)?;
        } else {
            let forward = Forward::Sync { session: self.session, cxid: xid }.encode();
            self.ctx.handle.forward(replication::runtime::ForwardTo::Leader, forward).await;
        }
        let conn = self.handle.clone();
        tokio::spawn(async move {
            let Ok(zxid) = rx.await else { return conn.send(Out::Close) };
            let mut applied = shared.applied.subscribe();
            if applied.wait_for(|&a| a >= zxid).await.is_err() {
                return;
            }
            let frame = reply::frame(xid, zxid, Code::Ok, &Response::Sync { path });
            conn.send(Out::Reply { cxid: xid, frame });
        });
        Ok(())
    }

    /// Takes one message from the connection's queue (a close is only noted: it happens once the replies
    /// ready before it have gone out).
    async fn absorb(&mut self, out: Out) -> Result<(), Closed> {
        match out {
            Out::Event(frame) => self.send(frame).await,
            Out::Reply { cxid, frame } => {
                let slot = self.slots.iter_mut().find(|s| matches!(s, Slot::Write { cxid: c, .. } if *c == cxid));
                match slot {
                    Some(slot) => {
                        let Slot::Write { started, update, .. } = *slot else { unreachable!("found a write slot") };
                        *slot = Slot::Ready { frame, started, update };
                    }
                    None => tracing::debug!(cxid, "a reply for a request this connection is not waiting for"),
                }
                Ok(())
            }
            Out::SessionCreated => Ok(()),
            Out::Close => {
                self.closing = true;
                Ok(())
            }
        }
    }

    /// Sends every reply at the head of the queue that is ready (running reads there), then flushes.
    async fn drive(&mut self) -> Result<(), Closed> {
        self.drive_all().await?;
        self.flush().await?;
        if self.closing {
            return Err(Closed::Server);
        }
        Ok(())
    }

    async fn drive_all(&mut self) -> Result<(), Closed> {
        loop {
            match self.slots.front() {
                Some(Slot::Ready { .. }) => {
                    let Some(Slot::Ready { frame, started, update }) = self.slots.pop_front() else { unreachable!() };
                    self.tickets.pop_front();
                    self.outstanding(-1);
                    self.reply(frame, started, update).await?;
                }
                Some(Slot::Read { .. }) => {
                    let Some(Slot::Read { xid, op, request, started }) = self.slots.pop_front() else { unreachable!() };
                    self.tickets.pop_front();
                    self.outstanding(-1);
                    let frame = self.read(xid, op, &request).await?;
                    self.reply(frame, started, false).await?;
                }
                Some(Slot::Write { .. }) | None => return Ok(()),
            }
        }
    }

    /// Runs a read; sends the events queued before it (and any it fired) first.
    async fn read(&mut self, xid: i32, op_code: i32, request: &Request) -> Result<Bytes, Closed> {
        let shared = self.ctx.shared.clone();
        let frame = match op_code {
            op::PING => reply::frame(PING_XID, shared.tree().last_zxid(), Code::Ok, &Response::Empty),
            op::WHO_AM_I => {
                // ZooKeeper names each identity by its provider's user name: a digest id's user part.
                let user = |id: &Id| match id.scheme.as_str() {
                    "digest" => id.id.split(':').next().unwrap_or_default().to_owned(),
                    _ => id.id.clone(),
                };
                let clients = self.auth.iter().map(|id| (id.scheme.clone(), user(id))).collect();
                reply::frame(xid, shared.tree().last_zxid(), Code::Ok, &Response::WhoAmI { clients })
            }
            _ => {
                let read = reads::run(&shared, self.session, &self.auth, op_code, request);
                if read.watch_refused {
                    tracing::warn!(
                        session = format_args!("0x{:x}", self.session),
                        "a session's watches are over their bound: closing its connection"
                    );
                    return Err(Closed::Refused("the session's watches are over their bound".into()));
                }
                for (event_type, path) in &read.events {
                    self.send(reply::event(*event_type, path)).await?;
                }
                reads::frame(xid, &read)
            }
        };
        while let Some(out) = self.inbox.try_recv() {
            self.absorb(out).await?;
        }
        Ok(frame)
    }

    async fn reply(&mut self, frame: Bytes, started: Instant, update: bool) -> Result<(), Closed> {
        if frame.is_empty() {
            return Ok(());
        }
        self.ctx.shared.stats.latency.record(started);
        self.ctx.shared.stats.instruments.request_latency(started, update);
        let counters = &self.handle.counters;
        counters.latency.record(started);
        if let Some(zxid) = frame.get(4..12) {
            counters.last_zxid.store(i64::from_be_bytes(zxid.try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        let now_ms = self.ctx.shared.stats.started.elapsed().as_millis() as i64;
        counters.last_response_ms.store(now_ms, Ordering::Relaxed);
        if update {
            let cxid = frame.get(..4).map_or(0, |x| i32::from_be_bytes(x.try_into().expect("4 bytes")));
            tracing::trace!(target: crate::LATENCY, session = self.session, cxid, "replied");
        }
        self.send(frame).await
    }

    /// Queues a request's slot: it counts as outstanding until its reply goes out (or the connection ends).
    fn push(&mut self, slot: Slot) {
        self.slots.push_back(slot);
        self.outstanding(1);
    }

    /// Counts requests received and not answered yet, reads and pings included, on this connection and
    /// server-wide (`cons` `queued=`, `srvr` `Outstanding:`, `zk_outstanding_requests`), as ZooKeeper counts
    /// the requests in its processor pipeline.
    fn outstanding(&self, delta: i64) {
        for counter in [&self.handle.counters.outstanding, &self.ctx.shared.stats.outstanding] {
            counter.fetch_add(delta as u64, Ordering::Relaxed); // wrapping add: -1 as u64 subtracts one
        }
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        let deadline = self.write_deadline();
        match tokio::time::timeout(deadline, SinkExt::<Bytes>::flush(&mut self.writer)).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(Closed::Refused(format!("the client read none of its replies for {deadline:?}"))),
        }
    }

    async fn send(&mut self, frame: Bytes) -> Result<(), Closed> {
        self.ctx.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
        self.handle.counters.sent.fetch_add(1, Ordering::Relaxed);
        let deadline = self.write_deadline();
        match tokio::time::timeout(deadline, self.writer.feed(frame)).await {
            Ok(fed) => Ok(fed?),
            Err(_) => Err(Closed::Refused(format!("the client read none of its replies for {deadline:?}"))),
        }
    }

    /// How long a write may wait for the client to read: its session timeout, as ZooKeeper gives a client that
    /// long to show it is alive. A client that stops reading is then closed like one that went silent, and its
    /// session, its requests' share of the budget and its place under `maxClientCnxns` go with it.
    fn write_deadline(&self) -> Duration {
        if self.timeout.is_zero() {
            HANDSHAKE_TIMEOUT
        } else {
            self.timeout
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
