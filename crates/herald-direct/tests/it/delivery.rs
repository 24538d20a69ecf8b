//! Direct delivery: every group gets each event once, failover after a member dies, no member.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use herald_direct::{Member, MemberConfig, Message, PublishError, Publisher, PublisherConfig};

use crate::harness::{Recorder, Shared, counts, member, publisher, wait_up};

#[tokio::test]
async fn each_event_reaches_exactly_one_member_of_every_group() {
    let recs: Vec<_> = (0..4).map(|_| Recorder::new()).collect();
    let a1 = member("orders", "a", 16, &recs[0]).await;
    let a2 = member("orders", "a", 16, &recs[1]).await;
    let b1 = member("orders", "b", 16, &recs[2]).await;
    let b2 = member("orders", "b", 16, &recs[3]).await;
    let p = publisher(&[&a1, &a2, &b1, &b2]).await;
    wait_up(&p, 4).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.publish(
                Message::new("orders", format!("e{i}")),
                Duration::from_secs(10),
            )
            .await
        }));
    }
    for t in tasks {
        let receipt = t.await.unwrap().unwrap();
        assert_eq!(receipt.groups, vec!["a".to_string(), "b".to_string()]);
    }
    for group in [&recs[0..2], &recs[2..4]] {
        let mut all = group[0].values();
        all.extend(group[1].values());
        let c = counts(&all);
        assert_eq!(c.len(), 500);
        assert!(c.values().all(|n| *n == 1), "duplicates in a group");
        // Load balancing: both members took part.
        assert!(!group[0].values().is_empty() && !group[1].values().is_empty());
    }
}

#[tokio::test]
async fn a_dead_member_is_failed_over_without_losing_events() {
    let r1 = Recorder::new();
    let r2 = Recorder::slow(Duration::from_millis(20));
    let m1 = member("t", "g", 64, &r1).await;
    let m2 = member("t", "g", 64, &r2).await;
    let p = publisher(&[&m1, &m2]).await;
    wait_up(&p, 2).await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.publish(Message::new("t", format!("e{i}")), Duration::from_secs(10))
                .await
        }));
    }
    // Drop m2 abruptly (no goodbye) while events are in flight on it.
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(m2);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut all: HashSet<String> = r1.values().into_iter().collect();
    all.extend(r2.values());
    assert_eq!(all.len(), 400, "an acked event is missing");
}

#[tokio::test]
async fn a_group_with_no_live_member_fails_after_the_deadline() {
    let r = Recorder::new();
    let m = member("t", "lonely", 4, &r).await;
    let p = publisher(&[&m]).await;
    wait_up(&p, 1).await;
    drop(m);
    let err = p
        .publish(Message::new("t", "x"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::NoLiveMember { ref group, .. } if group.as_deref() == Some("lonely")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_topic_fails_after_the_deadline() {
    let r = Recorder::new();
    let m = member("t", "g", 4, &r).await;
    let p = publisher(&[&m]).await;
    wait_up(&p, 1).await;
    let err = p
        .publish(Message::new("other", "x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::NoLiveMember { group: None, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_handler_is_retried_on_another_member() {
    let bad = std::sync::Arc::new(Recorder {
        fail: true,
        ..Recorder::default()
    });
    let good = Recorder::new();
    let m1 = member("t", "g", 4, &bad).await;
    let m2 = member("t", "g", 4, &good).await;
    let p = publisher(&[&m1, &m2]).await;
    wait_up(&p, 2).await;
    for i in 0..20 {
        p.publish(Message::new("t", format!("e{i}")), Duration::from_secs(5))
            .await
            .unwrap();
    }
    // Equally loaded members take turns, so the failing one is chosen first for some events.
    let failed: Vec<u128> = bad.failed.lock().iter().map(|e| e.id).collect();
    assert!(!failed.is_empty(), "the failing member was never tried");
    assert_eq!(m1.stats().handler_failures, failed.len() as u64);
    // Every event was handled once, by the other member; each that failed on the first was
    // retried there under the same id.
    let handled: Vec<u128> = good.seen.lock().iter().map(|e| e.id).collect();
    assert_eq!(handled.len(), 20);
    assert_eq!(handled.iter().collect::<HashSet<_>>().len(), 20);
    for id in &failed {
        assert!(
            handled.contains(id),
            "event {id:x} failed on the first member and was not retried on the second"
        );
    }
    assert_eq!(m2.stats().handler_failures, 0);
}

#[tokio::test]
async fn a_malformed_frame_closes_only_that_connection() {
    use tokio::io::AsyncWriteExt;
    let r = Recorder::new();
    let m = member("t", "g", 4, &r).await;
    let p = publisher(&[&m]).await;
    wait_up(&p, 1).await;
    let mut bad = tokio::net::TcpStream::connect(m.local_addr())
        .await
        .unwrap();
    bad.write_all(&[0, 0, 0, 4, 9, 9, 9, 9]).await.unwrap();
    let stats_ok =
        crate::harness::eventually(Duration::from_secs(5), || m.stats().malformed_frames == 1)
            .await;
    assert!(stats_ok);
    p.publish(Message::new("t", "still works"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.values(), vec!["still works".to_string()]);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    use tokio::io::AsyncReadExt;
    let r = Recorder::new();
    let mut config = herald_direct::MemberConfig::new("t", "g", "127.0.0.1:0".parse().unwrap());
    config.connections_max = 1;
    let m = herald_direct::Member::start(
        config,
        std::sync::Arc::new(crate::harness::Shared(r.clone())),
    )
    .await
    .unwrap();
    let p = publisher(&[&m]).await;
    wait_up(&p, 1).await;
    let mut extra = tokio::net::TcpStream::connect(m.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the extra connection was neither served nor closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the extra connection got a hello");
    p.publish(
        Message::new("t", "first still served"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn events_larger_than_the_socket_buffers_arrive_whole_one_after_another() {
    // One event in flight at a time goes out from the publishing task itself; at 24 MiB a
    // non-blocking write cannot take it all (the member runs on this same thread, so it is not
    // reading meanwhile), and the writer task must finish each frame before the next one.
    const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;
    let rec = Recorder::new();
    let mut config = MemberConfig::new("big", "g", "127.0.0.1:0".parse().unwrap());
    config.frame_bytes_max = FRAME_BYTES_MAX;
    let m = Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap();
    let mut pc = PublisherConfig::new(vec![m.local_addr()]);
    pc.frame_bytes_max = FRAME_BYTES_MAX;
    let p = Publisher::start(pc).await.unwrap();
    wait_up(&p, 1).await;
    let big = |i: usize| {
        let mut v = format!("big{i}:").into_bytes();
        v.resize(24 * 1024 * 1024, b'0' + i as u8);
        v
    };
    for i in 0..3 {
        p.publish(Message::new("big", big(i)), Duration::from_secs(20))
            .await
            .unwrap();
        p.publish(
            Message::new("big", format!("small{i}")),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    }
    let values = rec.values();
    assert_eq!(values.len(), 6);
    for i in 0..3 {
        assert!(
            values[2 * i].as_bytes() == big(i).as_slice(),
            "event {i} damaged"
        );
        assert_eq!(values[2 * i + 1], format!("small{i}"));
    }
}
