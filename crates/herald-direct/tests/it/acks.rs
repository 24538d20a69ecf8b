//! The member's replies on a raw connection: written by whichever task has them, they must still
//! arrive as whole frames, one per event, however slowly the producer reads them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_direct::frame::{self, Frame, NackReason, WireEvent};
use herald_direct::{FnHandler, Member, MemberConfig, Received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: u64 = 40_000;
/// Length of the failure message of every other event: large replies fill the socket buffers.
const FAILURE_BYTES: usize = 1000;

fn failure(seq: u64) -> String {
    format!("{seq:0>FAILURE_BYTES$}")
}

/// Half the events are answered at once (reply written by the member's reader), half after a
/// yield (reply written by the handler's own task), so both ways of writing share the socket.
/// Half of each half fail with a long message, so the replies outgrow the socket buffers.
async fn mixed_member() -> Member {
    let mut config = MemberConfig::new("t", "g", "127.0.0.1:0".parse().unwrap());
    config.capacity = EVENTS as u32;
    let handler = FnHandler::events(|e: Received| async move {
        if e.seq % 2 == 1 {
            tokio::task::yield_now().await;
        }
        if e.seq % 4 >= 2 {
            return Err(failure(e.seq).into());
        }
        Ok(())
    });
    Member::start(config, Arc::new(handler)).await.unwrap()
}

fn event(seq: u64) -> WireEvent {
    WireEvent {
        id: (7u128 << 64) | seq as u128,
        publisher: 7,
        seq,
        deadline_unix_ms: 0,
        topic: "t".into(),
        key: None,
        value: Bytes::from_static(b"v"),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_arrive_whole_and_once_each_when_the_producer_reads_slowly() {
    let m = mixed_member().await;
    // A small receive buffer and small reads make the member's writes find the socket full, so
    // replies also take the writer task's queue and the reader waits for room.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(m.local_addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        for seq in 1..=EVENTS {
            frame::encode(&Frame::Event(event(seq)), &mut buf);
            if buf.len() >= 16 * 1024 {
                writer.write_all(&buf).await.unwrap();
                buf.clear();
            }
        }
        writer.write_all(&buf).await.unwrap();
        writer
    });
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 300];
    let mut acked = HashSet::new();
    let mut hello = false;
    let read_all = async {
        loop {
            while let Some(frame) = frame::decode_stream(&mut buf, 1 << 20).unwrap() {
                match frame {
                    Frame::Hello(_) if !hello => hello = true,
                    Frame::Ack { id } => {
                        assert_eq!(id as u64 % 4 / 2, 0, "event {id:x} acked, should fail");
                        assert!(acked.insert(id), "event {id:x} answered twice");
                    }
                    Frame::Nack {
                        id,
                        reason: NackReason::HandlerFailed,
                        message,
                    } => {
                        assert_eq!(message, failure(id as u64), "nack of {id:x}");
                        assert!(acked.insert(id), "event {id:x} answered twice");
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            if acked.len() as u64 == EVENTS {
                break;
            }
            let n = reader.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "the member closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(60), read_all).await;
    assert!(
        done.is_ok(),
        "only {} of {EVENTS} events answered in time ({:?})",
        acked.len(),
        m.stats()
    );
    assert!(hello, "the hello frame came first");
    let expected: HashSet<u128> = (1..=EVENTS).map(|seq| event(seq).id).collect();
    assert_eq!(acked, expected);
    assert!(buf.is_empty(), "no stray bytes after the last reply");
    drop(sending.await.unwrap());
    let stats = m.stats();
    assert_eq!(stats.direct_handled, EVENTS / 2);
    assert_eq!(stats.handler_failures, EVENTS / 2);
    assert_eq!(stats.in_flight, 0);
}
