//! The one seam through which the log touches files and reads the time: real implementations,
//! and an in-memory file system that can crash, tear writes, flip bits and fail fsyncs in tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::files::{DEFAULT_OPEN_FILES_MAX, FileCache};

/// An open file, read and written at explicit positions so readers never contend with the writer.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `pos`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves the blocks of `from..to` and makes the file at least `to` bytes long (the new
    /// bytes read as zeros), so that writes below `to` allocate nothing and leave the length
    /// alone: their fdatasync then writes the data and no allocation metadata.
    /// `Ok(false)` when the file system cannot (the file is unchanged).
    fn preallocate(&self, _from: u64, _to: u64) -> io::Result<bool> {
        Ok(false)
    }
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// When the file's content last changed, in milliseconds since the epoch, if known.
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        Ok(None)
    }
    /// The operating system's descriptor of the file, for sending its bytes to a socket
    /// without copying them through the process (`sendfile(2)`); valid while this handle
    /// lives. `None` for a file that is not a real one (the simulated file system): its
    /// readers copy the bytes instead.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Directory-level operations.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir` against other processes, held until the returned guard
    /// drops, failing with `WouldBlock` if another process holds it. The default takes no lock.
    fn lock_dir(&self, _dir: &Path) -> io::Result<DirLock> {
        Ok(DirLock(None))
    }
}

/// Holds a directory lock (see [`FileSystem::lock_dir`]) until dropped.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] Option<std::fs::File>);

/// Name of the lock file the real file system creates in a partition directory.
pub const LOCK_FILE: &str = "lock";

/// Wall-clock milliseconds since the Unix epoch (record timestamps use the same scale).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// Reads and writes files and the clock; [`Env::default`] is the real machine. Every log opened
/// with clones of one `Env` shares its open-file cache (and its directory lock, if it has one).
#[derive(Debug, Clone)]
pub struct Env {
    /// File access.
    pub fs: Arc<dyn FileSystem>,
    /// Time source for rolls, retention and interval flushes.
    pub clock: Arc<dyn Clock>,
    /// Segment files open now, bounded by its `open_files_max`.
    pub files: FileCache,
    /// A lock this process holds on a directory above every log opened with this `Env` (a
    /// broker's data directory); when set, logs take no lock of their own, which would cost a
    /// descriptor per partition.
    pub held_lock: Option<Arc<DirLock>>,
}

impl Default for Env {
    fn default() -> Self {
        Env::new(Arc::new(OsFileSystem), Arc::new(SystemClock))
    }
}

impl Env {
    /// An `Env` over `fs` and `clock` with a cache of [`DEFAULT_OPEN_FILES_MAX`] files.
    pub fn new(fs: Arc<dyn FileSystem>, clock: Arc<dyn Clock>) -> Env {
        Env {
            files: FileCache::new(fs.clone(), DEFAULT_OPEN_FILES_MAX),
            fs,
            clock,
            held_lock: None,
        }
    }

    /// The same, with a new cache keeping at most `open_files_max` files open.
    pub fn with_open_files_max(mut self, open_files_max: usize) -> Env {
        self.files = FileCache::new(self.fs.clone(), open_files_max);
        self
    }

    /// Takes the lock on `dir` (through [`FileSystem::lock_dir`]) and holds it for every log
    /// opened with this `Env`, instead of one lock per log directory; fails with `WouldBlock` if
    /// another process holds it.
    pub fn with_dir_lock(mut self, dir: &Path) -> io::Result<Env> {
        self.held_lock = Some(Arc::new(self.fs.lock_dir(dir)?));
        Ok(self)
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that only moves when told to, for tests of rolls and retention.
///
/// ```
/// use herald_storage::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_ms(500);
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The real file system (positional reads and writes through `std::os::unix::fs::FileExt`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFileSystem;

#[derive(Debug)]
struct OsFile(std::fs::File);

impl StorageFile for OsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn preallocate(&self, from: u64, to: u64) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(from),
            libc::off_t::try_from(to.saturating_sub(from)),
        ) else {
            return Ok(false);
        };
        if len == 0 {
            return Ok(true);
        }
        // Mode 0: allocate and extend the length (KEEP_SIZE would leave every append changing
        // the length, which is the metadata this avoids).
        // SAFETY: fallocate only reads its integer arguments; the descriptor is ours and open.
        let result = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, offset, len) };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
            _ => Err(error),
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        let modified = self.0.metadata()?.modified()?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()))
    }
    fn raw_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.0.as_raw_fd())
    }
}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        // A POSIX record lock: it excludes other processes (two brokers on one data directory)
        // but not this one, whose components may briefly hold an old and a new log of the same
        // partition; the kernel releases it when the process dies.
        // SAFETY: `flock` is plain data (all-zero is a valid value) and fcntl only reads it and
        // the descriptor, which `file` keeps open during the call.
        let rc = unsafe {
            let mut lock: libc::flock = std::mem::zeroed();
            lock.l_type = libc::F_WRLCK as libc::c_short;
            lock.l_whence = libc::SEEK_SET as libc::c_short;
            libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock)
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EACCES | libc::EAGAIN) => io::Error::new(io::ErrorKind::WouldBlock, e),
                _ => e,
            });
        }
        Ok(DirLock(Some(file)))
    }
}

/// Contents of one simulated file: what a reader sees, and what survives a power loss.
#[derive(Debug, Default)]
struct SimData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// The clock's time at the last write or resize, like a file's mtime.
    modified_ms: Option<i64>,
}

#[derive(Debug)]
struct SimFile {
    data: Mutex<SimData>,
    clock: Arc<ManualClock>,
    fail_syncs: Arc<AtomicBool>,
    ops_left: Arc<AtomicU64>,
    bytes_read: Arc<AtomicU64>,
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let data = self.data.lock();
        let len = data.current.len() as u64;
        if pos >= len {
            return Ok(0);
        }
        let n = ((len - pos) as usize).min(buf.len());
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        buf[..n].copy_from_slice(&data.current[pos as usize..pos as usize + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        take_op(&self.ops_left)?;
        let mut data = self.data.lock();
        let end = pos as usize + buf.len();
        if data.current.len() < end {
            data.current.resize(end, 0);
        }
        data.current[pos as usize..end].copy_from_slice(buf);
        data.modified_ms = Some(self.clock.now_ms());
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().current.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        take_op(&self.ops_left)?;
        let mut data = self.data.lock();
        data.current.resize(len as usize, 0);
        data.modified_ms = Some(self.clock.now_ms());
        Ok(())
    }
    fn preallocate(&self, _from: u64, to: u64) -> io::Result<bool> {
        // Like a real file system: zeros up to `to`, durable only once synced.
        take_op(&self.ops_left)?;
        let mut data = self.data.lock();
        if (data.current.len() as u64) < to {
            data.current.resize(to as usize, 0);
        }
        Ok(true)
    }
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        Ok(self.data.lock().modified_ms)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        take_op(&self.ops_left)?;
        let mut data = self.data.lock();
        data.durable = data.current.clone();
        Ok(())
    }
}

/// An in-memory file system for crash tests.
///
/// Every file keeps what a reader sees and what the last fsync made durable. Directory operations
/// (create, rename, remove) are treated as durable at once, the assumption the log makes of a
/// journaling file system after it fsyncs the directory. [`SimFs::crash_image`] yields the state a
/// power loss would leave; tests then tear or corrupt files and reopen the log on the image.
///
/// ```
/// use herald_storage::{Env, LogConfig, PartitionLog, SimFs};
/// use std::path::Path;
/// let fs = SimFs::default();
/// let log = PartitionLog::open_with(Path::new("/p"), LogConfig::default(), fs.env()).unwrap();
/// let batch = herald_storage::build_batch(0, &[], &[b"x"], None);
/// log.append(&batch).unwrap();
/// let image = fs.crash_image(); // nothing was fsynced: the batch is gone after the "crash"
/// std::mem::forget(log);
/// let log = PartitionLog::open_with(Path::new("/p"), LogConfig::default(), image.env()).unwrap();
/// assert_eq!(log.offsets().high_watermark, 0);
/// ```
#[derive(Debug, Clone)]
pub struct SimFs {
    files: Arc<Mutex<BTreeMap<PathBuf, Arc<SimFile>>>>,
    fail_syncs: Arc<AtomicBool>,
    /// Changing operations (writes, resizes, fsyncs, renames, removals) left before every
    /// one fails as if the process had died there; `u64::MAX` is unlimited.
    ops_left: Arc<AtomicU64>,
    bytes_read: Arc<AtomicU64>,
    clock: Arc<ManualClock>,
    /// Handles handed out by `open` and not yet dropped.
    open_files: Arc<AtomicU64>,
    open_files_limit: Arc<AtomicU64>,
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs {
            files: Arc::default(),
            fail_syncs: Arc::default(),
            ops_left: Arc::new(AtomicU64::new(u64::MAX)),
            bytes_read: Arc::default(),
            clock: Arc::default(),
            open_files: Arc::default(),
            open_files_limit: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

/// One open handle of a simulated file: counted while alive, like a descriptor.
#[derive(Debug)]
struct SimHandle {
    file: Arc<SimFile>,
    open_files: Arc<AtomicU64>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.open_files.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StorageFile for SimHandle {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn preallocate(&self, from: u64, to: u64) -> io::Result<bool> {
        self.file.preallocate(from, to)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        self.file.modified_ms()
    }
}

impl SimFs {
    /// An empty file system whose [`Env`] uses `clock`.
    pub fn with_clock(clock: Arc<ManualClock>) -> Self {
        SimFs {
            clock,
            ..SimFs::default()
        }
    }
    /// An [`Env`] over this file system and its manual clock.
    pub fn env(&self) -> Env {
        Env::new(Arc::new(self.clone()), self.clock.clone())
    }
    /// Files open now through this file system (handles not yet dropped), like a process's
    /// descriptor count.
    pub fn open_files(&self) -> u64 {
        self.open_files.load(Ordering::SeqCst)
    }
    /// Makes `open` fail with `EMFILE` while `limit` handles are open, like a process at its
    /// `RLIMIT_NOFILE`; `None` removes the limit.
    pub fn set_open_files_limit(&self, limit: Option<u64>) {
        self.open_files_limit
            .store(limit.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    /// The clock handed out by [`SimFs::env`].
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }
    /// Lets `ops` more changing operations (writes, resizes, fsyncs, renames, removals,
    /// directory fsyncs) succeed, then fails every one after: the process stopped at that
    /// step. With [`SimFs::crash_image`] after it, a test crashes an operation at every step.
    /// `None` removes the limit.
    pub fn set_ops_budget(&self, ops: Option<u64>) {
        self.ops_left
            .store(ops.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    /// Whether the budget of [`SimFs::set_ops_budget`] ran out.
    pub fn ops_budget_spent(&self) -> bool {
        self.ops_left.load(Ordering::SeqCst) == 0
    }
    /// Makes every later fsync fail (or succeed again).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }
    fn image(&self, durable_only: bool) -> SimFs {
        let fail_syncs = Arc::new(AtomicBool::new(false));
        let ops_left = Arc::new(AtomicU64::new(u64::MAX));
        let bytes_read = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(ManualClock::new(self.clock.now_ms()));
        let files = self
            .files
            .lock()
            .iter()
            .map(|(path, f)| {
                let d = f.data.lock();
                let content = if durable_only {
                    d.durable.clone()
                } else {
                    d.current.clone()
                };
                let file = SimFile {
                    data: Mutex::new(SimData {
                        current: content.clone(),
                        durable: content,
                        modified_ms: d.modified_ms,
                    }),
                    clock: clock.clone(),
                    fail_syncs: fail_syncs.clone(),
                    ops_left: ops_left.clone(),
                    bytes_read: bytes_read.clone(),
                };
                (path.clone(), Arc::new(file))
            })
            .collect();
        SimFs {
            files: Arc::new(Mutex::new(files)),
            fail_syncs,
            ops_left,
            bytes_read,
            clock,
            ..SimFs::default()
        }
    }
    /// A copy holding only what was fsynced: the disk after a power loss.
    pub fn crash_image(&self) -> SimFs {
        self.image(true)
    }
    /// A copy holding everything written: the disk after the process alone was killed.
    pub fn process_crash_image(&self) -> SimFs {
        self.image(false)
    }
    /// Bytes read from all files so far (shows how much of the log an open had to read).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
    /// Paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.lock().keys().cloned().collect()
    }
    /// A file's current contents.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.files
            .lock()
            .get(path)
            .map(|f| f.data.lock().current.clone())
    }
    /// The number of bytes of a file that the last fsync made durable.
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        self.files
            .lock()
            .get(path)
            .map(|f| f.data.lock().durable.len() as u64)
    }
    /// Replaces a file's contents (durably), creating it if needed.
    pub fn write_file(&self, path: &Path, content: &[u8]) {
        let file = SimFile {
            data: Mutex::new(SimData {
                current: content.to_vec(),
                durable: content.to_vec(),
                modified_ms: Some(self.clock.now_ms()),
            }),
            clock: self.clock.clone(),
            fail_syncs: self.fail_syncs.clone(),
            ops_left: self.ops_left.clone(),
            bytes_read: self.bytes_read.clone(),
        };
        self.files.lock().insert(path.to_path_buf(), Arc::new(file));
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut files = self.files.lock();
        if self.open_files.load(Ordering::SeqCst) >= self.open_files_limit.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let file = match files.get(path) {
            Some(f) => f.clone(),
            None if !create => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", path.display()),
                ));
            }
            None => {
                let f = Arc::new(SimFile {
                    data: Mutex::new(SimData::default()),
                    clock: self.clock.clone(),
                    fail_syncs: self.fail_syncs.clone(),
                    ops_left: self.ops_left.clone(),
                    bytes_read: self.bytes_read.clone(),
                });
                files.insert(path.to_path_buf(), f.clone());
                f
            }
        };
        self.open_files.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(SimHandle {
            file,
            open_files: self.open_files.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        take_op(&self.ops_left)?;
        match self.files.lock().remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        take_op(&self.ops_left)?;
        let mut files = self.files.lock();
        let f = files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        // A rename publishes the file's contents as they are; the log fsyncs before renaming.
        files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        take_op(&self.ops_left)
    }
}

/// Uses one operation of a [`SimFs`] budget, failing once it is spent.
fn take_op(ops_left: &AtomicU64) -> io::Result<()> {
    let taken = ops_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
        0 => None,
        u64::MAX => Some(u64::MAX),
        n => Some(n - 1),
    });
    match taken {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(
            "injected crash: the operation budget is spent",
        )),
    }
}

/// Reads exactly `buf.len()` bytes at `pos` or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &dyn StorageFile, buf: &mut [u8], pos: u64) -> io::Result<()> {
    let n = file.read_at(buf, pos)?;
    if n < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shorter than expected",
        ));
    }
    Ok(())
}
