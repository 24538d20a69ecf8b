//! The behavioural suite against a real Herald broker started in this process, plus what only
//! the broker transport does: Kafka records any client can read, records from clients that know
//! nothing of Herald, committed offsets, partitions shared inside a group, and crash recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald::{
    Bus, Completed, ConnectError, Event, EventId, HandlerError, PublishError, RetryPolicy,
    TransportKind,
};
use herald_broker::group::GroupConfig;
use herald_broker::{Broker, BrokerConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::unbounded_channel;

use crate::behaviour::{BoxFuture, Fixture};
use crate::support::{WAIT, external_bootstrap, forward, recv, skip_on_external, topic};

/// The broker under test: a Herald broker on a free loopback port over a temporary directory,
/// or the external Kafka-compatible broker `HERALD_TEST_BOOTSTRAP` names.
pub struct HeraldBroker {
    /// The in-process broker; `None` against an external broker.
    _broker: Option<Broker>,
    bootstrap: String,
    /// Appended to group names against an external broker, so that reruns and tests running at
    /// the same time never join each other's groups (topic names are unique already).
    group_suffix: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl HeraldBroker {
    pub async fn start() -> HeraldBroker {
        Self::start_with(true).await
    }

    async fn start_with(auto_create_topics_enable: bool) -> HeraldBroker {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        if let Some(bootstrap) = external_bootstrap() {
            // The external broker's own settings apply; only tests that need Herald's
            // (such as topics that are not auto-created) skip themselves before they get here.
            assert!(
                auto_create_topics_enable,
                "tests needing Herald's configuration skip against an external broker"
            );
            return HeraldBroker {
                _broker: None,
                bootstrap,
                group_suffix: Some(herald_testkit::unique_suffix()),
                _dir: None,
            };
        }
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            kafka_addr: "127.0.0.1:0".parse().unwrap(),
            auto_create_topics_enable,
            groups: GroupConfig {
                // A group's first member should not wait the 3 s Kafka waits for more members.
                initial_rebalance_delay_ms: 100,
                ..GroupConfig::default()
            },
            ..BrokerConfig::default()
        })
        .await
        .unwrap();
        HeraldBroker {
            bootstrap: broker.kafka_addr().to_string(),
            _broker: Some(broker),
            group_suffix: None,
            _dir: Some(dir),
        }
    }

    /// The name group `name` has on this broker (see [`Fixture::group`]).
    fn group(&self, name: &str) -> String {
        match &self.group_suffix {
            Some(suffix) => format!("{name}-{suffix}"),
            None => name.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("broker://{}", self.bootstrap)
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().unwrap();
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in results {
            r.unwrap();
        }
    }

    /// Reads the record at `offset` of `partition` with a plain consumer outside any group.
    async fn read_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> rdkafka::message::OwnedMessage {
        let mut config = self.client_config();
        config
            .set("group.id", self.group("plain-reader"))
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < WAIT {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => return m.detach(),
                    Some(Err(e)) => panic!("plain consumer: {e}"),
                    None => {}
                }
            }
            panic!("the plain consumer read nothing");
        })
        .await
        .unwrap()
    }

    /// The offset `group` committed on `partition`, as a plain client sees it.
    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Offset {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let got = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .unwrap();
            got.find_partition(&topic, partition).unwrap().offset()
        })
        .await
        .unwrap()
    }
}

impl Fixture for HeraldBroker {
    fn kind(&self) -> TransportKind {
        TransportKind::Broker
    }

    fn bus(&self) -> BoxFuture<'_, Bus> {
        Box::pin(async move { Bus::connect(&self.url()).await.unwrap() })
    }

    fn group(&self, name: &str) -> String {
        HeraldBroker::group(self, name)
    }
}

crate::behaviour_tests!(HeraldBroker::start(); all);

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_names_the_record_a_plain_consumer_reads() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("receipt");
    let event = Event::new("payload")
        .with_key("user-1")
        .with_header("trace", "abc");
    let sent = event.clone();
    let receipt = bus.publish(&t, event).await.unwrap();
    assert_eq!(receipt.id, sent.id);
    let Completed::Stored { partition, offset } = receipt.completed else {
        panic!("expected a stored receipt, got {receipt:?}");
    };
    assert_eq!(offset, 0, "the first record of a new topic");
    let m = broker.read_at(&t, partition, offset).await;
    assert_eq!(m.payload(), Some(&b"payload"[..]));
    assert_eq!(m.key(), Some(&b"user-1"[..]));
    assert_eq!(header(&m, "trace"), Some(&b"abc"[..]));
    assert_eq!(
        header(&m, herald::HEADER_ID),
        Some(sent.id.to_string().as_bytes())
    );
    let ms = sent
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        m.timestamp().to_millis(),
        Some(ms),
        "record time = event time"
    );
    bus.close().await;
    assert!(matches!(
        bus.publish(&t, Event::new("late")).await,
        Err(PublishError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_plain_producers_are_handled() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("foreign");
    let (sub, mut rx) = forward(bus.subscribe(&t).group(&broker.group("g"))).await;
    let producer: FutureProducer = broker.client_config().create().unwrap();
    let timestamp_ms = 1_700_000_000_123;
    producer
        .send(
            FutureRecord::to(&t)
                .key("k")
                .payload("from elsewhere")
                .timestamp(timestamp_ms)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "origin",
                    value: Some("legacy"),
                })),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let got = recv(&mut rx).await;
    assert_eq!(got.payload, "from elsewhere");
    assert_eq!(got.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(got.header_str("origin"), Some("legacy"));
    assert_eq!(
        got.timestamp,
        std::time::UNIX_EPOCH + Duration::from_millis(timestamp_ms as u64),
        "without herald headers the record's timestamp is the event's"
    );
    assert!(got.correlation_id.is_none());
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kafka_records_and_the_group_moves_past_them() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("poison");
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let sub = bus
        .subscribe(&t)
        .group(&broker.group("g"))
        .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(1), Duration::from_millis(5)))
        .handle(move |_e: Event| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err(HandlerError::retryable("provider down")) }
        })
        .await
        .unwrap();
    let event = Event::new("bad").with_key("k");
    let id = event.id;
    bus.publish(&t, event).await.unwrap();
    // The dead letter is the first record of `<topic>.dlq`, written by the runtime.
    let m = broker.read_at(&format!("{t}.dlq"), 0, 0).await;
    assert_eq!(m.payload(), Some(&b"bad"[..]));
    assert_eq!(
        header(&m, herald::HEADER_ID),
        Some(id.to_string().as_bytes())
    );
    assert_eq!(
        header(&m, herald::HEADER_DLQ_ERROR),
        Some(&b"provider down"[..])
    );
    assert_eq!(header(&m, herald::HEADER_DLQ_ATTEMPTS), Some(&b"3"[..]));
    let stats = sub.shutdown().await.unwrap();
    assert_eq!((stats.dead_lettered, stats.failures), (1, 3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        broker.committed(&broker.group("g"), &t, 0).await,
        Offset::Offset(1)
    );
}

/// Runs a subscription on its own tokio runtime and "crashes" it: the subscription is never
/// shut down and its runtime (with every handler and the bus) is dropped. Its handler acks the
/// first `acked` events and never finishes the next ones; returns the ids it acknowledged.
fn crash_after(url: String, t: String, group: String, acked: usize) -> BTreeSet<EventId> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // No periodic commit happens before the crash.
            let bus = Bus::connect(&format!("{url}?commit_interval_ms=600000"))
                .await
                .unwrap();
            let (tx, mut rx) = unbounded_channel();
            let count = Arc::new(AtomicU32::new(0));
            let sub = bus
                .subscribe(&t)
                .group(&group)
                .concurrency(4)
                .handle(move |e: Event| {
                    let tx = tx.clone();
                    let n = count.fetch_add(1, Ordering::SeqCst) as usize;
                    async move {
                        if n >= acked {
                            // Stuck in the middle of handling when the process dies.
                            std::future::pending::<()>().await;
                        }
                        tx.send(e.id).ok();
                        Ok(())
                    }
                })
                .await
                .unwrap();
            let mut done = BTreeSet::new();
            while done.len() < acked {
                done.insert(recv(&mut rx).await);
            }
            std::mem::forget(sub);
            done
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_when_a_consumer_crashes() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("crash");
    broker.create_topic(&t, 3).await;
    let mut published = BTreeSet::new();
    for i in 0..40 {
        let e = Event::new(format!("{i}")).with_key(format!("k{}", i % 7));
        published.insert(bus.publish(&t, e).await.unwrap().id);
    }
    let url = broker.url();
    let topic_name = t.clone();
    let group = broker.group("g");
    let first = tokio::task::spawn_blocking(move || crash_after(url, topic_name, group, 10))
        .await
        .unwrap();
    assert_eq!(first.len(), 10);
    for i in 40..60 {
        let e = Event::new(format!("{i}")).with_key(format!("k{}", i % 7));
        published.insert(bus.publish(&t, e).await.unwrap().id);
    }
    let (sub, mut rx) = forward(bus.subscribe(&t).group(&broker.group("g"))).await;
    let mut second = BTreeSet::new();
    while first.union(&second).count() < published.len() {
        second.insert(recv(&mut rx).await.id);
    }
    assert!(second.is_subset(&published));
    // Every event not acknowledged before the crash came again.
    let unacked: BTreeSet<_> = published.difference(&first).copied().collect();
    assert!(unacked.is_subset(&second));
    sub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_partitions() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("order");
    broker.create_topic(&t, 4).await;
    let (tx, mut rx) = unbounded_channel();
    let sub = bus
        .subscribe(&t)
        .group(&broker.group("g"))
        .concurrency(16)
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                let body = String::from_utf8(e.payload.to_vec()).unwrap();
                let (key, n) = body.split_once(':').unwrap();
                let n: u32 = n.parse().unwrap();
                // Uneven handling times, so events would overtake each other if allowed to.
                tokio::time::sleep(Duration::from_millis(u64::from(n * 7 % 5))).await;
                tx.send((key.to_string(), n)).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    let (keys, per_key) = (12, 25);
    let mut partitions = BTreeSet::new();
    for n in 0..per_key {
        for k in 0..keys {
            let e = Event::new(format!("k{k}:{n}")).with_key(format!("k{k}"));
            if let Completed::Stored { partition, .. } = bus.publish(&t, e).await.unwrap().completed
            {
                partitions.insert(partition);
            }
        }
    }
    assert!(
        partitions.len() > 1,
        "the keys should spread over partitions"
    );
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
async fn subscriptions_of_one_group_share_the_partitions() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("shared");
    broker.create_topic(&t, 4).await;
    let (tx, mut rx) = unbounded_channel();
    let mut subs = Vec::new();
    for name in ["a", "b"] {
        let tx = tx.clone();
        subs.push(
            bus.subscribe(&t)
                .group(&broker.group("g"))
                .handle(move |e: Event| {
                    let tx = tx.clone();
                    async move {
                        tx.send((name, e.id)).ok();
                        Ok(())
                    }
                })
                .await
                .unwrap(),
        );
    }
    // Keep publishing until both members handled something: then each holds partitions.
    let mut published = BTreeSet::new();
    let mut got: BTreeMap<EventId, Vec<&str>> = BTreeMap::new();
    let mut i = 0;
    let started = std::time::Instant::now();
    while !(got.values().any(|w| w.contains(&"a")) && got.values().any(|w| w.contains(&"b"))) {
        assert!(started.elapsed() < WAIT, "one member never got a partition");
        let e = Event::new(format!("{i}")).with_key(format!("k{i}"));
        published.insert(bus.publish(&t, e).await.unwrap().id);
        i += 1;
        while let Ok((who, id)) = rx.try_recv() {
            got.entry(id).or_default().push(who);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while got.len() < published.len() {
        let (who, id) = recv(&mut rx).await;
        got.entry(id).or_default().push(who);
    }
    for sub in subs {
        sub.shutdown().await.unwrap();
    }
    while let Ok((who, id)) = rx.try_recv() {
        got.entry(id).or_default().push(who);
    }
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), published);
    // Offsets are committed before partitions move, so nothing was handled twice.
    for (id, who) in &got {
        assert_eq!(who.len(), 1, "{id} handled by {who:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_fast_without_a_broker() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let result = Bus::connect(&format!("broker://127.0.0.1:{port}?connect_timeout_ms=500")).await;
    match result {
        Err(ConnectError::Transport { transport, message }) => {
            assert_eq!(transport, "broker");
            assert!(message.contains("no broker"), "{message}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(started.elapsed() < WAIT);
    match Bus::connect("broker://127.0.0.1:1?connect_timeout_ms=soon").await {
        Err(ConnectError::BadOption { name, .. }) => assert_eq!(name, "connect_timeout_ms"),
        other => panic!("expected a bad option, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_are_refused_as_too_large() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("big");
    let big = Event::new(vec![7u8; 2_000_000]);
    match bus.publish(&t, big).await {
        Err(PublishError::TooLarge { bytes, limit }) => assert!(bytes > limit, "{bytes} {limit}"),
        other => panic!("expected too large, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_after_subscribe_and_resumes_from_commits() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("latest");
    broker.create_topic(&t, 2).await;
    for i in 0..10 {
        bus.publish(&t, Event::new(format!("old-{i}")).with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    let subscribe = || {
        let (tx, rx) = unbounded_channel();
        let sub = bus
            .subscribe(&t)
            .group(&broker.group("late"))
            .start_from(herald::StartFrom::Latest)
            .handle(move |e: Event| {
                let tx = tx.clone();
                async move {
                    tx.send(String::from_utf8(e.payload.to_vec()).unwrap()).ok();
                    Ok(())
                }
            });
        async move { (sub.await.unwrap(), rx) }
    };
    let (sub, mut rx) = subscribe().await;
    // Published the moment subscribe returned: seen, and nothing from before it.
    bus.publish(&t, Event::new("new").with_key("k0"))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "new");
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.handled, 1);
    // The group resumes where it was on every partition, also the one where it handled
    // nothing, even though it starts from the latest.
    let mut away = BTreeSet::new();
    for i in 0..10 {
        let body = format!("away-{i}");
        bus.publish(&t, Event::new(body.clone()).with_key(format!("k{i}")))
            .await
            .unwrap();
        away.insert(body);
    }
    let (sub, mut rx) = subscribe().await;
    let mut got = BTreeSet::new();
    while got.len() < away.len() {
        got.insert(recv(&mut rx).await);
    }
    assert_eq!(got, away);
    sub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_dead_letters_work_where_topics_are_not_auto_created() {
    if skip_on_external(
        "publishing_and_dead_letters_work_where_topics_are_not_auto_created",
        "a broker started with topic auto-creation off",
    ) {
        return;
    }
    let broker = HeraldBroker::start_with(false).await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("strict");
    let receipt = bus.publish(&t, Event::new("first")).await.unwrap();
    assert_eq!(receipt.kind(), "stored");
    let sub = bus
        .subscribe(&t)
        .group(&broker.group("g"))
        .retry(RetryPolicy::none())
        .handle(|_e: Event| async { Err(HandlerError::permanent("unreadable")) })
        .await
        .unwrap();
    // The dead-letter topic exists only because the transport created it.
    let m = broker.read_at(&format!("{t}.dlq"), 0, 0).await;
    assert_eq!(m.payload(), Some(&b"first"[..]));
    sub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscription_pauses_and_resumes_without_loss() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("backlog");
    broker.create_topic(&t, 3).await;
    let mut published = Vec::new();
    for i in 0..300 {
        let e = Event::new(format!("{i}")).with_key(format!("k{}", i % 5));
        published.push(bus.publish(&t, e).await.unwrap().id);
    }
    // Concurrency 1 allows 4 deliveries out at once, and a handler that now and then takes
    // longer than the consumer waits for room makes it pause its partitions, then resume.
    let (tx, mut rx) = unbounded_channel();
    let sub = bus
        .subscribe(&t)
        .group(&broker.group("g"))
        .concurrency(1)
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                let n: u32 = String::from_utf8_lossy(&e.payload).parse().unwrap();
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                tx.send(e.id).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < published.len() {
        got.push(recv(&mut rx).await);
    }
    let stats = sub.shutdown().await.unwrap();
    assert_eq!(stats.handled, 300);
    assert!(rx.try_recv().is_err(), "an event came twice");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    let mut expected = published.clone();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    // Everything was committed: offsets start at 0, so the commit points add up to the count.
    let mut committed = 0;
    for p in 0..3 {
        committed += match broker.committed(&broker.group("g"), &t, p).await {
            Offset::Offset(o) => o,
            Offset::Invalid => 0,
            other => panic!("partition {p}: {other:?}"),
        };
    }
    assert_eq!(committed, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_a_commit_the_vanished_broker_did_not_take() {
    if skip_on_external(
        "shutdown_reports_a_commit_the_vanished_broker_did_not_take",
        "stopping the broker in the middle of the test",
    ) {
        return;
    }
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("gone");
    let (sub, mut rx) = forward(bus.subscribe(&t).group(&broker.group("g"))).await;
    bus.publish(&t, Event::new("x")).await.unwrap();
    recv(&mut rx).await;
    broker
        ._broker
        .as_ref()
        .expect("an in-process broker")
        .shutdown()
        .await
        .unwrap();
    drop(broker);
    // The handled event's commit cannot be made: shutdown says so instead of claiming success
    // (and ends after its bounded wait for the commit).
    match tokio::time::timeout(WAIT, sub.shutdown()).await.unwrap() {
        Err(herald::SubscribeError::Transport { message, .. }) => {
            assert!(message.contains("final offset commit failed"), "{message}")
        }
        other => panic!("expected a failed final commit, got {other:?}"),
    }
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_a_busy_group_takes_over_without_loss_or_repeats() {
    let broker = HeraldBroker::start().await;
    let bus = Bus::connect(&broker.url()).await.unwrap();
    let t = topic("takeover");
    broker.create_topic(&t, 4).await;
    let mut published = BTreeSet::new();
    for i in 0..200 {
        let e = Event::new(format!("{i}")).with_key(format!("k{}", i % 16));
        published.insert(bus.publish(&t, e).await.unwrap().id);
    }
    // Members learn of a rebalance at their next heartbeat: make that soon, so the group
    // rebalances while `a` is still busy.
    let members = Bus::connect(&format!("{}?heartbeat.interval.ms=100", broker.url()))
        .await
        .unwrap();
    let (tx, mut rx) = unbounded_channel();
    let member = |name: &'static str| {
        let tx = tx.clone();
        members
            .subscribe(&t)
            .group(&broker.group("g"))
            .concurrency(2)
            .handle(move |e: Event| {
                let tx = tx.clone();
                async move {
                    // Slow enough that deliveries are in flight when the partitions move.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    tx.send((name, e.id)).ok();
                    Ok(())
                }
            })
    };
    let a = member("a").await.unwrap();
    let mut got: BTreeMap<EventId, Vec<&str>> = BTreeMap::new();
    while got.len() < 20 {
        let (who, id) = recv(&mut rx).await;
        got.entry(id).or_default().push(who);
    }
    // The group rebalances while `a` has deliveries out: `a` finishes and commits them before
    // its partitions move, so `b` starts exactly after them.
    let b = member("b").await.unwrap();
    while got.len() < published.len() {
        let (who, id) = recv(&mut rx).await;
        got.entry(id).or_default().push(who);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    while let Ok((who, id)) = rx.try_recv() {
        got.entry(id).or_default().push(who);
    }
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), published);
    assert!(
        got.values().any(|w| w.contains(&"b")),
        "b never got a partition"
    );
    for (id, who) in &got {
        assert_eq!(who.len(), 1, "{id} handled by {who:?}");
    }
}
