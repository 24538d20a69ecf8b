//! In-process tests of herald-direct: several members on 127.0.0.1 ports and a publisher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acks;
mod capacity;
mod datagram;
mod delivery;
mod harness;
mod membership;
mod request;
