//! Fuzz target: open a partition directory built from arbitrary bytes; must not panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herald_storage::fuzzing::open_arbitrary_dir(data);
});
