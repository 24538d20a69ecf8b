//! Integration tests of the SDK: the behavioural suite run against every transport, plus each
//! transport's own checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod behaviour;
mod broker;
mod direct;
mod memory;
mod security;
mod support;
