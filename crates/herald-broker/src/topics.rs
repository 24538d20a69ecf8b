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

use herald_storage::{AppendError, AppendInfo, LogConfig, PartitionLog};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use crate::BrokerConfig;
use crate::group_commit::GroupCommit;
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
    /// The high watermark after the latest append; long-polling fetchers wait on changes.
    appended: watch::Sender<u64>,
    /// Producers waiting for `acks=all` (see [`crate::group_commit`]).
    pub(crate) group_commit: GroupCommit,
}

impl Partition {
    fn open(
        dir: &Path,
        index: i32,
        config: LogConfig,
    ) -> Result<Partition, herald_storage::OpenError> {
        let log = PartitionLog::open(dir, config)?;
        let high_watermark = log.offsets().high_watermark;
        Ok(Partition {
            index,
            log,
            appended: watch::channel(high_watermark).0,
            group_commit: GroupCommit::default(),
        })
    }

    /// Appends producer batches and wakes fetchers waiting on this partition.
    pub(crate) fn append(&self, batches: &[u8]) -> Result<AppendInfo, AppendError> {
        let info = self.log.append(batches)?;
        if !info.duplicate {
            self.appended.send_replace(info.last_offset + 1);
        }
        Ok(info)
    }

    /// A receiver that sees the next append (subscribe before reading to miss none).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

/// A topic: name, id, config overrides and partitions.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) id: Uuid,
    overrides: RwLock<Overrides>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub(crate) fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(index).ok()?;
        self.partitions.read().get(index).cloned()
    }

    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
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
    #[error("storage failed: {0}")]
    Storage(String),
}

impl CreatePartitionsError {
    pub(crate) fn problem(&self) -> Problem {
        match self {
            CreatePartitionsError::Unknown(_) => Problem::UnknownTopicOrPartition,
            CreatePartitionsError::Count { .. } => Problem::InvalidPartitions,
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
        remove_deleted_dirs(&broker.data_dir);
        let mut map = BTreeMap::new();
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
                let partition = Partition::open(&dir, index, config.clone()).map_err(|source| {
                    TopicsOpenError::Partition {
                        topic: record.name.clone(),
                        partition: index,
                        source,
                    }
                })?;
                partitions.push(Arc::new(partition));
            }
            map.insert(
                record.name.clone(),
                Arc::new(Topic {
                    name: record.name,
                    id: record.id,
                    overrides: RwLock::new(record.configs),
                    partitions: RwLock::new(partitions),
                }),
            );
        }
        Ok(Topics {
            broker: broker.clone(),
            map: RwLock::new(map),
            change: Mutex::new(()),
        })
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
        });
        if validate_only {
            return Ok(topic);
        }
        let mut partitions = Vec::new();
        for index in 0..count {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let dir = partition_dir(&self.broker.data_dir, name, index);
            let partition = Partition::open(&dir, index, config.clone())
                .map_err(|error| CreateTopicError::Storage(error.to_string()))?;
            partitions.push(Arc::new(partition));
        }
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
        for partition in topic.partitions() {
            // Housekeeping that already holds the partition must not write into a directory
            // that is going away.
            partition.log.retire();
            let dir = partition_dir(&self.broker.data_dir, name, partition.index);
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
        if validate_only {
            return Ok(());
        }
        let config = topic_config::log_config(&self.broker, &topic.overrides())
            .map_err(|error| CreatePartitionsError::Storage(error.to_string()))?;
        let mut added = Vec::new();
        for index in current..requested {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let dir = partition_dir(&self.broker.data_dir, name, index);
            let partition = Partition::open(&dir, index, config.clone())
                .map_err(|error| CreatePartitionsError::Storage(error.to_string()))?;
            added.push(Arc::new(partition));
        }
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
        for partition in topic.partitions() {
            partition
                .log
                .set_config(config.clone())
                .map_err(|error| AlterConfigError::Storage(error.to_string()))?;
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
        let mut failures = 0;
        for topic in self.list() {
            for partition in topic.partitions() {
                if let Err(error) = partition.log.flush() {
                    failures += 1;
                    warn!(topic = %topic.name, partition = partition.index, %error, "flush failed");
                }
            }
        }
        failures
    }

    /// Runs every partition's housekeeping once; returns the segments retention deleted.
    pub(crate) fn maintain_all(&self) -> u64 {
        let mut deleted = 0;
        for topic in self.list() {
            for partition in topic.partitions() {
                match partition.log.maintain() {
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

    /// (topics, partitions, bytes on disk).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let topics = self.list();
        let mut partitions = 0u64;
        let mut bytes = 0u64;
        for topic in &topics {
            for partition in topic.partitions() {
                partitions += 1;
                bytes += partition.log.size_bytes();
            }
        }
        (topics.len() as u64, partitions, bytes)
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
