//! Helpers every test module of the SDK shares: unique topic names, bounded waits, a
//! subscription that forwards what it handles to a channel, and the choice between an
//! in-process Herald broker and an external Kafka-compatible one (`HERALD_TEST_BOOTSTRAP`).

use std::time::Duration;

use herald::{Event, RetryPolicy, SubscribeBuilder, Subscription};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Bounds every wait, so a broken transport fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(60);

pub use herald_testkit::{external_bootstrap, skip_on_external};

/// A topic name no other test uses, on this broker or a shared external one.
pub fn topic(name: &str) -> String {
    herald_testkit::unique_name(name)
}

/// The next value from `rx`, failing the test if none comes within [`WAIT`].
pub async fn recv<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("the channel closed")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Retries with millisecond backoff, so tests do not wait for the default's.
pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).backoff(Duration::from_millis(1), Duration::from_millis(5))
}

/// Starts `sub` with a handler that forwards every event it handles to the returned channel.
pub async fn forward(sub: SubscribeBuilder) -> (Subscription, UnboundedReceiver<Event>) {
    let (tx, rx) = unbounded_channel();
    let sub = sub
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                tx.send(e).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    (sub, rx)
}
