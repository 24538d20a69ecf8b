//! The everyday client commands (`herald topic`, `produce`, `consume`) end to end against a
//! `herald serve` child process on free loopback ports.

mod errors;
mod harness;
mod kcat;
mod roundtrip;
mod topics;
