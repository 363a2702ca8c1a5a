//! Replies in request order: the slots at the head of the queue, reads run there, and frames written to the client.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use proto::records::{Request, Response};
use tree::acl::Id;
use tree::code::{op, Code};

use super::{Closed, Conn, Slot, HANDSHAKE_TIMEOUT, PING_XID};
use crate::reads;
use crate::reply;
use crate::shared::Out;

impl Conn {
    /// Takes one message from the connection's queue (a close is only noted: it happens once the replies
    /// ready before it have gone out).
    pub(super) async fn absorb(&mut self, out: Out) -> Result<(), Closed> {
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
    pub(super) async fn drive(&mut self) -> Result<(), Closed> {
        self.drive_all().await?;
        self.flush().await?;
        if self.closing {
            return Err(Closed::Server);
        }
        Ok(())
    }

    pub(super) async fn drive_all(&mut self) -> Result<(), Closed> {
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
    pub(super) fn push(&mut self, slot: Slot) {
        self.slots.push_back(slot);
        self.outstanding(1);
    }

    /// Counts requests received and not answered yet, reads and pings included, on this connection and
    /// server-wide (`cons` `queued=`, `srvr` `Outstanding:`, `zk_outstanding_requests`), as ZooKeeper counts
    /// the requests in its processor pipeline.
    pub(super) fn outstanding(&self, delta: i64) {
        for counter in [&self.handle.counters.outstanding, &self.ctx.shared.stats.outstanding] {
            counter.fetch_add(delta as u64, Ordering::Relaxed); // wrapping add: -1 as u64 subtracts one
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        let deadline = self.write_deadline();
        match tokio::time::timeout(deadline, SinkExt::<Bytes>::flush(&mut self.writer)).await {
            Ok(flushed) => Ok(flushed?),
            Err(_) => Err(Closed::Refused(format!("the client read none of its replies for {deadline:?}"))),
        }
    }

    pub(super) async fn send(&mut self, frame: Bytes) -> Result<(), Closed> {
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
