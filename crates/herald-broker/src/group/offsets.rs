//! Committed offsets, durable before they are acknowledged.
//!
//! One append-only file, `offsets.log`, holds every commit and deletion as a framed entry:
//!
//! ```text
//! file   := magic "HRLDOFS1" (8 bytes) entry*
//! entry  := body_len u32 LE | crc32c(body) u32 LE | body
//! body   := kind u8 (1 commit, 2 delete partition, 3 delete group)
//!           group_len u16 LE | group utf-8
//!           [kind 1, 2] topic_len u16 LE | topic utf-8 | partition i32 LE
//!           [kind 1]    offset i64 LE | leader_epoch i32 LE | commit_timestamp_ms i64 LE
//!                       metadata_len u32 LE | metadata utf-8
//! ```
//!
//! One writer thread owns the file. It takes every job queued at that moment, appends them in one
//! write, calls `fdatasync` once for all of them (group commit), applies them to the in-memory map
//! in log order and only then answers, so an acknowledged commit is on disk and fetches never see
//! a commit that is not. After a failed write or sync the writer refuses every later job: the
//! file's tail is unknown until the broker restarts and recovery truncates it.
//!
//! Recovery reads entries until the first one that is incomplete or fails its CRC and truncates
//! the file there (a torn tail from a crash mid-write; nothing after it was acknowledged). When the
//! file grows past `offsets_file_bytes_max` and at least four times its last compacted size it is
//! rewritten with only the live offsets: temp file, fsync, rename, fsync of the directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::error::{GroupError, OpenError};

const MAGIC: &[u8; 8] = b"HRLDOFS1";
const FRAME_HEADER_BYTES: usize = 8;
const _: () = assert!(MAGIC.len() == 8);
/// No single entry may exceed this; larger lengths in a frame header mean a corrupt tail.
const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Longest commit metadata ever written, whatever the configuration says, so every entry stays
/// under [`ENTRY_BYTES_MAX`] (group ids and topic names are far shorter than the rest).
pub(crate) const OFFSET_METADATA_BYTES_MAX: usize = 512 * 1024;
const _: () = assert!(OFFSET_METADATA_BYTES_MAX + 2 * (u16::MAX as usize) + 64 < ENTRY_BYTES_MAX);
/// File name of the offsets log inside the coordinator's directory.
pub const OFFSETS_FILE: &str = "offsets.log";

/// A committed offset as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch the client saw, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the commit was made (ms since the Unix epoch).
    pub commit_timestamp_ms: i64,
}

/// Every group's committed offsets, keyed by (topic, partition).
pub type OffsetMap = BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>;

/// One change to the committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// Sets a partition's committed offset.
    Commit {
        group: String,
        topic: String,
        partition: i32,
        value: CommittedOffset,
    },
    /// Removes one partition's committed offset.
    DeletePartition {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Removes all of a group's committed offsets.
    DeleteGroup { group: String },
}

impl OffsetRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        let put_str16 = |out: &mut Vec<u8>, s: &str| {
            // Group ids and topic names are limited far below u16::MAX before they get here.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        };
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                value,
            } => {
                out.push(1);
                put_str16(out, group);
                put_str16(out, topic);
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&value.offset.to_le_bytes());
                out.extend_from_slice(&value.leader_epoch.to_le_bytes());
                out.extend_from_slice(&value.commit_timestamp_ms.to_le_bytes());
                let len = u32::try_from(value.metadata.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(value.metadata.as_bytes());
            }
            OffsetRecord::DeletePartition {
                group,
                topic,
                partition,
            } => {
                out.push(2);
                put_str16(out, group);
                put_str16(out, topic);
                out.extend_from_slice(&partition.to_le_bytes());
            }
            OffsetRecord::DeleteGroup { group } => {
                out.push(3);
                put_str16(out, group);
            }
        }
        let body = &out[start + FRAME_HEADER_BYTES..];
        let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32c::crc32c(body);
        out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(body: &[u8]) -> Option<OffsetRecord> {
        let mut r = Reader { buf: body };
        let kind = r.u8()?;
        let group = r.str16()?;
        let record = match kind {
            1 => {
                let topic = r.str16()?;
                let partition = r.i32()?;
                let offset = r.i64()?;
                let leader_epoch = r.i32()?;
                let commit_timestamp_ms = r.i64()?;
                let len = usize::try_from(r.u32()?).ok()?;
                let metadata = String::from_utf8(r.take(len)?.to_vec()).ok()?;
                OffsetRecord::Commit {
                    group,
                    topic,
                    partition,
                    value: CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    },
                }
            }
            2 => {
                let topic = r.str16()?;
                let partition = r.i32()?;
                OffsetRecord::DeletePartition {
                    group,
                    topic,
                    partition,
                }
            }
            3 => OffsetRecord::DeleteGroup { group },
            _ => return None,
        };
        // Trailing bytes mean the entry is not what we wrote.
        r.buf.is_empty().then_some(record)
    }

    fn apply(self, map: &mut OffsetMap) {
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                value,
            } => {
                map.entry(group)
                    .or_default()
                    .insert((topic, partition), value);
            }
            OffsetRecord::DeletePartition {
                group,
                topic,
                partition,
            } => {
                if let Some(offsets) = map.get_mut(&group) {
                    offsets.remove(&(topic, partition));
                    if offsets.is_empty() {
                        map.remove(&group);
                    }
                }
            }
            OffsetRecord::DeleteGroup { group } => {
                map.remove(&group);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str16(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Limits of the offsets store.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Jobs that may wait for the writer before committers wait for room.
    pub write_queue_jobs_max: usize,
    /// Size past which the file is compacted (when also 4x its last compacted size).
    pub offsets_file_bytes_max: u64,
}

struct WriteJob {
    records: Vec<OffsetRecord>,
    done: oneshot::Sender<Result<(), GroupError>>,
}

/// A queued write job, resolved by the writer once its records are on disk and applied.
pub(crate) struct Written(oneshot::Receiver<Result<(), GroupError>>);

impl Written {
    /// Waits for the writer's verdict on the job.
    pub(crate) async fn wait(self) -> Result<(), GroupError> {
        self.0.await.map_err(|_| GroupError::StoreFailed)?
    }
}

/// The durable committed-offsets store: an in-memory map mirrored by an append-only file.
pub(crate) struct OffsetStore {
    map: Arc<Mutex<OffsetMap>>,
    jobs: mpsc::Sender<WriteJob>,
}

impl OffsetStore {
    /// Opens (or creates) the store in `dir`, recovering the map and truncating a torn tail.
    pub(crate) fn open(dir: &Path, limits: &StoreLimits) -> Result<OffsetStore, OpenError> {
        let path = dir.join(OFFSETS_FILE);
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut map = OffsetMap::new();
        let good_len = if bytes.len() < MAGIC.len() {
            // New file, or a crash while writing the header of a new file: nothing was acknowledged.
            if !MAGIC.starts_with(&bytes) {
                return Err(OpenError::BadMagic { path });
            }
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(dir).map_err(io)?;
            MAGIC.len()
        } else {
            if &bytes[..MAGIC.len()] != MAGIC {
                return Err(OpenError::BadMagic { path });
            }
            let good = replay(&bytes, &mut map);
            if good < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    kept_bytes = good,
                    dropped_bytes = bytes.len() - good,
                    "offsets file has a torn or corrupt tail; truncating it"
                );
                file.set_len(good as u64).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
            good
        };
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let map = Arc::new(Mutex::new(map));
        let (jobs, rx) = mpsc::channel(limits.write_queue_jobs_max.max(1));
        let writer = Writer {
            dir: dir.to_path_buf(),
            path,
            file,
            len: good_len as u64,
            compacted_len: good_len as u64,
            file_bytes_max: limits.offsets_file_bytes_max,
            map: Arc::clone(&map),
            failed: false,
        };
        std::thread::Builder::new()
            .name("herald-offsets".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Spawn)?;
        Ok(OffsetStore { map, jobs })
    }

    /// Makes `records` durable and visible, in this order. Returns once they are on disk.
    pub(crate) async fn write(&self, records: Vec<OffsetRecord>) -> Result<(), GroupError> {
        self.enqueue(records).await?.wait().await
    }

    /// Queues `records` behind every job queued before, waiting only for room in the queue;
    /// the returned [`Written`] resolves once they are on disk. Jobs are written and applied
    /// in the order they were queued, so a caller that queues in request order commits in
    /// request order. An empty job is a barrier: it resolves once every job queued before it
    /// is written and visible.
    pub(crate) async fn enqueue(&self, records: Vec<OffsetRecord>) -> Result<Written, GroupError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(WriteJob { records, done })
            .await
            .map_err(|_| GroupError::StoreFailed)?;
        Ok(Written(wait))
    }

    /// Reads the committed offsets under the store's lock.
    pub(crate) fn with_map<T>(&self, f: impl FnOnce(&OffsetMap) -> T) -> T {
        f(&self.map.lock())
    }
}

/// Applies every valid entry after the magic; returns the length of the valid prefix.
fn replay(bytes: &[u8], map: &mut OffsetMap) -> usize {
    let mut pos = MAGIC.len();
    while bytes.len() - pos >= FRAME_HEADER_BYTES {
        let header = &bytes[pos..pos + FRAME_HEADER_BYTES];
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_len > ENTRY_BYTES_MAX || bytes.len() - pos - FRAME_HEADER_BYTES < body_len {
            break;
        }
        let body = &bytes[pos + FRAME_HEADER_BYTES..pos + FRAME_HEADER_BYTES + body_len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Some(record) = OffsetRecord::decode(body) else {
            break;
        };
        record.apply(map);
        pos += FRAME_HEADER_BYTES + body_len;
    }
    pos
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    compacted_len: u64,
    file_bytes_max: u64,
    map: Arc<Mutex<OffsetMap>>,
    failed: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteJob>) {
        // Group commit: everything queued while the previous sync ran shares the next one.
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < 1024 {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let result = self.persist(&jobs);
            if result.is_ok() {
                let mut map = self.map.lock();
                for job in &jobs {
                    for record in &job.records {
                        record.clone().apply(&mut map);
                    }
                }
            }
            for job in jobs {
                // The committer may have gone away (connection closed); the commit stands anyway.
                let _ = job.done.send(result.clone());
            }
            if result.is_ok() && self.len > self.file_bytes_max && self.len > 4 * self.compacted_len
            {
                if let Err(error) = self.compact() {
                    tracing::error!(%error, path = %self.path.display(), "compacting the offsets file failed; refusing further commits");
                    self.failed = true;
                }
            }
        }
    }

    fn persist(&mut self, jobs: &[WriteJob]) -> Result<(), GroupError> {
        if self.failed {
            return Err(GroupError::StoreFailed);
        }
        let mut buf = Vec::new();
        for job in jobs {
            for record in &job.records {
                record.encode(&mut buf);
            }
        }
        if buf.is_empty() {
            // Only barriers: nothing to make durable.
            return Ok(());
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "writing committed offsets failed; refusing further commits");
                self.failed = true;
                Err(GroupError::StoreFailed)
            }
        }
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{OFFSETS_FILE}.tmp"));
        let mut buf = MAGIC.to_vec();
        {
            let map = self.map.lock();
            for (group, offsets) in map.iter() {
                for ((topic, partition), value) in offsets {
                    OffsetRecord::Commit {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: value.clone(),
                    }
                    .encode(&mut buf);
                }
            }
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.dir)?;
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.seek(SeekFrom::End(0))?;
        self.file = file;
        self.len = buf.len() as u64;
        self.compacted_len = self.len;
        tracing::info!(path = %self.path.display(), bytes = self.len, "compacted the offsets file");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            write_queue_jobs_max: 16,
            offsets_file_bytes_max: 1 << 20,
        }
    }

    fn commit(group: &str, partition: i32, offset: i64) -> OffsetRecord {
        OffsetRecord::Commit {
            group: group.into(),
            topic: "t".into(),
            partition,
            value: CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: format!("m{offset}"),
                commit_timestamp_ms: 7,
            },
        }
    }

    #[tokio::test]
    async fn commits_survive_reopen_and_deletions_apply() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path(), &limits()).unwrap();
            store
                .write(vec![
                    commit("g", 0, 5),
                    commit("g", 1, 9),
                    commit("h", 0, 1),
                ])
                .await
                .unwrap();
            store
                .write(vec![OffsetRecord::DeletePartition {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 1,
                }])
                .await
                .unwrap();
            store
                .write(vec![OffsetRecord::DeleteGroup { group: "h".into() }])
                .await
                .unwrap();
        }
        let store = OffsetStore::open(dir.path(), &limits()).unwrap();
        store.with_map(|map| {
            assert_eq!(map.len(), 1);
            let g = &map["g"];
            assert_eq!(g.len(), 1);
            assert_eq!(g[&("t".to_string(), 0)].offset, 5);
            assert_eq!(g[&("t".to_string(), 0)].metadata, "m5");
        });
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_the_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path(), &limits()).unwrap();
            store.write(vec![commit("g", 0, 5)]).await.unwrap();
            store.write(vec![commit("g", 0, 6)]).await.unwrap();
        }
        let path = dir.path().join(OFFSETS_FILE);
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the last entry must recover exactly the first commit.
        let mut one = Vec::new();
        commit("g", 0, 6).encode(&mut one);
        for cut in 1..one.len() {
            std::fs::write(&path, &full[..full.len() - cut]).unwrap();
            let store = OffsetStore::open(dir.path(), &limits()).unwrap();
            store.with_map(|map| assert_eq!(map["g"][&("t".to_string(), 0)].offset, 5));
            drop(store);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                full.len() - one.len()
            );
        }
        // A flipped bit in the last entry's body is a corrupt tail, not a silent value.
        let mut bad = full.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let store = OffsetStore::open(dir.path(), &limits()).unwrap();
        store.with_map(|map| assert_eq!(map["g"][&("t".to_string(), 0)].offset, 5));
        // Appends after recovery land after the kept prefix.
        store.write(vec![commit("g", 0, 8)]).await.unwrap();
        drop(store);
        let store = OffsetStore::open(dir.path(), &limits()).unwrap();
        store.with_map(|map| assert_eq!(map["g"][&("t".to_string(), 0)].offset, 8));
    }

    #[tokio::test]
    async fn compaction_keeps_live_offsets_only() {
        let dir = tempfile::tempdir().unwrap();
        let small = StoreLimits {
            write_queue_jobs_max: 16,
            offsets_file_bytes_max: 2_000,
        };
        {
            let store = OffsetStore::open(dir.path(), &small).unwrap();
            for i in 0..500 {
                store
                    .write(vec![commit("g", i % 3, i64::from(i))])
                    .await
                    .unwrap();
            }
        }
        let len = std::fs::metadata(dir.path().join(OFFSETS_FILE))
            .unwrap()
            .len();
        assert!(len < 4_000, "file was not compacted: {len} bytes");
        let store = OffsetStore::open(dir.path(), &small).unwrap();
        store.with_map(|map| {
            let g = &map["g"];
            assert_eq!(g.len(), 3);
            assert_eq!(g[&("t".to_string(), 0)].offset, 498);
            assert_eq!(g[&("t".to_string(), 1)].offset, 499);
            assert_eq!(g[&("t".to_string(), 2)].offset, 497);
        });
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OFFSETS_FILE), b"something else entirely").unwrap();
        assert!(matches!(
            OffsetStore::open(dir.path(), &limits()),
            Err(OpenError::BadMagic { .. })
        ));
    }
}
