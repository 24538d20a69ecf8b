//! The notification service: `POST /notifications` publishes an SMS request, `GET
//! /notifications/{id}` reports its status from the results the SMS service publishes.
//!
//! The service keeps no files. Its view of every notification is rebuilt from the topics each
//! time it starts: two subscriptions under groups unique to this process start at the earliest
//! event of `sms` (every request: `pending`) and of `sms.results` (every outcome; both names
//! are configurable, [`Names`]), and merge
//! them in a [`StatusBook`] whatever order they arrive in. Those groups are only a way to read
//! the topics from the start; their committed offsets are never used again (the broker expires
//! them with its offset retention). Memory is bounded by `notifications_max`: beyond it the
//! oldest notifications are forgotten and answer 404.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use herald::{
    Bus, Completed, DeadLetter, Event, EventId, HandlerError, StartFrom, SubscribeError,
    Subscription,
};
use parking_lot::Mutex;
use serde_json::json;

use crate::messages::{Names, SmsRequest, SmsResult};
use crate::status::StatusBook;

/// Largest request body accepted, in bytes; larger ones get 413.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
/// Longest text accepted, in characters (ten concatenated SMS segments).
pub const TEXT_CHARS_MAX: usize = 1600;
/// Digits a phone number may have (E.164 allows at most 15).
const PHONE_DIGITS_MIN: usize = 3;
const PHONE_DIGITS_MAX: usize = 15;

/// How the notification service runs.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Notifications tracked for `GET`; the oldest are forgotten beyond this.
    pub notifications_max: usize,
    /// The topics it publishes requests to and reads outcomes from.
    pub names: Names,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            notifications_max: crate::status::NOTIFICATIONS_MAX_DEFAULT,
            names: Names::default(),
        }
    }
}

#[derive(Clone)]
struct AppState {
    bus: Bus,
    book: Arc<Mutex<StatusBook>>,
    /// The topic requests are published to.
    sms_topic: Arc<str>,
}

/// The notification service's subscriptions and HTTP routes.
pub struct Notifier {
    state: AppState,
    requests: Subscription,
    results: Subscription,
}

impl Notifier {
    /// Starts rebuilding the status view from the topics.
    pub async fn start(bus: Bus, config: NotifierConfig) -> Result<Self, SubscribeError> {
        let book = Arc::new(Mutex::new(StatusBook::new(config.notifications_max)));
        // Fresh groups, so each start reads both topics from the beginning.
        let instance = EventId::new();
        let requests = {
            let book = book.clone();
            bus.subscribe(&config.names.sms_topic)
                .group(&format!("notification-service.requests.{instance}"))
                .start_from(StartFrom::Earliest)
                // This view must never dead-letter: `sms.dlq` means "the SMS service gave up".
                .dead_letter(DeadLetter::Refuse)
                .handle(move |event: Event| {
                    let book = book.clone();
                    async move {
                        // Events that are not SMS requests are not ours to track.
                        if let Ok(request) = event.decode_json::<SmsRequest>() {
                            book.lock().request(event.id, &request.to);
                        }
                        Ok::<(), HandlerError>(())
                    }
                })
                .await?
        };
        let results = {
            let book = book.clone();
            bus.subscribe(&config.names.results_topic)
                .group(&format!("notification-service.results.{instance}"))
                .start_from(StartFrom::Earliest)
                .dead_letter(DeadLetter::Refuse)
                .handle(move |event: Event| {
                    let book = book.clone();
                    async move {
                        if let (Some(id), Ok(result)) =
                            (event.correlation_id, event.decode_json::<SmsResult>())
                        {
                            book.lock().result(id, &result);
                        }
                        Ok::<(), HandlerError>(())
                    }
                })
                .await?
        };
        Ok(Notifier {
            state: AppState {
                bus,
                book,
                sms_topic: config.names.sms_topic.as_str().into(),
            },
            requests,
            results,
        })
    }

    /// The HTTP routes, to serve with axum.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Notifications tracked now.
    pub fn tracked(&self) -> usize {
        self.state.book.lock().len()
    }

    /// Stops the view's subscriptions.
    pub async fn shutdown(self) -> Result<(), SubscribeError> {
        let requests = self.requests.shutdown().await;
        let results = self.results.shutdown().await;
        requests?;
        results?;
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/notifications", post(create))
        .route("/notifications/{id}", get(show))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Parses and checks a request body; the error is the message for a 400 answer.
pub fn parse_request(body: &[u8]) -> Result<SmsRequest, String> {
    let request: SmsRequest = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be a JSON object {{\"to\": \"+15551234567\", \"text\": \"...\"}}: {e}"
        )
    })?;
    let digits = request.to.strip_prefix('+').unwrap_or(&request.to);
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !(PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
    {
        return Err(format!(
            "\"to\" must be a phone number: an optional '+' then {PHONE_DIGITS_MIN} to {PHONE_DIGITS_MAX} digits, not {:?}",
            request.to
        ));
    }
    if request.text.trim().is_empty() {
        return Err("\"text\" must not be empty".to_string());
    }
    let chars = request.text.chars().count();
    if chars > TEXT_CHARS_MAX {
        return Err(format!(
            "\"text\" has {chars} characters; at most {TEXT_CHARS_MAX} are allowed"
        ));
    }
    Ok(request)
}

/// `POST /notifications`: 202 with the id once the broker stored the request.
async fn create(State(state): State<AppState>, body: Bytes) -> Response {
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let event = match Event::json(&request) {
        Ok(e) => e.with_key(request.to.clone()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let id = event.id;
    match state.bus.publish(&state.sms_topic, event).await {
        Ok(receipt) if matches!(receipt.completed, Completed::Stored { .. }) => {
            state.book.lock().request(id, &request.to);
            tracing::info!(%id, to = %request.to, "notification stored");
            (StatusCode::ACCEPTED, axum::Json(json!({"id": id}))).into_response()
        }
        Ok(receipt) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the bus reported the notification {}, not stored",
                receipt.kind()
            ),
        ),
        Err(e) => {
            tracing::warn!(%id, error = %e, "notification not stored");
            // The id is returned too: a publish that timed out may still have been stored.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": format!("the broker did not store the notification: {e}"),
                    "id": id,
                })),
            )
                .into_response()
        }
    }
}

/// `GET /notifications/{id}`.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    show_status(&state.book, &id)
}

/// A notification's status as `GET /notifications/{id}` answers it, in either design.
pub(crate) fn show_status(book: &Mutex<StatusBook>, id: &str) -> Response {
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            format!("no notification {id:?} is known"),
        )
    };
    let Ok(event_id) = id.parse::<EventId>() else {
        return unknown();
    };
    match book.lock().get(&event_id) {
        Some(n) => axum::Json(n.clone()).into_response(),
        None => unknown(),
    }
}
