//! The event types users see: what a producer sends ([`Message`]) and what a handler gets
//! ([`Received`]), plus the handler trait members run.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::HandlerError;
use crate::frame::WireEvent;

/// A boxed future, as handlers return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a producer publishes: the topic and payload. Ids, sequence numbers and the deadline are
/// filled in by the producer.
///
/// ```
/// let m = herald_direct::Message::new("sms", "hello").with_key("user-1").with_header("trace", "abc");
/// assert_eq!(m.topic, "sms");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl Message {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            key: None,
            value: value.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A whole answer to a request: the value and, like an event, a key and headers.
///
/// A member sends the key and headers only to producers that understand them (every producer of
/// this version does); an older producer receives the value alone.
///
/// ```
/// let r = herald_direct::Reply::new("42").with_header("content-type", "text/plain");
/// assert_eq!(r.value, "42");
/// assert_eq!(r.headers.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl Reply {
    /// A reply carrying `value` alone.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Reply {
            key: None,
            value: value.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<Bytes> for Reply {
    fn from(value: Bytes) -> Self {
        Reply::new(value)
    }
}

/// How an event reached a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// TCP, acknowledged after the handler succeeded.
    Direct,
    /// UDP, at most once.
    Datagram,
    /// TCP, answered with a response.
    Request,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Datagram => "datagram",
            Mode::Request => "request",
        }
    }
}

/// An event as a member's handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: u128,
    pub topic: String,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub publisher: u128,
    pub seq: u64,
    pub mode: Mode,
    /// Absolute deadline the producer set, if any.
    pub deadline: Option<SystemTime>,
}

impl Received {
    pub(crate) fn from_wire(e: WireEvent, mode: Mode) -> Self {
        Received {
            id: e.id,
            topic: e.topic,
            key: e.key,
            value: e.value,
            headers: e.headers,
            publisher: e.publisher,
            seq: e.seq,
            mode,
            deadline: unix_ms_to_system(e.deadline_unix_ms),
        }
    }
}

/// What a request handler knows about its request: chiefly the caller's deadline, which nested
/// requests must inherit (pass [`RequestContext::deadline`] to `Publisher::request_until`).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    deadline: SystemTime,
}

impl RequestContext {
    pub(crate) fn new(deadline: SystemTime) -> Self {
        RequestContext { deadline }
    }

    /// The absolute deadline of the whole chain.
    pub fn deadline(&self) -> SystemTime {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        remaining(self.deadline)
    }
}

/// Application code a member runs for each event and request it takes.
///
/// Returning a [`HandlerError`] nacks the event (the producer retries on another member) or
/// fails the request; its text travels back to the producer.
pub trait Handler: Send + Sync + 'static {
    /// Handles a direct or datagram event.
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>>;

    /// Answers a request. The default refuses requests.
    fn on_request(
        &self,
        request: Received,
        ctx: RequestContext,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        let _ = (request, ctx);
        Box::pin(async { Err(HandlerError::NoRequests) })
    }

    /// Answers a request with a whole [`Reply`] (value, key and headers); this is what a member
    /// calls. The default answers with [`Handler::on_request`]'s bytes alone, so handlers that
    /// only produce a value implement that one.
    fn answer(
        &self,
        request: Received,
        ctx: RequestContext,
    ) -> BoxFuture<Result<Reply, HandlerError>> {
        let value = self.on_request(request, ctx);
        Box::pin(async move { value.await.map(Reply::new) })
    }
}

/// A handler made of two closures, for small programs and tests.
///
/// ```
/// use herald_direct::{FnHandler, Handler};
/// let h = FnHandler::events(|_event| async { Ok(()) });
/// # let _: &dyn Handler = &h;
/// ```
pub struct FnHandler<E, R> {
    on_event: E,
    on_request: R,
}

type NoRequests = fn(Received, RequestContext) -> std::future::Ready<Result<Bytes, HandlerError>>;

fn refuse_request(
    _: Received,
    _: RequestContext,
) -> std::future::Ready<Result<Bytes, HandlerError>> {
    std::future::ready(Err(HandlerError::NoRequests))
}

impl<E, F> FnHandler<E, NoRequests>
where
    E: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    /// A handler that takes events and refuses requests.
    pub fn events(on_event: E) -> Self {
        FnHandler {
            on_event,
            on_request: refuse_request,
        }
    }
}

impl<E, F, R, G> FnHandler<E, R>
where
    E: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
    R: Fn(Received, RequestContext) -> G + Send + Sync + 'static,
    G: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    /// A handler for both events and requests.
    pub fn new(on_event: E, on_request: R) -> Self {
        FnHandler {
            on_event,
            on_request,
        }
    }
}

impl<E, F, R, G> Handler for FnHandler<E, R>
where
    E: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
    R: Fn(Received, RequestContext) -> G + Send + Sync + 'static,
    G: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>> {
        Box::pin((self.on_event)(event))
    }

    fn on_request(
        &self,
        request: Received,
        ctx: RequestContext,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        Box::pin((self.on_request)(request, ctx))
    }
}

/// Time left before `deadline` (zero once it passed): what every request context and every wait
/// bounded by a deadline computes, here once.
pub fn remaining(deadline: SystemTime) -> Duration {
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// Milliseconds since the Unix epoch, as carried in frames (0 = no deadline).
pub fn system_to_unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
        .max(1)
}

pub(crate) fn unix_ms_to_system(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The monotonic instant matching a wall-clock deadline (now if it already passed).
pub(crate) fn system_to_instant(t: SystemTime) -> Instant {
    let now_sys = SystemTime::now();
    let now = Instant::now();
    match t.duration_since(now_sys) {
        Ok(left) => now + left,
        Err(_) => now,
    }
}
