//! Direct with a group key: members and producers that hold the key work together; a member
//! refuses a producer without it, and a producer never uses a member without it.

use std::sync::Arc;
use std::time::Duration;

use herald_direct::handshake::GroupKey;
use herald_direct::keys::SecretKey;
use herald_direct::{
    Member, MemberConfig, MemberState, Message, PublishError, Publisher, PublisherConfig,
};
use tokio::io::AsyncReadExt;

use crate::harness::{Recorder, Shared, eventually, wait_up};

fn key(byte: u8) -> GroupKey {
    GroupKey::new(&SecretKey::from_bytes([byte; 32]))
}

async fn member(group_key: Option<GroupKey>, rec: &Arc<Recorder>) -> Member {
    let mut config = MemberConfig::new("orders", "g", "127.0.0.1:0".parse().unwrap());
    config.group_key = group_key;
    config.handshake_timeout_ms = 500;
    Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap()
}

async fn publisher(m: &Member, group_key: Option<GroupKey>) -> Publisher {
    let mut config = PublisherConfig::new(vec![m.local_addr()]);
    config.group_key = group_key;
    config.reconnect_interval_ms = 50;
    Publisher::start(config).await.unwrap()
}

/// Waits until the publisher's only member shows an error containing `needle`, and checks it
/// never came up; returns that error.
async fn refused(p: &Publisher, needle: &str) -> String {
    let seen = eventually(Duration::from_secs(5), || {
        p.members()
            .first()
            .and_then(|m| m.last_error.clone())
            .is_some_and(|e| e.contains(needle))
    })
    .await;
    let view = p.members();
    assert!(seen, "no error with {needle:?}: {view:?}");
    assert_ne!(view[0].state, MemberState::Up);
    view[0].last_error.clone().unwrap_or_default()
}

#[tokio::test]
async fn the_right_key_delivers() {
    let rec = Recorder::new();
    let m = member(Some(key(1)), &rec).await;
    let p = publisher(&m, Some(key(1))).await;
    wait_up(&p, 1).await;
    for i in 0..20 {
        p.publish(
            Message::new("orders", format!("o{i}")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    assert_eq!(rec.values().len(), 20);
    assert_eq!(m.stats().auth_failures, 0);
}

#[tokio::test]
async fn a_producer_with_a_wrong_key_is_refused_and_its_publish_fails() {
    let rec = Recorder::new();
    let m = member(Some(key(1)), &rec).await;
    let p = publisher(&m, Some(key(2))).await;
    // The member closes the connection on the bad proof; the producer then sees no PROVEN.
    refused(&p, "handshake").await;
    assert!(eventually(Duration::from_secs(5), || m.stats().auth_failures >= 1).await);
    let err = p
        .publish(Message::new("orders", "x"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::NoLiveMember { .. }), "{err}");
    assert!(rec.values().is_empty());
}

#[tokio::test]
async fn a_producer_without_a_key_is_refused() {
    let rec = Recorder::new();
    let m = member(Some(key(1)), &rec).await;
    let p = publisher(&m, None).await;
    refused(&p, "requires a group key").await;
    assert!(eventually(Duration::from_secs(5), || m.stats().auth_failures >= 1).await);
    assert!(rec.values().is_empty());
}

#[tokio::test]
async fn a_member_with_a_wrong_key_or_none_is_not_used() {
    let rec = Recorder::new();
    let wrong = member(Some(key(3)), &rec).await;
    let p = publisher(&wrong, Some(key(1))).await;
    // The member refuses the producer's proof and closes, so the producer learns nothing from
    // it; either way it never comes up.
    refused(&p, "handshake").await;

    let keyless = member(None, &rec).await;
    let p = publisher(&keyless, Some(key(1))).await;
    let error = refused(&p, "no group key").await;
    assert!(error.contains("refused"), "{error}");
    let err = p
        .publish(Message::new("orders", "x"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::NoLiveMember { .. }), "{err}");
    assert!(rec.values().is_empty());
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let rec = Recorder::new();
    let m = member(Some(key(1)), &rec).await;
    let mut raw = tokio::net::TcpStream::connect(m.local_addr())
        .await
        .unwrap();
    // Read the challenge, then say nothing: the member closes the connection (read returns 0).
    let mut buf = vec![0u8; 256];
    let mut total = 0;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.read(&mut buf[total..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open");
    assert_eq!(total, 4 + 2 + 32, "only the challenge was sent");
    assert!(eventually(Duration::from_secs(5), || m.stats().auth_failures == 1).await);
}
