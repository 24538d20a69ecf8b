//! Counters the broker keeps as it runs, and the cheap snapshot of them ([`BrokerStats`]) that
//! the HTTP side turns into Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Highest Kafka API key counted per API; requests with a higher key count as unknown.
pub(crate) const API_KEY_COUNTED_MAX: usize = 127;

/// Live counters, updated with relaxed atomics on the request path.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) requests_by_api: [AtomicU64; API_KEY_COUNTED_MAX + 1],
    pub(crate) requests_unknown: AtomicU64,
    pub(crate) requests_malformed: AtomicU64,
    pub(crate) produced_bytes: AtomicU64,
    pub(crate) produced_records: AtomicU64,
    pub(crate) produced_batches_duplicate: AtomicU64,
    pub(crate) fetched_bytes: AtomicU64,
    pub(crate) fetched_records: AtomicU64,
    pub(crate) maintenance_passes: AtomicU64,
    pub(crate) retention_segments_deleted: AtomicU64,
    pub(crate) cleaner_passes: AtomicU64,
    pub(crate) cleaner_bytes_read: AtomicU64,
    pub(crate) cleaner_bytes_reclaimed: AtomicU64,
    pub(crate) cleaner_records_removed: AtomicU64,
    pub(crate) cleaner_failures: AtomicU64,
    pub(crate) authentication_failures: AtomicU64,
    pub(crate) authorization_failures: AtomicU64,
    /// Connections by listener name: (open now, accepted since start).
    pub(crate) listener_connections: parking_lot::Mutex<BTreeMap<String, (u64, u64)>>,
    /// Request latency histograms by API.
    pub(crate) latency: crate::metrics::Latency,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            connections_open: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            requests_by_api: std::array::from_fn(|_| AtomicU64::new(0)),
            requests_unknown: AtomicU64::new(0),
            requests_malformed: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            produced_records: AtomicU64::new(0),
            produced_batches_duplicate: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            fetched_records: AtomicU64::new(0),
            maintenance_passes: AtomicU64::new(0),
            retention_segments_deleted: AtomicU64::new(0),
            cleaner_passes: AtomicU64::new(0),
            cleaner_bytes_read: AtomicU64::new(0),
            cleaner_bytes_reclaimed: AtomicU64::new(0),
            cleaner_records_removed: AtomicU64::new(0),
            cleaner_failures: AtomicU64::new(0),
            authentication_failures: AtomicU64::new(0),
            authorization_failures: AtomicU64::new(0),
            listener_connections: parking_lot::Mutex::new(BTreeMap::new()),
            latency: crate::metrics::Latency::default(),
        }
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a connection accepted on the listener `name`.
    pub(crate) fn listener_opened(&self, name: &str) {
        let mut counts = self.listener_connections.lock();
        let entry = counts.entry(name.to_string()).or_default();
        entry.0 += 1;
        entry.1 += 1;
    }

    /// Counts a connection of the listener `name` closed.
    pub(crate) fn listener_closed(&self, name: &str) {
        if let Some(entry) = self.listener_connections.lock().get_mut(name) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    pub(crate) fn count_request(&self, api_key: i16) {
        match usize::try_from(api_key) {
            Ok(key) if key <= API_KEY_COUNTED_MAX => Self::add(&self.requests_by_api[key], 1),
            _ => Self::add(&self.requests_unknown, 1),
        }
    }
}

/// A point-in-time snapshot of the broker's statistics. Counters (`*_total`) only grow while
/// the broker runs; the others are gauges.
///
/// ```no_run
/// # async fn demo(broker: &herald_broker::Broker) {
/// let stats = broker.stats();
/// println!("{} topics, {} bytes produced", stats.topics, stats.produced_bytes_total);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Topics that exist now.
    pub topics: u64,
    /// Partitions over all topics.
    pub partitions: u64,
    /// Partitions whose logs are still being opened (recovered) in the background after a
    /// start; a request for one opens it first.
    pub partitions_loading: u64,
    /// Bytes the partition logs occupy on disk.
    pub disk_bytes: u64,
    /// Client connections open now.
    pub connections_open: u64,
    /// Client connections accepted since start.
    pub connections_accepted_total: u64,
    /// Connections closed at accept because `connections_max` were open.
    pub connections_refused_total: u64,
    /// Requests handled since start, by Kafka API name (`Produce`, `Fetch`, ...).
    pub requests_total: BTreeMap<String, u64>,
    /// Requests with an API key this broker does not know.
    pub requests_unknown_total: u64,
    /// Frames that could not be decoded (the connection was closed).
    pub requests_malformed_total: u64,
    /// Record-batch bytes appended by Produce requests.
    pub produced_bytes_total: u64,
    /// Records appended by Produce requests.
    pub produced_records_total: u64,
    /// Batches an idempotent producer retried that were already stored (not stored again).
    pub produced_batches_duplicate_total: u64,
    /// Record-batch bytes returned by Fetch responses.
    pub fetched_bytes_total: u64,
    /// Records returned by Fetch responses (whole batches, as stored).
    pub fetched_records_total: u64,
    /// Housekeeping passes (interval flush, roll, retention, checkpoint) over every partition.
    pub maintenance_passes_total: u64,
    /// Segments deleted by time or size retention.
    pub retention_segments_deleted_total: u64,
    /// Log cleaner passes that rewrote segments of a compacted partition.
    pub cleaner_passes_total: u64,
    /// Bytes the log cleaner read.
    pub cleaner_bytes_read_total: u64,
    /// Bytes the log cleaner freed (segment bytes before a pass minus after).
    pub cleaner_bytes_reclaimed_total: u64,
    /// Records the log cleaner removed (superseded values and expired tombstones).
    pub cleaner_records_removed_total: u64,
    /// Log cleaner passes that failed.
    pub cleaner_failures_total: u64,
    /// Every compacted partition's cleaner progress.
    pub cleaner_partitions: Vec<CleanerProgress>,
    /// Segment files the storage holds open now (its cache; a read in progress may hold a few
    /// more).
    pub open_files: u64,
    /// The storage's `open_files_max`.
    pub open_files_max: u64,
    /// Segment-file lookups served by an open file.
    pub open_files_hits_total: u64,
    /// Segment-file lookups that had to open the file.
    pub open_files_misses_total: u64,
    /// Segment files closed to stay within `open_files_max`.
    pub open_files_evictions_total: u64,
    /// Operations refused by a broker-wide limit, by limit (`open_files`, `partitions`,
    /// `disk_space`).
    pub limit_refusals_total: BTreeMap<String, u64>,
    /// Failed SASL authentications and TLS handshakes.
    pub authentication_failures_total: u64,
    /// Requests, or parts of them, refused by the ACLs.
    pub authorization_failures_total: u64,
    /// Listeners anyone on the network can use without authenticating (PLAINTEXT on a
    /// non-loopback address).
    pub listeners_insecure: u64,
    /// Connections by listener name: (open now, accepted since start).
    pub listener_connections: BTreeMap<String, (u64, u64)>,
    /// Traffic by topic name.
    pub topic_traffic: BTreeMap<String, TopicTrafficStats>,
}

/// One topic's traffic since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicTrafficStats {
    /// Record-batch bytes appended by Produce requests (and the admin API).
    pub bytes_in_total: u64,
    /// Records appended.
    pub records_in_total: u64,
    /// Record-batch bytes returned by Fetch responses.
    pub bytes_out_total: u64,
    /// Records returned by Fetch responses.
    pub records_out_total: u64,
}

/// One compacted partition's log cleaner progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanerProgress {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Bytes of closed segments not yet through a cleaner pass.
    pub dirty_bytes: u64,
    /// Bytes of all closed segments the cleaner may clean.
    pub cleanable_bytes: u64,
    /// Every record below this offset has been through a cleaner pass.
    pub cleaned_to_offset: u64,
}

impl Counters {
    /// Copies the counters into a snapshot; topic and disk figures are filled in by the caller.
    pub(crate) fn snapshot(&self, api_name: impl Fn(i16) -> Option<&'static str>) -> BrokerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut requests_total = BTreeMap::new();
        for (key, counter) in self.requests_by_api.iter().enumerate() {
            let count = load(counter);
            if count == 0 {
                continue;
            }
            let name = i16::try_from(key)
                .ok()
                .and_then(&api_name)
                .map_or_else(|| format!("api_{key}"), str::to_string);
            requests_total.insert(name, count);
        }
        BrokerStats {
            topics: 0,
            partitions: 0,
            disk_bytes: 0,
            connections_open: load(&self.connections_open),
            connections_accepted_total: load(&self.connections_accepted),
            connections_refused_total: load(&self.connections_refused),
            requests_total,
            requests_unknown_total: load(&self.requests_unknown),
            requests_malformed_total: load(&self.requests_malformed),
            produced_bytes_total: load(&self.produced_bytes),
            produced_records_total: load(&self.produced_records),
            produced_batches_duplicate_total: load(&self.produced_batches_duplicate),
            fetched_bytes_total: load(&self.fetched_bytes),
            fetched_records_total: load(&self.fetched_records),
            maintenance_passes_total: load(&self.maintenance_passes),
            retention_segments_deleted_total: load(&self.retention_segments_deleted),
            cleaner_passes_total: load(&self.cleaner_passes),
            cleaner_bytes_read_total: load(&self.cleaner_bytes_read),
            cleaner_bytes_reclaimed_total: load(&self.cleaner_bytes_reclaimed),
            cleaner_records_removed_total: load(&self.cleaner_records_removed),
            cleaner_failures_total: load(&self.cleaner_failures),
            authentication_failures_total: load(&self.authentication_failures),
            authorization_failures_total: load(&self.authorization_failures),
            listeners_insecure: 0,
            listener_connections: self.listener_connections.lock().clone(),
            ..BrokerStats::default()
        }
    }
}
