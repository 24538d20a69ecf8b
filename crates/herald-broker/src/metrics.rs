//! Prometheus text exposition of the broker's statistics, served by [`crate::http`] on `/metrics`.
//!
//! The format is the plain text one (version 0.0.4) every Prometheus-compatible scraper reads;
//! it is written by hand because it is a few lines of escaping rather than a dependency.

use std::fmt::Write as _;

use crate::BrokerStats;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as declared on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Builds one exposition: call [`Exposition::family`] once per metric, then add its samples.
///
/// ```
/// use herald_broker::metrics::{Exposition, Kind};
/// let mut text = Exposition::default();
/// text.family("herald_topics", "Topics on this broker.", Kind::Gauge);
/// text.sample("herald_topics", &[], 3);
/// assert!(text.finish().contains("herald_topics 3\n"));
/// ```
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family with its help text and kind.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Adds one sample of the family `name` with the given labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Renders a stats snapshot, plus this process's resident memory, as one exposition.
pub fn render(stats: &BrokerStats) -> String {
    let mut text = Exposition::default();
    let gauges: [(&str, &str, u64); 8] = [
        (
            "herald_partitions_loading",
            "Partitions whose logs are still being opened after a start.",
            stats.partitions_loading,
        ),
        (
            "herald_open_files",
            "Segment files the storage holds open now.",
            stats.open_files,
        ),
        (
            "herald_open_files_max",
            "The storage's open_files_max: segment files kept open at most.",
            stats.open_files_max,
        ),
        ("herald_topics", "Topics on this broker.", stats.topics),
        (
            "herald_partitions",
            "Partitions over all topics.",
            stats.partitions,
        ),
        (
            "herald_log_bytes",
            "Bytes the partition logs occupy on disk.",
            stats.disk_bytes,
        ),
        (
            "herald_connections_open",
            "Client connections open now.",
            stats.connections_open,
        ),
        (
            "herald_listeners_insecure",
            "Listeners anyone on the network can use unauthenticated (PLAINTEXT, not loopback).",
            stats.listeners_insecure,
        ),
    ];
    for (name, help, value) in gauges {
        text.family(name, help, Kind::Gauge);
        text.sample(name, &[], value);
    }
    let counters: [(&str, &str, u64); 21] = [
        (
            "herald_open_files_hits_total",
            "Segment-file lookups served by an open file.",
            stats.open_files_hits_total,
        ),
        (
            "herald_open_files_misses_total",
            "Segment-file lookups that had to open the file.",
            stats.open_files_misses_total,
        ),
        (
            "herald_open_files_evictions_total",
            "Segment files closed to stay within open_files_max.",
            stats.open_files_evictions_total,
        ),
        (
            "herald_authentication_failures_total",
            "Failed SASL authentications and TLS handshakes.",
            stats.authentication_failures_total,
        ),
        (
            "herald_authorization_failures_total",
            "Requests, or parts of them, refused by the ACLs.",
            stats.authorization_failures_total,
        ),
        (
            "herald_connections_accepted_total",
            "Client connections accepted since start.",
            stats.connections_accepted_total,
        ),
        (
            "herald_connections_refused_total",
            "Connections closed at accept because connections_max were open.",
            stats.connections_refused_total,
        ),
        (
            "herald_requests_unknown_total",
            "Requests with an API key this broker does not know.",
            stats.requests_unknown_total,
        ),
        (
            "herald_requests_malformed_total",
            "Frames that could not be decoded; their connection was closed.",
            stats.requests_malformed_total,
        ),
        (
            "herald_produced_bytes_total",
            "Record-batch bytes appended by Produce requests.",
            stats.produced_bytes_total,
        ),
        (
            "herald_produced_records_total",
            "Records appended by Produce requests.",
            stats.produced_records_total,
        ),
        (
            "herald_produced_batches_duplicate_total",
            "Retried idempotent batches that were already stored and not stored again.",
            stats.produced_batches_duplicate_total,
        ),
        (
            "herald_maintenance_passes_total",
            "Housekeeping passes (interval flush, roll, retention, checkpoint) over every partition.",
            stats.maintenance_passes_total,
        ),
        (
            "herald_retention_segments_deleted_total",
            "Segments deleted by time or size retention.",
            stats.retention_segments_deleted_total,
        ),
        (
            "herald_cleaner_passes_total",
            "Log cleaner passes that rewrote segments of a compacted partition.",
            stats.cleaner_passes_total,
        ),
        (
            "herald_cleaner_bytes_read_total",
            "Bytes the log cleaner read.",
            stats.cleaner_bytes_read_total,
        ),
        (
            "herald_cleaner_bytes_reclaimed_total",
            "Bytes the log cleaner freed.",
            stats.cleaner_bytes_reclaimed_total,
        ),
        (
            "herald_cleaner_records_removed_total",
            "Records the log cleaner removed (superseded values and expired tombstones).",
            stats.cleaner_records_removed_total,
        ),
        (
            "herald_cleaner_failures_total",
            "Log cleaner passes that failed.",
            stats.cleaner_failures_total,
        ),
        (
            "herald_fetched_bytes_total",
            "Record-batch bytes returned by Fetch responses.",
            stats.fetched_bytes_total,
        ),
        (
            "herald_fetched_records_total",
            "Records returned by Fetch responses.",
            stats.fetched_records_total,
        ),
    ];
    for (name, help, value) in counters {
        text.family(name, help, Kind::Counter);
        text.sample(name, &[], value);
    }
    text.family(
        "herald_requests_total",
        "Requests handled since start, by Kafka API.",
        Kind::Counter,
    );
    for (api, count) in &stats.requests_total {
        text.sample("herald_requests_total", &[("api", api)], *count);
    }
    text.family(
        "herald_limit_refusals_total",
        "Operations refused by a broker-wide limit (open_files, partitions, disk_space).",
        Kind::Counter,
    );
    for (limit, count) in &stats.limit_refusals_total {
        text.sample("herald_limit_refusals_total", &[("limit", limit)], *count);
    }
    type Gauge = fn(&crate::CleanerProgress) -> u64;
    let cleaner: [(&str, &str, Gauge); 3] = [
        (
            "herald_cleaner_dirty_bytes",
            "Bytes of a compacted partition's closed segments not yet through a cleaner pass.",
            |p| p.dirty_bytes,
        ),
        (
            "herald_cleaner_cleanable_bytes",
            "Bytes of a compacted partition's closed segments the cleaner may clean.",
            |p| p.cleanable_bytes,
        ),
        (
            "herald_cleaner_cleaned_to_offset",
            "Offset below which every record of a compacted partition has been through a cleaner pass.",
            |p| p.cleaned_to_offset,
        ),
    ];
    for (name, help, value) in cleaner {
        text.family(name, help, Kind::Gauge);
        for p in &stats.cleaner_partitions {
            let partition = p.partition.to_string();
            text.sample(
                name,
                &[("topic", &p.topic), ("partition", &partition)],
                value(p),
            );
        }
    }
    if let Some(rss) = process_rss_bytes() {
        text.family(
            "herald_process_resident_memory_bytes",
            "Resident set size of the broker process.",
            Kind::Gauge,
        );
        text.sample("herald_process_resident_memory_bytes", &[], rss);
    }
    text.finish()
}

/// The resident set size of this process in bytes, from `/proc/self/status` (Linux only;
/// `None` elsewhere or when it cannot be read).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut text = Exposition::default();
        text.family("m", "help with \\ and\nnewline", Kind::Counter);
        text.sample("m", &[("topic", "a\"b\\c\nd"), ("partition", "0")], 5);
        assert_eq!(
            text.finish(),
            "# HELP m help with \\\\ and\\nnewline\n# TYPE m counter\n\
             m{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 5\n"
        );
    }

    #[test]
    fn render_names_every_figure() {
        let mut stats = BrokerStats {
            topics: 2,
            partitions: 5,
            produced_records_total: 42,
            ..BrokerStats::default()
        };
        stats.requests_total.insert("Produce".to_string(), 7);
        let text = render(&stats);
        for line in [
            "herald_topics 2\n",
            "herald_partitions 5\n",
            "herald_produced_records_total 42\n",
            "herald_requests_total{api=\"Produce\"} 7\n",
            "# TYPE herald_requests_total counter\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = process_rss_bytes().unwrap();
            // A running test binary has at least a page resident and far less than a terabyte.
            assert!((4096..(1 << 40)).contains(&rss), "{rss}");
        }
    }
}
