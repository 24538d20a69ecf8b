//! What Herald's test suites share to run against an external Kafka-compatible broker instead
//! of a Herald broker of their own: the variable naming that broker (`HERALD_TEST_BOOTSTRAP`),
//! the early return of tests that need Herald itself, and names unique to each test, so tests
//! sharing a broker (at the same time, or in later runs) never meet each other's topics, groups
//! or transactional ids.
//!
//! ```
//! if herald_testkit::skip_on_external("restarts_keep_offsets", "stops the broker") {
//!     return;
//! }
//! let topic = herald_testkit::unique_name("orders");
//! assert!(topic.starts_with("orders-"));
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that names an external Kafka-compatible broker (`host:port`) for the tests to
/// use instead of starting Herald.
pub const EXTERNAL_BOOTSTRAP_VAR: &str = "HERALD_TEST_BOOTSTRAP";

/// Hex digits of a [`unique_suffix`]: 48 bits, short enough for readable names and wide
/// enough that two tests drawing at the same moment do not collide.
pub const SUFFIX_HEX_DIGITS: usize = 12;

/// The external broker's bootstrap address when `HERALD_TEST_BOOTSTRAP` is set and not empty.
pub fn external_bootstrap() -> Option<String> {
    std::env::var(EXTERNAL_BOOTSTRAP_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// True (after printing why) when the tests run against an external broker and the calling test
/// needs Herald itself (`needs` says for what), so the caller returns early; false when the test
/// starts Herald. The test runner counts a skipped test as passed; the printed line says it
/// was not run.
pub fn skip_on_external(test: &str, needs: &str) -> bool {
    let Some(bootstrap) = external_bootstrap() else {
        return false;
    };
    println!(
        "skipped {test}: it needs Herald itself ({needs}), and {EXTERNAL_BOOTSTRAP_VAR}={bootstrap} names an external broker"
    );
    true
}

/// [`SUFFIX_HEX_DIGITS`] hex digits, different on every call in this process and, with
/// overwhelming likelihood, from every call in any other process.
pub fn unique_suffix() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the operating system's randomness once per process and
    // differs per instance; the call count keeps two calls of one process apart regardless.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    let bits = 4 * SUFFIX_HEX_DIGITS as u32;
    format!(
        "{:0width$x}",
        hasher.finish() & ((1u64 << bits) - 1),
        width = SUFFIX_HEX_DIGITS
    )
}

/// `base` followed by `-` and a [`unique_suffix`].
pub fn unique_name(base: &str) -> String {
    format!("{base}-{}", unique_suffix())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_have_a_fixed_width_and_do_not_repeat() {
        let suffixes: std::collections::BTreeSet<String> =
            (0..1000).map(|_| unique_suffix()).collect();
        assert_eq!(suffixes.len(), 1000);
        for suffix in &suffixes {
            assert_eq!(suffix.len(), SUFFIX_HEX_DIGITS, "{suffix}");
            assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{suffix}");
        }
    }

    #[test]
    fn unique_names_keep_their_base() {
        let name = unique_name("sms.results");
        let (base, suffix) = name.rsplit_once('-').unwrap();
        assert_eq!(base, "sms.results");
        assert_eq!(suffix.len(), SUFFIX_HEX_DIGITS);
    }
}
