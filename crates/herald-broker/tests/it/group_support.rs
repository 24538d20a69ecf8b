//! Shared pieces of the consumer-group tests: an in-process broker with short group timeouts,
//! topic creation, producing, and librdkafka consumers that record their rebalances.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_broker::group::GroupConfig;
use herald_broker::{Broker, BrokerConfig};
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Session timeout of every test consumer: the broker's minimum, so failures show quickly.
pub const SESSION_TIMEOUT_MS: &str = "6000";

pub struct TestBroker {
    // Held so the broker runs for as long as the test uses it.
    _broker: Broker,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

/// Starts a broker on a free loopback port with a fresh data directory.
pub async fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        groups: GroupConfig {
            // A fleet that starts together should settle in one round, without the 3 s wait.
            initial_rebalance_delay_ms: 500,
            ..GroupConfig::default()
        },
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let bootstrap = broker.kafka_addr().to_string();
    TestBroker {
        _broker: broker,
        bootstrap,
        _dir: dir,
    }
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// Produces `count` messages round-robin over `partitions`, payload `m<i>`; waits for acks.
pub fn produce(bootstrap: &str, topic: &str, partitions: i32, first: usize, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in first..first + count {
        let payload = format!("m{i}");
        let partition = i32::try_from(i).unwrap() % partitions;
        loop {
            match producer.send(
                BaseRecord::<(), _>::to(topic)
                    .payload(&payload)
                    .partition(partition),
            ) {
                Ok(()) => break,
                Err((error, _)) => {
                    assert!(
                        matches!(
                            error.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce failed: {error}"
                    );
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// What a consumer's rebalance callbacks saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
}

#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            self.events.lock().push(Event::Revoke(parts));
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            self.events.lock().push(Event::Assign(parts));
        }
    }
}

/// A group member for the tests. Dropping it leaves the group the way an application would,
/// before closing: unsubscribe, then poll until the revocation has been handled. Closing a
/// member that still has partitions makes librdkafka revoke them from inside the close, where
/// the `assign` call the revocation makes can wait forever for an answer (librdkafka issue
/// 4884; seen here about once in a hundred runs on a loaded machine), hanging the test.
/// Static members (`group.instance.id`) are closed as they are: leaving would change what
/// their tests check, that a static member's close does not rebalance the group.
pub struct TestConsumer {
    consumer: BaseConsumer<Recorder>,
    leave_on_drop: bool,
}

/// How long a dropped member polls for its revocation before it closes anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

impl std::ops::Deref for TestConsumer {
    type Target = BaseConsumer<Recorder>;
    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

impl Drop for TestConsumer {
    fn drop(&mut self) {
        if !self.leave_on_drop {
            return;
        }
        self.consumer.unsubscribe();
        let until = Instant::now() + LEAVE_TIMEOUT;
        while Instant::now() < until && self.consumer.assignment().is_ok_and(|tpl| tpl.count() > 0)
        {
            // Messages still buffered are not this test's any more: nothing commits them.
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
    }
}

/// A consumer in `group` subscribed to `topic`; `extra` overrides settings.
pub fn consumer(bootstrap: &str, group: &str, topic: &str, extra: &[(&str, &str)]) -> TestConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "20000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer<Recorder> = config.create_with_context(Recorder::default()).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    TestConsumer {
        consumer,
        leave_on_drop: !extra.iter().any(|(key, _)| *key == "group.instance.id"),
    }
}

/// The partitions currently assigned to `consumer`.
pub fn assigned(consumer: &TestConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer in turn (which also runs their rebalance callbacks) until `done`
/// holds, failing the test after `within`. Messages are passed to `on_message`.
pub fn poll_until(
    consumers: &[&TestConsumer],
    within: Duration,
    what: &str,
    mut on_message: impl FnMut(usize, &rdkafka::message::BorrowedMessage<'_>),
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        for (i, consumer) in consumers.iter().enumerate() {
            // Drain what is ready, then move on so every consumer keeps being served.
            while let Some(result) = consumer.poll(Duration::from_millis(20)) {
                match result {
                    Ok(message) => on_message(i, &message),
                    Err(error) => eprintln!("consumer {i}: {error}"),
                }
            }
        }
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// The payload of a message as text.
pub fn payload(message: &rdkafka::message::BorrowedMessage<'_>) -> String {
    use rdkafka::Message;
    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
}
