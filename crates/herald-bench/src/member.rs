//! `herald bench member`: the receiving side of the matrix's brokerless rows, run as a process of
//! its own. It is a `herald-direct` member like `herald peer listen`, and it also reads each
//! event's stamp (its scheduled time on the machine-wide monotonic clock, and its sequence number
//! within its key) to record one-way latency and count reordering, and, as one service of a
//! chain, calls the next service: after its own ack (event-driven, each hop closed when the next
//! acked) or inside its answer (request/response, every request open until the last returns).
//!
//! It prints `{"listening": ADDR}` once it serves, then one [`MemberReport`] line for each
//! `report` line on stdin; it stops on SIGTERM, SIGINT or the end of stdin.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herald_direct::{
    BoxFuture, Handler, HandlerError, Member, MemberConfig, Message, Mode, Publisher,
    PublisherConfig, Received, RequestContext,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;

use crate::BenchError;
use crate::clock::{Latency, ProcUsage, histogram, mono_ns, proc_usage, read_stamp, record_ns};

/// How long a forwarded event of an event-driven chain may wait for the next hop's ack.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Forwards of an event-driven chain in flight at once; beyond it the hop waits before acking,
/// which pushes back on the hop before it.
const FORWARDS_IN_FLIGHT_MAX: usize = 1024;
/// Keys whose order the member tracks; more keys than this are not checked.
const ORDER_KEYS_MAX: usize = 65_536;

/// How this service calls the next one in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// Ack first, then publish to the next service.
    Event,
    /// Answer only once the next service answered.
    Request,
}

/// The member's settings (the flags of `herald bench member`).
#[derive(Debug, Clone)]
pub struct MemberArgs {
    pub topic: String,
    pub group: String,
    pub bind: SocketAddr,
    pub capacity: u32,
    pub next: Option<SocketAddr>,
    pub next_topic: Option<String>,
    pub chain: Chain,
    pub delay: Duration,
    pub drop_every: Option<u64>,
}

/// One report of a member: counters since it started, latency since the last report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberReport {
    pub direct: u64,
    pub datagrams: u64,
    pub requests: u64,
    /// Datagrams the member counted lost (gaps in publishers' sequence numbers).
    pub lost: u64,
    /// Events of a key that arrived after a later one of the same key.
    pub reorders: u64,
    /// Forwards to the next service of a chain that failed.
    pub forward_failures: u64,
    /// From each event's scheduled time to its arrival here, since the last report.
    pub latency: Option<Latency>,
    pub usage: ProcUsage,
}

struct Stamps {
    hist: parking_lot::Mutex<hdrhistogram::Histogram<u64>>,
    last_seq: parking_lot::Mutex<HashMap<(u128, Bytes), u64>>,
    reorders: AtomicU64,
    forward_failures: AtomicU64,
}

struct BenchHandler {
    stamps: Arc<Stamps>,
    forwards: Arc<tokio::sync::Semaphore>,
    next: Option<(Publisher, String)>,
    chain: Chain,
    delay: Duration,
}

impl BenchHandler {
    fn arrived(&self, e: &Received) {
        let Some((due, _)) = read_stamp(&e.value) else {
            return;
        };
        record_ns(&mut self.stamps.hist.lock(), mono_ns().saturating_sub(due));
        let mut last = self.stamps.last_seq.lock();
        let key = (e.publisher, e.key.clone().unwrap_or_default());
        if let Some(prev) = last.get(&key) {
            if due <= *prev && e.mode != Mode::Request {
                self.stamps.reorders.fetch_add(1, Ordering::Relaxed);
            }
        } else if last.len() >= ORDER_KEYS_MAX {
            return;
        }
        last.insert(key, due);
    }
}

impl Handler for BenchHandler {
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>> {
        self.arrived(&event);
        let delay = self.delay;
        let forward = match (&self.next, self.chain, event.mode) {
            (Some((p, topic)), Chain::Event, Mode::Direct) => Some((p.clone(), topic.clone())),
            _ => None,
        };
        let stamps = self.stamps.clone();
        let forwards = self.forwards.clone();
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some((publisher, topic)) = forward {
                let Ok(permit) = forwards.acquire_owned().await else {
                    return Err(HandlerError::failed("the member is stopping"));
                };
                // Acked first: this hop is closed once the next one is called.
                tokio::spawn(async move {
                    let _permit = permit;
                    let message = Message::new(topic, event.value);
                    if publisher.publish(message, FORWARD_TIMEOUT).await.is_err() {
                        stamps.forward_failures.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Ok(())
        })
    }

    fn on_request(
        &self,
        request: Received,
        ctx: RequestContext,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        self.arrived(&request);
        let delay = self.delay;
        let next = self.next.clone();
        let stamps = self.stamps.clone();
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match next {
                Some((publisher, topic)) => {
                    let message = Message::new(topic, request.value);
                    match publisher.request_until(message, ctx.deadline()).await {
                        Ok(reply) => Ok(reply),
                        Err(error) => {
                            stamps.forward_failures.fetch_add(1, Ordering::Relaxed);
                            Err(HandlerError::failed(error.to_string()))
                        }
                    }
                }
                None => Ok(Bytes::from_static(b"ok")),
            }
        })
    }
}

/// Runs the member until SIGTERM, SIGINT or the end of stdin.
pub async fn run(args: MemberArgs) -> Result<(), BenchError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(BenchError::io("installing SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(BenchError::io("installing SIGINT"))?;
    let stamps = Arc::new(Stamps {
        hist: parking_lot::Mutex::new(histogram()?),
        last_seq: Default::default(),
        reorders: AtomicU64::new(0),
        forward_failures: AtomicU64::new(0),
    });
    let next = match (args.next, &args.next_topic) {
        (Some(addr), Some(topic)) => {
            let publisher = Publisher::start(PublisherConfig::new(vec![addr]))
                .await
                .map_err(|e| BenchError::Direct(e.to_string()))?;
            if !publisher
                .wait_for_topic(topic, Duration::from_secs(10))
                .await
            {
                return Err(BenchError::Direct(format!(
                    "the next service ({topic} at {addr}) is not up"
                )));
            }
            Some((publisher, topic.clone()))
        }
        _ => None,
    };
    let handler = Arc::new(BenchHandler {
        stamps: stamps.clone(),
        forwards: Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT_MAX)),
        next,
        chain: args.chain,
        delay: args.delay,
    });
    let mut config = MemberConfig::new(&args.topic, &args.group, args.bind);
    config.capacity = args.capacity;
    config.drop_every_nth_datagram = args.drop_every;
    let member = Member::start(config, handler)
        .await
        .map_err(|e| BenchError::Direct(e.to_string()))?;
    println!(
        "{}",
        serde_json::json!({ "listening": member.local_addr().to_string() })
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.trim() == "report" => {
                    let stats = member.stats();
                    let latency = {
                        let mut hist = stamps.hist.lock();
                        let latency = Latency::of(&hist);
                        hist.reset();
                        latency
                    };
                    let report = MemberReport {
                        direct: stats.direct_handled,
                        datagrams: stats.datagrams_received,
                        requests: stats.requests_answered,
                        lost: stats.datagrams_lost,
                        reorders: stamps.reorders.load(Ordering::Relaxed),
                        forward_failures: stamps.forward_failures.load(Ordering::Relaxed),
                        latency,
                        usage: proc_usage("self"),
                    };
                    println!("{}", serde_json::to_string(&report)?);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    member.shutdown().await;
    Ok(())
}
