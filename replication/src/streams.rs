//! What a leader streams to a syncing follower, made lazily as the connection drains (see
//! [`crate::transport::MessageStream`]): the txns it lacks ([`TxnStream`]), or a snapshot of the committed
//! history and the txns after it ([`SnapshotStream`]).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use snapshot::transfer::{self, Prepared};
use wal::fs::{Fs, StdFs};
use wal::{Wal, WalIter, Zxid};

use crate::message::Message;

/// Bytes per snapshot chunk (well below the transport's largest frame).
pub const SNAPSHOT_CHUNK: usize = 512 << 10;

/// Every txn after `after` up to `until` as a PROPOSAL, each followed by its COMMIT if it is at or below
/// `commit_up_to`: from the WAL's durable records, then from `pending`, the txns appended but not durable when
/// the stream was made.
pub struct TxnStream {
    logged: Option<WalIter>,
    pending: std::vec::IntoIter<(Zxid, Bytes)>,
    sent: Zxid,
    until: Zxid,
    commit_up_to: Zxid,
    commit_next: Option<Zxid>,
}

impl TxnStream {
    /// `pending` must be in zxid order.
    pub fn new(wal: &Wal, pending: Vec<(Zxid, Bytes)>, after: Zxid, until: Zxid, commit_up_to: Zxid) -> TxnStream {
        debug_assert!(pending.windows(2).all(|w| w[0].0 < w[1].0));
        TxnStream {
            logged: Some(wal.iter_from(Zxid(after.0.saturating_add(1)))),
            pending: pending.into_iter(),
            sent: after,
            until,
            commit_up_to,
            commit_next: None,
        }
    }
}

impl Iterator for TxnStream {
    type Item = Result<Message, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(zxid) = self.commit_next.take() {
            return Some(Ok(Message::Commit { zxid }));
        }
        let (zxid, txn) = loop {
            if let Some(logged) = &mut self.logged {
                match logged.next() {
                    Some(Ok(record)) if record.zxid <= self.until => break (record.zxid, record.payload),
                    Some(Err(error)) => {
                        self.logged = None;
                        return Some(Err(format!("read the log after {}: {error}", self.sent)));
                    }
                    _ => self.logged = None,
                }
                continue;
            }
            match self.pending.next() {
                Some((zxid, txn)) if zxid > self.sent && zxid <= self.until => break (zxid, txn),
                Some(_) => continue,
                None => return None,
            }
        };
        debug_assert!(zxid > self.sent, "txns stream in zxid order");
        self.sent = zxid;
        if zxid <= self.commit_up_to {
            self.commit_next = Some(zxid);
        }
        Some(Ok(Message::Proposal { zxid, txn }))
    }
}

/// Where the snapshot a leader ships ends: a zxid it knows is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPoint {
    /// A leader that serves: everything it delivered is committed (this zxid: delivered and durable).
    Delivered(Zxid),
    /// A leader still establishing its epoch: its own history past what it ever snapshotted may hold txns an
    /// older leader never committed (it replayed its whole log at start-up), which a follower must stay able to
    /// cut. So the snapshot ends where its newest snapshot on disk ends, and the rest goes as txns.
    NewestSnapshot,
}

enum Stage {
    /// Rebuild a consistent snapshot at the commit point (on the first pull, on a blocking thread).
    Prepare {
        snap_dir: PathBuf,
        point: SnapshotPoint,
        until: Zxid,
        commit_up_to: Zxid,
        pending: Vec<(Zxid, Bytes)>,
    },
    /// Send its chunks.
    Chunks {
        prepared: Prepared,
        offset: u64,
        then: TxnStream,
    },
    /// Send the txns after it.
    Txns(TxnStream),
    Failed,
}

/// SNAP with the snapshot's zxid and size, its chunks, then the txns after it (see [`TxnStream`]).
pub struct SnapshotStream {
    wal: Arc<Wal>,
    /// The filesystem of the snapshots (the real one unless [`SnapshotStream::on`] says otherwise).
    fs: Fs,
    stage: Stage,
}

impl SnapshotStream {
    /// A stream of the history up to `point` (which the leader's log holds durably) as a snapshot, then the
    /// txns after it up to `until`.
    pub fn new(
        wal: Arc<Wal>,
        snap_dir: PathBuf,
        point: SnapshotPoint,
        pending: Vec<(Zxid, Bytes)>,
        until: Zxid,
        commit_up_to: Zxid,
    ) -> SnapshotStream {
        let stage = Stage::Prepare { snap_dir, point, until, commit_up_to, pending };
        SnapshotStream { wal, fs: Arc::new(StdFs), stage }
    }

    /// The same stream, with the snapshots on the filesystem `fs`.
    pub fn on(self, fs: Fs) -> SnapshotStream {
        SnapshotStream { fs, ..self }
    }
}

impl Iterator for SnapshotStream {
    type Item = Result<Message, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::Prepare { snap_dir, point, until, commit_up_to, pending } => {
                let committed = match point {
                    SnapshotPoint::Delivered(zxid) => zxid,
                    SnapshotPoint::NewestSnapshot => match transfer::newest_snapshot_end_with(&*self.fs, &snap_dir) {
                        Ok(Some(end)) => end.min(self.wal.end()),
                        Ok(None) => return Some(Err("no snapshot to ship".to_owned())),
                        Err(error) => return Some(Err(format!("find the newest snapshot: {error}"))),
                    },
                };
                match transfer::prepare_with(&*self.fs, &snap_dir, &self.wal, committed) {
                    Ok(prepared) => {
                        let message = Message::Snap { zxid: prepared.zxid, total_bytes: prepared.len };
                        let then = TxnStream::new(&self.wal, pending, prepared.zxid, until, commit_up_to);
                        self.stage = Stage::Chunks { prepared, offset: 0, then };
                        Some(Ok(message))
                    }
                    Err(error) => Some(Err(format!("prepare a snapshot at {committed}: {error}"))),
                }
            }
            Stage::Chunks { prepared, offset, then } => {
                if offset >= prepared.len {
                    self.stage = Stage::Txns(then);
                    return self.next();
                }
                match transfer::read_chunk(&*prepared.file, offset, SNAPSHOT_CHUNK) {
                    Ok(data) if !data.is_empty() => {
                        let next = offset + data.len() as u64;
                        let message = Message::SnapChunk { offset, data: Bytes::from(data) };
                        self.stage = Stage::Chunks { prepared, offset: next, then };
                        Some(Ok(message))
                    }
                    Ok(_) => Some(Err(format!("the snapshot ended at {offset} of {} bytes", prepared.len))),
                    Err(error) => Some(Err(format!("read the snapshot at {offset}: {error}"))),
                }
            }
            Stage::Txns(mut txns) => {
                let next = txns.next();
                self.stage = Stage::Txns(txns);
                next
            }
            Stage::Failed => None,
        }
    }
}
