//! End-to-end tests of the `herald` binary: each module starts the processes it needs on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod client;
mod compaction;
mod console;
mod group;
mod matrix;
mod peer;
mod security;
mod serve;
mod support;
mod txn;
