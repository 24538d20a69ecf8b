//! The request decoder over arbitrary bytes (the same function the cargo-fuzz target runs):
//! it must return, never panic or allocate without bound, whatever it is given.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

/// A request header for a served API and version, followed by random body bytes, so the
/// body decoders are reached rather than rejected at the header.
fn framed(api_key: i16, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(7);
    frame.put_i16(-1);
    if flexible {
        frame.put_u8(0);
    }
    frame.put_slice(body);
    frame.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_crash_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = herald_broker::fuzz_decode(&bytes);
    }

    #[test]
    fn random_bodies_of_served_apis_never_crash_the_decoder(
        api_key in 0i16..70,
        version in 0i16..14,
        flexible in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = herald_broker::fuzz_decode(&framed(api_key, version, flexible, &body));
    }

    #[test]
    fn huge_length_fields_are_refused(
        api_key in prop::sample::select(vec![0i16, 1, 2, 3, 19, 20, 21, 32, 33, 37, 44]),
        version in 0i16..13,
        flexible in any::<bool>(),
        length in prop::sample::select(vec![i32::MAX, 0x7fff_0000, 1 << 28, 1 << 24]),
        position in 0usize..24,
        filler in proptest::collection::vec(any::<u8>(), 24..64),
    ) {
        // Plant a huge length somewhere in a small body: the decoder must refuse it without
        // trying to allocate for it.
        let mut body = filler;
        let at = position.min(body.len() - 4);
        body[at..at + 4].copy_from_slice(&length.to_be_bytes());
        let _ = herald_broker::fuzz_decode(&framed(api_key, version, flexible, &body));
    }
}

#[test]
fn a_valid_request_decodes() {
    // ApiVersions v0: header only.
    let frame = framed(18, 0, false, &[]);
    assert!(herald_broker::fuzz_decode(&frame));
}
