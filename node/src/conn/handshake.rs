//! The handshake: admitting the client, opening or reopening its session, and (un)registering the connection.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use proto::connect::{ConnectRequest, ConnectResponse};
use proto::records::Response;
use tree::code::Code;

use super::{Closed, Conn, HANDSHAKE_TIMEOUT};
use crate::forward::Forward;
use crate::leader::{Item, Origin};
use crate::read_only::Admission;
use crate::reply;
use crate::session;
use crate::shared::Out;

/// What a handshake's item for the leader's pipeline (a createSession, an attach) weighs in the server's budget:
/// about what the item takes in memory while it waits in the queue.
const HANDSHAKE_WEIGHT: usize = 512;

impl Conn {
    pub(super) async fn handshake(&mut self) -> Result<(), Closed> {
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
            let ticket = self.handshake_ticket()?;
            self.session = shared.session_ids.next();
            self.register();
            let item = Item::Write {
                origin: Origin::Local,
                session: self.session,
                cxid: 0,
                auth: std::sync::Arc::from([]),
                request: tree::prep::Request::CreateSession { timeout: timeout_ms },
            };
            self.write(item, ticket).await?;
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

    /// The budget share of a handshake's item for the leader's pipeline, a request like any other, so that
    /// clients that connect and go, again and again, while the leader waits cannot queue items beyond the budget;
    /// refused (the client reconnects later) while the server's budget is past its hard limit.
    fn handshake_ticket(&self) -> Result<std::sync::Arc<crate::throttle::Ticket>, Closed> {
        let throttle = &self.ctx.shared.throttle;
        if !throttle.admits(0) {
            return Err(Closed::Refused("the server holds more requests than its budget".into()));
        }
        Ok(std::sync::Arc::new(throttle.take(HANDSHAKE_WEIGHT)))
    }

    /// Tells the leader the session re-attached here, so that its connection on another server closes.
    async fn attach(&self) -> Result<(), Closed> {
        if self.ctx.leading() {
            let ticket = self.handshake_ticket()?;
            let item = Item::Attach { origin: Origin::Local, session: self.session };
            return self.ctx.pipeline.local(item, ticket).map_err(|_| Closed::Server);
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

    pub(super) fn unregister(&self) {
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
}
