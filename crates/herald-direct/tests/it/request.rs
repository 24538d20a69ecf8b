//! Request/response: answers (with and without key and headers, to new and old producers), a
//! request nobody serves, and a chain A -> B -> C whose deadline propagates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_direct::frame::{self, Frame, WireEvent};
use herald_direct::{
    FnHandler, Member, MemberConfig, Message, Publisher, PublisherConfig, Reply, RequestError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::wait_up;

fn config(topic: &str) -> MemberConfig {
    MemberConfig::new(topic, "g", "127.0.0.1:0".parse().unwrap())
}

#[tokio::test]
async fn a_request_gets_its_response() {
    let h = FnHandler::new(
        |_| async { Ok(()) },
        |req: herald_direct::Received, _ctx| async move {
            Ok(Bytes::from(format!(
                "echo {}",
                String::from_utf8_lossy(&req.value)
            )))
        },
    );
    let m = Member::start(config("q"), Arc::new(h)).await.unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    let r = p
        .request(Message::new("q", "hi"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&r[..], b"echo hi");
}

#[tokio::test]
async fn a_stuck_chain_fails_at_the_first_callers_deadline() {
    // C never answers in time.
    let c = Member::start(
        config("c"),
        Arc::new(FnHandler::new(
            |_| async { Ok(()) },
            |_, _| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Bytes::new())
            },
        )),
    )
    .await
    .unwrap();
    let to_c = Publisher::start(PublisherConfig::new(vec![c.local_addr()]))
        .await
        .unwrap();
    wait_up(&to_c, 1).await;
    // B forwards to C with the remaining budget and reports what C did.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(1);
    let b = Member::start(
        config("b"),
        Arc::new(FnHandler::new(
            |_| async { Ok(()) },
            move |req: herald_direct::Received, ctx: herald_direct::RequestContext| {
                let to_c = to_c.clone();
                let seen_tx = seen_tx.clone();
                async move {
                    let r = to_c
                        .request_until(Message::new("c", req.value), ctx.deadline())
                        .await;
                    let _ = seen_tx.send(r.clone()).await;
                    r.map_err(|e| herald_direct::HandlerError::failed(e.to_string()))
                }
            },
        )),
    )
    .await
    .unwrap();
    let a = Publisher::start(PublisherConfig::new(vec![b.local_addr()]))
        .await
        .unwrap();
    wait_up(&a, 1).await;
    let started = Instant::now();
    let err = a
        .request(Message::new("b", "go"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::DeadlineExceeded), "{err:?}");
    // Bounded well below C's 60 s: the deadline, not C, ended the call.
    assert!(started.elapsed() < Duration::from_secs(5));
    let nested = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("B's nested request outlived the deadline")
        .unwrap();
    assert!(
        matches!(nested, Err(RequestError::DeadlineExceeded)),
        "{nested:?}"
    );
}

/// Answers every request with a key and headers naming what it got.
struct HeaderReplier;

impl herald_direct::Handler for HeaderReplier {
    fn on_event(
        &self,
        _event: herald_direct::Received,
    ) -> herald_direct::BoxFuture<Result<(), herald_direct::HandlerError>> {
        Box::pin(async { Ok(()) })
    }

    fn answer(
        &self,
        request: herald_direct::Received,
        _ctx: herald_direct::RequestContext,
    ) -> herald_direct::BoxFuture<Result<Reply, herald_direct::HandlerError>> {
        Box::pin(async move {
            Ok(Reply::new(request.value)
                .with_key("reply-key")
                .with_header("answered-by", "header-replier")
                .with_header("empty", Bytes::new()))
        })
    }
}

#[tokio::test]
async fn a_reply_carries_its_key_and_headers_in_order() {
    let m = Member::start(config("hq"), Arc::new(HeaderReplier))
        .await
        .unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    let reply = p
        .request_reply(Message::new("hq", "ping"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        reply,
        Reply {
            key: Some(Bytes::from_static(b"reply-key")),
            value: Bytes::from_static(b"ping"),
            headers: vec![
                ("answered-by".into(), Bytes::from_static(b"header-replier")),
                ("empty".into(), Bytes::new()),
            ],
        }
    );
    // The value-only call still works against the same member.
    let value = p
        .request(Message::new("hq", "again"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&value[..], b"again");
}

#[tokio::test]
async fn a_value_only_handler_replies_without_key_or_headers() {
    let h = FnHandler::new(
        |_| async { Ok(()) },
        |_: herald_direct::Received, _ctx| async { Ok(Bytes::from_static(b"plain")) },
    );
    let m = Member::start(config("pq"), Arc::new(h)).await.unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    let reply = p
        .request_reply(Message::new("pq", "x"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, Reply::new("plain"));
}

/// Connects like a producer by hand, optionally announces features, sends one request and
/// returns the frame the member answers with.
async fn raw_request(addr: std::net::SocketAddr, features: Option<u16>) -> Frame {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let hello = read_frame(&mut stream, &mut buf).await;
    assert!(matches!(hello, Frame::Hello(_)), "{hello:?}");
    let mut out = BytesMut::new();
    if let Some(features) = features {
        frame::encode(
            &Frame::Ping {
                nonce: frame::features_nonce(features),
            },
            &mut out,
        );
    }
    let deadline_unix_ms = herald_direct::event::system_to_unix_ms(
        std::time::SystemTime::now() + Duration::from_secs(5),
    );
    frame::encode(
        &Frame::Request(WireEvent {
            id: 42,
            publisher: 7,
            seq: 0,
            deadline_unix_ms,
            topic: "hq".into(),
            key: None,
            value: Bytes::from_static(b"raw"),
            headers: vec![],
        }),
        &mut out,
    );
    stream.write_all(&out).await.unwrap();
    loop {
        match read_frame(&mut stream, &mut buf).await {
            Frame::Pong { .. } => continue,
            other => return other,
        }
    }
}

async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Frame {
    loop {
        if let Some(f) = frame::decode_stream(buf, 1 << 20).unwrap() {
            return f;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the member closed the connection");
    }
}

#[tokio::test]
async fn a_producer_that_announced_no_features_gets_the_value_alone() {
    let m = Member::start(config("hq"), Arc::new(HeaderReplier))
        .await
        .unwrap();
    // An older producer sends no features: it gets the RESPONSE frame it can decode.
    assert_eq!(
        raw_request(m.local_addr(), None).await,
        Frame::Response {
            id: 42,
            value: Bytes::from_static(b"raw"),
        }
    );
    // One that announced REPLY gets the key and headers too.
    let reply = raw_request(m.local_addr(), Some(frame::FEATURE_REPLY)).await;
    assert!(
        matches!(&reply, Frame::Reply { id: 42, key: Some(k), headers, .. } if &k[..] == b"reply-key" && headers.len() == 2),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_reply_the_producer_could_not_decode_fails_the_request_not_the_connection() {
    struct TooManyHeaders;
    impl herald_direct::Handler for TooManyHeaders {
        fn on_event(
            &self,
            _event: herald_direct::Received,
        ) -> herald_direct::BoxFuture<Result<(), herald_direct::HandlerError>> {
            Box::pin(async { Ok(()) })
        }
        fn answer(
            &self,
            request: herald_direct::Received,
            _ctx: herald_direct::RequestContext,
        ) -> herald_direct::BoxFuture<Result<Reply, herald_direct::HandlerError>> {
            let count = if &request.value[..] == b"many" {
                frame::HEADERS_MAX + 1
            } else {
                1
            };
            Box::pin(async move {
                Ok(Reply {
                    key: None,
                    value: Bytes::from_static(b"ok"),
                    headers: vec![("h".into(), Bytes::new()); count],
                })
            })
        }
    }
    let m = Member::start(config("tq"), Arc::new(TooManyHeaders))
        .await
        .unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    let err = p
        .request_reply(Message::new("tq", "many"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Failed(m) if m.contains("invalid reply")),
        "{err:?}"
    );
    let fine = p
        .request_reply(Message::new("tq", "one"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fine.headers.len(), 1);
}

#[tokio::test]
async fn a_request_nobody_serves_fails_with_no_live_member_at_its_deadline() {
    // No member at all.
    let p = Publisher::start(PublisherConfig::new(vec![]))
        .await
        .unwrap();
    let err = p
        .request(Message::new("nobody", "x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::NoLiveMember { topic } if topic == "nobody"),
        "{err:?}"
    );
    // A live member of another topic does not count.
    let m = Member::start(config("other"), Arc::new(HeaderReplier))
        .await
        .unwrap();
    let p = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    wait_up(&p, 1).await;
    let err = p
        .request_reply(Message::new("nobody", "x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::NoLiveMember { topic } if topic == "nobody"),
        "{err:?}"
    );
}
