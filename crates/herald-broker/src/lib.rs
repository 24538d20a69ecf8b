//! A Kafka-wire-compatible broker on the Herald segment log, embeddable in-process.
pub mod group;
pub mod metrics;
