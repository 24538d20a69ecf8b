//! Integration tests of the partition log, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append_read;
mod compaction;
mod compaction_transactions;
mod crash;
mod fuzz_open;
mod many_partitions;
mod model;
mod ranged_read;
mod retention;
mod sigkill;
mod support;
mod timestamps;
