//! The open-file cache every log of one [`crate::Env`] shares: segment files are opened on
//! demand and kept open up to `open_files_max`, the least recently used closed first, so a broker
//! with more partitions than the process may hold descriptors keeps working.
//!
//! Two rules keep eviction safe. A file is closed only when the cache holds its last handle:
//! a reader or writer that took a handle keeps the descriptor open however long it needs it
//! (handles are `Arc`s, and the check runs under the cache's lock, the only place a handle can be
//! cloned from the cache). And a file written since its last fsync stays open until that fsync:
//! on Linux a write-back error on a file nobody has open may never reach a later `fdatasync`
//! through a new descriptor, which could then report lost bytes as durable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::env::{FileSystem, StorageFile};

/// Default limit on the files one cache keeps open, used when the caller names none.
pub const DEFAULT_OPEN_FILES_MAX: usize = 1024;

/// Which file of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FileKind {
    Log,
    Index,
    Time,
}

/// A cached file: one segment file of one open log. Logs get a fresh `owner` id each time they
/// are opened, so a reopened or renamed partition never meets a stale handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub(crate) owner: u64,
    pub(crate) base: u64,
    pub(crate) kind: FileKind,
}

/// A file handed out by the cache; tracks whether it holds writes no fsync has covered.
#[derive(Debug)]
struct CachedFile {
    inner: Arc<dyn StorageFile>,
    dirty: AtomicBool,
}

impl StorageFile for CachedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.dirty.store(true, Ordering::SeqCst);
        self.inner.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.dirty.store(true, Ordering::SeqCst);
        self.inner.set_len(len)
    }
    fn preallocate(&self, from: u64, to: u64) -> io::Result<bool> {
        self.dirty.store(true, Ordering::SeqCst);
        self.inner.preallocate(from, to)
    }
    fn sync_data(&self) -> io::Result<()> {
        // Cleared before the fsync: a write racing with it sets the flag again.
        self.dirty.store(false, Ordering::SeqCst);
        let result = self.inner.sync_data();
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        result
    }
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        self.inner.modified_ms()
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }
}

struct Slot {
    file: Arc<CachedFile>,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<FileKey, Slot>,
    /// Keys by last use, oldest first.
    lru: BTreeMap<u64, FileKey>,
    tick: u64,
}

impl Inner {
    /// Closes least recently used files nobody holds and nobody wrote since their fsync, until
    /// at most `keep` are open (or none is left that may be closed).
    fn evict_to(&mut self, keep: usize) -> u64 {
        let mut evicted = 0;
        if self.slots.len() <= keep {
            return 0;
        }
        let mut victims = Vec::new();
        let mut over = self.slots.len() - keep;
        for (&tick, key) in &self.lru {
            if over == 0 {
                break;
            }
            let Some(slot) = self.slots.get(key) else {
                continue;
            };
            if Arc::strong_count(&slot.file) == 1 && !slot.file.dirty.load(Ordering::SeqCst) {
                victims.push(tick);
                over -= 1;
            }
        }
        for tick in victims {
            if let Some(key) = self.lru.remove(&tick) {
                self.slots.remove(&key);
                evicted += 1;
            }
        }
        evicted
    }
}

/// Counters of a [`FileCache`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileCacheStats {
    /// Files open in the cache now (handles held outside it may keep a few more open).
    pub open_files: u64,
    /// The configured limit.
    pub open_files_max: u64,
    /// Lookups that found the file open.
    pub hits: u64,
    /// Lookups that had to open it.
    pub misses: u64,
    /// Files closed to make room.
    pub evictions: u64,
    /// Opens refused by the operating system's descriptor limit (after the cache made room and
    /// retried).
    pub open_files_refused: u64,
}

/// Segment files opened on demand, at most `open_files_max` kept open, least recently used
/// closed first. Cheap to clone (shared).
///
/// ```
/// use herald_storage::{Env, LogConfig, PartitionLog, SimFs};
/// use std::path::Path;
/// let fs = SimFs::default();
/// let env = fs.env().with_open_files_max(8);
/// let logs: Vec<_> = (0..10)
///     .map(|p| PartitionLog::open_with(Path::new(&format!("/t-{p}")), LogConfig::default(), env.clone()).unwrap())
///     .collect();
/// assert!(env.files.stats().open_files <= 8);
/// ```
#[derive(Clone)]
pub struct FileCache {
    fs: Arc<dyn FileSystem>,
    open_files_max: usize,
    inner: Arc<Mutex<Inner>>,
    owners: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache")
            .field("open_files_max", &self.open_files_max)
            .field("open_files", &self.inner.lock().slots.len())
            .finish()
    }
}

/// Whether an I/O error is the process or system running out of file descriptors.
pub fn is_open_files_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Whether an I/O error is the file system running out of space (or the user's quota).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl FileCache {
    /// A cache over `fs` keeping at most `open_files_max` files open (at least 1).
    pub fn new(fs: Arc<dyn FileSystem>, open_files_max: usize) -> FileCache {
        FileCache {
            fs,
            open_files_max: open_files_max.max(1),
            inner: Arc::default(),
            owners: Arc::default(),
            hits: Arc::default(),
            misses: Arc::default(),
            evictions: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// The limit.
    pub fn open_files_max(&self) -> usize {
        self.open_files_max
    }

    /// A fresh owner id for a log being opened.
    pub(crate) fn new_owner(&self) -> u64 {
        self.owners.fetch_add(1, Ordering::Relaxed)
    }

    /// The file for `key`, opened at `path` (created if `create`) unless the cache has it.
    pub(crate) fn get(
        &self,
        key: FileKey,
        path: impl FnOnce() -> PathBuf,
        create: bool,
    ) -> io::Result<Arc<dyn StorageFile>> {
        {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(slot) = inner.slots.get_mut(&key) {
                inner.lru.remove(&slot.tick);
                slot.tick = tick;
                inner.lru.insert(tick, key);
                self.hits.fetch_add(1, Ordering::Relaxed);
                let file = slot.file.clone();
                // Files written beyond the limit are closed once their fsync made them clean.
                if inner.slots.len() > self.open_files_max {
                    let evicted = inner.evict_to(self.open_files_max);
                    self.evictions.fetch_add(evicted, Ordering::Relaxed);
                }
                return Ok(file);
            }
            // Make room before opening, so the descriptor count stays within the limit.
            let evicted = inner.evict_to(self.open_files_max - 1);
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let path = path();
        let path = path.as_path();
        // Opened outside the lock: an open can block on the disk, and others must go on.
        let opened = match self.fs.open(path, create) {
            Err(e) if is_open_files_limit(&e) => {
                // The process limit is lower than the cache assumed (connections hold
                // descriptors too): close half of what may be closed, and try once more.
                {
                    let mut inner = self.inner.lock();
                    let keep = inner.slots.len() / 2;
                    let evicted = inner.evict_to(keep);
                    self.evictions.fetch_add(evicted, Ordering::Relaxed);
                }
                self.fs.open(path, create).inspect_err(|e| {
                    if is_open_files_limit(e) {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
            other => other,
        }?;
        let file = Arc::new(CachedFile {
            inner: opened,
            dirty: AtomicBool::new(false),
        });
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.tick += 1;
        let tick = inner.tick;
        // Another thread may have opened the same file meanwhile: keep the first, so that one
        // handle carries the file's dirty state.
        if let Some(slot) = inner.slots.get_mut(&key) {
            inner.lru.remove(&slot.tick);
            slot.tick = tick;
            inner.lru.insert(tick, key);
            return Ok(slot.file.clone());
        }
        inner.slots.insert(
            key,
            Slot {
                file: file.clone(),
                tick,
            },
        );
        inner.lru.insert(tick, key);
        Ok(file)
    }

    /// Puts a file opened elsewhere (by recovery) into the cache, as written but not yet
    /// fsynced when `dirty`, so it stays open until the fsync that covers it.
    pub(crate) fn adopt(&self, key: FileKey, file: Arc<dyn StorageFile>, dirty: bool) {
        let file = Arc::new(CachedFile {
            inner: file,
            dirty: AtomicBool::new(dirty),
        });
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let evicted = inner.evict_to(self.open_files_max - 1);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.slots.insert(key, Slot { file, tick }) {
            inner.lru.remove(&old.tick);
        }
        inner.lru.insert(tick, key);
    }

    /// Drops the cache's handle of `key` (its file was deleted, or its log closed). Handles held
    /// elsewhere stay valid.
    pub(crate) fn forget(&self, key: FileKey) {
        let mut inner = self.inner.lock();
        if let Some(slot) = inner.slots.remove(&key) {
            inner.lru.remove(&slot.tick);
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            open_files: self.inner.lock().slots.len() as u64,
            open_files_max: self.open_files_max as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            open_files_refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimFs;

    fn key(base: u64) -> FileKey {
        FileKey {
            owner: 0,
            base,
            kind: FileKind::Log,
        }
    }

    fn path(base: u64) -> impl FnOnce() -> PathBuf {
        move || PathBuf::from(format!("/d/{base}"))
    }

    #[test]
    fn eviction_never_closes_a_file_someone_holds() {
        let fs = SimFs::default();
        let cache = FileCache::new(Arc::new(fs.clone()), 4);
        let held = cache.get(key(0), path(0), true).unwrap();
        held.write_all_at(b"still here", 0).unwrap();
        held.sync_data().unwrap();
        // Far more files than the limit: the held one is passed over, the others closed.
        for base in 1..100 {
            cache.get(key(base), path(base), true).unwrap();
            assert!(fs.open_files() <= 4, "{} open", fs.open_files());
        }
        let mut buf = [0u8; 10];
        held.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"still here");
        // Still the cached handle: a lookup returns the very same file, no second descriptor.
        let again = cache.get(key(0), path(0), false).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        drop((held, again));
        for base in 100..110 {
            cache.get(key(base), path(base), true).unwrap();
        }
        assert!(cache.stats().open_files <= 4);
        assert_eq!(fs.open_files(), cache.stats().open_files);
    }

    #[test]
    fn a_forgotten_file_is_closed_when_its_last_holder_drops_it() {
        let fs = SimFs::default();
        let cache = FileCache::new(Arc::new(fs.clone()), 4);
        let held = cache.get(key(0), path(0), true).unwrap();
        cache.forget(key(0));
        assert_eq!(fs.open_files(), 1);
        drop(held);
        assert_eq!(fs.open_files(), 0);
    }
}
