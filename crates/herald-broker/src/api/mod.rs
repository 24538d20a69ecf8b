//! The HTTP admin API under `/api/v1`: JSON over the broker's own library types (`Topics`, the
//! group `Coordinator`, `Broker::stats`), shared by scripts and the web console.
//!
//! Reads are `GET`; every mutation needs the `X-CSRF-Token` header with the token of
//! `GET /api/v1/csrf` (the console pages carry it), so another site cannot make a browser
//! change the broker. Request bodies are limited to [`API_REQUEST_BYTES_MAX`]. Errors are JSON:
//! `{"error": message, "kafka_error": "UNKNOWN_TOPIC_OR_PARTITION"}` when a Kafka error applies.
//! `openapi.json` documents every endpoint in [`ENDPOINTS`]; a test keeps the two in step.

pub(crate) mod bench;
pub(crate) mod groups;
pub(crate) mod history;
pub(crate) mod messages;
pub(crate) mod peers;
pub(crate) mod topics;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use crate::Broker;
use crate::problem::Problem;
use history::History;

/// Largest request body the API reads; larger ones are answered 413.
pub const API_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// The header a mutation must carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The OpenAPI document served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every endpoint of the API as (method, path template); `openapi.json` lists the same.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/csrf"),
    ("get", "/api/v1/broker"),
    ("get", "/api/v1/history"),
    ("get", "/api/v1/topics"),
    ("post", "/api/v1/topics"),
    ("get", "/api/v1/topics/{topic}"),
    ("delete", "/api/v1/topics/{topic}"),
    ("patch", "/api/v1/topics/{topic}/configs"),
    ("post", "/api/v1/topics/{topic}/partitions"),
    (
        "post",
        "/api/v1/topics/{topic}/partitions/{partition}/delete-records",
    ),
    (
        "get",
        "/api/v1/topics/{topic}/partitions/{partition}/messages",
    ),
    (
        "post",
        "/api/v1/topics/{topic}/partitions/{partition}/messages",
    ),
    ("get", "/api/v1/groups"),
    ("get", "/api/v1/groups/{group}"),
    ("delete", "/api/v1/groups/{group}"),
    ("post", "/api/v1/groups/{group}/reset-offsets"),
    ("get", "/api/v1/bench"),
    ("post", "/api/v1/bench"),
    ("get", "/api/v1/peers"),
];

/// What every API handler and console page shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) history: Arc<History>,
    /// The token mutations must present, random per process.
    pub(crate) csrf: Arc<str>,
    pub(crate) started: Instant,
    /// Uploaded `herald bench matrix` results.
    pub(crate) bench: Arc<bench::BenchState>,
    /// The brokerless members seen on the LAN, or why there are none.
    pub(crate) peers: peers::Peers,
}

impl ApiState {
    /// The state for `broker`, with its history sampler started.
    pub(crate) fn new(broker: Arc<Broker>, mut options: bench::ConsoleOptions) -> ApiState {
        let peers = peers::Peers::new(options.peer_source.take(), options.peers_off_reason.take());
        let history = Arc::new(History::default());
        history.spawn(&broker);
        let mut bytes = [0u8; 24];
        rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
        let csrf: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ApiState {
            broker,
            history,
            csrf: csrf.into(),
            started: Instant::now(),
            bench: Arc::new(bench::BenchState::new(options)),
            peers,
        }
    }
}

/// The `/api/v1` routes.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/csrf", get(csrf))
        .route("/api/v1/broker", get(topics::broker))
        .route("/api/v1/history", get(topics::history))
        .route("/api/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/api/v1/topics/{topic}",
            get(topics::describe).delete(topics::delete),
        )
        .route(
            "/api/v1/topics/{topic}/configs",
            axum::routing::patch(topics::alter_configs),
        )
        .route(
            "/api/v1/topics/{topic}/partitions",
            post(topics::add_partitions),
        )
        .route(
            "/api/v1/topics/{topic}/partitions/{partition}/delete-records",
            post(topics::delete_records),
        )
        .route(
            "/api/v1/topics/{topic}/partitions/{partition}/messages",
            get(messages::browse).post(messages::produce),
        )
        .route("/api/v1/groups", get(groups::list))
        .route(
            "/api/v1/groups/{group}",
            get(groups::describe).delete(groups::delete),
        )
        .route(
            "/api/v1/groups/{group}/reset-offsets",
            post(groups::reset_offsets),
        )
        .route("/api/v1/bench", get(bench::status).post(bench::upload))
        .route("/api/v1/peers", get(peers::list))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_csrf,
        ))
        .layer(DefaultBodyLimit::max(API_REQUEST_BYTES_MAX))
        .with_state(state)
}

/// Refuses a mutation without the CSRF token.
async fn check_csrf(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(state.csrf.as_bytes())) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "a change needs the {CSRF_HEADER} header with the token of GET /api/v1/csrf"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn csrf(State(state): State<ApiState>) -> Response {
    axum::Json(serde_json::json!({ "header": CSRF_HEADER, "token": &*state.csrf })).into_response()
}

/// Unknown paths: JSON under `/api/`, plain text elsewhere.
pub(crate) async fn fallback(request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", request.uri().path()),
        )
        .into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// An API failure: the HTTP status, a message and the Kafka error name when one applies.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kafka_error: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kafka_error: None,
        }
    }

    /// 400 with `message`.
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// An error of the broker core, with the status and Kafka error its category calls for.
    pub(crate) fn problem(problem: Problem, message: impl Into<String>) -> ApiError {
        let status = match problem {
            Problem::UnknownTopicOrPartition => StatusCode::NOT_FOUND,
            Problem::TopicAlreadyExists => StatusCode::CONFLICT,
            Problem::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
            Problem::ResourceLimit => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, message).kafka(crate::wire::errors::code(problem))
    }

    /// A coordinator error, with its Kafka error.
    pub(crate) fn group(error: &crate::group::GroupError) -> ApiError {
        use crate::group::GroupError;
        let status = match error {
            GroupError::GroupIdNotFound => StatusCode::NOT_FOUND,
            GroupError::UnknownTopicOrPartition => StatusCode::NOT_FOUND,
            GroupError::NonEmptyGroup | GroupError::RebalanceInProgress => StatusCode::CONFLICT,
            GroupError::StoreFailed | GroupError::CoordinatorNotAvailable => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.to_string()).kafka(crate::wire::errors::group_code(error))
    }

    /// The unknown topic `name`.
    pub(crate) fn unknown_topic(name: &str) -> ApiError {
        ApiError::problem(
            Problem::UnknownTopicOrPartition,
            format!("unknown topic `{name}`"),
        )
    }

    /// The same error with a clearer message.
    pub(crate) fn with_message(mut self, message: String) -> ApiError {
        self.message = message;
        self
    }

    fn kafka(mut self, code: i16) -> ApiError {
        self.kafka_error = kafka_protocol::ResponseError::try_from_code(code).map(|error| {
            // `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`, as Kafka names it.
            let camel = format!("{error:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        });
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(kafka_error) = self.kafka_error {
            body["kafka_error"] = serde_json::Value::String(kafka_error);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON request body, its size and syntax checked (413 above [`API_REQUEST_BYTES_MAX`]).
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|error| ApiError::bad(format!("bad JSON body: {error}")))
}

/// A partition number from the path.
pub(crate) fn partition_number(text: &str) -> Result<i32, ApiError> {
    text.parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| ApiError::bad(format!("bad partition `{text}`: not a number >= 0")))
}

/// The topic and partition named in a path, or 404.
pub(crate) fn find_partition(
    broker: &Broker,
    topic: &str,
    partition: &str,
) -> Result<Arc<crate::topics::Partition>, ApiError> {
    let index = partition_number(partition)?;
    let found = broker
        .core
        .topics
        .get(topic)
        .ok_or_else(|| ApiError::unknown_topic(topic))?;
    found.partition(index).ok_or_else(|| {
        ApiError::problem(
            Problem::UnknownTopicOrPartition,
            format!("topic `{topic}` has no partition {index}"),
        )
    })
}

/// Runs blocking storage work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_endpoints() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let mut documented = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ENDPOINTS
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn kafka_error_names_are_kafkas() {
        let error = ApiError::problem(Problem::UnknownTopicOrPartition, "x");
        assert_eq!(
            error.kafka_error.as_deref(),
            Some("UNKNOWN_TOPIC_OR_PARTITION")
        );
        assert_eq!(error.status, StatusCode::NOT_FOUND);
    }
}
