//! Shared pieces of the broker tests: an in-process broker on a free port over a data
//! directory that can outlive it (for restarts), librdkafka clients, and a raw Kafka
//! connection for requests no client library would send.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use herald_broker::{Broker, BrokerConfig};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Starts a broker on a free loopback port over `dir`.
pub async fn start_in(dir: &Path) -> Broker {
    start_with(BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..test_config()
    })
    .await
}

/// A config for tests: loopback, free port; everything else default.
pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    }
}

pub async fn start_with(config: BrokerConfig) -> Broker {
    // Broker logs show with `RUST_LOG=herald_broker=debug cargo test ...`.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    Broker::start(config).await.unwrap()
}

/// A broker with its own temporary data directory.
pub struct TestBroker {
    pub broker: Broker,
    pub bootstrap: String,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_in(dir.path()).await;
    TestBroker {
        bootstrap: broker.kafka_addr().to_string(),
        broker,
        dir,
    }
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    config
}

/// A consumer of `group` reading partition 0 of `topic` from its start with `isolation`
/// (`read_committed` or `read_uncommitted`), assigned rather than subscribed, reporting the
/// partition's end.
pub fn reader_from_start(
    bootstrap: &str,
    topic: &str,
    group: &str,
    isolation: &str,
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = client_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    consumer
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().unwrap()
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// Polls `check` until it returns `Some`, or panics after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bare Kafka connection that sends requests and reads responses frame by frame.
pub struct RawClient {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    pub async fn connect(addr: std::net::SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            correlation_id: 0,
        }
    }

    /// Sends `body` as `api_key` v`version` and returns the response body, header stripped.
    pub async fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let correlation_id = self.send(api_key, version, body).await;
        self.receive(api_key, version, correlation_id).await
    }

    /// Sends `body` as `api_key` v`version` without waiting; returns its correlation id.
    pub async fn send<Req: Encodable>(&mut self, api_key: ApiKey, version: i16, body: &Req) -> i32 {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("raw-test")));
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut frame, version).unwrap();
        self.send_frame(&frame).await;
        self.correlation_id
    }

    /// Reads the next response, which must answer `correlation_id`, and returns its body.
    pub async fn receive<Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Resp {
        let mut response = self.read_frame().await.expect("a response frame");
        let header_version = if api_key == ApiKey::ApiVersions {
            0
        } else {
            api_key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut response, header_version).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        Resp::decode(&mut response, version).unwrap()
    }

    /// Sends raw frame bytes with a correct size prefix.
    pub async fn send_frame(&mut self, frame: &[u8]) {
        let mut sized = BytesMut::with_capacity(frame.len() + 4);
        sized.put_i32(i32::try_from(frame.len()).unwrap());
        sized.put_slice(frame);
        self.stream.write_all(&sized).await.unwrap();
    }

    /// The next response frame, or `None` if the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await.ok()?;
            let mut frame = vec![0u8; usize::try_from(i32::from_be_bytes(size)).ok()?];
            self.stream.read_exact(&mut frame).await.ok()?;
            Some(Bytes::from(frame))
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the broker answers or closes in time")
    }

    /// Whether the broker has closed the connection (reads hit end of stream).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(PATIENCE, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Reads the correlation id of a response frame (header v0 and v1 both start with it).
pub fn correlation_id(frame: &Bytes) -> i32 {
    frame.clone().get_i32()
}
