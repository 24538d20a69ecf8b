//! Brokerless load from the bench's process to members in other processes, through the same
//! `herald-direct` publisher applications use: direct publish until the member's ack, datagrams
//! (the send, and the receiver's one-way figures), and requests until the reply; plus request/
//! response over the broker through the SDK's reply topic, for contrast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_direct::{Message, Publisher, PublisherConfig};

use crate::BenchError;
use crate::baseline::Driven;
use crate::clock::{filler, mono_ns, stamp};
use crate::pace::{self, Outcome, Recorder, Schedule};

/// Events in flight at once in a maximum-rate cell.
pub const WINDOW_EVENTS_MAX: u64 = 256;
/// How long a run waits for its last acks or replies after the schedule ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct keys the bench cycles through, so members can check per-key order.
const KEYS: u64 = 16;

/// A publisher on a single-threaded runtime of its own thread, as a one-core producer process
/// would run it; the pacing thread hands it events.
pub struct DirectClient {
    runtime: Driven,
    publisher: Publisher,
}

/// What a direct publish, a datagram or a request completes as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    Publish,
    Datagram,
    Request,
}

impl DirectClient {
    /// Starts a publisher knowing `peers` and waits until `topic` has a live member.
    pub fn start(peers: Vec<SocketAddr>, topic: &str) -> Result<DirectClient, BenchError> {
        let runtime = Driven::start("bench-publisher")?;
        let publisher = runtime
            .block_on(Publisher::start(PublisherConfig::new(peers)))
            .map_err(|e| BenchError::Direct(e.to_string()))?;
        if !runtime.block_on(publisher.wait_for_topic(topic, Duration::from_secs(10))) {
            return Err(BenchError::Direct(format!("no member of {topic} came up")));
        }
        Ok(DirectClient { runtime, publisher })
    }

    /// Sends open loop at `schedule`: each publish or request runs as a task on the publisher's
    /// runtime (so a slow ack never delays the next event), each datagram is sent by the pacing
    /// thread itself (a send does not wait for anything). Latency is from the due time to the
    /// ack, the reply or the return of the send.
    pub fn run(
        &self,
        what: Send,
        topic: &str,
        value_bytes: usize,
        schedule: Schedule,
        timeout: Duration,
    ) -> Result<Outcome, BenchError> {
        let recorder = Arc::new(Recorder::new()?);
        let mut value = filler(value_bytes);
        let sent = std::cell::Cell::new(0u64);
        let start = mono_ns();
        let handle = self.runtime.handle().clone();
        let generated = pace::run(
            schedule,
            || recorder.room(sent.get(), WINDOW_EVENTS_MAX, 1),
            |i, due| {
                sent.set(sent.get() + 1);
                stamp(&mut value, due, i / KEYS);
                let message = Message::new(topic.to_string(), Bytes::copy_from_slice(&value))
                    .with_key((i % KEYS).to_le_bytes().to_vec());
                let (publisher, recorder) = (self.publisher.clone(), recorder.clone());
                match what {
                    Send::Datagram => match handle.block_on(publisher.send_datagram(message)) {
                        Ok(_) => {
                            recorder.ok(due);
                            true
                        }
                        Err(e) => {
                            recorder.fail(e);
                            false
                        }
                    },
                    Send::Publish => {
                        handle.spawn(async move {
                            match publisher.publish(message, timeout).await {
                                Ok(_) => recorder.ok(due),
                                Err(e) => recorder.fail(e),
                            }
                        });
                        true
                    }
                    Send::Request => {
                        handle.spawn(async move {
                            match publisher.request(message, timeout).await {
                                Ok(_) => recorder.ok(due),
                                Err(e) => recorder.fail(e),
                            }
                        });
                        true
                    }
                }
            },
        )?;
        recorder.wait_finished(generated.offered, DRAIN_TIMEOUT.max(timeout));
        Ok(recorder.outcome(generated, start))
    }
}

/// Request/response over a broker through the SDK: a replier bus serving `topic` and a caller
/// bus whose requests travel through the broker and whose replies come back on its reply topic.
pub fn broker_requests(
    bootstrap: &str,
    topic: &str,
    value_bytes: usize,
    schedule: Schedule,
    timeout: Duration,
) -> Result<Outcome, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::io("starting a runtime"))?;
    let url = format!("broker://{bootstrap}?linger.ms=0");
    let (caller, _replier, _sub) = runtime.block_on(async {
        let replier = herald::Bus::connect(&url)
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        let sub = replier
            .serve(topic)
            .reply(|event: herald::Event, _ctx| async move {
                Ok(herald::Event::new(event.payload.clone()))
            })
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        let caller = herald::Bus::connect(&url)
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        // The first request creates the reply topic and joins its group: not measured.
        let warm = caller
            .request(topic, herald::Event::new(Bytes::from(filler(value_bytes))))
            .deadline(Duration::from_secs(30))
            .await;
        if let Err(e) = warm {
            return Err(BenchError::Kafka(format!(
                "first request over the broker: {e}"
            )));
        }
        Ok::<_, BenchError>((caller, replier, sub))
    })?;
    let recorder = Arc::new(Recorder::new()?);
    let mut value = filler(value_bytes);
    let sent = std::cell::Cell::new(0u64);
    let start = mono_ns();
    let handle = runtime.handle().clone();
    let generated = pace::run(
        schedule,
        || recorder.room(sent.get(), WINDOW_EVENTS_MAX, 1),
        |i, due| {
            sent.set(sent.get() + 1);
            stamp(&mut value, due, i);
            let request = caller
                .request(topic, herald::Event::new(Bytes::copy_from_slice(&value)))
                .deadline(timeout);
            let recorder = recorder.clone();
            handle.spawn(async move {
                match request.await {
                    Ok(_) => recorder.ok(due),
                    Err(e) => recorder.fail(e),
                }
            });
            true
        },
    )?;
    recorder.wait_finished(generated.offered, DRAIN_TIMEOUT.max(timeout));
    let outcome = recorder.outcome(generated, start);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(outcome)
}
