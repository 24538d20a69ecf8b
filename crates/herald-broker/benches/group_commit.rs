//! OffsetCommit cost through the coordinator: one committer waiting for its own fsync, and many
//! committers at once sharing fsyncs (group commit). Run with
//! `cargo bench -p herald-broker --bench group_commit`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_broker::group::{
    CommitPartition, CommitRequest, Coordinator, GroupConfig, SystemClock, TopicCatalog,
};

struct OneTopic;

impl TopicCatalog for OneTopic {
    fn partition_count(&self, topic: &str) -> Option<i32> {
        (topic == "t").then_some(64)
    }
    fn retention_ms(&self, _: &str) -> Option<i64> {
        Some(-1)
    }
}

fn commit(group: usize, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: format!("g{group}"),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: i32::try_from(group % 64).unwrap_or(0),
            offset,
            leader_epoch: -1,
            metadata: None,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let coordinator = Coordinator::open(
        dir.path(),
        GroupConfig::default(),
        Arc::new(SystemClock),
        Arc::new(OneTopic),
    )
    .expect("open coordinator");
    let mut group = c.benchmark_group("offset_commit");
    group.measurement_time(Duration::from_secs(5));
    let mut offset = 0;
    for committers in [1usize, 32] {
        group.throughput(Throughput::Elements(committers as u64));
        group.bench_function(format!("{committers}_concurrent"), |b| {
            b.iter(|| {
                offset += 1;
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..committers)
                        .map(|g| {
                            let coordinator = coordinator.clone();
                            tokio::spawn(async move { coordinator.commit(commit(g, offset)).await })
                        })
                        .collect();
                    for task in tasks {
                        let results = task.await.expect("task").expect("commit");
                        assert!(results.iter().all(Result::is_ok));
                    }
                });
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
