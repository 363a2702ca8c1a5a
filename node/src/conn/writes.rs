//! Writes and syncs: handed to this server's leader pipeline or forwarded to the leader.

use std::sync::Arc;

use bytes::Bytes;
use proto::records::Response;
use tree::code::Code;

use super::{Closed, Conn};
use crate::forward::Forward;
use crate::leader::{Item, Origin};
use crate::reply;
use crate::shared::{lock, Out};
use crate::throttle::Ticket;

impl Conn {
    /// Sends a write to the leader: this server's pipeline (where `ticket` holds its share of the server's
    /// budget until the pipeline has taken it), or forwarded.
    pub(super) async fn write(&self, item: Item, ticket: Arc<Ticket>) -> Result<(), Closed> {
        if self.ctx.leading() {
            return self.ctx.pipeline.local(item, ticket).map_err(|_| Closed::Server);
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
    pub(super) async fn write_as_sent(&self, item: Item, op_code: i32, body: Bytes) -> Result<(), Closed> {
        if self.ctx.leading() {
            return self.ctx.pipeline.local(item, self.ticket()).map_err(|_| Closed::Server);
        }
        let Item::Write { session, cxid, auth, request, .. } = item else { return Ok(()) };
        debug_assert_eq!(crate::convert::decode(op_code, &body).ok().as_ref(), Some(&request), "forwarded as sent");
        let forward = Forward::Request { session, cxid, op: op_code, auth, body };
        self.ctx.handle.forward(replication::runtime::ForwardTo::Leader, forward.encode()).await;
        Ok(())
    }

    /// The budget share of the request being handled (`take` queued it before handling the request).
    fn ticket(&self) -> Arc<Ticket> {
        self.tickets.back().cloned().expect("a request in hand holds a ticket")
    }

    /// A sync: ask the leader for a barrier, wait until this server applied up to it, then reply.
    pub(super) async fn sync(&self, xid: i32, path: String) -> Result<(), Closed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = self.ctx.shared.clone();
        lock(&shared.syncs).insert((self.session, xid), tx);
        let item = Item::Sync { origin: Origin::Local, session: self.session, cxid: xid };
        if self.ctx.leading() {
            self.ctx.pipeline.local(item, self.ticket()).map_err(|_| Closed::Server)?;
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
}
