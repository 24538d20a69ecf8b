//! Fuzzes the sealed-datagram decoder: arbitrary bytes must never panic, never open with a key
//! they were not sealed with, and sealing then opening must round-trip.
//!
//! The same function runs over random bytes in the normal test suite (`seal::tests`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_direct::seal::fuzz_sealed(data);
});
