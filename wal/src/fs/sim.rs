//! [`SimFs`]: an in-memory filesystem that loses power.
//!
//! It keeps, for every file, its content as of its last sync (durable) beside its current content, and for every
//! directory its entries as of its last directory sync beside the creates, renames and removes since (a journal,
//! in order). [`SimFs::crash_after`] arms a power cut right after the n-th IO step; from then on every operation
//! fails with `EIO` (the power is off), and [`SimFs::crashed`] hands back a new filesystem holding what a disk may
//! hold after that cut, chosen by seed:
//!
//! - a directory keeps its durable entries plus, of its journal, either a prefix (none, all, or a cut in
//!   between: metadata reaches the disk in order, as with a journalling filesystem) or any subset consistent with
//!   the order (an operation survives only with every earlier one on the same names), so an unsynced create can
//!   vanish, an unsynced rename or remove can be undone, and unsynced removes of two files can land either way;
//! - a file keeps its durable content, and of what was written since, by seed: nothing, everything, everything
//!   below a byte offset, or each [`PAGE`]-byte page kept or lost independently with one page torn at a random
//!   byte (pages reach the disk in any order). Its length is the durable one or the current one.
//!
//! - a directory created since its parent was last synced may vanish, with everything in it.
//! - a rename from one directory to another is an unlink in the first and a link in the second, each resolved
//!   with its own directory, except that the file never loses both names: the filesystem moves the entry in one
//!   journal transaction, so a cut that loses the new name keeps the old one. It is durable once the target
//!   directory is synced.
//!
//! Simplifications: a directory is never renamed (nothing does), its removal ([`FileSystem::remove_dir_all`], used
//! only for the leftovers of a snapshot transfer, which the next start deletes again if they come back) is
//! durable at once, and a file whose last name is gone after the cut is gone too. Every step is deterministic given
//! the seed and the order of the operations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{FileSystem, WalFile};

/// The unit in which unsynced data reaches the disk in the page-by-page crash mode.
pub const PAGE: usize = 512;

/// An in-memory filesystem whose power can be cut. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    next_ino: u64,
    /// IO steps (operations that change something) done so far.
    steps: u64,
    /// Cut the power right after this step, with this seed.
    crash_at: Option<(u64, u64)>,
    /// The disk after the cut, once it happened.
    crashed: Option<Box<State>>,
    locks: BTreeSet<PathBuf>,
    /// Renames across directories whose target directory was not synced since.
    moves: Vec<Move>,
}

/// A rename from one directory to another, not durable yet.
#[derive(Clone, Debug)]
struct Move {
    from: (PathBuf, String),
    to: (PathBuf, String),
    ino: u64,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    journal: Vec<DirOp>,
    /// Whether its own entry in its parent is durable (the parent was synced since it was made).
    linked: bool,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String, u64),
}

impl DirOp {
    fn names(&self) -> Vec<&str> {
        match self {
            DirOp::Link(name, _) | DirOp::Unlink(name) => vec![name],
            DirOp::Rename(from, to, _) => vec![from, to],
        }
    }

    fn apply(&self, entries: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link(name, ino) => drop(entries.insert(name.clone(), *ino)),
            DirOp::Unlink(name) => drop(entries.remove(name)),
            DirOp::Rename(from, to, ino) => {
                entries.remove(from);
                entries.insert(to.clone(), *ino);
            }
        }
    }
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_string_lossy().into_owned())),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display()))),
    }
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Arms a power cut right after IO step `step` (counting from 1; see [`SimFs::steps`]), resolved by `seed`.
    pub fn crash_after(&self, step: u64, seed: u64) {
        self.state().crash_at = Some((step, seed));
    }

    /// The IO steps done so far: creates, writes, syncs, allocations, renames, removes and directory syncs.
    pub fn steps(&self) -> u64 {
        self.state().steps
    }

    /// Whether the armed power cut has happened.
    pub fn is_off(&self) -> bool {
        self.state().crashed.is_some()
    }

    /// The disk as it is after the power cut: a new filesystem, powered on, no locks held. `None` if the cut has
    /// not happened.
    pub fn crashed(&self) -> Option<SimFs> {
        let state = self.state();
        let crashed = state.crashed.as_ref()?;
        Some(SimFs { state: Arc::new(Mutex::new(crashed.powered_on())) })
    }

    /// Cuts the power now, resolved by `seed`, and returns the disk after the cut (this one stays off).
    pub fn crash_now(&self, seed: u64) -> SimFs {
        let mut state = self.state();
        if state.crashed.is_none() {
            state.crashed = Some(Box::new(state.after_cut(seed)));
        }
        let crashed = state.crashed.as_ref().expect("just cut").powered_on();
        SimFs { state: Arc::new(Mutex::new(crashed)) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one IO step: fails if the power is off, else does `op` and cuts the power if this is the armed step.
    fn step<T>(&self, op: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state();
        if state.crashed.is_some() {
            return Err(power_off());
        }
        let out = op(&mut state)?;
        state.steps += 1;
        if let Some((at, seed)) = state.crash_at.filter(|&(at, _)| at == state.steps) {
            tracing::debug!(step = at, seed, "simulated power cut");
            state.crashed = Some(Box::new(state.after_cut(seed)));
        }
        Ok(out)
    }

    /// Reads without changing anything (not an IO step, but it fails once the power is off).
    fn read_state<T>(&self, op: impl FnOnce(&State) -> io::Result<T>) -> io::Result<T> {
        let state = self.state();
        if state.crashed.is_some() {
            return Err(power_off());
        }
        op(&state)
    }
}

impl State {
    fn dir(&self, dir: &Path) -> io::Result<&Dir> {
        self.dirs.get(dir).ok_or_else(|| not_found(dir))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?.entries.get(&name).copied().ok_or_else(|| not_found(path))
    }

    fn file(&mut self, ino: u64) -> io::Result<&mut Inode> {
        // A file removed while open keeps its inode until the cut (the log never writes one, but may sync it).
        self.files.get_mut(&ino).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stale file handle"))
    }

    fn link(&mut self, path: &Path, ino: u64) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let dir = self.dir_mut(&dir)?;
        let op = DirOp::Link(name, ino);
        op.apply(&mut dir.entries);
        dir.journal.push(op);
        Ok(())
    }

    /// What the disk holds after a power cut now, chosen by `seed`.
    fn after_cut(&self, seed: u64) -> State {
        let mut rng = SplitMix(seed);
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        // In path order, so that a parent is decided before its children: a directory whose name was not
        // durable may vanish, and everything under it with it.
        for (path, dir) in &self.dirs {
            let parent_kept = path.parent().is_none_or(|p| dirs.contains_key(p));
            if !parent_kept || (!dir.linked && rng.below(2) == 0) {
                continue;
            }
            let mut entries = dir.durable.clone();
            kept_ops(&dir.journal, &mut rng).for_each(|op| op.apply(&mut entries));
            dirs.insert(
                path.clone(),
                Dir { entries: entries.clone(), durable: entries, journal: Vec::new(), linked: true },
            );
        }
        // A move whose new name was lost keeps its old one (see the module doc).
        for Move { from, to, ino } in &self.moves {
            let moved = dirs.get(&to.0).is_some_and(|d| d.entries.get(&to.1) == Some(ino));
            if let Some(source) = dirs.get_mut(&from.0).filter(|d| !moved && !d.entries.contains_key(&from.1)) {
                source.entries.insert(from.1.clone(), *ino);
                source.durable.insert(from.1.clone(), *ino);
            }
        }
        let live: BTreeSet<u64> = dirs.values().flat_map(|d| d.entries.values().copied()).collect();
        let mut files = BTreeMap::new();
        for (&ino, file) in self.files.iter().filter(|(ino, _)| live.contains(ino)) {
            let data = torn(&file.durable, &file.data, &mut rng);
            files.insert(ino, Inode { data: data.clone(), durable: data });
        }
        State { files, dirs, next_ino: self.next_ino, ..State::default() }
    }

    fn powered_on(&self) -> State {
        State {
            files: self.files.clone(),
            dirs: self.dirs.clone(),
            next_ino: self.next_ino,
            steps: 0,
            crash_at: None,
            crashed: None,
            locks: BTreeSet::new(),
            moves: Vec::new(),
        }
    }
}

/// The unsynced directory operations that reach the disk before a cut, by seed: a prefix of them (metadata
/// written in order, as a journalling filesystem does), or each kept or lost on its own, except that an operation
/// is lost whenever an earlier one on any of the same names is (a rename cannot outlive the create before it).
fn kept_ops<'a>(journal: &'a [DirOp], rng: &mut SplitMix) -> impl Iterator<Item = &'a DirOp> {
    let prefix = rng.below(journal.len() as u64 + 1) as usize;
    let ordered = rng.below(2) == 0;
    let mut lost: BTreeSet<&str> = BTreeSet::new();
    let mut kept = Vec::new();
    for (i, op) in journal.iter().enumerate() {
        let names = op.names();
        let keep = if ordered { i < prefix } else { rng.below(2) == 0 };
        if keep && !names.iter().any(|n| lost.contains(n)) {
            kept.push(op);
        } else {
            lost.extend(names);
        }
    }
    kept.into_iter()
}

/// What a file whose durable content is `old` and current content is `new` holds after a cut.
fn torn(old: &[u8], new: &[u8], rng: &mut SplitMix) -> Vec<u8> {
    if old == new {
        return old.to_vec();
    }
    let len = if rng.below(2) == 0 { old.len() } else { new.len() };
    let keep: Box<dyn Fn(usize) -> bool> = match rng.below(4) {
        0 => Box::new(|_| false),
        1 => Box::new(|_| true),
        2 => {
            let cut = rng.below(len as u64 + 1) as usize;
            Box::new(move |i| i < cut)
        }
        _ => {
            let pages = len.div_ceil(PAGE).max(1);
            let (torn_page, torn_at) = (rng.below(pages as u64) as usize, rng.below(PAGE as u64) as usize);
            let kept: Vec<bool> = (0..pages).map(|_| rng.below(2) == 0).collect();
            Box::new(move |i| match i / PAGE {
                p if p == torn_page => i % PAGE < torn_at,
                p => kept[p],
            })
        }
    };
    (0..len)
        .map(|i| match (keep(i), new.get(i), old.get(i)) {
            (true, Some(&b), _) | (false, _, Some(&b)) => b,
            _ => 0,
        })
        .collect()
}

/// A small deterministic random number generator (splitmix64), so that a seed names one crash exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if self.read_state(|state| Ok(state.dirs.contains_key(dir)))? {
            return Ok(());
        }
        self.step(|state| {
            for dir in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
                // A new directory's name is durable once its parent is synced; a root has no parent.
                let linked = dir.parent().is_none();
                state.dirs.entry(dir.to_path_buf()).or_insert_with(|| Dir { linked, ..Dir::default() });
            }
            Ok(())
        })
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let ino = self.step(|state| match state.lookup(path) {
            Ok(ino) => {
                state.file(ino)?.data.clear();
                Ok(ino)
            }
            Err(_) => {
                let ino = state.next_ino;
                state.next_ino += 1;
                state.link(path, ino)?;
                state.files.insert(ino, Inode::default());
                Ok(ino)
            }
        })?;
        Ok(Box::new(SimFile { fs: self.clone(), ino }))
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<Box<dyn WalFile>> {
        let ino = self.read_state(|state| state.lookup(path))?;
        Ok(Box::new(SimFile { fs: self.clone(), ino }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.read_state(|state| Ok(state.files.get(&state.lookup(path)?).map(|f| f.data.clone()).unwrap_or_default()))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(|state| {
            let ino = state.lookup(from)?;
            let ((dir, from), (to_dir, to)) = (split(from)?, split(to)?);
            if dir != to_dir {
                state.dir(&to_dir)?;
                for (dir, op) in [(&dir, DirOp::Unlink(from.clone())), (&to_dir, DirOp::Link(to.clone(), ino))] {
                    let dir = state.dir_mut(dir)?;
                    op.apply(&mut dir.entries);
                    dir.journal.push(op);
                }
                state.moves.push(Move { from: (dir, from), to: (to_dir, to), ino });
                return Ok(());
            }
            let dir = state.dir_mut(&dir)?;
            let op = DirOp::Rename(from, to, ino);
            op.apply(&mut dir.entries);
            dir.journal.push(op);
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.step(|state| {
            state.lookup(path)?;
            let (dir, name) = split(path)?;
            let dir = state.dir_mut(&dir)?;
            let op = DirOp::Unlink(name);
            op.apply(&mut dir.entries);
            dir.journal.push(op);
            Ok(())
        })
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step(|state| {
            state.dir(dir)?;
            state.dirs.retain(|path, _| !path.starts_with(dir));
            Ok(())
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.read_state(|state| {
            let files = state.dir(dir)?.entries.keys().cloned();
            let children = state.dirs.keys().filter(|path| path.parent() == Some(dir));
            Ok(files
                .chain(children.filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned())))
                .collect())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step(|state| {
            let synced = state.dir_mut(dir)?;
            synced.durable = synced.entries.clone();
            synced.journal.clear();
            state.moves.retain(|m| m.to.0 != dir);
            for (_, child) in state.dirs.iter_mut().filter(|(path, _)| path.parent() == Some(dir)) {
                child.linked = true;
            }
            Ok(())
        })
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Debug + Send + Sync>> {
        if self.read_state(|state| Ok(state.locks.contains(path)))? {
            return Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK));
        }
        if self.read_state(|state| state.lookup(path)).is_err() {
            self.create(path)?;
        }
        self.state().locks.insert(path.to_path_buf());
        Ok(Box::new(SimLock { fs: self.clone(), path: path.to_path_buf() }))
    }
}

/// A held lock of [`SimFs`].
#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.state().locks.remove(&self.path);
    }
}

/// An open file of [`SimFs`].
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl WalFile for SimFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        self.fs.step(|state| {
            let data = &mut state.file(self.ino)?.data;
            if data.len() < offset + buf.len() {
                data.resize(offset + buf.len(), 0);
            }
            data[offset..offset + buf.len()].copy_from_slice(buf);
            Ok(())
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let offset = usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        self.fs.read_state(|state| {
            let data = &state.files.get(&self.ino).ok_or_else(power_off)?.data;
            let n = data.len().saturating_sub(offset).min(buf.len());
            buf[..n].copy_from_slice(&data[offset..offset + n]);
            Ok(n)
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.step(|state| {
            let file = state.file(self.ino)?;
            file.durable.clone_from(&file.data);
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        self.fs.read_state(|state| Ok(state.files.get(&self.ino).map_or(0, |f| f.data.len() as u64)))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        self.fs.step(|state| {
            state.file(self.ino)?.data.resize(len, 0);
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        self.fs.step(|state| {
            let data = &mut state.file(self.ino)?.data;
            if data.len() < len {
                data.resize(len, 0);
            }
            Ok(())
        })
    }

    fn map(&self, _populate: bool) -> io::Result<Bytes> {
        self.fs.read_state(|state| Ok(Bytes::from(state.files.get(&self.ino).ok_or_else(power_off)?.data.clone())))
    }

    fn map_is_live(&self) -> bool {
        false
    }

    fn is_held(&self) -> io::Result<bool> {
        // Maps are copies: overwriting the file never changes bytes a reader holds.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/log";

    fn disk() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new(DIR)).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs
    }

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn names(fs: &SimFs) -> Vec<String> {
        fs.read_dir(Path::new(DIR)).unwrap()
    }

    #[test]
    fn synced_data_and_entries_survive_every_crash() {
        let fs = disk();
        let file = fs.create(&path("a")).unwrap();
        file.write_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        file.write_at(b"volatile!", 7).unwrap();
        for seed in 0..200 {
            let after = fs.clone().crash_now_copy(seed);
            let data = after.read(&path("a")).unwrap();
            assert_eq!(&data[..7], b"durable", "seed {seed}");
            assert!(data.len() == 7 || data.len() == 16, "seed {seed}: {data:?}");
        }
    }

    #[test]
    fn unsynced_data_can_vanish_or_tear_and_everything_is_seen() {
        let fs = disk();
        let file = fs.create(&path("a")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        file.write_at(&[7u8; 3 * PAGE], 0).unwrap();
        let (mut none, mut all, mut partial) = (0, 0, 0);
        for seed in 0..200 {
            let data = fs.crash_now_copy(seed).read(&path("a")).unwrap();
            let sevens = data.iter().filter(|&&b| b == 7).count();
            match sevens {
                0 => none += 1,
                n if n == 3 * PAGE => all += 1,
                _ => partial += 1,
            }
        }
        assert!(none > 0 && all > 0 && partial > 0, "none {none}, all {all}, torn {partial}");
    }

    #[test]
    fn an_unsynced_create_can_vanish_and_an_unsynced_rename_can_be_undone() {
        let fs = disk();
        let old = fs.create(&path("x.tmp")).unwrap();
        old.write_at(b"x", 0).unwrap();
        old.sync_all().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        fs.create(&path("new")).unwrap().sync_all().unwrap(); // the file is synced, its name is not
        fs.rename(&path("x.tmp"), &path("x")).unwrap();
        fs.create(&path("b")).unwrap();
        fs.rename(&path("b"), &path("c")).unwrap();
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let names = names(&fs.crash_now_copy(seed));
            let has = |n: &str| names.iter().any(|m| m == n);
            assert!(has("x") != has("x.tmp"), "seed {seed}: a rename is atomic: {names:?}");
            assert!(!(has("b") && has("c")), "seed {seed}: {names:?}");
            seen.extend(names);
        }
        // Each of them was seen kept by some seed and lost by another; "c" needs the create of "b" before it.
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["b", "c", "new", "x", "x.tmp"]);
        let without_b_create = (0..200).map(|seed| names(&fs.crash_now_copy(seed)));
        assert!(without_b_create.clone().any(|n| n.contains(&"new".to_string()) && !n.contains(&"x".to_string())));
        assert!(without_b_create.clone().any(|n| !n.contains(&"new".to_string()) && n.contains(&"x".to_string())));
    }

    #[test]
    fn the_armed_cut_happens_after_its_step_and_is_deterministic() {
        let run = |seed| {
            let fs = disk();
            fs.crash_after(fs.steps() + 3, seed);
            let file = fs.create(&path("a")).unwrap(); // step 1
            file.write_at(b"one", 0).unwrap(); // step 2
            file.sync_data().unwrap(); // step 3: the cut comes after it
            assert!(fs.is_off());
            assert!(file.write_at(b"two", 3).is_err());
            assert!(fs.sync_dir(Path::new(DIR)).is_err());
            let after = fs.crashed().unwrap();
            after.read_dir(Path::new(DIR)).unwrap()
        };
        let outcomes: BTreeSet<_> = (0..50).map(run).collect();
        assert_eq!(outcomes.len(), 2, "the name survives or not: {outcomes:?}");
        assert_eq!(run(17), run(17));
    }

    #[test]
    fn a_new_directory_can_vanish_until_its_parent_is_synced() {
        let fs = disk();
        fs.create_dir_all(Path::new("/node/wal")).unwrap();
        let file = fs.create(Path::new("/node/wal/a")).unwrap();
        file.sync_all().unwrap();
        fs.sync_dir(Path::new("/node/wal")).unwrap();
        fn survives(fs: &SimFs) -> impl Iterator<Item = bool> + '_ {
            (0..50).map(|seed| fs.crash_now_copy(seed).read_dir(Path::new("/node/wal")).is_ok())
        }
        assert!(survives(&fs).any(|kept| !kept), "the unsynced /node/wal vanished for some seed");
        fs.sync_dir(Path::new("/node")).unwrap();
        assert!(survives(&fs).any(|kept| !kept), "/node itself is not linked in / yet");
        fs.sync_dir(Path::new("/")).unwrap();
        assert!(survives(&fs).all(|kept| kept));
    }

    #[test]
    fn a_directory_is_listed_in_its_parent_and_removed_with_everything_in_it() {
        let fs = disk();
        fs.create_dir_all(Path::new("/log/out-1/deep")).unwrap();
        fs.create(Path::new("/log/out-1/deep/f")).unwrap().sync_all().unwrap();
        fs.create(&path("a")).unwrap();
        let mut listed = names(&fs);
        listed.sort();
        assert_eq!(listed, ["a", "out-1"]);
        fs.remove_dir_all(Path::new("/log/out-1")).unwrap();
        assert_eq!(names(&fs), ["a"]);
        assert!(fs.read(Path::new("/log/out-1/deep/f")).is_err());
        assert!(fs.remove_dir_all(Path::new("/log/out-1")).is_err(), "gone already");
        for seed in 0..20 {
            assert!(fs.crash_now_copy(seed).read_dir(Path::new("/log/out-1")).is_err(), "removed durably");
        }
    }

    #[test]
    fn a_rename_across_directories_never_loses_both_names_and_is_durable_with_its_target() {
        let fs = disk();
        fs.create_dir_all(Path::new("/log/sub")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        let file = fs.create(Path::new("/log/sub/staged")).unwrap();
        file.write_at(b"x", 0).unwrap();
        file.sync_all().unwrap();
        fs.sync_dir(Path::new("/log/sub")).unwrap();
        fs.rename(Path::new("/log/sub/staged"), &path("installed")).unwrap();
        assert!(fs.read(Path::new("/log/sub/staged")).is_err());
        assert_eq!(fs.read(&path("installed")).unwrap(), b"x");
        let outcome = |fs: &SimFs, seed| {
            let after = fs.crash_now_copy(seed);
            (after.read(Path::new("/log/sub/staged")).is_ok(), after.read(&path("installed")).is_ok())
        };
        let seen: BTreeSet<_> = (0..100).map(|seed| outcome(&fs, seed)).collect();
        assert!(!seen.contains(&(false, false)), "{seen:?}");
        assert!(seen.contains(&(true, false)) && seen.contains(&(false, true)), "{seen:?}");
        fs.sync_dir(Path::new("/log/sub")).unwrap(); // the old name's removal durable: still kept until the target
        assert!((0..100).all(|seed| outcome(&fs, seed) != (false, false)));
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert!((0..100).all(|seed| outcome(&fs, seed) == (false, true)));
    }

    #[test]
    fn a_held_lock_refuses_a_second_holder_until_dropped() {
        let fs = disk();
        let guard = fs.lock(&path("LOCK")).unwrap();
        assert_eq!(fs.lock(&path("LOCK")).unwrap_err().raw_os_error(), Some(libc::EWOULDBLOCK));
        drop(guard);
        fs.lock(&path("LOCK")).unwrap();
    }

    impl SimFs {
        /// The disk after a cut now, leaving this one powered (for tests that try many seeds on one state).
        fn crash_now_copy(&self, seed: u64) -> SimFs {
            SimFs { state: Arc::new(Mutex::new(self.state().after_cut(seed).powered_on())) }
        }
    }
}
