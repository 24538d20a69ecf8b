//! The broker transport: the Kafka protocol through librdkafka, so the SDK works against a
//! Herald broker or any Kafka-compatible cluster.
//!
//! Publishing is a librdkafka producer (`acks=all`, idempotent) whose delivery report becomes
//! the receipt. Each subscription is a consumer in its own group on its own thread
//! (`consumer.rs`) that commits only what the handler runtime acknowledged (`offsets.rs`).

mod consumer;
mod offsets;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

use crate::bus::BusConfig;
use crate::error::{ConnectError, PublishError, SubscribeError};
use crate::event::{Event, system_to_unix_ms};
use crate::receipt::{Completed, Receipt};
use crate::transport::{BoxFuture, Delivery, Running, SubscribeSpec, Transport, TransportKind};

const TRANSPORT: &str = "broker";

/// SDK option: how long `connect` waits for a broker to answer a metadata request.
pub(crate) const OPTION_CONNECT_TIMEOUT_MS: &str = "connect_timeout_ms";
/// SDK option: how often a subscription commits the offsets acknowledged since the last commit.
pub(crate) const OPTION_COMMIT_INTERVAL_MS: &str = "commit_interval_ms";

const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
const COMMIT_INTERVAL_MS_DEFAULT: u64 = 200;
/// How long the producer may wait to fill a batch. Against an in-process Herald broker, 1 ms
/// gave a lone publish a 1.4 ms median and 500 concurrent ones about twice the throughput of
/// librdkafka's default 5 ms (whose median is 5.5 ms); 0 lowers the median to 0.3 ms for
/// callers that publish one event at a time.
const LINGER_MS_DEFAULT: &str = "1";
/// librdkafka's default `message.max.bytes`, used to report the limit of a too-large event.
const MESSAGE_BYTES_MAX_DEFAULT: usize = 1_000_000;
/// How long creating a topic and seeing it in metadata may take before a subscription fails.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often metadata is asked again while a new topic is not visible yet.
const TOPIC_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Topics a bus remembers as existing; past this it forgets them all and checks again.
const READY_TOPICS_MAX: usize = 10_000;
/// How long `close` waits for the producer to deliver what it still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The SDK's own settings, taken out of the options before the rest go to librdkafka.
#[derive(Debug, Clone)]
struct Settings {
    connect_timeout: Duration,
    commit_interval: Duration,
    message_bytes_max: usize,
}

pub(crate) struct BrokerTransport {
    target: String,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// bootstrap.servers plus the user's librdkafka options, the start of every consumer's
    /// config.
    client_base: ClientConfig,
    settings: Settings,
    closed: AtomicBool,
    /// Topics this bus already made sure exist, so later subscriptions skip the round trips.
    ready_topics: Mutex<HashSet<String>>,
}

pub(crate) async fn connect(config: &BusConfig) -> Result<Arc<dyn Transport>, ConnectError> {
    Ok(Arc::new(BrokerTransport::connect(config).await?))
}

fn parse_ms(name: &str, value: &str) -> Result<u64, ConnectError> {
    value.parse::<u64>().map_err(|_| ConnectError::BadOption {
        name: name.to_string(),
        reason: "expected a whole number of milliseconds".to_string(),
    })
}

/// Option naming the file that holds the SASL password (its first line).
const OPTION_PASSWORD_FILE: &str = "password_file";
/// Largest password file read, so a wrong path is refused without reading it whole.
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

/// The first line of a password file.
fn read_password(path: &str) -> Result<String, ConnectError> {
    let bad = |reason: String| ConnectError::BadOption {
        name: OPTION_PASSWORD_FILE.to_string(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot read {path}: {e}")))?
        .len();
    if size > PASSWORD_FILE_BYTES_MAX {
        return Err(bad(format!(
            "{path} is larger than {PASSWORD_FILE_BYTES_MAX} bytes"
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {path}: {e}")))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(bad(format!("{path} holds no password")));
    }
    Ok(password)
}

fn config_error(e: KafkaError) -> ConnectError {
    match e {
        KafkaError::ClientConfig(_, reason, name, _) => ConnectError::BadOption { name, reason },
        other => ConnectError::Transport {
            transport: TRANSPORT,
            message: other.to_string(),
        },
    }
}

impl BrokerTransport {
    async fn connect(config: &BusConfig) -> Result<Self, ConnectError> {
        let mut settings = Settings {
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
            commit_interval: Duration::from_millis(COMMIT_INTERVAL_MS_DEFAULT),
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
        };
        let mut client_base = ClientConfig::new();
        client_base.set("bootstrap.servers", &config.target);
        // The SASL password comes from a file, so it is in no URL, argument list or option
        // dump; it goes to librdkafka as `sasl.password`.
        let password = match config.options.get(OPTION_PASSWORD_FILE) {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        if let Some(password) = &password {
            client_base.set("sasl.password", password);
        }
        for (name, value) in &config.options {
            match name.as_str() {
                OPTION_PASSWORD_FILE => {}
                OPTION_CONNECT_TIMEOUT_MS => {
                    settings.connect_timeout = Duration::from_millis(parse_ms(name, value)?)
                }
                OPTION_COMMIT_INTERVAL_MS => {
                    settings.commit_interval = Duration::from_millis(parse_ms(name, value)?)
                }
                _ => {
                    if name == "message.max.bytes"
                        && let Ok(n) = value.parse()
                    {
                        settings.message_bytes_max = n;
                    }
                    client_base.set(name, value);
                }
            }
        }

        // Durable, ordered, deduplicated publishing unless the user chose otherwise; a weaker
        // `acks` cannot be idempotent, so idempotence then follows the user's choice.
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("acks", "all")
            .set("linger.ms", LINGER_MS_DEFAULT)
            .set(
                "message.timeout.ms",
                config.publish_timeout.as_millis().max(1).to_string(),
            );
        let weak_acks = config
            .options
            .get("acks")
            .is_some_and(|a| a != "all" && a != "-1");
        if !weak_acks {
            producer_config.set("enable.idempotence", "true");
        }
        for (name, value) in &config.options {
            if name != OPTION_CONNECT_TIMEOUT_MS
                && name != OPTION_COMMIT_INTERVAL_MS
                && name != OPTION_PASSWORD_FILE
            {
                producer_config.set(name, value);
            }
        }
        if let Some(password) = &password {
            producer_config.set("sasl.password", password);
        }
        producer_config.set("bootstrap.servers", &config.target);
        let producer: FutureProducer = producer_config.create().map_err(config_error)?;
        let admin: AdminClient<DefaultClientContext> =
            client_base.create().map_err(config_error)?;

        // librdkafka connects lazily and retries forever; one metadata round trip tells a
        // wrong address from a working broker now rather than at the first publish.
        let probe = producer.clone();
        let timeout = settings.connect_timeout;
        let answered = tokio::task::spawn_blocking(move || {
            probe.client().fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| ConnectError::Transport {
            transport: TRANSPORT,
            message: format!("the metadata probe did not finish: {e}"),
        })?;
        if let Err(e) = answered {
            return Err(ConnectError::Transport {
                transport: TRANSPORT,
                message: format!(
                    "no broker at {} answered a metadata request within {} ms ({e}); check \
                     the address and that the broker runs",
                    config.target,
                    timeout.as_millis()
                ),
            });
        }
        Ok(BrokerTransport {
            target: config.target.clone(),
            producer,
            admin,
            client_base,
            settings,
            closed: AtomicBool::new(false),
            ready_topics: Mutex::new(HashSet::new()),
        })
    }

    async fn publish_event(
        &self,
        topic: &str,
        event: Event,
        deadline: SystemTime,
    ) -> Result<Receipt, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if remaining.is_zero() {
            return Err(PublishError::Timeout(
                "the deadline passed before the event was sent".to_string(),
            ));
        }
        self.ensure_topic(topic, remaining.min(TOPIC_READY_TIMEOUT))
            .await
            .map_err(|m| {
                if remaining < TOPIC_READY_TIMEOUT {
                    PublishError::Timeout(m)
                } else {
                    PublishError::Invalid(m)
                }
            })?;
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let wire_headers = event.wire_headers();
        let bytes = event.payload.len()
            + event.key.as_ref().map_or(0, |k| k.len())
            + wire_headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        let mut headers = OwnedHeaders::new_with_capacity(wire_headers.len());
        for (name, value) in &wire_headers {
            headers = headers.insert(Header {
                key: name.as_str(),
                value: Some(value.as_ref()),
            });
        }
        let timestamp_ms = i64::try_from(system_to_unix_ms(event.timestamp)).unwrap_or(i64::MAX);
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(event.payload.as_ref())
            .headers(headers)
            .timestamp(timestamp_ms);
        if let Some(key) = &event.key {
            record = record.key(key.as_ref());
        }
        let sent = tokio::time::timeout(
            remaining,
            self.producer.send(record, Timeout::After(remaining)),
        )
        .await;
        match sent {
            Err(_) => Err(PublishError::Timeout(format!(
                "the broker did not acknowledge the event within {} ms",
                remaining.as_millis()
            ))),
            Ok(Ok(delivery)) => Ok(Receipt {
                id: event.id,
                completed: Completed::Stored {
                    partition: delivery.partition,
                    offset: delivery.offset,
                },
            }),
            Ok(Err((e, _))) => {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                ) {
                    // The topic was deleted since this bus saw it: the next publish creates it
                    // again.
                    self.ready_topics.lock().remove(topic);
                }
                Err(publish_error(
                    topic,
                    e,
                    bytes,
                    self.settings.message_bytes_max,
                ))
            }
        }
    }

    /// Creates the topic with the broker's defaults unless it exists, and waits (at most
    /// `timeout`) until metadata shows it: a consumer subscribing next is assigned its partitions
    /// at once, and publishing works on clusters that do not create topics on first use.
    async fn ensure_topic(&self, topic: &str, timeout: Duration) -> Result<(), String> {
        if self.ready_topics.lock().contains(topic) {
            return Ok(());
        }
        let new = NewTopic::new(topic, -1, TopicReplication::Fixed(-1));
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        match self.admin.create_topics([&new], &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        // A cluster may forbid creating topics to this client; the topic may
                        // still exist or be auto-created, which the metadata wait tells.
                        Err((_, code)) => {
                            tracing::debug!(topic, error = %code, "could not create the topic")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(topic, error = %e, "could not create the topic"),
        }
        let producer = self.producer.clone();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || wait_for_topic(&producer, &name, timeout))
            .await
            .map_err(|e| format!("the topic check did not finish: {e}"))??;
        let mut ready = self.ready_topics.lock();
        if ready.len() >= READY_TOPICS_MAX {
            // Forgetting costs only a round trip at the next publish to each topic.
            ready.clear();
        }
        ready.insert(topic.to_string());
        Ok(())
    }
}

/// Polls metadata until `topic` has partitions, within `timeout`.
fn wait_for_topic(producer: &FutureProducer, topic: &str, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < timeout {
        let left = timeout.saturating_sub(started.elapsed());
        match producer.client().fetch_metadata(Some(topic), left) {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => return Ok(()),
                Some(t) => {
                    last = t.error().map_or("no partitions yet".to_string(), |e| {
                        RDKafkaErrorCode::from(e).to_string()
                    })
                }
                None => last = "not in the metadata".to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        // Metadata reaches every broker of a cluster a little after the topic is created.
        std::thread::sleep(TOPIC_POLL_INTERVAL.min(timeout.saturating_sub(started.elapsed())));
    }
    Err(format!(
        "topic {topic:?} does not exist and could not be created within {} ms: {last}",
        timeout.as_millis()
    ))
}

fn transport_error(message: String) -> SubscribeError {
    SubscribeError::Transport {
        transport: TRANSPORT,
        message,
    }
}

/// What a failed delivery report means for the publisher.
fn publish_error(topic: &str, e: KafkaError, bytes: usize, limit: usize) -> PublishError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::TimedOutQueue
            | RDKafkaErrorCode::QueueFull,
        ) => PublishError::Timeout(e.to_string()),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge) => {
            PublishError::TooLarge { bytes, limit }
        }
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed,
        ) => PublishError::Invalid(format!("cannot publish to topic {topic:?}: {e}")),
        Some(RDKafkaErrorCode::InvalidRecord) => PublishError::Invalid(e.to_string()),
        _ => PublishError::Transport {
            transport: TRANSPORT,
            message: e.to_string(),
        },
    }
}

impl Transport for BrokerTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Broker
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        Box::pin(self.publish_event(topic, event, deadline))
    }

    fn subscribe(
        &self,
        spec: SubscribeSpec,
        sink: mpsc::Sender<Delivery>,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(transport_error("the bus was closed".to_string()));
            }
            self.ensure_topic(&spec.topic, TOPIC_READY_TIMEOUT)
                .await
                .map_err(transport_error)?;
            let running =
                consumer::start(&self.client_base, spec, sink, self.settings.commit_interval)
                    .await?;
            Ok(Box::new(running) as Box<dyn Running>)
        })
    }

    fn dead_letter_default(&self, topic: &str) -> Option<String> {
        Some(format!("{topic}.dlq"))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            let producer = self.producer.clone();
            let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(target_servers = %self.target, error = %e, "events still unsent when the bus closed");
            }
        })
    }
}
