//! Topic configs under their Kafka names (`retention.ms`, `max.message.bytes`, ...): parsing,
//! validation, the broker-wide defaults behind them, and the storage `LogConfig` they become.
//!
//! The flush policy uses Kafka's `flush.ms` name: `0` fsyncs before `acks=all` is answered
//! (group commit, the default), a positive value fsyncs at most that many milliseconds after
//! an append without holding `acks=all` back, and `-1` (or Kafka's default
//! `9223372036854775807`) leaves flushing to the operating system and to shutdown.

use std::collections::BTreeMap;

use herald_storage::{CleanupPolicy, Compression, FlushPolicy, LogConfig, TimestampType};

use crate::BrokerConfig;
use crate::problem::Problem;

/// `retention.ms`.
pub(crate) const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`.
pub(crate) const RETENTION_BYTES: &str = "retention.bytes";
/// `segment.bytes`.
pub(crate) const SEGMENT_BYTES: &str = "segment.bytes";
/// `segment.ms`.
pub(crate) const SEGMENT_MS: &str = "segment.ms";
/// `cleanup.policy`.
pub(crate) const CLEANUP_POLICY: &str = "cleanup.policy";
/// `max.message.bytes`.
pub(crate) const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// `flush.ms`, the flush policy.
pub(crate) const FLUSH_MS: &str = "flush.ms";
/// `compression.type`.
pub(crate) const COMPRESSION_TYPE: &str = "compression.type";
/// `index.interval.bytes`.
pub(crate) const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
/// `message.timestamp.type`.
pub(crate) const TIMESTAMP_TYPE: &str = "message.timestamp.type";
/// `message.timestamp.before.max.ms`.
pub(crate) const TIMESTAMP_BEFORE_MAX_MS: &str = "message.timestamp.before.max.ms";
/// `message.timestamp.after.max.ms`.
pub(crate) const TIMESTAMP_AFTER_MAX_MS: &str = "message.timestamp.after.max.ms";
/// `message.timestamp.difference.max.ms`, Kafka's older bound on both directions.
pub(crate) const TIMESTAMP_DIFFERENCE_MAX_MS: &str = "message.timestamp.difference.max.ms";
/// `delete.retention.ms`.
pub(crate) const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// `min.cleanable.dirty.ratio`.
pub(crate) const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
/// `min.compaction.lag.ms`.
pub(crate) const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
/// `max.compaction.lag.ms`.
pub(crate) const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";
/// `remote.storage.enable`.
pub(crate) const REMOTE_STORAGE_ENABLE: &str = "remote.storage.enable";

/// What values a config takes, as Kafka defines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// A 64-bit integer of at least `min`.
    Long { min: i64 },
    /// A 32-bit integer in `min..=max`.
    Int { min: i32, max: i32 },
    /// A number in `min..=max`.
    Double { min: f64, max: f64 },
    /// `true` or `false`.
    Boolean,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of these words.
    List(&'static [&'static str]),
    /// `*`, empty, or `partition:broker` pairs separated by commas.
    ReplicaList,
    /// A Kafka version such as `3.0-IV1`.
    Version,
}

/// What a config does on Herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Herald implements it.
    Applied,
    /// Accepted and reported so Kafka tools and applications run unchanged, with no effect on
    /// a single broker; the text says why.
    None(&'static str),
}

/// Where a config's default comes from.
#[derive(Debug, Clone, Copy)]
enum Default {
    /// Kafka's default, fixed.
    Fixed(&'static str),
    /// A broker setting.
    Broker(fn(&BrokerConfig) -> String),
}

/// One topic config Kafka defines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) effect: Effect,
    default: Default,
}

const REPLICATION: &str = "a single broker has no replicas to throttle or elect";
const TIERED: &str = "tiered storage is not available";
const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Kafka defines, in the order DescribeConfigs lists them.
pub(crate) const SPECS: &[Spec] = &[
    Spec {
        name: CLEANUP_POLICY,
        kind: Kind::List(&["delete", "compact"]),
        effect: Effect::Applied,
        default: Default::Fixed("delete"),
    },
    Spec {
        name: "compression.gzip.level",
        kind: Kind::Int { min: -1, max: 9 },
        effect: Effect::None("Herald recompresses at the codec's default level"),
        default: Default::Fixed("-1"),
    },
    Spec {
        name: "compression.lz4.level",
        kind: Kind::Int { min: 1, max: 17 },
        effect: Effect::None("Herald recompresses at the codec's default level"),
        default: Default::Fixed("9"),
    },
    Spec {
        name: COMPRESSION_TYPE,
        kind: Kind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        effect: Effect::Applied,
        default: Default::Fixed("producer"),
    },
    Spec {
        name: "compression.zstd.level",
        kind: Kind::Int {
            min: -131072,
            max: 22,
        },
        effect: Effect::None("Herald recompresses at the codec's default level"),
        default: Default::Fixed("3"),
    },
    Spec {
        name: DELETE_RETENTION_MS,
        kind: Kind::Long { min: 0 },
        effect: Effect::Applied,
        default: Default::Fixed("86400000"),
    },
    Spec {
        name: "file.delete.delay.ms",
        kind: Kind::Long { min: 0 },
        effect: Effect::None("Herald deletes a segment's files as soon as no read uses them"),
        default: Default::Fixed("60000"),
    },
    Spec {
        name: "flush.messages",
        kind: Kind::Long { min: 1 },
        effect: Effect::None("flush.ms sets the flush policy (0: fsync before acks=all answers)"),
        default: Default::Fixed(LONG_MAX),
    },
    Spec {
        name: FLUSH_MS,
        kind: Kind::Long { min: -1 },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.log_flush_ms.to_string()),
    },
    Spec {
        name: "follower.replication.throttled.replicas",
        kind: Kind::ReplicaList,
        effect: Effect::None(REPLICATION),
        default: Default::Fixed(""),
    },
    Spec {
        name: INDEX_INTERVAL_BYTES,
        kind: Kind::Int {
            min: 0,
            max: i32::MAX,
        },
        effect: Effect::Applied,
        default: Default::Fixed("4096"),
    },
    Spec {
        name: "leader.replication.throttled.replicas",
        kind: Kind::ReplicaList,
        effect: Effect::None(REPLICATION),
        default: Default::Fixed(""),
    },
    Spec {
        name: "local.retention.bytes",
        kind: Kind::Long { min: -2 },
        effect: Effect::None(TIERED),
        default: Default::Fixed("-2"),
    },
    Spec {
        name: "local.retention.ms",
        kind: Kind::Long { min: -2 },
        effect: Effect::None(TIERED),
        default: Default::Fixed("-2"),
    },
    Spec {
        name: MAX_COMPACTION_LAG_MS,
        kind: Kind::Long { min: 1 },
        effect: Effect::Applied,
        default: Default::Fixed(LONG_MAX),
    },
    Spec {
        name: MAX_MESSAGE_BYTES,
        kind: Kind::Int {
            min: 0,
            max: i32::MAX,
        },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.message_bytes_max.to_string()),
    },
    Spec {
        name: "message.downconversion.enable",
        kind: Kind::Boolean,
        effect: Effect::None(
            "Herald serves only the v2 record format, which every client since Kafka 0.11 reads",
        ),
        default: Default::Fixed("true"),
    },
    Spec {
        name: "message.format.version",
        kind: Kind::Version,
        effect: Effect::None("Herald always stores the v2 record format"),
        default: Default::Fixed("3.0-IV1"),
    },
    Spec {
        name: TIMESTAMP_AFTER_MAX_MS,
        kind: Kind::Long { min: 0 },
        effect: Effect::Applied,
        default: Default::Fixed("3600000"),
    },
    Spec {
        name: TIMESTAMP_BEFORE_MAX_MS,
        kind: Kind::Long { min: 0 },
        effect: Effect::Applied,
        default: Default::Fixed(LONG_MAX),
    },
    Spec {
        name: TIMESTAMP_DIFFERENCE_MAX_MS,
        kind: Kind::Long { min: 0 },
        effect: Effect::Applied,
        default: Default::Fixed(LONG_MAX),
    },
    Spec {
        name: TIMESTAMP_TYPE,
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        effect: Effect::Applied,
        default: Default::Fixed("CreateTime"),
    },
    Spec {
        name: MIN_CLEANABLE_DIRTY_RATIO,
        kind: Kind::Double { min: 0.0, max: 1.0 },
        effect: Effect::Applied,
        default: Default::Fixed("0.5"),
    },
    Spec {
        name: MIN_COMPACTION_LAG_MS,
        kind: Kind::Long { min: 0 },
        effect: Effect::Applied,
        default: Default::Fixed("0"),
    },
    Spec {
        name: "min.insync.replicas",
        kind: Kind::Int {
            min: 1,
            max: i32::MAX,
        },
        effect: Effect::None(
            "a single broker is the only replica; acks=all waits for its fsync under flush.ms",
        ),
        default: Default::Fixed("1"),
    },
    Spec {
        name: "preallocate",
        kind: Kind::Boolean,
        effect: Effect::None(
            "the active segment always reserves space ahead of its writes (up to 8 MiB, cheaper fsyncs), cut off when it closes",
        ),
        default: Default::Fixed("false"),
    },
    Spec {
        name: "remote.log.copy.disable",
        kind: Kind::Boolean,
        effect: Effect::None(TIERED),
        default: Default::Fixed("false"),
    },
    Spec {
        name: "remote.log.delete.on.disable",
        kind: Kind::Boolean,
        effect: Effect::None(TIERED),
        default: Default::Fixed("false"),
    },
    Spec {
        name: REMOTE_STORAGE_ENABLE,
        kind: Kind::Boolean,
        effect: Effect::Applied,
        default: Default::Fixed("false"),
    },
    Spec {
        name: RETENTION_BYTES,
        kind: Kind::Long { min: -1 },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.log_retention_bytes.to_string()),
    },
    Spec {
        name: RETENTION_MS,
        kind: Kind::Long { min: -1 },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.log_retention_ms.to_string()),
    },
    Spec {
        name: SEGMENT_BYTES,
        kind: Kind::Int {
            min: 14,
            max: i32::MAX,
        },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.log_segment_bytes.to_string()),
    },
    Spec {
        name: "segment.index.bytes",
        kind: Kind::Int {
            min: 4,
            max: i32::MAX,
        },
        effect: Effect::None(
            "Herald's index files grow with their segment instead of being preallocated",
        ),
        default: Default::Fixed("10485760"),
    },
    Spec {
        name: "segment.jitter.ms",
        kind: Kind::Long { min: 0 },
        effect: Effect::None("segments roll at segment.ms without jitter"),
        default: Default::Fixed("0"),
    },
    Spec {
        name: SEGMENT_MS,
        kind: Kind::Long { min: 1 },
        effect: Effect::Applied,
        default: Default::Broker(|b| b.log_segment_ms.to_string()),
    },
    Spec {
        name: "unclean.leader.election.enable",
        kind: Kind::Boolean,
        effect: Effect::None(REPLICATION),
        default: Default::Fixed("false"),
    },
];

/// The spec of the config called `name`, if Kafka defines one.
pub(crate) fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|spec| spec.name == name)
}

/// A topic config that cannot be used, with a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct InvalidConfig {
    pub(crate) message: String,
}

impl InvalidConfig {
    pub(crate) fn problem(&self) -> Problem {
        Problem::InvalidConfig
    }
}

fn invalid(message: String) -> InvalidConfig {
    InvalidConfig { message }
}

/// A topic's explicitly set configs (names and values as the client sent them); anything not
/// in the map takes the broker default.
pub(crate) type Overrides = BTreeMap<String, String>;

/// The broker-wide default of a topic config, as Kafka would print it.
pub(crate) fn default_value(broker: &BrokerConfig, name: &str) -> Option<String> {
    spec(name).map(|spec| match spec.default {
        Default::Fixed(value) => value.to_string(),
        Default::Broker(read) => read(broker),
    })
}

/// The value in effect for `name`: the override if set, else the broker default.
pub(crate) fn value(broker: &BrokerConfig, overrides: &Overrides, name: &str) -> Option<String> {
    overrides
        .get(name)
        .cloned()
        .or_else(|| default_value(broker, name))
}

fn parse_i64(name: &str, text: &str, min: i64) -> Result<i64, InvalidConfig> {
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{name}: `{text}` is not an integer")))?;
    if value < min {
        return Err(invalid(format!(
            "{name}: {value} is below the minimum {min}"
        )));
    }
    Ok(value)
}

/// Turns a `flush.ms` value into the storage flush policy.
fn flush_policy(value: i64) -> FlushPolicy {
    match value {
        0 => FlushPolicy::Always,
        // Kafka's own default for flush.ms means "never"; so does -1.
        i64::MAX | -1 => FlushPolicy::Never,
        ms => FlushPolicy::IntervalMs(ms.unsigned_abs()),
    }
}

/// Checks `text` is a value Kafka accepts for `spec`, with Kafka's kind of message if not.
fn check(spec: &Spec, text: &str) -> Result<(), InvalidConfig> {
    let name = spec.name;
    let bad = |why: String| {
        Err(invalid(format!(
            "Invalid value {text} for configuration {name}: {why}"
        )))
    };
    let value = text.trim();
    match spec.kind {
        Kind::Long { min } => match value.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => bad(format!("Value must be at least {min}")),
            Err(_) => bad("Not a number of type LONG".to_string()),
        },
        Kind::Int { min, max } => match value.parse::<i32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) if max == i32::MAX => bad(format!("Value must be at least {min}")),
            Ok(_) => bad(format!("Value must be in the range [{min}, {max}]")),
            Err(_) => bad("Not a number of type INT".to_string()),
        },
        Kind::Double { min, max } => match value.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) => bad(format!("Value must be in the range [{min}, {max}]")),
            Err(_) => bad("Not a number of type DOUBLE".to_string()),
        },
        Kind::Boolean => {
            if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                bad("Expected value to be either true or false".to_string())
            }
        }
        Kind::Choice(words) => {
            if words.contains(&value) {
                Ok(())
            } else {
                bad(format!("String must be one of: {}", words.join(", ")))
            }
        }
        Kind::List(words) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if !items.is_empty() && items.iter().all(|item| words.contains(item)) {
                Ok(())
            } else {
                bad(format!("List items must be in: {}", words.join(", ")))
            }
        }
        Kind::ReplicaList => {
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if value.is_empty() || value == "*" || value.split(',').all(|i| pair(i.trim())) {
                Ok(())
            } else {
                bad("must be the literal '*' or a list of replicas in the format partitionId:brokerId".to_string())
            }
        }
        Kind::Version => {
            let (number, iv) = value.split_once("-IV").unwrap_or((value, "0"));
            let parts: Vec<&str> = number.split('.').collect();
            let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            if (2..=3).contains(&parts.len()) && parts.iter().all(numeric) && numeric(&iv) {
                Ok(())
            } else {
                bad("not a Kafka version such as 3.0-IV1".to_string())
            }
        }
    }
}

/// Checks every override: each must name a Kafka topic config and hold a value Kafka accepts.
/// Returns the overrides that have no effect on Herald, to be reported.
pub(crate) fn validate(overrides: &Overrides) -> Result<Vec<&'static Spec>, InvalidConfig> {
    let mut inert = Vec::new();
    for (name, value) in overrides {
        let Some(spec) = spec(name) else {
            return Err(invalid(format!("Unknown topic config name: {name}")));
        };
        check(spec, value)?;
        if matches!(spec.effect, Effect::None(_)) {
            inert.push(spec);
        }
    }
    Ok(inert)
}

/// Logs the configs set on `topic` that have no effect on Herald, with the reason for each,
/// so an operator who carried them over from a Kafka cluster knows.
pub(crate) fn report_inert(topic: &str, overrides: &Overrides) {
    for spec in validate(overrides).unwrap_or_default() {
        if let Effect::None(why) = spec.effect {
            tracing::info!(
                topic,
                config = spec.name,
                "topic config accepted without effect: {why}"
            );
        }
    }
}

/// Builds the storage configuration of a topic from the broker defaults and its overrides,
/// checking every value.
pub(crate) fn log_config(
    broker: &BrokerConfig,
    overrides: &Overrides,
) -> Result<LogConfig, InvalidConfig> {
    validate(overrides)?;
    let get = |name: &str| value(broker, overrides, name).unwrap_or_default();
    let long = |name: &str| parse_i64(name, &get(name), i64::MIN);
    let retention_ms = parse_i64(RETENTION_MS, &get(RETENTION_MS), -1)?;
    let retention_bytes = parse_i64(RETENTION_BYTES, &get(RETENTION_BYTES), -1)?;
    let segment_bytes = parse_i64(SEGMENT_BYTES, &get(SEGMENT_BYTES), 1)?;
    let segment_ms = parse_i64(SEGMENT_MS, &get(SEGMENT_MS), 1)?;
    let max_message_bytes = parse_i64(MAX_MESSAGE_BYTES, &get(MAX_MESSAGE_BYTES), 0)?;
    let flush_ms = parse_i64(FLUSH_MS, &get(FLUSH_MS), -1)?;
    let index_interval_bytes = parse_i64(INDEX_INTERVAL_BYTES, &get(INDEX_INTERVAL_BYTES), 0)?;
    let policies: Vec<String> = get(CLEANUP_POLICY)
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    let compact = policies.iter().any(|p| p == "compact");
    let delete = policies.iter().any(|p| p == "delete");
    let cleanup_policy = match (compact, delete) {
        (true, true) => CleanupPolicy::CompactDelete,
        (true, false) => CleanupPolicy::Compact,
        _ => CleanupPolicy::Delete,
    };
    let delete_retention_ms = parse_i64(DELETE_RETENTION_MS, &get(DELETE_RETENTION_MS), 0)?;
    let min_compaction_lag_ms = parse_i64(MIN_COMPACTION_LAG_MS, &get(MIN_COMPACTION_LAG_MS), 0)?;
    let max_compaction_lag_ms = parse_i64(MAX_COMPACTION_LAG_MS, &get(MAX_COMPACTION_LAG_MS), 1)?;
    let ratio_text = get(MIN_CLEANABLE_DIRTY_RATIO);
    let dirty_ratio: f64 = ratio_text
        .trim()
        .parse()
        .ok()
        .filter(|r: &f64| (0.0..=1.0).contains(r))
        .ok_or_else(|| {
            invalid(format!(
                "{MIN_CLEANABLE_DIRTY_RATIO}: `{ratio_text}` is not a number in [0, 1]"
            ))
        })?;
    if get(REMOTE_STORAGE_ENABLE)
        .trim()
        .eq_ignore_ascii_case("true")
    {
        return Err(invalid(format!(
            "{REMOTE_STORAGE_ENABLE}: tiered storage is not available on Herald"
        )));
    }
    let compression = match get(COMPRESSION_TYPE).trim() {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    };
    let timestamp_type = match get(TIMESTAMP_TYPE).trim() {
        "LogAppendTime" => TimestampType::LogAppendTime,
        _ => TimestampType::CreateTime,
    };
    // Kafka's older `message.timestamp.difference.max.ms` bounds both directions unless the
    // newer per-direction config is set on the topic.
    let difference = overrides
        .contains_key(TIMESTAMP_DIFFERENCE_MAX_MS)
        .then(|| long(TIMESTAMP_DIFFERENCE_MAX_MS))
        .transpose()?;
    let bound = |name: &str| -> Result<Option<u64>, InvalidConfig> {
        let ms = match difference {
            Some(ms) if !overrides.contains_key(name) => ms,
            _ => long(name)?,
        };
        Ok((ms >= 0 && ms != i64::MAX).then_some(ms.unsigned_abs()))
    };
    let config = LogConfig {
        segment_bytes: segment_bytes.unsigned_abs(),
        segment_ms: segment_ms.unsigned_abs(),
        retention_ms: (retention_ms >= 0).then_some(retention_ms.unsigned_abs()),
        retention_bytes: (retention_bytes >= 0).then_some(retention_bytes.unsigned_abs()),
        flush: flush_policy(flush_ms),
        cleanup_policy,
        delete_retention_ms: delete_retention_ms.unsigned_abs(),
        // In [0, 1] as checked above, so the product fits.
        min_cleanable_dirty_ratio_ppm: (dirty_ratio * 1_000_000.0).round() as u32,
        min_compaction_lag_ms: min_compaction_lag_ms.unsigned_abs(),
        max_compaction_lag_ms: max_compaction_lag_ms.unsigned_abs(),
        batch_bytes_max: u32::try_from(max_message_bytes).map_err(|_| {
            invalid(format!(
                "{MAX_MESSAGE_BYTES}: {max_message_bytes} is too large"
            ))
        })?,
        // Kafka's 0 indexes every batch; the storage counts the bytes between entries.
        index_interval_bytes: u32::try_from(index_interval_bytes.max(1)).unwrap_or(u32::MAX),
        timestamp_type,
        timestamp_before_max_ms: bound(TIMESTAMP_BEFORE_MAX_MS)?,
        timestamp_after_max_ms: bound(TIMESTAMP_AFTER_MAX_MS)?,
        compression,
        ..LogConfig::default()
    };
    config
        .validate()
        .map_err(|error| invalid(storage_message(&error)))?;
    Ok(config)
}

/// The storage's complaint in the Kafka config names the client used.
fn storage_message(error: &herald_storage::ConfigError) -> String {
    let text = error.to_string();
    text.replace("segment_bytes", SEGMENT_BYTES)
        .replace("segment_ms", SEGMENT_MS)
        .replace("batch_bytes_max", MAX_MESSAGE_BYTES)
        .replace("index_interval_bytes", INDEX_INTERVAL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> Overrides {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_fourteen_days_and_group_commit() {
        let config = log_config(&BrokerConfig::default(), &Overrides::new()).unwrap();
        assert_eq!(config.retention_ms, Some(14 * 24 * 3600 * 1000));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.flush, FlushPolicy::Always);
    }

    #[test]
    fn overrides_map_to_the_log_config() {
        let config = log_config(
            &BrokerConfig::default(),
            &overrides(&[
                (RETENTION_MS, "-1"),
                (RETENTION_BYTES, "1000000"),
                (FLUSH_MS, "250"),
                (MAX_MESSAGE_BYTES, "2000"),
                (SEGMENT_BYTES, "65536"),
            ]),
        )
        .unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, Some(1_000_000));
        assert_eq!(config.flush, FlushPolicy::IntervalMs(250));
        assert_eq!(config.batch_bytes_max, 2000);
        assert_eq!(config.segment_bytes, 65536);
    }

    #[test]
    fn bad_values_are_refused_with_the_config_name() {
        for (name, value, expect) in [
            (RETENTION_MS, "soon", "retention.ms"),
            (RETENTION_MS, "-2", "retention.ms"),
            (CLEANUP_POLICY, "shred", "shred"),
            (SEGMENT_BYTES, "100", "segment.bytes"),
            (COMPRESSION_TYPE, "brotli", "compression.type"),
            (TIMESTAMP_TYPE, "WallClock", "message.timestamp.type"),
            ("min.insync.replicas", "0", "min.insync.replicas"),
            ("unclean.leader.election.enable", "maybe", "true or false"),
            ("min.cleanable.dirty.ratio", "1.5", "range"),
            ("message.format.version", "new", "message.format.version"),
            (REMOTE_STORAGE_ENABLE, "true", "tiered storage"),
            ("no.such.config", "1", "Unknown topic config name"),
        ] {
            let error =
                log_config(&BrokerConfig::default(), &overrides(&[(name, value)])).unwrap_err();
            assert!(error.message.contains(expect), "{name}={value}: {error}");
        }
    }

    #[test]
    fn every_kafka_topic_config_is_accepted_and_the_inert_ones_reported() {
        let all: Overrides = SPECS
            .iter()
            .filter(|spec| spec.name != CLEANUP_POLICY && spec.name != REMOTE_STORAGE_ENABLE)
            .map(|spec| {
                let value = default_value(&BrokerConfig::default(), spec.name).unwrap();
                (spec.name.to_string(), value)
            })
            .collect();
        log_config(&BrokerConfig::default(), &all).unwrap();
        let inert = validate(&all).unwrap();
        assert!(inert.iter().any(|spec| spec.name == "min.insync.replicas"));
        assert!(!inert.iter().any(|spec| spec.name == COMPRESSION_TYPE));
    }

    #[test]
    fn compaction_configs_reach_the_log() {
        let config = log_config(
            &BrokerConfig::default(),
            &overrides(&[
                (CLEANUP_POLICY, "compact"),
                (DELETE_RETENTION_MS, "1000"),
                (MIN_CLEANABLE_DIRTY_RATIO, "0.25"),
                (MIN_COMPACTION_LAG_MS, "2000"),
                (MAX_COMPACTION_LAG_MS, "3000"),
            ]),
        )
        .unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(config.delete_retention_ms, 1000);
        assert_eq!(config.min_cleanable_dirty_ratio_ppm, 250_000);
        assert_eq!(config.min_compaction_lag_ms, 2000);
        assert_eq!(config.max_compaction_lag_ms, 3000);
        for (policy, want) in [
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete, compact", CleanupPolicy::CompactDelete),
            ("delete", CleanupPolicy::Delete),
        ] {
            let config = log_config(
                &BrokerConfig::default(),
                &overrides(&[(CLEANUP_POLICY, policy)]),
            )
            .unwrap();
            assert_eq!(config.cleanup_policy, want, "{policy}");
        }
        let defaults = log_config(&BrokerConfig::default(), &Overrides::new()).unwrap();
        assert_eq!(defaults.min_cleanable_dirty_ratio_ppm, 500_000);
        assert_eq!(defaults.delete_retention_ms, 86_400_000);
        assert_eq!(defaults.max_compaction_lag_ms, i64::MAX as u64);
    }

    #[test]
    fn timestamp_and_compression_configs_reach_the_log() {
        let config = log_config(
            &BrokerConfig::default(),
            &overrides(&[
                (COMPRESSION_TYPE, "zstd"),
                (TIMESTAMP_TYPE, "LogAppendTime"),
                (TIMESTAMP_DIFFERENCE_MAX_MS, "5000"),
                (TIMESTAMP_AFTER_MAX_MS, "7000"),
            ]),
        )
        .unwrap();
        assert_eq!(config.compression, Some(Compression::Zstd));
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.timestamp_before_max_ms, Some(5000));
        assert_eq!(config.timestamp_after_max_ms, Some(7000));
        let defaults = log_config(&BrokerConfig::default(), &Overrides::new()).unwrap();
        assert_eq!(defaults.compression, None);
        assert_eq!(defaults.timestamp_before_max_ms, None);
        assert_eq!(
            defaults.timestamp_after_max_ms,
            Some(3_600_000),
            "Kafka's default: one hour"
        );
    }

    #[test]
    fn the_reference_lists_every_config_in_the_right_table() {
        let doc = include_str!("../../../docs/topic-configs.md");
        let (applied, inert) = doc
            .split_once("## Configs accepted without effect")
            .expect("two tables");
        for spec in SPECS {
            let row = format!("| `{}` |", spec.name);
            let table = match spec.effect {
                Effect::Applied => applied,
                Effect::None(_) => inert,
            };
            assert!(table.contains(&row), "{} missing from its table", spec.name);
        }
    }
}
