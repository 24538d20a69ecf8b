//! Fuzz target: decode an arbitrary request frame (header and body) as the broker does for
//! every frame it reads; must return, without panicking or allocating without bound.
//! Run with `cargo +nightly fuzz run decode_request` from `crates/herald-broker`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = herald_broker::fuzz_decode(data);
});
