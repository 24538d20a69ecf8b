//! Brokered load through librdkafka, against Herald or any Kafka-compatible broker: open-loop
//! produce (latency from each event's due time to its delivery report), end to end (due time to
//! a consumer group member's poll returning the event) and the consumer-down check (events
//! produced while no consumer ran, counted once one is back).
//!
//! The producer's configuration is explicit and reported with every figure, because it decides
//! them: a non-idempotent librdkafka producer with linger 0 sends one message per request and
//! keeps up to `max.in.flight` requests open, so on a broker that acks after an fsync each
//! request waits for its own; an idempotent one (at most 5 in flight) lets batches form behind
//! the open requests. See [`ProducerSettings`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode as Code;
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::clock::{filler, mono_ns, read_stamp, stamp};
use crate::pace::{self, Generated, Outcome, Recorder, Schedule};

/// Largest value a benchmark event may carry.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Events in flight at once in a maximum-rate cell.
pub const WINDOW_EVENTS_MAX: u64 = 20_000;
/// How long a run waits for its last delivery reports or consumed events.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a consumer may take to be assigned its partitions.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// How the bench's producer is configured; every figure is reported with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSettings {
    /// `acks`: "0", "1" or "all".
    pub acks: String,
    /// `enable.idempotence` (requires acks=all and at most 5 in flight).
    pub idempotent: bool,
    /// `max.in.flight.requests.per.connection`.
    pub in_flight_max: u32,
    /// `linger.ms`.
    pub linger_ms: u64,
    /// `compression.type`.
    pub compression: String,
}

impl Default for ProducerSettings {
    /// What the SDK's broker transport uses, except linger 0 so a lone event is sent at once:
    /// idempotent, acks=all, 5 requests in flight.
    fn default() -> Self {
        ProducerSettings {
            acks: "all".into(),
            idempotent: true,
            in_flight_max: 5,
            linger_ms: 0,
            compression: "none".into(),
        }
    }
}

impl ProducerSettings {
    /// The same settings with another `acks` (idempotence only where Kafka allows it).
    pub fn with_acks(&self, acks: &str) -> ProducerSettings {
        ProducerSettings {
            acks: acks.into(),
            idempotent: self.idempotent && acks == "all",
            ..self.clone()
        }
    }

    /// Checks the combination as librdkafka would, with a message naming the flags.
    pub fn check(&self) -> Result<(), BenchError> {
        if !["0", "1", "all", "-1"].contains(&self.acks.as_str()) {
            return Err(BenchError::Usage(format!(
                "acks must be 0, 1 or all, not {:?}",
                self.acks
            )));
        }
        if self.idempotent && !matches!(self.acks.as_str(), "all" | "-1") {
            return Err(BenchError::Usage(
                "an idempotent producer needs acks=all".into(),
            ));
        }
        if self.idempotent && self.in_flight_max > 5 {
            return Err(BenchError::Usage(
                "an idempotent producer allows at most 5 requests in flight".into(),
            ));
        }
        if self.in_flight_max == 0 {
            return Err(BenchError::Usage("in-flight must be at least 1".into()));
        }
        Ok(())
    }

    /// One line for reports: `acks=all idempotent in-flight=5 linger=0ms`.
    pub fn describe(&self) -> String {
        format!(
            "acks={} {} in-flight={} linger={}ms{}",
            self.acks,
            if self.idempotent {
                "idempotent"
            } else {
                "non-idempotent"
            },
            self.in_flight_max,
            self.linger_ms,
            if self.compression == "none" {
                String::new()
            } else {
                format!(" compression={}", self.compression)
            }
        )
    }

    fn client_config(&self, bootstrap: &str) -> ClientConfig {
        let mut config = base_config(bootstrap);
        config
            .set("acks", &self.acks)
            .set("enable.idempotence", self.idempotent.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                self.in_flight_max.to_string(),
            )
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", &self.compression)
            .set("queue.buffering.max.kbytes", "1048576")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.max.bytes", (VALUE_BYTES_MAX + 4096).to_string());
        config
    }
}

/// librdkafka properties every client of this module gets besides its own: the connection's
/// security settings (`security.protocol`, SASL credentials, CA file), set once by the program
/// from its command line.
static CLIENT_PROPERTIES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Sets the properties every Kafka client of the benches gets (first call wins).
pub fn set_client_properties(properties: Vec<(String, String)>) {
    let _ = CLIENT_PROPERTIES.set(properties);
}

/// A client config for `bootstrap` with the program's client properties.
fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in CLIENT_PROPERTIES.get().into_iter().flatten() {
        config.set(key, value);
    }
    config
}

/// Creates `topic` with `partitions` and topic `configs` unless it exists.
pub fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), BenchError> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
        .create()
        .map_err(|e| BenchError::Kafka(format!("creating the admin client: {e}")))?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| {
            BenchError::Kafka(format!("cannot create topic {topic} on {bootstrap}: {e}"))
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BenchError::Kafka(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// Where each producer sends one record (and waits for it) before its schedule.
pub const WARM_UP_TOPIC: &str = "herald-bench-warm-up";
/// The opaque of that record, whose report is not counted.
const WARM_UP: u64 = 0;

/// Hands delivery reports to the run's recorder; each message's opaque is its due time.
struct Deliveries {
    recorder: Arc<Recorder>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, due_ns: Box<u64>) {
        if *due_ns == WARM_UP {
            return;
        }
        match result {
            Ok(_) => self.recorder.ok(*due_ns),
            Err((error, _)) => self.recorder.fail(error),
        }
    }
}

/// One produce run.
#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub bootstrap: String,
    pub topic: String,
    pub settings: ProducerSettings,
    pub value_bytes: usize,
    /// Producer clients, each on its own thread with its share of the schedule.
    pub producers: u32,
    pub schedule: Schedule,
    /// Distinct keys, cycled; 0 sends no key.
    pub keys: u64,
}

/// Produces open loop as `spec` says; `recorder` collects the delivery reports (the caller may
/// watch it for progress). Latency counts from each event's due time to its delivery report.
pub fn produce(spec: &ProduceSpec, recorder: &Arc<Recorder>) -> Result<Outcome, BenchError> {
    spec.settings.check()?;
    if spec.value_bytes > VALUE_BYTES_MAX {
        return Err(BenchError::Usage(format!(
            "a value of {} bytes is larger than the bench's limit of {VALUE_BYTES_MAX}",
            spec.value_bytes
        )));
    }
    let producers = spec.producers.max(1) as u64;
    create_topic(&spec.bootstrap, WARM_UP_TOPIC, 1, &[])?;
    let start = mono_ns();
    let mut threads = Vec::new();
    for index in 0..producers {
        let producer: ThreadedProducer<Deliveries> = spec
            .settings
            .client_config(&spec.bootstrap)
            .create_with_context(Deliveries {
                recorder: recorder.clone(),
            })
            .map_err(|e| BenchError::Kafka(format!("creating a producer: {e}")))?;
        warm_up(&producer)?;
        let mut schedule = spec.schedule;
        schedule.rate /= producers;
        schedule.count_max = spec.schedule.count_max / producers
            + u64::from(index < spec.schedule.count_max % producers);
        let (spec, recorder) = (spec.clone(), recorder.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-producer-{index}"))
                .spawn(move || produce_loop(&producer, &spec, schedule, &recorder, producers))
                .map_err(BenchError::io("starting a producer thread"))?,
        );
    }
    let mut generated = Generated::default();
    for thread in threads {
        let own = thread
            .join()
            .map_err(|_| BenchError::Kafka("a producer thread panicked".into()))??;
        generated.offered += own.offered;
        generated.sent += own.sent;
        generated.cpu_s += own.cpu_s;
        generated.seconds = generated.seconds.max(own.seconds);
        generated.behind |= own.behind;
        if generated.start_ns == 0 || own.start_ns < generated.start_ns {
            generated.start_ns = own.start_ns;
        }
        if generated
            .lag
            .is_none_or(|l| own.lag.is_some_and(|o| o.p99_us > l.p99_us))
        {
            generated.lag = own.lag;
        }
    }
    Ok(recorder.outcome(generated, start))
}

fn warm_up(producer: &ThreadedProducer<Deliveries>) -> Result<(), BenchError> {
    // One record, to a topic of its own so the measured topic holds exactly what the schedule
    // produced; waiting for its report means the connection is up and an idempotent producer
    // has its producer id, neither of which the first scheduled events should wait for.
    let record: BaseRecord<'_, [u8; 8], [u8], Box<u64>> =
        BaseRecord::with_opaque_to(WARM_UP_TOPIC, Box::new(WARM_UP)).payload(&b"warm-up"[..]);
    producer
        .send(record)
        .map_err(|(e, _)| BenchError::Kafka(format!("warming up the producer: {e}")))?;
    producer
        .flush(DRAIN_TIMEOUT)
        .map_err(|e| BenchError::Kafka(format!("warming up the producer: {e}")))
}

fn produce_loop(
    producer: &ThreadedProducer<Deliveries>,
    spec: &ProduceSpec,
    schedule: Schedule,
    recorder: &Recorder,
    producers: u64,
) -> Result<Generated, BenchError> {
    let mut value = filler(spec.value_bytes);
    let sent = std::cell::Cell::new(0u64);
    let window = WINDOW_EVENTS_MAX / producers;
    let generated = pace::run(
        schedule,
        || recorder.room(sent.get(), window, producers),
        |i, due| {
            let key = (spec.keys > 0).then(|| (i % spec.keys).to_le_bytes());
            stamp(&mut value, due, i / spec.keys.max(1));
            let mut record: BaseRecord<'_, [u8; 8], [u8], Box<u64>> =
                BaseRecord::with_opaque_to(&spec.topic, Box::new(due)).payload(&value[..]);
            if let Some(key) = key.as_ref() {
                record = record.key(key);
            }
            sent.set(sent.get() + 1);
            loop {
                match producer.send(record) {
                    Ok(()) => return true,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The client's own queue is full: the generator is now the limit,
                        // which its lag will show.
                        record = back;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err((error, _)) => {
                        recorder.fail(error);
                        return false;
                    }
                }
            }
        },
    )?;
    producer
        .flush(DRAIN_TIMEOUT)
        .map_err(|e| BenchError::Kafka(format!("waiting for acknowledgements: {e}")))?;
    Ok(generated)
}

/// A consumer group member on its own thread, recording each event's latency from its due time
/// to the poll returning it, and counting events of a key that arrived out of order.
pub struct GroupConsumer {
    /// Where the consumer thread records; swapped for a fresh one per measured cell.
    recorder: Arc<parking_lot::Mutex<Arc<Recorder>>>,
    reorders: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupConsumer {
    /// Joins `group` on `topic` (from the earliest offset when the group has none) and returns
    /// once its partitions are assigned.
    pub fn start(bootstrap: &str, topic: &str, group: &str) -> Result<GroupConsumer, BenchError> {
        let consumer: BaseConsumer = base_config(bootstrap)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "100")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(|e| BenchError::Kafka(format!("creating a consumer: {e}")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| BenchError::Kafka(format!("subscribing to {topic}: {e}")))?;
        let until = mono_ns() + ASSIGN_TIMEOUT.as_nanos() as u64;
        loop {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                return Err(BenchError::Kafka(format!("consumer: {e}")));
            }
            if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                break;
            }
            if mono_ns() > until {
                return Err(BenchError::Kafka(format!(
                    "group {group} was not assigned {topic} within {ASSIGN_TIMEOUT:?}"
                )));
            }
        }
        let recorder = Arc::new(parking_lot::Mutex::new(Arc::new(Recorder::new()?)));
        let reorders = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (recorder, reorders, stop) = (recorder.clone(), reorders.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-consumer".into())
                .spawn(move || {
                    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match consumer.poll(Duration::from_millis(20)) {
                            Some(Ok(m)) => {
                                let Some((due, seq)) = m.payload().and_then(read_stamp) else {
                                    continue;
                                };
                                recorder.lock().ok(due);
                                let _ = seq;
                                let key = m.key().unwrap_or_default().to_vec();
                                if let Some(prev) = last.insert(key, due)
                                    && due <= prev
                                {
                                    reorders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                            Some(Err(e)) => recorder.lock().fail(e),
                            None => {}
                        }
                    }
                    consumer.unsubscribe();
                })
                .map_err(BenchError::io("starting the consumer thread"))?
        };
        Ok(GroupConsumer {
            recorder,
            reorders,
            stop,
            thread: Some(thread),
        })
    }

    /// The recorder of the current cell.
    pub fn recorder(&self) -> Arc<Recorder> {
        self.recorder.lock().clone()
    }

    /// Starts a new cell: what arrives from now on is recorded afresh.
    pub fn next_cell(&self) -> Result<Arc<Recorder>, BenchError> {
        let fresh = Arc::new(Recorder::new()?);
        *self.recorder.lock() = fresh.clone();
        Ok(fresh)
    }

    /// Events of a key received at or below the sequence number last seen for that key.
    pub fn reorders(&self) -> u64 {
        self.reorders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits up to `timeout` for `count` events.
    pub fn wait_for(&self, count: u64, timeout: Duration) -> bool {
        self.recorder().wait_finished(count, timeout)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// End to end: produce open loop to `spec.topic` while `consumer` (a member of a group on that
/// topic) consumes it; the outcome's latency is from each event's due time to the poll that
/// returned it.
pub fn end_to_end(spec: &ProduceSpec, consumer: &GroupConsumer) -> Result<Outcome, BenchError> {
    let recorder = consumer.next_cell()?;
    let start = mono_ns();
    let produced = produce(spec, &Arc::new(Recorder::new()?))?;
    recorder.wait_finished(produced.delivered, DRAIN_TIMEOUT);
    let mut outcome = recorder.outcome(produced.generated.clone(), start);
    outcome.failed += produced.failed;
    outcome.first_error = outcome.first_error.or(produced.first_error);
    Ok(outcome)
}

/// What the consumer-down check saw.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ConsumerDown {
    /// Events the producer was told were done while no consumer ran.
    pub published_ok: u64,
    /// Of those, events delivered once the consumer was back.
    pub delivered_after: u64,
}

/// The group's member joins, leaves; `events` are produced over `down` while it is gone; a new
/// member of the same group then reads what it can within a few seconds.
pub fn consumer_down(
    bootstrap: &str,
    topic: &str,
    events: u64,
    down: Duration,
) -> Result<ConsumerDown, BenchError> {
    create_topic(bootstrap, topic, 1, &[])?;
    let group = format!("{topic}-group");
    drop(GroupConsumer::start(bootstrap, topic, &group)?);
    let spec = ProduceSpec {
        bootstrap: bootstrap.into(),
        topic: topic.into(),
        settings: ProducerSettings::default(),
        value_bytes: 100,
        producers: 1,
        schedule: Schedule {
            rate: (events as f64 / down.as_secs_f64()).max(1.0) as u64,
            duration: down,
            count_max: 0,
        },
        keys: 1,
    };
    let produced = produce(&spec, &Arc::new(Recorder::new()?))?;
    let consumer = GroupConsumer::start(bootstrap, topic, &group)?;
    consumer.wait_for(produced.delivered, Duration::from_secs(10));
    Ok(ConsumerDown {
        published_ok: produced.delivered,
        delivered_after: consumer.recorder().done(),
    })
}
