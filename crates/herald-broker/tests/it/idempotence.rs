//! Idempotent producers: librdkafka with `enable.idempotence=true` works end to end, and at the
//! wire level a retried batch is stored once while a sequence gap gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER.

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{self, RawClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_producer_works() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "idem", 2).await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let payload = format!("p{i}");
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::<(), _>::to("idem")
                        .partition(i % 2)
                        .payload(&payload),
                )
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    let bootstrap = broker.bootstrap.clone();
    let received = tokio::task::spawn_blocking(move || {
        (
            crate::produce_consume::consume_all(&bootstrap, "idem", 0, 100),
            crate::produce_consume::consume_all(&bootstrap, "idem", 1, 100),
        )
    })
    .await
    .unwrap();
    let values = |records: Vec<crate::produce_consume::Sent>| -> Vec<String> {
        records
            .into_iter()
            .map(|(_, value, _)| String::from_utf8(value.unwrap()).unwrap())
            .collect()
    };
    let even: Vec<String> = (0..200).step_by(2).map(|i| format!("p{i}")).collect();
    let odd: Vec<String> = (1..200).step_by(2).map(|i| format!("p{i}")).collect();
    assert_eq!(values(received.0), even);
    assert_eq!(values(received.1), odd);
    assert_eq!(broker.broker.stats().produced_records_total, 200);
}

fn produce_request(topic: &str, batch: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ])
}

fn outcome(response: &ProduceResponse) -> (i16, i64) {
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_stored_once_and_gaps_are_refused() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "seq", 1).await;
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    let init: InitProducerIdResponse = client
        .request(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(init.error_code, 0);
    let producer_id = init.producer_id.0;
    assert!(producer_id >= 0);
    let batch = |sequence: i32, values: &[&[u8]]| {
        herald_storage::build_batch(1_000, &[], values, Some((producer_id, 0, sequence)))
    };

    let first: ProduceResponse = client
        .request(
            ApiKey::Produce,
            9,
            &produce_request("seq", batch(0, &[b"a", b"b"])),
        )
        .await;
    assert_eq!(outcome(&first), (0, 0));
    // The same batch again (a retry after a lost response) answers with the original offset.
    let retry: ProduceResponse = client
        .request(
            ApiKey::Produce,
            9,
            &produce_request("seq", batch(0, &[b"a", b"b"])),
        )
        .await;
    assert_eq!(outcome(&retry), (0, 0));
    let next: ProduceResponse = client
        .request(
            ApiKey::Produce,
            7,
            &produce_request("seq", batch(2, &[b"c"])),
        )
        .await;
    assert_eq!(outcome(&next), (0, 2));
    // Sequence 5 skips 3 and 4.
    let gap: ProduceResponse = client
        .request(
            ApiKey::Produce,
            9,
            &produce_request("seq", batch(5, &[b"f"])),
        )
        .await;
    assert_eq!(
        gap.responses[0].partition_responses[0].error_code, 45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );

    let stats = broker.broker.stats();
    assert_eq!(stats.produced_records_total, 3);
    assert_eq!(stats.produced_batches_duplicate_total, 1);
}
