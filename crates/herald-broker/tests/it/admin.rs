//! Topic administration through librdkafka's AdminClient: create, delete, grow, describe and
//! alter configs, delete records.

use std::time::Duration;

use rdkafka::admin::{
    AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, incremental_alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::support::{self, admin, admin_options};

fn topic_names(bootstrap: &str) -> Vec<String> {
    let consumer: BaseConsumer = support::client_config(bootstrap).create().unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

fn partition_count(bootstrap: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = support::client_config(bootstrap).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_grow_and_delete_topics() {
    let broker = support::start().await;
    let admin = admin(&broker.bootstrap);
    let results = admin
        .create_topics(
            &[
                NewTopic::new("alpha", 2, TopicReplication::Fixed(1)),
                NewTopic::new("beta", -1, TopicReplication::Fixed(-1)),
                NewTopic::new("bad name!", 1, TopicReplication::Fixed(1)),
                NewTopic::new("gamma", 1, TopicReplication::Fixed(3)),
            ],
            &admin_options(),
        )
        .await
        .unwrap();
    assert_eq!(results[0], Ok("alpha".to_string()));
    assert_eq!(results[1], Ok("beta".to_string()));
    assert_eq!(
        results[2],
        Err(("bad name!".to_string(), RDKafkaErrorCode::InvalidTopic))
    );
    assert_eq!(
        results[3],
        Err((
            "gamma".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))
    );
    let again = admin
        .create_topics(
            &[NewTopic::new("alpha", 1, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Err(("alpha".to_string(), RDKafkaErrorCode::TopicAlreadyExists))
    );

    let grown = admin
        .create_partitions(&[NewPartitions::new("alpha", 5)], &admin_options())
        .await
        .unwrap();
    assert_eq!(grown[0], Ok("alpha".to_string()));
    let shrink = admin
        .create_partitions(&[NewPartitions::new("alpha", 3)], &admin_options())
        .await
        .unwrap();
    assert_eq!(
        shrink[0],
        Err(("alpha".to_string(), RDKafkaErrorCode::InvalidPartitions))
    );

    let bootstrap = broker.bootstrap.clone();
    let (names, alpha) = tokio::task::spawn_blocking(move || {
        (
            topic_names(&bootstrap),
            partition_count(&bootstrap, "alpha"),
        )
    })
    .await
    .unwrap();
    assert_eq!(names, vec!["alpha", "beta"]);
    assert_eq!(alpha, 5);

    let deleted = admin
        .delete_topics(&["alpha", "nope"], &admin_options())
        .await
        .unwrap();
    assert_eq!(deleted[0], Ok("alpha".to_string()));
    assert_eq!(
        deleted[1],
        Err((
            "nope".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    let bootstrap = broker.bootstrap.clone();
    let names = tokio::task::spawn_blocking(move || topic_names(&bootstrap))
        .await
        .unwrap();
    assert_eq!(names, vec!["beta"]);
    assert!(
        !broker.dir.path().join("alpha-0").exists(),
        "a deleted topic's data goes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_alter_topic_configs() {
    let broker = support::start().await;
    let admin = admin(&broker.bootstrap);
    let created = admin
        .create_topics(
            &[NewTopic::new("conf", 1, TopicReplication::Fixed(1)).set("retention.ms", "60000")],
            &admin_options(),
        )
        .await
        .unwrap();
    assert_eq!(created[0], Ok("conf".to_string()));

    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("conf")], &admin_options())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    let retention = resource.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    let segment = resource.get("segment.bytes").unwrap();
    assert_eq!(segment.value.as_deref(), Some("1073741824"));
    assert_eq!(segment.source, ConfigSource::Default);
    assert!(resource.get("flush.ms").is_some());

    let altered = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("conf"))
                .set("max.message.bytes", "5000")
                .set("flush.ms", "100")],
            &admin_options(),
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{:?}", altered[0]);
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("conf")], &admin_options())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("max.message.bytes").unwrap().value.as_deref(),
        Some("5000")
    );
    assert_eq!(
        resource.get("flush.ms").unwrap().value.as_deref(),
        Some("100")
    );
    // AlterConfigs replaces the whole set: retention.ms went back to the default.
    assert_eq!(
        resource.get("retention.ms").unwrap().source,
        ConfigSource::Default
    );

    // The rdkafka crate drops per-resource AlterConfigs errors, so the refusals are checked
    // on the wire and by describing the topic again.
    let mut raw = support::RawClient::connect(broker.broker.kafka_addr()).await;
    for (name, value) in [
        ("retention.ms", "often"),
        ("cleanup.policy", "shred"),
        ("no.such.config", "1"),
    ] {
        let request = AlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("conf"))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(name.to_string()))
                        .with_value(Some(StrBytes::from_string(value.to_string()))),
                ]),
        ]);
        let response: AlterConfigsResponse = raw.request(ApiKey::AlterConfigs, 2, &request).await;
        let result = &response.responses[0];
        assert_eq!(result.error_code, 40, "{name}={value}: INVALID_CONFIG");
        assert!(
            result
                .error_message
                .as_ref()
                .is_some_and(|m| m.contains(name)),
            "{name}: {:?}",
            result.error_message
        );
    }
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("conf")], &admin_options())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("cleanup.policy").unwrap().value.as_deref(),
        Some("delete")
    );
    assert_eq!(
        resource.get("max.message.bytes").unwrap().value.as_deref(),
        Some("5000")
    );

    // IncrementalAlterConfigs changes one config and leaves the others.
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("123456789"))),
            ]),
    ]);
    let response: IncrementalAlterConfigsResponse = raw
        .request(ApiKey::IncrementalAlterConfigs, 1, &request)
        .await;
    assert_eq!(response.responses[0].error_code, 0);
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic("conf")], &admin_options())
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource.get("retention.bytes").unwrap().value.as_deref(),
        Some("123456789")
    );
    assert_eq!(
        resource.get("max.message.bytes").unwrap().value.as_deref(),
        Some("5000")
    );

    // The new max.message.bytes applies: a 10 kB message is refused.
    let producer: FutureProducer = support::client_config(&broker.bootstrap)
        .set("compression.type", "none")
        .create()
        .unwrap();
    let big = vec![7u8; 10_000];
    let refused = producer
        .send(
            FutureRecord::<(), _>::to("conf").partition(0).payload(&big),
            Duration::from_secs(10),
        )
        .await;
    let (error, _) = refused.unwrap_err();
    assert_eq!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    );

    let broker_configs = admin
        .describe_configs(&[ResourceSpecifier::Broker(0)], &admin_options())
        .await
        .unwrap();
    let resource = broker_configs[0].as_ref().unwrap();
    assert_eq!(
        resource.get("num.partitions").unwrap().value.as_deref(),
        Some("1")
    );
    assert!(resource.get("num.partitions").unwrap().is_read_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start() {
    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "trim", 1).await;
    let producer: FutureProducer = support::client_config(&broker.bootstrap).create().unwrap();
    for i in 0..20 {
        producer
            .send(
                FutureRecord::<(), _>::to("trim")
                    .partition(0)
                    .payload(&format!("r{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("trim", 0, Offset::Offset(12))
        .unwrap();
    let result = admin(&broker.bootstrap)
        .delete_records(&offsets, &admin_options())
        .await
        .unwrap();
    assert_eq!(result.elements()[0].offset(), Offset::Offset(12));
    let bootstrap = broker.bootstrap.clone();
    let watermarks = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = support::client_config(&bootstrap).create().unwrap();
        consumer
            .fetch_watermarks("trim", 0, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(watermarks, (12, 20));
    let bootstrap = broker.bootstrap.clone();
    let first = tokio::task::spawn_blocking(move || {
        crate::produce_consume::consume_all(&bootstrap, "trim", 0, 1)
    })
    .await
    .unwrap();
    assert_eq!(first[0].1.as_deref(), Some(&b"r12"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_admin_requests_take_effect_in_order() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
        MetadataRequest, MetadataResponse, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    let broker = support::start().await;
    support::create_topic(&broker.bootstrap, "again", 1).await;
    let name = || TopicName(StrBytes::from_static_str("again"));
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![name()])
        .with_timeout_ms(10_000);
    let create = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(3)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let metadata = MetadataRequest::default().with_topics(None);
    // Three requests written back to back before reading any answer.
    let mut raw = support::RawClient::connect(broker.broker.kafka_addr()).await;
    let mut frames = Vec::new();
    for (key, version, correlation_id) in [
        (ApiKey::DeleteTopics, 4i16, 1i32),
        (ApiKey::CreateTopics, 4, 2),
        (ApiKey::Metadata, 12, 3),
    ] {
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        let mut frame = bytes::BytesMut::new();
        header
            .encode(&mut frame, key.request_header_version(version))
            .unwrap();
        match key {
            ApiKey::DeleteTopics => delete.encode(&mut frame, version).unwrap(),
            ApiKey::CreateTopics => create.encode(&mut frame, version).unwrap(),
            _ => metadata.encode(&mut frame, version).unwrap(),
        }
        frames.push(frame);
    }
    for frame in &frames {
        raw.send_frame(frame).await;
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(raw.read_frame().await.unwrap());
    }
    let ids: Vec<i32> = answers.iter().map(support::correlation_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let mut deleted = answers[0].clone();
    let _ = deleted.split_to(5); // DeleteTopics v4 is flexible: header v1
    let deleted = DeleteTopicsResponse::decode(&mut deleted, 4).unwrap();
    assert_eq!(deleted.responses[0].error_code, 0);
    let mut created = answers[1].clone();
    let _ = created.split_to(4);
    let created = CreateTopicsResponse::decode(&mut created, 4).unwrap();
    assert_eq!(created.topics[0].error_code, 0);
    let mut listed = answers[2].clone();
    let _ = listed.split_to(5); // correlation id and the flexible header's tagged fields
    let listed = MetadataResponse::decode(&mut listed, 12).unwrap();
    assert_eq!(listed.topics.len(), 1);
    assert_eq!(listed.topics[0].partitions.len(), 3);
}

#[tokio::test]
async fn replica_assignments_naming_only_this_broker_are_accepted() {
    let broker = support::start().await;
    let admin = admin(&broker.bootstrap);
    let here: &[i32] = &[0];
    let results = admin
        .create_topics(
            &[NewTopic::new(
                "placed",
                3,
                TopicReplication::Variable(&[here, here, here]),
            )],
            &admin_options(),
        )
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().map(String::as_str), Ok("placed"));
    let bootstrap = broker.bootstrap.clone();
    let count = tokio::task::spawn_blocking(move || partition_count(&bootstrap, "placed"))
        .await
        .unwrap();
    assert_eq!(count, 3);

    // Another broker id, or two replicas, cannot be placed here: a clear refusal.
    let elsewhere: &[i32] = &[1];
    let twice: &[i32] = &[0, 1];
    for assignment in [[elsewhere], [twice]] {
        let results = admin
            .create_topics(
                &[NewTopic::new(
                    "misplaced",
                    1,
                    TopicReplication::Variable(&assignment),
                )],
                &admin_options(),
            )
            .await
            .unwrap();
        assert!(
            matches!(
                &results[0],
                Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))
            ),
            "{results:?}"
        );
    }

    // Growing a topic with assignments follows the same rule.
    let grown = admin
        .create_partitions(
            &[NewPartitions::new("placed", 5).assign(&[here, here])],
            &admin_options(),
        )
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    let refused = admin
        .create_partitions(
            &[NewPartitions::new("placed", 6).assign(&[elsewhere])],
            &admin_options(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &refused[0],
            Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))
        ),
        "{refused:?}"
    );
}
