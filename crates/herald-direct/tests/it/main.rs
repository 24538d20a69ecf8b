//! In-process tests of herald-direct: several members on 127.0.0.1 ports and a publisher, and
//! mDNS discovery in a network namespace of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acks;
mod capacity;
mod datagram;
mod datagram_security;
mod delivery;
mod discovery;
mod group_key;
mod harness;
mod membership;
mod request;
mod tls;

/// The crate states its accounting invariants (in-flight counts, queued frames) with
/// `debug_assert!`; they only check anything if the profile the tests build with keeps debug
/// assertions on, as the default test profile does.
#[test]
#[allow(clippy::assertions_on_constants)] // Constant per build: that is what it checks.
fn the_tests_run_with_debug_assertions() {
    assert!(cfg!(debug_assertions));
}
