//! Request dispatch: each request frame read, authenticated and queued as a slot (or answered at once).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use proto::records::{Request, RequestHeader, Response};
use tree::acl::Id;
use tree::code::{op, Code};

use super::{Closed, Conn, Slot};
use crate::leader::{Item, Origin};
use crate::limits::MAX_AUTH_BYTES;
use crate::reply;

impl Conn {
    /// Takes one request frame into the server's budget and handles it.
    pub(super) async fn take(&mut self, frame: Bytes) -> Result<(), Closed> {
        // Before the request is handled: a write or a sync shares it with its item in the leader's pipeline.
        self.tickets.push_back(Arc::new(self.ctx.shared.throttle.take(frame.len())));
        self.request(frame).await?;
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
        let mut auth = self.auth.to_vec();
        for id in ids {
            if !auth.contains(&id) {
                auth.push(id);
            }
        }
        self.auth = auth.into();
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
}
