//! Helpers shared by the notifications tests: waiting with a bounded patience, reading the
//! stand-in provider's log, and topic and group names unique to a test.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use notifications::messages::Names;
use notifications::provider::SentSms;

/// How long a test waits for something that should happen promptly; generous because the
/// machine is shared, and never a measure of speed.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// Pause between two looks at something a test is waiting for.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Some`, failing the test with `what` after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Every SMS the stand-in provider sent, in order.
pub fn provider_log(path: &Path) -> Vec<SentSms> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// The example's topic and group names, each with one suffix unique to this call, so tests
/// sharing a broker (an external one, or later runs) never read or join each other's.
pub fn unique_names() -> Names {
    let suffix = herald_testkit::unique_suffix();
    let Names {
        sms_topic,
        results_topic,
        dlq_topic,
        sms_group,
        usage_group,
    } = Names::default();
    Names {
        sms_topic: format!("{sms_topic}-{suffix}"),
        results_topic: format!("{results_topic}-{suffix}"),
        dlq_topic: format!("{dlq_topic}-{suffix}"),
        sms_group: format!("{sms_group}-{suffix}"),
        usage_group: format!("{usage_group}-{suffix}"),
    }
}
