//! The in-process transport: topics are bounded in-memory logs with consumer groups and
//! committed offsets, so tests get the broker's semantics (stored receipts, ack after handle,
//! redelivery of what was not acknowledged, dead letters) without a broker.
//!
//! Each topic is one log. Within a group an event goes to one subscription; events of one key
//! are never handed to two subscriptions at once, so per-key order holds across the group as it
//! does on the broker (where a key lives in one partition, owned by one member).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::bus::BusConfig;
use crate::error::{ConnectError, PublishError, SubscribeError};
use crate::event::Event;
use crate::receipt::{Completed, Receipt};
use crate::transport::{
    BoxFuture, Delivery, Outcome, Running, StartFrom, SubscribeSpec, Transport, TransportKind,
};

/// Default events a memory topic keeps; the oldest are dropped beyond it, as retention would.
pub const TOPIC_EVENTS_MAX_DEFAULT: usize = 1_000_000;

/// Named stores, shared by every bus connected to `memory://NAME` in this process.
fn registry() -> &'static Mutex<HashMap<String, Weak<Store>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Store>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

pub(crate) fn connect(config: &BusConfig) -> Result<Arc<dyn Transport>, ConnectError> {
    let mut events_max = TOPIC_EVENTS_MAX_DEFAULT;
    for (name, value) in &config.options {
        match name.as_str() {
            "topic_events_max" => {
                events_max = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConnectError::BadOption {
                        name: name.clone(),
                        reason: "expected a positive number of events".to_string(),
                    }
                })?
            }
            _ => {
                return Err(ConnectError::BadOption {
                    name: name.clone(),
                    reason: "the memory transport takes only topic_events_max".to_string(),
                });
            }
        }
    }
    let store = if config.target.is_empty() {
        Arc::new(Store::new(events_max))
    } else {
        let mut reg = registry().lock();
        reg.retain(|_, w| w.strong_count() > 0);
        match reg.get(&config.target).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(Store::new(events_max));
                reg.insert(config.target.clone(), Arc::downgrade(&s));
                s
            }
        }
    };
    Ok(Arc::new(MemoryTransport {
        store,
        closed: AtomicBool::new(false),
    }))
}

struct Store {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    events_max: usize,
    next_member: AtomicU64,
}

impl Store {
    fn new(events_max: usize) -> Self {
        Store {
            topics: Mutex::new(HashMap::new()),
            events_max,
            next_member: AtomicU64::new(1),
        }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        self.topics
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Topic {
                    state: Mutex::new(TopicState {
                        base: 0,
                        events: VecDeque::new(),
                        groups: HashMap::new(),
                    }),
                    changed: Notify::new(),
                })
            })
            .clone()
    }
}

struct Topic {
    state: Mutex<TopicState>,
    /// Woken on every publish, acknowledgement and redelivery.
    changed: Notify,
}

struct TopicState {
    /// Offset of `events[0]`.
    base: u64,
    events: VecDeque<(Event, u64)>,
    groups: HashMap<String, GroupState>,
}

impl TopicState {
    fn end(&self) -> u64 {
        self.base + self.events.len() as u64
    }
}

#[derive(Default)]
struct GroupState {
    /// Every offset below this is acknowledged.
    committed: u64,
    /// The next offset never handed out.
    next: u64,
    /// Acknowledged offsets above `committed`.
    acked: BTreeSet<u64>,
    /// Offsets to hand out again first: refused by a subscription that has since left.
    redeliver: BTreeSet<u64>,
    /// Offsets refused by a subscription still in the group, and which one. As a broker partition
    /// stays with its member, they wait until that subscription leaves, then go to the others.
    refused: BTreeMap<u64, u64>,
    /// Lanes in flight: which subscription holds them and how many events.
    lanes: HashMap<u64, (u64, usize)>,
    members: usize,
}

impl GroupState {
    /// Moves offsets forward past events dropped by the size limit.
    fn clamp(&mut self, base: u64) {
        if self.committed < base {
            self.committed = base;
            self.acked.retain(|o| *o >= base);
        }
        self.next = self.next.max(base);
        self.redeliver.retain(|o| *o >= base);
        self.refused.retain(|o, _| *o >= base);
    }

    fn lane_free_for(&self, lane: u64, member: u64) -> bool {
        self.lanes.get(&lane).is_none_or(|(m, _)| *m == member)
    }

    fn hold_lane(&mut self, lane: u64, member: u64) {
        self.lanes.entry(lane).or_insert((member, 0)).1 += 1;
    }

    fn release_lane(&mut self, lane: u64) {
        if let Some(entry) = self.lanes.get_mut(&lane) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.lanes.remove(&lane);
            }
        }
    }
}

fn lane_of(event: &Event) -> u64 {
    let mut h = DefaultHasher::new();
    match &event.key {
        Some(k) => k.hash(&mut h),
        // Keyless events promise no order: spread them.
        None => event.id.hash(&mut h),
    }
    h.finish()
}

struct MemoryTransport {
    store: Arc<Store>,
    closed: AtomicBool,
}

impl Transport for MemoryTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event: Event,
        _deadline: SystemTime,
    ) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(PublishError::Closed);
            }
            let t = self.store.topic(topic);
            let id = event.id;
            let offset = {
                let mut s = t.state.lock();
                let offset = s.end();
                let lane = lane_of(&event);
                s.events.push_back((event, lane));
                while s.events.len() > self.store.events_max {
                    s.events.pop_front();
                    s.base += 1;
                }
                let base = s.base;
                for g in s.groups.values_mut() {
                    g.clamp(base);
                }
                offset
            };
            t.changed.notify_waiters();
            Ok(Receipt {
                id,
                completed: Completed::Stored {
                    partition: 0,
                    offset: i64::try_from(offset).unwrap_or(i64::MAX),
                },
            })
        })
    }

    fn subscribe(
        &self,
        spec: SubscribeSpec,
        sink: mpsc::Sender<Delivery>,
    ) -> BoxFuture<'_, Result<Box<dyn Running>, SubscribeError>> {
        Box::pin(async move {
            if spec.bind.is_some() {
                return Err(SubscribeError::Invalid(
                    "bind applies to the direct and datagram transports only".to_string(),
                ));
            }
            let topic = self.store.topic(&spec.topic);
            let member = self.store.next_member.fetch_add(1, Ordering::Relaxed);
            {
                let mut s = topic.state.lock();
                let (base, end) = (s.base, s.end());
                let g = s.groups.entry(spec.group.clone()).or_insert_with(|| {
                    let start = match spec.start_from {
                        StartFrom::Earliest => base,
                        StartFrom::Latest => end,
                    };
                    GroupState {
                        committed: start,
                        next: start,
                        ..GroupState::default()
                    }
                });
                g.members += 1;
            }
            let in_flight = Arc::new(Semaphore::new(spec.in_flight_max.max(1)));
            let (stop, stopping) = watch::channel(false);
            let feeder = tokio::spawn(feed(
                topic.clone(),
                spec.group.clone(),
                member,
                in_flight.clone(),
                stopping,
                sink,
            ));
            Ok(Box::new(MemorySubscription {
                topic,
                member,
                group: spec.group,
                in_flight,
                in_flight_max: spec.in_flight_max.max(1),
                stop,
                feeder,
            }) as Box<dyn Running>)
        })
    }

    fn dead_letter_default(&self, topic: &str) -> Option<String> {
        Some(format!("{topic}.dlq"))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async {})
    }
}

/// Hands this subscription's share of the group's events to the runtime until stopped.
async fn feed(
    topic: Arc<Topic>,
    group: String,
    member: u64,
    in_flight: Arc<Semaphore>,
    mut stopping: watch::Receiver<bool>,
    sink: mpsc::Sender<Delivery>,
) {
    loop {
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopping.wait_for(|s| *s) => return,
        };
        let taken = tokio::select! {
            t = take(&topic, &group, member) => t,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let Some((offset, lane, event)) = taken else {
            return;
        };
        let (done, outcome) = oneshot::channel();
        let delivery = Delivery { event, lane, done };
        if sink.send(delivery).await.is_err() {
            // The runtime is gone: give the event back.
            settle(&topic, &group, member, offset, lane, false);
            return;
        }
        let topic = topic.clone();
        let group = group.clone();
        tokio::spawn(async move {
            let acked = matches!(outcome.await, Ok(Outcome::Ack));
            settle(&topic, &group, member, offset, lane, acked);
            drop(permit);
        });
    }
}

/// Waits for the next event this subscription may take: a refused one first, else the next new
/// one, unless another subscription of the group holds its key. `None` if the group vanished.
async fn take(topic: &Topic, group: &str, member: u64) -> Option<(u64, u64, Event)> {
    loop {
        let notified = topic.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut s = topic.state.lock();
            let base = s.base;
            let end = s.end();
            let TopicState { events, groups, .. } = &mut *s;
            let g = groups.get_mut(group)?;
            g.clamp(base);
            let candidate = g
                .redeliver
                .first()
                .copied()
                .or((g.next < end).then_some(g.next));
            if let Some(offset) = candidate {
                let index = usize::try_from(offset - base).unwrap_or(usize::MAX);
                if let Some((event, lane)) = events.get(index) {
                    let lane = *lane;
                    if g.lane_free_for(lane, member) {
                        if !g.redeliver.remove(&offset) {
                            g.next += 1;
                        }
                        g.hold_lane(lane, member);
                        return Some((offset, lane, event.clone()));
                    }
                }
            }
        }
        notified.await;
    }
}

/// Records the outcome of one handed-out event.
fn settle(topic: &Topic, group: &str, member: u64, offset: u64, lane: u64, acked: bool) {
    {
        let mut s = topic.state.lock();
        let base = s.base;
        let Some(g) = s.groups.get_mut(group) else {
            return;
        };
        g.release_lane(lane);
        if offset >= base {
            if acked {
                g.acked.insert(offset);
                while g.acked.remove(&g.committed) {
                    g.committed += 1;
                }
            } else {
                g.refused.insert(offset, member);
            }
        }
    }
    topic.changed.notify_waiters();
}

struct MemorySubscription {
    topic: Arc<Topic>,
    member: u64,
    group: String,
    in_flight: Arc<Semaphore>,
    in_flight_max: usize,
    stop: watch::Sender<bool>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Running for MemorySubscription {
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), SubscribeError>> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let _ = self.feeder.await;
            // Every permit back means every handed-out event has its outcome.
            let n = u32::try_from(self.in_flight_max).unwrap_or(u32::MAX);
            let _ = self.in_flight.acquire_many(n).await;
            {
                let mut s = self.topic.state.lock();
                if let Some(g) = s.groups.get_mut(&self.group) {
                    g.members = g.members.saturating_sub(1);
                    let member = self.member;
                    let mine: Vec<u64> = g
                        .refused
                        .iter()
                        .filter(|(_, m)| **m == member)
                        .map(|(o, _)| *o)
                        .collect();
                    for o in mine {
                        g.refused.remove(&o);
                        g.redeliver.insert(o);
                    }
                    if g.members == 0 {
                        // As after a rebalance on the broker, whatever is not committed is
                        // handed out again from the committed offset.
                        g.next = g.committed;
                        g.acked.clear();
                        g.redeliver.clear();
                        g.refused.clear();
                    }
                }
            }
            self.topic.changed.notify_waiters();
            Ok(())
        })
    }
}
