//! The memory maps of files alive in this process, by file identity, so that a file can be told apart as safe
//! to overwrite in place: the log recycles a purged segment as its next spare ([`crate::segment::spare`]) only
//! when no reader still holds bytes of it.
//!
//! A map stays registered until the last [`Bytes`] sharing it drops (the registration is the map's owner), so a
//! slice a reader kept of a segment keeps that segment from being recycled under it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use bytes::Bytes;

/// A file's identity: its device and inode (unique while the file is open or mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(file: &File) -> io::Result<FileId> {
        let meta = file.metadata()?;
        Ok(FileId { dev: meta.dev(), ino: meta.ino() })
    }
}

/// Live maps per file. One entry per mapped file, so it is bounded by the files the process maps at once.
static LIVE: Mutex<Option<HashMap<FileId, usize>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<FileId, usize>>> {
    // The counts stay consistent whatever panicked while holding the lock: every update is one statement.
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A memory map registered as live until it drops.
struct Registered {
    map: memmap2::Mmap,
    id: FileId,
}

impl AsRef<[u8]> for Registered {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut live = live();
        let counts = live.as_mut().expect("a registered map has an entry");
        let count = counts.get_mut(&self.id).expect("a registered map has an entry");
        *count -= 1;
        if *count == 0 {
            counts.remove(&self.id);
        }
    }
}

/// `map` of `file` as bytes, registered as live until the last of them drops.
pub(super) fn register(file: &File, map: memmap2::Mmap) -> io::Result<Bytes> {
    let id = FileId::of(file)?;
    *live().get_or_insert_with(HashMap::new).entry(id).or_insert(0) += 1;
    Ok(Bytes::from_owner(Registered { map, id }))
}

/// Whether bytes of a memory map of `file` are alive in this process.
pub(super) fn is_mapped(file: &File) -> io::Result<bool> {
    let id = FileId::of(file)?;
    Ok(live().as_ref().is_some_and(|counts| counts.contains_key(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_mapped_until_the_last_slice_of_every_map_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let other = File::create(dir.path().join("g")).unwrap();
        assert!(!is_mapped(&file).unwrap());
        // SAFETY: a private test file nothing else writes.
        let map = |f: &File| register(f, unsafe { memmap2::Mmap::map(f) }.unwrap()).unwrap();
        let (first, second) = (map(&file), map(&file));
        let slice = first.slice(2..4);
        drop(first);
        assert!(is_mapped(&file).unwrap());
        drop(second);
        // A second descriptor of the same file sees the same identity.
        assert!(is_mapped(&File::open(&path).unwrap()).unwrap(), "the slice still holds the first map");
        assert!(!is_mapped(&other).unwrap());
        drop(slice);
        assert!(!is_mapped(&file).unwrap());
    }
}
