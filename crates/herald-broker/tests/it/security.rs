//! Listeners with TLS, SASL and ACLs, checked with librdkafka (SASL_SSL with SCRAM-SHA-512,
//! mTLS, the failures a misconfigured client meets) and with raw requests for the exact error
//! codes of each API family. Certificates are made here with rcgen, in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herald_broker::auth::{
    AclBinding, AclStore, ClientAuth, Mechanism, Operation, PatternType, Permission, ResourceType,
    UserStore,
};
use herald_broker::{Broker, BrokerConfig};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{RawClient, start_with, test_config};

/// Not before and not after, as (year, month, day).
type Validity = ((i32, u8, u8), (i32, u8, u8));

/// A certificate authority and the files a test broker and its clients use.
pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA, its certificate in `ca.pem`, and a server certificate for 127.0.0.1 and
    /// localhost in `server.pem`/`server.key`.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, pem) = ca("Herald test CA");
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        let pki = Pki { dir, issuer };
        pki.leaf("server", "localhost", None);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.pem` and `<name>.key`, signed by this CA; `validity` overrides the
    /// default (valid now) with (not before, not after).
    pub fn leaf(&self, name: &str, common_name: &str, validity: Option<Validity>) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Herald tests");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), certificate.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// Points a broker config at the server certificate and the CA (for client certificates).
    pub fn configure(&self, config: &mut BrokerConfig, client_auth: ClientAuth) {
        config.ssl_certificate_path = Some(self.path("server.pem"));
        config.ssl_key_path = Some(self.path("server.key"));
        config.ssl_client_ca_path = Some(self.path("ca.pem"));
        config.ssl_client_auth = client_auth;
    }
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), certificate.pem())
}

/// A broker with the given listeners over a fresh data directory where `users` exist with
/// password `<name>-pw`, `User:admin` is a super user, and ACLs are enforced.
async fn secure_broker(
    pki: &Pki,
    listeners: &str,
    client_auth: ClientAuth,
    users: &[&str],
    data: &Path,
) -> Broker {
    let store = UserStore::open(data).unwrap();
    for user in users {
        store
            .set_password(user, &format!("{user}-pw"), &Mechanism::ALL, 4096)
            .unwrap();
    }
    let mut config = BrokerConfig {
        data_dir: data.to_path_buf(),
        listeners: Some(listeners.to_string()),
        super_users: "User:admin".to_string(),
        // Failures are answered at once in tests; the delay is checked in the unit tests.
        sasl_failure_delay_ms_max: 0,
        ..test_config()
    };
    pki.configure(&mut config, client_auth);
    start_with(config).await
}

fn sasl_ssl_client(pki: &Pki, bootstrap: &str, user: &str, password: &str) -> ClientConfig {
    let mut config = crate::support::client_config(bootstrap);
    config
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("ssl.ca.location", pki.path("ca.pem").to_str().unwrap())
        .set("socket.timeout.ms", "5000")
        .set("message.timeout.ms", "10000");
    config
}

fn mtls_client(pki: &Pki, bootstrap: &str, name: &str) -> ClientConfig {
    let mut config = crate::support::client_config(bootstrap);
    config
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", pki.path("ca.pem").to_str().unwrap())
        .set(
            "ssl.certificate.location",
            pki.path(&format!("{name}.pem")).to_str().unwrap(),
        )
        .set(
            "ssl.key.location",
            pki.path(&format!("{name}.key")).to_str().unwrap(),
        )
        .set("socket.timeout.ms", "5000")
        .set("message.timeout.ms", "10000");
    config
}

fn grant(
    data: &Path,
    principal: &str,
    resource_type: ResourceType,
    name: &str,
    pattern: PatternType,
    operation: Operation,
    permission: Permission,
) {
    let results = AclStore::open(data)
        .unwrap()
        .add(&[AclBinding {
            resource_type,
            resource_name: name.to_string(),
            pattern_type: pattern,
            principal: principal.to_string(),
            host: "*".to_string(),
            operation,
            permission,
        }])
        .unwrap();
    results.into_iter().for_each(|result| result.unwrap());
}

/// Produces `count` messages and reads them back from the start, through `config`.
async fn round_trip(config: &ClientConfig, topic: &str, count: usize) {
    let seen = round_trip_padded(config, topic, count, 0).await;
    assert_eq!(seen[0], "message 0");
}

/// Produces `count` messages, each followed by `padding` spaces, and returns the first
/// `count` read back from the start of the topic.
async fn round_trip_padded(
    config: &ClientConfig,
    topic: &str,
    count: usize,
    padding: usize,
) -> Vec<String> {
    let producer: FutureProducer = config.create().unwrap();
    let pad = " ".repeat(padding);
    for i in 0..count {
        producer
            .send(
                FutureRecord::to(topic)
                    .key("k")
                    .payload(&format!("message {i}{pad}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
    let mut consumer_config = config.clone();
    consumer_config
        .set("group.id", "readers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = consumer_config.create().unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while seen.len() < count && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(seen.len(), count, "read back {} of {count}", seen.len());
    seen
}

/// Fetches metadata through `config`; the error librdkafka gives if it cannot.
fn metadata(config: &ClientConfig) -> Result<rdkafka::metadata::Metadata, KafkaError> {
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.fetch_metadata(None, Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_sha512_and_mtls_clients_produce_and_consume() {
    let pki = Pki::new();
    pki.leaf("alice", "alice", None);
    let data = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        data_dir: data.path().to_path_buf(),
        listeners: Some("SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0".to_string()),
        ssl_principal_mapping_rules: "RULE:^CN=([^,]+),.*$/$1/,DEFAULT".to_string(),
        ..test_config()
    };
    pki.configure(&mut config, ClientAuth::Requested);
    UserStore::open(data.path())
        .unwrap()
        .set_password("alice", "alice-pw", &[Mechanism::Sha512], 4096)
        .unwrap();
    for operation in [Operation::Write, Operation::Read, Operation::Create] {
        for topic in ["orders", "bulk"] {
            grant(
                data.path(),
                "User:alice",
                ResourceType::Topic,
                topic,
                PatternType::Literal,
                operation,
                Permission::Allow,
            );
        }
    }
    grant(
        data.path(),
        "User:alice",
        ResourceType::Group,
        "*",
        PatternType::Literal,
        Operation::Read,
        Permission::Allow,
    );
    grant(
        data.path(),
        "User:alice",
        ResourceType::Cluster,
        "kafka-cluster",
        PatternType::Literal,
        Operation::IdempotentWrite,
        Permission::Allow,
    );
    let broker = start_with(config).await;
    assert!(broker.acls_enforced());
    let sasl_ssl = broker.listener_addr("SASL_SSL").unwrap().to_string();
    let ssl = broker.listener_addr("SSL").unwrap().to_string();

    round_trip(
        &sasl_ssl_client(&pki, &sasl_ssl, "alice", "alice-pw"),
        "orders",
        5,
    )
    .await;
    // The same principal from its certificate's subject, mapped to its common name.
    round_trip(&mtls_client(&pki, &ssl, "alice"), "orders", 10).await;
    // Fetches of many kilobytes, sent from the segment files: TLS gets them copied.
    let pad = " ".repeat(4096);
    let seen = round_trip_padded(&mtls_client(&pki, &ssl, "alice"), "bulk", 200, 4096).await;
    let expected: Vec<String> = (0..200).map(|i| format!("message {i}{pad}")).collect();
    assert!(seen == expected, "the large messages came back changed");

    // Metadata advertises the listener each client came in on.
    let seen = metadata(&mtls_client(&pki, &ssl, "alice")).unwrap();
    assert_eq!(
        seen.brokers()[0].port(),
        i32::from(broker.listener_addr("SSL").unwrap().port())
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_clients_fail_clearly_and_the_broker_serves_others() {
    let pki = Pki::new();
    pki.leaf("alice", "alice", None);
    pki.leaf("expired", "expired", Some(((2000, 1, 1), (2001, 1, 1))));
    let other = Pki::new();
    other.leaf("stranger", "alice", None);
    let data = tempfile::tempdir().unwrap();
    let broker = secure_broker(
        &pki,
        "SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        ClientAuth::Required,
        &["alice"],
        data.path(),
    )
    .await;
    let sasl_ssl = broker.listener_addr("SASL_SSL").unwrap().to_string();
    let ssl = broker.listener_addr("SSL").unwrap().to_string();

    // A wrong password.
    let wrong = metadata(&sasl_ssl_client(&pki, &sasl_ssl, "alice", "guess"));
    assert!(wrong.is_err(), "{wrong:?}");
    // A CA the client does not trust: the server's certificate is refused.
    let mut untrusting = sasl_ssl_client(&pki, &sasl_ssl, "alice", "alice-pw");
    untrusting.set("ssl.ca.location", other.path("ca.pem").to_str().unwrap());
    assert!(metadata(&untrusting).is_err());
    // A client certificate from another CA, and an expired one: refused at the handshake.
    assert!(metadata(&mtls_client(&other, &ssl, "stranger")).is_err());
    assert!(metadata(&mtls_client(&pki, &ssl, "expired")).is_err());
    // A plaintext client on the TLS port.
    let plaintext = metadata(&crate::support::client_config(&ssl));
    assert!(plaintext.is_err());
    // mTLS is required on this broker: no certificate, no connection.
    let mut no_certificate = crate::support::client_config(&ssl);
    no_certificate
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", pki.path("ca.pem").to_str().unwrap())
        .set("socket.timeout.ms", "5000");
    assert!(metadata(&no_certificate).is_err());

    // The broker is still up and serves good clients on every listener.
    metadata(&sasl_ssl_client(&pki, &sasl_ssl, "alice", "alice-pw")).unwrap();
    metadata(&mtls_client(&pki, &ssl, "alice")).unwrap();
    let stats = broker.stats();
    assert!(stats.authentication_failures_total >= 4, "{stats:?}");

    // The exact answer to a wrong password: SASL_AUTHENTICATION_FAILED, then the close.
    let addr = broker.listener_addr("SASL_PLAINTEXT").unwrap();
    let mut raw = RawClient::connect(addr).await;
    let failed = sasl_plain(&mut raw, "alice", "guess").await;
    assert_eq!(
        failed.error_code,
        ResponseError::SaslAuthenticationFailed.code()
    );
    assert!(
        failed
            .error_message
            .unwrap()
            .contains("Invalid username or password")
    );
    assert!(raw.is_closed().await);
    // SaslHandshake v0: the tokens follow as bare frames, then Kafka framing resumes.
    let mut raw = RawClient::connect(addr).await;
    let handshake: SaslHandshakeResponse = raw
        .request(
            ApiKey::SaslHandshake,
            0,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    raw.send_frame(b"\0alice\0alice-pw").await;
    assert_eq!(
        raw.read_frame().await.unwrap().len(),
        0,
        "PLAIN's empty answer"
    );
    let seen: MetadataResponse = raw
        .request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert_eq!(seen.brokers.len(), 1);
    // Nothing but ApiVersions and the SASL requests before authentication.
    let mut raw = RawClient::connect(addr).await;
    let _ = raw
        .send(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(raw.is_closed().await);
    broker.shutdown().await.unwrap();
}

/// Authenticates a raw connection with PLAIN; returns the SaslAuthenticate response.
async fn sasl_plain(raw: &mut RawClient, user: &str, password: &str) -> SaslAuthenticateResponse {
    let handshake: SaslHandshakeResponse = raw
        .request(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(handshake.error_code, 0);
    raw.request(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(format!("\0{user}\0{password}").into_bytes().into()),
    )
    .await
}

async fn raw_as(addr: std::net::SocketAddr, user: &str) -> RawClient {
    let mut raw = RawClient::connect(addr).await;
    let authenticated = sasl_plain(&mut raw, user, &format!("{user}-pw")).await;
    assert_eq!(authenticated.error_code, 0, "{authenticated:?}");
    raw
}

/// DescribeAcls for every binding (the struct's defaults are empty strings, not null).
fn any_acl() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

fn topic_name(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_each_api_family_allows_and_refuses_with_kafkas_codes() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let broker = secure_broker(
        &pki,
        "SASL_PLAINTEXT://127.0.0.1:0",
        ClientAuth::None,
        &["admin", "alice", "bob"],
        data.path(),
    )
    .await;
    let addr = broker.kafka_addr();
    let topic_denied = ResponseError::TopicAuthorizationFailed.code();
    let group_denied = ResponseError::GroupAuthorizationFailed.code();
    let cluster_denied = ResponseError::ClusterAuthorizationFailed.code();

    // ACLs through the wire, by the super user: alice may use every `orders.` topic and the
    // group `billing`, but not `orders.secret`.
    let mut admin = raw_as(addr, "admin").await;
    let creation = |name: &str,
                    pattern: PatternType,
                    resource: ResourceType,
                    operation: Operation,
                    permission: Permission| {
        AclCreation::default()
            .with_resource_type(resource.code())
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_resource_pattern_type(pattern.code())
            .with_principal(StrBytes::from_static_str("User:alice"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(operation.code())
            .with_permission_type(permission.code())
    };
    let created: CreateAclsResponse = admin
        .request(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(vec![
                creation(
                    "orders.",
                    PatternType::Prefixed,
                    ResourceType::Topic,
                    Operation::All,
                    Permission::Allow,
                ),
                creation(
                    "orders.secret",
                    PatternType::Literal,
                    ResourceType::Topic,
                    Operation::All,
                    Permission::Deny,
                ),
                creation(
                    "billing",
                    PatternType::Literal,
                    ResourceType::Group,
                    Operation::Read,
                    Permission::Allow,
                ),
            ]),
        )
        .await;
    assert!(
        created.results.iter().all(|result| result.error_code == 0),
        "{created:?}"
    );
    for topic in ["orders.eu", "orders.secret", "payments"] {
        let request = CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        let created: CreateTopicsResponse = admin.request(ApiKey::CreateTopics, 7, &request).await;
        assert_eq!(created.topics[0].error_code, 0);
    }
    let described: DescribeAclsResponse = admin.request(ApiKey::DescribeAcls, 3, &any_acl()).await;
    assert_eq!(described.error_code, 0);
    assert_eq!(described.resources.len(), 3);

    let mut alice = raw_as(addr, "alice").await;
    let mut bob = raw_as(addr, "bob").await;

    // Metadata: each sees only what it may describe.
    let all: MetadataResponse = alice
        .request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    let names: Vec<&str> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        names,
        ["orders.eu"],
        "deny overrides the prefixed allow for orders.secret"
    );
    let all: MetadataResponse = bob
        .request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert!(all.topics.is_empty());
    let named: MetadataResponse = bob
        .request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(topic_name("orders.eu"))),
            ])),
        )
        .await;
    assert_eq!(named.topics[0].error_code, topic_denied);
    // Nor by its id.
    let id = {
        let all: MetadataResponse = alice
            .request(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default().with_topics(None),
            )
            .await;
        all.topics[0].topic_id
    };
    let by_id: MetadataResponse = bob
        .request(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(id),
            ])),
        )
        .await;
    assert_eq!(by_id.topics[0].error_code, topic_denied);
    assert!(by_id.topics[0].name.is_none() && by_id.topics[0].partitions.is_empty());

    // Produce.
    let batch = bytes::Bytes::from(herald_storage::build_batch(1_000, &[], &[b"v"], None));
    let produce = |topic: &'static str| {
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.clone())),
                    ]),
            ])
    };
    let code = |response: &ProduceResponse| response.responses[0].partition_responses[0].error_code;
    let ok: ProduceResponse = alice
        .request(ApiKey::Produce, 9, &produce("orders.eu"))
        .await;
    assert_eq!(code(&ok), 0);
    let denied: ProduceResponse = alice
        .request(ApiKey::Produce, 9, &produce("orders.secret"))
        .await;
    assert_eq!(code(&denied), topic_denied);
    let denied: ProduceResponse = bob.request(ApiKey::Produce, 9, &produce("orders.eu")).await;
    assert_eq!(code(&denied), topic_denied);

    // Fetch.
    let fetch = |topic: &'static str| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                kafka_protocol::messages::fetch_request::FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![
                        kafka_protocol::messages::fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let ok: FetchResponse = alice.request(ApiKey::Fetch, 12, &fetch("orders.eu")).await;
    assert_eq!(ok.responses[0].partitions[0].error_code, 0);
    assert!(ok.responses[0].partitions[0].records.is_some());
    let denied: FetchResponse = bob.request(ApiKey::Fetch, 12, &fetch("orders.eu")).await;
    assert_eq!(denied.responses[0].partitions[0].error_code, topic_denied);
    let leaked = denied.responses[0].partitions[0].records.as_ref();
    assert!(
        leaked.is_none_or(|records| records.is_empty()),
        "{leaked:?}"
    );

    // Topic administration.
    let delete = |topic: &'static str| {
        DeleteTopicsRequest::default().with_topic_names(vec![topic_name(topic)])
    };
    let denied: DeleteTopicsResponse = bob
        .request(ApiKey::DeleteTopics, 5, &delete("payments"))
        .await;
    assert_eq!(denied.responses[0].error_code, topic_denied);
    let create = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(topic_name("bobs"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let denied: CreateTopicsResponse = bob.request(ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(denied.topics[0].error_code, topic_denied);
    let configs = |topic: &'static str| {
        DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(topic)),
        ])
    };
    let ok: DescribeConfigsResponse = alice
        .request(ApiKey::DescribeConfigs, 4, &configs("orders.eu"))
        .await;
    assert_eq!(ok.results[0].error_code, 0);
    let denied: DescribeConfigsResponse = bob
        .request(ApiKey::DescribeConfigs, 4, &configs("orders.eu"))
        .await;
    assert_eq!(denied.results[0].error_code, topic_denied);

    // Groups.
    let join = |group: &'static str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range")),
            ])
    };
    let ok: JoinGroupResponse = alice.request(ApiKey::JoinGroup, 5, &join("billing")).await;
    assert_ne!(ok.error_code, group_denied);
    let denied: JoinGroupResponse = bob.request(ApiKey::JoinGroup, 5, &join("billing")).await;
    assert_eq!(denied.error_code, group_denied);
    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![StrBytes::from_static_str("billing")]);
    let denied: FindCoordinatorResponse = bob.request(ApiKey::FindCoordinator, 4, &find).await;
    assert_eq!(denied.coordinators[0].error_code, group_denied);
    let ok: FindCoordinatorResponse = alice.request(ApiKey::FindCoordinator, 4, &find).await;
    assert_eq!(ok.coordinators[0].error_code, 0);

    // Cluster: ACL administration, idempotent producer ids, log dirs.
    let denied: DescribeAclsResponse = alice.request(ApiKey::DescribeAcls, 3, &any_acl()).await;
    assert_eq!(denied.error_code, cluster_denied);
    let denied: CreateAclsResponse = bob
        .request(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(vec![creation(
                "x",
                PatternType::Literal,
                ResourceType::Topic,
                Operation::All,
                Permission::Allow,
            )]),
        )
        .await;
    assert_eq!(denied.results[0].error_code, cluster_denied);
    let ids: InitProducerIdResponse = bob
        .request(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(ids.error_code, cluster_denied);
    let ids: InitProducerIdResponse = alice
        .request(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(ids.error_code, 0, "WRITE on some topic is enough (KIP-679)");
    let dirs: DescribeLogDirsResponse = alice
        .request(
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default().with_topics(None),
        )
        .await;
    assert_eq!(dirs.error_code, cluster_denied);

    // A DeleteAcls takes effect at once: bob's connection made before it is refused after.
    let deleted: DeleteAclsResponse = admin
        .request(
            ApiKey::DeleteAcls,
            3,
            &DeleteAclsRequest::default().with_filters(vec![
                kafka_protocol::messages::delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_resource_name_filter(None)
                    .with_host_filter(None)
                    .with_pattern_type_filter(1)
                    .with_principal_filter(Some(StrBytes::from_static_str("User:alice")))
                    .with_operation(Operation::All.code())
                    .with_permission_type(Permission::Deny.code()),
            ]),
        )
        .await;
    assert_eq!(deleted.filter_results[0].matching_acls.len(), 1);
    let now_ok: ProduceResponse = alice
        .request(ApiKey::Produce, 9, &produce("orders.secret"))
        .await;
    assert_eq!(code(&now_ok), 0, "the deny is gone");
    broker.shutdown().await.unwrap();
    drop(broker);

    // ACLs survive a restart.
    let broker = secure_broker(
        &pki,
        "SASL_PLAINTEXT://127.0.0.1:0",
        ClientAuth::None,
        &[],
        data.path(),
    )
    .await;
    let mut alice = raw_as(broker.kafka_addr(), "alice").await;
    let ok: ProduceResponse = alice
        .request(ApiKey::Produce, 9, &produce("orders.eu"))
        .await;
    assert_eq!(code(&ok), 0);
    let mut bob = raw_as(broker.kafka_addr(), "bob").await;
    let denied: ProduceResponse = bob.request(ApiKey::Produce, 9, &produce("orders.eu")).await;
    assert_eq!(code(&denied), topic_denied);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_sees_topic_and_group_authorization_errors() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let broker = secure_broker(
        &pki,
        "SASL_SSL://127.0.0.1:0",
        ClientAuth::None,
        &["admin", "bob"],
        data.path(),
    )
    .await;
    let bootstrap = broker.kafka_addr().to_string();
    let admin = sasl_ssl_client(&pki, &bootstrap, "admin", "admin-pw");
    round_trip(&admin, "ledger", 1).await;
    let bob = sasl_ssl_client(&pki, &bootstrap, "bob", "bob-pw");
    let producer: FutureProducer = bob.create().unwrap();
    let refused = producer
        .send(
            FutureRecord::to("ledger").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error);
    assert!(
        matches!(
            refused,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::TopicAuthorizationFailed
            ))
        ),
        "{refused:?}"
    );
    // Bob may read the topic but not use a group: the commit is refused.
    grant(
        data.path(),
        "User:bob",
        ResourceType::Topic,
        "ledger",
        PatternType::Literal,
        Operation::Read,
        Permission::Allow,
    );
    // `herald acl` edits reach a running broker within a housekeeping tick.
    crate::support::eventually("the ACL file to be re-read", || {
        metadata(&bob)
            .ok()
            .filter(|seen| seen.topics().iter().any(|topic| topic.name() == "ledger"))
    })
    .await;
    let mut consumer_config = bob.clone();
    consumer_config
        .set("group.id", "bobs-group")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = consumer_config.create().unwrap();
    consumer.subscribe(&["ledger"]).unwrap();
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no group error reached the consumer"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(error)) => break error,
            Some(Ok(message)) => panic!("read {message:?} without group access"),
            None => {}
        }
    };
    assert_eq!(
        refused.rdkafka_error_code(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "{refused:?}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_are_managed_over_the_wire_and_tls_reloads() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let broker = secure_broker(
        &pki,
        "SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        ClientAuth::None,
        &["admin"],
        data.path(),
    )
    .await;
    let plain_addr = broker.listener_addr("SASL_PLAINTEXT").unwrap();
    let mut admin = raw_as(plain_addr, "admin").await;
    // What Kafka's admin client sends for `alter_user_scram_credentials`: a salted password.
    let salt = b"0123456789abcdef".to_vec();
    let salted = Mechanism::Sha512.salted_password(b"carol-pw", &salt, 8192);
    let altered: AlterUserScramCredentialsResponse = admin
        .request(
            ApiKey::AlterUserScramCredentials,
            0,
            &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("carol"))
                    .with_mechanism(Mechanism::Sha512.kafka_type())
                    .with_iterations(8192)
                    .with_salt(salt.into())
                    .with_salted_password(salted.into()),
            ]),
        )
        .await;
    assert_eq!(altered.results[0].error_code, 0, "{altered:?}");
    // Every user, asked with a null list and (as librdkafka asks) with an empty one.
    for users in [None, Some(Vec::new())] {
        let described: DescribeUserScramCredentialsResponse = admin
            .request(
                ApiKey::DescribeUserScramCredentials,
                0,
                &DescribeUserScramCredentialsRequest::default().with_users(users),
            )
            .await;
        let carol = described
            .results
            .iter()
            .find(|r| r.user.as_str() == "carol")
            .unwrap();
        assert_eq!(carol.credential_infos[0].iterations, 8192);
    }
    let text = std::fs::read_to_string(data.path().join("users.json")).unwrap();
    assert!(!text.contains("carol-pw"));

    // Carol can now log in with SCRAM-SHA-512 over TLS.
    let bootstrap = broker.listener_addr("SASL_SSL").unwrap().to_string();
    metadata(&sasl_ssl_client(&pki, &bootstrap, "carol", "carol-pw")).unwrap();

    // A connection open before the reload keeps working after it.
    let mut open = TlsRaw::connect(
        broker.listener_addr("SASL_SSL").unwrap(),
        &pki.path("ca.pem"),
    )
    .await;
    open.api_versions().await;

    // A new certificate from another CA: new connections get it after a reload.
    let next = Pki::new();
    std::fs::copy(next.path("server.pem"), pki.path("server.pem")).unwrap();
    std::fs::copy(next.path("server.key"), pki.path("server.key")).unwrap();
    broker.reload_tls().unwrap();
    assert!(metadata(&sasl_ssl_client(&pki, &bootstrap, "carol", "carol-pw")).is_err());
    let mut trusting_next = sasl_ssl_client(&pki, &bootstrap, "carol", "carol-pw");
    trusting_next.set("ssl.ca.location", next.path("ca.pem").to_str().unwrap());
    metadata(&trusting_next).unwrap();
    open.api_versions().await;
    // A broken file leaves the working configuration in place.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    assert!(broker.reload_tls().is_err());
    metadata(&trusting_next).unwrap();
    broker.shutdown().await.unwrap();
}

#[test]
fn the_tls_handshake_never_panics_on_arbitrary_client_bytes() {
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config =
        herald_broker::auth::fuzz_config(certificate.der().to_vec(), key.serialize_der()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            |data| {
                herald_broker::auth::fuzz_handshake(&config, &data);
                // A TLS record header in front, so the handshake parser is reached.
                let mut record = vec![0x16, 0x03, 0x01];
                record.extend_from_slice(&(data.len() as u16).to_be_bytes());
                record.extend_from_slice(&data);
                herald_broker::auth::fuzz_handshake(&config, &record);
                Ok(())
            },
        )
        .unwrap();
}

/// A GET over TLS trusting `ca`, with an optional `Authorization` header; the status code.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &Path,
    path: &str,
    authorization: Option<&str>,
) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let header = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_side_serves_tls_and_asks_for_a_token_or_a_user() {
    use base64::Engine as _;
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let broker = Arc::new(
        secure_broker(
            &pki,
            "SASL_PLAINTEXT://127.0.0.1:0",
            ClientAuth::None,
            &["alice"],
            data.path(),
        )
        .await,
    );
    let tls = herald_broker::auth::TlsConfig::load(herald_broker::auth::TlsPaths {
        certificate: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
        client_auth: ClientAuth::None,
    })
    .unwrap();
    let listener = herald_broker::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let access = herald_broker::http::HttpAccess {
        admin_token: Some("t0ken".to_string()),
        basic_auth_users: true,
        metrics_protected: true,
    };
    let server = tokio::spawn(herald_broker::http::serve_with(
        listener,
        broker.clone(),
        access,
        Some(Arc::new(tls)),
        std::future::pending(),
    ));
    let ca = pki.path("ca.pem");
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    assert_eq!(https_get(addr, &ca, "/health", None).await, 200);
    assert_eq!(https_get(addr, &ca, "/metrics", None).await, 401);
    assert_eq!(
        https_get(addr, &ca, "/metrics", Some("Bearer wrong")).await,
        401
    );
    assert_eq!(
        https_get(addr, &ca, "/metrics", Some("Bearer t0ken")).await,
        200
    );
    assert_eq!(
        https_get(addr, &ca, "/metrics", Some(&basic("alice:alice-pw"))).await,
        200
    );
    assert_eq!(
        https_get(addr, &ca, "/metrics", Some(&basic("alice:nope"))).await,
        401
    );
    // A plaintext request on the TLS port gets no answer, and the server goes on.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET /health HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    assert_eq!(https_get(addr, &ca, "/health", None).await, 200);
    server.abort();
    broker.shutdown().await.unwrap();
}

/// A raw Kafka connection over TLS, for what must hold of one connection across a reload.
struct TlsRaw {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    correlation_id: i32,
}

impl TlsRaw {
    async fn connect(addr: std::net::SocketAddr, ca: &Path) -> TlsRaw {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        TlsRaw {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends ApiVersions v3 and checks the answer.
    async fn api_versions(&mut self) {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::protocol::{Decodable, Encodable};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(3)
            .with_correlation_id(self.correlation_id);
        let mut body = BytesMut::new();
        header
            .encode(&mut body, ApiKey::ApiVersions.request_header_version(3))
            .unwrap();
        ApiVersionsRequest::default().encode(&mut body, 3).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(i32::try_from(body.len()).unwrap());
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.unwrap();
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await.unwrap();
        let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
        self.stream.read_exact(&mut response).await.unwrap();
        let mut response = bytes::Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, 0).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        let versions = ApiVersionsResponse::decode(&mut response, 3).unwrap();
        assert_eq!(versions.error_code, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_ids_need_write_to_take_part_and_describe_to_be_seen() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    grant(
        data.path(),
        "User:alice",
        ResourceType::TransactionalId,
        "app-",
        PatternType::Prefixed,
        Operation::Write,
        Permission::Allow,
    );
    let broker = secure_broker(
        &pki,
        "SASL_PLAINTEXT://127.0.0.1:0",
        ClientAuth::None,
        &["admin", "alice", "bob"],
        data.path(),
    )
    .await;
    let addr = broker.kafka_addr();
    let denied = ResponseError::TransactionalIdAuthorizationFailed.code();
    let id = |name: &'static str| TransactionalId(StrBytes::from_static_str(name));
    let init = |name: &'static str| {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(id(name)))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let mut alice = raw_as(addr, "alice").await;
    let mine: InitProducerIdResponse = alice
        .request(ApiKey::InitProducerId, 4, &init("app-1"))
        .await;
    assert_eq!(mine.error_code, 0);
    let other: InitProducerIdResponse = alice
        .request(ApiKey::InitProducerId, 4, &init("other"))
        .await;
    assert_eq!(other.error_code, denied);

    // bob may neither end alice's transaction nor add partitions to it.
    let mut bob = raw_as(addr, "bob").await;
    let end: EndTxnResponse = bob
        .request(
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(id("app-1"))
                .with_producer_id(mine.producer_id)
                .with_producer_epoch(mine.producer_epoch)
                .with_committed(true),
        )
        .await;
    assert_eq!(end.error_code, denied);
    let add: AddPartitionsToTxnResponse = bob
        .request(
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id("app-1"))
                .with_v3_and_below_producer_id(mine.producer_id)
                .with_v3_and_below_producer_epoch(mine.producer_epoch)
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic_name("orders"))
                        .with_partitions(vec![0, 1]),
                ]),
        )
        .await;
    let codes: Vec<i16> = add.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(codes, vec![denied, denied]);

    // WRITE implies DESCRIBE: alice sees her id; bob is refused it and lists nothing.
    let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![id("app-1")]);
    let seen: DescribeTransactionsResponse = alice
        .request(ApiKey::DescribeTransactions, 0, &describe)
        .await;
    assert_eq!(seen.transaction_states[0].error_code, 0);
    assert_eq!(
        seen.transaction_states[0].transaction_state.as_str(),
        "Empty"
    );
    let hidden: DescribeTransactionsResponse = bob
        .request(ApiKey::DescribeTransactions, 0, &describe)
        .await;
    assert_eq!(hidden.transaction_states[0].error_code, denied);
    let listed: ListTransactionsResponse = alice
        .request(
            ApiKey::ListTransactions,
            0,
            &ListTransactionsRequest::default(),
        )
        .await;
    assert_eq!(listed.transaction_states.len(), 1);
    let listed: ListTransactionsResponse = bob
        .request(
            ApiKey::ListTransactions,
            0,
            &ListTransactionsRequest::default(),
        )
        .await;
    assert!(listed.transaction_states.is_empty());
    broker.shutdown().await.unwrap();
}
