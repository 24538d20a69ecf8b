//! The APIs and versions this broker serves: the table behind the ApiVersions response and
//! the check every request passes before its body is decoded.
//!
//! Each range is what the handlers implement and `kafka-protocol` can decode, and no more:
//! advertising a version means clients will use it.

use kafka_protocol::messages::ApiKey;

/// One served API and its version range, both ends included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    pub(crate) api_key: ApiKey,
    pub(crate) min: i16,
    pub(crate) max: i16,
}

const fn served_api(api_key: ApiKey, min: i16, max: i16) -> Served {
    Served { api_key, min, max }
}

/// Every API this broker answers. The consumer-group APIs are added here next to their
/// handlers in `group.rs`.
pub(crate) const SERVED: &[Served] = &[
    // Advertised from v0 because some clients judge a broker by whether its Produce range
    // starts at 0, but v0-v2 carry the pre-0.11 message formats, which the log does not
    // store: such a request closes the connection with a log line
    // (see `PRODUCE_VERSION_DECODED_MIN`). librdkafka 2.x negotiates v3 or later.
    served_api(ApiKey::Produce, 0, 9),
    // Fetch v13 and later name topics by id only; v12 is what librdkafka 2.x uses with us.
    served_api(ApiKey::Fetch, 4, 12),
    // v7 adds the max-timestamp query, which is not served.
    served_api(ApiKey::ListOffsets, 1, 7),
    served_api(ApiKey::Metadata, 0, 12),
    served_api(ApiKey::ApiVersions, 0, 3),
    served_api(ApiKey::CreateTopics, 2, 7),
    served_api(ApiKey::DeleteTopics, 1, 6),
    served_api(ApiKey::DeleteRecords, 0, 2),
    served_api(ApiKey::InitProducerId, 0, 4),
    served_api(ApiKey::DescribeConfigs, 1, 4),
    served_api(ApiKey::AlterConfigs, 0, 2),
    served_api(ApiKey::CreatePartitions, 0, 3),
    served_api(ApiKey::IncrementalAlterConfigs, 0, 1),
    served_api(ApiKey::DescribeCluster, 0, 1),
    // kafka-protocol decodes v1-v4 (v0 differs only in throttling); librdkafka 2.x has no
    // DescribeLogDirs call, so `herald topic describe` and Java admin clients are its users.
    served_api(ApiKey::DescribeLogDirs, 1, 4),
    // Consumer groups (handlers in `group.rs`). librdkafka 2.x negotiates FindCoordinator ≤2,
    // JoinGroup ≤5, SyncGroup ≤3, Heartbeat ≤3, LeaveGroup ≤1, OffsetCommit ≤9, OffsetFetch ≤9,
    // DeleteGroups ≤1 and OffsetDelete 0; newer Java clients use the higher versions.
    // OffsetCommit/OffsetFetch v9 carry KIP-848 member epochs the classic protocol has no use
    // for, so they stop at v8; kafka-protocol decodes OffsetCommit from v2, OffsetFetch from v1.
    served_api(ApiKey::FindCoordinator, 0, 4),
    served_api(ApiKey::JoinGroup, 0, 9),
    served_api(ApiKey::SyncGroup, 0, 5),
    served_api(ApiKey::Heartbeat, 0, 4),
    served_api(ApiKey::LeaveGroup, 0, 5),
    served_api(ApiKey::OffsetCommit, 2, 8),
    served_api(ApiKey::OffsetFetch, 1, 8),
    served_api(ApiKey::ListGroups, 0, 5),
    served_api(ApiKey::DescribeGroups, 0, 5),
    served_api(ApiKey::DeleteGroups, 0, 2),
    served_api(ApiKey::OffsetDelete, 0, 0),
    // Security (handlers in `sasl.rs` and `acls.rs`). After SaslHandshake v0 the tokens come
    // as bare frames; librdkafka before 2.1 also refuses SASL unless the range includes v0.
    served_api(ApiKey::SaslHandshake, 0, 1),
    served_api(ApiKey::SaslAuthenticate, 0, 2),
    served_api(ApiKey::CreateAcls, 1, 3),
    served_api(ApiKey::DescribeAcls, 1, 3),
    served_api(ApiKey::DeleteAcls, 1, 3),
    served_api(ApiKey::DescribeUserScramCredentials, 0, 0),
    served_api(ApiKey::AlterUserScramCredentials, 0, 0),
    // Transactions (handlers in `txn.rs`). AddPartitionsToTxn v4+, EndTxn v4+ and
    // TxnOffsetCommit v4+ belong to KIP-890's second phase (brokers verifying on behalf of
    // each other, epoch bumps per transaction), which is not served.
    served_api(ApiKey::AddPartitionsToTxn, 0, 3),
    served_api(ApiKey::AddOffsetsToTxn, 0, 3),
    served_api(ApiKey::EndTxn, 0, 3),
    served_api(ApiKey::TxnOffsetCommit, 0, 3),
    served_api(ApiKey::DescribeTransactions, 0, 0),
    served_api(ApiKey::ListTransactions, 0, 1),
];

/// Lowest Produce version actually decoded (record batch v2).
pub(crate) const PRODUCE_VERSION_DECODED_MIN: i16 = 3;

/// The served API with this key, if any.
pub(crate) fn served(api_key: i16) -> Option<ApiKey> {
    SERVED
        .iter()
        .find(|served| served.api_key as i16 == api_key)
        .map(|served| served.api_key)
}

/// Whether `version` of `api_key` is served.
pub(crate) fn supports(api_key: ApiKey, version: i16) -> bool {
    SERVED
        .iter()
        .any(|served| served.api_key == api_key && (served.min..=served.max).contains(&version))
}

/// The Kafka name of an API, for logs and metrics.
pub(crate) fn name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        _ => "Other",
    }
}

/// The Kafka name of an API key number, if it is one this broker serves.
pub(crate) fn name_of_key(api_key: i16) -> Option<&'static str> {
    served(api_key).map(name)
}
