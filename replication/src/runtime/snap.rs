//! The SNAP side of a sync both ways: streaming a snapshot to a follower, receiving and installing one.

use bytes::Bytes;
use wal::Zxid;

use super::server::{Receiving, Server};
use crate::fault::{Fault, LocalFault, PeerFault};
use crate::message::ServerId;
use crate::streams::{SnapshotPoint, SnapshotStream};
use snapshot::transfer::Incoming;

impl Server {
    /// Streams a follower too far behind for a DIFF a snapshot of committed history, then the txns after it
    /// (see [`SnapshotPoint`] for where the snapshot ends).
    pub(super) fn stream_snapshot(&self, to: ServerId, until: Zxid, commit_up_to: Zxid, serving: bool) {
        let Some(snap_dir) = self.snapshots.clone() else {
            tracing::warn!(follower = to.0, "the follower needs a snapshot, and this server has no snapshot directory");
            self.transport.disconnect(to);
            return;
        };
        let point = if serving {
            SnapshotPoint::Delivered(self.delivered.min(self.wal.end()))
        } else {
            SnapshotPoint::NewestSnapshot
        };
        tracing::info!(follower = to.0, ?point, %until, "sending a snapshot");
        let pending = self.pending_until(until);
        let stream =
            SnapshotStream::new(self.wal.clone(), snap_dir, point, pending, until, commit_up_to).on(self.fs.clone());
        let _ = self.transport.send_stream(to, Box::new(stream));
    }

    /// Stores a chunk of the snapshot `leader` sends, on a blocking thread. The first one (offset 0) starts a
    /// new file, whatever an earlier sync that broke off left behind.
    pub(super) async fn receive_chunk(&mut self, offset: u64, data: Bytes, leader: ServerId) -> Result<(), Fault> {
        let dir = self.snapshots.clone().ok_or(LocalFault::NoSnapshotDirectory)?;
        let receiving = self.incoming.take().filter(|_| offset != 0);
        // The protocol checked the offsets already; a second check keeps a bad chunk off the disk regardless.
        let expected = receiving.as_ref().map_or(0, |r| r.next);
        if offset != expected {
            let fault = PeerFault::ChunkOutOfOrder { got: offset, expected };
            return Err(Fault::Peer { peer: leader, fault });
        }
        let fs = self.fs.clone();
        let store = move || {
            let mut file = match receiving {
                Some(receiving) => receiving.file,
                None => Incoming::create_with(fs, &dir)?,
            };
            file.write(offset, &data)?;
            let next = offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            Ok(Receiving { file, next })
        };
        let stored = self.blocking.run("store a snapshot chunk", store).await?;
        self.incoming = Some(stored.map_err(|e| Fault::snapshot("store a chunk", e, leader))?);
        Ok(())
    }

    /// Installs the snapshot received from `leader` as the history up to `zxid`, in the order that never
    /// leaves less history on disk than before (see [`snapshot::transfer`]): stage it (durable, verified),
    /// restart the WAL after it (the commit point), install it. Then the node rebuilds its tree from it.
    pub(super) async fn install_snapshot(&mut self, zxid: Zxid, leader: ServerId) -> Result<(), Fault> {
        let dir = self.snapshots.clone().ok_or(LocalFault::NoSnapshotDirectory)?;
        let receiving = self.incoming.take().ok_or(Fault::Peer { peer: leader, fault: PeerFault::ChunkWithoutSnap })?;
        // A snapshot that does not verify is the leader's fault; nothing has changed on disk but a staging file.
        self.blocking
            .run("stage the leader's snapshot", move || receiving.file.stage(zxid))
            .await?
            .map_err(|e| Fault::snapshot("stage", e, leader))?;
        self.flush_appends().await.map_err(Fault::Local)?;
        let restart = self.wal.restart_after(zxid).map_err(|e| Fault::wal("restart the log after", zxid, e, None))?;
        restart.await.map_err(|e| Fault::wal("restart the log after", zxid, e, None))?;
        // Appends from before (all done: the restart ran behind them) no longer matter.
        self.durability.clear();
        self.log.zxids.clear();
        self.log.pending.clear();
        self.undelivered.clear();
        // Past the commit point: whatever fails now is this server's disk.
        let fs = self.fs.clone();
        let install = move || snapshot::transfer::install_with(&*fs, &dir, zxid);
        let installed = self.blocking.run("install the leader's snapshot", install).await?;
        installed.map_err(|source| LocalFault::Snapshot { op: "install", source })?;
        self.delivered = zxid;
        // Nobody consumes the stream in a bare runtime (tests): nothing to rebuild then.
        let _ = self.rebuild(zxid).await;
        self.applied_tx.send_replace(zxid);
        Ok(())
    }
}
