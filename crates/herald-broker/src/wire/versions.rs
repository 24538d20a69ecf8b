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
pub(crate) const SERVED: &[Served] = &[served_api(ApiKey::ApiVersions, 0, 3)];

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
        _ => "Other",
    }
}

/// The Kafka name of an API key number, if it is one this broker serves.
pub(crate) fn name_of_key(api_key: i16) -> Option<&'static str> {
    served(api_key).map(name)
}
