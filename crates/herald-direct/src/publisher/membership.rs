//! The membership a publisher keeps (members by address, their hello, state and load) and the
//! choice of a member for each delivery: least loaded within a group, failing over with the same
//! event id on nack, timeout or a lost connection.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{Conn, Out, Outcome, fail_pending, supervise};
use super::{MemberState, Shared, Source, WAITING_FOR_MEMBER, WAITING_FOR_REPLY, WAITING_FOR_ROOM};
use crate::conn_writer::{Closed, Inline};
use crate::error::PublishError;
use crate::event::Reply;
use crate::frame::{Hello, NackReason, WireEvent};

pub(super) struct Slot {
    pub(super) source: Source,
    pub(super) state: MemberState,
    pub(super) hello: Option<Hello>,
    pub(super) conn: Option<Arc<Conn>>,
    /// Events and requests sent to this member and not yet answered: one [`InFlight`] each.
    pub(super) in_flight: u32,
    /// Which slot for this address this is: a delivery gives its capacity back to the slot it
    /// took it from, not to one added later for the same address.
    pub(super) epoch: u64,
    pub(super) last_error: Option<String>,
    pub(super) task: Option<JoinHandle<()>>,
    pub(super) datagram_seq: u64,
    pub(super) mdns_name: Option<String>,
    /// The first connection attempt has finished (hello received or failed).
    pub(super) settled: bool,
}

impl Slot {
    /// Stops the slot's connection task and fails what was sent on its connection, for a
    /// member that is removed from the membership.
    pub(super) fn retire(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(conn) = self.conn.take() {
            fail_pending(&conn);
        }
    }
}

impl Shared {
    pub(super) fn has_live(&self, topic: &str) -> bool {
        self.members.lock().values().any(|s| {
            s.state == MemberState::Up && s.hello.as_ref().is_some_and(|h| h.topic == topic)
        })
    }

    /// Groups serving `topic`: those of every member that said hello and has not left
    /// (members that are down still count, so their group fails loudly instead of being skipped).
    fn groups(&self, topic: &str) -> BTreeSet<String> {
        self.members
            .lock()
            .values()
            .filter(|s| s.state != MemberState::Left)
            .filter_map(|s| s.hello.as_ref())
            .filter(|h| h.topic == topic)
            .map(|h| h.group.clone())
            .collect()
    }

    /// Every static peer has been tried at least once.
    pub(super) fn static_settled(&self) -> bool {
        self.members
            .lock()
            .values()
            .all(|s| s.source != Source::Static || s.settled)
    }

    /// The groups serving `topic`, once the static peers have all been tried: an event published
    /// right after start must not skip a group whose hello is still on its way.
    pub(super) async fn groups_until(&self, topic: &str, at: Instant) -> Option<BTreeSet<String>> {
        loop {
            let changed = self.changed.notified();
            let groups = self.groups(topic);
            if !groups.is_empty() && self.static_settled() {
                return Some(groups);
            }
            if tokio::time::timeout_at(at, changed).await.is_err() {
                return (!groups.is_empty()).then_some(groups);
            }
        }
    }

    /// One live member of every group serving `topic` (rotating within a group), each with the
    /// next datagram sequence number for that member, appended to `out`.
    pub(super) fn datagram_targets(&self, topic: &str, out: &mut Vec<(SocketAddr, u64)>) {
        let mut members = self.members.lock();
        let mut live: Vec<(&str, u128, SocketAddr)> = members
            .iter()
            .filter(|(_, s)| s.state == MemberState::Up)
            .filter_map(|(addr, s)| s.hello.as_ref().map(|h| (h, *addr)))
            .filter(|(h, _)| h.topic == topic)
            .map(|(h, addr)| (h.group.as_str(), h.member_id, addr))
            .collect();
        live.sort_unstable();
        // A member known at several addresses (mDNS announces one per interface) is one
        // destination, always reached at the same address: otherwise each address would count
        // its own sequence numbers and the member would see duplicates instead of a sequence.
        live.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut chosen: Vec<(u128, SocketAddr)> = Vec::new();
        for group in live.chunk_by(|a, b| a.0 == b.0) {
            let (_, member_id, addr) = group[turn % group.len()];
            chosen.push((member_id, addr));
        }
        drop(live);
        for (member_id, addr) in chosen {
            // Sequence numbers count per destination member, so each member sees a gap-free
            // sequence when nothing is lost, whatever the load balancing does. A member known
            // at several addresses shares one count over all of them, so a change of address
            // (one coming up later, another going down) does not restart it.
            let same_member = |s: &Slot| s.hello.as_ref().is_some_and(|h| h.member_id == member_id);
            let next = members
                .values()
                .filter(|s| same_member(s))
                .map(|s| s.datagram_seq)
                .max()
                .unwrap_or(0)
                + 1;
            for slot in members.values_mut().filter(|s| same_member(s)) {
                slot.datagram_seq = next;
            }
            if members.contains_key(&addr) {
                out.push((addr, next));
            }
        }
    }

    fn pick(&self, topic: &str, group: &str, tried: &HashSet<SocketAddr>) -> Pick<'_> {
        let mut members = self.members.lock();
        let mut live = false;
        let mut best: Option<(SocketAddr, bool, u64, u64)> = None;
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        for (addr, s) in members.iter() {
            let Some(h) = &s.hello else { continue };
            if s.state != MemberState::Up
                || h.topic != topic
                || h.group != group
                // A connection already known to be gone is skipped even before its reader has
                // noticed and taken it out of the slot.
                || s.conn.as_ref().is_none_or(|c| c.pending.lock().is_none())
            {
                continue;
            }
            live = true;
            if s.in_flight >= h.capacity {
                continue;
            }
            let untried = !tried.contains(addr);
            // Least loaded by fraction of capacity used: compare in_flight/capacity as a cross
            // product, untried members first; ties rotate so equal members share the load.
            let load = (s.in_flight as u64, h.capacity as u64);
            let better = match best {
                None => true,
                Some((_, b_untried, b_in, b_cap)) => {
                    if untried != b_untried {
                        untried
                    } else {
                        let (a, b) = (load.0 * b_cap, b_in * load.1);
                        a < b || (a == b && (addr.port() as usize ^ turn) & 1 == 0)
                    }
                }
            };
            if better {
                best = Some((*addr, untried, load.0, load.1));
            }
        }
        match best {
            Some((addr, ..)) => {
                let Some(slot) = members.get_mut(&addr) else {
                    return Pick::NoneLive;
                };
                let Some(conn) = slot.conn.clone() else {
                    return Pick::NoneLive;
                };
                slot.in_flight += 1;
                // Chosen only below its advertised capacity: a publisher never exceeds it.
                debug_assert!(
                    slot.hello
                        .as_ref()
                        .is_some_and(|h| slot.in_flight <= h.capacity)
                );
                let lease = InFlight {
                    shared: self,
                    addr,
                    epoch: slot.epoch,
                };
                Pick::Chosen(addr, conn, lease)
            }
            None if live => Pick::AllFull,
            None => Pick::NoneLive,
        }
    }
}

/// One delivery's share of a member's capacity, taken by [`Shared::pick`] and given back when
/// dropped, so the count balances however the attempt ends, its future dropped by a caller
/// included.
struct InFlight<'a> {
    shared: &'a Shared,
    addr: SocketAddr,
    epoch: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.shared.members.lock().get_mut(&self.addr)
            && slot.epoch == self.epoch
        {
            debug_assert!(
                slot.in_flight > 0,
                "{} released more than it took",
                self.addr
            );
            // Clamped as well, so that a release build that got the count wrong still never
            // wraps it into a member that looks full forever.
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        self.shared.changed.notify_waiters();
    }
}

enum Pick<'a> {
    Chosen(SocketAddr, Arc<Conn>, InFlight<'a>),
    AllFull,
    NoneLive,
}

/// Delivers one event (or request) to one member of `group`, failing over on nack, timeout or a
/// lost connection with the same event id, until acked or the deadline passes.
pub(super) async fn deliver(
    shared: &Arc<Shared>,
    group: &str,
    event: Arc<WireEvent>,
    at: Instant,
    request: bool,
    progress: &AtomicU8,
) -> Result<Option<Reply>, PublishError> {
    let topic = &event.topic;
    let mut tried = HashSet::new();
    let mut nacks = 0u32;
    let mut last;
    loop {
        let changed = shared.changed.notified();
        let (addr, conn, lease) = match shared.pick(topic, group, &tried) {
            Pick::Chosen(addr, conn, lease) => {
                progress.store(WAITING_FOR_REPLY, Ordering::Relaxed);
                (addr, conn, lease)
            }
            Pick::AllFull => {
                progress.store(WAITING_FOR_ROOM, Ordering::Relaxed);
                if tokio::time::timeout_at(at, changed).await.is_err() {
                    return Err(PublishError::BackPressure {
                        topic: topic.clone(),
                        group: group.to_string(),
                    });
                }
                continue;
            }
            Pick::NoneLive => {
                progress.store(WAITING_FOR_MEMBER, Ordering::Relaxed);
                if tokio::time::timeout_at(at, changed).await.is_err() {
                    return Err(PublishError::NoLiveMember {
                        topic: topic.clone(),
                        group: Some(group.to_string()),
                    });
                }
                continue;
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let registered = match conn.pending.lock().as_mut() {
            Some(pending) => {
                pending.insert(event.id, reply_tx);
                true
            }
            None => false,
        };
        let frame = Out::Event(event.clone(), request);
        let attempt_at =
            at.min(Instant::now() + Duration::from_millis(shared.config.attempt_timeout_ms));
        let outcome = if !registered {
            Ok(Ok(Outcome::Lost))
        } else {
            let sent = match conn.try_write_inline(&frame) {
                Inline::Sent => Ok(Ok(())),
                Inline::Closed => Ok(Err(Closed)),
                Inline::Busy | Inline::WouldBlock => {
                    tokio::time::timeout_at(attempt_at, conn.out.send_queued(frame)).await
                }
            };
            match sent {
                Ok(Ok(())) => tokio::time::timeout_at(attempt_at, reply_rx).await,
                Ok(Err(Closed)) => Ok(Ok(Outcome::Lost)),
                Err(elapsed) => Err(elapsed),
            }
        };
        if let Some(pending) = conn.pending.lock().as_mut() {
            pending.remove(&event.id);
        }
        drop(lease);
        match outcome {
            Ok(Ok(Outcome::Ack)) => return Ok(None),
            Ok(Ok(Outcome::Response(reply))) => return Ok(Some(reply)),
            Ok(Ok(Outcome::Nack(reason, message))) => {
                tried.insert(addr);
                last = format!("{addr} nacked: {reason:?}: {message}");
                match reason {
                    NackReason::HandlerFailed | NackReason::DeadlineExceeded => {
                        nacks += 1;
                        if request
                            || reason == NackReason::DeadlineExceeded
                            || nacks >= shared.config.attempts_max
                        {
                            return Err(PublishError::Nacked {
                                group: group.to_string(),
                                attempts: nacks,
                                reason,
                                message,
                            });
                        }
                    }
                    NackReason::Busy | NackReason::ShuttingDown | NackReason::Unsupported => {
                        // Another producer filled the member, or it is leaving: wait for a change
                        // briefly rather than spin.
                        let pause = Instant::now() + Duration::from_millis(5);
                        let _ = tokio::time::timeout_at(pause.min(at), changed).await;
                    }
                }
            }
            Ok(Ok(Outcome::Lost)) | Ok(Err(_)) => {
                if matches!(outcome, Ok(Ok(Outcome::Lost))) {
                    // The connection is gone (its writer has ended, or it was failed already).
                    // Fail it for every sender now: until its reader notices and takes it out
                    // of the slot, a pick could choose it again and again, each attempt failing
                    // at once without yielding, which would starve that very reader until the
                    // deadline.
                    fail_pending(&conn);
                }
                tried.insert(addr);
                last = format!("connection to {addr} lost");
                tracing::debug!(%addr, id = %uuid::Uuid::from_u128(event.id), "retrying on another member after a lost connection");
            }
            Err(_) => {
                tried.insert(addr);
                last = format!("{addr} did not answer in time");
            }
        }
        if Instant::now() >= at {
            return Err(PublishError::Timeout {
                group: group.to_string(),
                last,
            });
        }
    }
}

pub(super) fn add_peer(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    source: Source,
    mdns_name: Option<String>,
) {
    let mut members = shared.members.lock();
    if let Some(slot) = members.get_mut(&addr) {
        if mdns_name.is_some() {
            slot.mdns_name = mdns_name;
        }
        return;
    }
    let task = tokio::spawn(supervise(shared.clone(), addr));
    members.insert(
        addr,
        Slot {
            source,
            state: MemberState::Connecting,
            hello: None,
            conn: None,
            in_flight: 0,
            epoch: shared.slots_added.fetch_add(1, Ordering::Relaxed),
            last_error: None,
            task: Some(task),
            datagram_seq: 0,
            mdns_name,
            settled: false,
        },
    );
}

pub(super) fn remove_mdns(shared: &Arc<Shared>, fullname: &str) {
    let mut members = shared.members.lock();
    let gone: Vec<SocketAddr> = members
        .iter()
        .filter(|(_, s)| s.source == Source::Mdns && s.mdns_name.as_deref() == Some(fullname))
        .map(|(a, _)| *a)
        .collect();
    for addr in gone {
        if let Some(mut slot) = members.remove(&addr) {
            tracing::info!(%addr, %fullname, "member withdrew its mDNS record; removed");
            slot.retire();
        }
    }
    drop(members);
    shared.changed.notify_waiters();
}

pub(super) fn set_state(
    shared: &Shared,
    addr: SocketAddr,
    state: MemberState,
    error: Option<String>,
) {
    let mut members = shared.members.lock();
    let mut changed_group = None;
    if let Some(slot) = members.get_mut(&addr) {
        let before = slot.state;
        slot.state = state;
        slot.settled = true;
        if state != MemberState::Up {
            slot.conn = None;
        }
        if error.is_some() {
            slot.last_error = error.clone();
        }
        if before != state {
            changed_group = Some(
                slot.hello
                    .as_ref()
                    .map(|h| h.group.clone())
                    .unwrap_or_default(),
            );
        }
    }
    drop(members);
    // Logged after the lock is released: a slow log writer must not stall deliveries.
    if let Some(group) = changed_group {
        match state {
            MemberState::Down => {
                tracing::warn!(%addr, %group, error = error.as_deref().unwrap_or(""), "member down")
            }
            MemberState::Left => tracing::info!(%addr, %group, "member left"),
            _ => {}
        }
    }
    shared.changed.notify_waiters();
}
