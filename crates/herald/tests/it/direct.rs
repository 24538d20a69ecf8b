//! The behavioural suite against the direct and datagram transports, plus what only they do:
//! handled receipts, fail-over inside a group, refusals reaching the producer, datagram loss and
//! native request chains. Everything listens on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use herald::{
    Bus, Completed, DeadLetter, Event, HandlerError, PublishError, RequestError, RetryPolicy,
    ServeBuilder, SubscribeBuilder, Subscription, TransportKind,
};
use tokio::sync::mpsc::unbounded_channel;

use crate::behaviour::{BoxFuture, Fixture};
use crate::support::{WAIT, fast_retry, forward, recv, text, topic};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// One bus per test; its own subscriptions are its peers, so nothing else is needed.
pub struct Brokerless {
    kind: TransportKind,
}

impl Brokerless {
    pub async fn direct() -> Brokerless {
        Brokerless {
            kind: TransportKind::Direct,
        }
    }

    pub async fn datagram() -> Brokerless {
        Brokerless {
            kind: TransportKind::Datagram,
        }
    }
}

impl Fixture for Brokerless {
    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn bus(&self) -> BoxFuture<'_, Bus> {
        Box::pin(async move {
            Bus::connect(&format!("{}://", self.kind.as_str()))
                .await
                .unwrap()
        })
    }

    fn prepare(&self, sub: SubscribeBuilder) -> SubscribeBuilder {
        sub.bind(loopback())
    }

    fn prepare_serve(&self, serve: ServeBuilder) -> ServeBuilder {
        serve.bind(loopback())
    }
}

mod direct_suite {
    use super::Brokerless;

    crate::behaviour_tests!(Brokerless::direct();
        ack_after_handle,
        refused_event_is_redelivered_after_restart,
        retry_then_succeed,
        retry_then_dead_letter,
        permanent_error_skips_retries,
        per_key_order_with_concurrency,
        every_group_gets_every_event,
        request_reply_and_errors,
        request_deadline_propagates,
        result_event_is_correlated,
    );
}

mod datagram_suite {
    use super::Brokerless;

    // Not run: a refused datagram cannot fail a publish that returned when it left, and
    // nothing is stored for an absent consumer.
    crate::behaviour_tests!(Brokerless::datagram();
        ack_after_handle,
        retry_then_succeed,
        retry_then_dead_letter,
        permanent_error_skips_retries,
        per_key_order_with_concurrency,
        every_group_gets_every_event,
        request_reply_and_errors,
        request_deadline_propagates,
        result_event_is_correlated,
    );
}

/// A subscription whose handler always fails with `message`, without retries.
async fn failing(bus: &Bus, topic: &str, group: &str, message: &'static str) -> Subscription {
    bus.subscribe(topic)
        .group(group)
        .bind(loopback())
        .retry(RetryPolicy::none())
        .handle(move |_e: Event| async move { Err(HandlerError::retryable(message)) })
        .await
        .unwrap()
}

fn peers_url(kind: &str, subs: &[&Subscription]) -> String {
    let addrs: Vec<String> = subs
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect();
    format!("{kind}://{}", addrs.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_means_the_handler_already_ran() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("handled");
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let sub = bus
        .subscribe(&t)
        .bind(loopback())
        .handle(move |_e: Event| {
            let flag = flag.clone();
            async move {
                // Slow enough that a receipt sent before the handler finished would be seen.
                tokio::time::sleep(Duration::from_millis(50)).await;
                flag.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .unwrap();
    let receipt = bus.publish(&t, Event::new("x")).await.unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "receipt before the handler ran"
    );
    assert_eq!(
        receipt.completed,
        Completed::Handled {
            groups: vec![t.clone()]
        }
    );
    assert_eq!(sub.shutdown().await.unwrap().handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_member_fails_over_to_another_of_its_group() {
    // Two members of one group on separate buses, reached by a third bus through static peers.
    let bus_a = Bus::connect("direct://").await.unwrap();
    let bus_b = Bus::connect("direct://").await.unwrap();
    let t = topic("failover");
    let bad = failing(&bus_a, &t, "g", "disk full").await;
    let (good, mut rx) = forward(bus_b.subscribe(&t).group("g").bind(loopback())).await;
    let producer = Bus::connect(&peers_url("direct", &[&bad, &good]))
        .await
        .unwrap();
    let n = 20;
    for i in 0..n {
        let receipt = producer
            .publish(&t, Event::new(format!("{i}")))
            .await
            .unwrap();
        assert_eq!(receipt.kind(), "handled");
        assert_eq!(text(&recv(&mut rx).await.payload), i.to_string());
    }
    let bad = bad.shutdown().await.unwrap();
    let good = good.shutdown().await.unwrap();
    assert_eq!(good.handled, n);
    assert_eq!(bad.handled, 0);
    // The failing member was tried (least-loaded choice rotates between equal members) and
    // every event it refused was then handled by the other.
    assert!(bad.refused >= 1, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_always_fails_fails_the_publish_with_the_handlers_message() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("refused");
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let sub = bus
        .subscribe(&t)
        .bind(loopback())
        .retry(fast_retry(2))
        .handle(move |_e: Event| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err(HandlerError::retryable("sms provider said 503")) }
        })
        .await
        .unwrap();
    match bus.publish(&t, Event::new("x")).await {
        Err(PublishError::Refused(message)) => {
            assert!(message.contains("sms provider said 503"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let stats = sub.shutdown().await.unwrap();
    // The runtime retried each delivery, and the producer tried again after each refusal
    // (the same member is the only one), so the handler ran more than once per attempt.
    assert!(tries.load(Ordering::SeqCst) >= 2);
    assert_eq!(stats.handled, 0);
    assert_eq!(stats.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_still_works_on_direct() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("dl");
    let dlq = format!("{t}.parked");
    let (dead, mut parked) = forward(bus.subscribe(&dlq).group("ops").bind(loopback())).await;
    let sub = bus
        .subscribe(&t)
        .bind(loopback())
        .retry(RetryPolicy::none())
        .dead_letter(DeadLetter::Topic(dlq.clone()))
        .handle(|_e: Event| async { Err(HandlerError::permanent("bad json")) })
        .await
        .unwrap();
    // Dead-lettered counts as handled for the producer: the dead-letter group took it.
    let receipt = bus.publish(&t, Event::new("{")).await.unwrap();
    let got = recv(&mut parked).await;
    assert_eq!(got.id, receipt.id);
    assert_eq!(got.header_str(herald::HEADER_DLQ_ERROR), Some("bad json"));
    sub.shutdown().await.unwrap();
    dead.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_both_handle_each_event() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("two-groups");
    let (a, mut ra) = forward(bus.subscribe(&t).group("audit").bind(loopback())).await;
    let (b, mut rb) = forward(bus.subscribe(&t).group("billing").bind(loopback())).await;
    for i in 0..5 {
        let receipt = bus.publish(&t, Event::new(format!("{i}"))).await.unwrap();
        assert_eq!(
            receipt.completed,
            Completed::Handled {
                groups: vec!["audit".to_string(), "billing".to_string()]
            },
            "publish {i}"
        );
        // Both handlers ran before the receipt.
        assert_eq!(ra.try_recv().unwrap().id, receipt.id);
        assert_eq!(rb.try_recv().unwrap().id, receipt.id);
    }
    assert_eq!(
        bus.reachable_groups(&t),
        Some(vec!["audit".to_string(), "billing".to_string()])
    );
    assert_eq!(a.shutdown().await.unwrap().handled, 5);
    // A closed subscription is forgotten by its own bus at once.
    assert_eq!(bus.reachable_groups(&t), Some(vec!["billing".to_string()]));
    assert_eq!(b.shutdown().await.unwrap().handled, 5);
    assert_eq!(bus.reachable_groups(&t), Some(vec![]));
    let memory = Bus::connect("memory://").await.unwrap();
    assert_eq!(memory.reachable_groups(&t), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_pipelined_events_are_handled_in_order_with_concurrency() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("order");
    let (tx, mut rx) = unbounded_channel();
    let sub = bus
        .subscribe(&t)
        .bind(loopback())
        .concurrency(8)
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                let body = text(&e.payload);
                let (key, n) = body.split_once(':').unwrap();
                let n: u32 = n.parse().unwrap();
                // Uneven handling times, so events would overtake each other if allowed to.
                tokio::time::sleep(Duration::from_millis(u64::from((n * 7) % 5))).await;
                tx.send((key.to_string(), n)).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    // One event first, so the publisher has met the member: publishes that start while the
    // member's hello is on its way wait for it, and those checking just after it arrived would
    // overtake them.
    bus.publish(&t, Event::new("warm:0").with_key("warm"))
        .await
        .unwrap();
    recv(&mut rx).await;
    let keys = 4;
    let per_key = 6;
    // Published together without waiting for acks; within the member's capacity (4 × the
    // concurrency) one producer's events reach the member in the order they were published.
    let mut publishes = Vec::new();
    for n in 0..per_key {
        for k in 0..keys {
            publishes.push(bus.publish(
                &t,
                Event::new(format!("k{k}:{n}")).with_key(format!("k{k}")),
            ));
        }
    }
    for r in futures::future::join_all(publishes).await {
        r.unwrap();
    }
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..keys * per_key {
        let (k, n) = recv(&mut rx).await;
        seen.entry(k).or_default().push(n);
    }
    assert_eq!(seen.len(), keys as usize);
    for (k, ns) in &seen {
        assert_eq!(*ns, (0..per_key).collect::<Vec<_>>(), "key {k}");
    }
    sub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_serving_the_topic_is_no_consumer() {
    let bus = Bus::connect("direct://?publish_timeout_ms=200")
        .await
        .unwrap();
    match bus.publish(&topic("empty"), Event::new("x")).await {
        Err(PublishError::NoConsumer { .. }) => {}
        other => panic!("expected no consumer, got {other:?}"),
    }
    let bus = Bus::connect("datagram://?publish_timeout_ms=200")
        .await
        .unwrap();
    match bus.publish(&topic("empty"), Event::new("x")).await {
        Err(PublishError::NoConsumer { .. }) => {}
        other => panic!("expected no consumer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_bus_refuses_to_publish() {
    let bus = Bus::connect("direct://").await.unwrap();
    assert!(bus.publisher_id().is_some());
    bus.close().await;
    assert!(matches!(
        bus.publish("t", Event::new("x")).await,
        Err(PublishError::Closed)
    ));
    assert!(bus.publisher_id().is_none());
}

#[tokio::test]
async fn unknown_options_are_refused() {
    let err = Bus::connect("direct://?bogus=1").await.unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = Bus::connect("datagram://?attempts_max=many")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("attempts_max"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_sent_and_their_loss_is_counted_per_publisher() {
    let station = Bus::connect("datagram://").await.unwrap();
    let t = topic("telemetry");
    let (sub, mut rx) = forward(station.subscribe(&t).group("station").bind(loopback())).await;
    // A lossy link: every 4th datagram to each member does not leave.
    let sensor = Bus::connect(&format!(
        "{}?drop_every_nth_datagram=4",
        peers_url("datagram", &[&sub])
    ))
    .await
    .unwrap();
    let n = 22u64;
    let mut left = 0;
    for i in 0..n {
        let receipt = sensor
            .publish(&t, Event::new(format!("{i}")).with_key("s1"))
            .await
            .unwrap();
        match receipt.completed {
            Completed::Sent { datagrams } => left += datagrams as u64,
            other => panic!("expected sent, got {other:?}"),
        }
    }
    // Sequence numbers 4, 8, 12, 16 and 20 were used up without sending.
    assert_eq!(left, n - 5);
    for _ in 0..left {
        recv(&mut rx).await;
    }
    let loss = sub.datagram_loss();
    assert_eq!(loss.len(), 1, "{loss:?}");
    assert_eq!(Some(loss[0].publisher.clone()), sensor.publisher_id());
    assert_eq!((loss[0].received, loss[0].lost), (left, 5));
    assert_eq!(loss[0].received + loss[0].lost, n);
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.handled, left);
}

/// Serves `topic` on `bus`: appends `name` to the request's payload, after asking `next` (with
/// the inherited deadline) when there is one.
async fn stage(
    bus: &Bus,
    topic: &str,
    name: &'static str,
    next: Option<String>,
    delay: Duration,
    dropped: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> Subscription {
    bus.serve(topic)
        .bind(loopback())
        .reply(move |req: Event, ctx| {
            let next = next.clone();
            let dropped = dropped.clone();
            async move {
                // Tells the test when this stage's work ends without a reply (the deadline
                // passed and it was abandoned).
                let guard = DropSignal(Some((dropped, name)));
                tokio::time::sleep(delay).await;
                let mut path = format!("{}>{name}", text(&req.payload));
                if let Some(next) = next {
                    let reply = ctx.request(&next, Event::new(path)).await?;
                    path = text(&reply.payload);
                }
                guard.disarm();
                Ok(Event::new(path))
            }
        })
        .await
        .unwrap()
}

struct DropSignal(
    Option<(
        tokio::sync::mpsc::UnboundedSender<&'static str>,
        &'static str,
    )>,
);

impl DropSignal {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some((tx, name)) = self.0.take() {
            tx.send(name).ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_chain_answers_in_time_and_fails_whole_on_the_callers_deadline() {
    let bus = Bus::connect("direct://").await.unwrap();
    let (a, b, c) = (topic("a"), topic("b"), topic("c"));
    let (dropped_tx, mut dropped) = unbounded_channel();
    let fast = Duration::ZERO;
    let sa = stage(&bus, &a, "a", Some(b.clone()), fast, dropped_tx.clone()).await;
    let sb = stage(&bus, &b, "b", Some(c.clone()), fast, dropped_tx.clone()).await;
    let sc = stage(&bus, &c, "c", None, fast, dropped_tx.clone()).await;
    let req = Event::new("go");
    let id = req.id;
    let reply = bus
        .request(&a, req)
        .deadline(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(text(&reply.payload), "go>a>b>c");
    assert_eq!(reply.correlation_id, Some(id));
    sc.shutdown().await.unwrap();

    // Now C takes far longer than the caller allows: the whole chain fails with the deadline,
    // and every stage's work is abandoned rather than left running.
    let slow_c = topic("c-slow");
    let sb2 = stage(
        &bus,
        &b,
        "b",
        Some(slow_c.clone()),
        fast,
        dropped_tx.clone(),
    )
    .await;
    sb.shutdown().await.unwrap();
    let sc = stage(
        &bus,
        &slow_c,
        "c",
        None,
        Duration::from_secs(3600),
        dropped_tx.clone(),
    )
    .await;
    match bus
        .request(&a, Event::new("go"))
        .deadline(Duration::from_millis(500))
        .await
    {
        Err(RequestError::DeadlineExceeded) => {}
        other => panic!("expected the deadline to fail the chain, got {other:?}"),
    }
    let mut abandoned = Vec::new();
    for _ in 0..3 {
        abandoned.push(recv(&mut dropped).await);
    }
    abandoned.sort_unstable();
    assert_eq!(abandoned, ["a", "b", "c"]);
    for s in [sa, sb2, sc] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_replier_reaches_the_caller_as_failed() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("rpc");
    let server = bus
        .serve(&t)
        .bind(loopback())
        .reply(|_req: Event, _ctx| async { Err(HandlerError::retryable("no such user")) })
        .await
        .unwrap();
    match bus.request(&t, Event::new("x")).deadline(WAIT).await {
        Err(RequestError::Failed(m)) => assert!(m.contains("no such user"), "{m}"),
        other => panic!("expected the replier's failure, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_replier_fails_the_request_at_once() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("panics");
    let server = bus
        .serve(&t)
        .bind(loopback())
        .reply(|req: Event, _ctx| async move {
            if req.payload == "boom" {
                panic!("replier bug");
            }
            Ok(Event::new("fine"))
        })
        .await
        .unwrap();
    // Long deadline: the failure must come from the panic, not from the deadline.
    match bus.request(&t, Event::new("boom")).deadline(WAIT).await {
        Err(RequestError::Failed(m)) => assert!(m.contains("panicked"), "{m}"),
        other => panic!("expected the replier's failure, got {other:?}"),
    }
    let reply = bus
        .request(&t, Event::new("ok"))
        .deadline(WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, "fine");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_keeps_its_headers_and_metadata_over_direct() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Answer {
        n: u32,
    }
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("whole-reply");
    let (ids_tx, mut ids_rx) = unbounded_channel();
    let server = bus
        .serve(&t)
        .bind(loopback())
        .reply(move |_req: Event, _ctx| {
            let ids_tx = ids_tx.clone();
            async move {
                let reply = Event::json(&Answer { n: 7 })?
                    .with_key("reply-key")
                    .with_header("trace", "abc");
                let _ = ids_tx.send((reply.id, reply.timestamp));
                Ok(reply)
            }
        })
        .await
        .unwrap();
    let req = Event::new("q").with_key("request-key");
    let request_id = req.id;
    let reply = bus.request(&t, req).deadline(WAIT).await.unwrap();
    let (reply_id, reply_timestamp) = recv(&mut ids_rx).await;
    // The replier's own event came back: its id, key, headers and timestamp (whole
    // milliseconds on the wire), correlated to the request.
    assert_eq!(reply.id, reply_id);
    assert_eq!(reply.correlation_id, Some(request_id));
    assert_eq!(reply.key.as_deref(), Some(&b"reply-key"[..]));
    assert_eq!(reply.header_str("content-type"), Some("application/json"));
    assert_eq!(reply.header_str("trace"), Some("abc"));
    let ms =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(ms(reply.timestamp), ms(reply_timestamp));
    assert_eq!(reply.decode_json::<Answer>().unwrap(), Answer { n: 7 });
    // Only the application's headers are headers; the SDK's metadata went back into fields.
    assert!(
        reply
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with("herald-")),
        "{:?}",
        reply.headers
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_only_member_still_answers_an_sdk_request() {
    // A member whose handler answers with bytes alone (as every member did before replies had
    // headers): the SDK makes the reply from the payload, keeping the request's key.
    let t = topic("value-only");
    let handler = herald_direct::FnHandler::new(
        |_| async { Ok(()) },
        |req: herald_direct::Received, _ctx| async move {
            Ok(bytes::Bytes::from(format!("got {}", text(&req.value))))
        },
    );
    let member = herald_direct::Member::start(
        herald_direct::MemberConfig::new(&t, "g", loopback()),
        Arc::new(handler),
    )
    .await
    .unwrap();
    let bus = Bus::connect(&format!("direct://{}", member.local_addr()))
        .await
        .unwrap();
    let req = Event::new("x").with_key("k");
    let request_id = req.id;
    let reply = bus.request(&t, req).deadline(WAIT).await.unwrap();
    assert_eq!(reply.payload, "got x");
    assert_eq!(reply.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(reply.correlation_id, Some(request_id));
    assert_ne!(reply.id, request_id);
    assert!(reply.headers.is_empty(), "{:?}", reply.headers);
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_serves_is_no_replier() {
    let bus = Bus::connect("direct://").await.unwrap();
    let t = topic("unserved");
    match bus
        .request(&t, Event::new("x"))
        .deadline(Duration::from_millis(200))
        .await
    {
        Err(RequestError::NoReplier { topic }) => assert_eq!(topic, t),
        other => panic!("expected no replier, got {other:?}"),
    }
    // A member serving another topic is no replier for this one either.
    let other = bus
        .serve(&topic("served"))
        .bind(loopback())
        .reply(|req: Event, _ctx| async move { Ok(req) })
        .await
        .unwrap();
    match bus
        .request(&t, Event::new("x"))
        .deadline(Duration::from_millis(200))
        .await
    {
        Err(RequestError::NoReplier { topic }) => assert_eq!(topic, t),
        other => panic!("expected no replier, got {other:?}"),
    }
    other.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_are_too_large_on_both_transports() {
    let bus = Bus::connect("direct://?frame_bytes_max=1024")
        .await
        .unwrap();
    let t = topic("big");
    let (sub, _rx) = forward(bus.subscribe(&t).group("g").bind(loopback())).await;
    match bus.publish(&t, Event::new(vec![0u8; 2048])).await {
        Err(PublishError::TooLarge { bytes, limit }) => {
            assert!(bytes > 2048, "{bytes}");
            assert_eq!(limit, 1024);
        }
        other => panic!("expected too large, got {other:?}"),
    }
    sub.shutdown().await.unwrap();

    // A datagram must fit one UDP payload (1472 bytes by default): it is refused, not cut.
    let bus = Bus::connect("datagram://").await.unwrap();
    let (sub, _rx) = forward(bus.subscribe(&t).group("g").bind(loopback())).await;
    match bus.publish(&t, Event::new(vec![0u8; 1500])).await {
        Err(PublishError::TooLarge { limit, .. }) => assert_eq!(limit, 1472),
        other => panic!("expected too large, got {other:?}"),
    }
    sub.shutdown().await.unwrap();
}
