//! DescribeLogDirs: the one log directory of this broker, the bytes each partition takes in it,
//! and (v4) the size and free space of the volume it is on.
//!
//! As in Kafka, a request answers only for partitions that exist: topics or partitions that
//! are not here are left out of the answer (the schema has no per-partition error code), and
//! a null topic list means every partition of every topic.

use std::path::Path;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use tracing::debug;

use super::{str_bytes, topic_name};
use crate::Core;
use crate::topics::Topic;

pub(crate) fn describe_log_dirs(
    core: &Core,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let topics = match request.topics {
        None => core
            .topics
            .list()
            .iter()
            .map(|topic| topic_entry(topic, None))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .filter_map(|asked| named_topic(core, &asked))
            .collect(),
    };
    let dir = &core.config.data_dir;
    // Kafka names log directories by absolute path; a relative one is resolved if it can be.
    let log_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let (total_bytes, usable_bytes) = match volume_bytes(&log_dir) {
        Ok(sizes) => sizes,
        Err(error) => {
            // The sizes are optional in the protocol; -1 says "not known".
            debug!(dir = %log_dir.display(), %error, "statvfs failed");
            (-1, -1)
        }
    };
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&log_dir.to_string_lossy()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// The asked partitions of one named topic that exist here, or `None` if none do.
fn named_topic(core: &Core, asked: &DescribableLogDirTopic) -> Option<DescribeLogDirsTopic> {
    let topic = core.topics.get(asked.topic.as_str())?;
    let entry = topic_entry(&topic, Some(&asked.partitions));
    (!entry.partitions.is_empty()).then_some(entry)
}

/// One topic's partitions with their sizes; all of them, or those in `only`.
fn topic_entry(topic: &Topic, only: Option<&[i32]>) -> DescribeLogDirsTopic {
    let partitions = topic
        .partitions()
        .iter()
        .filter(|partition| only.is_none_or(|only| only.contains(&partition.index)))
        .map(|partition| {
            DescribeLogDirsPartition::default()
                .with_partition_index(partition.index)
                .with_partition_size(i64::try_from(partition.log.size_bytes()).unwrap_or(i64::MAX))
                // A single replica is never behind its leader.
                .with_offset_lag(0)
                .with_is_future_key(false)
        })
        .collect();
    DescribeLogDirsTopic::default()
        .with_name(topic_name(&topic.name))
        .with_partitions(partitions)
}

/// Total and available bytes of the volume holding `dir`, as `statvfs` reports them.
fn volume_bytes(dir: &Path) -> std::io::Result<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    // SAFETY: `statvfs` is plain data, so all-zero is a valid value; the call only reads the
    // NUL-terminated `path`, which lives across it, and writes into `stat`.
    let (rc, stat) = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        let rc = libc::statvfs(path.as_ptr(), &mut stat);
        (rc, stat)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fragment = u128::from(stat.f_frsize);
    let bytes = |blocks: u128| i64::try_from(blocks * fragment).unwrap_or(i64::MAX);
    // Usable is what an unprivileged writer may still use (f_bavail), as Kafka reports it.
    Ok((
        bytes(u128::from(stat.f_blocks)),
        bytes(u128::from(stat.f_bavail)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_of_a_directory_has_a_size() {
        let dir = tempfile::tempdir().unwrap();
        let (total, usable) = volume_bytes(dir.path()).unwrap();
        assert!(total > 0);
        assert!((0..=total).contains(&usable));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(volume_bytes(Path::new("/no/such/directory/here")).is_err());
    }
}
