//! Fuzzes the direct/datagram frame decoder: arbitrary bytes as a TCP stream and as one datagram
//! must never panic, and whatever decodes must re-encode to the same frame.
//!
//! The same function runs over random bytes in the normal test suite (`frame::tests`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_direct::frame::fuzz_decode(data);
});
