//! Sealed datagrams: a member with topic keys delivers only datagrams whose tag checks and whose
//! sequence number is new, and counts the others as rejected or replayed.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use herald_direct::frame::{self, WireEvent};
use herald_direct::keys::SecretKey;
use herald_direct::seal::{self, DatagramKey};
use herald_direct::{DatagramSeal, Member, MemberConfig, Message, Publisher, PublisherConfig};

use crate::harness::{Recorder, Shared, eventually, wait_up};

const TOPIC: &str = "telemetry";

fn key(byte: u8) -> DatagramKey {
    DatagramKey::new(&SecretKey::from_bytes([byte; 32]))
}

async fn keyed_member(keys: Vec<DatagramKey>) -> (Member, Arc<Recorder>) {
    let rec = Recorder::new();
    let mut config = MemberConfig::new(TOPIC, "g", "127.0.0.1:0".parse().unwrap());
    config.datagram_keys = keys;
    let m = Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap();
    (m, rec)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A sealed datagram of one event, as a publisher with id `sender` sends it.
fn sealed(
    k: &DatagramKey,
    encrypt: bool,
    sender: u128,
    seq: u64,
    sent_ms: u64,
    value: &str,
) -> Bytes {
    let event = WireEvent {
        id: (sender << 64) | u128::from(seq),
        publisher: sender,
        seq,
        deadline_unix_ms: 0,
        topic: TOPIC.into(),
        key: None,
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: vec![],
    };
    let mut plain = BytesMut::new();
    frame::encode_event(&event, false, &mut plain);
    let mut out = BytesMut::new();
    seal::seal(k, encrypt, sender, seq, sent_ms, &plain[4..], &mut out);
    out.freeze()
}

fn send(m: &Member, datagram: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(datagram, m.local_addr()).unwrap();
}

#[tokio::test]
async fn sealed_datagrams_from_a_publisher_with_the_key_are_delivered() {
    for encrypt in [false, true] {
        let (m, rec) = keyed_member(vec![key(1)]).await;
        let mut pc = PublisherConfig::new(vec![m.local_addr()]);
        pc.datagram_keys.insert(
            TOPIC.into(),
            DatagramSeal {
                key: key(1),
                encrypt,
            },
        );
        let p = Publisher::start(pc).await.unwrap();
        wait_up(&p, 1).await;
        for i in 0..50 {
            p.send_datagram(Message::new(TOPIC, format!("d{i}")))
                .await
                .unwrap();
        }
        p.send_datagrams((50..100).map(|i| Message::new(TOPIC, format!("d{i}"))))
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(5), || rec.values().len() == 100).await,
            "encrypt {encrypt}: got {} ({:?})",
            rec.values().len(),
            m.stats()
        );
        let stats = m.stats();
        assert_eq!((stats.datagrams_rejected, stats.datagrams_replayed), (0, 0));
        assert_eq!(stats.datagrams_received, 100);
    }
}

#[tokio::test]
async fn a_publisher_with_another_key_or_none_is_rejected() {
    let (m, rec) = keyed_member(vec![key(1)]).await;
    let mut pc = PublisherConfig::new(vec![m.local_addr()]);
    pc.datagram_keys.insert(
        TOPIC.into(),
        DatagramSeal {
            key: key(2),
            encrypt: false,
        },
    );
    let wrong = Publisher::start(pc).await.unwrap();
    let unsealed = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&wrong, 1).await;
    wait_up(&unsealed, 1).await;
    for i in 0..10 {
        wrong
            .send_datagram(Message::new(TOPIC, format!("w{i}")))
            .await
            .unwrap();
        unsealed
            .send_datagram(Message::new(TOPIC, format!("u{i}")))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || m.stats().datagrams_rejected
            == 20)
        .await
    );
    assert!(rec.values().is_empty());
    assert_eq!(m.stats().datagrams_received, 0);
}

#[tokio::test]
async fn a_tampered_datagram_is_rejected_and_a_replayed_one_counted_once() {
    let (m, rec) = keyed_member(vec![key(1)]).await;
    for encrypt in [false, true] {
        let base = if encrypt { 100 } else { 0 };
        let good = sealed(&key(1), encrypt, 42, base + 1, now_ms(), "good");
        // A flipped bit in the tag, in the payload and in the header.
        for at in [good.len() - 1, good.len() - 20, 30] {
            let mut bad = good.to_vec();
            bad[at] ^= 0x01;
            send(&m, &bad);
        }
        send(&m, &good);
        send(&m, &good);
        let expected_rejected = if encrypt { 6 } else { 3 };
        let expected_replayed = if encrypt { 2 } else { 1 };
        assert!(
            eventually(Duration::from_secs(5), || {
                let s = m.stats();
                s.datagrams_rejected == expected_rejected
                    && s.datagrams_replayed == expected_replayed
            })
            .await,
            "{:?}",
            m.stats()
        );
    }
    assert_eq!(rec.values(), vec!["good".to_string(), "good".to_string()]);
    assert_eq!(m.stats().datagrams_received, 2);
}

#[tokio::test]
async fn old_and_stale_datagrams_count_as_replayed() {
    let (m, rec) = keyed_member(vec![key(1)]).await;
    let now = now_ms();
    send(&m, &sealed(&key(1), false, 7, 2000, now, "new"));
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 1).await);
    // Authentic, never seen, but older than the replay window.
    send(
        &m,
        &sealed(
            &key(1),
            false,
            7,
            2000 - seal::REPLAY_WINDOW_SEQS,
            now,
            "old",
        ),
    );
    // Authentic and new, but sent long before the member's clock allows.
    send(&m, &sealed(&key(1), false, 7, 2001, now - 120_000, "stale"));
    // Inside the window and new: delivered.
    send(&m, &sealed(&key(1), false, 7, 1999, now, "late"));
    assert!(eventually(Duration::from_secs(5), || m.stats().datagrams_replayed == 2).await);
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 2).await);
    assert_eq!(rec.values(), vec!["new".to_string(), "late".to_string()]);
    assert_eq!(m.stats().datagrams_rejected, 0);
}

#[tokio::test]
async fn a_rotated_key_and_the_old_one_both_open() {
    let (m, rec) = keyed_member(vec![key(1), key(2)]).await;
    send(&m, &sealed(&key(1), false, 5, 1, now_ms(), "old key"));
    send(&m, &sealed(&key(2), true, 5, 2, now_ms(), "new key"));
    send(&m, &sealed(&key(3), true, 5, 3, now_ms(), "unknown key"));
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 2).await);
    assert!(eventually(Duration::from_secs(5), || m.stats().datagrams_rejected == 1).await);
}

#[tokio::test]
async fn a_sealed_datagram_is_held_to_the_size_limit_with_its_envelope() {
    let (m, rec) = keyed_member(vec![key(1)]).await;
    let mut pc = PublisherConfig::new(vec![m.local_addr()]);
    pc.datagram_keys.insert(
        TOPIC.into(),
        DatagramSeal {
            key: key(1),
            encrypt: true,
        },
    );
    let p = Publisher::start(pc).await.unwrap();
    wait_up(&p, 1).await;
    // A sealed datagram of this topic without key or headers is 130 bytes plus the value.
    let limit = herald_direct::member::DATAGRAM_PAYLOAD_BYTES_MAX_DEFAULT;
    let fits = "x".repeat(limit - 130);
    p.send_datagram(Message::new(TOPIC, fits)).await.unwrap();
    let over = "x".repeat(limit - 129);
    match p.send_datagram(Message::new(TOPIC, over)).await {
        Err(herald_direct::DatagramError::TooLarge { bytes, limit: l }) => {
            assert_eq!((bytes, l), (limit + 1, limit));
        }
        other => panic!("{other:?}"),
    }
    assert!(eventually(Duration::from_secs(5), || rec.values().len() == 1).await);
    assert_eq!(m.stats().datagrams_rejected, 0);
}
