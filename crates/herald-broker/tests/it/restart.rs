//! In-process restart: shut a broker down and start another on the same data directory; data,
//! topics, their configs and producer ids all carry over.

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};
use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{self, RawClient, admin, admin_options};

async fn producer_id(addr: std::net::SocketAddr) -> i64 {
    let mut client = RawClient::connect(addr).await;
    let response: InitProducerIdResponse = client
        .request(
            ApiKey::InitProducerId,
            1,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!(response.error_code, 0);
    response.producer_id.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_topics_configs_and_producer_ids_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_in(dir.path()).await;
    let bootstrap = broker.kafka_addr().to_string();
    support::create_topic(&bootstrap, "kept", 2).await;
    let altered = admin(&bootstrap)
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("kept")).set("retention.ms", "-1")],
            &admin_options(),
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok());
    let producer: FutureProducer = support::client_config(&bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..30 {
        producer
            .send(
                FutureRecord::<(), _>::to("kept")
                    .partition(i % 2)
                    .payload(&format!("k{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    drop(producer);
    let first_id = producer_id(broker.kafka_addr()).await;
    broker.shutdown().await.unwrap();
    drop(broker);

    let broker = support::start_in(dir.path()).await;
    let bootstrap = broker.kafka_addr().to_string();
    let stats = broker.stats();
    assert_eq!((stats.topics, stats.partitions), (1, 2));
    let received = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || crate::produce_consume::consume_all(&bootstrap, "kept", 1, 15)
    })
    .await
    .unwrap();
    let values: Vec<String> = received
        .into_iter()
        .map(|(_, value, _)| String::from_utf8(value.unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (1..30).step_by(2).map(|i| format!("k{i}")).collect();
    assert_eq!(values, expected);

    let described = admin(&bootstrap)
        .describe_configs(&[ResourceSpecifier::Topic("kept")], &admin_options())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("retention.ms").unwrap().value.as_deref(),
        Some("-1")
    );

    // New writes continue after the old ones.
    let producer: FutureProducer = support::client_config(&bootstrap).create().unwrap();
    let delivered = producer
        .send(
            FutureRecord::<(), _>::to("kept")
                .partition(0)
                .payload("after"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(delivered.offset, 15);
    let second_id = producer_id(broker.kafka_addr()).await;
    assert!(
        second_id > first_id,
        "producer ids never repeat: {first_id} then {second_id}"
    );
    broker.shutdown().await.unwrap();
}
