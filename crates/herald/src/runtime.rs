//! The handler runtime every transport shares: per-key lanes, retries with backoff, dead letters,
//! and graceful shutdown.
//!
//! A transport hands [`Delivery`] values to one dispatcher task in the order they must be
//! handled. The dispatcher puts each on one of `concurrency` lanes chosen by its lane key, so
//! events of one key run one after the other in order while other keys run beside them. A lane
//! retries a failing event (blocking only that lane, which keeps the key's order), then
//! dead-letters it; only then does the transport hear the outcome and acknowledge.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{HandlerError, SubscribeError};
use crate::event::{
    Event, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_TOPIC,
};
use crate::transport::{BoxFuture, Delivery, Outcome, Running, SubscribeSpec, Transport};

/// A user's handler, boxed.
pub(crate) type HandlerFn =
    Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Deliveries queued for one lane before the dispatcher waits.
const LANE_QUEUE_EVENTS_MAX: usize = 16;
/// How long a dead-letter publish may take before it is tried again.
const DEAD_LETTER_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// How a failing handler is retried before its event is dead-lettered.
///
/// ```
/// use std::time::Duration;
/// let p = herald::RetryPolicy::attempts(3).backoff(Duration::from_millis(10), Duration::from_secs(1));
/// assert_eq!(p.delay_after(1), Duration::from_millis(10));
/// assert_eq!(p.delay_after(2), Duration::from_millis(20));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Handler runs per event, the first included (at least 1).
    pub attempts_max: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Each wait is this many times the previous one, up to `backoff_max`.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 200 ms, 400 ms, 800 ms, 1.6 s between them.
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 5,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `n` attempts.
    pub fn attempts(n: u32) -> Self {
        RetryPolicy {
            attempts_max: n.max(1),
            ..Self::default()
        }
    }

    /// No retries: the first failure dead-letters.
    pub fn none() -> Self {
        Self::attempts(1)
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        self.backoff_initial
            .mul_f64(factor.min(1e9))
            .min(self.backoff_max)
    }
}

/// What a subscription has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Events whose handler returned `Ok` (and were acknowledged).
    pub handled: u64,
    /// Handler runs that failed (each retry counts).
    pub failures: u64,
    /// Events given up on and published to the dead-letter topic.
    pub dead_lettered: u64,
    /// Events not acknowledged: refused back to a direct producer, or left for redelivery at
    /// shutdown.
    pub refused: u64,
}

/// Datagrams one publisher sent to a subscription, as the subscription counted them from the
/// publisher's sequence numbers: loss is counted, never hidden. Datagrams lost after the last one
/// received cannot be seen until a later one arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramLoss {
    /// The publishing bus's id ([`crate::Bus::publisher_id`]).
    pub publisher: String,
    /// Distinct datagrams received.
    pub received: u64,
    /// Gaps in the publisher's sequence numbers.
    pub lost: u64,
    /// Datagrams received more than once (dropped).
    pub duplicates: u64,
}

#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    failures: AtomicU64,
    dead_lettered: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SubscriptionStats {
        SubscriptionStats {
            handled: self.handled.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Everything a lane needs.
struct Lanes {
    transport: Arc<dyn Transport>,
    topic: String,
    group: String,
    retry: RetryPolicy,
    dead_letter: Option<String>,
    handler: HandlerFn,
    counters: Arc<Counters>,
    stopping: watch::Receiver<bool>,
}

/// Starts the runtime, then the transport feeding it.
pub(crate) async fn start(
    transport: Arc<dyn Transport>,
    spec: SubscribeSpec,
    concurrency: usize,
    retry: RetryPolicy,
    dead_letter: Option<String>,
    handler: HandlerFn,
) -> Result<Subscription, SubscribeError> {
    if dead_letter.as_deref() == Some(spec.topic.as_str()) {
        return Err(SubscribeError::Invalid(
            "the dead-letter topic must differ from the topic".to_string(),
        ));
    }
    let (sink, deliveries) = mpsc::channel(concurrency.max(1));
    let counters = Arc::new(Counters::default());
    let (stop, stopping) = watch::channel(false);
    let lanes = Arc::new(Lanes {
        transport: transport.clone(),
        topic: spec.topic.clone(),
        group: spec.group.clone(),
        retry,
        dead_letter,
        handler,
        counters: counters.clone(),
        stopping,
    });
    let task = tokio::spawn(dispatch(lanes, deliveries, concurrency.max(1)));
    let running = match transport.subscribe(spec.clone(), sink).await {
        Ok(r) => r,
        Err(e) => {
            task.abort();
            return Err(e);
        }
    };
    tracing::info!(topic = %spec.topic, group = %spec.group, "subscribed");
    Ok(Subscription {
        local_addr: running.local_addr(),
        running: Some(running),
        task: Some(task),
        counters,
        stop,
    })
}

/// Spreads deliveries over lanes by lane key; ends when the transport drops its sender, after
/// every lane finished what it was given.
async fn dispatch(lanes: Arc<Lanes>, mut deliveries: mpsc::Receiver<Delivery>, n: usize) {
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(LANE_QUEUE_EVENTS_MAX);
        senders.push(tx);
        tasks.push(tokio::spawn(lane(lanes.clone(), rx)));
    }
    while let Some(d) = deliveries.recv().await {
        let i = (mix(d.lane) % n as u64) as usize;
        if let Err(mpsc::error::SendError(d)) = senders[i].send(d).await {
            // The lane task ended (it cannot, short of a panic in the runtime itself); refuse
            // rather than drop, so the transport redelivers.
            let _ = d.done.send(Outcome::Nack("handler lane ended".to_string()));
        }
    }
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
}

/// Spreads nearby lane keys (partition numbers) over lanes.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

async fn lane(lanes: Arc<Lanes>, mut rx: mpsc::Receiver<Delivery>) {
    // Even while shutting down, every event already handed out is handled: the transport hands
    // out at most `in_flight_max`, and finishing them lets the final commit cover them all, so a
    // graceful restart hands nothing out twice.
    while let Some(d) = rx.recv().await {
        let outcome = handle(&lanes, d.event).await;
        let _ = d.done.send(outcome);
    }
}

/// Runs the handler until it succeeds, the attempts run out, or shutdown begins.
async fn handle(lanes: &Lanes, event: Event) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let span = tracing::info_span!(
            "herald.handle",
            topic = %lanes.topic,
            group = %lanes.group,
            id = %event.id,
            attempt
        );
        let run = AssertUnwindSafe((lanes.handler)(event.clone()).instrument(span.clone()));
        let result = match run.catch_unwind().await {
            Ok(r) => r,
            Err(_) => Err(HandlerError::retryable("the handler panicked")),
        };
        let error = match result {
            Ok(()) => {
                lanes.counters.handled.fetch_add(1, Ordering::Relaxed);
                return Outcome::Ack;
            }
            Err(e) => e,
        };
        lanes.counters.failures.fetch_add(1, Ordering::Relaxed);
        span.in_scope(
            || tracing::warn!(error = %error, permanent = error.is_permanent(), "handler failed"),
        );
        if error.is_permanent() || attempt >= lanes.retry.attempts_max {
            return dead_letter(lanes, event, &error, attempt).await;
        }
        if !wait_unless_stopping(lanes, lanes.retry.delay_after(attempt)).await {
            lanes.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Outcome::Nack(error.message().to_string());
        }
    }
}

/// Publishes the event to the dead-letter topic (retrying that publish until it succeeds or
/// shutdown begins), or refuses it when there is none.
async fn dead_letter(lanes: &Lanes, event: Event, error: &HandlerError, attempts: u32) -> Outcome {
    let Some(topic) = &lanes.dead_letter else {
        lanes.counters.refused.fetch_add(1, Ordering::Relaxed);
        return Outcome::Nack(error.message().to_string());
    };
    let mut dead = event;
    dead.set_header(HEADER_DLQ_ERROR, error.message().to_string());
    dead.set_header(HEADER_DLQ_ATTEMPTS, attempts.to_string());
    dead.set_header(HEADER_DLQ_TOPIC, lanes.topic.clone());
    dead.set_header(HEADER_DLQ_GROUP, lanes.group.clone());
    let mut tries = 0;
    loop {
        let deadline = SystemTime::now() + DEAD_LETTER_PUBLISH_TIMEOUT;
        match lanes.transport.publish(topic, dead.clone(), deadline).await {
            Ok(_) => {
                lanes.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %dead.id, dlq = %topic, attempts, error = %error, "dead-lettered");
                return Outcome::Ack;
            }
            Err(e) => {
                tries += 1;
                tracing::error!(id = %dead.id, dlq = %topic, error = %e, "dead-letter publish failed; retrying");
                if !wait_unless_stopping(lanes, lanes.retry.delay_after(tries)).await {
                    lanes.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Nack(format!("dead-letter publish failed: {e}"));
                }
            }
        }
    }
}

/// Sleeps for `delay`; false if shutdown began first.
async fn wait_unless_stopping(lanes: &Lanes, delay: Duration) -> bool {
    let mut stopping = lanes.stopping.clone();
    if *stopping.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopping.wait_for(|s| *s) => false,
    }
}

/// A running subscription (or replier). Call [`Subscription::shutdown`] to stop it cleanly: it takes
/// no new events, handles those already handed to it (a bounded number), acknowledges them, and
/// leaves the group; an event waiting to be retried is left for redelivery instead. Dropping it
/// stops it the same way in the background.
pub struct Subscription {
    running: Option<Box<dyn Running>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Subscription {
    /// A replier whose transport runs handlers itself (direct requests).
    pub(crate) fn without_runtime(running: Box<dyn Running>) -> Self {
        let (stop, _) = watch::channel(false);
        Subscription {
            local_addr: running.local_addr(),
            running: Some(running),
            task: None,
            counters: Arc::new(Counters::default()),
            stop,
        }
    }

    /// What this subscription has done so far.
    pub fn stats(&self) -> SubscriptionStats {
        self.counters.snapshot()
    }

    /// Direct and datagram: the address this member serves on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Datagram transport: what each publisher sent here, received and lost so far (empty on
    /// other transports). Read it before [`Subscription::shutdown`].
    pub fn datagram_loss(&self) -> Vec<DatagramLoss> {
        self.running
            .as_ref()
            .map(|r| r.datagram_loss())
            .unwrap_or_default()
    }

    /// Stops taking events, lets in-flight handlers finish, commits, and leaves the group.
    pub async fn shutdown(mut self) -> Result<SubscriptionStats, SubscribeError> {
        let _ = self.stop.send(true);
        let result = match self.running.take() {
            Some(running) => running.close().await,
            None => Ok(()),
        };
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result.map(|()| self.counters.snapshot())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(running) = self.running.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                if let Err(e) = running.close().await {
                    tracing::warn!(error = %e, "closing a dropped subscription failed");
                }
            });
        }
    }
}
