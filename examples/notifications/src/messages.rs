//! The topics, groups and payloads the two services agree on.

use serde::{Deserialize, Serialize};

/// Notification requests, keyed by recipient so one person's messages stay in order.
pub const SMS_TOPIC: &str = "sms";
/// Outcomes, each correlated to its request (`herald-correlation-id` = the request's id).
pub const RESULTS_TOPIC: &str = "sms.results";
/// Requests the SMS service gave up on, with the last error and attempt count in headers.
pub const DLQ_TOPIC: &str = "sms.dlq";
/// The consumer group sending SMS.
pub const SMS_GROUP: &str = "sms-service";
/// The consumer group turning dead letters into `failed` results.
pub const DLQ_GROUP: &str = "sms-service.failures";

/// The payload of an `sms` event: what `POST /notifications` accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsRequest {
    pub to: String,
    pub text: String,
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored on `sms`, no outcome yet.
    Pending,
    /// The provider accepted the SMS.
    Sent,
    /// The SMS service gave up on it.
    Failed,
}

/// The payload of an `sms.results` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsResult {
    pub status: Status,
    /// The recipient, when the request could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// How many times the SMS service tried to send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The provider's id for the sent message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}
