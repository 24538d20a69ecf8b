//! Shared helpers: a recording handler and polling with a bounded deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_direct::{
    BoxFuture, Handler, Member, MemberConfig, Publisher, PublisherConfig, Received,
};
use parking_lot::Mutex;

/// Records every handled event's value; optionally slow, optionally failing (and then records
/// the events it failed).
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Received>>,
    pub failed: Mutex<Vec<Received>>,
    pub delay: Duration,
    pub fail: bool,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }
    pub fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Recorder {
            delay,
            ..Recorder::default()
        })
    }
    pub fn values(&self) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect()
    }
}

pub struct Shared(pub Arc<Recorder>);

impl Handler for Shared {
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), herald_direct::HandlerError>> {
        let rec = self.0.clone();
        Box::pin(async move {
            if !rec.delay.is_zero() {
                tokio::time::sleep(rec.delay).await;
            }
            if rec.fail {
                rec.failed.lock().push(event);
                return Err("refusing on purpose".into());
            }
            rec.seen.lock().push(event);
            Ok(())
        })
    }
}

pub async fn member(topic: &str, group: &str, capacity: u32, rec: &Arc<Recorder>) -> Member {
    let mut config = MemberConfig::new(topic, group, "127.0.0.1:0".parse().unwrap());
    config.capacity = capacity;
    Member::start(config, Arc::new(Shared(rec.clone())))
        .await
        .unwrap()
}

pub async fn publisher(members: &[&Member]) -> Publisher {
    let config = PublisherConfig::new(members.iter().map(|m| m.local_addr()).collect());
    Publisher::start(config).await.unwrap()
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the publisher sees `n` members up.
pub async fn wait_up(publisher: &Publisher, n: usize) {
    let p = publisher.clone();
    assert!(
        eventually(Duration::from_secs(10), move || {
            p.members()
                .iter()
                .filter(|m| m.state == herald_direct::MemberState::Up)
                .count()
                >= n
        })
        .await,
        "members never came up: {:?}",
        publisher.members()
    );
}

pub fn counts(values: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in values {
        *out.entry(v.clone()).or_insert(0) += 1;
    }
    out
}
