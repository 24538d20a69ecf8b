//! Membership: joins are used quickly, leaves are announced, crashes are detected.

use std::time::Duration;

use herald_direct::{MemberState, Message, Publisher, PublisherConfig};

use crate::harness::{Recorder, eventually, member, wait_up};

fn state_of(p: &Publisher, addr: std::net::SocketAddr) -> Option<MemberState> {
    p.members()
        .into_iter()
        .find(|m| m.addr == addr)
        .map(|m| m.state)
}

#[tokio::test]
async fn join_leave_and_crash_show_in_the_view() {
    let r = Recorder::new();
    let m1 = member("t", "g", 4, &r).await;
    let mut config = PublisherConfig::new(vec![m1.local_addr()]);
    config.heartbeat_interval_ms = 100;
    config.heartbeat_timeout_ms = 500;
    let p = Publisher::start(config).await.unwrap();
    wait_up(&p, 1).await;
    let view = p.members();
    assert_eq!(view[0].group.as_deref(), Some("g"));
    assert_eq!(view[0].capacity, 4);

    // Join at run time: used within a second.
    let m2 = member("t", "g", 4, &r).await;
    p.add_peer(m2.local_addr());
    let (p2, a2) = (p.clone(), m2.local_addr());
    assert!(
        eventually(Duration::from_secs(1), move || state_of(&p2, a2)
            == Some(MemberState::Up))
        .await
    );

    // Leave politely: goodbye.
    let a1 = m1.local_addr();
    m1.shutdown().await;
    let p2 = p.clone();
    assert!(
        eventually(Duration::from_secs(2), move || state_of(&p2, a1)
            == Some(MemberState::Left))
        .await
    );

    // Crash: no goodbye, the connection drops.
    drop(m2);
    let p2 = p.clone();
    assert!(
        eventually(Duration::from_secs(3), move || state_of(&p2, a2)
            == Some(MemberState::Down))
        .await
    );
    assert!(
        p.publish(Message::new("t", "x"), Duration::from_millis(200))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_member_started_later_is_found_from_the_static_list() {
    // Reserve a port, release it, and start the member there after the publisher.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![addr]))
        .await
        .unwrap();
    assert_eq!(p.members()[0].state, MemberState::Connecting);
    let r = Recorder::new();
    let mut config = herald_direct::MemberConfig::new("t", "g", addr);
    config.capacity = 2;
    let _m = herald_direct::Member::start(
        config,
        std::sync::Arc::new(crate::harness::Shared(r.clone())),
    )
    .await
    .unwrap();
    wait_up(&p, 1).await;
    p.publish(Message::new("t", "late"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.values(), vec!["late".to_string()]);
}

#[tokio::test]
async fn a_removed_peer_is_forgotten_and_its_group_no_longer_counts() {
    let r = Recorder::new();
    let m = member("t", "g", 4, &r).await;
    let p = Publisher::start(PublisherConfig::new(vec![]))
        .await
        .unwrap();
    p.add_peer(m.local_addr());
    p.publish(Message::new("t", "x"), Duration::from_secs(5))
        .await
        .unwrap();
    let addr = m.local_addr();
    m.shutdown().await;
    p.remove_peer(addr);
    assert!(p.members().is_empty(), "{:?}", p.members());
    match p
        .publish(Message::new("t", "y"), Duration::from_millis(100))
        .await
    {
        Err(herald_direct::PublishError::NoLiveMember { .. }) => {}
        other => panic!("expected no member, got {other:?}"),
    }
    assert_eq!(r.values(), ["x"]);
}
