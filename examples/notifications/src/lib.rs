//! The notifications example: an HTTP front door and an SMS sender that talk through Herald topics.
//!
//! `notification-service` takes `POST /notifications`, publishes each request to the `sms` topic
//! (keyed by recipient, so one person's messages stay in order) and answers once the broker has
//! stored it. `sms-service` is the consumer group that sends each SMS through a stand-in provider
//! and publishes the outcome to `sms.results`, correlated to the request; the notification
//! service consumes those results to answer `GET /notifications/{id}`. See the README next to
//! this crate for how to run it.
//!
//! Beside it lives the design it replaces (`calls`: the notification service calls the SMS
//! service over HTTP and waits), a second consumer of the same events (`usage`: SMS counted per
//! recipient, exactly once), and `compare`, which runs the same load through both designs.

pub mod bounded;
pub mod calls;
pub mod client;
pub mod messages;
pub mod notifier;
pub mod provider;
pub mod sender;
pub mod signals;
pub mod status;
pub mod usage;
