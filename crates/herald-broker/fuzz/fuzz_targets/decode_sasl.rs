//! Fuzz target: parse arbitrary bytes as SASL PLAIN, SCRAM client-first and client-final
//! messages, and run a SCRAM exchange on what parses, as the broker does for every
//! SaslAuthenticate; must return without panicking.
//! Run with `cargo +nightly fuzz run decode_sasl` from `crates/herald-broker`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herald_broker::auth::fuzz_sasl(data);
});
