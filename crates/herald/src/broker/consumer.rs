//! One broker subscription: a librdkafka consumer on its own thread that hands records to the
//! handler runtime and commits, per partition, only the offsets the runtime acknowledged.
//!
//! Only this thread polls the consumer, so librdkafka's rebalance callbacks run on it and may
//! block briefly: on a revocation it waits for the revoked partitions' deliveries to finish and
//! commits them before the partitions move. Outcomes come back from the runtime
//! through a channel that the thread drains between polls; acknowledged offsets are committed
//! asynchronously every `commit_interval`, and synchronously on revocation and on close (where
//! every commit point is sent again, since a failed asynchronous commit is not reported).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};

use super::transport_error;
use crate::error::SubscribeError;
use crate::event::{Event, unix_ms_to_system};
use crate::transport::{BoxFuture, Delivery, Outcome, Running, StartFrom, SubscribeSpec};

/// Longest single wait of the thread, so it notices `close` and due commits promptly.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How many records finished but not yet committable (behind one in flight) weigh as one
/// outstanding delivery: a subscription holds at most `in_flight_max` times this many.
const UNCOMMITTED_PER_DELIVERY: usize = 256;
/// How long a full subscription waits for room before it pauses its partitions.
const FULL_WAIT_BEFORE_PAUSE: Duration = Duration::from_millis(500);
/// How long a revocation waits for the revoked partitions' deliveries before it commits what
/// was acknowledged and lets them go (the rest is read again by the next owner).
const REVOKE_WAIT: Duration = Duration::from_secs(10);
/// How long `close` waits for deliveries already handed out before its final commit.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// How long `close` waits for the broker to confirm its last commit.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one offset lookup (committed offsets, a partition's end) may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long subscribing with `StartFrom::Latest` waits for the group to assign partitions.
const ASSIGN_WAIT: Duration = Duration::from_secs(30);

/// The runtime's verdict on one delivered record.
struct Finished {
    partition: i32,
    offset: i64,
    acked: bool,
}

/// A record read from the broker, not yet handed to the runtime.
struct Record {
    partition: i32,
    offset: i64,
    lane: u64,
    event: Event,
}

/// What the consumer thread and its callbacks share. Both run on the thread, so the lock is
/// never contended; it exists because librdkafka requires a `Sync` context.
struct Shared {
    topic: String,
    /// Partitions without a committed offset start at their end (`StartFrom::Latest`).
    latest: bool,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Becomes true once the first assignment (possibly empty) took effect.
    assigned: watch::Sender<bool>,
}

struct State {
    tracker: super::offsets::OffsetTracker,
    outcomes: std_mpsc::Receiver<Finished>,
    /// Deliveries handed to the runtime whose outcome has not arrived.
    outstanding: usize,
    /// Records polled while the partitions were paused. librdkafka purges its prefetch queue on
    /// pause, so this holds at most what was already on its way to the application.
    held: VecDeque<Record>,
    /// Whether the assigned partitions are paused because `in_flight_max` was reached.
    paused: bool,
}

impl State {
    fn record(&mut self, f: Finished) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.tracker.finished(f.partition, f.offset, f.acked);
    }

    fn drain(&mut self) {
        while let Ok(f) = self.outcomes.try_recv() {
            self.record(f);
        }
    }

    /// Waits up to `wait` for one outcome, then takes any others already there.
    fn wait_one(&mut self, wait: Duration) {
        if let Ok(f) = self.outcomes.recv_timeout(wait) {
            self.record(f);
        }
        self.drain();
    }
}

impl Shared {
    /// Waits (at most `wait`) until `done` holds, taking outcomes as they arrive.
    fn wait_until(&self, wait: Duration, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock();
        st.drain();
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    topic = %self.topic,
                    outstanding = st.outstanding,
                    "gave up waiting for handlers {what}; their events will be delivered again"
                );
                return;
            }
            st.wait_one((deadline - now).min(POLL_WAIT));
        }
    }
}

struct SubContext {
    shared: Arc<Shared>,
}

impl ClientContext for SubContext {}

impl ConsumerContext for SubContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.shared.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let in_flight = self.shared.state.lock().tracker.in_flight(&partitions);
                tracing::debug!(topic = %self.shared.topic, ?partitions, in_flight, "partitions revoked; waiting for their deliveries");
                self.shared
                    .wait_until(REVOKE_WAIT, "of revoked partitions", |st| {
                        st.tracker.in_flight(&partitions) == 0
                    });
                let commits = {
                    let mut st = self.shared.state.lock();
                    st.held.retain(|r| !partitions.contains(&r.partition));
                    st.tracker.revoke(&partitions)
                };
                if let Err(e) = commit(consumer, &self.shared.topic, &commits, CommitMode::Sync) {
                    tracing::warn!(topic = %self.shared.topic, error = %e, "commit on revocation failed; the next owner reads those events again");
                }
            }
            Rebalance::Assign(tpl) if self.shared.latest => {
                start_at_end(&self.shared, consumer, tpl)
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(topic = %self.shared.topic, error = %e, "rebalance failed")
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::debug!(topic = %self.shared.topic, partitions = tpl.count(), "partitions assigned");
            // Newly assigned partitions start unpaused; keep them in step with the rest.
            let paused = self.shared.state.lock().paused;
            if paused && let Err(e) = consumer.pause(tpl) {
                tracing::warn!(topic = %self.shared.topic, error = %e, "pausing assigned partitions failed");
            }
            self.shared.assigned.send_replace(true);
        }
    }
}

/// Sets the start of every assigned partition the group never committed to its current end.
///
/// `auto.offset.reset=latest` alone resolves "the end" only when fetching starts, after the
/// assignment, so events published between `subscribe` returning and that moment would be
/// skipped; resolving it here, before `subscribe` returns, makes "latest" mean "after the
/// subscription started". Where a lookup fails the partition falls back to the reset policy.
/// The start points chosen are committed too, so the group keeps them if it leaves before
/// handling anything there.
fn start_at_end(shared: &Shared, consumer: &BaseConsumer<SubContext>, tpl: &TopicPartitionList) {
    let topic = shared.topic.as_str();
    let committed = match consumer.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "reading committed offsets failed");
            return;
        }
    };
    let mut starts = Vec::new();
    for mut elem in tpl.elements_for_topic(topic) {
        let partition = elem.partition();
        let has_commit = committed
            .find_partition(topic, partition)
            .is_some_and(|c| matches!(c.offset(), Offset::Offset(_)));
        if has_commit {
            continue;
        }
        match consumer.fetch_watermarks(topic, partition, LOOKUP_TIMEOUT) {
            Ok((_, high)) => match elem.set_offset(Offset::Offset(high)) {
                Ok(()) => starts.push((partition, high)),
                Err(e) => {
                    tracing::warn!(%topic, partition, error = %e, "setting the start offset failed")
                }
            },
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "reading the partition's end failed")
            }
        }
    }
    let mut st = shared.state.lock();
    for (partition, offset) in starts {
        st.tracker.start_at(partition, offset);
    }
}

fn commit(
    consumer: &BaseConsumer<SubContext>,
    topic: &str,
    offsets: &[(i32, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}

/// The subscription as the runtime holds it.
pub(crate) struct BrokerSubscription {
    shared: Arc<Shared>,
    finished: oneshot::Receiver<Result<(), SubscribeError>>,
}

impl Running for BrokerSubscription {
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SubscribeError>> {
        self.shared.stop.store(true, Ordering::Release);
        Box::pin(async move {
            match self.finished.await {
                Ok(result) => result,
                Err(_) => Err(transport_error(
                    "the consumer thread ended without reporting".to_string(),
                )),
            }
        })
    }
}

/// Creates the group consumer for `spec` and starts its thread. With `StartFrom::Latest` it
/// returns once the group assigned this member its partitions (within [`ASSIGN_WAIT`]), so
/// every event published afterwards is seen.
pub(crate) async fn start(
    base: &ClientConfig,
    spec: SubscribeSpec,
    sink: mpsc::Sender<Delivery>,
    commit_interval: Duration,
) -> Result<BrokerSubscription, SubscribeError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| transport_error(format!("a subscription needs a tokio runtime: {e}")))?;
    let mut config = base.clone();
    config
        .set("group.id", &spec.group)
        // Offsets move only when the runtime acknowledged, through explicit commits.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            match spec.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    let (outcomes_tx, outcomes_rx) = std_mpsc::channel();
    let (assigned, mut assigned_rx) = watch::channel(false);
    let latest = spec.start_from == StartFrom::Latest;
    let shared = Arc::new(Shared {
        topic: spec.topic.clone(),
        latest,
        assigned,
        stop: AtomicBool::new(false),
        state: Mutex::new(State {
            tracker: Default::default(),
            outcomes: outcomes_rx,
            outstanding: 0,
            held: VecDeque::new(),
            paused: false,
        }),
    });
    let consumer: BaseConsumer<SubContext> = config
        .create_with_context(SubContext {
            shared: shared.clone(),
        })
        .map_err(|e| SubscribeError::Invalid(format!("consumer settings: {e}")))?;
    consumer
        .subscribe(&[spec.topic.as_str()])
        .map_err(|e| transport_error(format!("subscribing to {:?}: {e}", spec.topic)))?;
    let (finished_tx, finished) = oneshot::channel();
    let worker = Worker {
        consumer: Arc::new(consumer),
        shared: shared.clone(),
        sink,
        outcomes: outcomes_tx,
        runtime,
        in_flight_max: spec.in_flight_max.max(1),
        commit_interval,
    };
    std::thread::Builder::new()
        .name("herald-consumer".to_string())
        .spawn(move || {
            let _ = finished_tx.send(worker.run());
        })
        .map_err(|e| transport_error(format!("cannot start the consumer thread: {e}")))?;
    if latest {
        let waited = tokio::time::timeout(ASSIGN_WAIT, assigned_rx.wait_for(|a| *a)).await;
        if waited.is_err() {
            tracing::warn!(topic = %spec.topic, group = %spec.group, "no partitions assigned yet; events published before they are may be skipped");
        }
    }
    Ok(BrokerSubscription { shared, finished })
}

struct Worker {
    /// Shared only with the thread that makes the final commit (see `Worker::final_commit`).
    consumer: Arc<BaseConsumer<SubContext>>,
    shared: Arc<Shared>,
    sink: mpsc::Sender<Delivery>,
    outcomes: std_mpsc::Sender<Finished>,
    runtime: tokio::runtime::Handle,
    in_flight_max: usize,
    commit_interval: Duration,
}

impl Worker {
    fn run(self) -> Result<(), SubscribeError> {
        let topic = self.shared.topic.clone();
        let mut last_commit = Instant::now();
        // When the subscription last became full (`in_flight_max` deliveries outstanding).
        let mut full_since: Option<Instant> = None;
        // Reading resumes once half the in-flight room is free, so a full subscription does
        // not pause and resume for every single event.
        let resume_at = self.in_flight_max / 2;
        loop {
            // A closed sink means the runtime is gone (its subscription was dropped with the
            // tokio runtime): nothing more can be handled.
            if self.shared.stop.load(Ordering::Acquire) || self.sink.is_closed() {
                break;
            }
            let (outstanding, paused) = {
                let mut st = self.shared.state.lock();
                st.drain();
                // Records finished behind one still in flight wait in the tracker until it is
                // done; past a bound they count as outstanding, so reading stops until it is.
                let held_back = st.tracker.uncommitted() / UNCOMMITTED_PER_DELIVERY;
                (st.outstanding.max(held_back), st.paused)
            };
            if last_commit.elapsed() >= self.commit_interval {
                let commits = self.shared.state.lock().tracker.take_commits();
                if let Err(e) = commit(&self.consumer, &topic, &commits, CommitMode::Async) {
                    tracing::warn!(%topic, error = %e, "offset commit failed; retrying at the next commit");
                    let mut st = self.shared.state.lock();
                    for (p, o) in commits {
                        st.tracker.commit_failed(p, o);
                    }
                }
                last_commit = Instant::now();
            }
            if !paused && outstanding >= self.in_flight_max {
                // Handlers usually free room within moments, and the records librdkafka
                // prefetched are then read at once; pausing would drop them and cost a fetch
                // round trip per resume. Only a subscription full for longer pauses, so that
                // it keeps polling (rebalances, liveness) without taking records.
                let since = *full_since.get_or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited >= FULL_WAIT_BEFORE_PAUSE {
                    self.set_paused(true);
                } else {
                    let left = FULL_WAIT_BEFORE_PAUSE - waited;
                    self.shared.state.lock().wait_one(left.min(POLL_WAIT));
                }
                continue;
            }
            full_since = None;
            if paused {
                if outstanding <= resume_at {
                    self.set_paused(false);
                    continue;
                }
                self.shared.state.lock().wait_one(POLL_WAIT);
                // Serve rebalance and commit callbacks; a record may still arrive from before
                // the pause took effect.
                if let Some(Ok(m)) = self.consumer.poll(Duration::ZERO) {
                    let r = record_of(&m);
                    self.shared.state.lock().held.push_back(r);
                }
                continue;
            }
            let held = self.shared.state.lock().held.pop_front();
            let next = match held {
                Some(r) => Some(r),
                None => match self.consumer.poll(POLL_WAIT) {
                    None => None,
                    Some(Ok(m)) => Some(record_of(&m)),
                    Some(Err(e)) => {
                        tracing::warn!(%topic, error = %e, "consumer error");
                        None
                    }
                },
            };
            if let Some(r) = next
                && !self.deliver(r)
            {
                break;
            }
        }
        self.finish()
    }

    /// Hands one record to the runtime; false if the runtime is gone.
    fn deliver(&self, r: Record) -> bool {
        let (done, outcome) = oneshot::channel();
        {
            let mut st = self.shared.state.lock();
            st.tracker.delivered(r.partition, r.offset);
            st.outstanding += 1;
        }
        let delivery = Delivery {
            event: r.event,
            lane: r.lane,
            done,
        };
        if self.sink.blocking_send(delivery).is_err() {
            let mut st = self.shared.state.lock();
            st.record(Finished {
                partition: r.partition,
                offset: r.offset,
                acked: false,
            });
            return false;
        }
        let outcomes = self.outcomes.clone();
        let (partition, offset) = (r.partition, r.offset);
        self.runtime.spawn(async move {
            // A runtime that dropped the delivery without an answer did not handle it.
            let acked = matches!(outcome.await, Ok(Outcome::Ack));
            let _ = outcomes.send(Finished {
                partition,
                offset,
                acked,
            });
        });
        true
    }

    fn set_paused(&self, pause: bool) {
        let result = self.consumer.assignment().and_then(|assigned| {
            if pause {
                self.consumer.pause(&assigned)
            } else {
                self.consumer.resume(&assigned)
            }
        });
        match result {
            Ok(()) => {
                tracing::debug!(topic = %self.shared.topic, pause, "in-flight limit: partitions paused or resumed")
            }
            Err(e) => {
                tracing::warn!(topic = %self.shared.topic, error = %e, pause, "pausing or resuming partitions failed")
            }
        }
        self.shared.state.lock().paused = pause;
    }

    /// Waits for the deliveries handed out, commits what they acknowledged, leaves the group.
    fn finish(self) -> Result<(), SubscribeError> {
        if self.sink.is_closed() {
            // The runtime is gone with its handlers: no outcome will come; take what did.
            self.shared.state.lock().drain();
        } else {
            self.shared
                .wait_until(CLOSE_WAIT, "at close", |st| st.outstanding == 0);
        }
        // Whatever is still outstanding will not be committed by this member; forgetting it
        // keeps the revocation that closing the consumer triggers from waiting for it again.
        let commits = self.shared.state.lock().tracker.revoke_all();
        let committed = self.final_commit(commits);
        self.consumer.unsubscribe();
        // Leave while the consumer is still open: this poll hands the revocation that
        // unsubscribing triggers to our callback (which finds nothing left to commit), so the
        // close below finds nothing assigned. A close with partitions still assigned revokes
        // them from inside itself, where librdkafka's unassign can wait forever for an answer
        // (librdkafka issue 4884). Messages polled now are not handed out: nothing commits
        // them, and the member that takes the partition over reads them.
        let until = Instant::now() + REVOKE_WAIT;
        while Instant::now() < until
            && self
                .consumer
                .assignment()
                .is_ok_and(|assigned| assigned.count() > 0)
        {
            let _ = self.consumer.poll(POLL_WAIT);
        }
        // Dropping the consumer closes it and sends LeaveGroup, so the group rebalances at once.
        drop(self.consumer);
        committed.map_err(|e| transport_error(format!("final offset commit failed: {e}")))
    }

    /// Commits `commits` synchronously, waiting at most [`FINAL_COMMIT_TIMEOUT`].
    ///
    /// librdkafka's synchronous commit waits for a group coordinator as long as none answers
    /// (45 s with the broker gone), and asynchronous commits report back through no callback
    /// in this rdkafka version, so the synchronous commit runs on a thread of its own. If it
    /// outlasts the wait, that thread keeps the consumer until librdkafka gives up.
    fn final_commit(&self, commits: Vec<(i32, i64)>) -> Result<(), String> {
        if commits.is_empty() {
            return Ok(());
        }
        let (tx, rx) = std_mpsc::channel();
        let consumer = self.consumer.clone();
        let topic = self.shared.topic.clone();
        std::thread::Builder::new()
            .name("herald-commit".to_string())
            .spawn(move || {
                let _ = tx.send(commit(&consumer, &topic, &commits, CommitMode::Sync));
            })
            .map_err(|e| format!("cannot start the commit thread: {e}"))?;
        match rx.recv_timeout(FINAL_COMMIT_TIMEOUT) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "the broker did not confirm it within {} s",
                FINAL_COMMIT_TIMEOUT.as_secs()
            )),
        }
    }
}

fn record_of(m: &BorrowedMessage<'_>) -> Record {
    let key = m.key().map(Bytes::copy_from_slice);
    let payload = m.payload().map(Bytes::copy_from_slice).unwrap_or_default();
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let timestamp = m
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(unix_ms_to_system);
    // One key's events share a partition and arrive in offset order, so hashing the key keeps
    // them in one lane; keyless records keep their partition's order instead.
    let lane = match &key {
        Some(k) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            h.finish()
        }
        None => u64::try_from(m.partition()).unwrap_or(0),
    };
    Record {
        partition: m.partition(),
        offset: m.offset(),
        lane,
        event: Event::from_wire(key, payload, headers, timestamp),
    }
}
