//! The broker's Prometheus metrics, served by [`crate::http`] on `/metrics` in the OpenMetrics
//! text format through the `prometheus-client` crate.
//!
//! Most figures are a [`BrokerStats`] snapshot encoded at scrape time (a `Collector`); request
//! latency (by Kafka API) and fsync duration are histograms fed on the request path; consumer
//! group lag and partition offsets are read from the coordinator and the logs at scrape time,
//! under the names `kafka-exporter` users look for, with the `herald_` prefix.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Broker, BrokerStats};

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram buckets for request latency and fsync duration, in seconds: 50 µs to about 1.6 s
/// doubling (16 buckets), beyond which `+Inf` counts.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 16)
}

fn duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

/// The label set of a request histogram: the Kafka API name.
type ApiLabel = [(&'static str, &'static str); 1];

/// Request latency by Kafka API, from the request's arrival to its response being ready (for
/// `acks=all` produce that includes the fsync, for Fetch the long poll).
#[derive(Debug, Clone)]
pub struct Latency {
    requests: Family<ApiLabel, Histogram, fn() -> Histogram>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            requests: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl Latency {
    /// Records one request of `api` that took `elapsed`.
    pub fn observe_request(&self, api: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&[("api", api)])
            .observe(elapsed.as_secs_f64());
    }
}

/// fsync duration of partition logs waited for by producers (group commit), for the whole
/// process: every broker in it shares the disk.
static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(duration_histogram);

/// Records one group-commit fsync that took `elapsed`.
pub fn observe_fsync(elapsed: Duration) {
    FSYNC_SECONDS.observe(elapsed.as_secs_f64());
}

/// One consumer group partition's committed offset, for the lag metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    /// The partition's end offset, if it still exists.
    pub end: Option<u64>,
}

/// One partition's offsets, for `herald_topic_partition_*_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub oldest: u64,
    pub current: u64,
}

/// What one scrape encodes besides the histograms.
#[derive(Debug, Default)]
struct Snapshot {
    stats: BrokerStats,
    rss: Option<u64>,
    groups: Vec<GroupPartitionOffset>,
    partitions: Vec<PartitionOffsets>,
    /// Members per group.
    members: Vec<(String, u64)>,
}

/// Renders a stats snapshot, plus this process's resident memory and fsync durations.
pub fn render(stats: &BrokerStats) -> String {
    encode(
        Snapshot {
            stats: stats.clone(),
            rss: process_rss_bytes(),
            ..Snapshot::default()
        },
        None,
    )
}

/// Renders everything `/metrics` shows for `broker`: its stats, request latency, and the
/// offsets and lag of every partition and group.
pub fn render_broker(broker: &Broker) -> String {
    let mut partitions = Vec::new();
    for topic in broker.core.topics.list() {
        for partition in topic.loaded_partitions() {
            let offsets = partition.log.offsets();
            partitions.push(PartitionOffsets {
                topic: topic.name.clone(),
                partition: partition.index,
                oldest: offsets.log_start,
                current: offsets.visible_end,
            });
        }
    }
    let mut groups = Vec::new();
    let mut members = Vec::new();
    for listing in broker.core.groups.list_groups() {
        let described = broker.core.groups.describe_group(&listing.group_id);
        members.push((listing.group_id.clone(), described.members.len() as u64));
        for fetched in broker.core.groups.fetch_offsets(&listing.group_id, None) {
            let Some(committed) = fetched.committed else {
                continue;
            };
            let end = broker
                .core
                .topics
                .get(&fetched.topic)
                .and_then(|topic| topic.partition(fetched.partition))
                .map(|partition| partition.log.offsets().visible_end);
            groups.push(GroupPartitionOffset {
                group: listing.group_id.clone(),
                topic: fetched.topic,
                partition: fetched.partition,
                committed: committed.offset,
                end,
            });
        }
    }
    encode(
        Snapshot {
            stats: broker.stats(),
            rss: process_rss_bytes(),
            groups,
            partitions,
            members,
        },
        Some(&broker.core.counters.latency),
    )
}

fn encode(snapshot: Snapshot, latency: Option<&Latency>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    if let Some(latency) = latency {
        registry.register(
            "herald_request_duration_seconds",
            "Time from a request's arrival to its response being ready, by Kafka API",
            latency.requests.clone(),
        );
    }
    registry.register(
        "herald_fsync_duration_seconds",
        "Duration of the fsyncs producers waited for (group commit)",
        FSYNC_SECONDS.clone(),
    );
    let mut text = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// A gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter without labels; `name` is given with its `_total` suffix, as it is scraped.
fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(family, help, None, MetricType::Counter)?)
}

type Fmt = Result<(), std::fmt::Error>;

/// A label value escaped as the text format wants (`prometheus-client` writes values as
/// given, and a group id may hold any character).
fn esc(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A metric family's name, help and how to read its value from a source.
type Described<F> = (&'static str, &'static str, F);
type TopicValue = fn(&crate::TopicTrafficStats) -> u64;
type PartitionValue = fn(&PartitionOffsets) -> u64;
type CleanerValue = fn(&crate::CleanerProgress) -> u64;
type GroupValue = dyn Fn(&GroupPartitionOffset) -> i64;
/// A by-listener family: name, help, kind and which of (open, accepted) it shows.
type ListenerMetric = (
    &'static str,
    &'static str,
    MetricType,
    fn(&(u64, u64)) -> u64,
);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Fmt {
        let stats = &self.stats;
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
            gauge(&mut encoder, name, help, value)?;
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
            counter(&mut encoder, name, help, value)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "herald_requests",
                "Requests handled since start, by Kafka API.",
                None,
                MetricType::Counter,
            )?;
            for (api, count) in &stats.requests_total {
                ConstCounter::new(*count).encode(family.encode_family(&[("api", &*esc(api))])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "herald_limit_refusals",
                "Operations refused by a broker-wide limit (open_files, partitions, disk_space).",
                None,
                MetricType::Counter,
            )?;
            for (limit, count) in &stats.limit_refusals_total {
                ConstCounter::new(*count)
                    .encode(family.encode_family(&[("limit", &*esc(limit))])?)?;
            }
        }
        let by_listener: [ListenerMetric; 2] = [
            (
                "herald_listener_connections_open",
                "Client connections open now, by listener.",
                MetricType::Gauge,
                |counts| counts.0,
            ),
            (
                "herald_listener_connections_accepted",
                "Client connections accepted since start, by listener.",
                MetricType::Counter,
                |counts| counts.1,
            ),
        ];
        for (name, help, kind, value) in by_listener {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (listener, counts) in &stats.listener_connections {
                let listener = esc(listener);
                let labels = [("listener", &*listener)];
                let metric = family.encode_family(&labels)?;
                if matches!(kind, MetricType::Counter) {
                    ConstCounter::new(value(counts)).encode(metric)?;
                } else {
                    ConstGauge::new(value(counts)).encode(metric)?;
                }
            }
        }
        let by_topic: [Described<TopicValue>; 4] = [
            (
                "herald_topic_bytes_in",
                "Record-batch bytes appended, by topic.",
                |t| t.bytes_in_total,
            ),
            (
                "herald_topic_records_in",
                "Records appended, by topic.",
                |t| t.records_in_total,
            ),
            (
                "herald_topic_bytes_out",
                "Record-batch bytes returned by Fetch, by topic.",
                |t| t.bytes_out_total,
            ),
            (
                "herald_topic_records_out",
                "Records returned by Fetch, by topic.",
                |t| t.records_out_total,
            ),
        ];
        for (name, help, value) in by_topic {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, traffic) in &stats.topic_traffic {
                ConstCounter::new(value(traffic))
                    .encode(family.encode_family(&[("topic", &*esc(topic))])?)?;
            }
        }
        let cleaner: [Described<CleanerValue>; 3] = [
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
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &stats.cleaner_partitions {
                let partition = p.partition.to_string();
                ConstGauge::new(value(p)).encode(
                    family
                        .encode_family(&[("topic", &*esc(&p.topic)), ("partition", &*partition)])?,
                )?;
            }
        }
        self.encode_offsets(&mut encoder)?;
        if let Some(rss) = self.rss {
            gauge(
                &mut encoder,
                "herald_process_resident_memory_bytes",
                "Resident set size of the broker process.",
                rss,
            )?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Partition offsets and consumer group lag, as kafka-exporter names them.
    fn encode_offsets(&self, encoder: &mut DescriptorEncoder<'_>) -> Fmt {
        let partition_gauges: [Described<PartitionValue>; 2] = [
            (
                "herald_topic_partition_current_offset",
                "The end offset (next to be written) of each partition.",
                |p| p.current,
            ),
            (
                "herald_topic_partition_oldest_offset",
                "The first readable offset of each partition.",
                |p| p.oldest,
            ),
        ];
        for (name, help, value) in partition_gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &self.partitions {
                let partition = p.partition.to_string();
                let topic = esc(&p.topic);
                let labels = [("topic", &*topic), ("partition", &partition)];
                ConstGauge::new(value(p)).encode(family.encode_family(&labels)?)?;
            }
        }
        let lag = |g: &GroupPartitionOffset| {
            g.end.map_or(0, |end| {
                (i64::try_from(end).unwrap_or(i64::MAX) - g.committed).max(0)
            })
        };
        let group_gauges: [Described<&GroupValue>; 2] = [
            (
                "herald_consumergroup_current_offset",
                "The committed offset of each consumer group partition.",
                &|g| g.committed,
            ),
            (
                "herald_consumergroup_lag",
                "Messages between a consumer group's committed offset and the partition's end.",
                &lag,
            ),
        ];
        for (name, help, value) in group_gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for g in &self.groups {
                let partition = g.partition.to_string();
                let (group, topic) = (esc(&g.group), esc(&g.topic));
                let labels = [
                    ("consumergroup", &*group),
                    ("topic", &*topic),
                    ("partition", &partition),
                ];
                ConstGauge::new(value(g)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut sums: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
            for g in &self.groups {
                *sums.entry((&g.group, &g.topic)).or_default() += lag(g);
            }
            let mut family = encoder.encode_descriptor(
                "herald_consumergroup_lag_sum",
                "A consumer group's lag summed over a topic's partitions.",
                None,
                MetricType::Gauge,
            )?;
            for ((group, topic), sum) in sums {
                let (group, topic) = (esc(group), esc(topic));
                let labels = [("consumergroup", &*group), ("topic", &*topic)];
                ConstGauge::new(sum).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "herald_consumergroup_members",
            "Members of each consumer group.",
            None,
            MetricType::Gauge,
        )?;
        for (group, members) in &self.members {
            ConstGauge::new(*members)
                .encode(family.encode_family(&[("consumergroup", &*esc(group))])?)?;
        }
        Ok(())
    }
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
    fn render_names_every_figure_and_escapes_labels() {
        let mut stats = BrokerStats {
            topics: 2,
            partitions: 5,
            produced_records_total: 42,
            ..BrokerStats::default()
        };
        stats.requests_total.insert("Produce".to_string(), 7);
        stats
            .listener_connections
            .insert("PLAIN\"TEXT".to_string(), (2, 9));
        stats.topic_traffic.insert(
            "orders".to_string(),
            crate::TopicTrafficStats {
                bytes_in_total: 100,
                records_in_total: 3,
                bytes_out_total: 200,
                records_out_total: 6,
            },
        );
        let text = render(&stats);
        for line in [
            "herald_topics 2\n",
            "herald_partitions 5\n",
            "herald_produced_records_total 42\n",
            "herald_requests_total{api=\"Produce\"} 7\n",
            "# TYPE herald_requests counter\n",
            "herald_listener_connections_open{listener=\"PLAIN\\\"TEXT\"} 2\n",
            "herald_listener_connections_accepted_total{listener=\"PLAIN\\\"TEXT\"} 9\n",
            "herald_topic_bytes_in_total{topic=\"orders\"} 100\n",
            "herald_topic_records_out_total{topic=\"orders\"} 6\n",
            "# TYPE herald_fsync_duration_seconds histogram\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn group_lag_is_the_distance_to_the_end() {
        let snapshot = Snapshot {
            groups: vec![
                GroupPartitionOffset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 0,
                    committed: 3,
                    end: Some(10),
                },
                GroupPartitionOffset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 1,
                    committed: 5,
                    end: Some(5),
                },
            ],
            ..Snapshot::default()
        };
        let text = encode(snapshot, Some(&Latency::default()));
        for line in [
            "herald_consumergroup_lag{consumergroup=\"g\",topic=\"t\",partition=\"0\"} 7\n",
            "herald_consumergroup_lag{consumergroup=\"g\",topic=\"t\",partition=\"1\"} 0\n",
            "herald_consumergroup_current_offset{consumergroup=\"g\",topic=\"t\",partition=\"0\"} 3\n",
            "herald_consumergroup_lag_sum{consumergroup=\"g\",topic=\"t\"} 7\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn latency_histograms_count_observations() {
        let latency = Latency::default();
        latency.observe_request("Produce", Duration::from_millis(3));
        latency.observe_request("Produce", Duration::from_millis(5));
        let text = encode(Snapshot::default(), Some(&latency));
        assert!(
            text.contains("herald_request_duration_seconds_count{api=\"Produce\"} 2\n"),
            "{text}"
        );
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
