//! Client-side assignors and static membership: the broker only carries assignor bytes, so
//! cooperative-sticky must move only what it needs, and a static member that restarts within
//! its session gets its partitions back without anyone else rebalancing.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use crate::group_support::{Event, assigned, consumer, create_topic, poll_until, start_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_join_revokes_only_what_moves() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "events", 6).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let coop = [("partition.assignment.strategy", "cooperative-sticky")];
        let first = consumer(&bootstrap, "coop", "events", &coop);
        poll_until(
            &[&first],
            Duration::from_secs(60),
            "the first member to own all",
            |_, _| {},
            || assigned(&first).len() == 6,
        );
        let before = first.context().events.lock().len();
        let second = consumer(&bootstrap, "coop", "events", &coop);
        poll_until(
            &[&first, &second],
            Duration::from_secs(60),
            "a 3/3 split",
            |_, _| {},
            || assigned(&first).len() == 3 && assigned(&second).len() == 3,
        );
        let events: Vec<Event> = first.context().events.lock()[before..].to_vec();
        let revoked: BTreeSet<i32> = events
            .iter()
            .filter_map(|e| match e {
                Event::Revoke(p) => Some(p.clone()),
                Event::Assign(_) => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            revoked,
            assigned(&second),
            "only the partitions that moved were revoked: {events:?}"
        );
        assert!(
            revoked.is_disjoint(&assigned(&first)),
            "kept partitions were never revoked: {events:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_within_session_gets_its_partitions_without_rebalance() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "jobs", 6).await;
    let bootstrap = b.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let a = consumer(
            &bootstrap,
            "workers",
            "jobs",
            &[("group.instance.id", "worker-a")],
        );
        let other = consumer(
            &bootstrap,
            "workers",
            "jobs",
            &[("group.instance.id", "worker-b")],
        );
        poll_until(
            &[&a, &other],
            Duration::from_secs(60),
            "a 3/3 split",
            |_, _| {},
            || assigned(&a).len() == 3 && assigned(&other).len() == 3,
        );
        let a_partitions = assigned(&a);
        let other_events = other.context().events.lock().len();
        // Static members do not send LeaveGroup when they close.
        drop(a);
        let a2 = consumer(
            &bootstrap,
            "workers",
            "jobs",
            &[("group.instance.id", "worker-a")],
        );
        poll_until(
            &[&a2, &other],
            Duration::from_secs(5),
            "the restarted member's partitions",
            |_, _| {},
            || !assigned(&a2).is_empty(),
        );
        assert_eq!(assigned(&a2), a_partitions);
        // Keep serving the other member a little longer than a rebalance would take to reach
        // it, then check it saw none.
        poll_until(
            &[&a2, &other],
            Duration::from_secs(10),
            "heartbeats",
            |_, _| {},
            {
                let start = std::time::Instant::now();
                move || start.elapsed() > Duration::from_secs(2)
            },
        );
        assert_eq!(
            other.context().events.lock().len(),
            other_events,
            "the other member was not rebalanced: {:?}",
            other.context().events.lock()
        );
        assert_eq!(assigned(&other).len(), 3);
    })
    .await
    .unwrap();
}
