//! Integration tests of the broker library: each module starts in-process brokers on free
//! loopback ports and talks to them with real Kafka clients (librdkafka) or raw frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod bad_input;
mod compaction_transactions;
mod decode;
mod fetch_limits;
mod fetch_sendfile;
mod group_assignors;
mod group_rebalance;
mod group_support;
mod group_wire;
mod idempotence;
mod log_dirs;
mod many_partitions;
mod metadata_offsets;
mod produce_consume;
mod request_order;
mod restart;
mod security;
mod support;
mod timestamps;
mod transactions;
