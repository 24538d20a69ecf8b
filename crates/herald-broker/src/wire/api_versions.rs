//! ApiVersions: tells a client which APIs and versions this broker serves.

use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::errors::UNSUPPORTED_VERSION;
use super::versions::SERVED;

/// The ApiVersions response; `error_code` is [`UNSUPPORTED_VERSION`] when the client asked in a
/// version we do not serve (the answer then goes out in v0 so it can be read anyway).
pub(crate) fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SERVED
        .iter()
        .map(|served| {
            ApiVersion::default()
                .with_api_key(served.api_key as i16)
                .with_min_version(served.min)
                .with_max_version(served.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// The error code to answer an ApiVersions request with in `version`.
pub(crate) fn error_for(version: i16) -> i16 {
    if super::versions::supports(kafka_protocol::messages::ApiKey::ApiVersions, version) {
        0
    } else {
        UNSUPPORTED_VERSION
    }
}
