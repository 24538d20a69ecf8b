//! `herald peer`: brokerless direct, datagram and request/response between processes.

mod bench;
mod capacity;
mod datagram;
mod delivery;
mod harness;
mod mdns;
mod membership;
mod request;
mod security;
