//! The broker's resource limits that are not a request's fault: open files (the process's
//! `RLIMIT_NOFILE` and the storage's `open_files_max`), partitions per broker
//! (`partitions_max`) and disk space. Each refusal is one [`LimitHit`]: a message naming the
//! limit and the setting to change, a log line, and a counter for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// Descriptors kept back from `open_files_max` for what is not a segment file: the listener,
/// the offsets store, `topics.json` writes, directory fsyncs, the HTTP side.
const OPEN_FILES_RESERVED: u64 = 256;

/// The smallest `open_files_max` the broker derives, however low the process limit.
const OPEN_FILES_DERIVED_MIN: u64 = 64;

/// The process's open-file limit as (soft, hard); `None` where it cannot be read.
pub fn open_files_rlimit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `limit`, a valid rlimit we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft open-file limit to the hard one, as a broker holding many partitions needs;
/// returns the limits (soft, hard) before and after.
pub fn raise_open_files_limit() -> std::io::Result<((u64, u64), (u64, u64))> {
    let before = open_files_rlimit().ok_or_else(std::io::Error::last_os_error)?;
    if before.0 < before.1 {
        let limit = libc::rlimit {
            rlim_cur: before.1,
            rlim_max: before.1,
        };
        // SAFETY: setrlimit only reads `limit`, a valid rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let after = open_files_rlimit().ok_or_else(std::io::Error::last_os_error)?;
    Ok((before, after))
}

/// `open_files_max` when the config leaves it unset: the process's soft limit less the
/// descriptors client connections may take (`connections_max`) and a reserve for the rest.
pub(crate) fn derived_open_files_max(connections_max: u32) -> u64 {
    let soft = open_files_rlimit().map_or(1024, |(soft, _)| soft);
    soft.saturating_sub(u64::from(connections_max) + OPEN_FILES_RESERVED)
        .max(soft / 4)
        .max(OPEN_FILES_DERIVED_MIN)
}

/// Which limit refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The process ran out of file descriptors.
    OpenFiles,
    /// The broker holds `partitions_max` partitions.
    Partitions,
    /// The data directory's file system is full.
    DiskSpace,
}

impl Limit {
    /// The label of this limit in `herald_limit_refusals_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::OpenFiles => "open_files",
            Limit::Partitions => "partitions",
            Limit::DiskSpace => "disk_space",
        }
    }
}

/// Refusals by limit since start, and the limits' settings for messages.
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    /// The storage's `open_files_max` in force.
    pub(crate) open_files_max: u64,
    open_files: AtomicU64,
    partitions: AtomicU64,
    disk_space: AtomicU64,
}

impl LimitCounters {
    pub(crate) fn new(open_files_max: u64) -> LimitCounters {
        LimitCounters {
            open_files_max,
            ..LimitCounters::default()
        }
    }

    fn counter(&self, limit: Limit) -> &AtomicU64 {
        match limit {
            Limit::OpenFiles => &self.open_files,
            Limit::Partitions => &self.partitions,
            Limit::DiskSpace => &self.disk_space,
        }
    }

    /// Counts and logs one refusal, with the message the client gets.
    pub(crate) fn hit(&self, limit: Limit, message: &str) {
        self.counter(limit).fetch_add(1, Ordering::Relaxed);
        warn!(limit = limit.label(), "{message}");
    }

    /// (label, refusals) for every limit.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        [Limit::OpenFiles, Limit::Partitions, Limit::DiskSpace]
            .into_iter()
            .map(|limit| (limit.label(), self.counter(limit).load(Ordering::Relaxed)))
            .collect()
    }
}

/// The limit an I/O error is, if it is one.
pub(crate) fn limit_of(error: &std::io::Error) -> Option<Limit> {
    if herald_storage::is_open_files_limit(error) {
        Some(Limit::OpenFiles)
    } else if herald_storage::is_disk_full(error) {
        Some(Limit::DiskSpace)
    } else {
        None
    }
}

/// What a client and the log are told when `limit` refused an operation.
pub(crate) fn message(limit: Limit, open_files_max: u64, partitions: (u64, u64)) -> String {
    match limit {
        Limit::OpenFiles => {
            let rlimit = open_files_rlimit().map_or_else(
                || "unknown".to_string(),
                |(soft, hard)| format!("soft {soft}, hard {hard}"),
            );
            format!(
                "the broker is out of file descriptors (RLIMIT_NOFILE: {rlimit}; open_files_max = {open_files_max}); \
                 raise the process limit (LimitNOFILE, ulimit -n) or lower open_files_max or connections_max"
            )
        }
        Limit::Partitions => format!(
            "the broker would hold {} partitions, more than partitions_max = {}; delete topics or raise partitions_max",
            partitions.0, partitions.1
        ),
        Limit::DiskSpace => {
            "the data directory's file system is full (no space left on device); free space or add capacity"
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_limit_leaves_room_for_connections() {
        let (soft, _) = open_files_rlimit().unwrap();
        let derived = derived_open_files_max(1024);
        assert!(derived >= OPEN_FILES_DERIVED_MIN);
        assert!(derived <= soft.max(OPEN_FILES_DERIVED_MIN));
    }

    #[test]
    fn messages_name_the_limit_and_the_setting() {
        let text = message(Limit::Partitions, 100, (11, 10));
        assert!(text.contains("partitions_max = 10"), "{text}");
        let text = message(Limit::OpenFiles, 100, (0, 0));
        assert!(
            text.contains("RLIMIT_NOFILE") && text.contains("open_files_max = 100"),
            "{text}"
        );
    }
}
