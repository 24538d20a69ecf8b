//! Fuzzes the group-key handshake: arbitrary bytes as the peer's handshake frames must never
//! panic and never pass as a proof.
//!
//! The same function runs over random bytes in the normal test suite (`handshake::tests`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_direct::handshake::fuzz_handshake(data);
});
