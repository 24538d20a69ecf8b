//! Fuzz target: feed arbitrary bytes to the broker's rustls server configuration as a client's
//! first flight; the handshake must fail or wait, never panic.
//! Run with `cargo +nightly fuzz run tls_handshake` from `crates/herald-broker`.
#![no_main]

use std::sync::{Arc, OnceLock};

static CONFIG: OnceLock<Option<Arc<rustls::ServerConfig>>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let config = CONFIG.get_or_init(|| {
        let key = rcgen::KeyPair::generate().ok()?;
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .ok()?
            .self_signed(&key)
            .ok()?;
        herald_broker::auth::fuzz_config(certificate.der().to_vec(), key.serialize_der())
    });
    if let Some(config) = config {
        herald_broker::auth::fuzz_handshake(config, data);
    }
});
