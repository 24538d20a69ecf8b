//! Topics and their partitions on the storage engine: creation (explicit and automatic),
//! deletion, partition growth, config changes, and the metadata file that makes them survive
//! restarts.
//!
//! Layout of the data directory, as Kafka's: one directory per partition, `<topic>-<n>/`, plus
//! `topics.json` with each topic's id, partition count and config overrides. The metadata file
//! is replaced atomically (write a temporary file, fsync, rename, fsync the directory) before a
//! change is acknowledged, so a crash leaves either the old or the new metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_storage::{AppendError, AppendInfo, Env, LogConfig, OpenError, PartitionLog};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::BrokerConfig;
use crate::group_commit::GroupCommit;
use crate::limits::{self, Limit, LimitCounters};
use crate::problem::Problem;
use crate::topic_config::{self, InvalidConfig, Overrides};

/// Name of the topic metadata file in the data directory.
pub(crate) const TOPICS_FILE: &str = "topics.json";
/// Longest topic name Kafka allows.
const TOPIC_NAME_CHARS_MAX: usize = 249;
/// Suffix of partition directories of deleted topics, removed in the background.
const DELETED_SUFFIX: &str = ".deleted";

/// One partition: its log and the signal that wakes fetchers waiting for new data.
pub(crate) struct Partition {
    pub(crate) index: i32,
    pub(crate) log: PartitionLog,
    /// The end of what readers may see ([`herald_storage::Offsets::visible_end`]): after an
    /// append, or after the fsync that covers it when the log fsyncs before acknowledging.
    /// Long-polling fetchers wait on changes.
    visible: watch::Sender<u64>,
    /// Producers waiting for `acks=all` (see [`crate::group_commit`]).
    pub(crate) group_commit: GroupCommit,
    /// Where an append refused by a resource limit is counted.
    limits: Arc<LimitCounters>,
}

impl Partition {
    fn open(
        dir: &Path,
        index: i32,
        config: LogConfig,
        env: &Env,
        limits: &Arc<LimitCounters>,
    ) -> Result<Partition, OpenError> {
        let log = PartitionLog::open_with(dir, config, env.clone())?;
        let visible_end = log.offsets().visible_end;
        Ok(Partition {
            index,
            log,
            visible: watch::channel(visible_end).0,
            group_commit: GroupCommit::default(),
            limits: limits.clone(),
        })
    }

    /// Appends producer batches and wakes fetchers waiting on this partition.
    pub(crate) fn append(&self, batches: &[u8]) -> Result<AppendInfo, AppendError> {
        let info = self.log.append(batches).inspect_err(|error| {
            if let AppendError::Io(io) = error {
                if let Some(limit) = limits::limit_of(io) {
                    let text = limits::message(limit, self.limits.open_files_max, (0, 0));
                    self.limits.hit(limit, &format!("append refused: {text}"));
                }
            }
        })?;
        if !info.duplicate {
            self.wake_readers();
        }
        Ok(info)
    }

    /// Wakes the fetchers waiting on this partition if the end of what they may read moved.
    pub(crate) fn wake_readers(&self) {
        let visible_end = self.log.offsets().visible_end;
        self.visible.send_if_modified(|seen| {
            let moved = visible_end != *seen;
            *seen = visible_end;
            moved
        });
    }

    /// What a client is told when `error` is a resource limit (descriptors, disk space)
    /// rather than a failing disk: the limit and the setting that raises it.
    pub(crate) fn limit_message(&self, error: &std::io::Error) -> Option<String> {
        limits::limit_of(error)
            .map(|limit| limits::message(limit, self.limits.open_files_max, (0, 0)))
    }

    /// Counts and logs a read refused by a resource limit; `true` if `error` was one.
    pub(crate) fn read_hit_limit(&self, error: &std::io::Error) -> bool {
        let Some(limit) = limits::limit_of(error) else {
            return false;
        };
        let text = limits::message(limit, self.limits.open_files_max, (0, 0));
        self.limits.hit(limit, &format!("read refused: {text}"));
        true
    }

    /// A receiver that sees the next move of the visible end (subscribe before reading to miss
    /// none).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }
}

/// What opening a partition needs, shared by every slot of the broker.
struct Opener {
    env: Env,
    limits: Arc<LimitCounters>,
}

/// A partition as the broker knows it before and after its log is open. After a restart the
/// logs are opened in the background, so the broker serves at once; a request for a partition
/// not open yet opens it itself (or waits for the opener already at it), so it waits at most
/// for that one partition's recovery.
pub(crate) struct PartitionSlot {
    index: i32,
    dir: PathBuf,
    opener: Arc<Opener>,
    /// The config the log opens with; AlterConfigs keeps it current until then.
    config: Mutex<LogConfig>,
    loaded: std::sync::OnceLock<Arc<Partition>>,
    /// Held while opening, so one caller recovers the log and the others wait for it; `true`
    /// once the partition is deleted, after which it is never opened.
    opening: Mutex<bool>,
}

impl PartitionSlot {
    fn new(index: i32, dir: PathBuf, opener: &Arc<Opener>, config: LogConfig) -> PartitionSlot {
        PartitionSlot {
            index,
            dir,
            opener: opener.clone(),
            config: Mutex::new(config),
            loaded: std::sync::OnceLock::new(),
            opening: Mutex::new(false),
        }
    }

    fn with(partition: Partition, dir: PathBuf, opener: &Arc<Opener>, config: LogConfig) -> Self {
        let slot = PartitionSlot::new(partition.index, dir, opener, config);
        let _ = slot.loaded.set(Arc::new(partition));
        slot
    }

    /// The partition if its log is open.
    fn if_loaded(&self) -> Option<Arc<Partition>> {
        self.loaded.get().cloned()
    }

    /// The partition, opening (recovering) its log first if no one has yet.
    fn get(&self) -> Result<Arc<Partition>, OpenError> {
        if let Some(partition) = self.loaded.get() {
            return Ok(partition.clone());
        }
        let deleted = self.opening.lock();
        if let Some(partition) = self.loaded.get() {
            return Ok(partition.clone());
        }
        if *deleted {
            return Err(OpenError::Io {
                path: self.dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "partition deleted"),
            });
        }
        let config = self.config.lock().clone();
        let partition = Arc::new(Partition::open(
            &self.dir,
            self.index,
            config,
            &self.opener.env,
            &self.opener.limits,
        )?);
        let _ = self.loaded.set(partition.clone());
        Ok(partition)
    }

    /// Marks the partition deleted: never opened from now on, its log retired if open.
    fn retire(&self) {
        let mut deleted = self.opening.lock();
        *deleted = true;
        if let Some(partition) = self.loaded.get() {
            partition.log.retire();
        }
    }
}

/// A topic: name, id, config overrides and partitions.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) id: Uuid,
    overrides: RwLock<Overrides>,
    partitions: RwLock<Vec<Arc<PartitionSlot>>>,
    /// Bytes and records produced to and fetched from it, for `/metrics`.
    pub(crate) traffic: TopicTraffic,
}

/// A topic's traffic since the broker started (relaxed atomics on the request path).
#[derive(Debug, Default)]
pub(crate) struct TopicTraffic {
    pub(crate) bytes_in: std::sync::atomic::AtomicU64,
    pub(crate) records_in: std::sync::atomic::AtomicU64,
    pub(crate) bytes_out: std::sync::atomic::AtomicU64,
    pub(crate) records_out: std::sync::atomic::AtomicU64,
}

impl TopicTraffic {
    /// Counts a produce's appended batches.
    pub(crate) fn record_in(&self, bytes: u64, records: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes_in.fetch_add(bytes, Relaxed);
        self.records_in.fetch_add(records, Relaxed);
    }

    /// Counts a fetch's returned batches.
    pub(crate) fn record_out(&self, bytes: u64, records: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes_out.fetch_add(bytes, Relaxed);
        self.records_out.fetch_add(records, Relaxed);
    }
}

impl Topic {
    /// The partition, its log opened first if the background opening has not reached it.
    pub(crate) fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(index).ok()?;
        let slot = self.partitions.read().get(index).cloned()?;
        match slot.get() {
            Ok(partition) => Some(partition),
            Err(error) => {
                warn!(topic = %self.name, partition = index, %error, "cannot open partition");
                None
            }
        }
    }

    /// Every partition, each log opened first if needed.
    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        (0..self.partition_count())
            .filter_map(|index| self.partition(i32::try_from(index).unwrap_or(i32::MAX)))
            .collect()
    }

    /// The partitions whose logs are open; housekeeping and flushing need no others.
    pub(crate) fn loaded_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .iter()
            .filter_map(|slot| slot.if_loaded())
            .collect()
    }

    /// Partitions not opened yet (still to be recovered after a restart).
    pub(crate) fn partitions_loading(&self) -> usize {
        self.partitions
            .read()
            .iter()
            .filter(|slot| slot.loaded.get().is_none())
            .count()
    }

    pub(crate) fn partition_count(&self) -> usize {
        self.partitions.read().len()
    }

    pub(crate) fn overrides(&self) -> Overrides {
        self.overrides.read().clone()
    }
}

/// What `topics.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    format: u32,
    topics: Vec<TopicRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: Uuid,
    partitions: u32,
    configs: BTreeMap<String, String>,
}

const TOPICS_FILE_FORMAT: u32 = 1;

/// Every topic of the broker.
pub(crate) struct Topics {
    broker: BrokerConfig,
    /// The storage environment every partition shares: one open-file cache bounded by
    /// `open_files_max`, and one lock on the data directory instead of one per partition.
    env: Env,
    /// Refusals by a resource limit, for `/metrics`.
    pub(crate) limits: Arc<LimitCounters>,
    opener: Arc<Opener>,
    /// The background opening of the partitions found at start, stopped at shutdown.
    loader: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop_loading: Arc<std::sync::atomic::AtomicBool>,
    map: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises changes (create, delete, grow, alter) so that each one's metadata write
    /// reflects exactly the changes before it.
    change: Mutex<()>,
}

/// Loading the topics at start failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicsOpenError {
    /// The metadata file could not be read or parsed.
    #[error("cannot read topic metadata {path}: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another process (a second broker) has the data directory open.
    #[error(
        "data directory {path} is in use by another process (is another broker running on it?)"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// A partition log could not be opened.
    #[error("cannot open partition {topic}-{partition}: {source}")]
    Partition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The storage's reason.
        source: herald_storage::OpenError,
    },
    /// A stored topic config is no longer valid.
    #[error("topic {topic} has an invalid stored config: {message}")]
    Config {
        /// The topic.
        topic: String,
        /// The reason.
        message: String,
    },
}

/// CreateTopics (or auto-creation) failed for one topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CreateTopicError {
    #[error("topic `{0}` already exists")]
    Exists(String),
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("partition count {requested} is not between 1 and {max}")]
    Partitions { requested: i64, max: u32 },
    #[error("replication factor {0} is not possible on a single broker; use 1 or -1")]
    ReplicationFactor(i16),
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error("{message}")]
    Limit { limit: Limit, message: String },
    #[error("storage failed: {0}")]
    Storage(String),
}

impl CreateTopicError {
    pub(crate) fn problem(&self) -> Problem {
        match self {
            CreateTopicError::Exists(_) => Problem::TopicAlreadyExists,
            CreateTopicError::InvalidName { .. } => Problem::InvalidTopic,
            CreateTopicError::Partitions { .. } => Problem::InvalidPartitions,
            CreateTopicError::ReplicationFactor(_) => Problem::InvalidReplicationFactor,
            CreateTopicError::Config(error) => error.problem(),
            CreateTopicError::Limit { .. } => Problem::ResourceLimit,
            CreateTopicError::Storage(_) => Problem::StorageError,
        }
    }
}

/// DeleteTopics failed for one topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DeleteTopicError {
    #[error("unknown topic `{0}`")]
    Unknown(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

impl DeleteTopicError {
    pub(crate) fn problem(&self) -> Problem {
        match self {
            DeleteTopicError::Unknown(_) => Problem::UnknownTopicOrPartition,
            DeleteTopicError::Storage(_) => Problem::StorageError,
        }
    }
}

/// CreatePartitions failed for one topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CreatePartitionsError {
    #[error("unknown topic `{0}`")]
    Unknown(String),
    #[error(
        "topic has {current} partitions; the new count {requested} must be larger and at most {max}"
    )]
    Count {
        current: usize,
        requested: i64,
        max: u32,
    },
    #[error("{message}")]
    Limit { limit: Limit, message: String },
    #[error("storage failed: {0}")]
    Storage(String),
}

impl CreatePartitionsError {
    pub(crate) fn problem(&self) -> Problem {
        match self {
            CreatePartitionsError::Unknown(_) => Problem::UnknownTopicOrPartition,
            CreatePartitionsError::Count { .. } => Problem::InvalidPartitions,
            CreatePartitionsError::Limit { .. } => Problem::ResourceLimit,
            CreatePartitionsError::Storage(_) => Problem::StorageError,
        }
    }
}

/// AlterConfigs / IncrementalAlterConfigs failed for one topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AlterConfigError {
    #[error("unknown topic `{0}`")]
    Unknown(String),
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error("storage failed: {0}")]
    Storage(String),
}

impl AlterConfigError {
    pub(crate) fn problem(&self) -> Problem {
        match self {
            AlterConfigError::Unknown(_) => Problem::UnknownTopicOrPartition,
            AlterConfigError::Config(error) => error.problem(),
            AlterConfigError::Storage(_) => Problem::StorageError,
        }
    }
}

/// Checks a topic name against Kafka's rules.
pub(crate) fn validate_name(name: &str) -> Result<(), CreateTopicError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed")
    } else if name.len() > TOPIC_NAME_CHARS_MAX {
        Some("longer than 249 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        Some("only ASCII letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CreateTopicError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Topics {
    /// Loads every topic recorded in the data directory and opens its partitions.
    pub(crate) fn open(broker: &BrokerConfig) -> Result<Topics, TopicsOpenError> {
        let path = broker.data_dir.join(TOPICS_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<TopicsFile>(&bytes).map_err(|error| {
                TopicsOpenError::Metadata {
                    path: path.clone(),
                    message: error.to_string(),
                }
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => TopicsFile::default(),
            Err(error) => {
                return Err(TopicsOpenError::Metadata {
                    path,
                    message: error.to_string(),
                });
            }
        };
        if file.format > TOPICS_FILE_FORMAT {
            return Err(TopicsOpenError::Metadata {
                path,
                message: format!("format {} is newer than this broker's", file.format),
            });
        }
        let env = storage_env(broker).map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                TopicsOpenError::Locked {
                    path: broker.data_dir.clone(),
                }
            } else {
                TopicsOpenError::Metadata {
                    path: broker.data_dir.join(herald_storage::LOCK_FILE),
                    message: error.to_string(),
                }
            }
        })?;
        let limits = Arc::new(LimitCounters::new(env.files.open_files_max() as u64));
        remove_deleted_dirs(&broker.data_dir);
        let opener = Arc::new(Opener {
            env: env.clone(),
            limits: limits.clone(),
        });
        // No partition is opened here: the broker serves at once and the logs are opened in
        // the background, in parallel (after a clean shutdown each reads a few small files;
        // after a crash only partitions written since their last checkpoint scan anything).
        let mut map = BTreeMap::new();
        let mut slots = Vec::new();
        for record in file.topics {
            let config = topic_config::log_config(broker, &record.configs).map_err(|error| {
                TopicsOpenError::Config {
                    topic: record.name.clone(),
                    message: error.message,
                }
            })?;
            let mut partitions = Vec::new();
            for index in 0..record.partitions {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                let dir = partition_dir(&broker.data_dir, &record.name, index);
                let slot = Arc::new(PartitionSlot::new(index, dir, &opener, config.clone()));
                slots.push(slot.clone());
                partitions.push(slot);
            }
            map.insert(
                record.name.clone(),
                Arc::new(Topic {
                    name: record.name,
                    id: record.id,
                    overrides: RwLock::new(record.configs),
                    partitions: RwLock::new(partitions),
                    traffic: TopicTraffic::default(),
                }),
            );
        }
        let stop_loading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loader = {
            let stop = stop_loading.clone();
            let topics = map.len();
            std::thread::Builder::new()
                .name("herald-open".to_string())
                .spawn(move || load_in_background(slots, topics, &stop))
                .map_err(|error| TopicsOpenError::Metadata {
                    path: path.clone(),
                    message: format!("cannot start the partition opener: {error}"),
                })?
        };
        Ok(Topics {
            broker: broker.clone(),
            env,
            limits,
            opener,
            loader: Mutex::new(Some(loader)),
            stop_loading,
            map: RwLock::new(map),
            change: Mutex::new(()),
        })
    }

    /// Stops the background opening of partitions and waits for the opens in progress.
    pub(crate) fn stop_loading(&self) {
        self.stop_loading
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(loader) = self.loader.lock().take() {
            let _ = loader.join();
        }
    }

    /// Partitions over all topics.
    pub(crate) fn partition_total(&self) -> u64 {
        self.map
            .read()
            .values()
            .map(|topic| topic.partition_count() as u64)
            .sum()
    }

    /// Refuses adding `adding` partitions beyond `partitions_max`, as a limit hit.
    fn check_partitions_max(&self, adding: u64) -> Result<(), (Limit, String)> {
        let total = self.partition_total() + adding;
        let max = u64::from(self.broker.partitions_max);
        if total <= max {
            return Ok(());
        }
        let message = limits::message(
            Limit::Partitions,
            self.env.files.open_files_max() as u64,
            (total, max),
        );
        self.limits.hit(Limit::Partitions, &message);
        Err((Limit::Partitions, message))
    }

    /// Opens new partitions of `topic` in parallel; a resource limit comes back as what it is.
    fn create_partitions(
        &self,
        topic: &str,
        indexes: std::ops::Range<usize>,
        config: &LogConfig,
    ) -> Result<Vec<Arc<PartitionSlot>>, (Option<Limit>, String)> {
        let jobs: Vec<_> = indexes
            .map(|index| {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                let dir = partition_dir(&self.broker.data_dir, topic, index);
                (dir, index, config.clone())
            })
            .collect();
        let mut partitions = Vec::new();
        let dirs: Vec<PathBuf> = jobs.iter().map(|(dir, _, _)| dir.clone()).collect();
        for (result, dir) in open_partitions(jobs, &self.env, &self.limits)
            .into_iter()
            .zip(dirs)
        {
            match result {
                Ok(partition) => partitions.push(Arc::new(PartitionSlot::with(
                    partition,
                    dir,
                    &self.opener,
                    config.clone(),
                ))),
                Err(error) => {
                    let limit = match &error {
                        OpenError::Io { source, .. } => limits::limit_of(source),
                        _ => None,
                    };
                    return Err(match limit {
                        Some(limit) => {
                            let message = limits::message(
                                limit,
                                self.env.files.open_files_max() as u64,
                                (0, 0),
                            );
                            self.limits.hit(limit, &message);
                            (Some(limit), message)
                        }
                        None => (None, error.to_string()),
                    });
                }
            }
        }
        Ok(partitions)
    }

    /// The open-file cache's counters, for `/metrics`.
    pub(crate) fn file_stats(&self) -> herald_storage::FileCacheStats {
        self.env.files.stats()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.map.read().get(name).cloned()
    }

    pub(crate) fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.map
            .read()
            .values()
            .find(|topic| topic.id == id)
            .cloned()
    }

    pub(crate) fn list(&self) -> Vec<Arc<Topic>> {
        self.map.read().values().cloned().collect()
    }

    /// The topic, created with the defaults if it does not exist and auto-creation is on.
    /// `Ok(None)` when it does not exist and may not be created.
    pub(crate) fn get_or_create(&self, name: &str) -> Result<Option<Arc<Topic>>, CreateTopicError> {
        if let Some(topic) = self.get(name) {
            return Ok(Some(topic));
        }
        if !self.broker.auto_create_topics_enable {
            return Ok(None);
        }
        match self.create(name, -1, -1, Overrides::new(), false) {
            Ok(topic) => {
                info!(topic = name, "auto-created topic");
                Ok(Some(topic))
            }
            // Another request created it in between: fine.
            Err(CreateTopicError::Exists(_)) => Ok(self.get(name)),
            Err(error) => Err(error),
        }
    }

    /// Creates a topic; `num_partitions` and `replication_factor` of -1 take the defaults.
    /// With `validate_only` everything is checked and nothing created.
    pub(crate) fn create(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        overrides: Overrides,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        validate_name(name)?;
        if replication_factor != -1 && replication_factor != 1 {
            return Err(CreateTopicError::ReplicationFactor(replication_factor));
        }
        let count = if num_partitions == -1 {
            self.broker.num_partitions
        } else {
            u32::try_from(num_partitions)
                .ok()
                .filter(|count| (1..=self.broker.partitions_per_topic_max).contains(count))
                .ok_or(CreateTopicError::Partitions {
                    requested: i64::from(num_partitions),
                    max: self.broker.partitions_per_topic_max,
                })?
        };
        let config = topic_config::log_config(&self.broker, &overrides)?;
        topic_config::report_inert(name, &overrides);
        let _change = self.change.lock();
        if self.map.read().contains_key(name) {
            return Err(CreateTopicError::Exists(name.to_string()));
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            overrides: RwLock::new(overrides),
            partitions: RwLock::new(Vec::new()),
            traffic: TopicTraffic::default(),
        });
        self.check_partitions_max(u64::from(count))
            .map_err(|(limit, message)| CreateTopicError::Limit { limit, message })?;
        if validate_only {
            return Ok(topic);
        }
        let partitions = self
            .create_partitions(name, 0..count as usize, &config)
            .map_err(|error| match error {
                (Some(limit), message) => CreateTopicError::Limit { limit, message },
                (None, message) => CreateTopicError::Storage(message),
            })?;
        *topic.partitions.write() = partitions;
        let mut next = self.map.read().clone();
        next.insert(name.to_string(), topic.clone());
        self.persist(&next)
            .map_err(|error| CreateTopicError::Storage(error.to_string()))?;
        *self.map.write() = next;
        Ok(topic)
    }

    /// Deletes a topic and, in the background, its data.
    pub(crate) fn delete(&self, name: &str) -> Result<(), DeleteTopicError> {
        let _change = self.change.lock();
        let mut next = self.map.read().clone();
        let Some(topic) = next.remove(name) else {
            return Err(DeleteTopicError::Unknown(name.to_string()));
        };
        self.persist(&next)
            .map_err(|error| DeleteTopicError::Storage(error.to_string()))?;
        *self.map.write() = next;
        // Rename first so that a topic of the same name can be created at once; the logs may
        // still be open in requests in flight, which is fine for unlinked files.
        let suffix = format!(".{}{DELETED_SUFFIX}", topic.id.simple());
        let slots = topic.partitions.read().clone();
        for slot in slots {
            // Housekeeping that already holds the partition must not write into a directory
            // that is going away, and a partition not open yet must not be opened any more.
            slot.retire();
            let dir = partition_dir(&self.broker.data_dir, name, slot.index);
            let mut target = dir.clone().into_os_string();
            target.push(&suffix);
            if let Err(error) = std::fs::rename(&dir, &target) {
                warn!(dir = %dir.display(), %error, "could not move a deleted partition aside");
            }
        }
        remove_deleted_dirs(&self.broker.data_dir);
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub(crate) fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), CreatePartitionsError> {
        let _change = self.change.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| CreatePartitionsError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        let max = self.broker.partitions_per_topic_max;
        let requested = usize::try_from(total).unwrap_or(0);
        if requested <= current || requested > max as usize {
            return Err(CreatePartitionsError::Count {
                current,
                requested: i64::from(total),
                max,
            });
        }
        self.check_partitions_max((requested - current) as u64)
            .map_err(|(limit, message)| CreatePartitionsError::Limit { limit, message })?;
        if validate_only {
            return Ok(());
        }
        let config = topic_config::log_config(&self.broker, &topic.overrides())
            .map_err(|error| CreatePartitionsError::Storage(error.to_string()))?;
        let added = self
            .create_partitions(name, current..requested, &config)
            .map_err(|error| match error {
                (Some(limit), message) => CreatePartitionsError::Limit { limit, message },
                (None, message) => CreatePartitionsError::Storage(message),
            })?;
        topic.partitions.write().extend(added);
        let map = self.map.read().clone();
        self.persist(&map)
            .map_err(|error| CreatePartitionsError::Storage(error.to_string()))
    }

    /// Replaces a topic's config overrides (after checking them) and applies them to its logs.
    pub(crate) fn set_overrides(
        &self,
        name: &str,
        overrides: Overrides,
        validate_only: bool,
    ) -> Result<(), AlterConfigError> {
        let _change = self.change.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| AlterConfigError::Unknown(name.to_string()))?;
        let config = topic_config::log_config(&self.broker, &overrides)?;
        if validate_only {
            return Ok(());
        }
        topic_config::report_inert(name, &overrides);
        let previous = std::mem::replace(&mut *topic.overrides.write(), overrides);
        let map = self.map.read().clone();
        if let Err(error) = self.persist(&map) {
            *topic.overrides.write() = previous;
            return Err(AlterConfigError::Storage(error.to_string()));
        }
        let slots = topic.partitions.read().clone();
        for slot in slots {
            // Under the opening lock, so a log being opened meanwhile gets the new config.
            let _opening = slot.opening.lock();
            *slot.config.lock() = config.clone();
            if let Some(partition) = slot.if_loaded() {
                partition
                    .log
                    .set_config(config.clone())
                    .map_err(|error| AlterConfigError::Storage(error.to_string()))?;
            }
        }
        Ok(())
    }

    /// Writes the metadata file for `map` atomically.
    fn persist(&self, map: &BTreeMap<String, Arc<Topic>>) -> std::io::Result<()> {
        let file = TopicsFile {
            format: TOPICS_FILE_FORMAT,
            topics: map
                .values()
                .map(|topic| TopicRecord {
                    name: topic.name.clone(),
                    id: topic.id,
                    partitions: u32::try_from(topic.partition_count()).unwrap_or(u32::MAX),
                    configs: topic.overrides(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        write_atomically(&self.broker.data_dir, TOPICS_FILE, &bytes)
    }

    /// fsyncs every partition; used at shutdown.
    pub(crate) fn flush_all(&self) -> usize {
        self.stop_loading();
        let mut failures = 0;
        for topic in self.list() {
            for partition in topic.loaded_partitions() {
                if let Err(error) = partition.log.flush() {
                    failures += 1;
                    warn!(topic = %topic.name, partition = partition.index, %error, "flush failed");
                }
            }
        }
        failures
    }

    /// Runs every partition's housekeeping once, retention included when `retention`; returns
    /// the segments retention deleted.
    pub(crate) fn maintain_all(&self, retention: bool) -> u64 {
        let mut deleted = 0;
        for topic in self.list() {
            for partition in topic.loaded_partitions() {
                match partition.log.maintain_with(retention) {
                    Ok(outcome) if outcome.segments_deleted > 0 => {
                        deleted += outcome.segments_deleted as u64;
                        info!(
                        topic = %topic.name,
                        partition = partition.index,
                        segments = outcome.segments_deleted,
                        bytes = outcome.bytes_deleted,
                        "retention deleted segments"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        warn!(topic = %topic.name, partition = partition.index, %error, "maintenance failed");
                    }
                }
            }
        }
        deleted
    }

    /// Every open compacted partition's cleaner progress, sorted by topic and partition.
    pub(crate) fn cleaner_progress(&self) -> Vec<crate::CleanerProgress> {
        let mut out = Vec::new();
        for topic in self.list() {
            for partition in topic.loaded_partitions() {
                if let Some(c) = partition.log.cleanable() {
                    out.push(crate::CleanerProgress {
                        topic: topic.name.clone(),
                        partition: partition.index,
                        dirty_bytes: c.dirty_bytes,
                        cleanable_bytes: c.cleanable_bytes,
                        cleaned_to_offset: c.cleaned_to,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// One log cleaner pass on the compacted partition most in need of it (due, and the
    /// dirtiest by ratio); `false` when none is due. Counts what it did.
    ///
    /// A pass cleans only below the partition's last stable offset's bound, so nothing of an
    /// open transaction is cleaned, and keeps the abort markers of the aborted transactions
    /// read_committed consumers are still told of; those it reports without a record left
    /// are no longer listed afterwards, which lets a later pass drop their markers.
    pub(crate) fn clean_dirtiest(
        &self,
        dedupe_buffer_bytes: u64,
        throttle: &herald_storage::Throttle,
        counters: &crate::stats::Counters,
        transactions: &crate::txn::Transactions,
    ) -> bool {
        // The log end is read before the coordinator is asked, so a transaction that opens
        // in between starts at or above it.
        let stable_bound = |topic: &Topic, partition: &Partition| {
            let end = partition.log.offsets().high_watermark;
            transactions
                .first_unstable(&topic.name, partition.index)
                .map_or(end, |first| first.min(end))
        };
        let mut best: Option<(u64, Arc<Topic>, Arc<Partition>)> = None;
        for topic in self.list() {
            for partition in topic.loaded_partitions() {
                let Some(c) = partition
                    .log
                    .cleanable_below(stable_bound(&topic, &partition))
                else {
                    continue;
                };
                let ratio = c.dirty_ratio_ppm();
                if c.due && best.as_ref().is_none_or(|(r, _, _)| ratio > *r) {
                    best = Some((ratio, topic.clone(), partition));
                }
            }
        }
        let Some((_, topic, partition)) = best else {
            return false;
        };
        let below = stable_bound(&topic, &partition);
        let listed = transactions.listed_abort_markers(&topic.name, partition.index);
        let abort_listed = |producer_id: i64, offset: u64| listed.contains(&(producer_id, offset));
        let bounds = herald_storage::CleanBounds {
            below,
            abort_listed: &abort_listed,
        };
        use crate::stats::Counters as C;
        match partition
            .log
            .clean_below(dedupe_buffer_bytes, throttle, &bounds)
        {
            Ok(out) => {
                C::add(&counters.cleaner_bytes_read, out.bytes_read);
                if out.held_back {
                    debug!(
                        topic = %topic.name,
                        partition = partition.index,
                        cleaned_to = out.cleaned_to,
                        "log cleaner held back by a transaction whose marker is not in a cleanable segment yet"
                    );
                }
                if out.swapped {
                    // Unlisted before the pass is counted, so a counted pass is a finished one.
                    let log_start = partition.log.offsets().log_start;
                    if let Err(error) = transactions.forget_aborted(
                        &topic.name,
                        partition.index,
                        log_start,
                        &out.abort_markers_without_data,
                    ) {
                        warn!(topic = %topic.name, partition = partition.index, %error, "cannot record the aborted transactions no longer listed; their markers stay");
                    }
                    C::add(&counters.cleaner_passes, 1);
                    C::add(
                        &counters.cleaner_bytes_reclaimed,
                        out.bytes_before.saturating_sub(out.bytes_after),
                    );
                    C::add(&counters.cleaner_records_removed, out.records_removed);
                    info!(
                        topic = %topic.name,
                        partition = partition.index,
                        bytes_before = out.bytes_before,
                        bytes_after = out.bytes_after,
                        records_removed = out.records_removed,
                        markers_removed = out.markers_removed,
                        cleaned_to = out.cleaned_to,
                        "log cleaner pass"
                    );
                }
                // A pass that swapped nothing in made no progress: wait before looking again.
                out.swapped
            }
            Err(error) => {
                C::add(&counters.cleaner_failures, 1);
                warn!(topic = %topic.name, partition = partition.index, %error, "log cleaner pass failed");
                false
            }
        }
    }

    /// (topics, partitions, bytes on disk of the partitions open).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let topics = self.list();
        let mut partitions = 0u64;
        let mut bytes = 0u64;
        for topic in &topics {
            partitions += topic.partition_count() as u64;
            for partition in topic.loaded_partitions() {
                bytes += partition.log.size_bytes();
            }
        }
        (topics.len() as u64, partitions, bytes)
    }

    /// Partitions whose logs are not open yet (being opened in the background after a start).
    pub(crate) fn partitions_loading(&self) -> u64 {
        self.list()
            .iter()
            .map(|topic| topic.partitions_loading() as u64)
            .sum()
    }
}

impl crate::group::TopicCatalog for Topics {
    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.get(topic)
            .map(|topic| i32::try_from(topic.partition_count()).unwrap_or(i32::MAX))
    }

    fn retention_ms(&self, topic: &str) -> Option<i64> {
        let topic = self.get(topic)?;
        topic_config::value(&self.broker, &topic.overrides(), topic_config::RETENTION_MS)
            .and_then(|value| value.parse().ok())
    }
}

/// The storage environment of a broker: one open-file cache of `open_files_max` files (derived
/// from the process limit when unset) and one lock on the data directory, held by every
/// partition, instead of a lock file (and descriptor) per partition.
fn storage_env(broker: &BrokerConfig) -> std::io::Result<Env> {
    let open_files_max = broker
        .open_files_max
        .unwrap_or_else(|| limits::derived_open_files_max(broker.connections_max));
    Env::default()
        .with_open_files_max(usize::try_from(open_files_max).unwrap_or(usize::MAX))
        .with_dir_lock(&broker.data_dir)
}

/// Threads opening partitions at once: opening waits mostly on the disk, so more than the
/// cores, but few enough not to starve the rest of the broker.
const OPEN_THREADS_MAX: usize = 8;

/// Opens every partition found at start, in parallel, until done or told to stop; a partition
/// that fails to open is logged and left to the first request for it to try again.
fn load_in_background(
    slots: Vec<Arc<PartitionSlot>>,
    topics: usize,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(OPEN_THREADS_MAX)
        .min(slots.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(i) else {
                        break;
                    };
                    // A topic deleted since the start is not opened (nor reported).
                    if *slot.opening.lock() {
                        continue;
                    }
                    if let Err(error) = slot.get() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(dir = %slot.dir.display(), %error, "cannot open partition; requests for it will try again");
                    }
                }
            });
        }
    });
    info!(
        topics,
        partitions = slots.len(),
        failed = failed.load(Ordering::Relaxed),
        stopped = stop.load(Ordering::SeqCst),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "opened partitions"
    );
}

/// Opens partitions in parallel, results in the order of `jobs`.
fn open_partitions(
    jobs: Vec<(PathBuf, i32, LogConfig)>,
    env: &Env,
    limits: &Arc<LimitCounters>,
) -> Vec<Result<Partition, OpenError>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(OPEN_THREADS_MAX)
        .min(jobs.len());
    if threads <= 1 {
        return jobs
            .iter()
            .map(|(dir, index, config)| Partition::open(dir, *index, config.clone(), env, limits))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Partition, OpenError>>> = Vec::new();
    results.resize_with(jobs.len(), || None);
    let results = Mutex::new(results);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((dir, index, config)) = jobs.get(i) else {
                        break;
                    };
                    let result = Partition::open(dir, *index, config.clone(), env, limits);
                    results.lock()[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(OpenError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other("partition open did not run"),
                })
            })
        })
        .collect()
}

/// `<data_dir>/<topic>-<partition>`.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Removes partition directories of deleted topics (left over if the broker stopped midway).
fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(DELETED_SUFFIX) {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                warn!(dir = %entry.path().display(), %error, "could not remove deleted partition");
            }
        }
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new content:
/// write a temporary file, fsync it, rename it over, fsync the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temp = dir.join(format!("{name}.tmp"));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_and_configs_survive_reopen_and_delete_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let broker = config(dir.path());
        let topics = Topics::open(&broker).unwrap();
        let mut overrides = Overrides::new();
        overrides.insert("retention.ms".into(), "60000".into());
        let created = topics.create("a", 3, 1, overrides.clone(), false).unwrap();
        topics.create("b", -1, -1, Overrides::new(), false).unwrap();
        topics.add_partitions("b", 2, false).unwrap();
        assert!(matches!(
            topics.create("a", 1, 1, Overrides::new(), false),
            Err(CreateTopicError::Exists(_))
        ));
        drop(topics);

        let topics = Topics::open(&broker).unwrap();
        let a = topics.get("a").unwrap();
        assert_eq!(a.id, created.id);
        assert_eq!(a.partition_count(), 3);
        assert_eq!(a.overrides(), overrides);
        assert_eq!(topics.get("b").unwrap().partition_count(), 2);

        topics.delete("a").unwrap();
        assert!(topics.get("a").is_none());
        assert!(!partition_dir(dir.path(), "a", 0).exists());
        drop(topics);
        let topics = Topics::open(&broker).unwrap();
        assert!(topics.get("a").is_none());
        assert!(topics.get("b").is_some());
    }

    #[test]
    fn validate_only_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(&config(dir.path())).unwrap();
        topics.create("v", 2, 1, Overrides::new(), true).unwrap();
        assert!(topics.get("v").is_none());
        assert!(!partition_dir(dir.path(), "v", 0).exists());
    }
}
