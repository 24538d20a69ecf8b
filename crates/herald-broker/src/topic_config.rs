//! Topic configs under their Kafka names (`retention.ms`, `max.message.bytes`, ...): parsing,
//! validation, the broker-wide defaults behind them, and the storage `LogConfig` they become.
//!
//! The flush policy uses Kafka's `flush.ms` name: `0` fsyncs before `acks=all` is answered
//! (group commit, the default), a positive value fsyncs at most that many milliseconds after
//! an append without holding `acks=all` back, and `-1` (or Kafka's default
//! `9223372036854775807`) leaves flushing to the operating system and to shutdown.

use std::collections::BTreeMap;

use herald_storage::{CleanupPolicy, FlushPolicy, LogConfig};

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

/// Every topic config this broker knows, in the order DescribeConfigs lists them.
pub(crate) const NAMES: &[&str] = &[
    CLEANUP_POLICY,
    FLUSH_MS,
    MAX_MESSAGE_BYTES,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    SEGMENT_MS,
];

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
    Some(match name {
        RETENTION_MS => broker.log_retention_ms.to_string(),
        RETENTION_BYTES => broker.log_retention_bytes.to_string(),
        SEGMENT_BYTES => broker.log_segment_bytes.to_string(),
        SEGMENT_MS => broker.log_segment_ms.to_string(),
        CLEANUP_POLICY => "delete".to_string(),
        MAX_MESSAGE_BYTES => broker.message_bytes_max.to_string(),
        FLUSH_MS => broker.log_flush_ms.to_string(),
        _ => return None,
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

/// Builds the storage configuration of a topic from the broker defaults and its overrides,
/// checking every value.
pub(crate) fn log_config(
    broker: &BrokerConfig,
    overrides: &Overrides,
) -> Result<LogConfig, InvalidConfig> {
    for name in overrides.keys() {
        if !NAMES.contains(&name.as_str()) {
            return Err(invalid(format!(
                "unknown topic config `{name}`; supported: {}",
                NAMES.join(", ")
            )));
        }
    }
    let get = |name: &str| value(broker, overrides, name).unwrap_or_default();
    let retention_ms = parse_i64(RETENTION_MS, &get(RETENTION_MS), -1)?;
    let retention_bytes = parse_i64(RETENTION_BYTES, &get(RETENTION_BYTES), -1)?;
    let segment_bytes = parse_i64(SEGMENT_BYTES, &get(SEGMENT_BYTES), 1)?;
    let segment_ms = parse_i64(SEGMENT_MS, &get(SEGMENT_MS), 1)?;
    let max_message_bytes = parse_i64(MAX_MESSAGE_BYTES, &get(MAX_MESSAGE_BYTES), 0)?;
    let flush_ms = parse_i64(FLUSH_MS, &get(FLUSH_MS), -1)?;
    let cleanup_policy = match get(CLEANUP_POLICY).trim() {
        "delete" => CleanupPolicy::Delete,
        "compact" | "compact,delete" | "delete,compact" => {
            return Err(invalid(format!(
                "{CLEANUP_POLICY}: log compaction is not supported yet; use `delete`"
            )));
        }
        other => {
            return Err(invalid(format!(
                "{CLEANUP_POLICY}: `{other}` is not `delete` or `compact`"
            )));
        }
    };
    let config = LogConfig {
        segment_bytes: segment_bytes.unsigned_abs(),
        segment_ms: segment_ms.unsigned_abs(),
        retention_ms: (retention_ms >= 0).then_some(retention_ms.unsigned_abs()),
        retention_bytes: (retention_bytes >= 0).then_some(retention_bytes.unsigned_abs()),
        flush: flush_policy(flush_ms),
        cleanup_policy,
        batch_bytes_max: u32::try_from(max_message_bytes).map_err(|_| {
            invalid(format!(
                "{MAX_MESSAGE_BYTES}: {max_message_bytes} is too large"
            ))
        })?,
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
            (CLEANUP_POLICY, "compact", "compaction"),
            (CLEANUP_POLICY, "shred", "shred"),
            (SEGMENT_BYTES, "10", "segment.bytes"),
            ("min.insync.replicas", "1", "unknown topic config"),
        ] {
            let error =
                log_config(&BrokerConfig::default(), &overrides(&[(name, value)])).unwrap_err();
            assert!(error.message.contains(expect), "{name}={value}: {error}");
        }
    }
}
