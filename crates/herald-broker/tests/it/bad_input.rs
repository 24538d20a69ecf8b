//! Bad input on the wire: garbage, truncated and oversized frames, unknown APIs and versions,
//! corrupt record batches. Each gets an error code or a closed connection, and the broker keeps
//! serving normal clients afterwards.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncWriteExt;

use crate::support::{self, RawClient, correlation_id};

/// A normal client still produces and reads metadata after the abuse.
async fn still_serves(bootstrap: &str) {
    let producer: FutureProducer = support::client_config(bootstrap).create().unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to("after-abuse").payload("fine"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_what_is_served_and_answers_unknown_versions_in_v0() {
    let broker = support::start().await;
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    let response: ApiVersionsResponse = client
        .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert_eq!(response.error_code, 0);
    let range = |key: ApiKey| {
        response
            .api_keys
            .iter()
            .find(|api| api.api_key == key as i16)
            .map(|api| (api.min_version, api.max_version))
    };
    assert_eq!(
        range(ApiKey::Produce).map(|r| r.0),
        Some(0),
        "Produce advertised from v0"
    );
    assert!(range(ApiKey::Fetch).is_some_and(|(_, max)| max >= 11));
    assert!(range(ApiKey::Metadata).is_some_and(|(_, max)| max >= 9));

    // ApiVersions v42 does not exist: the answer is UNSUPPORTED_VERSION, in v0, with our range.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(42);
    frame.put_i32(77);
    frame.put_i16(-1); // null client id
    client.send_frame(&frame).await;
    let mut answer = client.read_frame().await.expect("an answer");
    assert_eq!(correlation_id(&answer), 77);
    let _ = answer.split_to(4);
    let v0 = ApiVersionsResponse::decode(&mut answer, 0).unwrap();
    assert_eq!(v0.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        v0.api_keys
            .iter()
            .any(|api| api.api_key == ApiKey::ApiVersions as i16 && api.max_version == 3)
    );
    still_serves(&broker.bootstrap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_unknown_requests_close_only_their_connection() {
    let broker = support::start().await;
    let addr = broker.broker.kafka_addr();
    // A bystander connection that stays healthy throughout.
    let mut bystander = RawClient::connect(addr).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            vec![
                0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
            ],
        ),
        ("too short for a header", vec![0, 3, 0]),
        ("unknown api key", {
            let mut f = BytesMut::new();
            f.put_i16(9999);
            f.put_i16(0);
            f.put_i32(1);
            f.put_i16(-1);
            f.to_vec()
        }),
        ("unsupported Metadata version", {
            let mut f = BytesMut::new();
            f.put_i16(ApiKey::Metadata as i16);
            f.put_i16(99);
            f.put_i32(1);
            f.put_i16(-1);
            f.to_vec()
        }),
        ("Metadata body claiming two billion topics", {
            let mut f = BytesMut::new();
            f.put_i16(ApiKey::Metadata as i16);
            f.put_i16(1);
            f.put_i32(1);
            f.put_i16(-1);
            f.put_i32(i32::MAX);
            f.put_slice(&[0; 8]);
            f.to_vec()
        }),
        ("flexible Metadata body with a huge compact array", {
            let mut f = BytesMut::new();
            f.put_i16(ApiKey::Metadata as i16);
            f.put_i16(12);
            f.put_i32(1);
            f.put_i16(-1);
            f.put_u8(0); // header tagged fields
            f.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // varint 2^32-1
            f.to_vec()
        }),
        ("Produce v2 (old message format)", {
            let mut f = BytesMut::new();
            f.put_i16(ApiKey::Produce as i16);
            f.put_i16(2);
            f.put_i32(1);
            f.put_i16(-1);
            f.put_i16(1);
            f.put_i32(1000);
            f.put_i32(0);
            f.to_vec()
        }),
    ];
    for (what, frame) in cases {
        let mut client = RawClient::connect(addr).await;
        client.send_frame(&frame).await;
        assert!(client.is_closed().await, "{what}: connection closed");
    }

    // A frame whose size prefix is negative, and one over request_bytes_max (100 MiB).
    for size in [-5i32, 200 * 1024 * 1024] {
        let mut client = RawClient::connect(addr).await;
        client.stream.write_all(&size.to_be_bytes()).await.unwrap();
        assert!(client.is_closed().await, "size {size}: connection closed");
    }

    // A truncated frame followed by the peer going away.
    {
        let mut client = RawClient::connect(addr).await;
        client
            .stream
            .write_all(&100i32.to_be_bytes())
            .await
            .unwrap();
        client.stream.write_all(&[0, 18, 0]).await.unwrap();
    }

    let metadata: MetadataResponse = bystander
        .request(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert_eq!(metadata.brokers.len(), 1);
    assert!(broker.broker.stats().requests_malformed_total >= 5);
    still_serves(&broker.bootstrap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batches_get_corrupt_message_and_store_nothing() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "crc", 1).await;
    let mut client = RawClient::connect(broker.broker.kafka_addr()).await;
    let mut batch = herald_storage::build_batch(1_000, &[], &[b"hello"], None);
    let last = batch.len() - 1;
    batch[last] ^= 0xff; // flips a payload byte under the CRC
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("crc")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let response: ProduceResponse = client.request(ApiKey::Produce, 8, &request).await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    assert_eq!(broker.broker.stats().produced_records_total, 0);
    // The connection stays usable after an error code.
    let again: ProduceResponse = client.request(ApiKey::Produce, 8, &request).await;
    assert_eq!(again.responses[0].partition_responses[0].error_code, 2);

    // With acks=0 there is no response to carry the error, so the connection is closed.
    let mut frame = bytes::BytesMut::new();
    kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(8)
        .with_correlation_id(50)
        .encode(&mut frame, 1)
        .unwrap();
    request.with_acks(0).encode(&mut frame, 8).unwrap();
    client.send_frame(&frame).await;
    assert!(
        client.is_closed().await,
        "acks=0 refusal closes the connection"
    );
    assert_eq!(broker.broker.stats().produced_records_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = support::start_with(herald_broker::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        connections_max: 2,
        ..support::test_config()
    })
    .await;
    let addr = broker.kafka_addr();
    let mut first = RawClient::connect(addr).await;
    let mut second = RawClient::connect(addr).await;
    // Both are served...
    for client in [&mut first, &mut second] {
        let response: ApiVersionsResponse = client
            .request(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
            .await;
        assert_eq!(response.error_code, 0);
    }
    // ...and the third is closed at once.
    let mut third = RawClient::connect(addr).await;
    assert!(third.is_closed().await);
    assert_eq!(broker.stats().connections_refused_total, 1);
    drop(first);
    // Once one leaves, a new connection is served again.
    support::eventually("a free connection slot", || {
        (broker.stats().connections_open < 2).then_some(())
    })
    .await;
    let mut fifth = RawClient::connect(addr).await;
    let response: ApiVersionsResponse = fifth
        .request(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
        .await;
    assert_eq!(response.error_code, 0);
}
