//! The fuzz target's body run on stable: opening a directory built from random bytes never
//! panics or hangs (the cargo-fuzz target in `fuzz/` runs the same function).

use herald_storage::fuzzing::open_arbitrary_dir;
use proptest::prelude::*;

/// Entries that build plausible directories: valid batches, then a little damage.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (0u8..5, 0u8..4, prop::collection::vec(any::<u8>(), 0..200)),
        0..12,
    )
    .prop_map(|entries| {
        let mut out = Vec::new();
        for (kind, base, bytes) in entries {
            out.push(kind);
            out.push(base);
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        open_arbitrary_dir(&data);
    }

    #[test]
    fn structured_directories_never_panic(data in structured()) {
        open_arbitrary_dir(&data);
    }
}

#[test]
fn a_directory_of_valid_batches_opens_with_all_of_them() {
    // Two valid batches in segment 0 and a checkpoint of garbage: everything is recovered by scan.
    let mut data = Vec::new();
    for _ in 0..2 {
        data.extend_from_slice(&[4, 0, 3, 0, b'a', b'b', b'c']);
    }
    data.extend_from_slice(&[3, 0, 2, 0, 0xde, 0xad]);
    open_arbitrary_dir(&data);
}
