//! Datagrams: delivery at a modest rate, exact loss counts with the drop hook, size limit.

use std::sync::Arc;
use std::time::Duration;

use herald_direct::{DatagramError, Member, MemberConfig, Message, Publisher, PublisherConfig};

use crate::harness::{Recorder, Shared, eventually, wait_up};

async fn pair(
    drop_at_receiver: Option<u64>,
    drop_at_sender: Option<u64>,
) -> (Member, Arc<Recorder>, Publisher) {
    let rec = Recorder::new();
    let mut config = MemberConfig::new("telemetry", "g", "127.0.0.1:0".parse().unwrap());
    config.drop_every_nth_datagram = drop_at_receiver;
    let m = Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap();
    let mut pc = PublisherConfig::new(vec![m.local_addr()]);
    pc.drop_every_nth_datagram = drop_at_sender;
    let p = Publisher::start(pc).await.unwrap();
    wait_up(&p, 1).await;
    (m, rec, p)
}

async fn send_paced(p: &Publisher, n: usize) {
    for i in 0..n {
        p.send_datagram(Message::new("telemetry", format!("d{i}")))
            .await
            .unwrap();
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn datagrams_arrive_at_a_modest_rate() {
    let (m, rec, p) = pair(None, None).await;
    send_paced(&p, 2000).await;
    assert!(eventually(Duration::from_secs(5), || rec.values().len() >= 1990).await);
    let stats = m.stats();
    assert_eq!(stats.datagrams_received as usize, rec.values().len());
    assert_eq!(stats.datagrams_lost, 2000 - stats.datagrams_received);
}

#[tokio::test]
async fn induced_drops_at_the_sender_are_counted_exactly() {
    let (m, rec, p) = pair(None, Some(10)).await;
    // 1001 datagrams: sequence numbers 10, 20, ..., 1000 are skipped, 1001 closes the range.
    send_paced(&p, 1001).await;
    assert!(eventually(Duration::from_secs(5), || rec.values().len() >= 901).await);
    assert_eq!(m.stats().datagrams_lost, 100);
    assert_eq!(m.stats().datagrams_received, 901);
    let per_publisher = m.datagram_publishers();
    assert_eq!(per_publisher.len(), 1);
    assert_eq!(
        per_publisher[0].publisher,
        uuid::Uuid::from_u128(p.id()).to_string()
    );
    assert_eq!(
        (per_publisher[0].received, per_publisher[0].lost),
        (901, 100)
    );
}

#[tokio::test]
async fn induced_drops_at_the_receiver_are_counted_exactly() {
    let (m, rec, p) = pair(Some(7), None).await;
    send_paced(&p, 1000).await;
    // Received 1..=1000 except multiples of 7 (142 of them; 1000 is not one).
    assert!(eventually(Duration::from_secs(5), || rec.values().len() >= 858).await);
    assert_eq!(m.stats().datagrams_lost, 142);
    assert_eq!(m.stats().datagrams_dropped_by_hook, 142);
}

#[tokio::test]
async fn an_oversized_datagram_is_an_error_not_a_truncation() {
    let (_m, rec, p) = pair(None, None).await;
    let err = p
        .send_datagram(Message::new("telemetry", vec![b'x'; 1500]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatagramError::TooLarge { limit: 1472, .. }),
        "{err:?}"
    );
    p.send_datagram(Message::new("telemetry", vec![b'x'; 1000]))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 1).await);
}

#[tokio::test]
async fn batched_datagrams_arrive_in_order_with_sequence_numbers_and_drops_counted() {
    let (m, rec, p) = pair(None, Some(10)).await;
    // 3 batches of 150 (more than one sendmmsg each), paced so the receiver keeps up:
    // sequence numbers 10, 20, ..., 450 are skipped by the hook, 45 in all; the last one is
    // not yet a gap, since nothing after it arrived.
    for b in 0..3 {
        let batch = (0..150).map(|i| Message::new("telemetry", format!("b{}", b * 150 + i)));
        assert_eq!(p.send_datagrams(batch).await.unwrap(), 135);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(eventually(Duration::from_secs(5), || rec.values().len() >= 405).await);
    assert_eq!(m.stats().datagrams_received, 405);
    assert_eq!(m.stats().datagrams_lost, 44);
    let expected: Vec<String> = (0..450)
        .filter(|i| (i + 1) % 10 != 0)
        .map(|i| format!("b{i}"))
        .collect();
    assert_eq!(rec.values(), expected);
}

#[tokio::test]
async fn a_batch_with_one_oversized_datagram_sends_nothing() {
    let (m, rec, p) = pair(None, None).await;
    let batch = vec![
        Message::new("telemetry", "small"),
        Message::new("telemetry", vec![b'x'; 1500]),
    ];
    let err = p.send_datagrams(batch).await.unwrap_err();
    assert!(matches!(err, DatagramError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        p.send_datagrams([Message::new("telemetry", "after")])
            .await
            .unwrap(),
        1
    );
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 1).await);
    assert_eq!(rec.values(), vec!["after".to_string()]);
    assert_eq!(m.stats().datagrams_lost, 0);
}

#[tokio::test]
async fn a_member_known_at_two_addresses_gets_one_sequence() {
    // Listening on every interface, the member is reachable at two loopback addresses, as a
    // member announced by mDNS on several interfaces is.
    let rec = Recorder::new();
    let config = MemberConfig::new("telemetry", "g", "0.0.0.0:0".parse().unwrap());
    let m = Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap();
    let port = m.local_addr().port();
    let first = std::net::SocketAddr::from(([127, 0, 0, 2], port));
    let later = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let p = Publisher::start(PublisherConfig::new(vec![first]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    send_paced(&p, 10).await;
    // The second address comes up later (and sorts first): the count goes on, it does not
    // restart at 1 there.
    p.add_peer(later);
    wait_up(&p, 2).await;
    send_paced(&p, 10).await;
    assert!(eventually(Duration::from_secs(5), || rec.values().len() >= 20).await);
    let per_publisher = m.datagram_publishers();
    assert_eq!(per_publisher.len(), 1);
    assert_eq!(
        (
            per_publisher[0].received,
            per_publisher[0].lost,
            per_publisher[0].duplicates
        ),
        (20, 0, 0)
    );
}
