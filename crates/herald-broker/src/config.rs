//! Settings of an embedded or stand-alone broker, and the defaults every new topic starts from.
//!
//! [`BrokerConfig`] deserializes from TOML or the environment with every field optional
//! (`#[serde(default)]`), so a config file names only what it changes.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One day in milliseconds, for readable defaults.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Everything the broker library needs to run. The process around it (the `herald serve`
/// command) adds its own settings, such as the HTTP address and the log format.
///
/// ```
/// let config = herald_broker::BrokerConfig {
///     data_dir: "/var/lib/herald".into(),
///     kafka_addr: "0.0.0.0:9092".parse().unwrap(),
///     ..Default::default()
/// };
/// assert_eq!(config.num_partitions, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Directory holding topic metadata and one sub-directory per partition (`<topic>-<n>`).
    pub data_dir: PathBuf,
    /// Address the Kafka protocol listener binds to; port 0 picks a free port.
    pub kafka_addr: SocketAddr,
    /// Host name given to clients in Metadata responses; defaults to the bound IP address.
    /// Set it when clients reach the broker under another name (containers, NAT).
    pub advertised_host: Option<String>,
    /// This broker's node id in Metadata responses (Kafka `node.id`).
    pub node_id: i32,
    /// Cluster id reported in Metadata and DescribeCluster responses.
    pub cluster_id: String,
    /// Create a topic when a client asks for its metadata or produces to it
    /// (Kafka `auto.create.topics.enable`).
    pub auto_create_topics_enable: bool,
    /// Partitions of an auto-created topic, and of CreateTopics requests that leave it to
    /// the broker (Kafka `num.partitions`).
    pub num_partitions: u32,
    /// Largest partition count a topic may have; bounds the files and memory one request
    /// can make the broker create.
    pub partitions_per_topic_max: u32,
    /// Largest number of partitions this broker holds over all topics; a CreateTopics or
    /// CreatePartitions that would exceed it is refused with POLICY_VIOLATION naming this
    /// setting. Bounds memory, startup work and what one client can make the broker create.
    pub partitions_max: u32,
    /// Segment files the storage keeps open at once over all partitions (the rest are opened
    /// on demand, least recently used closed first). Unset: the process's open-file limit less
    /// `connections_max` and a reserve of 256 (at least a quarter of the limit).
    pub open_files_max: Option<u64>,
    /// Largest request frame accepted, in bytes (Kafka `socket.request.max.bytes`); a
    /// larger frame closes the connection.
    pub request_bytes_max: u32,
    /// Largest number of client connections open at once; further ones are closed at accept.
    pub connections_max: u32,
    /// Requests one connection may have in flight (decoded, not yet answered); bounds
    /// per-connection memory while keeping librdkafka's pipelining fast.
    pub connection_requests_in_flight_max: u32,
    /// How often every partition's housekeeping runs (interval flush, roll, checkpoint).
    pub maintenance_interval_ms: u64,
    /// How often that housekeeping also applies retention (Kafka
    /// `log.retention.check.interval.ms`, 5 minutes): records whose timestamps put them past
    /// `retention.ms` as they arrive stay readable until then, as on Kafka.
    pub log_retention_check_interval_ms: u64,
    /// The log cleaner's I/O rate over every compacted partition, in bytes per second
    /// (reads and writes; Kafka `log.cleaner.io.max.bytes.per.second`); 0 is unlimited.
    pub cleaner_io_bytes_per_s: u64,
    /// Memory for the key map of one cleaner pass (Kafka `log.cleaner.dedupe.buffer.size`);
    /// a partition with more dirty keys is cleaned in several passes.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// How long the cleaner waits before looking again when no partition is due (Kafka
    /// `log.cleaner.backoff.ms`).
    pub cleaner_backoff_ms: u64,
    /// Longest a Fetch request may wait for data, whatever the client asks.
    pub fetch_wait_ms_max: u64,
    /// Largest response a Fetch builds, in bytes, whatever the client asks
    /// (Kafka `fetch.max.bytes`).
    pub fetch_response_bytes_max: u32,
    /// Send the record batches of Fetch responses from the segment files with `sendfile(2)`:
    /// a plain TCP connection gets them straight from the page cache, never copied through
    /// the broker; a TLS connection gets them read in 64 KiB pieces as they are written.
    /// `false` reads each partition's batches into memory when the fetch is answered.
    pub fetch_sendfile: bool,
    /// Default `retention.ms` of new topics: delete whole segments older than this; -1
    /// keeps data forever (Kafka `log.retention.ms`).
    pub log_retention_ms: i64,
    /// Default `retention.bytes`: delete the oldest segments while a partition is larger than
    /// this; -1 means no size limit (Kafka `log.retention.bytes`).
    pub log_retention_bytes: i64,
    /// Default `segment.bytes`: start a new segment file at this size (Kafka `log.segment.bytes`).
    pub log_segment_bytes: u64,
    /// Default `segment.ms`: start a new segment file at this age (Kafka `log.roll.ms`).
    pub log_segment_ms: u64,
    /// Default `flush.ms`, the flush policy: `0` fsyncs before acknowledging `acks=all`
    /// (concurrent producers share one fsync), a positive value fsyncs at most that many
    /// milliseconds after an append without making `acks=all` wait, `-1` leaves flushing to
    /// the operating system and to shutdown.
    pub log_flush_ms: i64,
    /// Default `max.message.bytes`: the largest record batch a producer may send, in bytes
    /// (Kafka `message.max.bytes`).
    pub message_bytes_max: u32,
    /// Consumer groups: session timeout bounds, group limits and committed-offset retention
    /// (`[groups]` in the config file; see [`crate::group::GroupConfig`]).
    pub groups: crate::group::GroupConfig,
    /// Kafka `listeners`: `PROTOCOL://HOST:PORT` (or `NAME://HOST:PORT` with the name in
    /// `listener_security_protocol_map`), comma-separated; protocols are PLAINTEXT, SSL,
    /// SASL_PLAINTEXT and SASL_SSL. Unset: one PLAINTEXT listener on `kafka_addr`.
    pub listeners: Option<String>,
    /// Kafka `advertised.listeners`: `NAME://HOST:PORT` per listener that clients reach under
    /// another address; Metadata tells each client the address of the listener it came in on.
    pub advertised_listeners: Option<String>,
    /// Kafka `listener.security.protocol.map`: `NAME:PROTOCOL,...` for named listeners.
    pub listener_security_protocol_map: Option<String>,
    /// PEM certificate chain (leaf first) of the TLS listeners.
    pub ssl_certificate_path: Option<PathBuf>,
    /// PEM private key of the TLS listeners.
    pub ssl_key_path: Option<PathBuf>,
    /// PEM CA bundle client certificates are checked against (mTLS).
    pub ssl_client_ca_path: Option<PathBuf>,
    /// Kafka `ssl.client.auth`: `none`, `requested` or `required`.
    pub ssl_client_auth: crate::auth::ClientAuth,
    /// Kafka `ssl.principal.mapping.rules`: how a client certificate's subject becomes the
    /// user name, e.g. `RULE:^CN=([^,]+).*$/$1/,DEFAULT`.
    pub ssl_principal_mapping_rules: String,
    /// Kafka `sasl.enabled.mechanisms`: the SASL mechanisms offered, comma-separated
    /// (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_enabled_mechanisms: String,
    /// Kafka `super.users`: principals allowed everything, separated by `;` or `,`
    /// (`User:admin;User:ops`).
    pub super_users: String,
    /// Whether ACLs are checked: `auto` (when any listener authenticates clients), `acls`
    /// (always) or `none`.
    pub authorizer: crate::auth::AuthorizerMode,
    /// Longest delay before a failed authentication is answered; the delay doubles per
    /// failure from the same address up to this.
    pub sasl_failure_delay_ms_max: u64,
    /// Longest time a connection may take to finish its TLS handshake and SASL
    /// authentication before it is closed.
    pub authentication_ms_max: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./herald-data"),
            kafka_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            node_id: 0,
            cluster_id: "herald-cluster".to_string(),
            auto_create_topics_enable: true,
            num_partitions: 1,
            partitions_per_topic_max: 10_000,
            partitions_max: 100_000,
            open_files_max: None,
            request_bytes_max: 100 * 1024 * 1024,
            connections_max: 1024,
            connection_requests_in_flight_max: 64,
            maintenance_interval_ms: 1000,
            log_retention_check_interval_ms: 300_000,
            cleaner_io_bytes_per_s: 256 * 1024 * 1024,
            cleaner_dedupe_buffer_bytes: herald_storage::DEFAULT_DEDUPE_BUFFER_BYTES,
            cleaner_backoff_ms: 1000,
            fetch_wait_ms_max: 30_000,
            fetch_response_bytes_max: 55 * 1024 * 1024,
            fetch_sendfile: true,
            log_retention_ms: (14 * DAY_MS) as i64,
            log_retention_bytes: -1,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_segment_ms: 7 * DAY_MS,
            log_flush_ms: 0,
            message_bytes_max: 1_048_588,
            groups: crate::group::GroupConfig::default(),
            listeners: None,
            advertised_listeners: None,
            listener_security_protocol_map: None,
            ssl_certificate_path: None,
            ssl_key_path: None,
            ssl_client_ca_path: None,
            ssl_client_auth: crate::auth::ClientAuth::None,
            ssl_principal_mapping_rules: "DEFAULT".to_string(),
            sasl_enabled_mechanisms: "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN".to_string(),
            super_users: String::new(),
            authorizer: crate::auth::AuthorizerMode::Auto,
            sasl_failure_delay_ms_max: 5_000,
            authentication_ms_max: 10_000,
        }
    }
}
