//! What the console's live charts draw: the broker's throughput, storage and connections, and
//! every group's lag per partition, sampled every [`SAMPLE_MS`] for the last hour.
//!
//! A background task takes the samples so the charts cover the hour before the page was opened;
//! every series is bounded ([`POINTS_MAX`] points, [`LAG_SERIES_MAX`] partitions).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::Broker;

/// Time between two samples.
pub(crate) const SAMPLE_MS: u64 = 5_000;
/// Samples kept per series: one hour.
pub(crate) const POINTS_MAX: usize = 720;
/// Group partitions whose lag is remembered at once; others are left out of the charts.
pub(crate) const LAG_SERIES_MAX: usize = 4_096;

/// One sample of the broker-wide figures, with rates over the interval before it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_ms: i64,
    pub(crate) bytes_in_per_s: f64,
    pub(crate) bytes_out_per_s: f64,
    pub(crate) records_in_per_s: f64,
    pub(crate) records_out_per_s: f64,
    pub(crate) disk_bytes: u64,
    pub(crate) connections: u64,
}

/// Counters as they stood at the previous sample.
#[derive(Default)]
struct Previous {
    at_ms: i64,
    bytes_in: u64,
    bytes_out: u64,
    records_in: u64,
    records_out: u64,
    /// Each topic's traffic counters.
    topics: HashMap<String, crate::TopicTrafficStats>,
}

/// A topic's traffic per second over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TopicRate {
    pub(crate) records_in_per_s: f64,
    pub(crate) records_out_per_s: f64,
    pub(crate) bytes_in_per_s: f64,
    pub(crate) bytes_out_per_s: f64,
}

/// One group partition's lag over time: (ms since the epoch, lag).
pub(crate) type LagSeries = VecDeque<(i64, i64)>;
/// A partition's lag points, as the API answers them.
pub(crate) type PartitionLagPoints = ((String, i32), Vec<(i64, i64)>);

#[derive(Default)]
struct Inner {
    previous: Option<Previous>,
    samples: VecDeque<Sample>,
    /// Traffic per second by topic, over the last interval.
    topic_rates: HashMap<String, TopicRate>,
    /// (group, topic, partition) -> lag points.
    lag: BTreeMap<(String, String, i32), LagSeries>,
}

/// The sampled history, shared by the API and the console.
#[derive(Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl History {
    /// Starts sampling `broker` every [`SAMPLE_MS`] on the current tokio runtime, until the
    /// broker is dropped. Without a runtime nothing is sampled (the charts stay empty).
    pub(crate) fn spawn(self: &Arc<Self>, broker: &Arc<Broker>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let history = Arc::downgrade(self);
        let broker: Weak<Broker> = Arc::downgrade(broker);
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(SAMPLE_MS));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let (Some(history), Some(broker)) = (history.upgrade(), broker.upgrade()) else {
                    return;
                };
                if *broker.core.stopping.borrow() {
                    return;
                }
                let done = tokio::task::spawn_blocking(move || history.sample(&broker)).await;
                if let Err(error) = done {
                    tracing::warn!(%error, "console sampling failed");
                }
            }
        });
    }

    /// Takes one sample now.
    pub(crate) fn sample(&self, broker: &Broker) {
        let stats = broker.stats();
        let now = now_ms();
        let lags = super::groups::all_lags(broker);
        let mut inner = self.inner.lock();
        let current = Previous {
            at_ms: now,
            bytes_in: stats.produced_bytes_total,
            bytes_out: stats.fetched_bytes_total,
            records_in: stats.produced_records_total,
            records_out: stats.fetched_records_total,
            topics: stats.topic_traffic.clone().into_iter().collect(),
        };
        if let Some(previous) = inner.previous.take() {
            let seconds = ((now - previous.at_ms) as f64 / 1000.0).max(0.001);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
            let sample = Sample {
                t_ms: now,
                bytes_in_per_s: rate(current.bytes_in, previous.bytes_in),
                bytes_out_per_s: rate(current.bytes_out, previous.bytes_out),
                records_in_per_s: rate(current.records_in, previous.records_in),
                records_out_per_s: rate(current.records_out, previous.records_out),
                disk_bytes: stats.disk_bytes,
                connections: stats.connections_open,
            };
            inner.samples.push_back(sample);
            while inner.samples.len() > POINTS_MAX {
                inner.samples.pop_front();
            }
            inner.topic_rates = current
                .topics
                .iter()
                .map(|(name, now)| {
                    // A topic new since the last sample starts from its own counters.
                    let before = previous.topics.get(name).unwrap_or(now);
                    let topic_rate = TopicRate {
                        records_in_per_s: rate(now.records_in_total, before.records_in_total),
                        records_out_per_s: rate(now.records_out_total, before.records_out_total),
                        bytes_in_per_s: rate(now.bytes_in_total, before.bytes_in_total),
                        bytes_out_per_s: rate(now.bytes_out_total, before.bytes_out_total),
                    };
                    (name.clone(), topic_rate)
                })
                .collect();
        }
        inner.previous = Some(current);
        // Series of partitions no longer committed by their group end with it.
        inner.lag.retain(|key, _| lags.contains_key(key));
        for (key, lag) in lags {
            if !inner.lag.contains_key(&key) && inner.lag.len() >= LAG_SERIES_MAX {
                continue;
            }
            let series = inner.lag.entry(key).or_default();
            series.push_back((now, lag));
            while series.len() > POINTS_MAX {
                series.pop_front();
            }
        }
    }

    /// Every broker-wide sample, oldest first.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.inner.lock().samples.iter().copied().collect()
    }

    /// The latest sample, if two have been taken.
    pub(crate) fn latest(&self) -> Option<Sample> {
        self.inner.lock().samples.back().copied()
    }

    /// `topic`'s traffic per second over the last interval.
    pub(crate) fn topic_rate(&self, topic: &str) -> Option<TopicRate> {
        self.inner.lock().topic_rates.get(topic).copied()
    }

    /// The lag series of `group`'s partitions.
    pub(crate) fn group_lag(&self, group: &str) -> Vec<PartitionLagPoints> {
        self.inner
            .lock()
            .lag
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, topic, partition), series)| {
                (
                    (topic.clone(), *partition),
                    series.iter().copied().collect(),
                )
            })
            .collect()
    }
}
