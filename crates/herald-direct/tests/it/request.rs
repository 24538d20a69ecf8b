//! Request/response: answers, and a chain A -> B -> C whose deadline propagates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_direct::{
    FnHandler, Member, MemberConfig, Message, Publisher, PublisherConfig, RequestError,
};

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
                    r.map_err(|e| e.to_string())
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
