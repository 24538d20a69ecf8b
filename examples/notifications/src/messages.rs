//! The topics, groups and payloads the services agree on.
//!
//! The names are configurable ([`Names`]: a flag, or an environment variable for every service
//! at once), so that several copies of the example, or test runs, can share one broker; each
//! service must be given the same names. The constants are the defaults.

use clap::builder::NonEmptyStringValueParser;
use serde::{Deserialize, Serialize};

/// Notification requests, keyed by recipient so one person's messages stay in order.
pub const SMS_TOPIC: &str = "sms";
/// Outcomes, each correlated to its request (`herald-correlation-id` = the request's id).
pub const RESULTS_TOPIC: &str = "sms.results";
/// Requests the SMS service gave up on, with the last error and attempt count in headers.
pub const DLQ_TOPIC: &str = "sms.dlq";
/// The consumer group sending SMS.
pub const SMS_GROUP: &str = "sms-service";
/// The consumer group turning dead letters into `failed` results: the SMS group's name followed
/// by this.
pub const DLQ_GROUP_SUFFIX: &str = ".failures";
/// The usage service's consumer group on the requests.
pub const USAGE_GROUP: &str = "usage-service";

/// The topics and consumer groups of the example. Every service takes all of them (each uses
/// those it needs), so one set of flags or variables serves them all.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Topics and groups (the same for every service)")]
pub struct Names {
    /// Topic of the notification requests.
    #[arg(long, value_name = "TOPIC", env = "NOTIFICATIONS_SMS_TOPIC", default_value = SMS_TOPIC, value_parser = NonEmptyStringValueParser::new())]
    pub sms_topic: String,
    /// Topic of the outcomes the SMS service publishes.
    #[arg(long, value_name = "TOPIC", env = "NOTIFICATIONS_RESULTS_TOPIC", default_value = RESULTS_TOPIC, value_parser = NonEmptyStringValueParser::new())]
    pub results_topic: String,
    /// Topic of the requests the SMS service gave up on (dead letters).
    #[arg(long, value_name = "TOPIC", env = "NOTIFICATIONS_DLQ_TOPIC", default_value = DLQ_TOPIC, value_parser = NonEmptyStringValueParser::new())]
    pub dlq_topic: String,
    /// Consumer group of the SMS service on the requests; it reads the dead letters as this
    /// group followed by `.failures`.
    #[arg(long, value_name = "GROUP", env = "NOTIFICATIONS_SMS_GROUP", default_value = SMS_GROUP, value_parser = NonEmptyStringValueParser::new())]
    pub sms_group: String,
    /// Consumer group of the usage service on the requests.
    #[arg(long, value_name = "GROUP", env = "NOTIFICATIONS_USAGE_GROUP", default_value = USAGE_GROUP, value_parser = NonEmptyStringValueParser::new())]
    pub usage_group: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            sms_topic: SMS_TOPIC.to_string(),
            results_topic: RESULTS_TOPIC.to_string(),
            dlq_topic: DLQ_TOPIC.to_string(),
            sms_group: SMS_GROUP.to_string(),
            usage_group: USAGE_GROUP.to_string(),
        }
    }
}

impl Names {
    /// The consumer group turning the SMS service's dead letters into `failed` results.
    pub fn dlq_group(&self) -> String {
        format!("{}{DLQ_GROUP_SUFFIX}", self.sms_group)
    }

    /// The flags that give a service these names, for a process starting the services.
    pub fn args(&self) -> Vec<String> {
        [
            ("--sms-topic", &self.sms_topic),
            ("--results-topic", &self.results_topic),
            ("--dlq-topic", &self.dlq_topic),
            ("--sms-group", &self.sms_group),
            ("--usage-group", &self.usage_group),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.clone()])
        .collect()
    }
}

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        names: Names,
    }

    #[test]
    fn the_defaults_are_the_constants_and_the_flags_round_trip() {
        let parsed = Cli::parse_from(["service"]);
        assert_eq!(parsed.names, Names::default());
        assert_eq!(parsed.names.dlq_group(), "sms-service.failures");
        let names = Names {
            sms_topic: "a".into(),
            results_topic: "b".into(),
            dlq_topic: "c".into(),
            sms_group: "d".into(),
            usage_group: "e".into(),
        };
        let again = Cli::parse_from(std::iter::once("service".to_string()).chain(names.args()));
        assert_eq!(again.names, names);
        assert_eq!(again.names.dlq_group(), "d.failures");
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert!(Cli::try_parse_from(["service", "--sms-topic", ""]).is_err());
    }
}
