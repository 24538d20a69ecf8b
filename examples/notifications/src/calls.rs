//! The design events replace: the notification service calls the SMS service over HTTP and
//! waits for the provider's answer before answering its own client, then calls the usage service.
//!
//! This is the "before" of the example, kept so the two can be run side by side (`compare`).
//! The caller must know every service that cares about a notification and call each in turn;
//! its answer takes as long as the slowest of them; and while the SMS service is down it can
//! only refuse (nothing keeps the request for later) or, when the SMS service dies in the
//! middle of a call, answer without knowing whether the SMS went out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use herald::EventId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client;
use crate::messages::{SmsResult, Status};
use crate::notifier::{BODY_BYTES_MAX, parse_request, show_status};
use crate::provider::{ProviderError, SentSms, StandInProvider};
use crate::status::StatusBook;

/// The body of the SMS service's `POST /sms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsCall {
    /// The idempotency key: the notification id.
    pub id: EventId,
    pub to: String,
    pub text: String,
}

/// The SMS service's HTTP side: `POST /sms` sends through the provider and answers with what it
/// sent (200), or why not (503 when the provider failed, 500 for the provider's own log).
pub fn sms_router(provider: Arc<StandInProvider>) -> Router {
    Router::new()
        .route("/sms", post(send_sms))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(provider)
}

async fn send_sms(State(provider): State<Arc<StandInProvider>>, body: Bytes) -> Response {
    let call: SmsCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"error": format!("the body must be {{\"id\", \"to\", \"text\"}}: {e}")}),
                ),
            )
                .into_response();
        }
    };
    tokio::time::sleep(provider.latency()).await;
    let sender = provider.clone();
    let sent =
        tokio::task::spawn_blocking(move || sender.send(call.id, &call.to, &call.text)).await;
    match sent {
        Ok(Ok(sms)) => {
            tracing::info!(id = %sms.id, to = %sms.to, "sms sent");
            axum::Json(sms).into_response()
        }
        Ok(Err(e @ ProviderError::Unavailable { .. })) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": format!("the provider call did not finish: {e}")})),
        )
            .into_response(),
    }
}

/// Where the calling notification service sends its calls.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    /// The SMS service, `host:port`.
    pub sms: String,
    /// The usage service, `host:port`, if there is one to tell.
    pub usage: Option<String>,
    /// Longest wait for each call's answer.
    pub call_timeout: Duration,
    pub notifications_max: usize,
}

#[derive(Clone)]
struct CallState {
    config: Arc<CallsConfig>,
    book: Arc<Mutex<StatusBook>>,
}

/// The notification service of the direct-call design: `POST /notifications` answers `200
/// {"id", "status": "sent", ...}` once the SMS service says the provider took it, `503 {"error",
/// "id"}` when the SMS service cannot be reached (nothing was sent), `502` when it answered with
/// an error, and `504` when it did not answer or broke off (the SMS may or may not have gone out).
pub fn calling_router(config: CallsConfig) -> Router {
    let state = CallState {
        book: Arc::new(Mutex::new(StatusBook::new(config.notifications_max))),
        config: Arc::new(config),
    };
    Router::new()
        .route("/notifications", post(create_by_call))
        .route("/notifications/{id}", get(show_by_call))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

async fn show_by_call(State(state): State<CallState>, Path(id): Path<String>) -> Response {
    show_status(&state.book, &id)
}

fn answer(status: StatusCode, id: EventId, message: String) -> Response {
    (status, axum::Json(json!({"error": message, "id": id}))).into_response()
}

async fn create_by_call(State(state): State<CallState>, body: Bytes) -> Response {
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": message})),
            )
                .into_response();
        }
    };
    let id = EventId::new();
    state.book.lock().request(id, &request.to);
    let call = SmsCall {
        id,
        to: request.to.clone(),
        text: request.text,
    };
    let body = match serde_json::to_value(&call) {
        Ok(b) => b,
        Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, id, e.to_string()),
    };
    let timeout = state.config.call_timeout;
    let sms = match client::call(&state.config.sms, "POST", "/sms", Some(&body), timeout).await {
        Ok(a) if a.is_success() => match serde_json::from_value::<SentSms>(a.body) {
            Ok(sms) => sms,
            Err(e) => {
                return answer(
                    StatusCode::BAD_GATEWAY,
                    id,
                    format!("the SMS service's answer is not a sent SMS: {e}"),
                );
            }
        },
        Ok(a) => {
            let reason = a.body["error"].as_str().unwrap_or("no reason given");
            let message = format!("the SMS service answered {}: {reason}", a.status);
            fail(&state, id, &message);
            return answer(StatusCode::BAD_GATEWAY, id, message);
        }
        Err(e) => {
            tracing::warn!(%id, error = %e, "calling the SMS service failed");
            return if e.never_sent() {
                fail(&state, id, &e.to_string());
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    id,
                    format!("the SMS service is unreachable, nothing was sent: {e}"),
                )
            } else {
                // Unknown outcome: the status stays pending, as nobody can say more.
                answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    id,
                    format!("the SMS service did not answer; the SMS may or may not be sent: {e}"),
                )
            };
        }
    };
    state.book.lock().result(
        id,
        &SmsResult {
            status: Status::Sent,
            to: Some(sms.to.clone()),
            attempts: Some(sms.attempts),
            error: None,
            provider_message_id: Some(sms.provider_message_id.clone()),
        },
    );
    // Every other interested service is one more call the client waits for; a failed one is
    // only logged, as the SMS is out and the client should not send it again.
    let usage_counted = match &state.config.usage {
        Some(usage) => {
            let body = json!({"id": id, "to": sms.to});
            match client::call(usage, "POST", "/usage", Some(&body), timeout).await {
                Ok(a) if a.is_success() => true,
                Ok(a) => {
                    tracing::warn!(%id, status = a.status, "the usage service refused the count");
                    false
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "the usage service was not told");
                    false
                }
            }
        }
        None => false,
    };
    axum::Json(json!({
        "id": id,
        "status": "sent",
        "provider_message_id": sms.provider_message_id,
        "usage_counted": usage_counted,
    }))
    .into_response()
}

fn fail(state: &CallState, id: EventId, message: &str) {
    state.book.lock().result(
        id,
        &SmsResult {
            status: Status::Failed,
            to: None,
            attempts: Some(1),
            error: Some(message.to_string()),
            provider_message_id: None,
        },
    );
}
