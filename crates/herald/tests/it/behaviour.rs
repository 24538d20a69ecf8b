//! The behavioural suite: what every transport must do the same way, written once and run against
//! each transport through a [`Fixture`] (see `behaviour_tests!`). Where a transport's semantics
//! differ by design (direct has no storage, so a refused event goes back to the producer), the
//! test asserts each side of the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use herald::{
    Bus, DeadLetter, Event, HandlerError, PublishError, RequestError, RetryPolicy, ServeBuilder,
    SubscribeBuilder, TransportKind,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::support::{WAIT, fast_retry, forward, recv, text, topic};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One transport under test.
pub trait Fixture: Send + Sync {
    fn kind(&self) -> TransportKind;

    /// A bus on the system under test; all buses of one fixture reach the same topics.
    fn bus(&self) -> BoxFuture<'_, Bus>;

    /// Adjusts a subscription before it starts (direct: where it listens).
    fn prepare(&self, sub: SubscribeBuilder) -> SubscribeBuilder {
        sub
    }

    /// Adjusts a replier before it starts.
    fn prepare_serve(&self, serve: ServeBuilder) -> ServeBuilder {
        serve
    }

    /// Waits until `bus` reaches every subscription started on `topic` so far (direct: until
    /// its publisher has met the members).
    fn settle<'a>(&'a self, bus: &'a Bus, topic: &'a str) -> BoxFuture<'a, ()> {
        let _ = (bus, topic);
        Box::pin(async {})
    }

    /// The name the tests' group `name` has on the system under test: the name itself, or a name
    /// unique to this run where the system is a shared external broker, so runs and tests never
    /// join each other's groups.
    fn group(&self, name: &str) -> String {
        name.to_string()
    }

    /// Whether events wait in storage for consumers (broker, memory).
    fn stored(&self) -> bool {
        matches!(self.kind(), TransportKind::Memory | TransportKind::Broker)
    }
}

/// Runs the named behaviour tests (or `all` of them) against the fixture the expression (a
/// future) yields.
#[macro_export]
macro_rules! behaviour_tests {
    ($fixture:expr; all) => {
        $crate::behaviour_tests!($fixture;
            ack_after_handle,
            refused_event_is_redelivered_after_restart,
            retry_then_succeed,
            retry_then_dead_letter,
            permanent_error_skips_retries,
            no_loss_across_consumer_restart,
            per_key_order_with_concurrency,
            every_group_gets_every_event,
            request_reply_and_errors,
            request_deadline_propagates,
            result_event_is_correlated,
        );
    };
    ($fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture.await;
                $crate::behaviour::$name(&fixture).await;
            }
        )*
    };
}

/// A subscription the fixture prepared that forwards every event it handles to a channel.
async fn forwarding(
    fx: &dyn Fixture,
    bus: &Bus,
    topic: &str,
    group: &str,
) -> (herald::Subscription, UnboundedReceiver<Event>) {
    forward(fx.prepare(bus.subscribe(topic).group(group))).await
}

/// The receipt says what completed, and an acknowledged event is not handed out again.
pub async fn ack_after_handle(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("ack");
    let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
    fx.settle(&bus, &t).await;
    let sent = Event::new("one").with_header("h", "v");
    let id = sent.id;
    let receipt = bus.publish(&t, sent).await.unwrap();
    let expected = match fx.kind() {
        TransportKind::Direct => "handled",
        TransportKind::Datagram => "sent",
        _ => "stored",
    };
    assert_eq!(receipt.kind(), expected);
    assert_eq!(receipt.id, id);
    if fx.kind() == TransportKind::Direct {
        // Handled means the handler already ran: its effect is there when publish returns.
        let got = rx.try_recv().expect("handled before publish returned");
        assert_eq!(got.id, id);
    } else {
        let got = recv(&mut rx).await;
        assert_eq!(got.id, id);
        assert_eq!(got.payload, "one");
        assert_eq!(got.header_str("h"), Some("v"));
    }
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.handled, 1);
    if fx.stored() {
        // The first event was committed: a new subscription of the group starts after it.
        let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
        bus.publish(&t, Event::new("two")).await.unwrap();
        assert_eq!(recv(&mut rx).await.payload, "two");
        sub.shutdown().await.unwrap();
    }
}

/// An event the handler refuses (no dead-letter topic) is not acknowledged: stored transports
/// hand it out again to the next subscription of the group; direct fails the publish with the
/// handler's error.
pub async fn refused_event_is_redelivered_after_restart(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("refuse");
    let (tx, mut tried) = unbounded_channel();
    let sub = fx
        .prepare(
            bus.subscribe(&t)
                .group(&fx.group("g"))
                .retry(RetryPolicy::none())
                .dead_letter(DeadLetter::Refuse),
        )
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                tx.send(e.id).ok();
                Err(HandlerError::retryable("provider down"))
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &t).await;
    let event = Event::new("x");
    let id = event.id;
    let published = bus.publish(&t, event).await;
    if !fx.stored() {
        match published {
            Err(PublishError::Refused(m)) => assert!(m.contains("provider down"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        sub.shutdown().await.unwrap();
        return;
    }
    published.unwrap();
    assert_eq!(recv(&mut tried).await, id);
    let stats = sub.shutdown().await.unwrap();
    assert_eq!((stats.handled, stats.refused), (0, 1));
    let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
    assert_eq!(recv(&mut rx).await.id, id);
    sub.shutdown().await.unwrap();
}

/// A failing handler is retried with backoff until it succeeds.
pub async fn retry_then_succeed(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("retry");
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = unbounded_channel();
    let counted = calls.clone();
    let sub = fx
        .prepare(bus.subscribe(&t).group(&fx.group("g")).retry(fast_retry(3)))
        .handle(move |e: Event| {
            let calls = counted.clone();
            let tx = tx.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(HandlerError::retryable("not yet"));
                }
                tx.send(e.id).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &t).await;
    let event = Event::new("x");
    let id = event.id;
    bus.publish(&t, event).await.unwrap();
    assert_eq!(recv(&mut rx).await, id);
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(
        (stats.handled, stats.failures, stats.dead_lettered),
        (1, 2, 0)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

async fn dead_letter_case(fx: &dyn Fixture, error: HandlerError, attempts: u32) {
    let bus = fx.bus().await;
    let t = topic("dlq");
    let dlq = format!("{t}.dlq");
    let (dead_sub, mut dead) = forwarding(fx, &bus, &dlq, "dead-readers").await;
    let dead_letter = if fx.stored() {
        DeadLetter::Default
    } else {
        DeadLetter::Topic(dlq.clone())
    };
    let permanent = error.is_permanent();
    let message = error.message().to_string();
    let sub = fx
        .prepare(
            bus.subscribe(&t)
                .group(&fx.group("g"))
                .retry(fast_retry(attempts))
                .dead_letter(dead_letter),
        )
        .handle(move |_e: Event| {
            let m = message.clone();
            async move {
                Err(if permanent {
                    HandlerError::permanent(m)
                } else {
                    HandlerError::retryable(m)
                })
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &t).await;
    fx.settle(&bus, &dlq).await;
    let event = Event::new("bad").with_key("k");
    let id = event.id;
    bus.publish(&t, event).await.unwrap();
    let got = recv(&mut dead).await;
    assert_eq!(got.id, id);
    assert_eq!(got.payload, "bad");
    assert_eq!(got.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(
        got.header_str(herald::HEADER_DLQ_ERROR),
        Some(error.message())
    );
    let expected_attempts = if permanent { 1 } else { attempts };
    assert_eq!(
        got.header_str(herald::HEADER_DLQ_ATTEMPTS),
        Some(expected_attempts.to_string().as_str())
    );
    assert_eq!(got.header_str(herald::HEADER_DLQ_TOPIC), Some(t.as_str()));
    assert_eq!(
        got.header_str(herald::HEADER_DLQ_GROUP),
        Some(fx.group("g").as_str())
    );
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.failures, u64::from(expected_attempts));
    if fx.stored() {
        // Dead-lettered counts as done: the group has moved past it.
        let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
        bus.publish(&t, Event::new("good")).await.unwrap();
        assert_eq!(recv(&mut rx).await.payload, "good");
        sub.shutdown().await.unwrap();
    }
    dead_sub.shutdown().await.unwrap();
}

/// After the configured attempts the event goes to the dead-letter topic with the error and
/// the attempt count in its headers.
pub async fn retry_then_dead_letter(fx: &dyn Fixture) {
    dead_letter_case(fx, HandlerError::retryable("boom"), 3).await;
}

/// A permanent error is dead-lettered at once.
pub async fn permanent_error_skips_retries(fx: &dyn Fixture) {
    dead_letter_case(fx, HandlerError::permanent("cannot parse"), 5).await;
}

/// Stored transports: events published while a group's consumer is away are all handled when
/// it comes back, and a graceful shutdown hands none out twice.
pub async fn no_loss_across_consumer_restart(fx: &dyn Fixture) {
    assert!(
        fx.stored(),
        "only stored transports keep events for absent consumers"
    );
    let bus = fx.bus().await;
    let t = topic("restart");
    let mut published = BTreeSet::new();
    for i in 0..30 {
        published.insert(
            bus.publish(&t, Event::new(format!("{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
    let mut first = BTreeSet::new();
    while first.len() < 10 {
        first.insert(recv(&mut rx).await.id);
    }
    sub.shutdown().await.unwrap();
    while let Ok(e) = rx.try_recv() {
        first.insert(e.id);
    }
    for i in 30..60 {
        published.insert(
            bus.publish(&t, Event::new(format!("{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let (sub, mut rx) = forwarding(fx, &bus, &t, &fx.group("g")).await;
    let mut second = BTreeSet::new();
    while first.len() + second.len() < published.len() {
        let id = recv(&mut rx).await.id;
        assert!(
            !first.contains(&id),
            "handled twice after a graceful shutdown"
        );
        assert!(second.insert(id), "handled twice by one subscription");
    }
    sub.shutdown().await.unwrap();
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    assert_eq!(all, published);
}

/// Events of one key are handled in order even with many handlers running at once.
pub async fn per_key_order_with_concurrency(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("order");
    let (tx, mut rx) = unbounded_channel();
    let sub = fx
        .prepare(bus.subscribe(&t).group(&fx.group("g")).concurrency(8))
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                let body = text(&e.payload);
                let (key, n) = body.split_once(':').unwrap();
                let n: u32 = n.parse().unwrap();
                // Uneven handling times, so events would overtake each other if allowed to.
                tokio::time::sleep(Duration::from_millis(u64::from(n % 3))).await;
                tx.send((key.to_string(), n)).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &t).await;
    let keys = 5;
    let per_key = 20;
    let mut publishes = Vec::new();
    for n in 0..per_key {
        for k in 0..keys {
            let e = Event::new(format!("k{k}:{n}")).with_key(format!("k{k}"));
            publishes.push(bus.publish(&t, e));
        }
    }
    // Published back to back (concurrently on direct, where each publish waits for its ack).
    if fx.kind() == TransportKind::Direct {
        for r in futures::future::join_all(publishes).await {
            r.unwrap();
        }
    } else {
        for p in publishes {
            p.await.unwrap();
        }
    }
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..keys * per_key {
        let (k, n) = recv(&mut rx).await;
        seen.entry(k).or_default().push(n);
    }
    for (k, ns) in &seen {
        if fx.kind() == TransportKind::Direct {
            // Concurrent publishes of one key have no order between them; each still arrives once.
            let set: BTreeSet<_> = ns.iter().collect();
            assert_eq!(set.len(), per_key as usize, "key {k}");
        } else {
            assert_eq!(*ns, (0..per_key).collect::<Vec<_>>(), "key {k}");
        }
    }
    sub.shutdown().await.unwrap();
}

/// Every group serving a topic gets every event; within a group, one subscription gets it.
pub async fn every_group_gets_every_event(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("groups");
    let (a, mut ra) = forwarding(fx, &bus, &t, &fx.group("audit")).await;
    let (b, mut rb) = forwarding(fx, &bus, &t, &fx.group("billing")).await;
    fx.settle(&bus, &t).await;
    let mut ids = BTreeSet::new();
    for i in 0..10 {
        ids.insert(
            bus.publish(&t, Event::new(format!("{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    for rx in [&mut ra, &mut rb] {
        let mut got = BTreeSet::new();
        for _ in 0..10 {
            got.insert(recv(rx).await.id);
        }
        assert_eq!(got, ids);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert!(
        ra.try_recv().is_err() && rb.try_recv().is_err(),
        "an event came twice"
    );
}

/// A request gets its correlated reply; a failing replier's error and a missed deadline reach
/// the caller as such.
pub async fn request_reply_and_errors(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let t = topic("rpc");
    let server = fx
        .prepare_serve(bus.serve(&t).group(&fx.group("upper")))
        .reply(|req: Event, _ctx| async move {
            match req.payload.as_ref() {
                b"fail" => Err(HandlerError::retryable("no such user")),
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(Event::new("late"))
                }
                p => Ok(Event::new(text(p).to_uppercase())),
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &t).await;
    let req = Event::new("hello");
    let id = req.id;
    let reply = bus
        .request(&t, req)
        .deadline(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(reply.payload, "HELLO");
    assert_eq!(reply.correlation_id, Some(id));
    match bus.request(&t, Event::new("fail")).deadline(WAIT).await {
        Err(RequestError::Failed(m)) => assert!(m.contains("no such user"), "{m}"),
        other => panic!("expected the replier's failure, got {other:?}"),
    }
    match bus
        .request(&t, Event::new("slow"))
        .deadline(Duration::from_millis(300))
        .await
    {
        Err(RequestError::DeadlineExceeded) => {}
        other => panic!("expected the deadline to pass, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

/// A replier's own requests inherit the caller's deadline.
pub async fn request_deadline_propagates(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let outer = topic("outer");
    let inner = topic("inner");
    let inner_server = fx
        .prepare_serve(bus.serve(&inner))
        .reply(|_req: Event, ctx| async move {
            let ms = herald_ms(ctx.deadline());
            Ok(Event::new(ms.to_string()))
        })
        .await
        .unwrap();
    let inner_topic = inner.clone();
    let outer_server = fx
        .prepare_serve(bus.serve(&outer))
        .reply(move |req: Event, ctx| {
            let inner = inner_topic.clone();
            async move {
                // Asking for more time than is left changes nothing.
                let reply = ctx
                    .request(&inner, Event::new(req.payload))
                    .deadline(Duration::from_secs(3600))
                    .await?;
                Ok(Event::new(reply.payload))
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &inner).await;
    fx.settle(&bus, &outer).await;
    let deadline = SystemTime::now() + Duration::from_secs(30);
    let reply = bus
        .request(&outer, Event::new("x"))
        .deadline_at(deadline)
        .await
        .unwrap();
    assert_eq!(text(&reply.payload), herald_ms(deadline).to_string());
    outer_server.shutdown().await.unwrap();
    inner_server.shutdown().await.unwrap();
}

fn herald_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A consumer reports the outcome of its work as a result event correlated to the input.
pub async fn result_event_is_correlated(fx: &dyn Fixture) {
    let bus = fx.bus().await;
    let work = topic("work");
    let results = topic("results");
    let (results_sub, mut rx) = forwarding(fx, &bus, &results, "producer").await;
    let worker_bus = bus.clone();
    let results_topic = results.clone();
    let worker = fx
        .prepare(bus.subscribe(&work).group(&fx.group("workers")))
        .handle(move |e: Event| {
            let bus = worker_bus.clone();
            let results = results_topic.clone();
            async move {
                bus.publish_result(&results, &e, &serde_json::json!({"status": "done"}))
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                Ok(())
            }
        })
        .await
        .unwrap();
    fx.settle(&bus, &results).await;
    fx.settle(&bus, &work).await;
    let input = Event::new("job").with_key("customer-7");
    let id = input.id;
    bus.publish(&work, input).await.unwrap();
    let result = recv(&mut rx).await;
    assert_eq!(result.correlation_id, Some(id));
    assert_eq!(result.key.as_deref(), Some(&b"customer-7"[..]));
    let body: serde_json::Value = result.decode_json().unwrap();
    assert_eq!(body["status"], "done");
    worker.shutdown().await.unwrap();
    results_sub.shutdown().await.unwrap();
}
