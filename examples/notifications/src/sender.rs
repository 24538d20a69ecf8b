//! The SMS service: a consumer group that sends each `sms` event through the provider and
//! reports the outcome on `sms.results`.
//!
//! Two subscriptions share one bus. The first (group `sms-service` on `sms`) sends and then
//! publishes a `sent` result; a provider failure returns an error, so the SDK retries it with
//! backoff and finally dead-letters it to `sms.dlq`. The second (group `sms-service.failures`
//! on `sms.dlq`) turns each dead letter into a `failed` result, so the user learns the outcome
//! either way. The topic and group names are those of [`Names`] (the defaults above). An event is acknowledged (its offset committed) only after its handler
//! returned, so a crash between sending and committing redelivers it, and the provider's
//! idempotency key keeps that redelivery from sending twice.

use std::sync::Arc;

use herald::{
    Bus, DeadLetter, Event, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HandlerError,
    RetryPolicy, SubscribeError, Subscription, SubscriptionStats,
};

use crate::messages::{Names, SmsRequest, SmsResult, Status};
use crate::provider::{SentSms, StandInProvider};

/// How the SMS service handles events.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Provider calls per SMS, with backoff between them, before it is dead-lettered.
    pub retry: RetryPolicy,
    /// SMS sent at once (one recipient's messages are never sent at the same time).
    pub concurrency: usize,
    /// The topics it reads and publishes to, and its groups.
    pub names: Names,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            retry: RetryPolicy::default(),
            concurrency: herald::CONCURRENCY_DEFAULT,
            names: Names::default(),
        }
    }
}

/// The running SMS service.
pub struct Sender {
    sms: Subscription,
    failures: Subscription,
}

/// What the SMS service did before it stopped.
#[derive(Debug, Clone, Copy)]
pub struct SenderStats {
    pub sms: SubscriptionStats,
    pub failures: SubscriptionStats,
}

impl Sender {
    pub async fn start(
        bus: Bus,
        provider: Arc<StandInProvider>,
        config: SenderConfig,
    ) -> Result<Self, SubscribeError> {
        let names = Arc::new(config.names);
        let sms = {
            let bus = bus.clone();
            let provider = provider.clone();
            let names = names.clone();
            bus.clone()
                .subscribe(&names.sms_topic)
                .group(&names.sms_group)
                .concurrency(config.concurrency)
                .retry(config.retry.clone())
                .dead_letter(DeadLetter::Topic(names.dlq_topic.clone()))
                .handle_json(move |request: SmsRequest, event: Event| {
                    send(bus.clone(), provider.clone(), names.clone(), request, event)
                })
                .await?
        };
        let failures = bus
            .clone()
            .subscribe(&names.dlq_topic)
            .group(&names.dlq_group())
            .concurrency(config.concurrency)
            // Publishing the result is all this handler does; if that keeps failing, leave the
            // dead letter uncommitted so it is reported after a restart rather than lost.
            .dead_letter(DeadLetter::Refuse)
            .handle(move |event: Event| {
                report_failure(bus.clone(), provider.clone(), names.clone(), event)
            })
            .await?;
        Ok(Sender { sms, failures })
    }

    /// Stops both subscriptions: handlers in flight finish and their events are committed.
    pub async fn shutdown(self) -> Result<SenderStats, SubscribeError> {
        let sms = self.sms.shutdown().await;
        let failures = self.failures.shutdown().await;
        Ok(SenderStats {
            sms: sms?,
            failures: failures?,
        })
    }
}

/// Sends one SMS and publishes its `sent` result. An error makes the SDK retry the event.
async fn send(
    bus: Bus,
    provider: Arc<StandInProvider>,
    names: Arc<Names>,
    request: SmsRequest,
    event: Event,
) -> Result<(), HandlerError> {
    let id = event.id;
    let to = request.to.clone();
    tokio::time::sleep(provider.latency()).await;
    let sms = tokio::task::spawn_blocking(move || provider.send(id, &request.to, &request.text))
        .await
        .map_err(|e| HandlerError::retryable(format!("the provider call did not finish: {e}")))??;
    tracing::info!(%id, to = %to, attempts = sms.attempts, "sms sent");
    bus.publish_result(&names.results_topic, &event, &sent_result(sms))
        .await?;
    Ok(())
}

fn sent_result(sms: SentSms) -> SmsResult {
    SmsResult {
        status: Status::Sent,
        to: Some(sms.to),
        attempts: Some(sms.attempts),
        error: None,
        provider_message_id: Some(sms.provider_message_id),
    }
}

/// Publishes the outcome of a dead-lettered request: `failed`, unless the provider did send it
/// (the SMS went out but publishing `sent` kept failing), then `sent`.
async fn report_failure(
    bus: Bus,
    provider: Arc<StandInProvider>,
    names: Arc<Names>,
    event: Event,
) -> Result<(), HandlerError> {
    // `sms.dlq` may be shared with other groups' dead letters; only ours are SMS requests.
    if event
        .header_str(HEADER_DLQ_GROUP)
        .is_some_and(|g| g != names.sms_group)
    {
        return Ok(());
    }
    let result = match provider.sent(&event.id) {
        Some(sms) => sent_result(sms),
        None => SmsResult {
            status: Status::Failed,
            to: event.decode_json::<SmsRequest>().ok().map(|r| r.to),
            attempts: event
                .header_str(HEADER_DLQ_ATTEMPTS)
                .and_then(|a| a.parse().ok()),
            error: Some(
                event
                    .header_str(HEADER_DLQ_ERROR)
                    .unwrap_or("unknown error")
                    .to_string(),
            ),
            provider_message_id: None,
        },
    };
    tracing::warn!(id = %event.id, status = ?result.status, error = ?result.error, "reporting a dead-lettered sms");
    bus.publish_result(&names.results_topic, &event, &result)
        .await?;
    Ok(())
}
