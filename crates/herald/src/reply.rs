//! Request/response over a stored transport (broker, memory): the request is an event carrying a
//! reply topic and an absolute deadline in its headers; the replier publishes its answer to that
//! topic, correlated to the request's id.
//!
//! Each bus that makes requests owns one reply topic, `herald.replies.<bus id>`, read by a group
//! of its own from the earliest offset, so a reply that arrives before the subscription is
//! assigned its partitions is still seen. This suits callers that can wait longer than a
//! connection should stay open (a replier that is restarting, a queue of work ahead).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use herald_direct::event::remaining;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::DeadLetter;
use crate::bus::{Bus, REQUEST_DEADLINE_DEFAULT};
use crate::error::{HandlerError, PublishError, RequestError, SubscribeError};
use crate::event::{
    Event, EventId, HEADER_DEADLINE_MS, HEADER_REPLY_ERROR, HEADER_REPLY_TO, system_to_unix_ms,
    unix_ms_to_system,
};
use crate::runtime::{self, HandlerFn, RetryPolicy, Subscription};
use crate::transport::{Replier, StartFrom, SubscribeSpec};

/// Requests one bus may have waiting for replies at once.
pub const PENDING_REQUESTS_MAX: usize = 100_000;

type Pending = Arc<Mutex<HashMap<EventId, oneshot::Sender<Event>>>>;

/// The reply side of one bus: its reply topic and the requests waiting on it.
pub(crate) struct ReplyInbox {
    topic: String,
    pending: Pending,
    subscription: Mutex<Option<Subscription>>,
}

impl ReplyInbox {
    pub(crate) async fn start(bus: Bus) -> Result<Arc<ReplyInbox>, RequestError> {
        let topic = format!("herald.replies.{}", bus.id());
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let waiting = pending.clone();
        let subscription = bus
            .subscribe(&topic)
            .group(&topic)
            .start_from(StartFrom::Earliest)
            .retry(RetryPolicy::none())
            .dead_letter(DeadLetter::Refuse)
            .handle(move |reply: Event| {
                let waiting = waiting.clone();
                async move {
                    // A reply nobody waits for any more (its deadline passed) is dropped.
                    if let Some(id) = reply.correlation_id
                        && let Some(tx) = waiting.lock().remove(&id)
                    {
                        let _ = tx.send(reply);
                    }
                    Ok(())
                }
            })
            .await
            .map_err(|e| RequestError::Transport {
                transport: bus.transport().as_str(),
                message: format!("cannot read the reply topic: {e}"),
            })?;
        Ok(Arc::new(ReplyInbox {
            topic,
            pending,
            subscription: Mutex::new(Some(subscription)),
        }))
    }

    pub(crate) async fn request(
        &self,
        bus: &Bus,
        topic: &str,
        mut event: Event,
        deadline: SystemTime,
    ) -> Result<Event, RequestError> {
        let id = event.id;
        event.set_header(HEADER_REPLY_TO, self.topic.clone());
        event.set_header(HEADER_DEADLINE_MS, system_to_unix_ms(deadline).to_string());
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= PENDING_REQUESTS_MAX {
                return Err(RequestError::BackPressure {
                    topic: topic.to_string(),
                });
            }
            pending.insert(id, tx);
        }
        let _forget = Forget {
            pending: &self.pending,
            id,
        };
        match bus.publish_until(topic, event, deadline).await {
            Ok(_) => {}
            Err(PublishError::Timeout(_)) => return Err(RequestError::DeadlineExceeded),
            Err(e) => return Err(RequestError::Publish(e)),
        }
        let reply = tokio::time::timeout(remaining(deadline), rx)
            .await
            .map_err(|_| RequestError::DeadlineExceeded)?
            .map_err(|_| RequestError::DeadlineExceeded)?;
        if reply.header(HEADER_REPLY_ERROR).is_some() {
            return Err(RequestError::Failed(
                String::from_utf8_lossy(&reply.payload).into_owned(),
            ));
        }
        Ok(reply)
    }

    /// Stops reading replies (the bus is going away).
    pub(crate) fn abort(&self) {
        if let Some(sub) = self.subscription.lock().take() {
            drop(sub);
        }
    }
}

/// Removes a request from the waiting list however the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    id: EventId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// Serves requests on a stored transport: a subscription whose handler runs the replier and
/// publishes its answer to the request's reply topic.
pub(crate) async fn serve(
    bus: Bus,
    spec: SubscribeSpec,
    concurrency: usize,
    replier: Replier,
) -> Result<Subscription, SubscribeError> {
    let transport = bus.transport_handle().clone();
    let dead_letter = transport.dead_letter_default(&spec.topic);
    let handler: HandlerFn = Arc::new(move |request: Event| {
        let bus = bus.clone();
        let replier = replier.clone();
        Box::pin(async move { answer(&bus, &replier, request).await })
    });
    // A request is answered once: a failing replier is reported to the caller, not retried.
    // What cannot be answered at all (no reply topic) is dead-lettered.
    runtime::start(
        transport,
        spec,
        concurrency,
        RetryPolicy::none(),
        dead_letter,
        handler,
    )
    .await
}

async fn answer(bus: &Bus, replier: &Replier, request: Event) -> Result<(), HandlerError> {
    let Some(reply_to) = request.header_str(HEADER_REPLY_TO).map(str::to_string) else {
        return Err(HandlerError::permanent(format!(
            "not a request: no {HEADER_REPLY_TO} header"
        )));
    };
    let deadline = request
        .header_str(HEADER_DEADLINE_MS)
        .and_then(|v| v.parse::<u64>().ok())
        .map(unix_ms_to_system)
        .unwrap_or_else(|| SystemTime::now() + REQUEST_DEADLINE_DEFAULT);
    if deadline <= SystemTime::now() {
        tracing::debug!(id = %request.id, "request expired before it was taken; not answered");
        return Ok(());
    }
    let id = request.id;
    let key = request.key.clone();
    let reply = match tokio::time::timeout(remaining(deadline), replier(request, deadline)).await {
        Ok(Ok(mut reply)) => {
            reply.correlation_id = Some(id);
            reply
        }
        Ok(Err(e)) => {
            let mut reply = Event::new(e.message().to_string()).with_correlation_id(id);
            reply.set_header(HEADER_REPLY_ERROR, "1");
            reply
        }
        Err(_) => {
            tracing::debug!(%id, "request deadline passed while answering; the caller gave up");
            return Ok(());
        }
    };
    let reply = Event { key, ..reply };
    if let Err(e) = bus.publish_until(&reply_to, reply, deadline).await {
        // The caller will see its deadline pass; answering again would run the replier twice.
        tracing::warn!(%id, reply_to, error = %e, "could not publish the reply");
    }
    Ok(())
}
