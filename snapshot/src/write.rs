//! Writing a fuzzy snapshot while txns go on being applied.
//!
//! The tree sits behind an `RwLock` ([`SharedTree`], beside what its applies and snapshot writers watch of each
//! other). The writer holds the read lock only to copy one chunk of nodes (in path order, resuming after the last
//! path it wrote: their paths and small data into one buffer, larger data shared), for a couple of microseconds;
//! it encodes and writes to disk without the lock. So an apply waits at most for one short chunk, never for
//! encoding or the disk.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tree::acl::{write_acls, Acl, AclId, OPEN_ACL_ID};
use tree::jute::JuteWrite;
use tree::stat::StatPersisted;
use tree::tree::{DataTree, Node};

use crate::error::SnapshotError;
use crate::format::{self, tag, Trailer, END_MAGIC};
use wal::failpoint;
use wal::fs::{FileSystem, StdFs, WalFile, DIRECT_ALIGN};

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The last zxid applied when the snapshot began (its name).
    pub start_zxid: i64,
    /// The last zxid applied when the copy finished.
    pub end_zxid: i64,
    /// The tree digest at `end_zxid`.
    pub digest: u64,
    /// Nodes written.
    pub nodes: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Nodes copied per read-lock hold.
pub const DEFAULT_CHUNK: usize = 1024;

/// The bytes [`CrcWriter`] gathers before it writes them out: few large writes, each a whole number of
/// [`DIRECT_ALIGN`] blocks from an aligned buffer, which a file from [`FileSystem::create_direct`] takes without
/// a copy in the page cache (a buffered write of a 100 MB snapshot costs 20 to 40 times the CPU here).
const WRITE_BUFFER: usize = 1 << 20;

/// A sequential writer over a [`WalFile`] that buffers and checksums what goes through it.
struct CrcWriter {
    file: Box<dyn WalFile>,
    /// `WRITE_BUFFER` bytes from `start` are the buffer, aligned to `DIRECT_ALIGN`; `filled` of them hold data.
    storage: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes written to the file so far (where the buffer goes next).
    flushed: u64,
    crc: u32,
    bytes: u64,
    path: PathBuf,
}

impl CrcWriter {
    fn new(file: Box<dyn WalFile>, path: PathBuf) -> CrcWriter {
        let storage = vec![0; WRITE_BUFFER + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        assert!(start < DIRECT_ALIGN, "a byte buffer can always be aligned within one block");
        CrcWriter { file, storage, start, filled: 0, flushed: 0, crc: 0, bytes: 0, path }
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), SnapshotError> {
        #[cfg(feature = "failpoints")]
        self.injected(data)?;
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let n = data.len().min(WRITE_BUFFER - self.filled);
            let at = self.start + self.filled;
            self.storage[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == WRITE_BUFFER {
                self.write_out(WRITE_BUFFER)?;
            }
        }
        Ok(())
    }

    /// The `snapshot::write` failpoint, per write call (as it fired over a `BufWriter`), so that a test can fail
    /// the n-th; a short write writes half of `buf` where it was to go.
    #[cfg(feature = "failpoints")]
    fn injected(&self, buf: &[u8]) -> Result<(), SnapshotError> {
        let (file, at) = (&self.file, self.flushed + self.filled as u64);
        let injected = || -> std::io::Result<()> {
            failpoint!("snapshot::write", short: file.write_at(&buf[..buf.len() / 2], at));
            Ok(())
        };
        injected().map_err(|e| SnapshotError::io("write", &self.path, e))
    }

    /// Writes out the first `len` bytes of the buffer (a whole number of blocks) and empties it.
    fn write_out(&mut self, len: usize) -> Result<(), SnapshotError> {
        debug_assert!(len.is_multiple_of(DIRECT_ALIGN) && len >= self.filled);
        let block = &self.storage[self.start..self.start + len];
        self.file.write_at(block, self.flushed).map_err(|e| SnapshotError::io("write", &self.path, e))?;
        self.flushed += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes out what is buffered, its last block padded with zeros, then cuts the file back to the bytes
    /// written.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        if self.filled > 0 {
            let padded = self.filled.next_multiple_of(DIRECT_ALIGN);
            self.storage[self.start + self.filled..self.start + padded].fill(0);
            self.write_out(padded)?;
        }
        self.file.set_len(self.bytes).map_err(|e| SnapshotError::io("truncate", &self.path, e))
    }
}

/// Writes a fuzzy snapshot of `tree` into `dir`, copying `chunk` nodes per read-lock hold. Durable (file and
/// directory entry) when it returns.
pub fn write_fuzzy(dir: &Path, tree: &SharedTree, chunk: usize) -> Result<SnapshotInfo, SnapshotError> {
    write_fuzzy_with(&StdFs, dir, tree, chunk)
}

/// Like [`write_fuzzy`], on the filesystem `fs` (a simulated one in tests: see [`wal::fs`]).
pub fn write_fuzzy_with(
    fs: &dyn FileSystem,
    dir: &Path,
    tree: &SharedTree,
    chunk: usize,
) -> Result<SnapshotInfo, SnapshotError> {
    let started = Instant::now();
    let (start_zxid, sessions) = {
        let t = read(tree);
        (t.last_zxid(), t.sessions().clone())
    };
    let path = dir.join(format::file_name(start_zxid));
    let tmp = path.with_extension(format!("{:016x}.tmp", start_zxid));
    let create = || {
        failpoint!("snapshot::create");
        fs.create_direct(&tmp)
    };
    let file = create().map_err(|e| SnapshotError::io("create", &tmp, e))?;
    let mut unfinished = Unfinished { fs, tmp: Some(tmp.clone()) };
    let mut out = CrcWriter::new(file, tmp.clone());
    out.write(&format::encode_header(start_zxid))?;
    let mut buf = Vec::with_capacity(1 << 20);
    for (&session, &timeout) in &sessions {
        buf.push(tag::SESSION);
        buf.write_long(session);
        buf.write_int(timeout);
    }
    out.write(&buf)?;
    let (mut nodes, mut cursor, mut acls_written) = (0u64, None::<String>, HashSet::<AclId>::new());
    let mut copied = Chunk::with_capacity(chunk);
    loop {
        // The last chunk's copies are freed before the lock is taken, not under it.
        copied.clear();
        let held = read_for_copy(tree);
        let copying = Copying::start(&tree.copying);
        copy_chunk(&held, &tree.copied, cursor.as_deref(), chunk, &mut acls_written, &mut copied);
        drop(copying);
        drop(held);
        let Some(last) = copied.nodes.last() else { break };
        cursor = Some(copied.path_of(last).to_owned());
        nodes += copied.nodes.len() as u64;
        buf.clear();
        encode(&copied, &mut buf);
        out.write(&buf)?;
    }
    let (end_zxid, digest, unlisted_close) = {
        let t = read(tree);
        (t.last_zxid(), t.digest(), t.last_unlisted_close())
    };
    if unlisted_close > start_zxid {
        return Err(SnapshotError::Unreplayable { start_zxid, zxid: unlisted_close });
    }
    let trailer = Trailer { end_zxid, digest, nodes, sessions: sessions.len() as u64 };
    out.write(&[tag::END])?;
    out.write(&trailer.encode_fields())?;
    let crc = out.crc;
    out.write(&crc.to_be_bytes())?;
    out.write(&END_MAGIC)?;
    out.finish()?;
    let (bytes, file) = (out.bytes, out.file);
    // The data must be durable before the name is: a rename that reaches the disk before the data would leave a
    // snapshot name over a torn file after a power cut.
    let sync = || {
        failpoint!("snapshot::fsync");
        file.sync_all()
    };
    sync().map_err(|e| SnapshotError::io("fsync", &tmp, e))?;
    let rename = || {
        failpoint!("snapshot::rename");
        fs.rename(&tmp, &path)
    };
    rename().map_err(|e| SnapshotError::io("rename", &tmp, e))?;
    unfinished.tmp = None;
    // The rename is durable only once the directory is: until then a power cut may undo it, and a caller told
    // the snapshot is written (retention then purges the WAL before it) would lose the txns it holds.
    sync_dir(fs, dir)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(path = %path.display(), start_zxid = format!("{start_zxid:#x}"), end_zxid = format!("{end_zxid:#x}"), nodes, mb = bytes as f64 / 1e6, secs, "snapshot written");
    Ok(SnapshotInfo { path, start_zxid, end_zxid, digest, nodes, bytes })
}

/// The temporary file of a snapshot not renamed yet, deleted on drop: a failed write gives a full disk its space
/// back at once (recovery would delete it too, see [`crate::dir::remove_partial`]).
struct Unfinished<'a> {
    fs: &'a dyn FileSystem,
    tmp: Option<PathBuf>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = self.fs.remove(&tmp);
        }
    }
}

/// The nodes a chunk copied out of the tree, encoded after the lock is released. Paths and small data are
/// copied into one reused buffer, not cloned: a `String` per path is an allocation, and a clone of a node's `Bytes`
/// turns it into the shared kind (an allocation of 32 B that the node then keeps) and then touches its counter,
/// in memory of its own, on every snapshot.
struct Chunk {
    nodes: Vec<CopiedNode>,
    /// Every copied path, and the data of at most [`COPIED_DATA_MAX`] bytes, end to end.
    bytes: Vec<u8>,
}

/// A node copied out of the tree.
struct CopiedNode {
    /// Its path's bytes in [`Chunk::bytes`].
    path: Range<usize>,
    data: CopiedData,
    acl: AclId,
    /// The ACL list, the first time a node with this ACL id is copied.
    acl_list: Option<Arc<[Acl]>>,
    stat: StatPersisted,
}

/// A copied node's data.
enum CopiedData {
    Null,
    /// Its bytes in [`Chunk::bytes`].
    Copied(Range<usize>),
    /// Larger data, shared with the tree rather than copied under the lock.
    Shared(Bytes),
}

/// Data up to this size is copied with the chunk; larger data is shared. A copy of a small value costs less than
/// the clone it replaces, and more than that only for values few trees hold many of.
const COPIED_DATA_MAX: usize = 1024;

impl Chunk {
    fn with_capacity(nodes: usize) -> Chunk {
        Chunk { nodes: Vec::with_capacity(nodes), bytes: Vec::with_capacity(64 << 10) }
    }

    fn clear(&mut self) {
        self.nodes.clear();
        self.bytes.clear();
    }

    fn push(&mut self, path: &str, node: &Node, acl_list: Option<Arc<[Acl]>>) {
        let path = self.copy(path.as_bytes());
        let data = match &node.data {
            None => CopiedData::Null,
            Some(data) if data.len() <= COPIED_DATA_MAX => CopiedData::Copied(self.copy(data)),
            Some(data) => CopiedData::Shared(data.clone()),
        };
        self.nodes.push(CopiedNode { path, data, acl: node.acl, acl_list, stat: node.stat });
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    fn path_of(&self, node: &CopiedNode) -> &str {
        std::str::from_utf8(&self.bytes[node.path.clone()]).expect("copied from a String")
    }

    fn data_of<'a>(&'a self, node: &'a CopiedNode) -> Option<&'a [u8]> {
        match &node.data {
            CopiedData::Null => None,
            CopiedData::Copied(range) => Some(&self.bytes[range.clone()]),
            CopiedData::Shared(data) => Some(data),
        }
    }
}

/// The longest a chunk holds the read lock: under one apply's worth, so that an apply waiting behind a chunk
/// waits no longer than behind another apply. (3 us until chunks copied paths and data instead of cloning them:
/// that copy is quicker, so the writer held the lock for more of its shorter run, and more applies met it,
/// BENCHMARKS.md.)
const MAX_HOLD: Duration = Duration::from_micros(2);

/// How many nodes ahead of the one it copies [`copy_chunk`] asks for: each node is three or four cache misses
/// (its map entry's path, its box, its data), and asked for early they overlap instead of following each other.
const LOOKAHEAD: usize = 8;

/// Copies up to `chunk` nodes after `cursor` (fewer if that takes longer than [`MAX_HOLD`]) into `out`.
fn copy_chunk(
    tree: &DataTree,
    counted: &AtomicU64,
    cursor: Option<&str>,
    chunk: usize,
    acls: &mut HashSet<AclId>,
    out: &mut Chunk,
) {
    out.clear();
    let started = Instant::now();
    let mut entries = tree.nodes_after(cursor).take(chunk).inspect(|&(path, node)| {
        prefetch(path.as_ptr());
        prefetch(std::ptr::from_ref(node).cast());
    });
    // Entries `i` to `i + LOOKAHEAD - 1`, entry `j` at `j % LOOKAHEAD`, their paths and boxes asked for as they
    // enter; a node's data is asked for halfway, once its box (which points to the data) has had time to arrive.
    let mut ahead: [Option<(&String, &Node)>; LOOKAHEAD] = [None; LOOKAHEAD];
    ahead.fill_with(|| entries.next());
    for i in 0.. {
        let Some((path, node)) = ahead[i % LOOKAHEAD].take() else { break };
        if i % 4 == 3 && started.elapsed() > MAX_HOLD {
            break;
        }
        ahead[i % LOOKAHEAD] = entries.next();
        if let Some((_, halfway)) = ahead[(i + LOOKAHEAD / 2) % LOOKAHEAD] {
            prefetch(halfway.bytes().as_ptr());
        }
        counted.fetch_add(1, Ordering::Relaxed);
        let acl_list = (node.acl != OPEN_ACL_ID && acls.insert(node.acl)).then(|| tree.acl_of(node));
        out.push(path, node, acl_list);
    }
}

/// Asks the CPU to bring the cache line at `at` in, without waiting for it.
#[inline(always)]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads nothing the program sees, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Encodes copied nodes, each preceded by its ACL list the first time.
fn encode(chunk: &Chunk, buf: &mut Vec<u8>) {
    for node in &chunk.nodes {
        if let Some(list) = &node.acl_list {
            buf.push(tag::ACL);
            buf.write_long(node.acl);
            write_acls(buf, list);
        }
        buf.push(tag::NODE);
        // A ustring: its UTF-8 bytes, as `write_string` writes them.
        buf.write_buffer(&chunk.bytes[node.path.clone()]);
        buf.write_nullable_buffer(chunk.data_of(node));
        buf.write_long(node.acl);
        node.stat.write(buf);
    }
}

/// Takes the write lock to apply a txn, spinning while a snapshot chunk holds the read lock (a few
/// microseconds at most) rather than sleeping at once: waking a sleeping thread costs tens of microseconds on
/// a VM, far longer than the wait itself. It sleeps once a snapshot writer holding it stops copying (it was
/// preempted: spinning would keep it from the CPU, often the very CPU this thread's wake-up took from it), and
/// after 50 us.
pub fn lock_for_apply(tree: &SharedTree) -> std::sync::RwLockWriteGuard<'_, DataTree> {
    // Uncontended (nearly always): no clock read.
    if let Ok(guard) = tree.try_write() {
        return guard;
    }
    tree.applies_waiting.fetch_add(1, Ordering::AcqRel);
    let started = Instant::now();
    let (mut copied, mut progressed) = (tree.copied.load(Ordering::Relaxed), started);
    let guard = loop {
        match tree.try_write() {
            Ok(guard) => break guard,
            Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let (now, progress) = (Instant::now(), tree.copied.load(Ordering::Relaxed));
                if progress != copied {
                    (copied, progressed) = (progress, now);
                }
                // Another holder (a client's read) is not watched: spun for as before.
                let stalled = now - progressed >= STALLED && tree.copying.load(Ordering::Acquire) > 0;
                if now - started < SPIN && !stalled {
                    std::hint::spin_loop();
                    continue;
                }
                break tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    };
    tree.applies_waiting.fetch_sub(1, Ordering::AcqRel);
    guard
}

/// How long an apply spins for the write lock, and a snapshot chunk waits for a waiting apply, before sleeping
/// or going ahead.
const SPIN: Duration = Duration::from_micros(50);

/// A tree shared by its applier, its readers and its snapshot writers: the lock, and what an apply waiting for
/// it watches of the snapshot writers copying from it, and they of it. Per tree, so that one tree's snapshot
/// never steers the applies of another in the same process (the servers of an in-process test ensemble). Derefs
/// to the lock.
#[derive(Debug, Default)]
pub struct SharedTree {
    lock: RwLock<DataTree>,
    /// Nodes copied by snapshot writers: [`lock_for_apply`] tells a holder that copies from one that was
    /// preempted by it.
    copied: AtomicU64,
    /// Snapshot writers holding the read lock to copy a chunk: only such a holder's progress is watched.
    copying: AtomicUsize,
    /// Applies spinning in [`lock_for_apply`]. The snapshot writer lets them go first: between two chunks its
    /// read lock is free for only the microsecond or two it takes to encode, and an apply polling with
    /// `try_write` could miss that gap again and again (p99 of applies during a snapshot 65 us against 7 us
    /// without, once the writer no longer waited on the page cache).
    applies_waiting: AtomicUsize,
}

impl SharedTree {
    /// `tree`, to be shared.
    pub fn new(tree: DataTree) -> SharedTree {
        SharedTree { lock: RwLock::new(tree), ..SharedTree::default() }
    }
}

impl std::ops::Deref for SharedTree {
    type Target = RwLock<DataTree>;

    fn deref(&self) -> &RwLock<DataTree> {
        &self.lock
    }
}

/// One chunk's copy, counted in [`SharedTree::copying`] for as long as it lives, however it ends (a panic
/// included): a count left up would make every apply stop spinning behind a client's read.
struct Copying<'a>(&'a AtomicUsize);

impl Copying<'_> {
    fn start(copying: &AtomicUsize) -> Copying<'_> {
        copying.fetch_add(1, Ordering::AcqRel);
        Copying(copying)
    }
}

impl Drop for Copying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a chunk's copy may go without a node before an apply waiting for it stops spinning: a node takes a
/// fraction of a microsecond. Without this, a holder preempted by the apply's own thread kept the lock for the
/// whole 50 us spin (p99 of applies during a 1M-node snapshot 63-66 us, against 4-5 us without a snapshot).
const STALLED: Duration = Duration::from_micros(2);

/// Waits (spinning, up to [`SPIN`]) while an apply waits for the tree's write lock.
fn let_applies_go_first(tree: &SharedTree) {
    if tree.applies_waiting.load(Ordering::Acquire) == 0 {
        return;
    }
    let started = Instant::now();
    while tree.applies_waiting.load(Ordering::Acquire) > 0 && started.elapsed() < SPIN {
        std::hint::spin_loop();
    }
}

/// Takes the read lock for a chunk's copy once no apply waits for the write lock, spinning (up to [`SPIN`]) while
/// an apply holds it rather than sleeping on it: a sleeping reader must be woken by the apply's unlock, and on a VM
/// that wake (a futex wake, an interrupt to a halted vCPU) cost the applying thread 12-14 us, three times the apply
/// itself (a fifth of the applies during a 1M-node snapshot paid it).
fn read_for_copy(tree: &SharedTree) -> std::sync::RwLockReadGuard<'_, DataTree> {
    let_applies_go_first(tree);
    let started = Instant::now();
    loop {
        match tree.try_read() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < SPIN => std::hint::spin_loop(),
            Err(std::sync::TryLockError::WouldBlock) => return read(tree),
        }
    }
}

fn read(tree: &RwLock<DataTree>) -> std::sync::RwLockReadGuard<'_, DataTree> {
    tree.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), SnapshotError> {
    let sync = || {
        failpoint!("snapshot::sync_dir");
        fs.sync_dir(dir)
    };
    sync().map_err(|e| SnapshotError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::code::op;
    use tree::txn::{Txn, TxnHeader};

    /// A tree of `n` nodes under `/`.
    fn tree_of(n: i64) -> SharedTree {
        let tree = SharedTree::new(DataTree::new());
        for zxid in 1..=n {
            let txn = Txn::Create {
                path: format!("/n{zxid}"),
                data: None,
                acl: tree::acl::open_acl_unsafe(),
                ephemeral: false,
                parent_cversion: i32::try_from(zxid).unwrap(),
            };
            let header = TxnHeader { client_id: 0, cxid: 1, zxid, time: 7, op: op::CREATE };
            lock_for_apply(&tree).apply(&header, &txn);
        }
        tree
    }

    #[test]
    fn a_snapshot_counts_its_copies_on_its_own_tree_only() {
        let (ours, other) = (tree_of(50), tree_of(3));
        let dir = tempfile::tempdir().unwrap();
        let info = write_fuzzy(dir.path(), &ours, 4).unwrap();
        let nodes = ours.read().unwrap().node_count() as u64;
        assert_eq!(info.nodes, nodes);
        assert_eq!(ours.copied.load(Ordering::Relaxed), nodes, "every node copied, counted on its tree");
        assert_eq!(other.copied.load(Ordering::Relaxed), 0, "another tree's applies see nothing of it");
        for tree in [&ours, &other] {
            assert_eq!(tree.copying.load(Ordering::Acquire), 0, "no chunk left counted as copying");
            assert_eq!(tree.applies_waiting.load(Ordering::Acquire), 0, "no apply left counted as waiting");
        }
    }
}
