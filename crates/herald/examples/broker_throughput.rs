//! Measures the broker transport against a Herald broker started in this process on a
//! temporary directory: publish latency one event at a time, publish throughput with many
//! events in flight, and how fast a subscription handles and commits them.
//!
//! `cargo run --release -p herald --example broker_throughput -- [EVENTS] [PAYLOAD_BYTES] [OPTIONS]`
//! where OPTIONS are bus URL options such as `linger.ms=1&compression.type=lz4`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::{Bus, Event};
use herald_broker::group::GroupConfig;
use herald_broker::{Broker, BrokerConfig};

/// Publishes awaited one after the other for the latency figures.
const SEQUENTIAL_EVENTS: usize = 2_000;
/// Publishes outstanding at once in the throughput run.
const PUBLISHES_IN_FLIGHT_MAX: usize = 512;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let payload_bytes: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let options = args.next().unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        kafka_addr: "127.0.0.1:0".parse()?,
        groups: GroupConfig {
            initial_rebalance_delay_ms: 100,
            ..GroupConfig::default()
        },
        ..BrokerConfig::default()
    })
    .await?;
    let bus = Bus::connect(&format!("broker://{}?{options}", broker.kafka_addr())).await?;
    let payload = vec![b'x'; payload_bytes];

    let mut latencies = Vec::with_capacity(SEQUENTIAL_EVENTS);
    for i in 0..SEQUENTIAL_EVENTS {
        let started = Instant::now();
        bus.publish(
            "bench-seq",
            Event::new(payload.clone()).with_key(format!("k{}", i % 64)),
        )
        .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "sequential publish: {SEQUENTIAL_EVENTS} events, p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        latencies[latencies.len() - 1]
    );

    let started = Instant::now();
    let mut results = futures::stream::iter(0..events)
        .map(|i| {
            let bus = bus.clone();
            let event = Event::new(payload.clone()).with_key(format!("k{}", i % 64));
            async move { bus.publish("bench", event).await }
        })
        .buffer_unordered(PUBLISHES_IN_FLIGHT_MAX);
    while let Some(r) = results.next().await {
        r?;
    }
    let took = started.elapsed();
    println!(
        "concurrent publish: {events} events of {payload_bytes} B with {PUBLISHES_IN_FLIGHT_MAX} in flight in {took:?}: {:.0} events/s",
        events as f64 / took.as_secs_f64()
    );

    for concurrency in [1, 8] {
        let handled = Arc::new(AtomicU64::new(0));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
        let counter = handled.clone();
        let target = events as u64;
        let started = Instant::now();
        let sub = bus
            .subscribe("bench")
            .group(&format!("readers-{concurrency}"))
            .concurrency(concurrency)
            .handle(move |_e: Event| {
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                let done = done_tx.clone();
                async move {
                    if n == target {
                        done.send(()).await.ok();
                    }
                    Ok(())
                }
            })
            .await?;
        tokio::time::timeout(Duration::from_secs(600), done_rx.recv()).await?;
        let took = started.elapsed();
        sub.shutdown().await?;
        println!(
            "subscribe (concurrency {concurrency}): {events} events handled in {took:?}: {:.0} events/s (including the group join)",
            events as f64 / took.as_secs_f64()
        );
    }
    bus.close().await;
    broker.shutdown().await?;
    Ok(())
}
